// `guard` is one of "off", "canary" or "full".
use tally_pool::Pooled;

#[derive(Pooled, Default)]
#[pooled(guard = "paranoid")]
struct Order {
    qty: u32,
}

fn main() {}
