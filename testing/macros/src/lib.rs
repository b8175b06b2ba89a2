//! `#[backends(...)]`: one test per backend from one test function (re-exported as
//! `sdsim_testing::backends`; see `sdsim_testing::Backend` for the backends and what they set).
//!
//! Written on `proc_macro` alone: the attribute only needs the function's name, and a parser
//! crate would be the largest dependency of the test harness.

use proc_macro::{Ident, Span, TokenStream, TokenTree};

/// Runs the function below once per listed backend, each run its own `#[test]`:
///
/// ```ignore
/// #[sdsim_testing::backends(epoll, io_uring)]
/// fn subscribers_receive_every_event() { /* starts servers as usual */ }
/// ```
///
/// keeps the function and adds `mod subscribers_receive_every_event` with the tests `epoll` and
/// `io_uring`, each calling it inside `sdsim_testing::Backend::epoll().run(..)` (and so on), so
/// that `cargo test subscribers_receive_every_event::epoll` runs one and a failure names its
/// backend. The names are `sdsim_testing::Backend`'s constructors.
#[proc_macro_attribute]
pub fn backends(attribute: TokenStream, item: TokenStream) -> TokenStream {
    let backends: Vec<Ident> = attribute
        .into_iter()
        .filter_map(|token| match token {
            TokenTree::Ident(ident) => Some(ident),
            _ => None,
        })
        .collect();
    if backends.is_empty() {
        return error(
            "#[backends(...)] needs at least one backend, e.g. #[backends(epoll, io_uring)]",
        );
    }
    let mut tokens = item.clone().into_iter();
    let name = loop {
        match tokens.next() {
            Some(TokenTree::Ident(ident)) if ident.to_string() == "fn" => match tokens.next() {
                Some(TokenTree::Ident(name)) => break name,
                _ => return error("#[backends(...)] goes on a function with a name"),
            },
            Some(_) => {}
            None => return error("#[backends(...)] goes on a function"),
        }
    };
    let mut tests = String::new();
    for backend in &backends {
        tests.push_str(&format!(
            "#[test] fn {backend}() {{ ::sdsim_testing::Backend::{backend}().run(super::{name}) }}\n"
        ));
    }
    let module: TokenStream = format!("mod {name} {{ {tests} }}")
        .parse()
        .expect("the generated module parses");
    let mut out = item;
    out.extend(module);
    out
}

/// A `compile_error!` at the attribute.
fn error(message: &str) -> TokenStream {
    let call: TokenStream = format!("compile_error!({message:?});")
        .parse()
        .expect("compile_error! parses");
    call.into_iter()
        .map(|mut token| {
            token.set_span(Span::call_site());
            token
        })
        .collect()
}
