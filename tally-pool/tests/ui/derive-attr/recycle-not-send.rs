// Recycled values wait in the pool and may be handed to any thread next, so
// `#[pooled(recycle)]` needs a `Send` type.
use std::rc::Rc;
use tally_pool::{Pooled, Recycle};

#[derive(Pooled, Default)]
#[pooled(recycle)]
struct Batch {
    fills: Vec<Rc<u64>>,
}

impl Recycle for Batch {
    fn recycle(&mut self) {
        self.fills.clear();
    }
}

fn main() {}
