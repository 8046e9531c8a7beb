// `#[derive(Pooled)]` does not support unions; wrap the union in a struct.
use tally_pool::Pooled;

#[derive(Pooled)]
union Bits {
    int: u64,
    float: f64,
}

fn main() {}
