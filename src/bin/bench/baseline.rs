//! The baselines, run against the same server in the same invocation: `pgbench` replaying
//! one intake's transaction, and the Graphile Worker chain of `../shared/bench`.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use tokio::process::Command;

use crate::target::Bench;

/// The sizes of a real intake's rows, read back from the bench database, so that the
/// pgbench transaction writes what leadflow writes.
pub struct IntakeShape {
    submission: String,
    body_hex: String,
    body_size: i64,
    headers: String,
}

impl IntakeShape {
    pub async fn from_database(bench: &Bench) -> Result<IntakeShape> {
        let (submission,): (String,) =
            sqlx::query_as("SELECT submission::text FROM leads WHERE accepted LIMIT 1")
                .fetch_optional(&bench.pool)
                .await?
                .ok_or_else(|| anyhow!("the intake phase stored no lead to copy the shape of"))?;
        let (body, body_size, headers): (Vec<u8>, i64, String) = sqlx::query_as(
            "SELECT body, body_size, headers::text FROM webhook_log \
             WHERE outcome = 'accepted' AND body IS NOT NULL LIMIT 1",
        )
        .fetch_one(&bench.pool)
        .await?;
        Ok(IntakeShape {
            submission,
            body_hex: hex::encode(body),
            body_size,
            headers,
        })
    }

    /// A pgbench script: the intake transaction of an accepted lead in its plain shape, the
    /// blocklist lookup and the rows `intake::store::submit` writes, one `INSERT` per table
    /// (leadflow writes them in one statement). The job goes to a queue no worker reads,
    /// unannounced, as leadflow's (whose announcement, after the commit, is not part of the
    /// transaction: see `leadflow::engine::announce`).
    fn script(&self, hook_id: i64) -> String {
        // pgbench reads `:name` as a variable even inside a string, so colons are spliced in.
        let lit = |s: &str| {
            let quoted = s.replace('\'', "''").replace(':', "' || chr(58) || '");
            format!("('{quoted}')")
        };
        let (sub, headers) = (lit(&self.submission), lit(&self.headers));
        let received = lit(&format!(
            r#"{{"hook":"bench","content_type":"application/json","bytes":{}}}"#,
            self.body_size
        ));
        let validated =
            lit(r#"{"phone_region":"US","phone_type":"fixed_line_or_mobile","is_auto":true}"#);
        let region = lit(r#"{"phone_region":"US"}"#);
        let (body, size) = (&self.body_hex, self.body_size);
        let lead = "md5(:r::text || 'lead')::uuid";
        let run = "md5(:r::text || 'run')::uuid";
        let job = "md5(:r::text || 'job')";
        [
            "\\set r random(1, 1000000000000000)".to_owned(),
            "BEGIN;".to_owned(),
            // Marked as leadflow marks it, so the insert trigger leaves the job unannounced.
            format!(
                "SELECT set_config('leadflow.announce', '{}', true), (SELECT kind FROM blocklist \
                 WHERE (kind = 'phone' AND value = '+1' || :r::text) \
                 OR (kind = 'email' AND value = lower('john.doe@example.com')) \
                 ORDER BY kind DESC LIMIT 1);",
                leadflow::engine::announce::AFTER_COMMIT
            ),
            format!(
                "INSERT INTO leads (id, hook_id, workflow, accepted, submission, name, phone_e164, \
                 phone_region, email, company, auto_callback) VALUES ({lead}, {hook_id}, \
                 'always-open', true, {sub}::jsonb, 'John Doe', '+1' || :r::text, 'US', \
                 'john.doe@example.com', 'Acme Corp', true);"
            ),
            format!(
                "INSERT INTO runs (id, lead_id, workflow, status, reason) VALUES ({run}, {lead}, \
                 'always-open', 'running', NULL);"
            ),
            format!(
                "INSERT INTO steps (run_id, name, n, status, attempts, max_attempts, started_at, \
                 finished_at, output, error) VALUES ({run}, 'validate', 1, 'ok', 1, 1, now(), now(), \
                 {validated}::jsonb, NULL);"
            ),
            format!(
                "INSERT INTO timeline (lead_id, run_id, event, actor, detail) VALUES ({lead}, {run}, \
                 'received', 'system', {received}::jsonb), ({lead}, {run}, 'validated', 'system', \
                 {region}::jsonb);"
            ),
            format!(
                "INSERT INTO apalis.jobs (id, job_type, job, status, attempts, max_attempts, run_at, \
                 priority, metadata, idempotency_key) VALUES ({job}, 'bench.pgbench', \
                 '\\x7b7d'::bytea, 'Pending', 0, 5, now(), 0, ''::hstore, 'pgbench:' || :r::text);"
            ),
            format!(
                "INSERT INTO steps (run_id, name, n, job_id, status, max_attempts, next_run_at) \
                 VALUES ({run}, 'qualify', 1, {job}, 'pending', 5, now());"
            ),
            format!(
                "INSERT INTO webhook_log (hook_id, hook_name, content_type, body_size, body, headers, \
                 status_code, outcome, reason, lead_id, idempotency_key) VALUES ({hook_id}, 'bench', \
                 'application/json', {size}, '\\x{body}'::bytea, {headers}::jsonb, 200, 'accepted', \
                 '', {lead}, NULL);"
            ),
            "END;".to_owned(),
        ]
        .join("\n")
            + "\n"
    }
}

/// Transactions per second of the intake transaction in pgbench, `clients` clients.
pub async fn pgbench(
    bench: &Bench,
    shape: &IntakeShape,
    hook_id: i64,
    clients: usize,
    secs: u64,
) -> Result<f64> {
    let script = std::path::PathBuf::from("target/bench/intake.pgbench.sql");
    std::fs::write(&script, shape.script(hook_id)).context("writing the pgbench script")?;
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let out = Command::new("pgbench")
        .args(["-n", "-M", "prepared"])
        .args([
            "-c",
            &clients.to_string(),
            "-j",
            &threads.min(clients).to_string(),
        ])
        .args(["-T", &secs.to_string(), "-f"])
        .arg(&script)
        .arg(&bench.url)
        .output()
        .await
        .context("running pgbench (Debian: apt-get install postgresql-client)")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "pgbench failed: {}{}",
            stdout,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    stdout
        .lines()
        .find_map(|l| {
            l.strip_prefix("tps = ")
                .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        })
        .ok_or_else(|| anyhow!("no tps line in pgbench's output: {stdout}"))
}

/// What the Graphile chain printed.
#[derive(Debug, Clone)]
pub struct Graphile {
    pub leads_per_s: f64,
    pub step_jobs_per_s: f64,
    pub latency_ms: [f64; 4],
}

/// Runs the Graphile chain on its own database of the same server.
pub async fn graphile(bench: &Bench, dir: &Path, leads: usize) -> Result<Graphile> {
    let work = Path::new("target/bench/graphile-chain");
    std::fs::create_dir_all(work)?;
    for file in ["chain.mjs", "package.json", "package-lock.json"] {
        std::fs::copy(dir.join(file), work.join(file)).with_context(|| {
            format!(
                "copying {} (is --graphile-dir right?)",
                dir.join(file).display()
            )
        })?;
    }
    if !work.join("node_modules").exists() {
        let status = Command::new("npm")
            .args(["ci", "--silent", "--no-audit", "--no-fund"])
            .current_dir(work)
            .status()
            .await
            .context("running npm ci for the graphile chain")?;
        if !status.success() {
            bail!("npm ci failed in {}", work.display());
        }
    }
    let run = Command::new("node")
        .arg("chain.mjs")
        .env("DATABASE_URL", bench.graphile_url()?)
        .env("LEADS", leads.to_string())
        .current_dir(work)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(1_200), run)
        .await
        .map_err(|_| anyhow!("the graphile chain ran for more than 20 minutes"))?
        .context("running node chain.mjs")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "the graphile chain failed: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    for line in stdout.lines().filter(|l| l.starts_with("# ")) {
        eprintln!("      graphile {line}");
    }
    parse_graphile(&stdout)
}

