//! The shared vocabulary of leadflow: a submission as received and the run statuses (the
//! steps are the graph's, [`crate::graph::Step`]). Every other module speaks in these types.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The documented fields of the inbound webhook (see `../shared/spec/inbound-webhooks.txt`),
/// as received: text, untrimmed, not yet validated. Unknown fields are kept in `custom`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Submission {
    pub hook_name: Option<String>,
    pub name: Option<String>,
    pub country_code: Option<String>,
    pub phone: Option<String>,
    pub email: Option<String>,
    pub company_name: Option<String>,
    pub ip_address: Option<String>,
    pub industry: Option<String>,
    pub message: Option<String>,
    pub size: Option<String>,
    pub page_url: Option<String>,
    pub page_name: Option<String>,
    pub date_submitted: Option<String>,
    pub time_submitted: Option<String>,
    pub is_auto: Option<String>,
    pub status: Option<String>,
    pub team_id: Option<String>,
    /// Fields the spec does not name, kept verbatim as the lead's custom fields.
    pub custom: BTreeMap<String, serde_json::Value>,
}

/// The wire names of the documented fields, in the spec's order.
pub const FIELD_NAMES: [&str; 17] = [
    "hookName",
    "name_field",
    "country_code_field",
    "phone_field",
    "email_field",
    "company_name_field",
    "ip_address_field",
    "industry_field",
    "message_field",
    "size_field",
    "page_url_field",
    "page_name_field",
    "date_submitted_field",
    "time_submitted_field",
    "is_auto",
    "status",
    "team_id_field",
];

impl Submission {
    /// The slot for a documented wire field name, or `None` for a custom field.
    pub fn slot_mut(&mut self, wire_name: &str) -> Option<&mut Option<String>> {
        Some(match wire_name {
            "hookName" => &mut self.hook_name,
            "name_field" => &mut self.name,
            "country_code_field" => &mut self.country_code,
            "phone_field" => &mut self.phone,
            "email_field" => &mut self.email,
            "company_name_field" => &mut self.company_name,
            "ip_address_field" => &mut self.ip_address,
            "industry_field" => &mut self.industry,
            "message_field" => &mut self.message,
            "size_field" => &mut self.size,
            "page_url_field" => &mut self.page_url,
            "page_name_field" => &mut self.page_name,
            "date_submitted_field" => &mut self.date_submitted,
            "time_submitted_field" => &mut self.time_submitted,
            "is_auto" => &mut self.is_auto,
            "status" => &mut self.status,
            "team_id_field" => &mut self.team_id,
            _ => return None,
        })
    }

    /// Replaces NUL characters, which PostgreSQL cannot store in text, with U+FFFD in every
    /// field, documented and custom. Returns the wire names of documented fields that held
    /// one, so validation can reject them by name; custom fields are kept, so repaired.
    pub fn replace_nul(&mut self) -> Vec<&'static str> {
        const REPLACEMENT: &str = "\u{FFFD}";
        let mut hit = Vec::new();
        for name in FIELD_NAMES {
            if let Some(Some(v)) = self.slot_mut(name)
                && v.contains('\0')
            {
                *v = v.replace('\0', REPLACEMENT);
                hit.push(name);
            }
        }
        fn scrub(value: &mut serde_json::Value) {
            match value {
                serde_json::Value::String(s) if s.contains('\0') => {
                    *s = s.replace('\0', REPLACEMENT)
                }
                serde_json::Value::Array(items) => items.iter_mut().for_each(scrub),
                serde_json::Value::Object(map) => {
                    let keys: Vec<String> =
                        map.keys().filter(|k| k.contains('\0')).cloned().collect();
                    for k in keys {
                        if let Some(v) = map.remove(&k) {
                            map.insert(k.replace('\0', REPLACEMENT), v);
                        }
                    }
                    map.values_mut().for_each(scrub);
                }
                _ => {}
            }
        }
        let keys: Vec<String> = self
            .custom
            .keys()
            .filter(|k| k.contains('\0'))
            .cloned()
            .collect();
        for k in keys {
            if let Some(v) = self.custom.remove(&k) {
                self.custom.insert(k.replace('\0', REPLACEMENT), v);
            }
        }
        self.custom.values_mut().for_each(scrub);
        hit
    }

    /// The value of a field by the name rules use: a wire name (`industry_field`), its short
    /// form (`industry`), or a custom field's name. Custom non-string values are rendered as
    /// JSON text.
    pub fn field(&self, name: &str) -> Option<String> {
        let documented = |s: &Option<String>| s.clone();
        let v = match name {
            "hookName" | "hook_name" => documented(&self.hook_name),
            "name_field" | "name" => documented(&self.name),
            "country_code_field" | "country_code" => documented(&self.country_code),
            "phone_field" | "phone" => documented(&self.phone),
            "email_field" | "email" => documented(&self.email),
            "company_name_field" | "company_name" | "company" => documented(&self.company_name),
            "ip_address_field" | "ip_address" => documented(&self.ip_address),
            "industry_field" | "industry" => documented(&self.industry),
            "message_field" | "message" => documented(&self.message),
            "size_field" | "size" => documented(&self.size),
            "page_url_field" | "page_url" => documented(&self.page_url),
            "page_name_field" | "page_name" => documented(&self.page_name),
            "date_submitted_field" | "date_submitted" => documented(&self.date_submitted),
            "time_submitted_field" | "time_submitted" => documented(&self.time_submitted),
            "is_auto" => documented(&self.is_auto),
            "status" => documented(&self.status),
            "team_id_field" | "team_id" => documented(&self.team_id),
            other => self.custom.get(other).map(|v| match v {
                serde_json::Value::String(s) => s.clone(),
                v => v.to_string(),
            }),
        };
        v.filter(|s| !s.trim().is_empty())
    }
}

