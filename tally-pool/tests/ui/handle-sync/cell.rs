// A `Handle` to a value that is not `Sync` (here it holds a `Cell`) cannot be shared
// between threads by reference.
use std::cell::Cell;
use tally_pool::Pooled;

#[derive(Pooled, Default)]
struct Counter {
    hits: Cell<u32>,
}

fn main() {
    let h = Counter::acquire().unwrap();
    let h = &h;
    std::thread::scope(|s| {
        s.spawn(move || h.hits.get());
    });
}
