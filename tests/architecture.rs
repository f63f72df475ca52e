//! The shape of the code, held by a test: no module imports a module that imports it back,
//! directly or through others. Arrows point down, so that each module can be read, changed
//! and tested from what is below it.
//!
//! Modules are the files under `src/` (not `src/bin/`), named as Rust names them; a file
//! depends on each module its code names through `crate::…` or `super::…` (comments and
//! test modules left out), and on no module it contains or is contained by.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .expect("src is readable")
        .map(|e| e.expect("entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n != "bin") {
                rust_files(&path, out);
            }
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `src/steps/callback/mod.rs` → `crate::engine::callback`.
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file
        .strip_prefix(src)
        .expect("under src")
        .with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts
        .last()
        .is_some_and(|p| p == "mod" || p == "lib" || p == "main")
    {
        parts.pop();
    }
    std::iter::once("crate".to_owned())
        .chain(parts)
        .collect::<Vec<_>>()
        .join("::")
}

/// The code of a file without comments and without its unit-test module.
fn code(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests {") {
        Some(at) => &text[..at],
        None => text,
    };
    text.lines()
        .map(|line| line.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The modules named by `crate::a::b…` and `super::a…` paths in `code`, resolved to the
/// longest known module.
fn references(module: &str, code: &str, known: &BTreeSet<String>) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let bytes = code.as_bytes();
    for start in ["crate::", "super::"] {
        let mut from = 0;
        while let Some(at) = code[from..].find(start).map(|i| from + i) {
            from = at + start.len();
            if at > 0 && (bytes[at - 1].is_ascii_alphanumeric() || bytes[at - 1] == b'_') {
                continue;
            }
            let path: String = code[from..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':')
                .collect();
            let mut base: Vec<&str> = module.split("::").collect();
            if start == "super::" {
                base.pop();
            } else {
                base = vec!["crate"];
            }
            let segments: Vec<&str> = path.split("::").filter(|s| !s.is_empty()).collect();
            for n in (1..=segments.len()).rev() {
                let candidate = base
                    .iter()
                    .copied()
                    .chain(segments[..n].iter().copied())
                    .collect::<Vec<_>>()
                    .join("::");
                if known.contains(&candidate) {
                    found.insert(candidate);
                    break;
                }
            }
        }
    }
    found
}

fn nests(a: &str, b: &str) -> bool {
    a == b || a.starts_with(&format!("{b}::")) || b.starts_with(&format!("{a}::"))
}

/// A cycle through `start`, if the graph has one.
fn cycle_from(start: &str, edges: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    let mut stack = vec![(start.to_owned(), vec![start.to_owned()])];
    let mut seen = BTreeSet::new();
    while let Some((at, path)) = stack.pop() {
        for next in edges.get(&at).into_iter().flatten() {
            if next == start {
                let mut cycle = path.clone();
                cycle.push(start.to_owned());
                return Some(cycle);
            }
            if seen.insert(next.clone()) {
                let mut longer = path.clone();
                longer.push(next.clone());
                stack.push((next.clone(), longer));
            }
        }
    }
    None
}

#[test]
fn no_module_imports_a_module_that_imports_it_back() {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let modules: BTreeMap<String, PathBuf> = files
        .iter()
        .map(|f| (module_of(&src, f), f.clone()))
        .collect();
    let known: BTreeSet<String> = modules.keys().cloned().collect();
    assert!(known.contains("crate::engine::callback"), "{known:?}");
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (module, file) in &modules {
        let text = std::fs::read_to_string(file).expect("readable");
        let deps = references(module, &code(&text), &known)
            .into_iter()
            .filter(|d| !nests(d, module))
            .collect();
        edges.insert(module.clone(), deps);
    }
    let cycles: Vec<String> = known
        .iter()
        .filter_map(|m| cycle_from(m, &edges))
        .map(|c| c.join(" → "))
        .collect();
    assert!(cycles.is_empty(), "import cycles:\n{}", cycles.join("\n"));
}

#[test]
fn the_check_sees_a_cycle_when_there_is_one() {
    let known: BTreeSet<String> = ["crate::a", "crate::b", "crate::a::c"]
        .into_iter()
        .map(str::to_owned)
        .collect();
    let a = references(
        "crate::a",
        &code("use crate::b::Thing; // crate::zzz"),
        &known,
    );
    assert_eq!(a.into_iter().collect::<Vec<_>>(), ["crate::b"]);
    let b = references("crate::b", &code("fn f() { super::a::c::go() }"), &known);
    assert_eq!(b.into_iter().collect::<Vec<_>>(), ["crate::a::c"]);
    let edges: BTreeMap<String, BTreeSet<String>> = [
        ("crate::a".to_owned(), ["crate::b".to_owned()].into()),
        ("crate::b".to_owned(), ["crate::a".to_owned()].into()),
    ]
    .into();
    assert_eq!(
        cycle_from("crate::a", &edges),
        Some(vec![
            "crate::a".into(),
            "crate::b".into(),
            "crate::a".into()
        ])
    );
}
