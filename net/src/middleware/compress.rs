//! Response compression: gzip, or brotli when the client prefers it, for bodies over
//! `compression.min_bytes` (1 KiB) of compressible types. Never for images, audio, video,
//! archives, fonts already compressed, or bodies that already have a `Content-Encoding`.
//! Bodies over `compression.offload_bytes` (32 KiB) are compressed on the blocking pool, so a
//! large response does not hold the shard ([`compress_response_off_shard`]).

use bytes::Bytes;
use http::header::{
    HeaderValue, CACHE_CONTROL, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, VARY,
};
use sdsim_core::blocking::BlockingPool;
use sdsim_core::config::CompressionConfig;
use std::io::Write;

/// A content coding sdsim produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// `gzip`
    Gzip,
    /// `br`
    Brotli,
}

impl Encoding {
    /// The token for `Content-Encoding`.
    pub fn token(self) -> &'static str {
        match self {
            Encoding::Gzip => "gzip",
            Encoding::Brotli => "br",
        }
    }
}

/// Picks the coding from an `Accept-Encoding` value (q-values, `*`, `q=0` refusals); brotli wins
/// ties when enabled. `None` means identity.
pub fn negotiate(accept_encoding: &str, brotli_enabled: bool) -> Option<Encoding> {
    let mut gzip: Option<f32> = None;
    let mut br: Option<f32> = None;
    let mut star: Option<f32> = None;
    for item in accept_encoding.split(',') {
        let mut parts = item.split(';');
        let coding = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let mut q = 1.0f32;
        for param in parts {
            if let Some((k, v)) = param.split_once('=') {
                if k.trim().eq_ignore_ascii_case("q") {
                    q = v
                        .trim()
                        .parse::<f32>()
                        .ok()
                        .filter(|q| (0.0..=1.0).contains(q))
                        .unwrap_or(0.0);
                }
            }
        }
        match coding.as_str() {
            "gzip" | "x-gzip" => gzip = Some(q),
            "br" => br = Some(q),
            "*" => star = Some(q),
            _ => {}
        }
    }
    let gzip_q = gzip.or(star).unwrap_or(0.0);
    let br_q = if brotli_enabled {
        br.or(star).unwrap_or(0.0)
    } else {
        0.0
    };
    if br_q > 0.0 && br_q >= gzip_q {
        Some(Encoding::Brotli)
    } else if gzip_q > 0.0 {
        Some(Encoding::Gzip)
    } else {
        None
    }
}

/// Whether a body of this content type gains from compression.
pub fn is_compressible(content_type: Option<&str>) -> bool {
    let Some(ct) = content_type else { return false };
    let ct = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if ct.starts_with("text/") {
        return true;
    }
    matches!(
        ct.as_str(),
        "application/json"
            | "application/javascript"
            | "application/xml"
            | "application/xhtml+xml"
            | "application/rss+xml"
            | "application/atom+xml"
            | "application/wasm"
            | "application/x-ndjson"
            | "application/problem+json"
            | "application/openmetrics-text"
            | "image/svg+xml"
    ) || ct.ends_with("+json")
        || ct.ends_with("+xml")
}

/// Compresses `resp` in place when it should be, on the calling thread; returns the coding used.
pub fn compress_response(
    resp: &mut http::Response<Bytes>,
    accept_encoding: Option<&HeaderValue>,
    cfg: &CompressionConfig,
) -> Option<Encoding> {
    let encoding = choose(resp, accept_encoding, cfg)?;
    let compressed = encode(resp.body(), encoding, cfg.gzip_level, cfg.brotli_quality)?;
    apply(resp, encoding, compressed);
    Some(encoding)
}

