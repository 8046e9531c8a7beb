// Every `#[pooled(...)]` option, in one attribute or spread over several, on structs,
// tuple structs, unit structs, enums and raw identifiers.
use tally_pool::{Pooled, Recycle};

#[derive(Pooled, Default)]
#[pooled(capacity = 16, max_capacity = 1_024, name = "orders", guard = "canary")]
#[pooled(recycle, crate = "tally_pool")]
struct Order {
    fills: Vec<u64>,
}

impl Recycle for Order {
    fn recycle(&mut self) {
        self.fills.clear();
    }
}

#[derive(Pooled, Default)]
#[pooled(guard = "full", max_capacity = 3, reserve = 2, on_critical = "refuse")]
struct Pair(u32, u32);

#[derive(Pooled, Default)]
#[pooled(guard = "off", track_sites = 1_024, on_critical = "grow")]
#[pooled(huge_pages = true, lock = false)]
struct Unit;

#[derive(Pooled, Default, Debug, PartialEq)]
enum Side {
    #[default]
    Bid,
    Ask,
}

#[allow(non_camel_case_types)]
#[derive(Pooled, Default)]
struct r#type {
    x: u8,
}

fn main() {
    assert!(Order::acquire().unwrap().fills.is_empty());
    assert_eq!(Pair::acquire_with(Pair(1, 2)).unwrap().1, 2);
    let _unit = Unit::acquire().unwrap();
    assert_eq!(Unit::pool().site_sampling(), 1024);
    assert_eq!(*Side::acquire_with(Side::Ask).unwrap(), Side::Ask);
    assert_eq!(r#type::acquire().unwrap().x, 0);
    assert_eq!(r#type::pool().name(), "type");
    // `capacity` defaults to 1024, lowered to `max_capacity` when that is smaller.
    assert_eq!(Pair::pool().stats().max_capacity, 3);
}
