// Code generic over pooled types (`T: Pooled`) accepts only types with
// `#[derive(Pooled)]`; the error says to add it.
use tally_pool::Pooled;

#[derive(Default)]
struct Foo {
    x: u32,
}

fn count<T: Pooled>() -> u64 {
    T::pool().stats().live_blocks
}

fn main() {
    let _ = count::<Foo>();
}
