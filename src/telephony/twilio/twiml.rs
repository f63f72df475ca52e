//! TwiML for an attempt: optionally whisper an announcement to the lead, then `<Dial>` the
//! team's agents from the team's caller ID.
//!
//! A `<Dial>` without an `action` falls through to the next verb whenever the lead is still
//! on the line, even after an agent answered and hung up. So a static `sequence` document
//! ([`twiml`]) rings the next agent after a finished conversation if the agent hangs up
//! first. [`twiml_sequence_leg`] avoids that by asking leadflow after each leg
//! ([`dial_connected`] decides), at the price of one more webhook round trip per agent.

use std::fmt::Write;
use std::time::Duration;

use crate::workflow::team::Ring;

/// Twilio dials at most ten `<Number>`s at once in one `<Dial>`.
pub const MAX_SIMULTANEOUS: usize = 10;

const HEADER: &str = r#"<?xml version="1.0" encoding="UTF-8"?>"#;

/// The whole call script. `sequence` gives one `<Dial>` per agent, in order, each ringing
/// for `per_agent_timeout`; `simultaneous` rings every agent in one `<Dial>` (the first ten;
/// Twilio refuses more). No agents: the lead hears the whisper and the call ends.
pub fn twiml(
    whisper: Option<&str>,
    caller_id: &str,
    agents: &[&str],
    ring: Ring,
    per_agent_timeout: Duration,
) -> String {
    let mut body = say(whisper);
    match ring {
        Ring::Simultaneous if !agents.is_empty() => {
            if agents.len() > MAX_SIMULTANEOUS {
                tracing::warn!(
                    agents = agents.len(),
                    "Twilio rings at most {MAX_SIMULTANEOUS} numbers at once; the rest are left out"
                );
            }
            let take = agents.len().min(MAX_SIMULTANEOUS);
            body.push_str(&dial(caller_id, &agents[..take], per_agent_timeout, None));
        }
        Ring::Simultaneous => {}
        Ring::Sequence => {
            for agent in agents {
                body.push_str(&dial(caller_id, &[agent], per_agent_timeout, None));
            }
        }
    }
    document(&body)
}

/// One leg of a `sequence` ring: whisper (first leg only), then dial `agent`; when the leg
/// ends Twilio POSTs `DialCallStatus` to `action_url` and plays whatever that answers.
pub fn twiml_sequence_leg(
    whisper: Option<&str>,
    caller_id: &str,
    agent: &str,
    per_agent_timeout: Duration,
    action_url: &str,
) -> String {
    let mut body = say(whisper);
    body.push_str(&dial(
        caller_id,
        &[agent],
        per_agent_timeout,
        Some(action_url),
    ));
    document(&body)
}

/// Ends the call; the answer to a `<Dial action>` once an agent took the lead, or no agent
/// is left.
pub fn twiml_hangup() -> String {
    document("<Hangup/>")
}

/// Whether a `<Dial action>` request says the agent leg connected (Twilio's
/// `DialCallStatus` `completed` or `answered`), so no further agent should ring.
pub fn dial_connected(form: &[(String, String)]) -> bool {
    form.iter()
        .any(|(k, v)| k == "DialCallStatus" && matches!(v.as_str(), "completed" | "answered"))
}

fn document(body: &str) -> String {
    format!("{HEADER}<Response>{body}</Response>")
}

fn say(whisper: Option<&str>) -> String {
    match whisper.map(str::trim) {
        Some(text) if !text.is_empty() => format!("<Say>{}</Say>", escape(text)),
        _ => String::new(),
    }
}

