//! The operator HTTP routes, behind the admin token. An intake token gets 401 here: the two
//! kinds of credentials never overlap.

use std::sync::Arc;

use poem::http::StatusCode;
use poem::web::{Data, Path};
use poem::{Endpoint, EndpointExt, IntoResponse, Request, Response, Route, get, handler};
use sqlx::PgPool;
use uuid::Uuid;

use super::leads;
use crate::hooks::token_matches;
use crate::reply::{self, ApiError};

/// The admin credential, kept only as its hash.
pub struct AdminToken {
    hash: [u8; 32],
}

impl AdminToken {
    pub fn new(token: &str) -> AdminToken {
        AdminToken {
            hash: crate::hooks::token_hash(token),
        }
    }

    fn admits(&self, req: &Request) -> bool {
        req.headers()
            .get(poem::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .is_some_and(|(_, token)| token_matches(token.trim(), &self.hash))
    }
}

/// The operator routes, each requiring the admin token.
pub fn routes(admin: Arc<AdminToken>) -> impl Endpoint<Output = Response> {
    Route::new()
        .at("/leads/:id", get(show_lead))
        .around(move |ep, req| {
            let admin = admin.clone();
            async move {
                if admin.admits(&req) {
                    Ok(ep.call(req).await?.into_response())
                } else {
                    Ok(ApiError::unauthorized("This route needs the admin token").into_response())
                }
            }
        })
}

#[handler]
async fn show_lead(Path(id): Path<String>, pool: Data<&PgPool>) -> Response {
    let Ok(id) = id.parse::<Uuid>() else {
        return ApiError::not_found(format!("No lead {id:?}")).into_response();
    };
    match leads::show(&pool, id).await {
        Ok(Some(view)) => reply::json(StatusCode::OK, &view),
        Ok(None) => ApiError::not_found(format!("No lead {id}")).into_response(),
        Err(e) => ApiError::from_db(&e).into_response(),
    }
}
