// `#[pooled(...)]` accepts only the keys it knows, and names them when it sees another.
use tally_pool::Pooled;

#[derive(Pooled, Default)]
#[pooled(capacity = 16, size = 64)]
struct Order {
    qty: u32,
}

fn main() {}
