// Freeing a block is unsafe: a pointer you no longer own cannot be told from its new owner's.
use core::alloc::Layout;
use tally_pool::block::{BlockPool, BlockPoolConfig};

fn main() {
    let pool = BlockPool::new(BlockPoolConfig::new(Layout::new::<u64>())).unwrap();
    let block = pool.allocate().unwrap();
    pool.free(block).unwrap();
}
