// `capacity` is an integer literal, not a string.
use tally_pool::Pooled;

#[derive(Pooled, Default)]
#[pooled(capacity = "1024")]
struct Order {
    qty: u32,
}

fn main() {}
