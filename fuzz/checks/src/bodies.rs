//! The JSON request bodies of the HTTP API, decoded by the handlers' own function
//! (`sdsim_net::http::types::json_body`) into the handlers' own types.
//!
//! Every body check asserts: an accepted body is a JSON object with only the type's keys and
//! all of its required keys (or serde's positional form, an array), and it re-encodes to a
//! body that decodes to the same value; a rejected body is a 400 `invalid_json` whose message
//! names what is wrong — for an object, an unknown key, a missing key, or the key whose value
//! is wrong.

use bytes::Bytes;
use sdsim_auth::http::{Credentials, EmailBody, RefreshBody, ResetBody, RolesBody, TokenBody};
use sdsim_net::http::types::{json_body, Request, Response};
use sdsim_projects::http::{CreateBody, RollbackBody, ShareBody, TemplateBody, UpdateBody};
use sdsim_projects::projects::{check_design, import_document, NewProject, EXPORT_FORMAT};
use sdsim_projects::Failure;
use sdsim_simulations::http::{StartBody, ValidateBody};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sonic_rs::{JsonContainerTrait, JsonValueMutTrait, JsonValueTrait, Value};
use std::fmt::Debug;

/// The keys a body type takes, and those it requires.
pub(crate) struct Keys {
    pub(crate) all: &'static [&'static str],
    pub(crate) required: &'static [&'static str],
}

/// `data` as a JSON value, through the same bounded decoder the server uses (sonic-rs alone
/// would recurse as deep as the input nests).
pub(crate) fn json(data: &[u8]) -> Result<Value, sdsim_net::json::JsonError> {
    sdsim_net::json::decode(data)
}

/// A `POST` request with `body`, as the router hands it to a handler.
fn post(body: &[u8]) -> Request {
    let mut req = http::Request::new(Bytes::copy_from_slice(body));
    *req.method_mut() = http::Method::POST;
    req
}

/// The keys of a JSON object, `None` when `data` is not one.
pub(crate) fn object_keys(data: &[u8]) -> Option<Vec<String>> {
    let v: Value = json(data).ok()?;
    let object = v.as_object()?;
    Some(object.iter().map(|(k, _)| k.to_string()).collect())
}

/// Whether `message` names one of `names` the way serde and sdsim quote them (`` `name` ``).
pub(crate) fn names_one_of<'a>(message: &str, names: impl IntoIterator<Item = &'a str>) -> bool {
    names
        .into_iter()
        .any(|n| message.contains(&format!("`{n}`")))
}

/// Asserts that a rejection of the object `keys` names a key at fault: one it has (unknown,
/// repeated, or with a wrong value) or one it lacks. The decoder reports the first fault in
/// document order, so which one is not fixed.
pub(crate) fn assert_names_the_key(message: &str, keys: &[String], expected: &Keys) {
    let missing: Vec<&str> = expected
        .required
        .iter()
        .copied()
        .filter(|r| !keys.iter().any(|k| k == r))
        .collect();
    let named = names_one_of(
        message,
        keys.iter()
            .map(String::as_str)
            .chain(missing.iter().copied()),
    );
    assert!(
        named,
        "the error does not name the key at fault: {message} (keys {keys:?}, missing {missing:?})"
    );
}

/// Asserts that an accepted object has only known keys and every required one (a key whose
/// value is `null` counts as absent when `null_is_absent`). serde also takes a struct's fields
/// as an array, in order; an accepted array has no keys to check.
pub(crate) fn assert_keys_allowed(data: &[u8], expected: &Keys, null_is_absent: bool) {
    let v: Value = json(data).expect("an accepted body is JSON");
    if v.is_array() {
        return;
    }
    let object = v
        .as_object()
        .expect("an accepted body is a JSON object or an array");
    let keys: Vec<String> = object
        .iter()
        .filter(|(_, v)| !(null_is_absent && v.is_null()))
        .map(|(k, _)| k.to_string())
        .collect();
    for k in &keys {
        assert!(
            expected.all.contains(&k.as_str()),
            "unknown key `{k}` accepted"
        );
    }
    for r in expected.required {
        assert!(keys.iter().any(|k| k == r), "missing key `{r}` accepted");
    }
}

/// The `{"error": {"code", "message"}}` of an error response.
pub(crate) fn error_of(resp: &Response) -> (u16, String, String) {
    let v: Value = json(resp.body()).expect("an error body is JSON");
    let code = v["error"]["code"]
        .as_str()
        .expect("an error code")
        .to_string();
    let message = v["error"]["message"]
        .as_str()
        .expect("a message")
        .to_string();
    (resp.status().as_u16(), code, message)
}

