//! Reading `#[pooled(...)]`.

use proc_macro2::Span;
use syn::spanned::Spanned as _;
use syn::{Attribute, Expr, ExprLit, Lit, LitInt, LitStr, Path};

/// Collects errors so that all of them are reported in one compile (serde's `Ctxt`).
#[derive(Default)]
pub(crate) struct Errors {
    errors: Vec<syn::Error>,
}

impl Errors {
    pub(crate) fn push(&mut self, error: syn::Error) {
        self.errors.push(error);
    }

    pub(crate) fn spanned(&mut self, tokens: impl quote::ToTokens, message: impl std::fmt::Display) {
        self.push(syn::Error::new_spanned(tokens, message));
    }

    /// All errors as one, or `None` when there were none.
    pub(crate) fn combined(self) -> Option<syn::Error> {
        self.errors.into_iter().reduce(|mut all, e| {
            all.combine(e);
            all
        })
    }
}

/// A value with the span of the `key = value` it came from.
pub(crate) struct Spanned<T> {
    pub(crate) value: T,
    pub(crate) span: Span,
}

/// What `#[pooled(...)]` said.
#[derive(Default)]
pub(crate) struct Options {
    pub(crate) capacity: Option<Spanned<u64>>,
    pub(crate) max_capacity: Option<Spanned<u64>>,
    pub(crate) name: Option<LitStr>,
    pub(crate) guard: Option<LitStr>,
    pub(crate) recycle: Option<Span>,
    pub(crate) krate: Option<Path>,
}

/// Reads every `#[pooled(...)]` attribute of the type.
pub(crate) fn options(attrs: &[Attribute], errors: &mut Errors) -> Options {
    let mut options = Options::default();
    for attr in attrs.iter().filter(|a| a.path().is_ident("pooled")) {
        let result = attr.parse_nested_meta(|meta| {
            let key = meta.path.get_ident().map(ToString::to_string).unwrap_or_default();
            let span = meta.path.span();
            let duplicate = |errors: &mut Errors| {
                errors.push(syn::Error::new(span, format!("duplicate `{key}` in #[pooled(...)]")));
            };
            match key.as_str() {
                "capacity" | "max_capacity" => {
                    let value = integer(&meta.value()?.parse::<Expr>()?, &key, errors);
                    let slot = if key == "capacity" { &mut options.capacity } else { &mut options.max_capacity };
                    if slot.is_some() {
                        duplicate(errors);
                    } else if let Some(value) = value {
                        *slot = Some(Spanned { value, span });
                    }
                }
                "name" | "guard" => {
                    let value = string(&meta.value()?.parse::<Expr>()?, &key, errors);
                    let slot = if key == "name" { &mut options.name } else { &mut options.guard };
                    if slot.is_some() {
                        duplicate(errors);
                    } else if value.is_some() {
                        *slot = value;
                    }
                }
                "crate" => {
                    let value = string(&meta.value()?.parse::<Expr>()?, &key, errors);
                    if options.krate.is_some() {
                        duplicate(errors);
                    } else if let Some(lit) = value {
                        match lit.parse::<Path>() {
                            Ok(path) => options.krate = Some(path),
                            Err(_) => errors.spanned(&lit, "`crate` must be a path, such as \"tally_pool\""),
                        }
                    }
                }
                "recycle" => {
                    if options.recycle.is_some() {
                        duplicate(errors);
                    }
                    options.recycle = Some(span);
                }
                _ => {
                    errors.push(syn::Error::new(
                        span,
                        format!(
                            "unknown key `{}` in #[pooled(...)]; expected one of `capacity`, `max_capacity`, `name`, `guard`, `recycle`, `crate`",
                            meta.path.get_ident().map(ToString::to_string).unwrap_or_else(|| "?".into())
                        ),
                    ));
                    // Skip a value, if any, so the next key is still read.
                    if meta.input.peek(syn::Token![=]) {
                        let _ = meta.value()?.parse::<Expr>()?;
                    }
                }
            }
            Ok(())
        });
        if let Err(e) = result {
            errors.push(e);
        }
    }
    options
}

fn integer(expr: &Expr, key: &str, errors: &mut Errors) -> Option<u64> {
    match expr {
        Expr::Lit(ExprLit { lit: Lit::Int(int), .. }) => parse_int(int, key, errors),
        other => {
            errors.spanned(other, format!("`{key}` must be an integer literal, such as `{key} = 65_536`"));
            None
        }
    }
}

fn parse_int(int: &LitInt, key: &str, errors: &mut Errors) -> Option<u64> {
    match int.base10_parse::<u64>() {
        Ok(v) => Some(v),
        Err(_) => {
            errors.spanned(int, format!("`{key}` must be a non-negative integer that fits in u64"));
            None
        }
    }
}

fn string(expr: &Expr, key: &str, errors: &mut Errors) -> Option<LitStr> {
    match expr {
        Expr::Lit(ExprLit { lit: Lit::Str(s), .. }) => Some(s.clone()),
        other => {
            errors.spanned(other, format!("`{key}` must be a string literal, such as `{key} = \"...\"`"));
            None
        }
    }
}
