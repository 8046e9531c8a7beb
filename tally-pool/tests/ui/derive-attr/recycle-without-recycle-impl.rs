// `#[pooled(recycle)]` keeps values on release and resets them with `Recycle::recycle`,
// so the type must implement `Recycle`.
use tally_pool::Pooled;

#[derive(Pooled, Default)]
#[pooled(recycle)]
struct Batch {
    fills: Vec<u64>,
}

fn main() {}
