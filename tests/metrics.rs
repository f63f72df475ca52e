//! The metrics, read back from `/metrics` as Prometheus reads them: names, labels and values
//! after real leads; one refresher among several `leadflow worker` processes; and the ids on
//! every step's JSON log line.
//!
//! A test binary of its own, so the process-global recorder holds only what these tests
//! record. Only the first test processes leads in this process; the others send theirs
//! through separate `leadflow` processes, so its exact deltas hold.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::process::{self, Process};
use common::{Options, TestApp, TestDb, free_addr, repo_path, sample};
use jiff::Timestamp;
use leadflow::clock::Clock;
use leadflow::config::MetricsSettings;
use leadflow::engine::ProviderConfig;
use leadflow::metrics::{self, Exposure};
use leadflow::telephony::sim::{SimConfig, parse_outcomes};
use serde_json::Value;

/// Label pairs a sample must have.
type Labels<'a> = &'a [(&'a str, &'a str)];

/// One sample line of the text format.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// A scrape: its samples and the `# TYPE` of each family.
#[derive(Debug, Default)]
struct Scrape {
    samples: Vec<Sample>,
    types: BTreeMap<String, String>,
    text: String,
}

impl Scrape {
    fn parse(text: &str) -> Scrape {
        let mut scrape = Scrape {
            text: text.to_owned(),
            ..Scrape::default()
        };
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("TYPE line");
                scrape.types.insert(name.to_owned(), kind.to_owned());
                continue;
            }
            if line.starts_with('#') {
                continue;
            }
            let (series, value) = line.rsplit_once(' ').expect("sample line");
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => (name, parse_labels(rest.trim_end_matches('}'))),
                None => (series, BTreeMap::new()),
            };
            let value = match value {
                "+Inf" => f64::INFINITY,
                v => v.parse().expect("sample value"),
            };
            scrape.samples.push(Sample {
                name: name.to_owned(),
                labels,
                value,
            });
        }
        scrape
    }

    /// The sum of the samples named `name` whose labels include `labels`.
    fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.matching(name, labels).map(|s| s.value).sum()
    }

    fn matching<'a>(
        &'a self,
        name: &'a str,
        labels: &'a [(&str, &str)],
    ) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples.iter().filter(move |s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
    }

    fn has(&self, name: &str, labels: &[(&str, &str)]) -> bool {
        self.matching(name, labels).next().is_some()
    }
}

/// `a="x",b="y"`; leadflow's label values never hold quotes or commas.
fn parse_labels(text: &str) -> BTreeMap<String, String> {
    text.split("\",")
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').expect("label pair");
            (k.to_owned(), v.trim_matches('"').to_owned())
        })
        .collect()
}

async fn scrape(url: &str) -> Scrape {
    let resp = reqwest::get(url).await.expect("scrape");
    assert_eq!(resp.status(), 200);
    let kind = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(kind.starts_with("text/plain; version=0.0.4"), "{kind}");
    Scrape::parse(&resp.text().await.expect("body"))
}

/// Scrapes until `check` holds, or panics after `within`.
async fn scrape_until(url: &str, what: &str, within: Duration, check: impl Fn(&Scrape) -> bool) {
    let deadline = Instant::now() + within;
    loop {
        let s = scrape(url).await;
        if check(&s) {
            return;
        }
        assert!(Instant::now() < deadline, "{what} within {within:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn settings(refresh_ms: u64) -> MetricsSettings {
    MetricsSettings {
        metrics_listen: None,
        metrics_refresh_ms: refresh_ms,
    }
}

fn sim(outcomes: &str) -> ProviderConfig {
    ProviderConfig::Sim(SimConfig {
        delay: Duration::from_millis(50),
        outcomes: parse_outcomes(outcomes).expect("outcomes"),
    })
}

/// The default workflow (New York office hours) beside the fast-callback test workflow.
fn workflows_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("lf-metrics-{}", uuid::Uuid::new_v4().simple()));
    common::workflows_in(
        &dir,
        &[
            "workflows/default.toml",
            "tests/fixtures/workflows/fast-callback.toml",
        ],
    )
}

