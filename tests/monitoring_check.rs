//! The monitoring check: the dashboards and alert rules against a real Prometheus. Run by
//! `dashboards/check.sh` (which installs Prometheus first), so `cargo test` skips it:
//!
//!     cargo test --test monitoring_check -- --ignored --nocapture
//!
//! leadflow runs as two processes, `serve` and a `worker` (with LEADFLOW_METRICS_LISTEN), on
//! a database of their own. A private Prometheus on a free port scrapes both every second.
//! A mixed load goes through in waves: accepted leads, rejected ones, unauthenticated
//! requests, an idempotent replay, leads that are busy then called, leads exhausted after
//! one busy attempt, and leads that wait for their team's hours. Then every query of every panel is
//! evaluated through Prometheus's HTTP API, variables substituted, and must return series;
//! the alert rules must load and evaluate cleanly in that Prometheus and pass promtool.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::dashboards;
use common::process::{self, Process};
use common::{TestDb, free_addr, repo_path, sample};
use jiff::Timestamp;
use serde_json::{Value, json};

/// The job name the dashboards' $job variable is set to.
const JOB: &str = "leadflow";
const ADMIN: &str = "monitoring-check-admin";

#[tokio::test]
#[ignore = "needs prometheus and promtool; run by dashboards/check.sh"]
async fn dashboards_and_alerts_hold_against_a_real_prometheus() {
    let started = Instant::now();
    let work = scratch_dir();
    let db = TestDb::new().await;
    let url = db.url().await;
    let flows = workflows(&work);

    let serve_addr = free_addr();
    let worker_addr = free_addr();
    let common_env = |cmd: &mut Command| {
        cmd.env("LEADFLOW_SIM_OUTCOMES", "busy,completed")
            .env("LEADFLOW_SIM_DELAY_MS", "100")
            .env("LEADFLOW_METRICS_REFRESH_MS", "1000");
    };
    let mut serve_cmd = process::leadflow(&url, &flows);
    serve_cmd
        .arg("serve")
        .env("LEADFLOW_LISTEN", serve_addr.to_string())
        .env("LEADFLOW_ADMIN_TOKEN", ADMIN);
    common_env(&mut serve_cmd);
    let serve = Process::spawn("serve", &mut serve_cmd);
    let mut worker_cmd = process::leadflow(&url, &flows);
    worker_cmd
        .arg("worker")
        .env("LEADFLOW_METRICS_LISTEN", worker_addr.to_string());
    common_env(&mut worker_cmd);
    let worker = Process::spawn("worker", &mut worker_cmd);
    let base = format!("http://{serve_addr}");
    process::wait_ok(&format!("{base}/readyz"), Duration::from_secs(60)).await;
    process::wait_ok(
        &format!("http://{worker_addr}/healthz"),
        Duration::from_secs(60),
    )
    .await;

    let prometheus = Prometheus::start(&work, &[serve_addr, worker_addr]).await;
    prometheus.wait_for_scrapes(2).await;
    let load = drive_load(&db, &base).await;
    wait_for_outcomes(&db, &prometheus).await;

    let mut report = Vec::new();
    let mut failures = Vec::new();
    check_variables(&prometheus, &mut failures).await;
    for file in dashboards::FILES {
        let dashboard = dashboards::load(file);
        for q in dashboards::queries(&dashboard) {
            let expr = dashboards::substitute(&q.expr, &[("job", JOB), ("instance", ".*")], "1m");
            match prometheus.query(&expr).await {
                Ok(result) if !result.is_empty() => {
                    report.push((
                        file,
                        q.panel.clone(),
                        q.ref_id.clone(),
                        result.len(),
                        peak(&result),
                    ));
                }
                Ok(_) => failures.push(format!(
                    "{file}: {} [{}]: no series: {expr}",
                    q.panel, q.ref_id
                )),
                Err(e) => failures.push(format!("{file}: {} [{}]: {e}: {expr}", q.panel, q.ref_id)),
            }
        }
    }
    check_single_refresher(&prometheus, &mut failures).await;
    check_live_rules(&prometheus, &mut failures).await;
    let promtool = run_promtool(&mut failures);

    println!("\nmonitoring check: {load}");
    println!(
        "{:<28} {:<52} {:>3} {:>6} {:>12}",
        "dashboard", "panel", "ref", "series", "peak"
    );
    for (file, panel, ref_id, series, peak) in &report {
        let file = file.trim_end_matches(".json");
        println!("{file:<28} {panel:<52} {ref_id:>3} {series:>6} {peak:>12}");
    }
    for line in &promtool {
        println!("{line}");
    }
    println!(
        "{} queries on {} dashboards returned series; {} failures; {:.1}s",
        report.len(),
        dashboards::FILES.len(),
        failures.len(),
        started.elapsed().as_secs_f64()
    );
    if !failures.is_empty() {
        eprintln!("serve log:\n{}", serve.log_text());
        eprintln!("worker log:\n{}", worker.log_text());
        panic!("monitoring check failed:\n  {}", failures.join("\n  "));
    }
    drop(prometheus);
    let _ = std::fs::remove_dir_all(&work);
}