/// Like [`compress_response`], but a body over `compression.offload_bytes` is compressed on
/// `pool`, off the shard, while the shard serves its other connections (compressing 25 MiB takes
/// far longer than a slice). When the pool refuses the job (its queue is full) the body goes
/// uncompressed, which every client accepts, and [`Compressed::Refused`] says so.
pub async fn compress_response_off_shard(
    resp: &mut http::Response<Bytes>,
    accept_encoding: Option<&HeaderValue>,
    cfg: &CompressionConfig,
    pool: Option<&BlockingPool>,
) -> Compressed {
    let Some(encoding) = choose(resp, accept_encoding, cfg) else {
        return Compressed::No;
    };
    let (level, quality) = (cfg.gzip_level, cfg.brotli_quality);
    let compressed = match pool {
        Some(pool) if resp.body().len() > cfg.offload_bytes => {
            let body = resp.body().clone();
            match pool
                .run(move || encode(&body, encoding, level, quality))
                .await
            {
                Ok(compressed) => compressed,
                Err(_) => return Compressed::Refused,
            }
        }
        _ => encode(resp.body(), encoding, level, quality),
    };
    match compressed {
        Some(compressed) => {
            apply(resp, encoding, compressed);
            Compressed::With(encoding)
        }
        None => Compressed::No,
    }
}

/// What [`compress_response_off_shard`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compressed {
    /// The body is sent as it was (not compressible, too small, not accepted, or not smaller).
    No,
    /// The body was compressed with this coding.
    With(Encoding),
    /// It should have been compressed, but the blocking pool's queue was full.
    Refused,
}

/// Decides whether `resp` gets compressed and with what (adding `Vary: Accept-Encoding` once
/// the answer depends on it); no byte is compressed here.
fn choose(
    resp: &mut http::Response<Bytes>,
    accept_encoding: Option<&HeaderValue>,
    cfg: &CompressionConfig,
) -> Option<Encoding> {
    if !cfg.enabled || resp.body().len() <= cfg.min_bytes {
        return None;
    }
    let status = resp.status();
    if status.is_informational()
        || status == http::StatusCode::NO_CONTENT
        || status == http::StatusCode::NOT_MODIFIED
    {
        return None;
    }
    let headers = resp.headers();
    if headers.contains_key(CONTENT_ENCODING) {
        return None;
    }
    let no_transform = headers.get_all(CACHE_CONTROL).iter().any(|v| {
        v.to_str()
            .is_ok_and(|s| s.to_ascii_lowercase().contains("no-transform"))
    });
    if no_transform || !is_compressible(headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok())) {
        return None;
    }
    // The response depends on Accept-Encoding from here on, compressed or not.
    add_vary(resp);
    negotiate(accept_encoding?.to_str().ok()?, cfg.brotli)
}

/// `body` compressed with `encoding`, or `None` when that fails or does not make it smaller.
/// Pure, so it runs on any thread.
fn encode(
    body: &[u8],
    encoding: Encoding,
    gzip_level: u32,
    brotli_quality: u32,
) -> Option<Vec<u8>> {
    let compressed = match encoding {
        Encoding::Gzip => {
            let mut enc = flate2::write::GzEncoder::new(
                Vec::with_capacity(body.len() / 3),
                flate2::Compression::new(gzip_level),
            );
            enc.write_all(body).ok()?;
            enc.finish().ok()?
        }
        Encoding::Brotli => {
            let mut out = Vec::with_capacity(body.len() / 3);
            {
                let mut w = brotli::CompressorWriter::new(&mut out, 4096, brotli_quality, 22);
                w.write_all(body).ok()?;
            }
            out
        }
    };
    (compressed.len() < body.len()).then_some(compressed)
}

fn apply(resp: &mut http::Response<Bytes>, encoding: Encoding, compressed: Vec<u8>) {
    *resp.body_mut() = Bytes::from(compressed);
    let headers = resp.headers_mut();
    headers.remove(CONTENT_LENGTH);
    headers.insert(CONTENT_ENCODING, HeaderValue::from_static(encoding.token()));
}

