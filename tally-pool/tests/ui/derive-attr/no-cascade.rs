// A type whose `#[pooled(...)]` is wrong reports only that mistake, not a cascade of
// errors at every use of the type.
use tally_pool::{Handle, Pooled};

#[derive(Pooled, Default)]
#[pooled(max_capacity = "big")]
struct Order {
    qty: u32,
}

fn main() {
    let h: Handle<Order> = Order::acquire().unwrap();
    println!("{}", h.qty);
}
