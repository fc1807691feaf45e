//! `#[anebert::model]`: a thin attribute macro over anebert-build's code generator
//! ([`anebert_build::wrapper::expand`]). It parses the arguments, reports their errors with spans,
//! and parses the generated wrapper; finding, converting and generating live in anebert-build.

use proc_macro::TokenStream;
use proc_macro2::Span;
use quote::ToTokens;
use std::collections::BTreeMap;
use std::path::PathBuf;
use syn::parse::Parser;
use syn::punctuated::Punctuated;
use syn::spanned::Spanned;
use syn::{Expr, ExprLit, Lit, MetaNameValue, Token};

const ARGS: &[&str] = &["head", "seq", "name", "model", "weights", "rotate", "heads"];

/// Embed a converted encoder in a unit struct and generate its typed API.
///
/// ```text
/// #[anebert::model(head = "mlm", seq = 512)]   // a model build.rs converted
/// pub struct FillMask;
///
/// #[anebert::model(head = "embedding", seq = 128, model = "sentence-transformers/all-MiniLM-L6-v2")]
/// pub struct Embedder;                          // converted by the attribute itself
/// ```
///
/// Several heads and lengths make one struct over one multifunction package (every weight
/// embedded once): `#[anebert::model(heads = ["mlm", "embedding"], seq = [128, 512])]` generates
/// `HEADS`, `SEQ_LENS`, a `Model` per head (each running the shortest length that holds a text),
/// every head's text helpers, `predict_{head}::<S>(&{Name}Input<S>)` and `{Name}Input<S>`
/// constructors for exactly the package's lengths.
///
/// Arguments: `head` (or `heads`, a list) and `seq` (a length or a list) (required); `name` (a model declared in build.rs or
/// `[package.metadata.anebert]`); `model` (a HuggingFace repo id with optional `@revision`, or a
/// checkpoint directory relative to the crate); with `model`, also `weights = "fp16" | "fp32"` and
/// `rotate = bool`.
///
/// Generates associated consts (`SEQ_LEN`, `HIDDEN_SIZE`, `VOCAB_SIZE`, `NUM_LABELS`, `LABELS`),
/// `load()` / `load_with(&Options)`, `predict(&{Name}Input) -> {Name}Output`, and the head's text
/// helper: `fill_mask`, `classify`, `tag`, `embed` / `embed_batch` or `hidden`.
#[proc_macro_attribute]
pub fn model(attr: TokenStream, item: TokenStream) -> TokenStream {
    match expand(attr.into(), item.into()) {
        Ok(t) => t.into(),
        Err(e) => e.to_compile_error().into(),
    }
}

fn combine(acc: &mut Option<syn::Error>, e: syn::Error) {
    match acc {
        Some(a) => a.combine(e),
        None => *acc = Some(e),
    }
}

