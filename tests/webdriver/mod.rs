//! Just enough of the W3C WebDriver protocol to drive Debian's Chromium through
//! chromedriver: open a page, find elements by CSS, type, click, read text, take a
//! screenshot. A few JSON calls over the reqwest the tests already use, rather than a
//! WebDriver crate and its dependency tree.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

pub type Result<T> = std::result::Result<T, String>;

/// The browser and its driver, where Debian puts them (or on PATH).
pub fn find_chromium() -> Option<(PathBuf, PathBuf)> {
    let find = |names: &[&str]| {
        names.iter().find_map(|n| {
            let p = PathBuf::from(n);
            if p.is_absolute() {
                p.exists().then_some(p)
            } else {
                std::env::var_os("PATH").and_then(|path| {
                    std::env::split_paths(&path)
                        .map(|d| d.join(n))
                        .find(|p| p.exists())
                })
            }
        })
    };
    Some((
        find(&["/usr/bin/chromium", "chromium", "chromium-browser"])?,
        find(&["/usr/bin/chromedriver", "chromedriver"])?,
    ))
}

/// Errors that mean "the page is changing under us; look again".
fn transient(error: &str) -> bool {
    // The last two come from Chromium when a page is replaced between finding an element
    // and acting on it (a form submit navigating away).
    error.contains("no such element")
        || error.contains("stale element")
        || error.contains("does not belong to the document")
        || error.contains("Node is detached")
}

pub struct Driver {
    child: Child,
    base: String,
    http: reqwest::Client,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Driver {
    pub async fn start(chromedriver: &Path) -> Result<Driver> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| e.to_string())?
            .port();
        let child = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("starting {}: {e}", chromedriver.display()))?;
        let driver = Driver {
            child,
            base: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .map_err(|e| e.to_string())?,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = driver
                .http
                .get(format!("{}/status", driver.base))
                .send()
                .await
                && let Ok(v) = r.json::<Value>().await
                && v["value"]["ready"] == true
            {
                return Ok(driver);
            }
            if Instant::now() > deadline {
                return Err("chromedriver did not become ready".into());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value> {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.map_err(|e| format!("{path}: {e}"))?;
        let ok = resp.status().is_success();
        let v: Value = resp.json().await.map_err(|e| format!("{path}: {e}"))?;
        if ok {
            Ok(v["value"].clone())
        } else {
            Err(format!(
                "{path}: {} {}",
                v["value"]["error"], v["value"]["message"]
            ))
        }
    }

    /// A headless Chromium with the flags this machine needs: no sandbox as root, and no
    /// background network (its connections are refused here), in a fresh profile.
    pub async fn session(&self, chromium: &Path, profile: &Path) -> Result<Session<'_>> {
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--window-size=1280,1000",
        ]
        .iter()
        .map(|a| a.to_string())
        .chain([format!("--user-data-dir={}", profile.display())])
        .collect::<Vec<_>>();
        let caps = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": { "binary": chromium, "args": args }
        } } });
        let v = self
            .call(reqwest::Method::POST, "/session", Some(caps))
            .await?;
        let id = v["sessionId"].as_str().ok_or("no session id")?.to_owned();
        Ok(Session { driver: self, id })
    }
}

pub struct Session<'a> {
    driver: &'a Driver,
    id: String,
}

impl Session<'_> {
    async fn post(&self, path: &str, body: Value) -> Result<Value> {
        let p = format!("/session/{}{path}", self.id);
        self.driver
            .call(reqwest::Method::POST, &p, Some(body))
            .await
    }

    async fn get(&self, path: &str) -> Result<Value> {
        let p = format!("/session/{}{path}", self.id);
        self.driver.call(reqwest::Method::GET, &p, None).await
    }

    pub async fn goto(&self, url: &str) -> Result<()> {
        self.post("/url", json!({ "url": url })).await.map(|_| ())
    }

    pub async fn url(&self) -> Result<String> {
        Ok(self
            .get("/url")
            .await?
            .as_str()
            .unwrap_or_default()
            .to_owned())
    }

    pub async fn find(&self, css: &str) -> Result<String> {
        let v = self
            .post("/element", json!({ "using": "css selector", "value": css }))
            .await?;
        v[ELEMENT]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| format!("no element {css}"))
    }

    /// Runs `act` on the element `css`, finding it again while the page is still loading
    /// or being replaced ("no such element", "stale element reference"), for up to 10 s.
    async fn with_element<T, F, Fut>(&self, css: &str, act: F) -> Result<T>
    where
        F: Fn(String) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let attempt = match self.find(css).await {
                Ok(el) => act(el).await,
                Err(e) => Err(e),
            };
            match attempt {
                Err(e) if transient(&e) && Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                other => return other,
            }
        }
    }

    pub async fn click(&self, css: &str) -> Result<()> {
        self.with_element(css, |el| async move {
            self.post(&format!("/element/{el}/click"), json!({}))
                .await
                .map(|_| ())
        })
        .await
    }

    pub async fn type_into(&self, css: &str, text: &str) -> Result<()> {
        self.with_element(css, |el| async move {
            self.post(&format!("/element/{el}/value"), json!({ "text": text }))
                .await
                .map(|_| ())
        })
        .await
    }

    pub async fn text(&self, css: &str) -> Result<String> {
        self.with_element(css, |el| async move {
            let v = self.get(&format!("/element/{el}/text")).await?;
            Ok(v.as_str().unwrap_or_default().to_owned())
        })
        .await
    }

    /// Waits until the current URL contains `part` (a navigation has landed).
    pub async fn wait_for_url(&self, part: &str, within: Duration) -> Result<()> {
        let deadline = Instant::now() + within;
        loop {
            let url = self.url().await?;
            if url.contains(part) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("still at {url}, not at …{part}…, after {within:?}"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until the element's text is `want` (the page may reload meanwhile).
    pub async fn wait_for_text(&self, css: &str, want: &str, within: Duration) -> Result<()> {
        let deadline = Instant::now() + within;
        let mut last = String::new();
        while Instant::now() < deadline {
            if let Ok(t) = self.text(css).await {
                if t == want {
                    return Ok(());
                }
                last = t;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Err(format!(
            "{css} still says {last:?}, not {want:?}, after {within:?}"
        ))
    }

    pub async fn screenshot(&self, to: &Path) -> Result<()> {
        let v = self.get("/screenshot").await?;
        let png = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap_or_default())
            .map_err(|e| e.to_string())?;
        std::fs::write(to, png).map_err(|e| e.to_string())
    }

    pub async fn quit(self) {
        let p = format!("/session/{}", self.id);
        let _ = self.driver.call(reqwest::Method::DELETE, &p, None).await;
    }
}
