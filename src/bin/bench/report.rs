//! The figures of one bench run: the summary table, the machine-readable lines, the targets
//! and the README's results section.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::Args;
use crate::baseline::Graphile;
use crate::load::{Outcome, percentile};
use crate::target::{self, Bench, Finished, Proc};

/// What a phase cost: the process's peak RSS and database transactions per lead.
#[derive(Debug, Clone, Copy, Default)]
pub struct Cost {
    pub rss_mb: f64,
    pub xacts_per_lead: f64,
    /// Busy CPU of the whole machine over the phase, per lead, in ms. Steadier than a rate on
    /// a noisy machine: it is what a change of statements shows in first.
    pub cpu_ms_per_lead: f64,
    /// The part of it the leadflow process used.
    pub leadflow_cpu_ms_per_lead: f64,
    /// Statements the database executed per lead (round trips, BEGIN and COMMIT included),
    /// when the server has `pg_stat_statements`.
    pub statements_per_lead: Option<f64>,
}

/// Where a phase's cost is counted from.
pub struct Mark {
    xacts: i64,
    statements: Option<i64>,
    cpu_s: f64,
    /// The measured process's CPU time at the mark, when it had already run (a warm-up).
    proc_cpu_s: f64,
}

impl Mark {
    pub async fn now(bench: &Bench) -> Result<Mark> {
        Ok(Mark {
            xacts: bench.xacts().await?,
            statements: bench.statements().await,
            cpu_s: target::machine_cpu_seconds().unwrap_or(f64::NAN),
            proc_cpu_s: 0.0,
        })
    }

    /// [`Mark::now`] for a process that is already running.
    pub async fn of(bench: &Bench, proc: &Proc) -> Result<Mark> {
        Ok(Mark {
            proc_cpu_s: proc.cpu_seconds(),
            ..Mark::now(bench).await?
        })
    }
}

impl Cost {
    /// Stops `proc` (its backends report their transaction counts as they exit), then reads
    /// the cost of the phase that began at `from`.
    pub async fn after(bench: &Bench, proc: Proc, from: Mark, leads: usize) -> Result<Cost> {
        let cpu_s = target::machine_cpu_seconds().unwrap_or(f64::NAN) - from.cpu_s;
        let stopped = proc.stop().await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let xacts = bench.xacts().await? - from.xacts;
        let statements = bench.statements().await;
        let leads = leads.max(1) as f64;
        Ok(Cost {
            rss_mb: stopped.rss_mb,
            xacts_per_lead: xacts as f64 / leads,
            cpu_ms_per_lead: cpu_s * 1000.0 / leads,
            leadflow_cpu_ms_per_lead: (stopped.cpu_s - from.proc_cpu_s) * 1000.0 / leads,
            statements_per_lead: statements
                .zip(from.statements)
                .map(|(now, then)| (now - then) as f64 / leads),
        })
    }
}

#[derive(Debug, Default)]
pub struct Report {
    context: String,
    intake: Option<(f64, f64, f64, usize, Cost)>,
    pgbench_tps: Option<f64>,
    pipeline: Option<(f64, f64, usize, usize, Cost)>,
    stl: Option<([f64; 4], usize, f64, Cost)>,
    graphile: Option<Graphile>,
}

fn ratio(a: f64, b: Option<f64>) -> Option<f64> {
    b.filter(|b| *b > 0.0).map(|b| a / b)
}

fn num(v: Option<f64>) -> String {
    v.map_or_else(|| "nan".to_owned(), |v| format!("{v:.2}"))
}

fn shown(v: Option<f64>, unit: &str) -> String {
    v.map_or_else(|| "n/a".to_owned(), |v| format!("{v:.1}{unit}"))
}

