//! The request and response types handlers see, their extensions, and JSON helpers.

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::StatusCode;
use std::net::SocketAddr;

/// A whole request: head plus body (bodies are bounded by `http.max_body_bytes`).
pub type Request = http::Request<Bytes>;
/// A whole response.
pub type Response = http::Response<Bytes>;

/// Path parameters captured by the router, e.g. `id` in `/api/projects/{id}`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PathParams(pub Vec<(String, String)>);

impl PathParams {
    /// The value of parameter `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// The peer address of the connection a request came on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub SocketAddr);

/// The request id (from a sane incoming `X-Request-Id`, or generated), echoed in the response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(pub String);

/// The route pattern a request matched (`"/api/projects/{id}"`), or `"unmatched"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MatchedRoute(pub &'static str);

/// A JSON response with `status`, serialised with sonic-rs.
pub fn json<T: serde::Serialize>(status: StatusCode, value: &T) -> Response {
    match sonic_rs::to_vec(value) {
        Ok(body) => with_body(status, "application/json", body.into()),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            &format!("response serialisation failed: {e}"),
        ),
    }
}

/// The error shape of every sdsim HTTP API: `{"error":{"code":"...","message":"..."}}`.
pub fn error(status: StatusCode, code: &str, message: &str) -> Response {
    #[derive(serde::Serialize)]
    struct Inner<'a> {
        code: &'a str,
        message: &'a str,
    }
    #[derive(serde::Serialize)]
    struct Outer<'a> {
        error: Inner<'a>,
    }
    let body = sonic_rs::to_vec(&Outer {
        error: Inner { code, message },
    })
    .unwrap_or_else(|_| {
        br#"{"error":{"code":"internal_error","message":"unprintable error"}}"#.to_vec()
    });
    with_body(status, "application/json", body.into())
}

/// A response with a body and its content type.
pub fn with_body(status: StatusCode, content_type: &'static str, body: Bytes) -> Response {
    let mut resp = http::Response::new(body);
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

/// Parses a JSON request body into `T`; the error is a 400 `invalid_json` response saying the
/// expected `shape` and what is wrong (unknown field, wrong type, missing field, bad JSON), in
/// the words of [`json_problem`], which never quote the body.
pub fn json_body<'a, T: serde::Deserialize<'a>>(
    req: &'a Request,
    shape: &str,
) -> Result<T, Box<Response>> {
    sonic_rs::from_slice(req.body()).map_err(|e| {
        Box::new(error(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            &format!("body must be {shape}: {}", json_problem(&e)),
        ))
    })
}

/// What is wrong with a JSON document, and where, without quoting it. sonic-rs appends a
/// fragment of the input around the error, and serde quotes string values of the wrong type:
/// either could be a password or a token, and error messages reach clients and logs.
pub fn json_problem(e: &sonic_rs::Error) -> String {
    let text = e.to_string();
    let text = text.split("\n\n").next().unwrap_or_default();
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("string \"") {
        out.push_str(&rest[..at]);
        out.push_str("a string");
        let quoted = &rest[at + "string \"".len()..];
        let mut escaped = false;
        let end = quoted.char_indices().find_map(|(i, c)| match c {
            _ if escaped => {
                escaped = false;
                None
            }
            '\\' => {
                escaped = true;
                None
            }
            '"' => Some(i + 1),
            _ => None,
        });
        rest = &quoted[end.unwrap_or(quoted.len())..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    #[allow(dead_code)]
    struct Login {
        email: String,
        password: String,
        #[serde(default)]
        remember: Option<u32>,
    }

    /// Malformed bodies carrying a secret: the problem is described, the secret never quoted.
    #[test]
    fn json_problems_never_quote_the_input() {
        let secret = "hunter2-Secret-Passphrase";
        let bodies = [
            format!(r#"{{"email":"a@b.co","password":"{secret}"#),
            format!(r#"{{"email":"a@b.co","password":"{secret}\q"}}"#),
            format!(r#"{{"email":"a@b.co","password":"{secret}"}},}}"#),
            format!(r#"{{"email":"a@b.co","password":"x","remember":"{secret}"}}"#),
            format!(r#"{{"email":"a@b.co","password":{secret}}}"#),
        ];
        for body in bodies {
            let e = sonic_rs::from_str::<Login>(&body).unwrap_err();
            let problem = json_problem(&e);
            assert!(!problem.contains("hunter2"), "{body} -> {problem}");
            assert!(!problem.contains('\n'), "{problem}");
            assert!(!problem.is_empty());
        }
        let e =
            sonic_rs::from_str::<Login>(r#"{"email":"a@b.co","password":"x","remember":"yes"}"#)
                .unwrap_err();
        assert!(json_problem(&e).contains("invalid type: a string"), "{e}");
    }
}
