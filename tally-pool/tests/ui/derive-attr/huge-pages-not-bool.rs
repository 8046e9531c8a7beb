// `huge_pages` is `true` (back the pool with transparent huge pages) or `false` (normal
// pages, the default); a string or a number is refused.
use tally_pool::Pooled;

#[derive(Pooled, Default)]
#[pooled(huge_pages = "yes")]
struct Quote {
    price: i64,
}

fn main() {}
