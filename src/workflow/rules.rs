//! Conditions over a submission's fields, and the qualification they drive.
//!
//! A condition is one TOML table with exactly one operator:
//! `{ field = "size", equals = "Large" }`, `{ field, in = [..] }`, `{ field, regex = ".." }`,
//! `{ field, exists = true }`, `{ field, gt | gte | lt | lte = 10 }`, or a combination
//! `{ all = [..] }`, `{ any = [..] }`, `{ not = {..} }`. Field values are trimmed before they
//! are compared; a field that is absent (or blank) matches no operator but `exists = false`.

use regex::Regex;
use serde::{Deserialize, Serialize};

use super::Workflow;
use crate::lead::Submission;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(try_from = "ConditionFile", into = "ConditionFile")]
pub enum Condition {
    Equals {
        field: String,
        value: String,
        ignore_case: bool,
    },
    In {
        field: String,
        values: Vec<String>,
        ignore_case: bool,
    },
    /// Unanchored, like a search: write `^…$` to match the whole value.
    Regex {
        field: String,
        regex: Regex,
    },
    Exists {
        field: String,
        exists: bool,
    },
    /// The field parsed as a number; a value that is not a finite number never matches.
    Compare {
        field: String,
        op: CompareOp,
        value: f64,
    },
    All(Vec<Condition>),
    Any(Vec<Condition>),
    Not(Box<Condition>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CompareOp {
    Gt,
    Gte,
    Lt,
    Lte,
}

impl CompareOp {
    fn holds(self, lhs: f64, rhs: f64) -> bool {
        match self {
            CompareOp::Gt => lhs > rhs,
            CompareOp::Gte => lhs >= rhs,
            CompareOp::Lt => lhs < rhs,
            CompareOp::Lte => lhs <= rhs,
        }
    }
}

impl Condition {
    pub fn matches(&self, sub: &Submission) -> bool {
        let value = |field: &str| sub.field(field).map(|v| v.trim().to_owned());
        match self {
            Condition::Equals {
                field,
                value: want,
                ignore_case,
            } => value(field).is_some_and(|v| text_eq(&v, want, *ignore_case)),
            Condition::In {
                field,
                values,
                ignore_case,
            } => value(field).is_some_and(|v| values.iter().any(|w| text_eq(&v, w, *ignore_case))),
            Condition::Regex { field, regex } => value(field).is_some_and(|v| regex.is_match(&v)),
            Condition::Exists { field, exists } => sub.field(field).is_some() == *exists,
            Condition::Compare {
                field,
                op,
                value: rhs,
            } => value(field)
                .and_then(|v| v.parse::<f64>().ok())
                .filter(|n| n.is_finite())
                .is_some_and(|n| op.holds(n, *rhs)),
            Condition::All(all) => all.iter().all(|c| c.matches(sub)),
            Condition::Any(any) => any.iter().any(|c| c.matches(sub)),
            Condition::Not(c) => !c.matches(sub),
        }
    }
}

fn text_eq(a: &str, b: &str, ignore_case: bool) -> bool {
    if ignore_case {
        a.chars()
            .flat_map(char::to_lowercase)
            .eq(b.chars().flat_map(char::to_lowercase))
    } else {
        a == b
    }
}

/// The file shape of a condition: every operator optional, so that "none" and "several" can be
/// reported as such instead of as a serde variant mismatch.
#[derive(Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConditionFile {
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    equals: Option<String>,
    #[serde(rename = "in", skip_serializing_if = "Option::is_none")]
    in_: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    regex: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    exists: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    gt: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    gte: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    lt: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    lte: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ignore_case: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    all: Option<Vec<Condition>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    any: Option<Vec<Condition>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    not: Option<Box<Condition>>,
}

const OPERATORS: &str = "equals, in, regex, exists, gt, gte, lt, lte, all, any or not";

impl TryFrom<ConditionFile> for Condition {
    type Error = String;

