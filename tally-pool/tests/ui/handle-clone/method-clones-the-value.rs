// `h.clone()` on a `Handle` clones the value it points to (through `Deref`), not the
// handle: the result is a plain `Order` outside the pool, never a second `Handle`.
use tally_pool::{Handle, Pooled};

#[derive(Pooled, Default, Clone)]
struct Order {
    qty: u32,
}

fn main() {
    let h: Handle<Order> = Order::acquire().unwrap();
    let copy: Handle<Order> = h.clone();
    drop((h, copy));
}
