// A derived type's settings carry no function pointer: a hand-written one would be called
// on blocks of another type.
use tally_pool::__private::{GuardLevel, OnCritical, StaticConfig};

unsafe fn reset(_: *mut u8) {}

fn main() {
    let _ = StaticConfig {
        name: "bytes",
        capacity: 16,
        max_capacity: 16,
        guard: GuardLevel::Off,
        per_node: false,
        track_sites: 0,
        reserve: None,
        on_critical: OnCritical::Grow,
        recycle: Some(reset),
        huge_pages: false,
        lock: false,
    };
}
