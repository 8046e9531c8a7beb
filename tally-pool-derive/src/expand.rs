//! Writing the impl.

use proc_macro2::TokenStream;
use quote::quote;
use syn::{DeriveInput, Path};

use crate::parse::{self, Errors};
use crate::validate::{self, Checked};

/// The whole expansion: the impl, or the errors plus a stub impl.
pub(crate) fn derive(input: &DeriveInput) -> TokenStream {
    let mut errors = Errors::default();
    let options = parse::options(&input.attrs, &mut errors);
    let krate: Path = options.krate.clone().unwrap_or_else(|| syn::parse_quote!(::tally_pool));
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

fn expand(input: &DeriveInput, krate: &Path, c: &Checked) -> TokenStream {
    let ty = &input.ident;
    let Checked { capacity, max_capacity, name, guard, recycle } = c;
    let (capacity, max_capacity) = (*capacity as usize, *max_capacity as usize);
    let recycle = if *recycle {
        quote!(#krate::__private::Some(#krate::__private::recycle_fn::<#ty>()))
    } else {
        quote!(#krate::__private::None)
    };
    quote! {
        const _: () = {
            static POOL: #krate::__private::StaticPool<#ty> =
                #krate::__private::StaticPool::new(#krate::__private::StaticConfig {
                    name: #name,
                    capacity: #capacity,
                    max_capacity: #max_capacity,
                    guard: #krate::__private::GuardLevel::#guard,
                    recycle: #recycle,
                });

            // SAFETY: `pool` returns the one `static` pool made for this type.
            unsafe impl #krate::__private::Pooled for #ty {
                #[inline]
                fn pool() -> &'static #krate::__private::Pool<Self> {
                    POOL.get()
                }

                fn only_derive_is_allowed_to_implement_this_trait() {}
            }
        };
    }
}

/// A stub impl emitted next to errors so that uses of the type add no further errors.
fn fallback(input: &DeriveInput, krate: &Path) -> TokenStream {
    let ty = &input.ident;
    let (impl_generics, ty_generics, where_clause) = input.generics.split_for_impl();
    quote! {
        const _: () = {
            unsafe impl #impl_generics #krate::__private::Pooled for #ty #ty_generics #where_clause {
                fn pool() -> &'static #krate::__private::Pool<Self> {
                    ::core::unreachable!()
                }

                fn only_derive_is_allowed_to_implement_this_trait() {}
            }
        };
    }
}
