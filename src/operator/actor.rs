//! Who did an operator action, as the lead's timeline records it. There is one admin
//! credential, so the actor is the channel (`cli`, `api`, `console`) plus a label the
//! operator gives: their login name in the CLI, an `X-Leadflow-Actor` header, the name typed
//! at the console's login.

use std::fmt;

use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Actor(String);

const MAX_LABEL: usize = 64;

impl Actor {
    /// `channel:label`, or `channel` alone when the label is empty once cleaned. Only a
    /// conservative character set is kept: the label is free text from a header or a form
    /// and ends up in the timeline and in logs.
    pub fn new(channel: &str, label: Option<&str>) -> Actor {
        let label: String = label
            .unwrap_or_default()
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'))
            .take(MAX_LABEL)
            .collect();
        if label.is_empty() {
            Actor(channel.to_owned())
        } else {
            Actor(format!("{channel}:{label}"))
        }
    }

    /// The CLI's actor: `cli:` and the login name of whoever ran the command.
    pub fn cli() -> Actor {
        let user = std::env::var("USER")
            .or_else(|_| std::env::var("LOGNAME"))
            .ok();
        Actor::new("cli", user.as_deref())
    }

    /// An actor read back from where this module wrote one (a console session).
    pub(crate) fn from_stored(actor: String) -> Actor {
        Actor(actor)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_cleaned_and_bounded() {
        assert_eq!(Actor::new("api", None).as_str(), "api");
        assert_eq!(Actor::new("api", Some("alice")).as_str(), "api:alice");
        assert_eq!(
            Actor::new("console", Some("<b>bob</b>\n")).as_str(),
            "console:bbobb"
        );
        assert_eq!(Actor::new("api", Some("  ")).as_str(), "api");
        assert_eq!(
            Actor::new("api", Some(&"x".repeat(500))).as_str().len(),
            4 + 64
        );
    }
}
