// Lending a value out as a token needs a `Send` value: the token may be redeemed, and the
// value dropped, on another thread.
use std::rc::Rc;
use tally_pool::{Handle, Pool, PoolConfig};

fn main() {
    let pool = Pool::<Rc<u64>>::new(PoolConfig::new("rc")).unwrap();
    let h = pool.acquire_with(Rc::new(1)).unwrap();
    let _raw = Handle::into_raw(h);
}
