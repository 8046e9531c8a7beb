// A pooled type lives in a `static` pool, so it cannot borrow: no lifetime parameters.
use tally_pool::Pooled;

#[derive(Pooled, Default)]
struct Order<'a> {
    venue: &'a str,
}

fn main() {}
