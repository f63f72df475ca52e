//! Test harness: a fresh database per test on a real PostgreSQL (DATABASE_URL, or the private
//! server started the same way `serve` starts it), and the service running in-process on a
//! free port, reached over real sockets.
#![allow(dead_code)]

pub mod dashboards;
pub mod fake_twilio;
pub mod process;

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use leadflow::clock::Clock;
use leadflow::config::{HttpSettings, WorkerSettings};
use leadflow::db::embedded::{EmbeddedOptions, EmbeddedPostgres};
use leadflow::engine::{CallbackSettings, Engine, EngineConfig, ProviderConfig};
use leadflow::hooks::{self, CreatedHook};
use leadflow::service::Service;
use leadflow::telephony::sim::SimConfig;
use leadflow::workflow::Workflows;
use serde_json::{Value, json};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Executor, PgPool};
use tokio::sync::OnceCell;

pub const ADMIN_TOKEN: &str = "test-admin-token";

static SERVER: OnceCell<String> = OnceCell::const_new();

/// The URL of the server tests create their databases on.
pub async fn server_url() -> String {
    SERVER
        .get_or_init(|| async {
            if let Ok(url) = std::env::var("DATABASE_URL") {
                return url;
            }
            let data_dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("test-pg");
            let pg = EmbeddedPostgres::start(EmbeddedOptions {
                data_dir,
                fast_unsafe: true,
            })
            .await
            .unwrap_or_else(|e| panic!("no DATABASE_URL and the private PostgreSQL failed: {e}"));
            // Left running for the next test binary; it is a throwaway cluster under target/.
            pg.url("postgres")
        })
        .await
        .clone()
}

pub struct TestDb {
    pub pool: PgPool,
    pub name: String,
    pub options: PgConnectOptions,
    /// A URL for this database, for child processes (`DATABASE_URL`).
    pub url: String,
}

impl TestDb {
    /// A new, migrated database of its own.
    pub async fn new() -> TestDb {
        let url = server_url().await;
        let admin = PgConnectOptions::from_str(&url).expect("server URL parses");
        let name = format!("lf_test_{}", uuid::Uuid::new_v4().simple());
        let mut conn = admin.connect().await.expect("connect to the test server");
        conn.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .await
            .expect("create the test database");
        drop(conn);
        let options = admin.database(&name);
        let pool = PgPoolOptions::new()
            .max_connections(20)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options.clone())
            .await
            .expect("connect to the test database");
        leadflow::db::migrate(&pool)
            .await
            .expect("migrations apply");
        let mut db_url = url::Url::parse(&url).expect("server URL parses");
        db_url.set_path(&format!("/{name}"));
        TestDb {
            pool,
            name,
            options,
            url: db_url.to_string(),
        }
    }

    /// A URL for this database, for a `leadflow` process of its own.
    pub async fn url(&self) -> String {
        let mut url = url::Url::parse(&server_url().await).expect("server URL parses");
        url.set_path(&self.name);
        url.to_string()
    }
}

pub fn repo_path(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// A workflows folder in `dir` holding copies of the repo's workflow `files`.
pub fn workflows_in(dir: &std::path::Path, files: &[&str]) -> PathBuf {
    std::fs::create_dir_all(dir).expect("workflows dir");
    for file in files {
        let src = repo_path(file);
        std::fs::copy(&src, dir.join(src.file_name().expect("file name"))).expect("copy");
    }
    dir.to_path_buf()
}

pub fn worker_settings(workflows_dir: PathBuf) -> WorkerSettings {
    WorkerSettings {
        workflows_dir,
        poll_interval_ms: 50,
        rescue_after_s: 3,
        batch_size: 10,
        concurrency: 8,
        shutdown_timeout_s: 10,
        retention_days: 30,
        retention_cron: "0 30 3 * * *".to_owned(),
    }
}

pub fn http_settings() -> HttpSettings {
    HttpSettings {
        listen: "127.0.0.1:0".parse().expect("literal address"),
        admin_token: Some(ADMIN_TOKEN.to_owned()),
        max_body_bytes: 256 * 1024,
        request_timeout_ms: 10_000,
        header_timeout_ms: 2_000,
        rate_limit_per_min: 0,
    }
}

pub struct TestApp {
    pub db: TestDb,
    pub base: String,
    pub service: Option<Service>,
    pub client: reqwest::Client,
    pub workflows: Arc<Workflows>,
    pub workflows_dir: PathBuf,
    pub http: HttpSettings,
    pub config: EngineConfig,
    pub workers: Option<WorkerSettings>,
}

pub struct Options {
    pub workflows_dir: PathBuf,
    pub workers: bool,
    pub clock: Clock,
    pub provider: ProviderConfig,
    pub callbacks: CallbackSettings,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            workflows_dir: repo_path("workflows"),
            workers: true,
            clock: Clock::System,
            provider: ProviderConfig::Sim(SimConfig {
                delay: Duration::from_millis(50),
                ..SimConfig::default()
            }),
            callbacks: CallbackSettings::default(),
        }
    }
}

