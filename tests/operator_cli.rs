//! The operator commands of the `leadflow` binary against the database of a running
//! service: tables by default, `--json` for scripts, actions recorded as `cli:<user>`,
//! failures as a non-zero exit with an `error:` line.

mod common;
mod operator_support;

use std::process::{Output, Stdio};
use std::time::Duration;

use common::{TestApp, repo_path};
use operator_support::{app, events, failed_lead, get, lead, pause, post, submit, zoo};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};

fn leadflow(app: &TestApp) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_leadflow"));
    cmd.env("DATABASE_URL", &app.db.url)
        .env(
            "LEADFLOW_WORKFLOWS_DIR",
            repo_path("tests/fixtures/workflows"),
        )
        .env("USER", "tester")
        .env("RUST_LOG", "warn")
        .kill_on_drop(true);
    cmd
}

async fn run(app: &TestApp, args: &[&str]) -> Output {
    leadflow(app)
        .args(args)
        .output()
        .await
        .expect("leadflow runs")
}

/// Runs a command that must succeed, and returns its stdout.
async fn ok(app: &TestApp, args: &[&str]) -> String {
    let out = run(app, args).await;
    assert!(
        out.status.success(),
        "{args:?}: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

async fn json(app: &TestApp, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.push("--json");
    let text = ok(app, &all).await;
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{args:?}: {e}: {text}"))
}

async fn fails(app: &TestApp, args: &[&str]) -> String {
    let out = run(app, args).await;
    assert!(!out.status.success(), "{args:?} should fail");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(stderr.contains("error"), "{args:?}: {stderr}");
    stderr
}

#[tokio::test]
async fn queries_print_tables_and_json_over_leads_in_every_state() {
    let app = app(false).await;
    let hook = app.hook("website-form", "rules", true).await;
    let zoo = zoo(&app, &hook.token, "website-form").await;

    let table = ok(&app, &["queues"]).await;
    assert!(table.starts_with("QUEUE"), "{table}");
    assert!(table.contains("leadflow.callback"));
    let queues = json(&app, &["queues"]).await;
    assert_eq!(queues.as_array().expect("queues").len(), 3);
    assert_eq!(queues[0]["counts"]["failed"], 1);

    let failed = json(&app, &["jobs", "list", "--state", "failed"]).await;
    assert_eq!(failed["items"].as_array().expect("items").len(), 1);
    let job = failed["items"][0]["id"].as_str().expect("id").to_owned();
    let page = ok(
        &app,
        &["jobs", "list", "--queue", "qualify", "--limit", "5"],
    )
    .await;
    assert_eq!(
        page.lines().filter(|l| l.contains("qualify")).count(),
        5,
        "{page}"
    );
    let cursor = page
        .lines()
        .find_map(|l| l.strip_prefix("(more: --cursor "))
        .map(|c| c.trim_end_matches(')').to_owned())
        .expect("a cursor for the next page");
    let next = json(
        &app,
        &[
            "jobs", "list", "--queue", "qualify", "--limit", "5", "--cursor", &cursor,
        ],
    )
    .await;
    assert_eq!(next["items"].as_array().expect("items").len(), 5);
    let shown = ok(&app, &["jobs", "show", &job]).await;
    assert!(shown.contains("status     Failed"), "{shown}");
    assert!(shown.contains("attempts"));
    assert_eq!(json(&app, &["jobs", "show", &job]).await["state"], "failed");

    for (status, id) in &zoo {
        let page = json(&app, &["leads", "list", "--status", status.as_str()]).await;
        assert_eq!(page["items"][0]["id"], id.as_str(), "{status}");
    }
    let by_phone = json(&app, &["leads", "list", "--phone", "+16502539003"]).await;
    assert_eq!(by_phone["items"][0]["phone"], "+*******9003");
    let recent = ok(&app, &["leads", "list", "--since", "1h", "--limit", "200"]).await;
    assert_eq!(recent.lines().count(), 1 + zoo.len(), "{recent}");

    let (_, id) = &zoo[4];
    let shown = ok(&app, &["leads", "show", id]).await;
    for part in ["STEPS", "TIMELINE", "+*******9004", "received"] {
        assert!(shown.contains(part), "{part}: {shown}");
    }
    let revealed = json(&app, &["leads", "show", id, "--reveal"]).await;
    assert_eq!(revealed["lead"]["phone"], "+16502539004");
    let reveal = revealed["timeline"]
        .as_array()
        .expect("timeline")
        .iter()
        .find(|e| e["event"] == "lead.revealed")
        .expect("recorded");
    assert_eq!(reveal["actor"], "cli:tester");
    let listed = json(&app, &["leads", "list", "--reveal", "--limit", "2"]).await;
    assert!(
        listed["items"][0]["phone"]
            .as_str()
            .expect("phone")
            .starts_with("+1650")
    );

    let log = ok(&app, &["log", "--outcome", "rejected"]).await;
    assert_eq!(log.lines().count(), 2, "{log}");
    assert!(log.contains("422"));
    let log = json(&app, &["log", "--hook", "website-form", "--limit", "3"]).await;
    assert_eq!(log["items"].as_array().expect("items").len(), 3);
    assert!(log["next_cursor"].is_string());

    // Hooks: rotate (the new token works), disable, enable.
    let rotated = json(&app, &["hooks", "rotate", "website-form", "--grace", "0"]).await;
    let token = rotated["token"].as_str().expect("token");
    let (code, _) = app.post_json(token, &lead("website-form", 1, |_| {})).await;
    assert_eq!(code, 200);
    let (code, _) = app
        .post_json(&hook.token, &lead("website-form", 2, |_| {}))
        .await;
    assert_eq!(code, 401, "no grace: the old token stopped");
    assert_eq!(
        json(&app, &["hooks", "disable", "website-form"]).await["active"],
        false
    );
    assert!(
        ok(&app, &["hooks", "enable", "website-form"])
            .await
            .contains("enabled")
    );

    // Pause and resume, safe to repeat.
    assert!(
        ok(&app, &["queues", "pause", "qualify"])
            .await
            .contains("is now paused")
    );
    assert_eq!(
        json(&app, &["queues", "pause", "leadflow.qualify"]).await["changed"],
        false
    );
    assert!(
        ok(&app, &["queues", "resume", "qualify"])
            .await
            .contains("is now running")
    );

    // Mistakes are an error line and a failing exit code.
    fails(&app, &["jobs", "show", "nope"]).await;
    fails(&app, &["leads", "list", "--status", "lost"]).await;
    fails(&app, &["leads", "list", "--phone", "12"]).await;
    fails(&app, &["queues", "pause", "nowhere"]).await;
    fails(&app, &["jobs", "list", "--cursor", "!!"]).await;
}

#[tokio::test]
async fn log_follow_prints_requests_as_they_arrive() {
    let app = app(false).await;
    let hook = app.hook("website-form", "rules", true).await;
    submit(&app, &hook.token, &lead("website-form", 1, |_| {})).await;
    let mut child = leadflow(&app)
        .args(["log", "--follow", "--json"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("follow starts");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let first: Value =
        serde_json::from_str(&lines.next_line().await.expect("read").expect("a line"))
            .expect("json");
    assert_eq!(first["outcome"], "accepted");
    let second_lead = submit(&app, &hook.token, &lead("website-form", 2, |_| {})).await;
    let next = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
        .await
        .expect("within 10 s");
    let next: Value = serde_json::from_str(&next.expect("read").expect("a line")).expect("json");
    assert_eq!(next["lead_id"], second_lead.as_str());
    assert!(next["id"].as_i64() > first["id"].as_i64());
    child.kill().await.expect("stopped");
}

#[tokio::test]
async fn actions_retry_cancel_and_replay_from_the_command_line() {
    let app = app(true).await;
    let hook = app.hook("website-form", "rules", true).await;
    let (a, job_a) = failed_lead(&app, &hook.token, "website-form", 1).await;
    let (b, job_b) = failed_lead(&app, &hook.token, "website-form", 2).await;
    let out = ok(&app, &["jobs", "retry", &job_a, &job_b]).await;
    assert!(out.contains("2 changed, 0 unchanged, 0 failed"), "{out}");
    for id in [&a, &b] {
        let view = app
            .wait_for_run(id, "routed", Duration::from_secs(20))
            .await;
        let retry = events(&view, "operator.retry")[0];
        assert_eq!(retry["actor"], "cli:tester");
    }
    let stderr = fails(
        &app,
        &["jobs", "retry", &job_a, "01ARZ3NDEKTSV4RRFFQ69G5FAV"],
    )
    .await;
    assert!(stderr.contains("No job"), "{stderr}");

    let (c, _) = failed_lead(&app, &hook.token, "website-form", 3).await;
    let bulk = json(&app, &["jobs", "retry", "--failed", "--queue", "route"]).await;
    assert_eq!(bulk["retried"], 1, "{bulk}");
    app.wait_for_run(&c, "routed", Duration::from_secs(20))
        .await;

    // Cancel a lead held by a paused queue.
    pause(&app, "qualify").await;
    let d = submit(&app, &hook.token, &lead("website-form", 4, |_| {})).await;
    let (_, view) = get(&app, &format!("/v1/leads/{d}")).await;
    let job_d = view["steps"][1]["job_id"]
        .as_str()
        .expect("qualify job")
        .to_owned();
    let cancelled = json(&app, &["jobs", "cancel", &job_d]).await;
    assert_eq!(
        cancelled["results"][0]["result"], "cancelled",
        "{cancelled}"
    );
    post(&app, "/v1/queues/qualify/resume", None).await;
    let (_, view) = get(&app, &format!("/v1/leads/{d}")).await;
    assert_eq!(view["run"]["status"], "cancelled");

    // Replay the cancelled lead from the start.
    let replayed = json(&app, &["leads", "replay", &d]).await;
    assert_eq!(replayed["from"], "validate");
    let view = app
        .wait_for_run(&d, "routed", Duration::from_secs(20))
        .await;
    assert_eq!(view["runs"][1]["status"], "cancelled");
    let text = ok(&app, &["leads", "replay", &a, "--from", "route"]).await;
    assert!(text.contains("replays from route"), "{text}");
    fails(&app, &["leads", "replay", &a, "--from", "nowhere"]).await;
}

#[test]
fn every_operator_command_has_help() {
    for args in [
        vec!["queues", "--help"],
        vec!["queues", "pause", "--help"],
        vec!["jobs", "list", "--help"],
        vec!["jobs", "show", "--help"],
        vec!["jobs", "retry", "--help"],
        vec!["jobs", "cancel", "--help"],
        vec!["leads", "list", "--help"],
        vec!["leads", "show", "--help"],
        vec!["leads", "replay", "--help"],
        vec!["log", "--help"],
        vec!["hooks", "rotate", "--help"],
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_leadflow"))
            .args(&args)
            .output()
            .expect("runs");
        assert!(out.status.success(), "{args:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("Usage:") && text.contains("--json"),
            "{args:?}: {text}"
        );
    }
}
