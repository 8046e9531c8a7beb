// Two types cannot share one per-thread cache cell: the cell a derived type's
// `thread_cache` returns is typed for it. A `crate = "..."` path whose `type_cache!` hands
// every type the same cell does not compile; if it did, `Big` would pop `Small`'s 8-byte
// blocks and write 512 bytes into each.
use tally_pool::Pooled;

pub mod evil {
    pub mod __private {
        pub use tally_pool::__private::{
            recycling_static_pool, GuardLevel, LocalKey, None, OnCritical, Option, Pool, Pooled,
            Some, StaticConfig, StaticPool, TypeCache,
        };
        std::thread_local! {
            pub static SHARED: TypeCache<crate::Small> = const { TypeCache::new() };
        }
        macro_rules! type_cache {
            ($ty:ty) => {
                &$crate::evil::__private::SHARED
            };
        }
        pub(crate) use type_cache;
    }
}

#[derive(Pooled, Default)]
#[pooled(crate = "crate::evil", per_node = false)]
pub struct Small(u64);

#[derive(Pooled)]
#[pooled(crate = "crate::evil", per_node = false)]
pub struct Big([u64; 64]);

fn main() {}
