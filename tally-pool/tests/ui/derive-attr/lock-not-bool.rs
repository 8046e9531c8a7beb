// `lock` is `true` (lock the pool's memory with `mlock`) or `false` (the default); a
// number is refused.
use tally_pool::Pooled;

#[derive(Pooled, Default)]
#[pooled(lock = 1)]
struct Quote {
    price: i64,
}

fn main() {}
