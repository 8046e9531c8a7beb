#!/usr/bin/env bash
# The fuzz targets of fuzz/ (cargo-fuzz, libFuzzer), each for FUZZ_SECS seconds (default 60).
#
# 1. Replays every committed input (fuzz/corpus/<target>/, fuzz/regressions/<target>/)
#    through the targets' checks without libFuzzer: `cargo test` of the fuzz crate.
# 2. Fuzzes each target, starting from its committed corpus, with the pinned nightly if it
#    is installed, else with stable and RUSTC_BOOTSTRAP=1. New inputs go to a scratch
#    corpus, so the committed one stays small.
# 3. On a crash, copies the crashing input to fuzz/regressions/<target>/ (commit it: the
#    replay of step 1 keeps it as a regression test) and fails.
#
# Usage: bash .ci/fuzz.sh [target...]     (default: every target)
set -euo pipefail
cd "$(dirname "$0")/.."

FUZZ_SECS=${FUZZ_SECS:-60}
NIGHTLY=nightly-2026-05-20
if [ "$#" -gt 0 ]; then TARGETS=("$@"); else TARGETS=(tokens blocks report); fi

# cargo-fuzz finds its binaries under fuzz/target; a target dir set for the workspace
# would send them elsewhere.
unset CARGO_TARGET_DIR
# The targets run under AddressSanitizer with leak detection: `--cfg tally_lsan` makes the
# pools' mappings LeakSanitizer roots (values kept in pool blocks own heap memory), and
# .ci/lsan.supp names the one leak that is by design. cargo-fuzz appends its own flags.
export RUSTFLAGS="--cfg tally_lsan"
export LSAN_OPTIONS="suppressions=$PWD/.ci/lsan.supp:print_suppressions=0"

if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install --locked cargo-fuzz
fi
if rustup run "$NIGHTLY" rustc --version >/dev/null 2>&1; then
    FUZZ=(cargo "+$NIGHTLY" fuzz)
    echo "fuzz: $NIGHTLY"
else
    echo "fuzz: $NIGHTLY is not installed; stable with RUSTC_BOOTSTRAP=1"
    export RUSTC_BOOTSTRAP=1
    FUZZ=(cargo fuzz)
fi

echo "fuzz: replaying the committed corpus and regressions"
env -u RUSTFLAGS cargo test --manifest-path fuzz/Cargo.toml --lib

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
failed=()
for t in "${TARGETS[@]}"; do
    mkdir -p "$scratch/$t" "fuzz/artifacts/$t"
    log="$scratch/$t.log"
    echo "fuzz: $t for ${FUZZ_SECS}s"
    if "${FUZZ[@]}" run "$t" "$scratch/$t" "fuzz/corpus/$t" -- \
        -max_total_time="$FUZZ_SECS" -max_len=2048 -len_control=0 -timeout=30 -rss_limit_mb=4096 \
        -print_final_stats=1 -artifact_prefix="fuzz/artifacts/$t/" >"$log" 2>&1; then
        runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || true)
        rate=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$log" | grep -o '[0-9]*$' || true)
        echo "fuzz: $t passed: ${runs:-?} executions, ${rate:-?}/s"
    else
        tail -n 60 "$log"
        mkdir -p "fuzz/regressions/$t"
        for f in "fuzz/artifacts/$t"/*; do
            [ -f "$f" ] || continue
            cp "$f" "fuzz/regressions/$t/"
            echo "fuzz: $t: kept $(basename "$f") in fuzz/regressions/$t/"
        done
        failed+=("$t")
    fi
done
if [ "${#failed[@]}" -gt 0 ]; then
    echo "fuzz: FAILED: ${failed[*]} (inputs kept under fuzz/regressions/)"
    exit 1
fi
echo "fuzz: every target passed"
