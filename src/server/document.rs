//! The OpenAPI 3.1 document served at `/openapi.json` (`openapi.json`, beside this file).

/// The OpenAPI 3.1 document, written by hand next to the routes it describes (a test checks
/// that the two agree), with the names of steps and queues filled in from the graph.
pub fn openapi_document() -> &'static str {
    static DOCUMENT: std::sync::LazyLock<String> =
        std::sync::LazyLock::new(|| with_graph_names(include_str!("openapi.json")));
    &DOCUMENT
}

/// `document` with every step enum set to the graph's steps, and every `queue` parameter
/// limited to the worker queues' names (a step's, or its queue's full name).
fn with_graph_names(document: &str) -> String {
    use crate::graph::{Step, WORKER_STEPS};
    use serde_json::{Value, json};
    let Ok(mut doc) = serde_json::from_str::<Value>(document) else {
        return document.to_owned();
    };
    let steps = json!(Step::ALL.map(|s| s.as_str()));
    let queues: Vec<&str> = WORKER_STEPS
        .iter()
        .flat_map(|s| [s.as_str(), s.queue()])
        .collect();
    let schemas = &mut doc["components"]["schemas"];
    schemas["LeadView"]["properties"]["steps"]["items"]["properties"]["name"]["enum"] =
        steps.clone();
    schemas["ReplayRequest"]["properties"]["from"]["enum"] = steps;
    if let Some(paths) = doc["paths"].as_object_mut() {
        let operations = paths.values_mut().filter_map(Value::as_object_mut);
        for operation in operations.flat_map(|ops| ops.values_mut()) {
            let params = operation
                .get_mut("parameters")
                .and_then(Value::as_array_mut);
            for param in params.into_iter().flatten() {
                if param["name"] == "queue" {
                    param["schema"]["enum"] = json!(queues);
                }
            }
        }
    }
    doc.to_string()
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;
    use crate::graph::{Step, WORKER_STEPS};

    #[test]
    fn the_openapi_document_names_the_graphs_steps_and_queues() {
        let doc: Value = serde_json::from_str(openapi_document()).expect("JSON");
        let steps: Vec<&str> = Step::ALL.iter().map(|s| s.as_str()).collect();
        let schemas = &doc["components"]["schemas"];
        let name = &schemas["LeadView"]["properties"]["steps"]["items"]["properties"]["name"];
        assert_eq!(name["enum"], serde_json::json!(steps));
        assert_eq!(
            schemas["ReplayRequest"]["properties"]["from"]["enum"],
            serde_json::json!(steps)
        );
        let mut queue_params = 0;
        for item in doc["paths"].as_object().expect("paths").values() {
            for operation in item.as_object().expect("path item").values() {
                let Some(params) = operation.get("parameters").and_then(Value::as_array) else {
                    continue;
                };
                for param in params.iter().filter(|p| p["name"] == "queue") {
                    queue_params += 1;
                    let allowed = param["schema"]["enum"].as_array().expect("enum");
                    for step in WORKER_STEPS {
                        assert!(allowed.contains(&Value::from(step.as_str())));
                        assert!(allowed.contains(&Value::from(step.queue())));
                    }
                    assert_eq!(allowed.len(), 2 * WORKER_STEPS.len());
                }
                assert!(operation.get("parameters").is_none_or(Value::is_array));
            }
        }
        assert_eq!(queue_params, 3, "GET /v1/jobs, pause and resume");
    }
}
