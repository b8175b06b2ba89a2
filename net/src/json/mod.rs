//! JSON from the network: nesting bounded before anything is parsed, and errors that name the
//! field at fault (`password`, `design.components[2].id`).
//!
//! sonic-rs parses `Value` and `LazyValue` (and skips unknown values) recursively with no depth
//! limit of its own: 8,713 levels of `[[[[...` (17 KB) overflowed a 2 MiB thread stack (a
//! shard's size) in a release build, and a stack overflow aborts the whole process. [`decode`] measures the nesting first, in one pass without recursion, and
//! refuses anything deeper than [`MAX_DEPTH`].

mod objects;

use objects::Objects;
use serde::Deserialize;

/// Deepest nesting of arrays and objects accepted from the network. On a 2 MiB thread stack
/// (a shard's), sonic-rs overflowed at 8,713 levels of `Value` in a release build, and at 94
/// levels of `Value` and 55 of `LazyValue` in a debug build: 32 leaves room in both, and no
/// sdsim document comes near it.
pub const MAX_DEPTH: usize = 32;

/// Why JSON text was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JsonError {
    /// Arrays and objects nest deeper than [`MAX_DEPTH`].
    #[error("arrays and objects nested deeper than {max} levels (byte {at})")]
    TooDeep {
        /// The limit.
        max: usize,
        /// Where the nesting went past it.
        at: usize,
    },
    /// The text is not UTF-8.
    #[error("not UTF-8 (byte {at})")]
    NotUtf8 {
        /// The first byte that is not.
        at: usize,
    },
    /// Not JSON, or not of the expected shape.
    #[error("{}{reason}", if path == "." { String::new() } else { format!("`{path}`: ") })]
    Invalid {
        /// The field at fault (`.` for the document as a whole).
        path: String,
        /// The parser's reason, with its line and column (never an excerpt of the text).
        reason: String,
    },
}