/// One status enum for a run, across the whole product.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Running,
    Rejected,
    Disqualified,
    Duplicate,
    /// Terminal when no callback is wanted.
    Routed,
    Scheduled,
    Calling,
    Called,
    Unreachable,
    Exhausted,
    Failed,
    Cancelled,
}

impl RunStatus {
    pub const ALL: [RunStatus; 12] = [
        RunStatus::Running,
        RunStatus::Rejected,
        RunStatus::Disqualified,
        RunStatus::Duplicate,
        RunStatus::Routed,
        RunStatus::Scheduled,
        RunStatus::Calling,
        RunStatus::Called,
        RunStatus::Unreachable,
        RunStatus::Exhausted,
        RunStatus::Failed,
        RunStatus::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Rejected => "rejected",
            RunStatus::Disqualified => "disqualified",
            RunStatus::Duplicate => "duplicate",
            RunStatus::Routed => "routed",
            RunStatus::Scheduled => "scheduled",
            RunStatus::Calling => "calling",
            RunStatus::Called => "called",
            RunStatus::Unreachable => "unreachable",
            RunStatus::Exhausted => "exhausted",
            RunStatus::Failed => "failed",
            RunStatus::Cancelled => "cancelled",
        }
    }

    /// The statuses of a run that has not ended.
    pub const ACTIVE: [RunStatus; 3] =
        [RunStatus::Running, RunStatus::Scheduled, RunStatus::Calling];

    /// A terminal run never changes status again (a replay starts a new run).
    pub fn is_terminal(self) -> bool {
        !RunStatus::ACTIVE.contains(&self)
    }

    /// [`RunStatus::ACTIVE`] as the database stores them, to bind (`status = ANY($n)`).
    pub fn active_names() -> Vec<&'static str> {
        RunStatus::ACTIVE.map(RunStatus::as_str).to_vec()
    }
}

/// Where one step execution stands (`steps.status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    /// Its job waits in the queue (or runs).
    Pending,
    /// It failed and its job waits for the next attempt.
    Retrying,
    /// The callback step waits, as a follow-up job, for its call's time or outcome.
    Waiting,
    Ok,
    Failed,
    Cancelled,
}

impl StepStatus {
    pub const ALL: [StepStatus; 6] = [
        StepStatus::Pending,
        StepStatus::Retrying,
        StepStatus::Waiting,
        StepStatus::Ok,
        StepStatus::Failed,
        StepStatus::Cancelled,
    ];

