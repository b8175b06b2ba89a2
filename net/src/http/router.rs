//! The router: path patterns with parameters (`/api/projects/{id}`, `/static/{*path}`) and a
//! handler per method. Built once per shard (handlers are `Rc`, never shared across threads).
//! A path that matches with another method gives 405 with `Allow`; HEAD falls back to GET.

use super::types::{PathParams, Request, Response};
use futures_util::future::LocalBoxFuture;
use http::Method;
use std::future::Future;
use std::rc::Rc;

/// A request handler.
pub type Handler = Rc<dyn Fn(Request) -> LocalBoxFuture<'static, Response>>;

struct Route {
    pattern: &'static str,
    methods: Vec<(Method, Handler)>,
}

/// Routes for one shard.
#[derive(Default)]
pub struct Router {
    table: matchit::Router<usize>,
    routes: Vec<Route>,
}

/// What the router found for a request.
pub enum Lookup {
    /// A handler, with the pattern it was registered under and the captured parameters.
    Found {
        /// The handler to call.
        handler: Handler,
        /// The route pattern (a metrics label).
        pattern: &'static str,
        /// Captured path parameters.
        params: PathParams,
    },
    /// The path exists, the method does not: 405 with this `Allow` value.
    MethodNotAllowed {
        /// The route pattern.
        pattern: &'static str,
        /// Comma-separated allowed methods.
        allow: String,
    },
    /// No route matches: 404.
    NotFound,
}

/// A route could not be registered (a startup programming error, reported with the pattern).
#[derive(Debug, thiserror::Error)]
#[error("cannot register route {pattern}: {reason}")]
pub struct RouteError {
    /// The pattern.
    pub pattern: String,
    /// Why (conflict with another pattern, bad syntax).
    pub reason: String,
}

impl Router {
    /// An empty router.
    pub fn new() -> Router {
        Router::default()
    }

    /// Registers `handler` for `method` on `pattern`.
    pub fn route<F, Fut>(
        &mut self,
        method: Method,
        pattern: &str,
        handler: F,
    ) -> Result<&mut Self, RouteError>
    where
        F: Fn(Request) -> Fut + 'static,
        Fut: Future<Output = Response> + 'static,
    {
        let handler: Handler = Rc::new(move |req| Box::pin(handler(req)));
        let index = match self.table.at(pattern) {
            // `at` on the pattern text itself finds the route only when it was inserted verbatim.
            Ok(found) if self.routes[*found.value].pattern == pattern => *found.value,
            _ => {
                let index = self.routes.len();
                self.table.insert(pattern, index).map_err(|e| RouteError {
                    pattern: pattern.to_string(),
                    reason: e.to_string(),
                })?;
                // Route patterns are registered once per shard at start-up: leaking them gives
                // `&'static str` metric labels with no allocation per request.
                let pattern: &'static str = Box::leak(pattern.to_string().into_boxed_str());
                self.routes.push(Route {
                    pattern,
                    methods: Vec::new(),
                });
                index
            }
        };
        let route = &mut self.routes[index];
        route.methods.retain(|(m, _)| *m != method);
        route.methods.push((method, handler));
        Ok(self)
    }

    /// Every registered (method, pattern) pair, in registration order: what the router serves,
    /// for checks that compare it with a description of the API.
    pub fn routes(&self) -> impl Iterator<Item = (&Method, &'static str)> + '_ {
        self.routes
            .iter()
            .flat_map(|r| r.methods.iter().map(move |(m, _)| (m, r.pattern)))
    }

    /// Finds the handler for `method` and `path`.
    pub fn lookup(&self, method: &Method, path: &str) -> Lookup {
        let Ok(found) = self.table.at(path) else {
            return Lookup::NotFound;
        };
        let route = &self.routes[*found.value];
        let pick = |m: &Method| {
            route
                .methods
                .iter()
                .find(|(rm, _)| rm == m)
                .map(|(_, h)| h.clone())
        };
        let handler = pick(method).or_else(|| {
            (*method == Method::HEAD)
                .then(|| pick(&Method::GET))
                .flatten()
        });
        match handler {
            Some(handler) => Lookup::Found {
                handler,
                pattern: route.pattern,
                params: PathParams(
                    found
                        .params
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
            },
            None => {
                let mut allow: Vec<&str> = route.methods.iter().map(|(m, _)| m.as_str()).collect();
                if allow.contains(&"GET") && !allow.contains(&"HEAD") {
                    allow.push("HEAD");
                }
                Lookup::MethodNotAllowed {
                    pattern: route.pattern,
                    allow: allow.join(", "),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::types::with_body;
    use bytes::Bytes;
    use http::StatusCode;

    fn ok(text: &'static str) -> impl Fn(Request) -> std::future::Ready<Response> {
        move |_| {
            std::future::ready(with_body(
                StatusCode::OK,
                "text/plain",
                Bytes::from_static(text.as_bytes()),
            ))
        }
    }

    #[test]
    fn params_methods_and_fallbacks() {
        let mut r = Router::new();
        r.route(Method::GET, "/api/projects/{id}", ok("get"))
            .unwrap();
        r.route(Method::PUT, "/api/projects/{id}", ok("put"))
            .unwrap();
        r.route(Method::GET, "/files/{*path}", ok("file")).unwrap();
        match r.lookup(&Method::GET, "/api/projects/42") {
            Lookup::Found {
                pattern, params, ..
            } => {
                assert_eq!(pattern, "/api/projects/{id}");
                assert_eq!(params.get("id"), Some("42"));
            }
            _ => panic!("expected a match"),
        }
        assert!(matches!(
            r.lookup(&Method::HEAD, "/api/projects/1"),
            Lookup::Found { .. }
        ));
        match r.lookup(&Method::DELETE, "/api/projects/1") {
            Lookup::MethodNotAllowed { allow, .. } => assert_eq!(allow, "GET, PUT, HEAD"),
            _ => panic!("expected 405"),
        }
        assert!(matches!(r.lookup(&Method::GET, "/nope"), Lookup::NotFound));
        let listed: Vec<(String, &str)> = r.routes().map(|(m, p)| (m.to_string(), p)).collect();
        assert_eq!(
            listed,
            [
                ("GET".to_string(), "/api/projects/{id}"),
                ("PUT".to_string(), "/api/projects/{id}"),
                ("GET".to_string(), "/files/{*path}"),
            ]
        );
        match r.lookup(&Method::GET, "/files/a/b.txt") {
            Lookup::Found { params, .. } => assert_eq!(params.get("path"), Some("a/b.txt")),
            _ => panic!("expected a match"),
        }
    }

    #[test]
    fn conflicting_patterns_are_reported() {
        let mut r = Router::new();
        r.route(Method::GET, "/a/{x}", ok("1")).unwrap();
        let err = r
            .route(Method::GET, "/a/{y}", ok("2"))
            .err()
            .expect("conflict");
        assert_eq!(err.pattern, "/a/{y}");
    }
}
