// A pool must be able to hold at least one value.
use tally_pool::Pooled;

#[derive(Pooled, Default)]
#[pooled(max_capacity = 0)]
struct Order {
    qty: u32,
}

fn main() {}