impl Report {
    pub fn new(args: &Args, server_version: String) -> Report {
        let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
        let model = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|c| {
                c.lines()
                    .find_map(|l| l.strip_prefix("model name"))
                    .map(|l| l.trim_start_matches([' ', '\t', ':']).to_owned())
            })
            .unwrap_or_else(|| "unknown CPU".to_owned());
        let mem_gb = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| {
                let kb: f64 = m.lines().next()?.split_whitespace().nth(1)?.parse().ok()?;
                Some(kb / 1024.0 / 1024.0)
            })
            .unwrap_or(0.0);
        let date = jiff::Timestamp::now().strftime("%Y-%m-%d %H:%M UTC");
        Report {
            context: format!(
                "{date}; {cpus} CPUs ({model}), {mem_gb:.0} GiB; PostgreSQL {server_version}; \
                 {} clients for {} s of intake (after {} s unmeasured), {} pre-loaded leads, \
                 {} leads/s offered for {} s (after {} s unmeasured); worker concurrency {}, \
                 batch {}, pool {}",
                args.clients,
                args.intake_seconds,
                args.intake_warmup_seconds,
                args.leads,
                args.rate,
                args.rate_seconds,
                args.rate_warmup_seconds,
                args.concurrency,
                args.batch_size,
                args.pool
            ),
            ..Report::default()
        }
    }

    pub fn intake(&mut self, run: &Outcome, cost: Cost) {
        let p50 = percentile(&run.latencies_ms, 50.0);
        let p99 = percentile(&run.latencies_ms, 99.0);
        if !run.failures.is_empty() {
            eprintln!(
                "      intake failures: {:?}; first: {}",
                run.failures,
                run.first_failure.as_deref().unwrap_or("-")
            );
        }
        self.intake = Some((
            run.accepted_per_s(),
            p50,
            p99,
            run.sent - run.accepted,
            cost,
        ));
    }

    pub fn pgbench(&mut self, tps: f64) {
        self.pgbench_tps = Some(tps);
    }

    pub fn pipeline(&mut self, done: &Finished, cost: Cost) {
        let secs = done.elapsed.as_secs_f64().max(1e-9);
        self.pipeline = Some((
            done.runs as f64 / secs,
            done.step_jobs as f64 / secs,
            done.runs,
            done.runs - done.called,
            cost,
        ));
    }

    pub fn speed_to_lead(&mut self, offered: &Outcome, ms: &[f64], cost: Cost) {
        let q = [50.0, 90.0, 99.0, 100.0].map(|p| percentile(ms, p));
        self.stl = Some((q, ms.len(), offered.accepted_per_s(), cost));
    }

    pub fn graphile(&mut self, g: Graphile) {
        self.graphile = Some(g);
    }

    fn peak_rss(&self) -> f64 {
        [
            self.intake.map(|i| i.4.rss_mb),
            self.pipeline.map(|p| p.4.rss_mb),
            self.stl.map(|s| s.3.rss_mb),
        ]
        .into_iter()
        .flatten()
        .fold(0.0, f64::max)
    }

    /// Each target, met or missed and by how much.
    fn targets(&self) -> Vec<String> {
        let mut out = Vec::new();
        let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
        if let Some(r) = self
            .pipeline
            .and_then(|p| ratio(p.0, self.graphile.as_ref().map(|g| g.leads_per_s)))
        {
            out.push(format!(
                "pipeline ≥ 2× graphile: {r:.2}× — {}",
                verdict(r >= 2.0)
            ));
        }
        if let Some(r) = self.intake.and_then(|i| ratio(i.0, self.pgbench_tps)) {
            out.push(format!(
                "intake ≥ 0.8× pgbench: {r:.2}× — {}",
                verdict(r >= 0.8)
            ));
        }
        if let Some((q, ..)) = self.stl {
            out.push(format!(
                "speed-to-lead p50 < 25 ms: {:.1} ms — {}",
                q[0],
                verdict(q[0] < 25.0)
            ));
            let g99 = self.graphile.as_ref().map(|g| g.latency_ms[2]);
            let ok = q[2] < 60.0 && g99.is_none_or(|g| q[2] < g);
            out.push(format!(
                "speed-to-lead p99 < 60 ms and < graphile p99 ({}): {:.1} ms — {}",
                shown(g99, " ms"),
                q[2],
                verdict(ok)
            ));
        }
        let rss = self.peak_rss();
        out.push(format!(
            "RSS < 150 MB: {rss:.1} MB — {}",
            verdict(rss < 150.0)
        ));
        out
    }

    /// The summary table, the targets, then the machine-readable lines.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "\nleadflow bench — {}\n", self.context);
        let _ = writeln!(
            s,
            "{:<15} {:<44} {:<34} {:>7}",
            "section", "leadflow", "baseline (same run)", "ratio"
        );
        for row in self.rows() {
            let _ = writeln!(
                s,
                "{:<15} {:<44} {:<34} {:>7}",
                row[0], row[1], row[2], row[3]
            );
        }
        let _ = writeln!(s, "\ntargets:");
        for t in self.targets() {
            let _ = writeln!(s, "  {t}");
        }
        let _ = writeln!(s);
        s.push_str(&self.machine_lines());
        s
    }

    fn rows(&self) -> Vec<[String; 4]> {
        let g = self.graphile.as_ref();
        let mut rows = Vec::new();
        if let Some((rate, p50, p99, failed, cost)) = self.intake {
            rows.push([
                "intake".to_owned(),
                format!("{rate:.0} leads/s, p50 {p50:.1} ms, p99 {p99:.1} ms ({failed} failed)"),
                format!("pgbench {} tps", shown(self.pgbench_tps, "")),
                shown(ratio(rate, self.pgbench_tps), "×"),
            ]);
            rows.push(cost_row("  cost", cost));
        }
        if let Some((rate, steps, runs, not_called, cost)) = self.pipeline {
            rows.push([
                "pipeline".to_owned(),
                format!("{rate:.0} leads/s, {steps:.0} step-jobs/s ({runs} runs, {not_called} not called)"),
                format!(
                    "graphile {} leads/s, {} step-jobs/s",
                    shown(g.map(|g| g.leads_per_s), ""),
                    shown(g.map(|g| g.step_jobs_per_s), "")
                ),
                shown(ratio(rate, g.map(|g| g.leads_per_s)), "×"),
            ]);
            rows.push(cost_row("  cost", cost));
        }
        if let Some((q, n, accepted, cost)) = self.stl {
            rows.push([
                "speed-to-lead".to_owned(),
                format!(
                    "p50 {:.1} p90 {:.1} p99 {:.1} max {:.1} ms ({n} calls, {accepted:.0}/s)",
                    q[0], q[1], q[2], q[3]
                ),
                match g {
                    Some(g) => format!(
                        "graphile p50 {:.1} p90 {:.1} p99 {:.1} max {:.1}",
                        g.latency_ms[0], g.latency_ms[1], g.latency_ms[2], g.latency_ms[3]
                    ),
                    None => "graphile n/a".to_owned(),
                },
                shown(ratio(q[2], g.map(|g| g.latency_ms[2])), "×"),
            ]);
            rows.push(cost_row("  cost", cost));
        }
        rows
    }

    fn machine_lines(&self) -> String {
        let g = self.graphile.as_ref();
        let pipeline = self.pipeline.map(|p| p.0);
        let intake = self.intake.map(|i| i.0);
        let q = self.stl.map(|s| s.0);
        format!(
            "bench pipeline leads_per_s={} graphile_leads_per_s={} ratio={}\n\
             bench intake leads_per_s={} pgbench_tps={} ratio={}\n\
             bench speed_to_lead_ms p50={} p90={} p99={} max={} graphile_p99={}\n\
             bench rss_mb peak={:.2}\n",
            num(pipeline),
            num(g.map(|g| g.leads_per_s)),
            num(pipeline.and_then(|p| ratio(p, g.map(|g| g.leads_per_s)))),
            num(intake),
            num(self.pgbench_tps),
            num(intake.and_then(|i| ratio(i, self.pgbench_tps))),
            num(q.map(|q| q[0])),
            num(q.map(|q| q[1])),
            num(q.map(|q| q[2])),
            num(q.map(|q| q[3])),
            num(g.map(|g| g.latency_ms[2])),
            self.peak_rss()
        )
    }

    /// The README's results section.
    pub fn markdown(&self) -> String {
        let mut s = format!("Last run: {}.\n\n", self.context);
        s.push_str("| section | leadflow | baseline (same run) | ratio |\n|---|---|---|---|\n");
        for row in self.rows() {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} |",
                row[0].trim(),
                row[1],
                row[2],
                row[3]
            );
        }
        s.push_str("\nTargets:\n\n");
        for t in self.targets() {
            let _ = writeln!(s, "- {t}");
        }
        s.push_str("\n```\n");
        s.push_str(&self.machine_lines());
        s.push_str("```\n");
        s
    }
}

