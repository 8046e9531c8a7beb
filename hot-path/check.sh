#!/usr/bin/env bash
# Builds the minimal callers in src/main.rs in release and checks the size of each from the
# symbol table: a fast path that starts pulling a slow path inline shows here first.
# Usage: bash hot-path/check.sh   (from the repository root or anywhere)
set -euo pipefail
cd "$(dirname "$0")"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-../target/hot-path}"
cargo build --release --quiet
bin="$CARGO_TARGET_DIR/release/tally-pool-hot-path"
"$bin"
# Bytes of machine code each caller may take: about 1.5 times what it takes today
# (x86-64). The slow paths live out of line; before they did, these callers took
# 875 (acquire), 1411 (acquire_with), 1372 (acquire_with_fn), 138 (release),
# 318 (allocate) and 571 (free) bytes.
declare -A bound=(
  [hot_acquire]=160 [hot_acquire_with]=272 [hot_acquire_with_fn]=216
  [hot_release]=192 [hot_allocate]=192 [hot_free]=224
)
fail=0
for sym in "${!bound[@]}"; do
  hex=$(nm -S "$bin" | awk -v s="$sym" '$4 == s { print $2 }')
  if [[ -z "$hex" ]]; then
    echo "hot path: no symbol $sym"; fail=1; continue
  fi
  size=$((16#$hex))
  verdict=ok
  if (( size > bound[$sym] )); then verdict="TOO BIG"; fail=1; fi
  printf 'hot path: %-22s %4d bytes (bound %d) %s\n' "$sym" "$size" "${bound[$sym]}" "$verdict"
done
# The value goes straight into the block: up to its first `ret`, a caller of `acquire_with`
# or `acquire_with_fn` reads nothing back from its stack frame. When the value is built on
# the stack and then copied (it once was, while the slow path borrowed the same stack slot),
# the copy's 16-byte loads stall on the 8-byte stores just made: 15.5 ns per W1 round trip
# against 4.0 ns.
if [[ "$(uname -m)" == x86_64 ]]; then
  for sym in hot_acquire_with hot_acquire_with_fn; do
    reads=$(objdump -d --no-show-raw-insn "$bin" \
      | awk -v s="<$sym>:" '$2 == s { on = 1; next } on && $2 ~ /^ret/ { exit } on' \
      | grep -cE '\(%rsp\),' || true)
    verdict=ok
    if (( reads > 0 )); then verdict="COPIES THROUGH THE STACK"; fail=1; fi
    printf 'hot path: %-22s %4d reads of its stack frame before ret %s\n' "$sym" "$reads" "$verdict"
  done
fi
# A user's plain `#[inline]` wrappers (`plain_*` in src/main.rs) are inlined into both their
# callers, so none keeps a symbol. Before the errors became `Copy`, none was: each wrapper
# then cost a call, 4.9–6.0 ns per W1 round trip against 3.4–3.8 ns inlined. Before a
# handle's drop stopped unwinding for types without drop glue, `plain_release` was not
# inlined either: its landing pad's abort made it too large (W1 1.34–1.51 times the floor
# with plain adapters, against 1.02 after).
symbols=$(nm -C "$bin")
# A control: the two callers are never inlined, so their demangled names must be found; if
# they are not (an `nm` that cannot demangle Rust), the check below would prove nothing.
for sym in plain_one plain_many; do
  if ! grep -qE "tally_pool_hot_path::${sym}( |\$|::)" <<<"$symbols"; then
    echo "hot path: no symbol $sym: cannot tell which wrappers were inlined"; fail=1
  fi
done
for sym in plain_acquire plain_acquire_with plain_acquire_with_fn plain_release; do
  verdict="inlined ok"
  if grep -qE "tally_pool_hot_path::${sym}( |\$|::)" <<<"$symbols"; then
    verdict="NOT INLINED"; fail=1
  fi
  printf 'hot path: %-22s %s\n' "$sym" "$verdict"
done
exit $fail