fn expand(
    attr: proc_macro2::TokenStream,
    item: proc_macro2::TokenStream,
) -> syn::Result<proc_macro2::TokenStream> {
    let attr_span = if attr.is_empty() {
        Span::call_site()
    } else {
        attr.span()
    };
    let strukt: syn::ItemStruct = syn::parse2(item.clone()).map_err(|_| {
        syn::Error::new(
            Span::call_site(),
            "#[anebert::model] goes on a unit struct: `pub struct FillMask;`",
        )
    })?;
    let mut errors: Option<syn::Error> = None;
    if !matches!(strukt.fields, syn::Fields::Unit) {
        combine(
            &mut errors,
            syn::Error::new(
                strukt.fields.span(),
                "#[anebert::model] generates the struct's fields; declare a unit struct: `pub struct FillMask;`",
            ),
        );
    }
    if !strukt.generics.params.is_empty() {
        combine(
            &mut errors,
            syn::Error::new(
                strukt.generics.span(),
                "#[anebert::model] structs cannot be generic",
            ),
        );
    }

    let args = Punctuated::<MetaNameValue, Token![,]>::parse_terminated.parse2(attr)?;
    let mut spans: BTreeMap<&'static str, Span> = BTreeMap::new();
    let mut req = anebert_build::wrapper::Request::default();
    for a in &args {
        let key = a.path.to_token_stream().to_string();
        let Some(&k) = ARGS.iter().find(|k| **k == key) else {
            combine(
                &mut errors,
                syn::Error::new(
                    a.path.span(),
                    format!(
                        "unknown argument `{key}`; expected one of: {}",
                        ARGS.join(", ")
                    ),
                ),
            );
            continue;
        };
        if spans.insert(k, a.span()).is_some() {
            combine(
                &mut errors,
                syn::Error::new(a.path.span(), format!("`{k}` is given twice")),
            );
            continue;
        }
        let r: Result<(), syn::Error> = (|| {
            match k {
                "head" | "heads" => {
                    if spans.contains_key("head") && spans.contains_key("heads") {
                        return Err(syn::Error::new(
                            a.path.span(),
                            "give `head` or `heads`, not both",
                        ));
                    }
                    for (v, span) in list_arg(&a.value) {
                        let h = str_arg(v, k)?
                            .parse()
                            .map_err(|e: String| syn::Error::new(span, e))?;
                        if req.heads.contains(&h) {
                            return Err(syn::Error::new(span, "this head is listed twice"));
                        }
                        req.heads.push(h);
                    }
                }
                "seq" => {
                    for (v, span) in list_arg(&a.value) {
                        let n = int_arg(v, k)?;
                        if n == 0 || n > 16384 {
                            return Err(syn::Error::new(
                                span,
                                "`seq` must be in 1 ..= 16384 (the ANE's width limit)",
                            ));
                        }
                        if req.seqs.contains(&n) {
                            return Err(syn::Error::new(span, "this length is listed twice"));
                        }
                        req.seqs.push(n);
                    }
                }
                "name" => req.name = Some(str_arg(&a.value, k)?),
                "model" => req.model = Some(str_arg(&a.value, k)?),
                "weights" => {
                    req.weights = Some(
                        str_arg(&a.value, k)?
                            .parse()
                            .map_err(|e: String| syn::Error::new(a.value.span(), e))?,
                    )
                }
                "rotate" => req.rotate = Some(bool_arg(&a.value, k)?),
                _ => unreachable!("listed in ARGS"),
            }
            Ok(())
        })();
        if let Err(e) = r {
            combine(&mut errors, e);
        }
    }
    if let (Some(_), Some(s)) = (&req.name, spans.get("model")) {
        combine(
            &mut errors,
            syn::Error::new(
                *s,
                "give either `name` (a model declared in build.rs) or `model` (converted here), not both",
            ),
        );
    }
    if let Some(e) = errors {
        return Err(e);
    }

    let vis = strukt.vis.to_token_stream().to_string();
    let ident = strukt.ident.to_string();
    let env_dir = |v: &str| std::env::var_os(v).map(PathBuf::from);
    let code = anebert_build::wrapper::expand(
        &req,
        &vis,
        &ident,
        env_dir("OUT_DIR").as_deref(),
        env_dir("CARGO_MANIFEST_DIR").as_deref(),
    )
    .map_err(|e| {
        let span = e
            .arg
            .and_then(|a| spans.get(a).copied())
            .unwrap_or(attr_span);
        syn::Error::new(span, e.message)
    })?;
    let generated: proc_macro2::TokenStream = code.parse().map_err(|e| {
        syn::Error::new(
            Span::call_site(),
            format!("anebert generated invalid code (a bug, please report it): {e}"),
        )
    })?;
    let attrs = strukt.attrs.iter();
    Ok(quote::quote! {
        #(#attrs)*
        #generated
    })
}

/// The elements of `[a, b, ...]`, or `e` itself, with their spans.
fn list_arg(e: &Expr) -> Vec<(&Expr, Span)> {
    match e {
        Expr::Array(a) => a.elems.iter().map(|v| (v, v.span())).collect(),
        _ => vec![(e, e.span())],
    }
}

fn lit_of(e: &Expr) -> Option<&Lit> {
    match e {
        Expr::Lit(ExprLit { lit, .. }) => Some(lit),
        _ => None,
    }
}

