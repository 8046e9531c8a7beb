// A derived type that is not `Send` cannot be redeemed from a token either.
use std::rc::Rc;
use tally_pool::{Pooled, RawHandle};

#[derive(Pooled, Default)]
struct Local {
    count: Rc<u32>,
}

fn main() {
    let _ = Local::redeem(RawHandle::from(7u64));
}
