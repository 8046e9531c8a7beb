// A pool numbers at most 2^25 (33,554,432) values: `max_capacity` cannot be larger.
use tally_pool::Pooled;

#[derive(Pooled, Default)]
#[pooled(max_capacity = 33_554_433)]
struct Order {
    qty: u32,
}

fn main() {}