/// A free local address, so the public URL (in callback URLs) is known before the service
/// starts.
pub fn free_addr() -> std::net::SocketAddr {
    let sock = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    sock.local_addr().expect("addr")
}

impl TestApp {
    pub async fn start() -> TestApp {
        Self::start_with(Options::default()).await
    }

    pub async fn start_with(opts: Options) -> TestApp {
        let db = TestDb::new().await;
        let workflows = Arc::new(Workflows::load_dir(&opts.workflows_dir).expect("workflows load"));
        let mut http = http_settings();
        http.listen = free_addr();
        let base = format!("http://{}", http.listen);
        let config = EngineConfig {
            clock: opts.clock,
            provider: opts.provider,
            callbacks: CallbackSettings {
                public_url: base.clone(),
                ..opts.callbacks
            },
        };
        let workers = opts
            .workers
            .then(|| worker_settings(opts.workflows_dir.clone()));
        let mut app = TestApp {
            base,
            db,
            service: None,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                // Shorter than the server's 60 s keep-alive idle timeout: a connection reused
                // just as the server closes it fails (seen after the provider-outage test's
                // 60 s wait).
                .pool_idle_timeout(Duration::from_secs(30))
                .build()
                .expect("http client"),
            workflows,
            workflows_dir: opts.workflows_dir,
            http,
            config,
            workers,
        };
        app.service = Some(app.start_service().await);
        app
    }

    /// A new engine and service on the same address and database: a process restart.
    pub async fn start_service(&self) -> Service {
        let engine = Engine::build(
            self.db.pool.clone(),
            self.workflows.clone(),
            self.config.clone(),
        )
        .expect("engine");
        Service::start(engine, &self.http, ADMIN_TOKEN, self.workers.as_ref())
            .await
            .expect("service starts")
    }

    /// Kills the running service as a crash would (no acknowledgements, no clean-up) and
    /// starts a new one in its place.
    pub async fn crash_and_restart(&mut self) {
        if let Some(old) = self.service.take() {
            old.abort();
        }
        // The aborted server releases its port asynchronously.
        for _ in 0..100 {
            if std::net::TcpListener::bind(self.http.listen).is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.service = Some(self.start_service().await);
    }

    pub fn service(&self) -> &Service {
        self.service.as_ref().expect("service running")
    }

    pub async fn hook(&self, name: &str, workflow: &str, auto_callback: bool) -> CreatedHook {
        hooks::create(&self.db.pool, name, workflow, auto_callback, &self.base)
            .await
            .expect("hook created")
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub async fn post_json(&self, token: &str, body: &Value) -> (u16, Value) {
        let resp = self
            .client
            .post(self.url("/v1/webhooks/inbound"))
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .expect("request sent");
        read(resp).await
    }

    pub async fn get_lead(&self, lead_id: &str) -> (u16, Value) {
        let resp = self
            .client
            .get(self.url(&format!("/v1/leads/{lead_id}")))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .expect("request sent");
        read(resp).await
    }

    /// Pauses or resumes (`action`) a queue with the admin token, then waits until the
    /// workers have surely seen it: they do within one poll interval (50 ms in tests).
    pub async fn queue_action(&self, queue: &str, action: &str) {
        let resp = self
            .client
            .post(self.url(&format!("/v1/queues/{queue}/{action}")))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .expect("request sent");
        assert!(resp.status().is_success(), "{action} {queue}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    /// Polls the lead until its run has `status`; panics with the lead's view after `within`.
    pub async fn wait_for_run(&self, lead_id: &str, status: &str, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let (code, view) = self.get_lead(lead_id).await;
            if code == 200 && view["run"]["status"] == status {
                return view;
            }
            if Instant::now() > deadline {
                panic!("lead {lead_id} did not reach {status} within {within:?}: {view:#}");
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

pub async fn read(resp: reqwest::Response) -> (u16, Value) {
    let code = resp.status().as_u16();
    let text = resp.text().await.expect("body read");
    let value = serde_json::from_str(&text).unwrap_or_else(|_| json!({ "raw": text }));
    (code, value)
}

/// The spec's sample payload, with a given hook name and a valid phone number.
pub fn sample(hook: &str, phone: &str) -> Value {
    leadflow::intake::sample::payload(hook, phone)
}

/// A distinct valid US number for the i-th lead of a test (NANP 650 area, 555-01xx avoided).
pub fn us_phone(i: u32) -> String {
    format!("650253{:04}", i % 10_000)
}
