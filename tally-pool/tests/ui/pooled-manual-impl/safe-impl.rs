// `Pooled` is an `unsafe` trait: implementing it by hand needs `unsafe impl` and takes on
// its safety contract. Use `#[derive(Pooled)]` instead.
use tally_pool::{Pool, PoolConfig, Pooled};

struct Order {
    qty: u32,
}

impl Pooled for Order {
    fn pool() -> &'static Pool<Self> {
        Pool::new(PoolConfig::new("orders")).unwrap()
    }

    fn only_derive_is_allowed_to_implement_this_trait() {}
}

fn main() {
    let _ = Order { qty: 1 }.qty;
}
