//! The names of a registered method, as `'static` strings so metrics labels can borrow them:
//! each distinct path is interned once, at registration (start-up), never per call.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

/// `/package.Service/Method` and its two parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MethodName {
    /// The path, e.g. `/sdsim.auth.v1.AuthService/ValidateToken`.
    pub path: &'static str,
    /// The full service name, e.g. `sdsim.auth.v1.AuthService`.
    pub service: &'static str,
    /// The method name, e.g. `ValidateToken`.
    pub method: &'static str,
}

impl MethodName {
    /// The names of `path`, the same `'static` strings for every registration of it (each
    /// shard registers its own methods).
    pub fn intern(path: &str) -> MethodName {
        static NAMES: OnceLock<Mutex<HashMap<String, MethodName>>> = OnceLock::new();
        let mut names = NAMES
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(name) = names.get(path) {
            return *name;
        }
        let leaked: &'static str = Box::leak(path.to_owned().into_boxed_str());
        let (service, method) = leaked
            .trim_start_matches('/')
            .rsplit_once('/')
            .unwrap_or(("", leaked));
        let name = MethodName {
            path: leaked,
            service,
            method,
        };
        names.insert(path.to_owned(), name);
        name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_split_and_intern_once() {
        let a = MethodName::intern("/sdsim.auth.v1.AuthService/ValidateToken");
        assert_eq!(a.service, "sdsim.auth.v1.AuthService");
        assert_eq!(a.method, "ValidateToken");
        let b = MethodName::intern("/sdsim.auth.v1.AuthService/ValidateToken");
        assert!(std::ptr::eq(a.path, b.path), "one leaked copy per path");
        let odd = MethodName::intern("NoSlash");
        assert_eq!((odd.service, odd.method), ("", "NoSlash"));
    }
}