    fn try_from(f: ConditionFile) -> Result<Self, String> {
        let present = [
            ("equals", f.equals.is_some()),
            ("in", f.in_.is_some()),
            ("regex", f.regex.is_some()),
            ("exists", f.exists.is_some()),
            ("gt", f.gt.is_some()),
            ("gte", f.gte.is_some()),
            ("lt", f.lt.is_some()),
            ("lte", f.lte.is_some()),
            ("all", f.all.is_some()),
            ("any", f.any.is_some()),
            ("not", f.not.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, set)| set.then_some(name))
        .collect::<Vec<_>>();
        let op = match present.as_slice() {
            [op] => *op,
            [] => return Err(format!("condition has no operator: use one of {OPERATORS}")),
            several => {
                return Err(format!(
                    "condition has several operators ({}): use exactly one, and combine conditions with all/any",
                    several.join(", ")
                ));
            }
        };
        let ignore_case = f.ignore_case.unwrap_or(false);
        if f.ignore_case.is_some() && !matches!(op, "equals" | "in") {
            return Err(format!(
                "ignore_case applies to equals and in, not to {op} (in a regex, write (?i))"
            ));
        }
        let combinator = matches!(op, "all" | "any" | "not");
        let field = match (f.field, combinator) {
            (Some(_), true) => return Err(format!("`field` has no meaning with `{op}`")),
            (None, true) => String::new(),
            (None, false) => return Err(format!("`{op}` needs a `field` to test")),
            (Some(field), false) if field.trim().is_empty() => {
                return Err("`field` is empty".to_owned());
            }
            (Some(field), false) => field,
        };
        if let Some(value) = f.equals {
            return Ok(Condition::Equals {
                field,
                value,
                ignore_case,
            });
        }
        if let Some(values) = f.in_ {
            if values.is_empty() {
                return Err("`in` is empty".to_owned());
            }
            return Ok(Condition::In {
                field,
                values,
                ignore_case,
            });
        }
        if let Some(pattern) = f.regex {
            return Regex::new(&pattern)
                .map(|regex| Condition::Regex { field, regex })
                .map_err(|e| format!("invalid regex {pattern:?}: {e}"));
        }
        if let Some(exists) = f.exists {
            return Ok(Condition::Exists { field, exists });
        }
        if let Some(not) = f.not {
            return Ok(Condition::Not(not));
        }
        if let Some(list) = f.all.or(f.any) {
            if list.is_empty() {
                // An empty `any` never matches and an empty `all` always does: both are slips.
                return Err(format!("`{op}` is empty"));
            }
            return Ok(if op == "all" {
                Condition::All(list)
            } else {
                Condition::Any(list)
            });
        }
        let (op, value) = match (f.gt, f.gte, f.lt, f.lte) {
            (Some(v), ..) => (CompareOp::Gt, v),
            (_, Some(v), ..) => (CompareOp::Gte, v),
            (_, _, Some(v), _) => (CompareOp::Lt, v),
            (.., Some(v)) => (CompareOp::Lte, v),
            // Unreachable: `present` held exactly one operator and the others returned above.
            _ => return Err(format!("condition has no operator: use one of {OPERATORS}")),
        };
        if !value.is_finite() {
            return Err(format!("cannot compare with {value}"));
        }
        Ok(Condition::Compare { field, op, value })
    }
}

impl From<Condition> for ConditionFile {
    fn from(c: Condition) -> Self {
        let ignore = |b: bool| b.then_some(true);
        match c {
            Condition::Equals {
                field,
                value,
                ignore_case,
            } => ConditionFile {
                field: Some(field),
                equals: Some(value),
                ignore_case: ignore(ignore_case),
                ..Default::default()
            },
            Condition::In {
                field,
                values,
                ignore_case,
            } => ConditionFile {
                field: Some(field),
                in_: Some(values),
                ignore_case: ignore(ignore_case),
                ..Default::default()
            },
            Condition::Regex { field, regex } => ConditionFile {
                field: Some(field),
                regex: Some(regex.as_str().to_owned()),
                ..Default::default()
            },
            Condition::Exists { field, exists } => ConditionFile {
                field: Some(field),
                exists: Some(exists),
                ..Default::default()
            },
            Condition::Compare { field, op, value } => {
                let mut f = ConditionFile {
                    field: Some(field),
                    ..Default::default()
                };
                *match op {
                    CompareOp::Gt => &mut f.gt,
                    CompareOp::Gte => &mut f.gte,
                    CompareOp::Lt => &mut f.lt,
                    CompareOp::Lte => &mut f.lte,
                } = Some(value);
                f
            }
            Condition::All(all) => ConditionFile {
                all: Some(all),
                ..Default::default()
            },
            Condition::Any(any) => ConditionFile {
                any: Some(any),
                ..Default::default()
            },
            Condition::Not(not) => ConditionFile {
                not: Some(not),
                ..Default::default()
            },
        }
    }
}

/// A qualification rule: the lead must satisfy `when`; if it does not, `name` is the reason.
#[derive(Debug, Clone, Serialize)]
pub struct QualifyRule {
    pub name: String,
    pub when: Condition,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Qualification {
    pub qualified: bool,
    /// The names of the rules the lead failed, in file order.
    pub reasons: Vec<String>,
}

impl Workflow {
    /// Every rule is evaluated, not just up to the first failure, so an operator sees all the
    /// reasons at once.
    pub fn qualify(&self, sub: &Submission) -> Qualification {
        let reasons: Vec<String> = self
            .qualify
            .iter()
            .filter(|rule| !rule.when.matches(sub))
            .map(|rule| rule.name.clone())
            .collect();
        Qualification {
            qualified: reasons.is_empty(),
            reasons,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cond(text: &str) -> Condition {
        #[derive(Deserialize)]
        struct Wrap {
            when: Condition,
        }
        match toml::from_str::<Wrap>(&format!("when = {text}")) {
            Ok(w) => w.when,
            Err(e) => panic!("{text}: {e}"),
        }
    }

    fn refused(text: &str) -> String {
        #[derive(Debug, Deserialize)]
        #[allow(dead_code)]
        struct Wrap {
            when: Condition,
        }
        match toml::from_str::<Wrap>(&format!("when = {text}")) {
            Ok(w) => panic!("accepted {text}: {w:?}"),
            Err(e) => e.message().to_owned(),
        }
    }

    fn lead() -> Submission {
        let mut s = Submission {
            industry: Some("Software".into()),
            size: Some(" Medium ".into()),
            email: Some("john.doe@example.com".into()),
            message: Some("   ".into()),
            ..Default::default()
        };
        s.custom.insert("employees".into(), serde_json::json!(250));
        s.custom
            .insert("budget".into(), serde_json::json!("about 5k"));
        s
    }

    fn check(text: &str, want: bool) {
        assert_eq!(cond(text).matches(&lead()), want, "{text}");
    }

    #[test]
    fn equals_is_case_sensitive_unless_asked_and_trims_the_value() {
        check(r#"{ field = "industry", equals = "Software" }"#, true);
        check(r#"{ field = "industry_field", equals = "Software" }"#, true);
        check(r#"{ field = "industry", equals = "software" }"#, false);
        check(
            r#"{ field = "industry", equals = "software", ignore_case = true }"#,
            true,
        );
        check(r#"{ field = "size", equals = "Medium" }"#, true);
        check(r#"{ field = "company", equals = "Software" }"#, false);
    }

    #[test]
    fn in_matches_any_listed_value() {
        check(r#"{ field = "size", in = ["Small", "Medium"] }"#, true);
        check(r#"{ field = "size", in = ["Large", "Enterprise"] }"#, false);
        check(
            r#"{ field = "size", in = ["MEDIUM"], ignore_case = true }"#,
            true,
        );
        check(r#"{ field = "page_url", in = ["x"] }"#, false);
    }

    #[test]
    fn regex_searches_the_value() {
        check(r#"{ field = "email", regex = "@example\\.com$" }"#, true);
        check(r#"{ field = "email", regex = "^doe" }"#, false);
        check(r#"{ field = "email", regex = "(?i)JOHN" }"#, true);
        check(r#"{ field = "phone", regex = ".*" }"#, false);
    }

    #[test]
    fn exists_ignores_blank_values() {
        check(r#"{ field = "email", exists = true }"#, true);
        check(r#"{ field = "email", exists = false }"#, false);
        check(r#"{ field = "message", exists = true }"#, false);
        check(r#"{ field = "phone", exists = false }"#, true);
        check(r#"{ field = "employees", exists = true }"#, true);
    }

    #[test]
    fn numeric_compares_each_way() {
        check(r#"{ field = "employees", gt = 249 }"#, true);
        check(r#"{ field = "employees", gt = 250 }"#, false);
        check(r#"{ field = "employees", gte = 250 }"#, true);
        check(r#"{ field = "employees", gte = 250.5 }"#, false);
        check(r#"{ field = "employees", lt = 251 }"#, true);
        check(r#"{ field = "employees", lt = 250 }"#, false);
        check(r#"{ field = "employees", lte = 250 }"#, true);
        check(r#"{ field = "employees", lte = 249.9 }"#, false);
    }

    #[test]
    fn numeric_compare_on_a_non_number_or_missing_field_never_matches() {
        for op in ["gt", "gte", "lt", "lte"] {
            check(&format!(r#"{{ field = "budget", {op} = 0 }}"#), false);
            check(&format!(r#"{{ field = "industry", {op} = 0 }}"#), false);
            check(&format!(r#"{{ field = "phone", {op} = 0 }}"#), false);
        }
        let mut s = lead();
        s.custom.insert("score".into(), serde_json::json!("inf"));
        assert!(!cond(r#"{ field = "score", gt = 0 }"#).matches(&s));
    }

    #[test]
    fn combinators_nest() {
        check(
            r#"{ all = [{ field = "industry", equals = "Software" }, { field = "employees", gte = 100 }] }"#,
            true,
        );
        check(
            r#"{ all = [{ field = "industry", equals = "Software" }, { field = "employees", gte = 1000 }] }"#,
            false,
        );
        check(
            r#"{ any = [{ field = "size", in = ["Large"] }, { field = "employees", gte = 100 }] }"#,
            true,
        );
        check(
            r#"{ any = [{ field = "size", in = ["Large"] }, { field = "employees", gte = 1000 }] }"#,
            false,
        );
        check(
            r#"{ not = { field = "email", regex = "\\.invalid$" } }"#,
            true,
        );
        check(r#"{ not = { field = "email", exists = true } }"#, false);
        check(
            r#"{ all = [
                { any = [{ field = "size", equals = "Large" }, { not = { field = "employees", lt = 200 } }] },
                { not = { any = [{ field = "phone", exists = true }, { field = "industry", equals = "Retail" }] } },
            ] }"#,
            true,
        );
    }

    #[test]
    fn malformed_conditions_say_what_is_wrong() {
        let cases = [
            (r#"{ field = "x" }"#, "condition has no operator"),
            (
                r#"{ field = "x", equals = "a", regex = "b" }"#,
                "condition has several operators (equals, regex)",
            ),
            (
                r#"{ field = "x", gte = 1, lte = 2 }"#,
                "several operators (gte, lte)",
            ),
            (r#"{ equals = "a" }"#, "`equals` needs a `field`"),
            (r#"{ field = " ", equals = "a" }"#, "`field` is empty"),
            (
                r#"{ field = "x", all = [] }"#,
                "`field` has no meaning with `all`",
            ),
            (r#"{ any = [] }"#, "`any` is empty"),
            (r#"{ field = "x", in = [] }"#, "`in` is empty"),
            (r#"{ field = "x", regex = "(" }"#, "invalid regex \"(\""),
            (
                r#"{ field = "x", regex = "a", ignore_case = true }"#,
                "ignore_case applies",
            ),
            (r#"{ field = "x", gt = nan }"#, "cannot compare with NaN"),
            (r#"{ field = "x", gt = "10" }"#, "invalid type: string"),
            (r#"{ field = "x", equal = "a" }"#, "unknown field `equal`"),
            (r#"{ not = { field = "x" } }"#, "condition has no operator"),
        ];
        for (text, want) in cases {
            let got = refused(text);
            assert!(got.contains(want), "{text}: {got}");
        }
    }

    #[test]
    fn conditions_serialize_back_to_their_file_shape() {
        let text = r#"{ all = [{ field = "size", in = ["Large"], ignore_case = true }, { not = { field = "employees", lt = 200.0 } }] }"#;
        let json = match serde_json::to_value(cond(text)) {
            Ok(j) => j,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(
            json,
            serde_json::json!({ "all": [
                { "field": "size", "in": ["Large"], "ignore_case": true },
                { "not": { "field": "employees", "lt": 200.0 } },
            ] })
        );
    }

    #[test]
    fn a_lead_failing_rules_is_disqualified_with_every_reason_in_file_order() {
        let w = crate::workflow::test_support::shipped("default");
        let sub = Submission {
            email: Some("bot@Test.invalid".into()),
            message: Some("Please find My Resume attached.".into()),
            ..crate::workflow::test_support::sample()
        };
        assert_eq!(
            w.qualify(&sub),
            Qualification {
                qualified: false,
                reasons: vec![
                    "not a test submission".into(),
                    "not a job application".into()
                ],
            }
        );
        let message = |m: &str| Submission {
            message: Some(m.into()),
            ..crate::workflow::test_support::sample()
        };
        let reasons = |m: &str| w.qualify(&message(m)).reasons;
        assert_eq!(
            reasons("Any open positions in sales?"),
            ["not a job application"]
        );
        assert!(reasons("Jobs to be done: we need a demo").is_empty());
    }
}
