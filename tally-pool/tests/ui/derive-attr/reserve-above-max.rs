// A reserve is what memory pressure never takes back: it cannot exceed what the pool may hold.
use tally_pool::Pooled;

#[derive(Pooled, Default)]
#[pooled(max_capacity = 100, reserve = 101)]
struct Order {
    id: u64,
}

fn main() {}
