#![cfg(feature = "derive")]
//! Compile-fail and pass cases for the derive and the typed API, run with trybuild.
//!
//! Cases live in `tests/ui/<category>/<case>.rs`, each with the `.stderr` it must print
//! beside it; `tests/ui/pass/` holds cases that must compile and run. The `.stderr` files
//! are rustc's exact output, so the cases run only on the toolchain they were written
//! with ([`PINNED_RUSTC`]); change them only through `TRYBUILD=overwrite`:
//!
//! ```text
//! TRYBUILD=overwrite cargo test -p tally-pool --test ui
//! ```

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// The `rustc --version` prefix of the toolchain the `.stderr` files come from.
const PINNED_RUSTC: &str = "rustc 1.95.";

const UI: &str = "tests/ui";
const PASS: &str = "pass";

#[test]
fn ui() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join(UI);
    let categories = categories(&root);
    check_stderr_files(&root, &categories);

    let version = rustc_version();
    if !version.starts_with(PINNED_RUSTC) {
        // CI runs the pinned toolchain: there a skip would hide every case, so it fails.
        assert!(
            std::env::var_os("CI").is_none(),
            "the ui cases are pinned to `{PINNED_RUSTC}` but CI runs `{version}`"
        );
        println!(
            "note: skipping the ui cases: they are pinned to `{PINNED_RUSTC}`, this is `{version}`"
        );
        return;
    }
    let t = trybuild::TestCases::new();
    for category in &categories {
        let glob = format!("{UI}/{category}/*.rs");
        if category == PASS {
            t.pass(glob);
        } else {
            t.compile_fail(glob);
        }
    }
}

/// The case folders under `tests/ui`, sorted.
fn categories(root: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert!(names.iter().any(|n| n == PASS), "no `{UI}/{PASS}` folder");
    names
}

/// Every `.stderr` belongs to a compile-fail case: one with no `.rs` beside it is stale,
/// and so is one in `pass/`. (A compile-fail case with no `.stderr` is trybuild's to
/// report.)
fn check_stderr_files(root: &Path, categories: &[String]) {
    let mut problems: Vec<String> = files(root)
        .into_iter()
        .filter(|p| !p.is_dir())
        .map(|p| format!("{}: cases belong in a category folder", p.display()))
        .collect();
    for category in categories {
        for path in files(&root.join(category)) {
            let ext = path.extension().and_then(|e| e.to_str());
            match ext {
                Some("stderr") if category == PASS => {
                    problems.push(format!("{}: a pass case has no .stderr", path.display()))
                }
                Some("stderr") if !path.with_extension("rs").exists() => {
                    problems.push(format!("{}: stale, no .rs beside it", path.display()));
                }
                Some("rs" | "stderr") => {}
                _ => problems.push(format!(
                    "{}: neither a case (.rs) nor its output (.stderr)",
                    path.display()
                )),
            }
        }
    }
    assert!(
        problems.is_empty(),
        "tests/ui is out of order:\n{}",
        problems.join("\n")
    );
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
}

/// `rustc --version` of the compiler cargo uses (`$RUSTC`, else `rustc`).
fn rustc_version() -> String {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let out = Command::new(rustc).arg("--version").output().unwrap();
    assert!(out.status.success(), "`rustc --version` failed");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}
