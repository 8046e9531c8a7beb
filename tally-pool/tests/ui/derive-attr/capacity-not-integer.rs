// `capacity` is a whole number of values, written as an integer literal.
use tally_pool::Pooled;

#[derive(Pooled, Default)]
#[pooled(capacity = 1.5)]
struct Order {
    qty: u32,
}

fn main() {}
