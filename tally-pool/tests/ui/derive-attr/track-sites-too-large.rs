// `track_sites = N` samples one acquire in N, counted in a u32: N cannot be larger.
use tally_pool::Pooled;

#[derive(Pooled, Default)]
#[pooled(track_sites = 4_294_967_296)]
struct Order {
    qty: u32,
}

fn main() {}
