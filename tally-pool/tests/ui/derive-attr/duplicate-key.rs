// Each `#[pooled(...)]` key may be given once.
use tally_pool::Pooled;

#[derive(Pooled, Default)]
#[pooled(capacity = 16)]
#[pooled(capacity = 32)]
struct Order {
    qty: u32,
}

fn main() {}
