//! The deployment files (docker-compose.yml, deploy/): where they are and what they name.

#![allow(dead_code)] // each test crate uses its own subset

use std::collections::BTreeSet;
use std::path::PathBuf;

/// The repository's root.
pub fn root() -> PathBuf {
    // Read when the test runs: a shared target directory may hold binaries built from a
    // clone at another path.
    PathBuf::from(
        std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").into()),
    )
    .parent()
    .unwrap()
    .to_path_buf()
}

/// Every Grafana dashboard of the stack, parsed: (file name, JSON).
pub fn dashboards() -> Vec<(String, serde_json::Value)> {
    let dir = root().join("deploy/grafana/dashboards");
    let mut out = Vec::new();
    for e in std::fs::read_dir(&dir).unwrap() {
        let path = e.unwrap().path();
        if path.extension().is_some_and(|x| x == "json") {
            let text = std::fs::read_to_string(&path).unwrap();
            let json = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{} is not valid JSON: {e}", path.display()));
            out.push((
                path.file_name().unwrap().to_string_lossy().into_owned(),
                json,
            ));
        }
    }
    assert!(!out.is_empty(), "no dashboards in {}", dir.display());
    out
}

/// Every PromQL expression of a dashboard: its panels' targets and its query variables.
pub fn queries(dashboard: &serde_json::Value) -> Vec<String> {
    let mut out = Vec::new();
    for p in dashboard["panels"].as_array().into_iter().flatten() {
        for t in p["targets"].as_array().into_iter().flatten() {
            out.push(
                t["expr"]
                    .as_str()
                    .expect("a target with an expr")
                    .to_string(),
            );
        }
    }
    for v in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if let Some(q) = v["query"]["query"].as_str() {
            out.push(q.to_string());
        }
    }
    out
}

/// The metric names a PromQL expression reads: every `kaiabc_…` identifier.
pub fn metrics_in(expr: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = expr;
    while let Some(at) = rest.find("kaiabc_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        out.insert(tail[..end].to_string());
        rest = &tail[end..];
    }
    out
}

/// The metric names an exposition text has samples or a `# TYPE` line for, with each
/// histogram's `_bucket`, `_sum` and `_count` series.
pub fn exported(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            let (name, kind) = (parts.next().unwrap(), parts.next().unwrap_or(""));
            out.insert(name.to_string());
            if kind == "histogram" {
                for s in ["_bucket", "_sum", "_count"] {
                    out.insert(format!("{name}{s}"));
                }
            }
        } else if !line.starts_with('#') && !line.is_empty() {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            out.insert(line[..end].to_string());
        }
    }
    out
}

/// Asserts every metric the dashboards query is in `text` (the server's `/metrics`).
pub fn assert_dashboards_query_exported(text: &str) {
    let have = exported(text);
    for (file, d) in dashboards() {
        for q in queries(&d) {
            let names = metrics_in(&q);
            assert!(!names.is_empty(), "{file}: {q:?} reads no kaiabc metric");
            for n in names {
                assert!(
                    have.contains(&n),
                    "{file}: {q:?} reads {n}, which /metrics lacks"
                );
            }
        }
    }
}

/// The project's Python (`scripts/pyenv.sh` makes its venv once): SciPy, pyarrow, DuckDB, moto.
pub fn python() -> std::path::PathBuf {
    let py = std::process::Command::new("bash")
        .arg(root().join("scripts/pyenv.sh"))
        .output()
        .expect("scripts/pyenv.sh");
    assert!(
        py.status.success(),
        "{}",
        String::from_utf8_lossy(&py.stderr)
    );
    std::path::PathBuf::from(String::from_utf8(py.stdout).unwrap().trim())
}