fn str_arg(e: &Expr, k: &str) -> syn::Result<String> {
    match lit_of(e) {
        Some(Lit::Str(s)) => Ok(s.value()),
        _ => Err(syn::Error::new(
            e.span(),
            format!("`{k}` takes a string: {k} = \"...\""),
        )),
    }
}

fn int_arg(e: &Expr, k: &str) -> syn::Result<usize> {
    match lit_of(e) {
        Some(Lit::Int(i)) => i.base10_parse(),
        _ => Err(syn::Error::new(
            e.span(),
            format!("`{k}` takes an integer: {k} = 512"),
        )),
    }
}

fn bool_arg(e: &Expr, k: &str) -> syn::Result<bool> {
    match lit_of(e) {
        Some(Lit::Bool(b)) => Ok(b.value),
        _ => Err(syn::Error::new(
            e.span(),
            format!("`{k}` takes true or false"),
        )),
    }
}

/// The argument rules, checked on token streams without compiling anything (the trybuild
/// snapshots in tests/ui show the same errors as a user sees them, with rustc's rendering).
#[cfg(test)]
mod tests {
    use super::expand;
    use quote::quote;

    /// Every error message `expand` gives for these arguments and item.
    fn errors(attr: proc_macro2::TokenStream, item: proc_macro2::TokenStream) -> Vec<String> {
        match expand(attr, item) {
            Ok(_) => vec![],
            Err(e) => e.into_iter().map(|e| e.to_string()).collect(),
        }
    }

    #[test]
    fn unknown_and_duplicate_arguments_are_all_reported() {
        let e = errors(
            quote!(head = "mlm", seq = 64, sequence = 1, head = "mlm"),
            quote!(
                pub struct M;
            ),
        );
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(e[0].contains("unknown argument `sequence`; expected one of: head, seq"));
        assert_eq!(e[1], "`head` is given twice");
    }

    #[test]
    fn values_are_checked_with_their_own_messages() {
        let e = errors(
            quote!(head = "mask", seq = 0, rotate = "yes"),
            quote!(
                pub struct M;
            ),
        );
        assert_eq!(e.len(), 3, "{e:?}");
        assert!(e[0].starts_with("unknown head \"mask\"; expected one of mlm"));
        assert_eq!(e[1], "`seq` must be in 1 ..= 16384 (the ANE's width limit)");
        assert_eq!(e[2], "`rotate` takes true or false");
        let e = errors(
            quote!(head = "mlm", seq = "512"),
            quote!(
                pub struct M;
            ),
        );
        assert_eq!(e, ["`seq` takes an integer: seq = 512"]);
        let e = errors(
            quote!(head = "mlm", seq = 16385),
            quote!(
                pub struct M;
            ),
        );
        assert_eq!(e.len(), 1);
        let e = errors(
            quote!(head = mlm, seq = 64),
            quote!(
                pub struct M;
            ),
        );
        assert_eq!(e, ["`head` takes a string: head = \"...\""]);
    }

    #[test]
    fn the_item_must_be_a_plain_unit_struct() {
        let args = || quote!(head = "mlm", seq = 64);
        let e = errors(
            args(),
            quote!(
                pub struct M {
                    x: u32,
                }
            ),
        );
        assert!(e[0].contains("declare a unit struct"), "{e:?}");
        let e = errors(
            args(),
            quote!(
                pub struct M<T>;
            ),
        );
        assert!(e.iter().any(|m| m.contains("cannot be generic")), "{e:?}");
        let e = errors(
            args(),
            quote!(
                pub fn m() {}
            ),
        );
        assert_eq!(
            e,
            ["#[anebert::model] goes on a unit struct: `pub struct FillMask;`"]
        );
    }

    #[test]
    fn name_and_model_are_exclusive() {
        let e = errors(
            quote!(head = "mlm", seq = 64, name = "a", model = "org/m"),
            quote!(
                pub struct M;
            ),
        );
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].starts_with("give either `name`"), "{e:?}");
    }
}
