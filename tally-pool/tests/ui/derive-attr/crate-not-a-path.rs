// `crate = "..."` names the tally_pool crate by a path, such as "::my_pool".
use tally_pool::Pooled;

#[derive(Pooled, Default)]
#[pooled(crate = "my pool")]
struct Order {
    qty: u32,
}

fn main() {}
