//! The response encoder: status line, headers, `date`, `content-length`, `connection`, body.

use bytes::{BufMut, Bytes, BytesMut};
use http::header::{CONNECTION, CONTENT_LENGTH, DATE};
use http::{StatusCode, Version};
use std::time::{SystemTime, UNIX_EPOCH};

/// What the encoder must know about the request a response answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseFraming {
    /// The request was HEAD: send the headers GET would, no body.
    pub head: bool,
    /// The connection stays open after this response.
    pub keep_alive: bool,
    /// The request was HTTP/1.0 (keep-alive must then be said explicitly).
    pub http10: bool,
}

impl ResponseFraming {
    /// Framing for an HTTP/1.1 GET-like request.
    pub fn keep_alive() -> ResponseFraming {
        ResponseFraming {
            head: false,
            keep_alive: true,
            http10: false,
        }
    }

    /// Framing for a request of `version`.
    pub fn for_request(version: Version, head: bool, keep_alive: bool) -> ResponseFraming {
        ResponseFraming {
            head,
            keep_alive,
            http10: version == Version::HTTP_10,
        }
    }
}

/// Appends `resp` to `out` as HTTP/1.1 bytes.
pub fn encode_response(
    resp: &http::Response<Bytes>,
    framing: ResponseFraming,
    date: &[u8],
    out: &mut BytesMut,
) {
    let status = resp.status();
    let body = resp.body();
    out.reserve(128 + resp.headers().len() * 48 + if framing.head { 0 } else { body.len() });
    status_line(status, out);
    for (name, value) in resp.headers() {
        if name == CONTENT_LENGTH || name == CONNECTION || name == DATE {
            continue;
        }
        out.put_slice(name.as_str().as_bytes());
        out.put_slice(b": ");
        out.put_slice(value.as_bytes());
        out.put_slice(b"\r\n");
    }
    out.put_slice(b"date: ");
    out.put_slice(date);
    out.put_slice(b"\r\n");
    let bodiless = status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    if !bodiless {
        out.put_slice(b"content-length: ");
        put_decimal(body.len() as u64, out);
        out.put_slice(b"\r\n");
    }
    if status == StatusCode::SWITCHING_PROTOCOLS {
        out.put_slice(b"connection: upgrade\r\n");
    } else if !framing.keep_alive {
        out.put_slice(b"connection: close\r\n");
    } else if framing.http10 {
        out.put_slice(b"connection: keep-alive\r\n");
    }
    out.put_slice(b"\r\n");
    if !framing.head && !bodiless {
        out.put_slice(body);
    }
}

fn status_line(status: StatusCode, out: &mut BytesMut) {
    out.put_slice(b"HTTP/1.1 ");
    out.put_slice(status.as_str().as_bytes());
    out.put_u8(b' ');
    out.put_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.put_slice(b"\r\n");
}

fn put_decimal(mut n: u64, out: &mut BytesMut) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.put_slice(&digits[at..]);
}

/// The error code of a codec rejection, in the API's error shape.
pub fn error_code(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "bad_request",
        408 => "request_timeout",
        413 => "payload_too_large",
        414 => "uri_too_long",
        417 => "expectation_failed",
        431 => "header_too_large",
        501 => "not_implemented",
        505 => "http_version_not_supported",
        _ => "error",
    }
}

/// Appends a JSON error response `{"error":{"code":..,"message":..}}` for a codec rejection.
pub fn encode_simple_error(
    status: StatusCode,
    message: &str,
    keep_alive: bool,
    date: &[u8],
    out: &mut BytesMut,
) {
    let body = format!(
        r#"{{"error":{{"code":"{}","message":"{}"}}}}"#,
        error_code(status),
        message.replace('\\', "\\\\").replace('"', "\\\"")
    );
    let mut resp = http::Response::new(Bytes::from(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    resp.headers_mut().insert(
        http::header::X_CONTENT_TYPE_OPTIONS,
        http::HeaderValue::from_static("nosniff"),
    );
    let framing = ResponseFraming {
        head: false,
        keep_alive,
        http10: false,
    };
    encode_response(&resp, framing, date, out);
}

/// The `Date` header value (IMF-fixdate), formatted at most once per second.
#[derive(Debug, Default)]
pub struct HttpDate {
    second: u64,
    text: Vec<u8>,
}

impl HttpDate {
    /// An empty cache (the first call to [`HttpDate::now`] formats).
    pub fn new() -> HttpDate {
        HttpDate::default()
    }

    /// The current date, e.g. `Sun, 06 Nov 1994 08:49:37 GMT`.
    pub fn now(&mut self) -> &[u8] {
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if secs != self.second || self.text.is_empty() {
            self.second = secs;
            self.text = imf_fixdate(secs).into_bytes();
        }
        &self.text
    }
}

/// Formats seconds since the Unix epoch as an IMF-fixdate.
pub fn imf_fixdate(secs: u64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = secs / 86_400;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{}, {:02} {} {} {:02}:{:02}:{:02} GMT",
        DAYS[(days % 7) as usize],
        day,
        MONTHS[(month - 1) as usize],
        year,
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_dates() {
        assert_eq!(imf_fixdate(784_111_777), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(imf_fixdate(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(imf_fixdate(951_782_400), "Tue, 29 Feb 2000 00:00:00 GMT");
    }

    #[test]
    fn encodes_head_close_and_bodiless() {
        let mut resp = http::Response::new(Bytes::from_static(b"hello"));
        resp.headers_mut().insert("x-a", "1".parse().unwrap());
        resp.headers_mut()
            .insert("content-length", "999".parse().unwrap());
        let mut out = BytesMut::new();
        encode_response(&resp, ResponseFraming::keep_alive(), b"D", &mut out);
        assert_eq!(
            &out[..],
            b"HTTP/1.1 200 OK\r\nx-a: 1\r\ndate: D\r\ncontent-length: 5\r\n\r\nhello"
        );
        out.clear();
        let framing = ResponseFraming::for_request(Version::HTTP_10, true, false);
        encode_response(&resp, framing, b"D", &mut out);
        assert_eq!(&out[..], b"HTTP/1.1 200 OK\r\nx-a: 1\r\ndate: D\r\ncontent-length: 5\r\nconnection: close\r\n\r\n");
        out.clear();
        *resp.status_mut() = StatusCode::NO_CONTENT;
        let framing = ResponseFraming::for_request(Version::HTTP_10, false, true);
        encode_response(&resp, framing, b"D", &mut out);
        assert_eq!(
            &out[..],
            b"HTTP/1.1 204 No Content\r\nx-a: 1\r\ndate: D\r\nconnection: keep-alive\r\n\r\n"
        );
    }
}