    /// The statuses of an execution that has not ended.
    pub const OPEN: [StepStatus; 3] = [
        StepStatus::Pending,
        StepStatus::Retrying,
        StepStatus::Waiting,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            StepStatus::Pending => "pending",
            StepStatus::Retrying => "retrying",
            StepStatus::Waiting => "waiting",
            StepStatus::Ok => "ok",
            StepStatus::Failed => "failed",
            StepStatus::Cancelled => "cancelled",
        }
    }

    /// The execution has ended (an earlier delivery, a status callback, an operator settled
    /// it): nothing more is decided for it.
    pub fn is_settled(self) -> bool {
        !StepStatus::OPEN.contains(&self)
    }

    /// [`StepStatus::OPEN`] as the database stores them, to bind (`status = ANY($n)`).
    pub fn open_names() -> Vec<&'static str> {
        StepStatus::OPEN.map(StepStatus::as_str).to_vec()
    }
}

impl fmt::Display for StepStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for StepStatus {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        UnknownName::find(&StepStatus::ALL, StepStatus::as_str, "step status", s)
    }
}

impl fmt::Display for RunStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("unknown {kind} {value:?}")]
pub struct UnknownName {
    pub kind: &'static str,
    pub value: String,
}

impl UnknownName {
    /// The value among `all` whose stored name (`name`) is `s`; else the error, naming the
    /// `kind` of name looked for.
    fn find<T: Copy>(
        all: &[T],
        name: fn(T) -> &'static str,
        kind: &'static str,
        s: &str,
    ) -> Result<T, UnknownName> {
        all.iter()
            .copied()
            .find(|v| name(*v) == s)
            .ok_or_else(|| UnknownName {
                kind,
                value: s.to_owned(),
            })
    }
}

impl FromStr for RunStatus {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        UnknownName::find(&RunStatus::ALL, RunStatus::as_str, "run status", s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_read_back_as_written_and_split_into_open_and_ended() {
        for status in RunStatus::ALL {
            assert_eq!(status.as_str().parse::<RunStatus>().ok(), Some(status));
        }
        for status in StepStatus::ALL {
            assert_eq!(status.as_str().parse::<StepStatus>().ok(), Some(status));
        }
        assert!(!StepStatus::Waiting.is_settled() && StepStatus::Cancelled.is_settled());
        assert!(!RunStatus::Calling.is_terminal() && RunStatus::Routed.is_terminal());
        assert_eq!(
            RunStatus::active_names(),
            ["running", "scheduled", "calling"]
        );
        assert_eq!(StepStatus::open_names(), ["pending", "retrying", "waiting"]);
    }

    #[test]
    fn every_documented_field_has_a_slot() {
        let mut s = Submission::default();
        for name in FIELD_NAMES {
            assert!(s.slot_mut(name).is_some(), "{name}");
        }
        assert!(s.slot_mut("utm_source").is_none());
    }

    #[test]
    fn nul_characters_are_replaced_and_documented_fields_named() {
        let mut s = Submission {
            name: Some("Jo\0hn".into()),
            message: Some("fine".into()),
            ..Default::default()
        };
        s.custom
            .insert("k\0".into(), serde_json::json!({ "deep": ["a\0b"] }));
        assert_eq!(s.replace_nul(), vec!["name_field"]);
        assert_eq!(s.name.as_deref(), Some("Jo\u{FFFD}hn"));
        assert_eq!(
            s.custom["k\u{FFFD}"],
            serde_json::json!({ "deep": ["a\u{FFFD}b"] })
        );
        assert!(
            !serde_json::to_string(&s)
                .unwrap_or_default()
                .contains("\\u0000")
        );
    }

    #[test]
    fn statuses_round_trip_through_their_names() {
        for st in RunStatus::ALL {
            assert_eq!(st.as_str().parse::<RunStatus>().ok(), Some(st));
        }
        assert!("done".parse::<RunStatus>().is_err());
    }

    #[test]
    fn field_lookup_accepts_short_names_and_custom_fields() {
        let mut s = Submission {
            industry: Some("Software".into()),
            ..Default::default()
        };
        s.custom
            .insert("utm_source".into(), serde_json::json!("google"));
        s.custom.insert("employees".into(), serde_json::json!(250));
        assert_eq!(s.field("industry").as_deref(), Some("Software"));
        assert_eq!(s.field("industry_field").as_deref(), Some("Software"));
        assert_eq!(s.field("utm_source").as_deref(), Some("google"));
        assert_eq!(s.field("employees").as_deref(), Some("250"));
        assert_eq!(s.field("company"), None);
    }
}
