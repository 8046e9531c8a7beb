//! The checking code of the fuzz targets, shared by the libFuzzer binaries
//! (`fuzz_targets/`) and by the replay test below, which runs every committed input
//! (`corpus/<target>/` and `regressions/<target>/`) through the same checks without
//! libFuzzer: `cargo test --manifest-path fuzz/Cargo.toml --lib`.
//!
//! Each target reads a sequence of operations from the fuzzer's bytes (`arbitrary`),
//! applies it to the library and to a model, and panics when they disagree.
//!
//! | target | what |
//! |---|---|
//! | [`tokens`] | typed pools: acquire, `into_raw`, redeem (issued, moved, flipped and forged tokens), release |
//! | [`blocks`] | `BlockPool`s of several layouts and guard levels: every misuse the guards promise to catch |
//! | [`report`] | arbitrary components and snapshots through the report, its JSON, its table and Prometheus |

pub mod blocks;
pub mod report;
pub mod tokens;

/// A target's checks, run on one input.
pub type Target = fn(&[u8]);

/// The targets, by name, as the replay test and `.ci/fuzz.sh` know them.
pub const TARGETS: [(&str, Target); 3] = [
    ("tokens", tokens::run),
    ("blocks", blocks::run),
    ("report", report::run),
];

#[cfg(test)]
mod replay {
    use std::path::Path;

    /// Every file of `corpus/<target>/` and `regressions/<target>/`, through its target.
    /// Sequential: the `blocks` target's frees of blocks nobody holds need no other thread
    /// to allocate from the pool meanwhile, and the report's checks see only their own rows.
    #[test]
    fn committed_inputs_pass() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut replayed = 0;
        for (target, run) in super::TARGETS {
            for dir in ["corpus", "regressions"] {
                let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) else {
                    continue;
                };
                let mut paths: Vec<_> = entries.filter_map(|e| Some(e.ok()?.path())).collect();
                paths.sort();
                for path in paths {
                    let data = std::fs::read(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
                    eprintln!("replaying {}", path.display());
                    run(&data);
                    replayed += 1;
                }
            }
        }
        assert!(replayed > 0, "no corpus under {}", root.display());
    }
}
