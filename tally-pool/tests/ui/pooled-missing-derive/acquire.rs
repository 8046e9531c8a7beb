// `Foo::acquire()` needs `#[derive(Pooled)]` on `Foo`; the error says so.
use tally_pool::Pooled;

#[derive(Default)]
struct Foo {
    x: u32,
}

fn main() {
    let _ = Foo::acquire();
}
