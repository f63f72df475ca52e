//! "Adding a step" (docs/architecture.md) holds: `tests/fixtures/add-enrich-step.patch` adds an
//! `enrich` step between qualify and route by touching only the graph and the step's own
//! file, and with it applied, leads run through every step with grouping and fusion in force
//! (`pipeline::every_step_of_the_graph_…`, which derives what it checks from the graph).
//!
//! It builds a patched copy of the crate, so it is `#[ignore]`d in `cargo test`; `.ci/run`
//! runs it: `cargo test --features testing --test adding_a_step -- --ignored`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

const PATCH: &str = "tests/fixtures/add-enrich-step.patch";

fn run(dir: &Path, program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("{program} {args:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{program} {args:?} failed:\n{text}");
    text
}

#[test]
#[ignore = "builds a patched copy of the crate; run by .ci/run"]
fn adding_a_step_touches_the_graph_and_the_steps_file_and_leads_run_through_it() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let patch = root.join(PATCH);
    let patch = patch.to_str().expect("utf-8 path");

    let numstat = run(&root, "git", &["apply", "--numstat", patch]);
    let touched: BTreeSet<&str> = numstat
        .lines()
        .filter_map(|l| l.split('\t').nth(2))
        .collect();
    assert_eq!(
        touched,
        BTreeSet::from(["src/graph/enrich.rs", "src/graph/mod.rs"]),
        "adding a step touches the graph and the step's file only"
    );

    let copy = std::env::temp_dir().join(format!("leadflow-add-a-step-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&copy);
    std::fs::create_dir_all(&copy).expect("copy dir");
    let copy_str = copy.to_str().expect("utf-8 path");
    run(
        &root,
        "sh",
        &[
            "-c",
            &format!("tar --exclude=./target --exclude=./.git -cf - . | tar -xf - -C '{copy_str}'"),
        ],
    );
    run(&copy, "git", &["apply", patch]);

    // The patched crate builds into this target directory: its dependencies are built
    // already, and its own artifacts, from another path, are hashed apart from these. Only
    // the unhashed copy of the binary (target/debug/leadflow) is shared; it is linked back
    // to this crate's below.
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root.join("target"));
    let target = target.to_str().expect("utf-8 path").to_owned();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let graph = Command::new(&cargo)
        .args(["test", "--features", "testing", "--lib", "graph::"])
        .env("CARGO_TARGET_DIR", &target)
        .current_dir(&copy)
        .output()
        .expect("cargo test --lib");
    let text = String::from_utf8_lossy(&graph.stdout).into_owned();
    assert!(graph.status.success(), "graph tests with enrich:\n{text}");

    let pipeline = Command::new(&cargo)
        .args([
            "test",
            "--features",
            "testing",
            "--test",
            "pipeline",
            "every_step_of_the_graph",
            "--",
            "--nocapture",
        ])
        .env("CARGO_TARGET_DIR", &target)
        .current_dir(&copy)
        .output()
        .expect("cargo test --test pipeline");
    let text = String::from_utf8_lossy(&pipeline.stdout).into_owned();
    let _ = std::fs::remove_dir_all(&copy);
    let restored = Command::new(&cargo)
        .args(["build", "--features", "testing", "--bins"])
        .env("CARGO_TARGET_DIR", &target)
        .current_dir(&root)
        .status()
        .expect("cargo build");
    assert!(restored.success(), "this crate's binary linked back");
    assert!(pipeline.status.success(), "pipeline with enrich:\n{text}");
    assert!(text.contains("1 passed"), "{text}");
    // The leads went through the added step: it is in the graph the pipeline test walked.
    assert!(
        text.contains("graph steps checked: validate → qualify → enrich → route → callback"),
        "{text}"
    );
}
