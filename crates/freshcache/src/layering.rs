//! The import rules of the crate's layout, checked on the source: a module that reaches
//! upward fails the build's tests, not a later review.

use std::path::{Path, PathBuf};

/// Modules (directories or files under `src/`) and the crate modules they must not import.
const RULES: &[(&str, &[&str])] = &[
    // Configuration is data: it describes behaviour, it does not run it.
    (
        "config",
        &[
            "cache",
            "fetch",
            "freshness",
            "maintenance",
            "metrics",
            "stats",
            "tier",
            "warm",
        ],
    ),
    // Tiers store bytes and metadata: no policy, no other feature's tables, no config files.
    (
        "tier",
        &[
            "cache",
            "config",
            "fetch",
            "freshness",
            "maintenance",
            "metrics",
            "stats",
            "warm",
        ],
    ),
    // Errors sit under everything.
    (
        "error",
        &[
            "cache",
            "config",
            "fetch",
            "freshness",
            "maintenance",
            "metrics",
            "stats",
            "tier",
            "warm",
        ],
    ),
    // Metrics read snapshots handed to them.
    (
        "metrics.rs",
        &[
            "cache",
            "config",
            "freshness",
            "maintenance",
            "fetch",
            "warm",
        ],
    ),
    // The guard's vocabulary is plain data.
    (
        "report.rs",
        &[
            "cache",
            "config",
            "fetch",
            "freshness",
            "maintenance",
            "tier",
            "warm",
        ],
    ),
];

fn sources(path: &Path, out: &mut Vec<PathBuf>) {
    if path.is_dir() {
        for entry in std::fs::read_dir(path)
            .expect("readable source directory")
            .flatten()
        {
            sources(&entry.path(), out);
        }
    } else if path.extension().is_some_and(|e| e == "rs") {
        out.push(path.to_path_buf());
    }
}

/// The `crate::<module>` paths a file names outside comments.
fn reached(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or_default();
        let mut rest = code;
        while let Some(i) = rest.find("crate::") {
            rest = &rest[i + "crate::".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                .collect();
            if !name.is_empty() {
                out.push(name);
            }
        }
    }
    out
}

#[test]
fn imports_run_one_way() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut broken = Vec::new();
    for (module, forbidden) in RULES {
        let mut files = Vec::new();
        sources(&src.join(module), &mut files);
        assert!(!files.is_empty(), "no source for {module}");
        for file in files {
            let text = std::fs::read_to_string(&file).expect("readable source");
            for name in reached(&text) {
                if forbidden.contains(&name.as_str()) {
                    broken.push(format!("{} imports crate::{name}", file.display()));
                }
            }
        }
    }
    assert!(
        broken.is_empty(),
        "imports against the layout:\n{}",
        broken.join("\n")
    );
}

#[test]
fn the_command_line_uses_only_the_public_facade() {
    let cli = Path::new(env!("CARGO_MANIFEST_DIR")).join("../freshcache-cli/src");
    let mut files = Vec::new();
    sources(&cli, &mut files);
    assert!(!files.is_empty());
    for file in files {
        let text = std::fs::read_to_string(&file).expect("readable source");
        for internal in ["freshcache::internals", "freshcache::tier"] {
            assert!(
                !text.contains(internal),
                "{} uses {internal}",
                file.display()
            );
        }
    }
}

#[test]
fn the_checker_sees_a_forbidden_import() {
    assert_eq!(
        reached("use crate::cache::Cache; // crate::fetch"),
        ["cache"]
    );
}
