// A token is a plain `u64` that can reach any thread, so only values that may move
// between threads can be redeemed from one: here an `Rc`, whose count is not atomic.
use std::rc::Rc;
use tally_pool::{Handle, Pool, PoolConfig, RawHandle};

fn main() {
    let pool = Pool::<Rc<u64>>::new(PoolConfig::new("rc")).unwrap();
    let bits: u64 = std::thread::spawn(|| 0).join().unwrap();
    let _back: Handle<Rc<u64>> = pool.redeem(RawHandle::from(bits)).unwrap();
}
