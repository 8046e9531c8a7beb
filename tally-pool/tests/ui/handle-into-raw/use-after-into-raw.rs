// `Handle::into_raw(h)` gives up the handle: it cannot be used afterwards; redeem the
// raw handle to get a new one.
use tally_pool::{Handle, Pooled};

#[derive(Pooled, Default)]
struct Order {
    qty: u32,
}

fn main() {
    let h = Order::acquire().unwrap();
    let raw = Handle::into_raw(h);
    println!("{}", h.qty);
    let _ = Order::redeem(raw);
}
