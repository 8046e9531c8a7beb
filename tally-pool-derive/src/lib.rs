//! `#[derive(Pooled)]`: gives a type its own `static` pool of `tally-pool`.
//!
//! This crate is an implementation detail of `tally-pool`: depend on `tally-pool` and write
//! `use tally_pool::Pooled;`, which brings both the trait and this derive.
//!
//! The macro runs in three steps, one file each: `parse` reads `#[pooled(...)]`,
//! `validate` checks the type and the options, `expand` writes the impl. Every error
//! found is reported in one compile, each spanned at its token; on error a stub impl is
//! emitted too, so that uses of the type report nothing further.

mod expand;
mod parse;
mod validate;

use proc_macro::TokenStream;

/// Derives `tally_pool::Pooled`: a `static` pool for the type, created on first use.
///
/// Options, in `#[pooled(...)]`:
///
/// | key | value | default |
/// |---|---|---|
/// | `capacity` | values pre-allocated | 1024, or `max_capacity` if lower |
/// | `max_capacity` | most values alive at once | 1,048,576 |
/// | `name` | name in errors and reports | the type's name |
/// | `guard` | `"off"`, `"canary"` or `"full"` (`"full"` not with `recycle`) | `"off"` |
/// | `recycle` | keep values on release, reset with `Recycle::recycle` (needs `Recycle + Send`) | off |
/// | `per_node` | one pool per NUMA node (`true`) or one shared pool (`false`) | `true` |
/// | `track_sites` | remember the call site of one acquire in N (`Pool::track_sites`); 0 is off | 0 |
/// | `reserve` | values memory pressure never takes back (`PoolConfig::reserve`), at most `max_capacity` | `capacity` |
/// | `on_critical` | `"grow"` or `"refuse"`: at Critical memory pressure, map as usual or fail growth with `PoolError::Pressure` | `"grow"` |
/// | `huge_pages` | back the pool with transparent huge pages (`PoolConfig::huge_pages`), falling back to normal pages | `false` |
/// | `lock` | lock the pool's memory (`PoolConfig::lock`); creation fails with `PoolError::LockRefused` beyond `ulimit -l` | `false` |
/// | `crate` | path of the `tally_pool` crate | `::tally_pool` |
#[proc_macro_derive(Pooled, attributes(pooled))]
pub fn derive_pooled(input: TokenStream) -> TokenStream {
    let input = syn::parse_macro_input!(input as syn::DeriveInput);
    expand::derive(&input).into()
}
