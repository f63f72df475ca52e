//! Which team a qualified lead goes to: the team its `team_id_field` names, if the workflow has
//! such a team; else the first `[[route]]` rule whose condition holds; else the default team.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::Workflow;
use super::rules::Condition;
use crate::lead::Submission;

/// A `[[route]]` rule of a workflow.
#[derive(Debug, Clone, Serialize)]
pub struct Route {
    pub name: Option<String>,
    pub team: String,
    pub when: Condition,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Routing {
    pub team: String,
    pub rule: RouteRule,
    /// A `team_id_field` that named no team of the workflow, kept so an operator can spot a
    /// form that sends the wrong id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unknown_team_id: Option<String>,
}

/// What decided the team.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "by", rename_all = "snake_case")]
pub enum RouteRule {
    TeamIdField,
    /// `index` is the rule's 0-based position among the workflow's `[[route]]` rules; people
    /// read it 1-based, as in [`fmt::Display`] and load errors.
    Rule {
        index: usize,
        name: Option<String>,
    },
    Default,
}

impl fmt::Display for RouteRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RouteRule::TeamIdField => f.write_str("team_id_field"),
            RouteRule::Rule { index, name: None } => write!(f, "route rule {}", index + 1),
            RouteRule::Rule {
                index,
                name: Some(name),
            } => write!(f, "route rule {} ({name})", index + 1),
            RouteRule::Default => f.write_str("default team"),
        }
    }
}

impl Workflow {
    pub fn route(&self, sub: &Submission) -> Routing {
        let requested = sub.field("team_id").map(|id| id.trim().to_owned());
        let unknown_team_id = match requested {
            Some(id) if self.teams.contains_key(&id) => {
                return Routing {
                    team: id,
                    rule: RouteRule::TeamIdField,
                    unknown_team_id: None,
                };
            }
            other => other,
        };
        let (team, rule) = self
            .routes
            .iter()
            .enumerate()
            .find(|(_, r)| r.when.matches(sub))
            .map_or_else(
                || (self.default_team.clone(), RouteRule::Default),
                |(index, r)| {
                    let name = r.name.clone();
                    (r.team.clone(), RouteRule::Rule { index, name })
                },
            );
        Routing {
            team,
            rule,
            unknown_team_id,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workflow::test_support::{sample, shipped};

    fn lead(team_id: Option<&str>, size: &str) -> Submission {
        Submission {
            team_id: team_id.map(str::to_owned),
            size: Some(size.to_owned()),
            ..sample()
        }
    }

    #[test]
    fn a_known_team_id_wins_over_rules() {
        let w = shipped("default");
        let r = w.route(&lead(Some(" team_enterprise "), "Small"));
        assert_eq!(
            (r.team.as_str(), r.rule),
            ("team_enterprise", RouteRule::TeamIdField)
        );
        let r = w.route(&lead(Some("team_001"), "Enterprise"));
        assert_eq!(
            (r.team.as_str(), r.rule),
            ("team_001", RouteRule::TeamIdField)
        );
    }

    #[test]
    fn without_a_known_team_id_the_first_matching_rule_decides() {
        let w = shipped("default");
        let enterprise = RouteRule::Rule {
            index: 0,
            name: Some("enterprise accounts".into()),
        };
        let r = w.route(&lead(None, "enterprise"));
        assert_eq!((r.team.as_str(), &r.rule), ("team_enterprise", &enterprise));
        assert_eq!(r.unknown_team_id, None);
        let mut big = lead(Some("team_9"), "Small");
        big.custom
            .insert("employees".into(), serde_json::json!(5000));
        let r = w.route(&big);
        assert_eq!((r.team.as_str(), &r.rule), ("team_enterprise", &enterprise));
        assert_eq!(r.unknown_team_id.as_deref(), Some("team_9"));
    }

    #[test]
    fn otherwise_the_default_team_takes_the_lead() {
        let w = shipped("default");
        let r = w.route(&lead(Some("team_9"), "Medium"));
        assert_eq!(
            r,
            Routing {
                team: "team_001".into(),
                rule: RouteRule::Default,
                unknown_team_id: Some("team_9".into()),
            }
        );
        let r = w.route(&lead(None, "Small"));
        assert_eq!((r.rule, r.unknown_team_id), (RouteRule::Default, None));
    }

    #[test]
    fn rules_are_tried_in_file_order() {
        let text = r#"
            name = "order"
            default_team = "a"
            [[route]]
            team = "b"
            when = { field = "size", equals = "Large" }
            [[route]]
            team = "c"
            when = { field = "size", exists = true }
            [teams.a]
            timezone = "UTC"
            caller_id = "+12025550100"
            agents = ["+12025550101"]
            hours = { mon = ["09:00-17:00"] }
            [teams.b]
            timezone = "UTC"
            caller_id = "+12025550100"
            agents = ["+12025550101"]
            hours = { mon = ["09:00-17:00"] }
            [teams.c]
            timezone = "UTC"
            caller_id = "+12025550100"
            agents = ["+12025550101"]
            hours = { mon = ["09:00-17:00"] }
        "#;
        let w = match Workflow::parse(std::path::Path::new("order.toml"), text) {
            Ok(w) => w,
            Err(e) => panic!("{e}"),
        };
        let r = w.route(&lead(None, "Large"));
        assert_eq!(
            (r.team.as_str(), r.rule.to_string()),
            ("b", "route rule 1".into())
        );
        let r = w.route(&lead(None, "Small"));
        assert_eq!(
            (r.team.as_str(), r.rule.to_string()),
            ("c", "route rule 2".into())
        );
    }

    #[test]
    fn decisions_read_well_and_serialize_tagged() {
        let rule = RouteRule::Rule {
            index: 0,
            name: Some("enterprise accounts".into()),
        };
        assert_eq!(rule.to_string(), "route rule 1 (enterprise accounts)");
        assert_eq!(RouteRule::TeamIdField.to_string(), "team_id_field");
        assert_eq!(RouteRule::Default.to_string(), "default team");
        let json = serde_json::to_value(&rule).map_err(|e| e.to_string());
        assert_eq!(
            json,
            Ok(serde_json::json!({ "by": "rule", "index": 0, "name": "enterprise accounts" }))
        );
    }
}