/// Refuses `text` when its arrays and objects nest deeper than `max`. Only brackets outside
/// strings count; text that is not JSON is left for the parser to refuse.
pub fn check_depth(text: &[u8], max: usize) -> Result<(), JsonError> {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for (at, &b) in text.iter().enumerate() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return Err(JsonError::TooDeep { max, at });
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

/// Decodes JSON text from the network into `T`: nesting within [`MAX_DEPTH`], UTF-8, one
/// document (whitespace after it only), structs from objects only (never an array read by
/// position); the error names the field at fault.
pub fn decode<'a, T: Deserialize<'a>>(text: &'a [u8]) -> Result<T, JsonError> {
    check_depth(text, MAX_DEPTH)?;
    let text = simdutf8::compat::from_utf8(text).map_err(|e| JsonError::NotUtf8 {
        at: e.valid_up_to(),
    })?;
    let mut de = sonic_rs::Deserializer::from_str(text);
    let value =
        serde_path_to_error::deserialize(Objects(&mut de)).map_err(|e| JsonError::Invalid {
            path: e.path().to_string(),
            reason: describe(&e.into_inner()),
        })?;
    de.end().map_err(|e| JsonError::Invalid {
        path: ".".into(),
        reason: describe(&e),
    })?;
    Ok(value)
}

/// What is wrong with a JSON document, and where (line and column), without quoting it:
/// sonic-rs appends an excerpt of the input around the error, and serde quotes string values of
/// the wrong type; either could be a password or a token, and error messages reach clients and
/// logs.
pub fn describe(e: &sonic_rs::Error) -> String {
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

    fn nested(depth: usize) -> String {
        format!("{}{}", "[".repeat(depth), "]".repeat(depth))
    }

    #[test]
    fn depth_counts_brackets_outside_strings_only() {
        assert!(check_depth(nested(3).as_bytes(), 3).is_ok());
        assert_eq!(
            check_depth(nested(4).as_bytes(), 3),
            Err(JsonError::TooDeep { max: 3, at: 3 })
        );
        assert!(check_depth(br#"{"a":"[[[[\"[[["}"#, 1).is_ok());
        assert!(check_depth(br#"["\\",[[]]]"#, 2).is_err());
    }

    fn body_error<T: for<'a> Deserialize<'a> + std::fmt::Debug>(body: &str) -> String {
        let req = crate::http::types::Request::new(bytes::Bytes::copy_from_slice(body.as_bytes()));
        let resp = crate::http::types::json_body::<T>(&req, "{...}").expect_err(body);
        assert_eq!(resp.status(), http::StatusCode::BAD_REQUEST);
        String::from_utf8_lossy(resp.body()).into_owned()
    }

    /// A body nested far deeper than any stack allows is refused, not parsed: before the
    /// limit, sonic-rs recursed once per level and this test overflowed its thread's stack.
    #[test]
    fn deep_documents_are_refused_before_parsing() {
        let deep = format!(r#"{{"design":{}}}"#, nested(1_000_000));
        let err = decode::<sonic_rs::Value>(deep.as_bytes()).unwrap_err();
        assert_eq!(
            err,
            JsonError::TooDeep {
                max: MAX_DEPTH,
                at: 41
            }
        );
        let message = body_error::<sonic_rs::Value>(&deep);
        assert!(
            message.contains("nested deeper than 32 levels"),
            "{message}"
        );
        let within = nested(MAX_DEPTH);
        assert!(decode::<sonic_rs::Value>(within.as_bytes()).is_ok());
    }

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Login {
        email: String,
        password: String,
    }

    /// Before, a value of the wrong type gave serde's "invalid type" without the field.
    #[test]
    fn errors_name_the_field() {
        let message = body_error::<Login>(r#"{"email":"a","password":5}"#);
        assert!(message.contains("`password`: invalid type"), "{message}");
        let err = decode::<Login>(br#"{"email":"a","password":5}"#).unwrap_err();
        assert!(
            err.to_string().starts_with("`password`: invalid type"),
            "{err}"
        );
        let err = decode::<Login>(br#"{"email":"a"}"#).unwrap_err();
        assert!(err.to_string().contains("`password`"), "{err}");
        let err = decode::<Login>(br#"{"email":"a","password":"b"} x"#).unwrap_err();
        assert!(
            matches!(err, JsonError::Invalid { ref path, .. } if path == "."),
            "{err}"
        );
        assert_eq!(
            decode::<Login>(b"{\"email\":\"\xff\"}").unwrap_err(),
            JsonError::NotUtf8 { at: 10 }
        );
    }

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct LoginOrRemember {
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
            let problem = decode::<LoginOrRemember>(body.as_bytes())
                .unwrap_err()
                .to_string();
            assert!(!problem.contains("hunter2"), "{body} -> {problem}");
            assert!(!problem.contains('\n'), "{problem}");
            assert!(!problem.is_empty());
        }
        let e = decode::<LoginOrRemember>(br#"{"email":"a@b.co","password":"x","remember":"yes"}"#)
            .unwrap_err();
        assert!(e.to_string().contains("invalid type: a string"), "{e}");
        let message = body_error::<LoginOrRemember>(&format!(r#"{{"password":"{secret}"#));
        assert!(!message.contains("hunter2"), "{message}");
    }

    #[derive(Debug, Deserialize, PartialEq)]
    struct Point {
        x: i32,
        y: i32,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(rename_all = "snake_case")]
    enum Shape {
        Dot(Point),
        Line { from: Point, to: Point },
        Pair(i32, i32),
    }

    #[derive(Debug, Deserialize, PartialEq)]
    struct Drawing {
        origin: Option<Point>,
        points: Vec<Point>,
        shape: Option<Shape>,
        #[serde(default)]
        tuple: Option<(i32, String)>,
        #[serde(default)]
        any: Option<sonic_rs::Value>,
    }

    /// serde fills a struct from an array by position, and sonic-rs offers it one: a publish
    /// body `["general", {...}]` was accepted as channel `general` (found by the fuzzer). A
    /// struct comes from an object only, at any depth; the error names where.
    #[test]
    fn structs_come_from_objects_only() {
        let refused = [
            (r#"[1, 2]"#, "."),
            (r#"{"origin": [1, 2], "points": []}"#, "origin"),
            (r#"{"points": [{"x": 1, "y": 2}, [3, 4]]}"#, "points[1]"),
            (r#"{"points": [], "shape": {"dot": [1, 2]}}"#, "shape.dot"),
            (
                r#"{"points": [], "shape": {"line": [{"x":1,"y":1}, {"x":2,"y":2}]}}"#,
                "shape.line",
            ),
            (
                r#"{"points": [], "shape": {"line": {"from": [1, 1], "to": {"x":2,"y":2}}}}"#,
                "shape.line.from",
            ),
            (r#"[null, []]"#, "."),
        ];
        for (text, path) in refused {
            match decode::<Drawing>(text.as_bytes()) {
                Err(JsonError::Invalid { path: at, reason }) => {
                    assert_eq!(at, path, "{text}: {reason}");
                    assert!(
                        reason.contains("expected a JSON object"),
                        "{text}: {reason}"
                    );
                }
                other => panic!("{text}: {other:?}"),
            }
        }
        let message = body_error::<Login>(r#"["a@b.co", "hunter2-secret"]"#);
        assert!(message.contains("expected a JSON object"), "{message}");
        assert!(!message.contains("hunter2"), "{message}");

        // Arrays where arrays belong still decode: sequences, tuples, tuple variants, values.
        let drawing = decode::<Drawing>(
            br#"{"origin": {"x": 0, "y": 0}, "points": [{"x": 1, "y": 2}],
                 "shape": {"pair": [5, 6]}, "tuple": [7, "seven"], "any": [1, [2, {"z": 3}]]}"#,
        )
        .unwrap();
        assert_eq!(drawing.origin, Some(Point { x: 0, y: 0 }));
        assert_eq!(drawing.points, vec![Point { x: 1, y: 2 }]);
        assert_eq!(drawing.shape, Some(Shape::Pair(5, 6)));
        assert_eq!(drawing.tuple, Some((7, "seven".to_string())));
        assert_eq!(
            drawing.any,
            Some(sonic_rs::from_str(r#"[1, [2, {"z": 3}]]"#).unwrap())
        );
        let line = decode::<Shape>(br#"{"line": {"from": {"x":1,"y":1}, "to": {"x":2,"y":2}}}"#);
        assert_eq!(
            line.unwrap(),
            Shape::Line {
                from: Point { x: 1, y: 1 },
                to: Point { x: 2, y: 2 }
            }
        );
        assert_eq!(
            decode::<Vec<Point>>(br#"[{"x": 1, "y": 2}]"#).unwrap(),
            vec![Point { x: 1, y: 2 }]
        );
    }
}
