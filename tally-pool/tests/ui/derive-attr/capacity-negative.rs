// `capacity` cannot be negative.
use tally_pool::Pooled;

#[derive(Pooled, Default)]
#[pooled(capacity = -1)]
struct Order {
    qty: u32,
}

fn main() {}
