// A `Handle` to a value that is not `Send` (here it holds an `Rc`) cannot be sent to
// another thread.
use std::rc::Rc;
use tally_pool::Pooled;

#[derive(Pooled, Default)]
struct Shared {
    count: Rc<u32>,
}

fn main() {
    let h = Shared::acquire().unwrap();
    std::thread::spawn(move || {
        println!("{}", h.count);
    });
}
