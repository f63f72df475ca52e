//! The README's first command, for real: the `leadflow` binary with no DATABASE_URL starts a
//! private PostgreSQL in its data folder, `hooks create` reaches it from another process
//! without stopping it, a lead goes through, SIGTERM exits 0, and the data survives a restart.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

fn leadflow(data_dir: &Path, listen: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_leadflow"));
    cmd.env_remove("DATABASE_URL")
        .env_remove("LEADFLOW_ADMIN_TOKEN")
        .env("LEADFLOW_DATA_DIR", data_dir)
        .env("LEADFLOW_LISTEN", listen)
        .env(
            "LEADFLOW_WORKFLOWS_DIR",
            Path::new(env!("CARGO_MANIFEST_DIR")).join("workflows"),
        )
        .env("LEADFLOW_POLL_INTERVAL_MS", "50")
        .env("LEADFLOW_SIM_DELAY_MS", "100")
        .env("RUST_LOG", "info");
    cmd
}

fn free_port() -> String {
    let sock = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = sock.local_addr().expect("addr");
    format!("127.0.0.1:{}", addr.port())
}

fn fresh_dir(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("{name}-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

struct Serve {
    child: Child,
    base: String,
}

impl Serve {
    async fn start(data_dir: &Path) -> Serve {
        let listen = free_port();
        let child = leadflow(data_dir, &listen)
            .arg("serve")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("leadflow starts");
        let serve = Serve {
            child,
            base: format!("http://{listen}"),
        };
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            if let Ok(r) = reqwest::get(format!("{}/readyz", serve.base)).await
                && r.status() == 200
            {
                return serve;
            }
            assert!(Instant::now() < deadline, "serve never became ready");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn terminate(mut self) -> ExitStatus {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("signal");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "serve did not exit after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

fn sample(phone: &str) -> Value {
    json!({
        "hookName": "website-form", "name_field": "John Doe", "country_code_field": "+1",
        "phone_field": phone, "email_field": "john.doe@example.com",
        "company_name_field": "Acme Corp", "ip_address_field": "192.168.1.1",
        "industry_field": "Software", "message_field": "Looking for a demo.", "size_field": "Medium",
        "page_url_field": "https://example.com/demo", "page_name_field": "Demo Page",
        "date_submitted_field": "2025-01-30", "time_submitted_field": "14:30:00",
        "is_auto": 1, "status": 1, "team_id_field": "team_001"
    })
}

async fn lead_status(base: &str, admin: &str, lead: &str) -> String {
    let resp = reqwest::Client::new()
        .get(format!("{base}/v1/leads/{lead}"))
        .bearer_auth(admin)
        .send()
        .await
        .expect("sent");
    let view: Value = resp.json().await.expect("json");
    view["run"]["status"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn serve_runs_on_a_private_postgres_that_survives_restarts() {
    let data_dir = fresh_dir("serve");

    // `migrate` on a cold folder starts the private server, and stops it again.
    let out = leadflow(&data_dir, &free_port())
        .arg("migrate")
        .output()
        .expect("migrate runs");
    assert!(
        out.status.success(),
        "migrate: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let serve = Serve::start(&data_dir).await;
    let token_file = data_dir.join("admin-token");
    let admin = std::fs::read_to_string(&token_file).expect("admin token written at first start");
    let admin = admin.trim().to_owned();
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&token_file)
        .expect("meta")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);

    // Another process reaches the running private server, and leaves it running.
    let out = leadflow(&data_dir, serve.base.trim_start_matches("http://"))
        .args([
            "hooks",
            "create",
            "--name",
            "website-form",
            "--workflow",
            "always-open",
            "--json",
        ])
        .output()
        .expect("hooks create runs");
    assert!(
        out.status.success(),
        "hooks create: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let created: Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    assert_eq!(created["name"], "website-form");
    assert_eq!(
        created["url"],
        format!("{}/v1/webhooks/inbound", serve.base)
    );
    let token = created["token"].as_str().expect("token").to_owned();

    let client = reqwest::Client::new();
    let resp = client
        .post(format!("{}/v1/webhooks/inbound", serve.base))
        .bearer_auth(&token)
        .json(&sample("650-253-0000"))
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status(), 200, "the server outlived the CLI command");
    let body: Value = resp.json().await.expect("json");
    let lead = body["lead_id"].as_str().expect("lead id").to_owned();
    let deadline = Instant::now() + Duration::from_secs(20);
    // The always-open team takes calls at any hour, and the default simulator answers every
    // call: the lead is routed, then called.
    while lead_status(&serve.base, &admin, &lead).await != "called" {
        assert!(Instant::now() < deadline, "lead never called");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let status = serve.terminate();
    assert_eq!(status.code(), Some(0), "SIGTERM is a clean exit");

    // Restart: same data, same admin token.
    let serve = Serve::start(&data_dir).await;
    assert_eq!(lead_status(&serve.base, &admin, &lead).await, "called");
    assert_eq!(serve.terminate().code(), Some(0));
    remove_data_dir(&data_dir);
}

/// Removes a test's data folder and, when running as root, the cluster kept outside it.
fn remove_data_dir(data_dir: &Path) {
    if let Ok(cluster) = std::fs::read_to_string(data_dir.join("cluster-location")) {
        let _ = std::fs::remove_dir_all(cluster.trim());
    }
    let _ = std::fs::remove_dir_all(data_dir);
}

#[test]
fn a_bad_workflow_stops_start_up_naming_the_file_and_line() {
    let data_dir = fresh_dir("badflow");
    let flows = data_dir.join("workflows");
    std::fs::create_dir_all(&flows).expect("dir");
    let good = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("workflows/always-open.toml"),
    )
    .expect("read");
    let bad = good.replace("default_team = \"team_001\"", "default_team = \"team_999\"");
    std::fs::write(flows.join("always-open.toml"), bad).expect("write");
    let out = leadflow(&data_dir, &free_port())
        .env("LEADFLOW_WORKFLOWS_DIR", &flows)
        .arg("serve")
        .output()
        .expect("runs");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("always-open.toml:"), "{stderr}");
    assert!(stderr.contains("team_999"), "{stderr}");
    remove_data_dir(&data_dir);
}

#[test]
fn missing_server_binaries_give_a_one_line_hint() {
    let data_dir = fresh_dir("nobin");
    let out = leadflow(&data_dir, &free_port())
        .env("LEADFLOW_PG_BINDIR", "/nonexistent")
        .arg("migrate")
        .output()
        .expect("runs");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = stderr
        .lines()
        .find(|l| l.starts_with("error:"))
        .expect("an error line");
    assert!(
        line.contains("apt-get install postgresql") && line.contains("DATABASE_URL"),
        "{stderr}"
    );
    remove_data_dir(&data_dir);
}

#[test]
fn every_command_has_help() {
    for args in [
        vec!["--help"],
        vec!["serve", "--help"],
        vec!["worker", "--help"],
        vec!["migrate", "--help"],
        vec!["hooks", "create", "--help"],
        vec!["block", "add", "--help"],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_leadflow"))
            .args(&args)
            .output()
            .expect("runs");
        assert!(out.status.success(), "{args:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("Usage:"), "{args:?}: {text}");
    }
}
