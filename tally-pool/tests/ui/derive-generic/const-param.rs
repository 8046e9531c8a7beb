// Const generics count too: each `Buf<N>` is its own type and would need its own pool.
use tally_pool::Pooled;

#[derive(Pooled)]
struct Buf<const N: usize> {
    bytes: [u8; N],
}

fn main() {}
