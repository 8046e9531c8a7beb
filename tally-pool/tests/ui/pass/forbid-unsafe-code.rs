// A crate that forbids `unsafe` code can still derive `Pooled`: the `unsafe impl` is the
// derive's, not the user's.
#![forbid(unsafe_code)]

use tally_pool::Pooled;

#[derive(Pooled, Default)]
struct Order {
    qty: u32,
}

fn main() {
    assert_eq!(Order::acquire().unwrap().qty, 0);
}