fn cost_row(label: &str, cost: Cost) -> [String; 4] {
    [
        label.to_owned(),
        format!(
            "peak RSS {:.1} MB, {:.1} PostgreSQL xacts/lead{}, CPU {:.1} ms/lead (leadflow {:.1})",
            cost.rss_mb,
            cost.xacts_per_lead,
            cost.statements_per_lead
                .map(|n| format!(", {n:.1} statements/lead"))
                .unwrap_or_default(),
            cost.cpu_ms_per_lead,
            cost.leadflow_cpu_ms_per_lead
        ),
        String::new(),
        String::new(),
    ]
}

pub const BEGIN: &str = "<!-- bench:begin -->";
pub const END: &str = "<!-- bench:end -->";

/// Replaces the text between the bench markers of `readme` with `section`.
pub fn write_readme(readme: &Path, section: &str) -> Result<()> {
    let text =
        std::fs::read_to_string(readme).with_context(|| format!("reading {}", readme.display()))?;
    let (Some(b), Some(e)) = (text.find(BEGIN), text.find(END)) else {
        bail!("{} has no {BEGIN} … {END} markers", readme.display());
    };
    if e < b {
        bail!("{}: {END} comes before {BEGIN}", readme.display());
    }
    let out = format!("{}{BEGIN}\n{section}{}", &text[..b], &text[e..]);
    std::fs::write(readme, out).with_context(|| format!("writing {}", readme.display()))
}