fn scratch_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "monitoring-check-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// always-open and fast-callback as shipped, plus two written here: `one-attempt` (the first
/// busy exhausts the run) and `closed` (a team whose only hour is twelve hours away, so its
/// leads wait for hours whenever the check runs).
fn workflows(work: &Path) -> PathBuf {
    let dir = common::workflows_in(
        &work.join("workflows"),
        &[
            "workflows/always-open.toml",
            "tests/fixtures/workflows/fast-callback.toml",
        ],
    );
    let all_day = r#"{ mon = ["00:00-24:00"], tue = ["00:00-24:00"], wed = ["00:00-24:00"], thu = ["00:00-24:00"], fri = ["00:00-24:00"], sat = ["00:00-24:00"], sun = ["00:00-24:00"] }"#;
    let hour = (Timestamp::now().as_second().rem_euclid(86_400) / 3600 + 12) % 24;
    let window = format!("\"{hour:02}:00-{:02}:00\"", hour + 1);
    let far_hour = format!(
        "{{ mon = [{window}], tue = [{window}], wed = [{window}], thu = [{window}], fri = [{window}], sat = [{window}], sun = [{window}] }}"
    );
    let flow = |name: &str, team: &str, hours: &str, callback: &str| {
        format!(
            "name = \"{name}\"\ndefault_team = \"{team}\"\ndedupe_window = \"0\"\n\
             [quiet_hours]\nenabled = false\n\
             [teams.{team}]\ntimezone = \"UTC\"\ncaller_id = \"+12025550100\"\n\
             agents = [\"+12025550101\"]\nhours = {hours}\ncallback = {callback}\n"
        )
    };
    let once = flow("one-attempt", "team_once", all_day, "{ max_attempts = 1 }");
    let closed = flow("closed", "team_closed", &far_hour, "{ max_attempts = 3 }");
    std::fs::write(dir.join("one-attempt.toml"), once).expect("write");
    std::fs::write(dir.join("closed.toml"), closed).expect("write");
    dir
}

/// Sends the mixed load in three waves a couple of scrapes apart, so that every counter,
/// including those a wave creates, rises between samples and the rates are real. Returns a
/// one-line summary.
async fn drive_load(db: &TestDb, base: &str) -> String {
    let client = reqwest::Client::new();
    let mut tokens = std::collections::BTreeMap::new();
    for (hook, flow) in [
        ("open", "always-open"),
        ("fast", "fast-callback"),
        ("once", "one-attempt"),
        ("closed", "closed"),
    ] {
        let created = leadflow::hooks::create(&db.pool, hook, flow, true, base)
            .await
            .expect("hook");
        tokens.insert(hook, created.token);
    }
    let send = |token: &str, body: &Value, key: Option<&str>| {
        let mut req = client
            .post(format!("{base}/v1/webhooks/inbound"))
            .bearer_auth(token)
            .json(body);
        if let Some(key) = key {
            req = req.header("Idempotency-Key", key);
        }
        async move { req.send().await.expect("sent").status().as_u16() }
    };
    let mut codes = std::collections::BTreeMap::new();
    let mut phone = 100;
    for wave in 0..WAVES {
        let mut answers = Vec::new();
        // Accepted: busy then a retry in 10 minutes (open), busy then called (fast), busy
        // and exhausted (once), waiting for the team's hours (closed).
        for hook in ["open", "fast", "once", "closed"] {
            phone += 1;
            let body = sample(hook, &format!("650253{phone:04}"));
            answers.push(send(&tokens[hook], &body, None).await);
        }
        // Rejected, and kept: an invalid phone, a missing field.
        answers.push(send(&tokens["open"], &sample("open", "123"), None).await);
        phone += 1;
        let mut missing = sample("fast", &format!("650253{phone:04}"));
        missing.as_object_mut().map(|o| o.remove("name_field"));
        answers.push(send(&tokens["fast"], &missing, None).await);
        // Unauthenticated: counted under hook="unknown".
        answers.push(send("not-a-token", &json!({}), None).await);
        if wave == 0 {
            // The same request twice under one Idempotency-Key: one lead and a duplicate.
            phone += 1;
            let body = sample("open", &format!("650253{phone:04}"));
            for _ in 0..2 {
                answers.push(send(&tokens["open"], &body, Some("check-1")).await);
            }
        }
        for code in answers {
            *codes.entry(code).or_insert(0) += 1;
        }
        tokio::time::sleep(Duration::from_millis(2500)).await;
    }
    let waves = u32::try_from(WAVES).unwrap_or(u32::MAX);
    assert_eq!(codes.get(&200), Some(&(4 * waves + 2)), "{codes:?}");
    assert_eq!(codes.get(&422), Some(&(2 * waves)), "{codes:?}");
    assert_eq!(codes.get(&401), Some(&waves), "{codes:?}");
    let total: u32 = codes.values().sum();
    format!("{total} requests in {WAVES} waves, answers by status code {codes:?}")
}

