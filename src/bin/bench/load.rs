//! The HTTP load generator: the spec's sample lead, with a distinct valid phone each time,
//! posted by N concurrent clients (closed loop, for a time or a count) or at a fixed rate
//! (open loop: a late answer never delays the next send).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use tokio::sync::Mutex;

#[derive(Debug, Clone, Copy)]
pub enum Plan {
    ClosedFor(Duration),
    ClosedCount(usize),
    Rate { per_second: u32, for_: Duration },
}

/// Distinct valid US numbers: area 650, exchanges 200–999 except N11 and 555.
#[derive(Default)]
pub struct Phones {
    next: usize,
}

impl Phones {
    const EXCHANGES: usize = 800;

    fn exchange(i: usize) -> Option<usize> {
        let e = 200 + i;
        (e % 100 != 11 && e != 555).then_some(e)
    }

    /// The next `n` numbers, national format (the sample's country code is separate).
    pub fn take(&mut self, n: usize) -> Vec<String> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let (ex, line) = (self.next / 10_000 % Self::EXCHANGES, self.next % 10_000);
            self.next += 1;
            if let Some(e) = Self::exchange(ex) {
                out.push(format!("650{e:03}{line:04}"));
            }
        }
        out
    }
}

/// The spec's sample payload for one phone, as bytes.
pub fn body(hook: &str, phone: &str) -> Vec<u8> {
    leadflow::intake::sample::payload(hook, phone)
        .to_string()
        .into_bytes()
}

/// What a load run saw.
#[derive(Debug, Default)]
pub struct Outcome {
    pub sent: usize,
    pub accepted: usize,
    /// Non-200 answers and transport errors, by kind.
    pub failures: BTreeMap<String, usize>,
    pub first_failure: Option<String>,
    /// Latency of each accepted request, milliseconds.
    pub latencies_ms: Vec<f64>,
    pub elapsed: Duration,
}

impl Outcome {
    pub fn accepted_per_s(&self) -> f64 {
        self.accepted as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    pub fn require_all_accepted(&self) -> Result<()> {
        if self.accepted != self.sent {
            bail!(
                "{} of {} leads were not accepted: {:?}; first: {}",
                self.sent - self.accepted,
                self.sent,
                self.failures,
                self.first_failure.as_deref().unwrap_or("-")
            );
        }
        Ok(())
    }
}

/// Runs `plan` against `base` with `clients` connections.
pub async fn run(
    base: &str,
    token: &str,
    clients: usize,
    plan: Plan,
    phones: &mut Phones,
) -> Result<Outcome> {
    let url = format!("{base}/v1/webhooks/inbound");
    let count = match plan {
        Plan::ClosedFor(d) => estimate(d, 8_000),
        Plan::ClosedCount(n) => n,
        Plan::Rate { per_second, for_ } => (per_second as f64 * for_.as_secs_f64()).ceil() as usize,
    };
    // Bodies are made up front so the generator spends its time sending.
    let bodies: Arc<Vec<Vec<u8>>> = Arc::new(
        phones
            .take(count)
            .iter()
            .map(|p| body("bench", p))
            .collect(),
    );
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(clients.max(1) * 2)
        .timeout(Duration::from_secs(30))
        .build()?;
    let auth = format!("Bearer {token}");
    let shared = Arc::new(Mutex::new(Outcome::default()));
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    match plan {
        Plan::ClosedFor(_) | Plan::ClosedCount(_) => {
            let deadline = match plan {
                Plan::ClosedFor(d) => Some(started + d),
                _ => None,
            };
            let mut tasks = tokio::task::JoinSet::new();
            for _ in 0..clients.max(1) {
                let (http, url, auth, bodies, next, shared) = (
                    http.clone(),
                    url.clone(),
                    auth.clone(),
                    bodies.clone(),
                    next.clone(),
                    shared.clone(),
                );
                tasks.spawn(async move {
                    loop {
                        if deadline.is_some_and(|d| Instant::now() >= d) {
                            return;
                        }
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(body) = bodies.get(i) else { return };
                        let result = send(&http, &url, &auth, body.clone()).await;
                        record(&shared, result).await;
                    }
                });
            }
            while tasks.join_next().await.is_some() {}
        }
        Plan::Rate { per_second, .. } => {
            let gap = Duration::from_secs_f64(1.0 / f64::from(per_second.max(1)));
            let mut tasks = tokio::task::JoinSet::new();
            for (i, body) in bodies.iter().enumerate() {
                tokio::time::sleep_until((started + gap * i as u32).into()).await;
                let (http, url, auth, body, shared) = (
                    http.clone(),
                    url.clone(),
                    auth.clone(),
                    body.clone(),
                    shared.clone(),
                );
                tasks.spawn(async move {
                    let result = send(&http, &url, &auth, body).await;
                    record(&shared, result).await;
                });
            }
            while tasks.join_next().await.is_some() {}
        }
    }
    let mut outcome = std::mem::take(&mut *shared.lock().await);
    // Requests in flight at the deadline are waited for, and counted, so the time is too.
    outcome.elapsed = started.elapsed();
    if let Plan::ClosedFor(d) = plan
        && next.load(Ordering::Relaxed) >= bodies.len()
    {
        eprintln!(
            "      note: all {} prepared bodies were sent before {d:?}",
            bodies.len()
        );
    }
    Ok(outcome)
}

/// Bodies to prepare for a timed run: enough for `per_s` for the whole time.
fn estimate(d: Duration, per_s: usize) -> usize {
    (d.as_secs_f64() * per_s as f64) as usize + 1_000
}

type Sent = Result<(u16, Duration, String), String>;

async fn send(http: &reqwest::Client, url: &str, auth: &str, body: Vec<u8>) -> Sent {
    let t = Instant::now();
    let resp = http
        .post(url)
        .header("authorization", auth)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .map_err(|e| format!("transport: {e}"))?;
    let code = resp.status().as_u16();
    let text = if code == 200 {
        let _ = resp.bytes().await;
        String::new()
    } else {
        resp.text().await.unwrap_or_default()
    };
    Ok((code, t.elapsed(), text))
}

async fn record(shared: &Mutex<Outcome>, result: Sent) {
    let mut o = shared.lock().await;
    o.sent += 1;
    match result {
        Ok((200, took, _)) => {
            o.accepted += 1;
            o.latencies_ms.push(took.as_secs_f64() * 1000.0);
        }
        Ok((code, _, text)) => {
            *o.failures.entry(format!("http {code}")).or_default() += 1;
            o.first_failure.get_or_insert(format!("{code}: {text}"));
        }
        Err(e) => {
            *o.failures.entry("transport".to_owned()).or_default() += 1;
            o.first_failure.get_or_insert(e);
        }
    }
}

/// The p-th percentile (0–100) of `values`, nearest rank; 0 for none.
pub fn percentile(values: &[f64], p: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phones_are_distinct_and_skip_reserved_exchanges() {
        let mut phones = Phones::default();
        let all = phones.take(30_000);
        let set: std::collections::HashSet<_> = all.iter().collect();
        assert_eq!(set.len(), all.len());
        assert!(all.iter().all(|p| p.len() == 10 && p.starts_with("650")));
        assert!(!all.iter().any(|p| &p[3..6] == "555" || &p[4..6] == "11"));
    }

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), 50.0);
        assert_eq!(percentile(&v, 99.0), 99.0);
        assert_eq!(percentile(&v, 100.0), 100.0);
        assert_eq!(percentile(&[], 50.0), 0.0);
    }
}