fn dial(caller_id: &str, numbers: &[&str], timeout: Duration, action: Option<&str>) -> String {
    // Twilio's allowed range for <Dial timeout>; outside it Twilio substitutes its own value.
    let secs = timeout.as_secs().clamp(5, 600);
    let mut out = format!(r#"<Dial callerId="{}" timeout="{secs}""#, escape(caller_id));
    if let Some(action) = action {
        let _ = write!(out, r#" action="{}" method="POST""#, escape(action));
    }
    out.push('>');
    for number in numbers {
        let _ = write!(out, "<Number>{}</Number>", escape(number));
    }
    out.push_str("</Dial>");
    out
}

/// XML text and attribute escaping. Characters XML 1.0 cannot carry at all (most C0
/// controls) are dropped: Twilio would reject the whole document for one of them.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if c < ' ' || c == '\u{FFFE}' || c == '\u{FFFF}' => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const CID: &str = "+14155550100";

    #[test]
    fn simultaneous_rings_everyone_in_one_dial() {
        let xml = twiml(
            Some("New lead from the website"),
            CID,
            &["+14155550101", "+14155550102"],
            Ring::Simultaneous,
            Duration::from_secs(20),
        );
        assert_eq!(
            xml,
            concat!(
                r#"<?xml version="1.0" encoding="UTF-8"?><Response>"#,
                "<Say>New lead from the website</Say>",
                r#"<Dial callerId="+14155550100" timeout="20">"#,
                "<Number>+14155550101</Number><Number>+14155550102</Number></Dial>",
                "</Response>"
            )
        );
    }

    #[test]
    fn sequence_dials_each_agent_in_order() {
        let xml = twiml(
            None,
            CID,
            &["+14155550101", "+14155550102"],
            Ring::Sequence,
            Duration::from_secs(15),
        );
        assert_eq!(
            xml,
            concat!(
                r#"<?xml version="1.0" encoding="UTF-8"?><Response>"#,
                r#"<Dial callerId="+14155550100" timeout="15"><Number>+14155550101</Number></Dial>"#,
                r#"<Dial callerId="+14155550100" timeout="15"><Number>+14155550102</Number></Dial>"#,
                "</Response>"
            )
        );
    }

    #[test]
    fn whisper_is_escaped_and_blank_whisper_is_skipped() {
        let xml = twiml(
            Some("Tom & Jerry's <b>\"lead\"</b>\u{7}"),
            CID,
            &["+14155550101"],
            Ring::Simultaneous,
            Duration::from_secs(20),
        );
        assert!(
            xml.contains("<Say>Tom &amp; Jerry&apos;s &lt;b&gt;&quot;lead&quot;&lt;/b&gt;</Say>"),
            "{xml}"
        );
        let blank = twiml(
            Some("  "),
            CID,
            &["+1"],
            Ring::Simultaneous,
            Duration::from_secs(20),
        );
        assert!(!blank.contains("<Say>"), "{blank}");
    }

    #[test]
    fn timeouts_are_held_to_twilios_range() {
        let short = twiml(
            None,
            CID,
            &["+1"],
            Ring::Sequence,
            Duration::from_millis(1500),
        );
        assert!(short.contains(r#"timeout="5""#), "{short}");
        let long = twiml(
            None,
            CID,
            &["+1"],
            Ring::Sequence,
            Duration::from_secs(3600),
        );
        assert!(long.contains(r#"timeout="600""#), "{long}");
    }

    #[test]
    fn simultaneous_caps_at_ten_numbers_and_no_agents_dials_nothing() {
        let many: Vec<String> = (0..12).map(|i| format!("+1415555{i:04}")).collect();
        let refs: Vec<&str> = many.iter().map(String::as_str).collect();
        let xml = twiml(
            None,
            CID,
            &refs,
            Ring::Simultaneous,
            Duration::from_secs(20),
        );
        assert_eq!(xml.matches("<Number>").count(), MAX_SIMULTANEOUS);
        let none = twiml(
            Some("hi"),
            CID,
            &[],
            Ring::Simultaneous,
            Duration::from_secs(20),
        );
        assert!(!none.contains("<Dial"), "{none}");
        assert!(none.contains("<Say>hi</Say>"));
    }

    #[test]
    fn sequence_leg_asks_back_through_action() {
        let xml = twiml_sequence_leg(
            Some("hi"),
            CID,
            "+14155550101",
            Duration::from_secs(20),
            "https://lf.test/v1/telephony/twilio/twiml/abc?sig=x&leg=1",
        );
        assert!(
            xml.contains(r#"action="https://lf.test/v1/telephony/twilio/twiml/abc?sig=x&amp;leg=1" method="POST""#),
            "{xml}"
        );
        assert!(xml.contains("<Say>hi</Say><Dial"));
        assert_eq!(
            twiml_hangup(),
            r#"<?xml version="1.0" encoding="UTF-8"?><Response><Hangup/></Response>"#
        );
    }

    #[test]
    fn dial_connected_reads_dial_call_status() {
        let form = |s: &str| vec![("DialCallStatus".to_string(), s.to_string())];
        assert!(dial_connected(&form("completed")));
        assert!(dial_connected(&form("answered")));
        for other in ["no-answer", "busy", "failed", "canceled"] {
            assert!(!dial_connected(&form(other)), "{other}");
        }
        assert!(!dial_connected(&[]));
    }
}
