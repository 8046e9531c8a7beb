// A generic type cannot have one `static` pool for all its instantiations: create a
// pool per instantiation with `Pool::<T>::new` instead.
use tally_pool::Pooled;

#[derive(Pooled, Default)]
struct Slot<T> {
    value: T,
}

fn main() {
    let _ = Slot::<u64>::acquire();
}
