// `track_sites` is a number of acquires, written as an integer literal.
use tally_pool::Pooled;

#[derive(Pooled, Default)]
#[pooled(track_sites = "often")]
struct Order {
    qty: u32,
}

fn main() {}
