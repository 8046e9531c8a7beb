// A reference into a pooled value cannot outlive the `Handle` it was borrowed from: the
// value goes back to the pool when the handle is dropped.
use tally_pool::Pooled;

#[derive(Pooled, Default)]
struct Order {
    qty: u32,
}

fn main() {
    let qty: &u32;
    {
        let h = Order::acquire().unwrap();
        qty = &h.qty;
    }
    println!("{qty}");
}