#[tokio::test]
async fn metrics_follow_leads_through_intake_steps_and_callbacks() {
    // Three seconds before a Monday opening in New York: the office lead waits for it (a
    // `waited` call), while the fast-callback team, open around the clock, calls at once.
    let opening: Timestamp = "2030-01-07T14:00:00Z".parse().expect("monday 09:00 EST");
    let clock = Clock::starting_at(opening - jiff::SignedDuration::from_secs(3));
    let app = TestApp::start_with(Options {
        workflows_dir: workflows_dir(),
        provider: sim("busy,completed"),
        clock,
        ..Options::default()
    })
    .await;
    let exposure = Exposure::start(&app.db.pool, &app.workflows, &settings(200))
        .await
        .expect("metrics start");
    let url = app.url("/metrics");
    let before = scrape(&url).await;

    let fast = app.hook("metrics-fast", "fast-callback", true).await;
    let office = app.hook("metrics-office", "default", true).await;
    let body = sample("metrics-fast", "650-253-0001");
    let send = |token: &str, body: &Value, key: Option<&str>| {
        let mut req = app
            .client
            .post(app.url("/v1/webhooks/inbound"))
            .bearer_auth(token)
            .json(body);
        if let Some(key) = key {
            req = req.header("Idempotency-Key", key);
        }
        async move { common::read(req.send().await.expect("sent")).await }
    };
    let (code, first) = send(&fast.token, &body, Some("metrics-1")).await;
    assert_eq!(code, 200, "{first}");
    let fast_lead = first["lead_id"].as_str().expect("lead id").to_owned();
    let (code, replay) = send(&fast.token, &body, Some("metrics-1")).await;
    assert_eq!((code, &replay), (200, &first));
    let bad = sample("metrics-fast", "123");
    assert_eq!(send(&fast.token, &bad, None).await.0, 422);
    assert_eq!(send("not-a-token", &body, None).await.0, 401);
    let (code, resp) = send(
        &office.token,
        &sample("metrics-office", "212-736-5001"),
        None,
    )
    .await;
    assert_eq!(code, 200, "{resp}");
    let office_lead = resp["lead_id"].as_str().expect("lead id").to_owned();

    // While the office lead waits for the opening, it is a callback waiting for hours.
    app.wait_for_run(&office_lead, "scheduled", Duration::from_secs(10))
        .await;
    scrape_until(
        &url,
        "the waiting callback is counted",
        Duration::from_secs(5),
        |s| s.sum(metrics::SCHEDULED_CALLBACKS, &[("team", "team_001")]) == 1.0,
    )
    .await;
    // The fast lead is busy, then called; the office lead is called at 09:00, busy, and
    // waits ten minutes for its next attempt.
    app.wait_for_run(&fast_lead, "called", Duration::from_secs(20))
        .await;
    let busy = [("team", "team_001"), ("outcome", "busy")];
    scrape_until(
        &url,
        "both leads were called",
        Duration::from_secs(20),
        |s| {
            s.sum(metrics::CALLBACK_ATTEMPTS, &busy) - before.sum(metrics::CALLBACK_ATTEMPTS, &busy)
                == 2.0
        },
    )
    .await;
    scrape_until(
        &url,
        "the queue gauges catch up",
        Duration::from_secs(5),
        |s| {
            s.sum(metrics::SCHEDULED_CALLBACKS, &[("team", "team_001")]) == 0.0
                && s.sum(
                    metrics::QUEUE_JOBS,
                    &[("queue", "leadflow.callback"), ("state", "done")],
                ) >= 2.0
                && s.sum(
                    metrics::QUEUE_JOBS,
                    &[("queue", "leadflow.callback"), ("state", "scheduled")],
                ) >= 1.0
        },
    )
    .await;
    let after = scrape(&url).await;
    let delta =
        |name: &str, labels: &[(&str, &str)]| after.sum(name, labels) - before.sum(name, labels);

    let fast_hook = ("hook", "metrics-fast");
    let fast_flow = ("workflow", "fast-callback");
    let team = ("team", "team_001");
    let intake_count = format!("{}_count", metrics::INTAKE_DURATION);
    let speed_count = format!("{}_count", metrics::SPEED_TO_LEAD);
    let expected: &[(&str, Labels, f64)] = &[
        // Intake: every answer by hook and code; the unauthenticated one under "unknown".
        (metrics::INTAKE_REQUESTS, &[fast_hook, ("code", "200")], 2.0),
        (metrics::INTAKE_REQUESTS, &[fast_hook, ("code", "422")], 1.0),
        (
            metrics::INTAKE_REQUESTS,
            &[("hook", "unknown"), ("code", "401")],
            1.0,
        ),
        (&intake_count, &[fast_hook], 3.0),
        (metrics::LEADS, &[fast_hook, ("outcome", "accepted")], 1.0),
        (metrics::LEADS, &[fast_hook, ("outcome", "duplicate")], 1.0),
        (metrics::LEADS, &[fast_hook, ("outcome", "rejected")], 1.0),
        (
            metrics::LEAD_REJECTIONS,
            &[fast_hook, ("reason", "invalid_phone")],
            1.0,
        ),
        // Steps, runs and calls.
        (
            metrics::STEP_RUNS,
            &[("step", "qualify"), ("outcome", "ok")],
            2.0,
        ),
        (
            metrics::STEP_RUNS,
            &[("step", "route"), ("outcome", "ok")],
            2.0,
        ),
        (metrics::STEP_RUNS, &[("outcome", "failed")], 0.0),
        (
            metrics::RUNS_FINISHED,
            &[fast_flow, ("status", "called")],
            1.0,
        ),
        (
            metrics::RUNS_FINISHED,
            &[fast_flow, ("status", "rejected")],
            1.0,
        ),
        (metrics::RUNS_FINISHED, &[("workflow", "default")], 0.0),
        (
            metrics::CALLBACK_ATTEMPTS,
            &[team, ("outcome", "called")],
            1.0,
        ),
        (metrics::CALLBACK_ATTEMPTS, &[team], 3.0),
        // Speed to lead: one call at once, one held for the opening.
        (&speed_count, &[team, ("waited", "false")], 1.0),
        (&speed_count, &[team, ("waited", "true")], 1.0),
    ];
    for (name, labels, want) in expected {
        assert_eq!(delta(name, labels), *want, "{name} {labels:?}");
    }
    // One execution per attempt: a final status settles the step in its own transaction.
    assert_eq!(
        delta(
            metrics::STEP_RUNS,
            &[("step", "callback"), ("outcome", "ok")]
        ),
        3.0
    );
    assert_eq!(delta(metrics::STEP_RUNS, &[("outcome", "failed")]), 0.0);
    let fast_flow = ("workflow", "fast-callback");
    assert_eq!(
        delta(metrics::RUNS_FINISHED, &[fast_flow, ("status", "called")]),
        1.0
    );
    assert_eq!(
        delta(metrics::RUNS_FINISHED, &[fast_flow, ("status", "rejected")]),
        1.0
    );
    assert_eq!(
        delta(metrics::RUNS_FINISHED, &[("workflow", "default")]),
        0.0
    );
    let team = ("team", "team_001");
    assert_eq!(
        delta(metrics::CALLBACK_ATTEMPTS, &[team, ("outcome", "called")]),
        1.0
    );
    assert_eq!(delta(metrics::CALLBACK_ATTEMPTS, &[team]), 3.0);

    let sum = format!("{}_sum", metrics::SPEED_TO_LEAD);
    let quick = delta(&sum, &[team, ("waited", "false")]);
    let held = delta(&sum, &[team, ("waited", "true")]);
    assert!(
        (0.0..2.0).contains(&quick),
        "an open team calls at once: {quick}s"
    );
    assert!(
        (1.0..30.0).contains(&held),
        "the held call waited for 09:00: {held}s"
    );

    // Histogram buckets are the domain's.
    let les = |name: &str| -> Vec<String> {
        let bucket = format!("{name}_bucket");
        let mut les: Vec<String> = after
            .matching(&bucket, &[])
            .filter_map(|s| s.labels.get("le").cloned())
            .collect();
        les.sort_by(|a, b| le_value(a).total_cmp(&le_value(b)));
        les.dedup();
        les
    };
    let want =
        |buckets: &[f64]| -> Vec<f64> { buckets.iter().copied().chain([f64::INFINITY]).collect() };
    let got = |name: &str| les(name).iter().map(|l| le_value(l)).collect::<Vec<f64>>();
    assert_eq!(
        got(metrics::SPEED_TO_LEAD),
        want(&metrics::SPEED_TO_LEAD_BUCKETS)
    );
    assert_eq!(got(metrics::STEP_DURATION), want(&metrics::LATENCY_BUCKETS));
    assert_eq!(
        got(metrics::INTAKE_DURATION),
        want(&metrics::LATENCY_BUCKETS)
    );

    // Gauges of the process and of the database.
    assert_eq!(after.sum(metrics::QUEUE_STATS_REFRESHER, &[]), 1.0);
    // A worker runs for every worker step of the graph, and each has its metric slot.
    for queue in leadflow::graph::WORKER_STEPS.map(|s| s.queue()) {
        assert!(after.sum(metrics::WORKERS_ALIVE, &[("queue", queue)]) >= 1.0);
        for state in metrics::QUEUE_STATES {
            assert!(after.has(metrics::QUEUE_JOBS, &[("queue", queue), ("state", state)]));
        }
        assert!(after.has(metrics::QUEUE_OLDEST_PENDING_AGE, &[("queue", queue)]));
    }
    assert_eq!(after.sum(metrics::DB_POOL_MAX, &[]), 20.0);
    assert!(after.has(metrics::DB_POOL_CONNECTIONS, &[("state", "idle")]));
    assert!(after.has(metrics::DB_POOL_CONNECTIONS, &[("state", "in_use")]));
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(after.sum(metrics::BUILD_INFO, &[("version", version)]), 1.0);

    assert_prometheus_conventions(&after);
    // Bounded labels: no lead id, phone number, email or token anywhere in the output.
    for secret in [
        fast_lead.as_str(),
        office_lead.as_str(),
        "6502530001",
        "2127365001",
        "example.com",
        fast.token.as_str(),
        office.token.as_str(),
    ] {
        assert!(!after.text.contains(secret), "{secret} in /metrics");
    }
    exposure.stop().await;
    let _ = std::fs::remove_dir_all(&app.workflows_dir);
}

