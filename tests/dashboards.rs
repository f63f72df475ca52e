//! The structure of the Grafana dashboards and the alert rules in `dashboards/`. Grafana
//! cannot be installed here, so this stands in for an import; the monitoring check
//! (tests/monitoring_check.rs) runs every query against a real Prometheus.

mod common;

use std::collections::BTreeSet;

use common::dashboards::{self, is_row};
use common::repo_path;
use leadflow::metrics;
use regex::Regex;
use serde_json::Value;

/// Gauges read from the database by whichever process holds the refresher lock: filtering
/// them by instance would hide them whenever another instance is the refresher.
const DATABASE_WIDE: [&str; 4] = [
    metrics::QUEUE_JOBS,
    metrics::QUEUE_OLDEST_PENDING_AGE,
    metrics::SCHEDULED_CALLBACKS,
    metrics::QUEUE_STATS_REFRESHER,
];

fn metric_selectors(expr: &str) -> Vec<(String, String)> {
    let re = Regex::new(r"(leadflow_[a-z_]+)(\{([^}]*)\})?").expect("regex");
    re.captures_iter(expr)
        .map(|c| {
            let name = c[1].to_owned();
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .filter(|f| metrics::ALL.contains(f))
                .map_or(name.clone(), str::to_owned);
            (family, c.get(3).map_or("", |m| m.as_str()).to_owned())
        })
        .collect()
}

