// Every mistake in `#[pooled(...)]` is reported in one compile, each at its own token.
use tally_pool::Pooled;

#[derive(Pooled, Default)]
#[pooled(capacity = "lots", colour = "red")]
struct Order {
    qty: u32,
}

fn main() {}