fn le_value(le: &str) -> f64 {
    if le == "+Inf" {
        f64::INFINITY
    } else {
        le.parse().expect("le")
    }
}

/// Names carry the prefix and their unit; counters end in `_total`; every family is one of
/// [`metrics::ALL`].
fn assert_prometheus_conventions(scrape: &Scrape) {
    for (family, kind) in &scrape.types {
        assert!(metrics::ALL.contains(&family.as_str()), "unlisted {family}");
        match kind.as_str() {
            "counter" => assert!(family.ends_with("_total"), "{family}"),
            "histogram" => assert!(family.ends_with("_seconds"), "{family}"),
            "gauge" => assert!(!family.ends_with("_total"), "{family}"),
            other => panic!("{family} is a {other}"),
        }
    }
    for sample in &scrape.samples {
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| {
                sample
                    .name
                    .strip_suffix(suffix)
                    .filter(|f| scrape.types.get(*f).map(String::as_str) == Some("histogram"))
            })
            .unwrap_or(&sample.name);
        assert!(
            scrape.types.contains_key(family),
            "{} has no TYPE",
            sample.name
        );
    }
}

/// A `leadflow worker` process with its metrics listener.
struct WorkerProcess {
    process: Process,
    metrics: String,
}

impl WorkerProcess {
    fn spawn(db_url: &str, workflows: &Path, extra: &[(&str, &str)]) -> WorkerProcess {
        let listen = free_addr();
        let mut cmd = process::leadflow(db_url, workflows);
        cmd.arg("worker")
            .env("LEADFLOW_METRICS_LISTEN", listen.to_string())
            .env("LEADFLOW_METRICS_REFRESH_MS", "200")
            .envs(extra.iter().copied());
        WorkerProcess {
            process: Process::spawn("worker", &mut cmd),
            metrics: format!("http://{listen}"),
        }
    }

