//! Checking the type and the options before anything is generated.

use proc_macro2::Span;
use quote::quote;
use syn::{Data, DeriveInput, LitStr};

use crate::parse::{Errors, Options};

/// The largest `max_capacity` a typed pool accepts (2^25, the block field of a raw
/// handle).
const MAX_CAPACITY: u64 = 1 << 25;

/// The settings the expansion uses.
pub(crate) struct Checked {
    pub(crate) capacity: u64,
    pub(crate) max_capacity: u64,
    pub(crate) name: LitStr,
    pub(crate) guard: proc_macro2::TokenStream,
    pub(crate) recycle: bool,
}

/// Checks what the pool needs of the type and the options; reports every problem.
pub(crate) fn check(input: &DeriveInput, options: &Options, errors: &mut Errors) -> Checked {
    if let Data::Union(u) = &input.data {
        errors.spanned(u.union_token, "#[derive(Pooled)] does not support unions; wrap the union in a struct");
    }
    let generics = &input.generics;
    if let Some(lt) = generics.lifetimes().next() {
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
    let capacity = options.capacity.as_ref().map_or(1024, |c| c.value);
    let max_capacity = options.max_capacity.as_ref().map_or(1 << 20, |c| c.value);
    if let Some(max) = &options.max_capacity {
        if max.value == 0 {
            errors.push(syn::Error::new(max.span, "`max_capacity` must be at least 1"));
        } else if max.value > MAX_CAPACITY {
            errors.push(syn::Error::new(
                max.span,
                format!("`max_capacity` is at most {MAX_CAPACITY} (2^25), the most values a raw handle can number"),
            ));
        }
    }
    if capacity > max_capacity {
        let span = options.capacity.as_ref().map_or_else(Span::call_site, |c| c.span);
        errors.push(syn::Error::new(
            span,
            format!("`capacity` ({capacity}) exceeds `max_capacity` ({max_capacity}); lower `capacity` or raise `max_capacity`"),
        ));
    }
    let guard = match options.guard.as_ref().map(LitStr::value).as_deref() {
        None | Some("off") => quote!(Off),
        Some("canary") => quote!(Canary),
        Some("full") => quote!(Full),
        Some(other) => {
            if let Some(lit) = &options.guard {
                errors.spanned(lit, format!("unknown guard `{other}`; expected \"off\", \"canary\" or \"full\""));
            }
            quote!(Off)
        }
    };
    let name = options.name.clone().unwrap_or_else(|| LitStr::new(&input.ident.to_string(), input.ident.span()));
    Checked { capacity, max_capacity, name, guard, recycle: options.recycle.is_some() }
}