fn parse_graphile(stdout: &str) -> Result<Graphile> {
    let value = |name: &str| -> Result<f64> {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
            .ok_or_else(|| anyhow!("no {name} line in the graphile chain's output"))
    };
    let latency = stdout
        .lines()
        .find_map(|l| l.strip_prefix("graphile_chain_latency_ms "))
        .ok_or_else(|| anyhow!("no latency line in the graphile chain's output"))?;
    let mut ms = [0.0; 4];
    for (slot, key) in ms.iter_mut().zip(["p50=", "p90=", "p99=", "max="]) {
        *slot = latency
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix(key)?.parse().ok())
            .ok_or_else(|| anyhow!("no {key} in {latency:?}"))?;
    }
    Ok(Graphile {
        leads_per_s: value("graphile_chain_leads_per_s ")?,
        step_jobs_per_s: value("graphile_chain_step_jobs_per_s ")?,
        latency_ms: ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_graphile_result_lines() {
        let out = "# phase 2: …\ngraphile_insert_jobs_per_s 15000.5\n\
                   graphile_chain_leads_per_s 276.4\ngraphile_chain_step_jobs_per_s 829.2\n\
                   graphile_chain_latency_ms p50=20.1 p90=35 p99=60.5 max=80\n";
        let g = parse_graphile(out).expect("parsed");
        assert_eq!(g.leads_per_s, 276.4);
        assert_eq!(g.step_jobs_per_s, 829.2);
        assert_eq!(g.latency_ms, [20.1, 35.0, 60.5, 80.0]);
        assert!(parse_graphile("graphile_chain_leads_per_s 1\n").is_err());
    }
}