/// Load waves, 2.5 s apart.
const WAVES: usize = 3;

/// Waits until the fast leads are called (busy, then completed), the one-attempt leads are
/// exhausted and the closed team's leads wait; then until Prometheus has scraped every
/// target twice more, since rate() needs two samples of each series.
async fn wait_for_outcomes(db: &TestDb, prometheus: &Prometheus) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let n = i64::try_from(WAVES).unwrap_or(i64::MAX);
    // open leads wait 10 minutes after their busy call; closed ones wait for their hour.
    let want = [("called", n), ("exhausted", n), ("scheduled", 2 * n + 1)];
    loop {
        let mut done = true;
        for (status, n) in want {
            let (count,): (i64,) = sqlx::query_as("SELECT count(*) FROM runs WHERE status = $1")
                .bind(status)
                .fetch_one(&db.pool)
                .await
                .expect("count runs");
            done &= count >= n;
        }
        if done {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the load did not settle within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // The monitor refreshes the queue gauges every second: one more tick, then two scrapes.
    let settled = Timestamp::now().as_millisecond() as f64 / 1000.0 + 1.0;
    let expr = format!(
        r#"min(timestamp(up{{job="{JOB}"}})) > {:.3}"#,
        settled + 2.0
    );
    while prometheus.query(&expr).await.map_or(true, |r| r.is_empty()) {
        assert!(Instant::now() < deadline, "Prometheus stopped scraping");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The `$job` and `$instance` variables' own queries, as Grafana runs them.
async fn check_variables(prometheus: &Prometheus, failures: &mut Vec<String>) {
    let jobs = prometheus.label_values("job", "leadflow_build_info").await;
    if !jobs.iter().any(|j| j == JOB) {
        failures.push(format!(
            "$job: label_values(leadflow_build_info, job) = {jobs:?}"
        ));
    }
    let instances = prometheus
        .label_values(
            "instance",
            &format!("leadflow_build_info{{job=~\"{JOB}\"}}"),
        )
        .await;
    if instances.len() != 2 {
        failures.push(format!(
            "$instance: expected serve and worker, got {instances:?}"
        ));
    }
}

/// Two processes, one refresher: the queue gauges come from exactly one instance.
async fn check_single_refresher(prometheus: &Prometheus, failures: &mut Vec<String>) {
    for (what, expr) in [
        ("refreshers", "sum(leadflow_queue_stats_refresher)"),
        (
            "instances exporting queue gauges",
            "count(count by (instance) (leadflow_queue_jobs))",
        ),
    ] {
        let value = prometheus
            .query(expr)
            .await
            .ok()
            .and_then(|r| first_value(&r));
        if value != Some(1.0) {
            failures.push(format!("{what}: {value:?}, expected 1"));
        }
    }
}

/// The rules load in the live Prometheus, evaluate without error, and none fires on a
/// healthy system.
async fn check_live_rules(prometheus: &Prometheus, failures: &mut Vec<String>) {
    let rules = match prometheus.api("rules", &[]).await {
        Ok(data) => data,
        Err(e) => {
            failures.push(format!("rules API: {e}"));
            return;
        }
    };
    let mut count = 0;
    for rule in rules["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|g| g["rules"].as_array().into_iter().flatten())
    {
        count += 1;
        let name = rule["name"].as_str().unwrap_or_default();
        if rule["health"] != "ok" {
            failures.push(format!(
                "rule {name}: health {} {}",
                rule["health"], rule["lastError"]
            ));
        }
        if rule["state"] == "firing" {
            failures.push(format!("rule {name} fires on a healthy system"));
        }
    }
    if count != 5 {
        failures.push(format!("{count} rules loaded, expected 5"));
    }
}

fn run_promtool(failures: &mut Vec<String>) -> Vec<String> {
    let dir = repo_path("dashboards");
    let mut lines = Vec::new();
    for args in [
        ["check", "rules", "alerts.yml"],
        ["test", "rules", "alerts.test.yml"],
        ["check", "config", "prometheus.yml"],
    ] {
        let out = Command::new("promtool")
            .args(args)
            .current_dir(&dir)
            .output();
        let shown = format!("promtool {}", args.join(" "));
        match out {
            Ok(out) if out.status.success() => lines.push(format!("{shown}: ok")),
            Ok(out) => failures.push(format!(
                "{shown}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )),
            Err(e) => failures.push(format!("{shown}: {e}")),
        }
    }
    lines
}

fn first_value(result: &[Value]) -> Option<f64> {
    result
        .first()
        .and_then(|s| s["value"][1].as_str()?.parse().ok())
}

/// The largest finite value among the series, to show the numbers are real.
fn peak(result: &[Value]) -> String {
    let values: Vec<f64> = result
        .iter()
        .filter_map(|s| s["value"][1].as_str()?.parse::<f64>().ok())
        .collect();
    match values
        .iter()
        .copied()
        .filter(|v| v.is_finite())
        .reduce(f64::max)
    {
        Some(v) => format!("{v:.4}"),
        None => "NaN".to_owned(),
    }
}

/// A Prometheus of the check's own: its config and data in the scratch dir, a free port.
struct Prometheus {
    process: Process,
    base: String,
    client: reqwest::Client,
}

impl Prometheus {
    async fn start(work: &Path, targets: &[std::net::SocketAddr]) -> Prometheus {
        let targets: Vec<String> = targets.iter().map(|t| format!("\"{t}\"")).collect();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n  - {}\n\
             scrape_configs:\n  - job_name: {JOB}\n    static_configs:\n      - targets: [{}]\n",
            repo_path("dashboards/alerts.yml").display(),
            targets.join(", ")
        );
        let config_file = work.join("prometheus.yml");
        std::fs::write(&config_file, config).expect("prometheus config");
        let addr = free_addr();
        let mut cmd = Command::new("prometheus");
        cmd.arg(format!("--config.file={}", config_file.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                work.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--log.level=warn");
        let process = Process::spawn("prometheus", &mut cmd);
        let base = format!("http://{addr}");
        process::wait_ok(&format!("{base}/-/ready"), Duration::from_secs(30)).await;
        Prometheus {
            process,
            base,
            client: reqwest::Client::new(),
        }
    }

    /// Until every target has been scraped `n` times: the baseline the first wave rises from.
    async fn wait_for_scrapes(&self, n: u32) {
        let expr = format!(r#"min(count_over_time(up{{job="{JOB}"}}[1m])) >= {n}"#);
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.query(&expr).await.map_or(true, |r| r.is_empty()) {
            assert!(
                Instant::now() < deadline,
                "Prometheus never scraped leadflow {n} times"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn api(&self, path: &str, params: &[(&str, &str)]) -> Result<Value, String> {
        let resp = self
            .client
            .get(format!("{}/api/v1/{path}", self.base))
            .query(params)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let body: Value = resp.json().await.map_err(|e| e.to_string())?;
        if body["status"] != "success" {
            return Err(format!("{}: {}", body["errorType"], body["error"]));
        }
        Ok(body["data"].clone())
    }

    /// An instant query at now; the result's series.
    async fn query(&self, expr: &str) -> Result<Vec<Value>, String> {
        let data = self.api("query", &[("query", expr)]).await?;
        match data["resultType"].as_str() {
            Some("vector") | Some("matrix") => {
                Ok(data["result"].as_array().cloned().unwrap_or_default())
            }
            other => Err(format!("result type {other:?}")),
        }
    }

    async fn label_values(&self, label: &str, matcher: &str) -> Vec<String> {
        let data = self
            .api(&format!("label/{label}/values"), &[("match[]", matcher)])
            .await
            .unwrap_or_default();
        data.as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        self.process.terminate(Duration::from_secs(10));
    }
}
