//! Checking the type and the options before anything is generated.

use proc_macro2::{Span, TokenStream};
use quote::quote;
use syn::ext::IdentExt as _;
use syn::{Data, DeriveInput, LitStr};

use crate::parse::{Errors, Options};

/// Default `capacity` (the runtime's `DEFAULT_CAPACITY`), lowered to `max_capacity` when
/// that is smaller.
const DEFAULT_CAPACITY: u64 = 1024;
/// Default `max_capacity` (the runtime's `DEFAULT_MAX_CAPACITY`).
const DEFAULT_MAX_CAPACITY: u64 = 1 << 20;
/// The largest `max_capacity` a typed pool accepts (the runtime's `MAX_CAPACITY`: 2^25,
/// the block field of a raw handle).
const MAX_CAPACITY: u64 = 1 << 25;

/// The settings the expansion uses.
pub(crate) struct Checked {
    pub(crate) capacity: u64,
    pub(crate) max_capacity: u64,
    pub(crate) name: LitStr,
    /// The `GuardLevel` variant.
    pub(crate) guard: TokenStream,
    /// The span of the `recycle` key, if present.
    pub(crate) recycle: Option<Span>,
    /// One pool per NUMA node (default) or one shared pool.
    pub(crate) per_node: bool,
    /// Sample the call site of one acquire in this many (0: off).
    pub(crate) track_sites: u32,
    /// Values memory pressure never takes back (`None`: the capacity).
    pub(crate) reserve: Option<u64>,
    /// The `OnCritical` variant.
    pub(crate) on_critical: TokenStream,
    /// Back the pool with transparent huge pages.
    pub(crate) huge_pages: bool,
    /// Lock the pool's memory.
    pub(crate) lock: bool,
}

/// Checks what the pool needs of the type and the options; reports every problem.
pub(crate) fn check(input: &DeriveInput, options: &Options, errors: &mut Errors) -> Checked {
    if let Data::Union(u) = &input.data {
        errors.spanned(
            u.union_token,
            "#[derive(Pooled)] does not support unions; wrap the union in a struct",
        );
    }
    let generics = &input.generics;
    for lt in generics.lifetimes() {
        errors.spanned(
            lt,
            "#[derive(Pooled)] cannot pool a type with a lifetime: pooled values live in a `static` pool and must be `'static`",
        );
    }
    if generics.type_params().next().is_some() || generics.const_params().next().is_some() {
        errors.spanned(
            generics,
            "#[derive(Pooled)] cannot give a generic type a `static` pool; create one per instantiation with `tally_pool::Pool::<T>::new(PoolConfig::new(..))`",
        );
    }
    let max_capacity = options
        .max_capacity
        .as_ref()
        .map_or(DEFAULT_MAX_CAPACITY, |c| c.value);
    if let Some(max) = &options.max_capacity {
        if max.value == 0 {
            errors.push(syn::Error::new(
                max.span,
                "`max_capacity` must be at least 1",
            ));
        } else if max.value > MAX_CAPACITY {
            errors.push(syn::Error::new(
                max.span,
                format!(
                    "`max_capacity` ({}) is above {MAX_CAPACITY} (2^25), the most values a pool can number in its raw handles",
                    max.value
                ),
            ));
        }
    }
    let capacity = match &options.capacity {
        Some(c) => {
            if c.value > max_capacity {
                errors.push(syn::Error::new(
                    c.span,
                    format!(
                        "`capacity` ({}) exceeds `max_capacity` ({max_capacity}); lower `capacity` or raise `max_capacity`",
                        c.value
                    ),
                ));
            }
            c.value
        }
        None => DEFAULT_CAPACITY.min(max_capacity),
    };
    let guard = match options.guard.as_ref().map(LitStr::value).as_deref() {
        None | Some("off") => quote!(Off),
        Some("canary") => quote!(Canary),
        Some("full") => quote!(Full),
        Some(other) => {
            if let Some(lit) = &options.guard {
                errors.spanned(
                    lit,
                    format!("unknown guard `{other}`; expected \"off\", \"canary\" or \"full\""),
                );
            }
            quote!(Off)
        }
    };
    if let (Some(_), Some(lit)) = (options.recycle, &options.guard) {
        if lit.value() == "full" {
            errors.spanned(
                lit,
                "`guard = \"full\"` poisons free blocks, where `recycle` keeps its values; use `guard = \"canary\"`",
            );
        }
    }
    let track_sites = match &options.track_sites {
        Some(t) => u32::try_from(t.value).unwrap_or_else(|_| {
            errors.push(syn::Error::new(
                t.span,
                format!(
                    "`track_sites` ({}) is above {} (u32::MAX); it samples one acquire in N, and 1_024 is a good start",
                    t.value,
                    u32::MAX
                ),
            ));
            0
        }),
        None => 0,
    };
    if let Some(r) = &options.reserve {
        if r.value > max_capacity {
            errors.push(syn::Error::new(
                r.span,
                format!(
                    "`reserve` ({}) exceeds `max_capacity` ({max_capacity}); a pool cannot keep more values than it may hold",
                    r.value
                ),
            ));
        }
    }
    let on_critical = match options.on_critical.as_ref().map(LitStr::value).as_deref() {
        None | Some("grow") => quote!(Grow),
        Some("refuse") => quote!(Refuse),
        Some(other) => {
            if let Some(lit) = &options.on_critical {
                errors.spanned(
                    lit,
                    format!("unknown `on_critical` `{other}`; expected \"grow\" or \"refuse\""),
                );
            }
            quote!(Grow)
        }
    };
    let name = options
        .name
        .clone()
        .unwrap_or_else(|| LitStr::new(&input.ident.unraw().to_string(), input.ident.span()));
    Checked {
        capacity,
        max_capacity,
        name,
        guard,
        recycle: options.recycle,
        per_node: options.per_node.unwrap_or(true),
        track_sites,
        reserve: options.reserve.as_ref().map(|r| r.value),
        on_critical,
        huge_pages: options.huge_pages.unwrap_or(false),
        lock: options.lock.unwrap_or(false),
    }
}
