// `per_node` is `true` (one pool per NUMA node, the default) or `false` (one shared pool).
use tally_pool::Pooled;

#[derive(Pooled, Default)]
#[pooled(per_node = "no")]
struct Order {
    qty: u32,
}

fn main() {}
