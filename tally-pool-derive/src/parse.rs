//! Reading `#[pooled(...)]`.

use proc_macro2::Span;
use quote::ToTokens as _;
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

    /// An error spanned at `tokens`, the offending part of the input.
    pub(crate) fn spanned(
        &mut self,
        tokens: impl quote::ToTokens,
        message: impl std::fmt::Display,
    ) {
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

/// A value with the span of the key it came from.
pub(crate) struct Spanned<T> {
    pub(crate) value: T,
    pub(crate) span: Span,
}

/// What `#[pooled(...)]` said.
#[derive(Default)]
pub(crate) struct Options {
    pub(crate) capacity: Option<Spanned<u64>>,
    pub(crate) max_capacity: Option<Spanned<u64>>,
    /// `track_sites = N`: remember the call site of one acquire in N.
    pub(crate) track_sites: Option<Spanned<u64>>,
    /// `reserve = N`: values memory pressure never takes back.
    pub(crate) reserve: Option<Spanned<u64>>,
    pub(crate) name: Option<LitStr>,
    pub(crate) guard: Option<LitStr>,
    /// `on_critical = "grow" | "refuse"`.
    pub(crate) on_critical: Option<LitStr>,
    /// The span of the `recycle` key.
    pub(crate) recycle: Option<Span>,
    /// `per_node = true | false`.
    pub(crate) per_node: Option<bool>,
    /// `huge_pages = true | false`.
    pub(crate) huge_pages: Option<bool>,
    /// `lock = true | false`.
    pub(crate) lock: Option<bool>,
    pub(crate) krate: Option<Path>,
}

const KEYS: &str = "`capacity`, `max_capacity`, `name`, `guard`, `recycle`, `per_node`, \
                    `track_sites`, `reserve`, `on_critical`, `huge_pages`, `lock`, `crate`";

/// Reads every `#[pooled(...)]` attribute of the type.
///
/// A bad value is reported and parsing goes on with the next key; only broken syntax
/// (such as a missing `=`) abandons the rest of its attribute.
pub(crate) fn options(attrs: &[Attribute], errors: &mut Errors) -> Options {
    let mut options = Options::default();
    for attr in attrs.iter().filter(|a| a.path().is_ident("pooled")) {
        let result = attr.parse_nested_meta(|meta| {
            let Some(key) = meta.path.get_ident().map(ToString::to_string) else {
                let path = meta.path.to_token_stream().to_string().replace(' ', "");
                errors.spanned(&meta.path, format!("unknown key `{path}` in #[pooled(...)]; expected one of {KEYS}"));
                return skip_value(&meta);
            };
            let span = meta.path.span();
            let duplicate = |errors: &mut Errors| {
                errors.push(syn::Error::new(span, format!("duplicate `{key}` in #[pooled(...)]")));
            };
            match key.as_str() {
                "capacity" | "max_capacity" | "track_sites" | "reserve" => {
                    let value = integer(&meta.value()?.parse::<Expr>()?, &key, errors);
                    let slot = match key.as_str() {
                        "capacity" => &mut options.capacity,
                        "max_capacity" => &mut options.max_capacity,
                        "reserve" => &mut options.reserve,
                        _ => &mut options.track_sites,
                    };
                    if slot.is_some() {
                        duplicate(errors);
                    } else if let Some(value) = value {
                        *slot = Some(Spanned { value, span });
                    }
                }
                "name" | "guard" | "on_critical" => {
                    let value = string(&meta.value()?.parse::<Expr>()?, &key, errors);
                    let slot = match key.as_str() {
                        "name" => &mut options.name,
                        "guard" => &mut options.guard,
                        _ => &mut options.on_critical,
                    };
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
                            Err(_) => errors.spanned(
                                &lit,
                                format!(
                                    "`crate` must be the path of the tally_pool crate, such as \"tally_pool\" or \"::my_pool\"; `{}` is not a path",
                                    lit.value()
                                ),
                            ),
                        }
                    }
                }
                "per_node" | "huge_pages" | "lock" => {
                    let value = match meta.value()?.parse::<Expr>()? {
                        Expr::Lit(ExprLit { lit: Lit::Bool(b), .. }) => Some(b.value),
                        other => {
                            errors.spanned(other, format!("`{key}` must be `true` or `false`"));
                            None
                        }
                    };
                    let slot = match key.as_str() {
                        "per_node" => &mut options.per_node,
                        "huge_pages" => &mut options.huge_pages,
                        _ => &mut options.lock,
                    };
                    if slot.is_some() {
                        duplicate(errors);
                    } else {
                        *slot = value;
                    }
                }
                "recycle" => {
                    if options.recycle.is_some() {
                        duplicate(errors);
                    } else {
                        options.recycle = Some(span);
                    }
                    if !meta.input.is_empty() && !meta.input.peek(syn::Token![,]) {
                        errors.spanned(&meta.path, "`recycle` takes no value: write `#[pooled(recycle)]`");
                        return skip_value(&meta);
                    }
                }
                _ => {
                    errors.spanned(&meta.path, format!("unknown key `{key}` in #[pooled(...)]; expected one of {KEYS}"));
                    return skip_value(&meta);
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

/// Skips the `= value` or `(...)` after a key that was refused, so the next key is read.
fn skip_value(meta: &syn::meta::ParseNestedMeta<'_>) -> syn::Result<()> {
    if meta.input.peek(syn::Token![=]) {
        meta.value()?.parse::<Expr>()?;
    } else if meta.input.peek(syn::token::Paren) {
        let _content;
        syn::parenthesized!(_content in meta.input);
    }
    Ok(())
}

fn integer(expr: &Expr, key: &str, errors: &mut Errors) -> Option<u64> {
    match expr {
        Expr::Lit(ExprLit {
            lit: Lit::Int(int), ..
        }) => parse_int(int, key, errors),
        Expr::Lit(ExprLit {
            lit: Lit::Str(s), ..
        }) if s.value().trim().parse::<u64>().is_ok() => {
            let n = s.value();
            errors.spanned(
                s,
                format!(
                    "`{key}` must be an integer literal, not a string: write `{key} = {}`",
                    n.trim()
                ),
            );
            None
        }
        Expr::Unary(syn::ExprUnary {
            op: syn::UnOp::Neg(_),
            ..
        }) => {
            errors.spanned(
                expr,
                format!("`{key}` counts values: it cannot be negative"),
            );
            None
        }
        other => {
            errors.spanned(
                other,
                format!("`{key}` must be an integer literal, such as `{key} = 65_536`"),
            );
            None
        }
    }
}

fn parse_int(int: &LitInt, key: &str, errors: &mut Errors) -> Option<u64> {
    match int.base10_parse::<u64>() {
        Ok(v) => Some(v),
        Err(_) => {
            errors.spanned(
                int,
                format!("`{key}` must be a non-negative integer that fits in u64"),
            );
            None
        }
    }
}

fn string(expr: &Expr, key: &str, errors: &mut Errors) -> Option<LitStr> {
    match expr {
        Expr::Lit(ExprLit {
            lit: Lit::Str(s), ..
        }) => Some(s.clone()),
        other => {
            errors.spanned(
                other,
                format!("`{key}` must be a string literal, such as `{key} = \"...\"`"),
            );
            None
        }
    }
}
