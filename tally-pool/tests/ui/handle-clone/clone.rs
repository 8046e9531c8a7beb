// A `Handle` owns its value, like a `Box`: it cannot be cloned, even when the value can.
use tally_pool::{Handle, Pooled};

#[derive(Pooled, Default, Clone)]
struct Order {
    qty: u32,
}

fn main() {
    let h: Handle<Order> = Order::acquire().unwrap();
    let copy = <Handle<Order> as Clone>::clone(&h);
    drop((h, copy));
}
