// The derive's output names every path in full, so it compiles where no prelude is in
// scope, both with the default `::tally_pool` path and with `crate = "..."` naming the
// runtime under another name (as a renamed dependency would).
#![no_implicit_prelude]

extern crate tally_pool as tp;

#[derive(::tally_pool::Pooled, ::core::default::Default)]
#[pooled(
    capacity = 2,
    max_capacity = 8,
    name = "default-path",
    guard = "canary"
)]
struct DefaultPath {
    qty: u32,
}

#[derive(tp::Pooled, ::core::default::Default)]
#[pooled(crate = "tp", capacity = 2, max_capacity = 8)]
struct Renamed {
    qty: u32,
}

mod nested {
    #[derive(::tp::Pooled, ::core::default::Default)]
    #[pooled(crate = "::tp", recycle)]
    pub(crate) struct Recycled {
        pub(crate) fills: ::std::vec::Vec<u64>,
    }

    impl ::tp::Recycle for Recycled {
        fn recycle(&mut self) {
            self.fills.clear();
        }
    }
}

fn main() {
    use ::tally_pool::Pooled as _;

    let a = DefaultPath::acquire().unwrap();
    let b = Renamed::acquire().unwrap();
    let c = nested::Recycled::acquire().unwrap();
    ::std::assert_eq!(a.qty + b.qty, 0);
    ::std::assert!(c.fills.is_empty());
    ::std::assert_eq!(DefaultPath::pool().name(), "default-path");
    ::std::assert_eq!(Renamed::pool().name(), "Renamed");
}
