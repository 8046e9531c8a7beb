// A `RawHandle<Order>` can only be redeemed as an `Order`, never as another pooled type.
use tally_pool::{Handle, Pooled, RawHandle};

#[derive(Pooled, Default)]
struct Order {
    qty: u32,
}

#[derive(Pooled, Default)]
struct Quote {
    bid: i64,
}

fn main() {
    let order_raw: RawHandle<Order> = Handle::into_raw(Order::acquire().unwrap());
    let _quote = Quote::redeem(order_raw);
}
