//! Writing the impl.
//!
//! Generated code names only `#krate::__private::…` (default `::tally_pool`, or the path
//! of `#[pooled(crate = "...")]`) and `::core::…`, and sits inside `const _: () = { … };`
//! so that it adds no names to the user's module.

use proc_macro2::{Literal, TokenStream};
use quote::{quote, quote_spanned};
use syn::{DeriveInput, Path, WhereClause};

use crate::parse::{self, Errors};
use crate::validate::{self, Checked};

/// The whole expansion: the impl, or the errors plus a stub impl.
pub(crate) fn derive(input: &DeriveInput) -> TokenStream {
    let mut errors = Errors::default();
    let options = parse::options(&input.attrs, &mut errors);
    let krate: Path = options
        .krate
        .clone()
        .unwrap_or_else(|| syn::parse_quote!(::tally_pool));
    let checked = validate::check(input, &options, &mut errors);
    match errors.combined() {
        None => expand(input, &krate, &checked),
        Some(e) => {
            let mut out = e.to_compile_error();
            out.extend(fallback(input, &krate));
            out
        }
    }
}

/// The impl of a type that passed every check (so it has no generics).
fn expand(input: &DeriveInput, krate: &Path, c: &Checked) -> TokenStream {
    let ty = &input.ident;
    let Checked {
        capacity,
        max_capacity,
        name,
        guard,
        recycle,
        per_node,
        track_sites,
        reserve,
        on_critical,
        huge_pages,
        lock,
    } = c;
    let reserve = match reserve {
        Some(r) => {
            let r = Literal::u64_unsuffixed(*r);
            quote!(#krate::__private::Some(#r))
        }
        None => quote!(#krate::__private::None),
    };
    // Unsuffixed, so they are typed `usize` by the field they initialise.
    let (capacity, max_capacity) = (
        Literal::u64_unsuffixed(*capacity),
        Literal::u64_unsuffixed(*max_capacity),
    );
    let config = quote! {
        #krate::__private::StaticConfig {
            name: #name,
            capacity: #capacity,
            max_capacity: #max_capacity,
            guard: #krate::__private::GuardLevel::#guard,
            per_node: #per_node,
            track_sites: #track_sites,
            reserve: #reserve,
            on_critical: #krate::__private::OnCritical::#on_critical,
            huge_pages: #huge_pages,
            lock: #lock,
        }
    };
    let pool = match recycle {
        // Spanned at the `recycle` key, so a missing `Recycle` or `Send` impl is reported
        // there rather than at the type's name.
        Some(span) => {
            let mut ty_at_key = ty.clone();
            ty_at_key.set_span(*span);
            let constructor = quote_spanned! {*span=>
                #krate::__private::recycling_static_pool::<#ty_at_key>
            };
            quote!(#constructor(#config))
        }
        None => quote!(#krate::__private::StaticPool::new(#config)),
    };
    quote! {
        const _: () = {
            static POOL: #krate::__private::StaticPool<#ty> = #pool;

            // SAFETY: `pool` returns the one `static` pool made for this type, and
            // `thread_cache` the type's own cache cell.
            #[automatically_derived]
            unsafe impl #krate::__private::Pooled for #ty {
                #[inline]
                fn pool() -> &'static #krate::__private::Pool<Self> {
                    POOL.get()
                }

                #[inline(always)]
                fn thread_cache() -> #krate::__private::Option<
                    &'static #krate::__private::LocalKey<#krate::__private::TypeCache<Self>>,
                > {
                    #krate::__private::Some(#krate::__private::type_cache!(#ty))
                }

                fn only_derive_is_allowed_to_implement_this_trait() {}
            }
        };
    }
}

/// A stub impl emitted next to errors so that uses of the type add no further errors
/// (thiserror's `fallback`). It holds for any generics: the `'static` bound that `Pooled`
/// needs is stated rather than proved, so a lifetime or type parameter adds no error of
/// its own.
fn fallback(input: &DeriveInput, krate: &Path) -> TokenStream {
    let ty = &input.ident;
    let (impl_generics, ty_generics, where_clause) = input.generics.split_for_impl();
    let mut where_clause: WhereClause = where_clause
        .cloned()
        .unwrap_or_else(|| syn::parse_quote!(where));
    where_clause
        .predicates
        .push(syn::parse_quote!(#ty #ty_generics: 'static));
    quote! {
        const _: () = {
            #[automatically_derived]
            unsafe impl #impl_generics #krate::__private::Pooled for #ty #ty_generics #where_clause {
                fn pool() -> &'static #krate::__private::Pool<Self> {
                    ::core::unreachable!()
                }

                fn only_derive_is_allowed_to_implement_this_trait() {}
            }
        };
    }
}
