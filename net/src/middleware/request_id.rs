//! The request-id layer: a sane incoming `x-request-id` (HTTP header or gRPC metadata) is kept,
//! otherwise one is generated; the id is echoed in the response and appears in the access log.

use super::layer::{Check, Exchange, Layer};
use http::header::HeaderValue;
use http::{HeaderMap, HeaderName};
use std::cell::Cell;

/// The header (and gRPC metadata key) that carries the id.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Longest incoming id kept.
const MAX_LEN: usize = 128;

/// Ids for one shard: a per-shard random-ish seed plus a counter, so ids from different shards
/// and restarts do not collide in logs.
pub struct RequestIds {
    seed: u64,
    counter: Cell<u64>,
}

impl RequestIds {
    /// The generator of shard `shard_index`.
    pub fn new(shard_index: usize) -> RequestIds {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        RequestIds {
            seed: nanos.rotate_left(17) ^ ((shard_index as u64) << 56),
            counter: Cell::new(0),
        }
    }

    /// The id of a request with `metadata`.
    pub fn id_for(&self, metadata: &HeaderMap) -> String {
        if let Some(incoming) = metadata.get(X_REQUEST_ID) {
            let bytes = incoming.as_bytes();
            if is_sane(bytes) {
                return String::from_utf8_lossy(bytes).into_owned();
            }
        }
        let n = self.counter.get().wrapping_add(1);
        self.counter.set(n);
        format!("{:016x}", self.seed.wrapping_add(n))
    }
}

/// Whether an incoming id is kept (echoed, logged) as it is.
pub fn is_sane(id: &[u8]) -> bool {
    !id.is_empty()
        && id.len() <= MAX_LEN
        && id
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(b))
}

impl Layer for RequestIds {
    fn request<'a>(&'a self, ex: &'a mut Exchange, metadata: &'a HeaderMap) -> Check<'a> {
        ex.request_id = self.id_for(metadata);
        Check::Pass
    }

    fn respond(&self, ex: &Exchange, metadata: &mut HeaderMap) {
        if let Ok(v) = HeaderValue::from_str(&ex.request_id) {
            metadata.insert(X_REQUEST_ID, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sane_ids_are_kept_and_others_replaced() {
        let ids = RequestIds::new(3);
        let mut m = HeaderMap::new();
        m.insert(X_REQUEST_ID, HeaderValue::from_static("abc-123_x.y:z"));
        assert_eq!(ids.id_for(&m), "abc-123_x.y:z");
        for bad in ["", "has space", "semi;colon"] {
            m.insert(X_REQUEST_ID, HeaderValue::from_str(bad).unwrap());
            let id = ids.id_for(&m);
            assert_eq!(id.len(), 16, "{bad:?} -> {id}");
        }
        m.insert(
            X_REQUEST_ID,
            HeaderValue::from_str(&"a".repeat(MAX_LEN + 1)).unwrap(),
        );
        assert_eq!(ids.id_for(&m).len(), 16);
        let (a, b) = (ids.id_for(&HeaderMap::new()), ids.id_for(&HeaderMap::new()));
        assert_ne!(a, b, "generated ids differ");
    }
}
