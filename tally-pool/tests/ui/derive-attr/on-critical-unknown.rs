// `on_critical` says what growth does at Critical memory pressure: grow or refuse.
use tally_pool::Pooled;

#[derive(Pooled, Default)]
#[pooled(on_critical = "shed")]
struct Order {
    id: u64,
}

fn main() {}