/// Decodes `req`'s body as the handler does and checks the verdict; the value when accepted.
fn decoded<'a, T: Deserialize<'a>>(req: &'a Request, keys: &Keys) -> Option<T> {
    match json_body::<T>(req, "the body") {
        Ok(value) => {
            assert_keys_allowed(req.body(), keys, false);
            Some(value)
        }
        Err(resp) => {
            let (status, code, message) = error_of(&resp);
            assert_eq!((status, code.as_str()), (400, "invalid_json"), "{message}");
            assert!(message.starts_with("body must be "), "{message}");
            if let Some(object) = object_keys(req.body()) {
                assert_names_the_key(&message, &object, keys);
            }
            None
        }
    }
}

/// Asserts that `value` re-encodes to a body that decodes to itself.
fn round_trip<T: Serialize + DeserializeOwned + PartialEq + Debug>(value: &T) {
    let again = post(&sonic_rs::to_vec(value).expect("an accepted body re-encodes"));
    let back: T = json_body(&again, "the body").expect("a re-encoded body decodes");
    assert_eq!(&back, value);
}

/// Checks an owned body type end to end.
fn owned<T: Serialize + DeserializeOwned + PartialEq + Debug>(
    data: &[u8],
    keys: &Keys,
) -> Option<T> {
    let req = post(data);
    let value = decoded::<T>(&req, keys)?;
    round_trip(&value);
    Some(value)
}

const CREDENTIALS: Keys = Keys {
    all: &["email", "password"],
    required: &["email", "password"],
};

/// `auth_credentials`: `POST /api/auth/register` and `/api/auth/login` bodies.
pub fn auth_credentials(data: &[u8]) {
    let req = post(data);
    let Some(credentials) = decoded::<Credentials>(&req, &CREDENTIALS) else {
        return;
    };
    // Borrowed strings: round-tripped here, where the lifetime can be named.
    let again = post(&sonic_rs::to_vec(&credentials).expect("re-encodes"));
    let back: Credentials = json_body(&again, "the body").expect("a re-encoded body decodes");
    assert_eq!(back, credentials);
}

/// `auth_refresh`: `POST /api/auth/refresh` bodies.
pub fn auth_refresh(data: &[u8]) {
    owned::<RefreshBody>(
        data,
        &Keys {
            all: &["refresh_token"],
            required: &["refresh_token"],
        },
    );
}

/// Asserts what the project service does with a design given in a body: stores it as the
/// same JSON value, or rejects it with the design's problems (each with a JSON path).
fn design_kept_or_refused(design: &Value) {
    match check_design(&design.to_string()) {
        Ok(stored) => {
            let stored: Value = json(stored.as_bytes()).expect("a stored design is JSON");
            assert_eq!(
                &stored, design,
                "the stored design differs from the one sent"
            );
        }
        Err(Failure::Design(problems)) => {
            assert!(!problems.is_empty());
            assert!(problems.iter().all(|p| p.path.starts_with('$')));
        }
        Err(other) => panic!("a design is refused with {other:?}"),
    }
}

/// `project_create`: `POST /api/projects` bodies, and the design check they lead to.
pub fn project_create(data: &[u8]) {
    let keys = Keys {
        all: &["name", "description", "template_id", "design", "settings"],
        required: &["name"],
    };
    if let Some(body) = owned::<CreateBody>(data, &keys) {
        if let Some(design) = &body.design {
            design_kept_or_refused(design);
        }
    }
}

/// `project_update`: `PUT /api/projects/{id}` bodies, and the design check they lead to.
pub fn project_update(data: &[u8]) {
    let keys = Keys {
        all: &[
            "name",
            "description",
            "design",
            "settings",
            "expected_version",
        ],
        required: &[],
    };
    if let Some(body) = owned::<UpdateBody>(data, &keys) {
        if let Some(design) = &body.design {
            design_kept_or_refused(design);
        }
    }
}

/// `simulation_start`: `POST /api/simulations` bodies; numbers are finite (JSON has no other).
pub fn simulation_start(data: &[u8]) {
    let keys = Keys {
        all: &["project_id", "duration_s", "seed", "speed"],
        required: &["project_id"],
    };
    if let Some(body) = owned::<StartBody>(data, &keys) {
        for (key, value) in [("duration_s", body.duration_s), ("speed", body.speed)] {
            assert!(
                value.is_none_or(f64::is_finite),
                "{key} = {value:?} accepted"
            );
        }
    }
}

