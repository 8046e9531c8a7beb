// A recycling pool keeps its values in free blocks, which `guard = "full"` would poison:
// the two cannot be combined.
use tally_pool::{Pooled, Recycle};

#[derive(Pooled, Default)]
#[pooled(recycle, guard = "full")]
struct Batch {
    fills: Vec<u64>,
}

impl Recycle for Batch {
    fn recycle(&mut self) {
        self.fills.clear();
    }
}

fn main() {}
