// `capacity` (values made up front) cannot exceed `max_capacity` (values alive at most).
use tally_pool::Pooled;

#[derive(Pooled, Default)]
#[pooled(capacity = 4096, max_capacity = 1024)]
struct Order {
    qty: u32,
}

fn main() {}
