// The pool behind a derived type is chosen by the derive: code cannot pair a pool with a
// reset function of its own, nor recycle a type that does not implement `Recycle`.
use tally_pool::__private::{GuardLevel, OnCritical, StaticConfig, StaticPool};

static POOL: StaticPool<u8> = StaticPool::new_recycling(StaticConfig {
    name: "bytes",
    capacity: 16,
    max_capacity: 16,
    guard: GuardLevel::Off,
    per_node: false,
    track_sites: 0,
    reserve: None,
    on_critical: OnCritical::Grow,
    huge_pages: false,
    lock: false,
});

fn main() {
    let _ = &POOL;
}