#[test]
fn dashboards_are_grafana_39_with_a_datasource_variable_and_units_everywhere() {
    let fixed = Regex::new(r#""uid":"([^"]*)""#).expect("regex");
    let mut uids = BTreeSet::new();
    for file in dashboards::FILES {
        let d = dashboards::load(file);
        assert!(
            d["schemaVersion"].as_u64().unwrap_or(0) >= 39,
            "{file}: schemaVersion"
        );
        assert!(
            d["title"].as_str().is_some_and(|t| !t.is_empty()),
            "{file}: title"
        );
        assert!(
            uids.insert(d["uid"].as_str().expect("uid").to_owned()),
            "{file}: uid"
        );
        assert!(
            d["tags"]
                .as_array()
                .expect("tags")
                .contains(&"leadflow".into())
        );

        let vars = d["templating"]["list"].as_array().expect("templating");
        let var = |name: &str| -> &Value {
            vars.iter()
                .find(|v| v["name"] == name)
                .unwrap_or_else(|| panic!("{file}: no ${name} variable"))
        };
        assert_eq!(var("datasource")["type"], "datasource");
        assert_eq!(var("datasource")["query"], "prometheus");
        for name in ["job", "instance"] {
            assert_eq!(var(name)["type"], "query", "{file}: ${name}");
            assert_eq!(
                var(name)["datasource"]["uid"],
                "${datasource}",
                "{file}: ${name}"
            );
        }
        assert!(
            var("instance")["definition"]
                .as_str()
                .is_some_and(|q| q.contains("$job")),
            "{file}: $instance depends on $job"
        );
        assert_eq!(var("instance")["includeAll"], true);
        assert_eq!(var("instance")["allValue"], ".*");

        let mut ids = BTreeSet::new();
        let mut titles = BTreeSet::new();
        for panel in dashboards::panels(&d) {
            let title = panel["title"].as_str().unwrap_or_default();
            assert!(!title.is_empty(), "{file}: a panel without a title");
            assert!(
                ids.insert(panel["id"].as_u64().expect("id")),
                "{file}: id of {title}"
            );
            let grid = &panel["gridPos"];
            let (x, w) = (grid["x"].as_u64(), grid["w"].as_u64());
            assert!(
                x.zip(w).is_some_and(|(x, w)| w > 0 && x + w <= 24),
                "{file}: {title}: gridPos {grid}"
            );
            if is_row(panel) {
                continue;
            }
            assert!(titles.insert(title), "{file}: two panels titled {title}");
            assert_eq!(
                panel["datasource"]["uid"], "${datasource}",
                "{file}: {title}"
            );
            let unit = panel["fieldConfig"]["defaults"]["unit"].as_str();
            assert!(
                unit.is_some_and(|u| !u.is_empty()),
                "{file}: {title} has no unit"
            );
            let targets = panel["targets"].as_array().expect("targets");
            assert!(!targets.is_empty(), "{file}: {title} has no query");
            let mut refs = BTreeSet::new();
            for t in targets {
                assert!(
                    refs.insert(t["refId"].as_str().expect("refId")),
                    "{file}: {title}"
                );
                assert_eq!(t["datasource"]["uid"], "${datasource}", "{file}: {title}");
                assert!(t["expr"].as_str().is_some_and(|e| !e.is_empty()));
            }
        }
        // No fixed data source anywhere: a dashboard imported elsewhere must just work.
        let text = serde_json::to_string(&d).expect("json");
        for uid in fixed.captures_iter(&text).map(|c| c[1].to_owned()) {
            assert!(
                ["${datasource}", "-- Grafana --"].contains(&uid.as_str())
                    || d["uid"] == uid.as_str(),
                "{file}: fixed uid {uid}"
            );
        }
    }
}

#[test]
fn every_query_uses_exported_metrics_filtered_by_job_and_instance() {
    let mut used = BTreeSet::new();
    for file in dashboards::FILES {
        let d = dashboards::load(file);
        for q in dashboards::queries(&d) {
            let selectors = metric_selectors(&q.expr);
            assert!(
                !selectors.is_empty(),
                "{file}: {}: no leadflow metric",
                q.panel
            );
            assert_eq!(
                q.expr.matches('(').count(),
                q.expr.matches(')').count(),
                "{file}: {}",
                q.panel
            );
            for (family, labels) in selectors {
                assert!(metrics::ALL.contains(&family.as_str()), "{file}: {family}");
                assert!(
                    labels.contains(r#"job=~"$job""#),
                    "{file}: {}: {family}",
                    q.panel
                );
                let by_instance = labels.contains(r#"instance=~"$instance""#);
                let database_wide = DATABASE_WIDE.contains(&family.as_str());
                assert_eq!(by_instance, !database_wide, "{file}: {}: {family}", q.panel);
                used.insert(family);
            }
        }
    }
    // Everything leadflow exports is on a dashboard.
    let all: BTreeSet<String> = metrics::ALL.iter().map(|m| m.to_string()).collect();
    assert_eq!(used, all);
}

/// `alerts.yml`'s rules, read line by line (the file is plain, two-level YAML).
fn alert_rules() -> Vec<(String, Vec<String>, String)> {
    let text = std::fs::read_to_string(repo_path("dashboards/alerts.yml")).expect("alerts.yml");
    let mut rules: Vec<(String, Vec<String>, String)> = Vec::new();
    let mut in_expr = false;
    for line in text.lines() {
        let trimmed = line.trim();
        if let Some(name) = trimmed.strip_prefix("- alert: ") {
            rules.push((name.to_owned(), Vec::new(), String::new()));
            in_expr = false;
            continue;
        }
        let Some(rule) = rules.last_mut() else {
            continue;
        };
        if let Some(expr) = trimmed.strip_prefix("expr:") {
            rule.2.push_str(expr);
            in_expr = expr.trim() == "|";
        } else if in_expr && line.starts_with("          ") {
            rule.2.push_str(trimmed);
        } else if let Some((key, _)) = trimmed.split_once(':') {
            in_expr = false;
            rule.1.push(key.to_owned());
        }
    }
    rules
}

#[test]
fn every_alert_has_a_summary_a_description_and_a_runbook_in_the_readme() {
    let rules = alert_rules();
    let names: Vec<&str> = rules.iter().map(|r| r.0.as_str()).collect();
    assert_eq!(
        names,
        [
            "LeadflowIntakeErrors",
            "LeadflowQueueBacklog",
            "LeadflowNoLiveWorker",
            "LeadflowRunsFailed",
            "LeadflowSpeedToLeadSlow"
        ]
    );
    let readme = std::fs::read_to_string(repo_path("README.md")).expect("README");
    let anchors: BTreeSet<String> = readme
        .lines()
        .filter_map(|l| l.strip_prefix('#'))
        .map(|h| {
            h.trim_start_matches('#')
                .trim()
                .to_lowercase()
                .chars()
                .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-')
                .map(|c| if c == ' ' { '-' } else { c })
                .collect()
        })
        .collect();
    let text = std::fs::read_to_string(repo_path("dashboards/alerts.yml")).expect("alerts.yml");
    for (name, keys, expr) in &rules {
        for key in ["summary", "description", "runbook"] {
            assert!(keys.iter().any(|k| k == key), "{name}: no {key}");
        }
        let anchor = format!("README.md#{}", name.to_lowercase());
        assert!(text.contains(&anchor), "{name}: runbook is not {anchor}");
        assert!(
            anchors.contains(&name.to_lowercase()),
            "{name}: no README section"
        );
        for (family, _) in metric_selectors(expr) {
            assert!(metrics::ALL.contains(&family.as_str()), "{name}: {family}");
        }
    }
}
