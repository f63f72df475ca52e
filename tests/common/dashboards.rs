//! Reading the Grafana dashboards in `dashboards/`: their panels (rows' nested ones too) and
//! every PromQL expression, with Grafana's template variables substituted as a user who
//! picked the given values would have them.

use serde_json::Value;

use super::repo_path;

pub const FILES: [&str; 2] = ["leadflow-overview.json", "leadflow-queues.json"];

pub fn load(file: &str) -> Value {
    let path = repo_path("dashboards").join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{file}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{file}: {e}"))
}

/// Every panel, rows and the panels inside collapsed rows included.
pub fn panels(dashboard: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for panel in dashboard["panels"].as_array().into_iter().flatten() {
        out.push(panel);
        out.extend(panel["panels"].as_array().into_iter().flatten());
    }
    out
}

pub fn is_row(panel: &Value) -> bool {
    panel["type"] == "row"
}

/// One query of one panel.
#[derive(Debug, Clone)]
pub struct Query {
    pub panel: String,
    pub ref_id: String,
    pub expr: String,
}

pub fn queries(dashboard: &Value) -> Vec<Query> {
    panels(dashboard)
        .into_iter()
        .filter(|p| !is_row(p))
        .flat_map(|p| {
            let title = p["title"].as_str().unwrap_or_default().to_owned();
            p["targets"]
                .as_array()
                .into_iter()
                .flatten()
                .map(move |t| Query {
                    panel: title.clone(),
                    ref_id: t["refId"].as_str().unwrap_or_default().to_owned(),
                    expr: t["expr"].as_str().unwrap_or_default().to_owned(),
                })
        })
        .collect()
}

/// Substitutes `$name` and `${name}` for each `(name, value)`, and Grafana's built-in
/// `$__rate_interval`, `$__interval` and `$__range` for `window`. Longer names first, so
/// that `$__rate_interval` is not read as `$__r…`.
pub fn substitute(expr: &str, vars: &[(&str, &str)], window: &str) -> String {
    let mut all: Vec<(&str, &str)> = vars.to_vec();
    all.extend([
        ("__rate_interval", window),
        ("__interval", window),
        ("__range", window),
    ]);
    all.sort_by_key(|(name, _)| std::cmp::Reverse(name.len()));
    let mut out = expr.to_owned();
    for (name, value) in all {
        out = out.replace(&format!("${{{name}}}"), value);
        out = out.replace(&format!("${name}"), value);
    }
    out
}
