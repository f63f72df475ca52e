//! `bench` end to end at a tiny size: it must drive every leadflow phase against a real
//! PostgreSQL and print its machine-readable lines with real figures. The Graphile baseline
//! needs node and npm, so it is left to `just bench`; pgbench comes with PostgreSQL.

mod common;

use std::process::Command;

#[tokio::test]
async fn the_bench_runs_every_phase_and_prints_its_result_lines() {
    let server = common::server_url().await;
    let db = format!(
        "lf_bench_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    );
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_bench"));
    cmd.args(["--leadflow", env!("CARGO_BIN_EXE_leadflow")])
        .args(["--db-name", &db, "--clients", "4", "--intake-seconds", "1"])
        .args(["--leads", "40", "--rate", "20", "--rate-seconds", "1"])
        .args(["--concurrency", "4", "--batch-size", "8", "--no-graphile"])
        .env("DATABASE_URL", &server);
    let has_pgbench = Command::new("pgbench").arg("--version").output().is_ok();
    if !has_pgbench {
        cmd.arg("--no-pgbench");
    }
    let out = cmd.output().expect("bench runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bench failed:\n{stdout}\n{stderr}");

    let line = |prefix: &str| -> Vec<(String, String)> {
        let l = stdout
            .lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix:?} line in:\n{stdout}"));
        l[prefix.len()..]
            .split_whitespace()
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    };
    let value = |fields: &[(String, String)], key: &str| -> f64 {
        let v = &fields.iter().find(|(k, _)| k == key).expect(key).1;
        v.parse().unwrap_or(f64::NAN)
    };

    let pipeline = line("bench pipeline ");
    assert!(value(&pipeline, "leads_per_s") > 0.0, "{stdout}");
    assert!(value(&pipeline, "graphile_leads_per_s").is_nan());
    let intake = line("bench intake ");
    assert!(value(&intake, "leads_per_s") > 0.0, "{stdout}");
    if has_pgbench {
        // The baseline ran the intake transaction: a rate, and the ratio of the two.
        let tps = value(&intake, "pgbench_tps");
        assert!(tps > 0.0, "{stdout}");
        let ratio = value(&intake, "leads_per_s") / tps;
        assert!((value(&intake, "ratio") - ratio).abs() < 0.01, "{stdout}");
    }
    let stl = line("bench speed_to_lead_ms ");
    let (p50, p99, max) = (value(&stl, "p50"), value(&stl, "p99"), value(&stl, "max"));
    assert!(p50 > 0.0 && p50 <= p99 && p99 <= max, "{stdout}");
    let rss = line("bench rss_mb ");
    assert!(value(&rss, "peak") > 1.0, "{stdout}");
    // Every pre-loaded lead ended called: the pipeline phase measured the whole graph.
    assert!(stdout.contains("(40 runs, 0 not called)"), "{stdout}");
    // Each phase's cost line carries the CPU it took per lead, the machine's and leadflow's.
    let cpu: Vec<(f64, f64)> = stdout
        .lines()
        .filter_map(|l| {
            let rest = l.split_once(", CPU ")?.1;
            let (all, rest) = rest.split_once(" ms/lead (leadflow ")?;
            let own = rest.split_once(')')?.0;
            Some((all.parse().ok()?, own.parse().ok()?))
        })
        .collect();
    assert_eq!(cpu.len(), 3, "{stdout}");
    for (all, own) in cpu {
        assert!(all > 0.0 && own > 0.0, "{stdout}");
    }
}