    async fn healthz(&self) -> Value {
        let url = format!("{}/healthz", self.metrics);
        let resp = process::wait_ok(&url, Duration::from_secs(60)).await;
        resp.json().await.expect("json")
    }
}

async fn is_refresher(worker: &WorkerProcess) -> Option<bool> {
    let resp = reqwest::get(format!("{}/metrics", worker.metrics))
        .await
        .ok()?;
    let s = Scrape::parse(&resp.text().await.ok()?);
    let exports_queues = s.has(metrics::QUEUE_JOBS, &[]);
    let refresher = s.sum(metrics::QUEUE_STATS_REFRESHER, &[]) == 1.0;
    // The flag and the gauges go together; anything else is a transition still settling.
    (exports_queues == refresher).then_some(refresher)
}

#[tokio::test]
async fn one_worker_process_refreshes_the_queue_gauges_and_another_takes_over() {
    let db = TestDb::new().await;
    let url = db.url().await;
    let flows = repo_path("workflows");
    let mut workers = vec![
        WorkerProcess::spawn(&url, &flows, &[]),
        WorkerProcess::spawn(&url, &flows, &[]),
    ];
    for w in &workers {
        assert_eq!(w.healthz().await["status"], "ok");
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    let leader = loop {
        let states = [
            is_refresher(&workers[0]).await,
            is_refresher(&workers[1]).await,
        ];
        match states {
            [Some(true), Some(false)] => break 0,
            [Some(false), Some(true)] => break 1,
            _ => {}
        }
        assert!(Instant::now() < deadline, "no single refresher: {states:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(workers[leader].healthz().await["workers_alive"], 3);

    // kill -9: the lock goes with the dead process's session, and the other takes over.
    workers.remove(leader).process.kill();
    let survivor = &workers[0];
    let deadline = Instant::now() + Duration::from_secs(15);
    while is_refresher(survivor).await != Some(true) {
        assert!(Instant::now() < deadline, "the survivor never took over");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn json_logs_name_the_lead_run_and_job_of_every_step() {
    let flows = repo_path("tests/fixtures/workflows");
    let app = TestApp::start_with(Options {
        workflows_dir: flows.clone(),
        workers: false,
        ..Options::default()
    })
    .await;
    let mut worker = WorkerProcess::spawn(
        &app.db.url().await,
        &flows,
        &[
            ("LEADFLOW_LOG_FORMAT", "json"),
            ("RUST_LOG", "warn,leadflow::engine=debug"),
        ],
    );
    worker.healthz().await;
    let hook = app.hook("json-logs", "fast-callback", true).await;
    let (code, resp) = app
        .post_json(&hook.token, &sample("json-logs", "650-253-0042"))
        .await;
    assert_eq!(code, 200, "{resp}");
    let lead = resp["lead_id"].as_str().expect("lead id").to_owned();
    let view = app
        .wait_for_run(&lead, "called", Duration::from_secs(20))
        .await;
    let run = view["run"]["id"].as_str().expect("run id").to_owned();
    worker.process.terminate(Duration::from_secs(30));

    let log = worker.process.log_text();
    let mut steps_seen = std::collections::BTreeSet::new();
    for line in log.lines() {
        let entry: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        let Some(spans) = entry["spans"].as_array() else {
            continue;
        };
        for span in spans.iter().filter(|s| s["name"] == "step") {
            assert_eq!(span["lead_id"], lead.as_str(), "{line}");
            assert_eq!(span["run_id"], run.as_str(), "{line}");
            assert!(
                span["job_id"].as_str().is_some_and(|j| !j.is_empty()),
                "{line}"
            );
            steps_seen.insert(span["step"].as_str().unwrap_or_default().to_owned());
        }
    }
    let want: std::collections::BTreeSet<String> =
        ["callback", "qualify", "route"].map(String::from).into();
    assert_eq!(steps_seen, want, "step spans in the log:\n{log}");
    assert!(
        !log.contains("6502530042"),
        "a full phone number in the log"
    );
    assert!(!log.contains(&hook.token), "a token in the log");
}