/// `other_json_bodies` (first byte picks the type): the remaining bodies — verify-email,
/// password reset and its confirmation, roles, share, rollback, templates, design validation.
pub fn other(data: &[u8]) {
    let Some((&which, data)) = data.split_first() else {
        return;
    };
    let keys = |all, required| Keys { all, required };
    match which % 8 {
        0 => drop(owned::<TokenBody>(data, &keys(&["token"], &["token"]))),
        1 => drop(owned::<EmailBody>(data, &keys(&["email"], &["email"]))),
        2 => {
            let both: &[&str] = &["token", "password"];
            drop(owned::<ResetBody>(data, &keys(both, both)))
        }
        3 => drop(owned::<RolesBody>(data, &keys(&["roles"], &["roles"]))),
        4 => {
            let both: &[&str] = &["user", "role"];
            drop(owned::<ShareBody>(data, &keys(both, both)))
        }
        5 => drop(owned::<RollbackBody>(
            data,
            &keys(&["version"], &["version"]),
        )),
        6 => {
            let all: &[&str] = &["name", "description", "design"];
            drop(owned::<TemplateBody>(data, &keys(all, &["name", "design"])))
        }
        _ => {
            if let Some(body) = owned::<ValidateBody>(data, &keys(&["design"], &["design"])) {
                design_kept_or_refused(&body.design);
            }
        }
    }
}

/// `project_import`: `POST /api/projects/import` documents (the body as text, as the handler
/// reads it). A rejection names its field; an accepted document keeps its name, description,
/// design and settings, and the same document written again imports to the same project.
pub fn project_import(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let new = match import_document(&text) {
        Ok(new) => new,
        Err(Failure::Invalid { field, message }) => {
            let fields = ["body", "format", "name", "description", "design"];
            assert!(fields.contains(&field.as_ref()), "field {field}: {message}");
            let is_json = json(text.as_bytes()).is_ok();
            assert_eq!(field == "body", !is_json, "field {field}: {message}");
            return;
        }
        Err(other) => panic!("import refused with {other:?}"),
    };
    let doc: Value = json(text.as_bytes()).expect("an imported document is JSON");
    assert_eq!(doc["format"].as_str(), Some(EXPORT_FORMAT));
    let string = |k: &str| doc.get(k).and_then(|v| v.as_str()).unwrap_or("");
    assert_eq!(new.name, string("name"));
    assert_eq!(new.description, string("description"));
    assert_eq!(new.template_id, None);
    let parse = |t: &Option<String>| {
        t.as_deref()
            .map(|t| json(t.as_bytes()).expect("kept as JSON"))
    };
    assert_eq!(parse(&new.design).as_ref(), doc.get("design"));
    assert_eq!(parse(&new.settings).as_ref(), doc.get("settings"));
    let mut again = sonic_rs::json!({
        "format": EXPORT_FORMAT,
        "name": new.name.as_str(),
        "description": new.description.as_str(),
    });
    let object = again.as_object_mut().expect("an object");
    if let Some(design) = parse(&new.design) {
        object.insert("design", design);
    }
    if let Some(settings) = parse(&new.settings) {
        object.insert("settings", settings);
    }
    let reimported: NewProject =
        import_document(&again.to_string()).expect("a document written again imports");
    assert_eq!(reimported, new);
}

/// `sweep_request`: `POST /api/simulations/sweeps` bodies, then their `parameters` as the
/// service reads them (also what gRPC `StartSweep` carries). Every refusal names a field by
/// JSON path; numbers read are finite; accepted parameters have a well-formed path, at least
/// one value, and every value is JSON.
pub fn sweep_request(data: &[u8]) {
    use sdsim_projects::Failure;
    use sdsim_simulations::sweeps::{parameters_of, sweep_of_body};
    let named = |f: &Failure| match f {
        Failure::Invalid { field, message } => {
            assert!(field.starts_with('$'), "refused at `{field}`: {message}");
        }
        other => panic!("refused as {other:?}: not a field"),
    };
    let body = match sweep_of_body(data) {
        Ok(body) => body,
        Err(f) => return named(&f),
    };
    for (key, value) in [
        ("slo_p99_ms", body.slo_p99_ms),
        ("duration_s", body.duration_s),
    ] {
        assert!(
            value.is_none_or(f64::is_finite),
            "{key} = {value:?} accepted"
        );
    }
    match parameters_of(&body.parameters) {
        Err(f) => {
            named(&f);
            if let Failure::Invalid { field, .. } = &f {
                assert!(field.starts_with("$.parameters"), "{field}");
            }
        }
        Ok(parameters) => {
            assert!(!parameters.is_empty());
            for p in &parameters {
                sdsim_engine::sweep::check_path(&p.path).expect("an accepted path is well formed");
                assert!(!p.values.is_empty(), "{}: no values", p.path);
                for v in &p.values {
                    sonic_rs::from_str::<sonic_rs::Value>(v).expect("a value is JSON");
                }
            }
            let _ = sdsim_engine::sweep::grid(&parameters, sdsim_engine::sweep::MAX_POINTS);
        }
    }
}