fn add_vary(resp: &mut http::Response<Bytes>) {
    let present = resp.headers().get_all(VARY).iter().any(|v| {
        v.to_str().is_ok_and(|s| {
            s.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("accept-encoding") || t.trim() == "*")
        })
    });
    if !present {
        resp.headers_mut()
            .append(VARY, HeaderValue::from_static("accept-encoding"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn negotiation_table() {
        let rows: [(&str, Option<Encoding>); 16] = [
            ("gzip", Some(Encoding::Gzip)),
            ("GZIP", Some(Encoding::Gzip)),
            ("x-gzip", Some(Encoding::Gzip)),
            ("br", Some(Encoding::Brotli)),
            ("gzip, br", Some(Encoding::Brotli)),
            ("gzip;q=1.0, br;q=0.5", Some(Encoding::Gzip)),
            ("gzip;q=0, br;q=0", None),
            ("*", Some(Encoding::Brotli)),
            ("*;q=0", None),
            ("*;q=0.5, br;q=0", Some(Encoding::Gzip)),
            ("identity", None),
            ("identity;q=0", None),
            ("deflate", None),
            ("", None),
            (" gzip ; q=0.8 ,  br ; q=0.9 ", Some(Encoding::Brotli)),
            ("gzip;q=garbage", None),
        ];
        for (header, want) in rows {
            assert_eq!(negotiate(header, true), want, "{header:?}");
        }
        assert_eq!(negotiate("gzip, br", false), Some(Encoding::Gzip));
        assert_eq!(negotiate("br", false), None);
    }

    fn response(ct: &str, body: Vec<u8>) -> http::Response<Bytes> {
        let mut r = http::Response::new(Bytes::from(body));
        r.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_str(ct).unwrap());
        r
    }

    #[test]
    fn round_trips_and_skips() {
        let cfg = CompressionConfig::default();
        let text = "{\"k\":\"value\"},".repeat(200).into_bytes();
        let mut r = response("application/json", text.clone());
        assert_eq!(
            compress_response(&mut r, Some(&HeaderValue::from_static("gzip")), &cfg),
            Some(Encoding::Gzip)
        );
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&r.body()[..])
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, text);
        assert_eq!(r.headers()[VARY], "accept-encoding");

        let mut r = response("text/html; charset=utf-8", text.clone());
        assert_eq!(
            compress_response(&mut r, Some(&HeaderValue::from_static("br")), &cfg),
            Some(Encoding::Brotli)
        );
        let mut out = Vec::new();
        brotli::Decompressor::new(&r.body()[..], 4096)
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, text);

        let skip = |ct: &str, body: Vec<u8>| {
            let mut r = response(ct, body);
            compress_response(&mut r, Some(&HeaderValue::from_static("gzip")), &cfg)
        };
        assert_eq!(
            skip("application/json", vec![b'a'; 1024]),
            None,
            "1 KiB or less"
        );
        assert_eq!(skip("image/png", vec![b'a'; 5000]), None);
        assert_eq!(skip("application/zip", vec![b'a'; 5000]), None);
        assert_eq!(skip("application/octet-stream", vec![b'a'; 5000]), None);
        let mut encoded = response("text/plain", vec![b'a'; 5000]);
        encoded
            .headers_mut()
            .insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        assert_eq!(
            compress_response(&mut encoded, Some(&HeaderValue::from_static("gzip")), &cfg),
            None
        );
        let mut no_transform = response("text/plain", vec![b'a'; 5000]);
        no_transform
            .headers_mut()
            .insert(CACHE_CONTROL, HeaderValue::from_static("no-transform"));
        assert_eq!(
            compress_response(
                &mut no_transform,
                Some(&HeaderValue::from_static("gzip")),
                &cfg
            ),
            None
        );
        // Incompressible bytes stay as they are.
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let noise: Vec<u8> = (0..5000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect();
        assert_eq!(skip("text/plain", noise), None);
    }

    proptest::proptest! {
        #[test]
        fn random_accept_encoding_never_panics(s in "\\PC{0,80}") {
            let _ = negotiate(&s, true);
        }
    }
}
