//! The provider-facing HTTP routes of the callback step: Twilio's status callbacks
//! (`POST /v1/telephony/twilio/status?attempt=<id>`, verified by `X-Twilio-Signature`) and the
//! TwiML of an attempt (`/v1/telephony/twilio/twiml/{attempt_id}?sig=…`, the attempt id signed
//! into the URL), which tells Twilio what to do when the lead answers.

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use poem::http::StatusCode;
use poem::web::{Data, Path};
use poem::{Body, IntoResponse, Request, Response, handler};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use uuid::Uuid;

use super::outcome::{self, OutcomeError};
use crate::engine::Engine;
use crate::reply::ApiError;
use crate::telephony::twilio;
use crate::workflow::Ring;

/// Twilio's callbacks are small forms; anything bigger is not Twilio.
const MAX_FORM_BYTES: usize = 64 * 1024;

pub fn status_url(engine: &Engine, attempt_id: Uuid) -> String {
    format!(
        "{}/v1/telephony/twilio/status?attempt={attempt_id}",
        engine.callbacks.public_url
    )
}

pub fn twiml_url(engine: &Engine, attempt_id: Uuid) -> String {
    format!(
        "{}/v1/telephony/twilio/twiml/{attempt_id}?sig={}",
        engine.callbacks.public_url,
        url_signature(&engine.url_key, attempt_id)
    )
}

fn url_signature(key: &[u8], attempt_id: Uuid) -> String {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
        return String::new();
    };
    mac.update(b"twiml:");
    mac.update(attempt_id.as_bytes());
    URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
}

fn query_param<'a>(req: &'a Request, name: &str) -> Option<std::borrow::Cow<'a, str>> {
    let query = req.uri().query()?;
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
}

async fn read_form(body: Body) -> Result<Vec<(String, String)>, ApiError> {
    let bytes = body.into_bytes_limit(MAX_FORM_BYTES).await.map_err(|_| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "Payload too large",
            "Callback bodies are at most 64 KiB",
        )
    })?;
    Ok(url::form_urlencoded::parse(&bytes).into_owned().collect())
}

#[handler]
pub async fn status(req: &Request, body: Body, engine: Data<&Arc<Engine>>) -> Response {
    match status_inner(req, body, &engine).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => e.into_response(),
    }
}

async fn status_inner(req: &Request, body: Body, engine: &Engine) -> Result<(), ApiError> {
    let Some(token) = engine.twilio_auth_token.as_deref() else {
        return Err(ApiError::not_found(
            "Twilio is not the configured telephony provider",
        ));
    };
    let Some(signature) = req
        .headers()
        .get("x-twilio-signature")
        .and_then(|v| v.to_str().ok())
    else {
        return Err(ApiError::unauthorized("Missing X-Twilio-Signature"));
    };
    let form = read_form(body).await?;
    // Twilio signs the URL it called: our public URL, path and query exactly as sent.
    let path_and_query = req.uri().path_and_query().map_or("", |pq| pq.as_str());
    let url = format!("{}{path_and_query}", engine.callbacks.public_url);
    if !twilio::verify(token, &url, &form, signature) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "Forbidden",
            "X-Twilio-Signature does not match",
        ));
    }
    let attempt_id = query_param(req, "attempt")
        .and_then(|v| v.parse::<Uuid>().ok())
        .ok_or_else(|| {
            ApiError::bad_request("The attempt query parameter must be an attempt id")
        })?;
    let event = twilio::parse_status(&form).map_err(|e| ApiError::bad_request(e.to_string()))?;
    match outcome::apply(engine, attempt_id, &event).await {
        Ok(_) => Ok(()),
        Err(OutcomeError::NoAttempt(id)) => {
            Err(ApiError::not_found(format!("No call attempt {id}")))
        }
        Err(OutcomeError::Db(e)) => Err(ApiError::from_db(&e)),
        Err(OutcomeError::Step(e)) => match e.db_error() {
            Some(db) => Err(ApiError::from_db(db)),
            None => {
                tracing::error!(%attempt_id, error = %e, "status not applied");
                Err(ApiError::internal(
                    "The status could not be applied; send it again",
                ))
            }
        },
    }
}

#[handler]
pub async fn twiml(
    req: &Request,
    Path(id): Path<String>,
    body: Body,
    engine: Data<&Arc<Engine>>,
) -> Response {
    match twiml_inner(req, &id, body, &engine).await {
        Ok(xml) => Response::builder()
            .status(StatusCode::OK)
            .content_type("text/xml; charset=utf-8")
            .body(xml),
        Err(e) => e.into_response(),
    }
}

async fn twiml_inner(
    req: &Request,
    id: &str,
    body: Body,
    engine: &Engine,
) -> Result<String, ApiError> {
    let attempt_id: Uuid = id
        .parse()
        .map_err(|_| ApiError::not_found(format!("No call attempt {id:?}")))?;
    let expected = url_signature(&engine.url_key, attempt_id);
    let given = query_param(req, "sig").unwrap_or_default();
    if expected.is_empty() || !bool::from(expected.as_bytes().ct_eq(given.as_bytes())) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "Forbidden",
            "The URL signature does not match",
        ));
    }
    let row: Option<(String, String)> = sqlx::query_as(
        "SELECT r.workflow, a.team FROM callback_attempts a JOIN runs r ON r.id = a.run_id WHERE a.id = $1",
    )
    .bind(attempt_id)
    .fetch_optional(&engine.pool)
    .await
    .map_err(|e| ApiError::from_db(&e))?;
    let (workflow, team_id) =
        row.ok_or_else(|| ApiError::not_found(format!("No call attempt {attempt_id}")))?;
    let team = engine
        .team(&workflow, &team_id)
        .map_err(|e| ApiError::not_found(e.to_string()))?;
    let form = if req.method() == poem::http::Method::POST {
        read_form(body).await?
    } else {
        Vec::new()
    };
    let field = |name: &str| {
        form.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };

    // Agents are never put through to a voicemail box unless the team asks for it.
    let machine = field("AnsweredBy").is_some_and(|a| a.starts_with("machine") || a == "fax");
    if machine && !team.callback.leave_voicemail {
        return Ok(twilio::twiml_hangup());
    }
    let agents: Vec<&str> = team.agents.iter().map(|a| a.as_str()).collect();
    let whisper = team.whisper.as_deref();
    let caller_id = team.caller_id.as_str();
    match team.ring {
        Ring::Simultaneous => Ok(twilio::twiml(
            whisper,
            caller_id,
            &agents,
            team.ring,
            team.ring_timeout,
        )),
        Ring::Sequence => {
            // One agent per document: each <Dial> reports to the next leg's URL, which hangs up
            // once an agent has taken the call instead of ringing the next one.
            let leg: usize = query_param(req, "leg")
                .and_then(|l| l.parse().ok())
                .unwrap_or(0);
            if leg > 0 && twilio::dial_connected(&form) {
                return Ok(twilio::twiml_hangup());
            }
            let Some(agent) = agents.get(leg) else {
                return Ok(twilio::twiml_hangup());
            };
            let action = format!("{}&leg={}", twiml_url(engine, attempt_id), leg + 1);
            let whisper = if leg == 0 { whisper } else { None };
            Ok(twilio::twiml_sequence_leg(
                whisper,
                caller_id,
                agent,
                team.ring_timeout,
                &action,
            ))
        }
    }
}
