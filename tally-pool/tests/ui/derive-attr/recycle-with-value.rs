// `recycle` is a flag: write `#[pooled(recycle)]`, not `recycle = true`.
use tally_pool::{Pooled, Recycle};

#[derive(Pooled, Default)]
#[pooled(recycle = true)]
struct Batch {
    fills: Vec<u64>,
}

impl Recycle for Batch {
    fn recycle(&mut self) {
        self.fills.clear();
    }
}

fn main() {}
