// `crate = "..."` must name a crate that is there; the error points at the path given.
use tally_pool::Pooled;

#[derive(Pooled, Default)]
#[pooled(crate = "::no_such_pool")]
struct Order {
    qty: u32,
}

fn main() {}
