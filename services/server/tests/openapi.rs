//! `docs/openapi.json` against the server: the document describes exactly the (method, path)
//! pairs the router of a server running every role registers, both ways, so a route added
//! without a description (or a description left behind by a removed route) fails here; every
//! operation has a summary, a description and an error answer with the shared `Error` schema;
//! the document holds together as OpenAPI 3.1; and every HTTP listener serves it as committed.

mod support;

use serde_json::Value;
use std::collections::BTreeSet;
use std::sync::{mpsc, Mutex};
use std::time::Duration;
use support::{get, stop};

const DOCUMENT: &str = include_str!("../../../docs/openapi.json");
const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

fn document() -> Value {
    serde_json::from_str(DOCUMENT).expect("docs/openapi.json is JSON")
}

/// The (METHOD, path template) pairs the document describes.
fn operations(doc: &Value) -> BTreeSet<(String, String)> {
    let mut ops = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("`paths` is an object") {
        for (method, _) in item.as_object().expect("a path item is an object") {
            if METHODS.contains(&method.as_str()) {
                ops.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    ops
}

/// The (METHOD, pattern) pairs of the public router of a server running every role (the
/// default `server.roles`), as a shard built it.
fn served_routes() -> BTreeSet<(String, String)> {
    let (tx, rx) = mpsc::channel();
    let tx = Mutex::new(tx);
    // Called on each shard with the router its roles filled; every shard builds the same one.
    let server = sdsim_testing::server::start_with(&[], move |router| {
        let routes: BTreeSet<(String, String)> = router
            .routes()
            // OpenAPI has no catch-all: the router's `{*path}` is the document's `{path}`.
            .map(|(method, pattern)| (method.to_string(), pattern.replace("{*", "{")))
            .collect();
        let _ = tx.lock().unwrap_or_else(|p| p.into_inner()).send(routes);
    });
    let routes = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("a shard built its router");
    stop(server);
    routes
}

#[test]
fn the_document_describes_exactly_the_routes_of_a_server_running_every_role() {
    let served = served_routes();
    let described = operations(&document());
    let undescribed: Vec<_> = served.difference(&described).collect();
    let unserved: Vec<_> = described.difference(&served).collect();
    assert!(
        undescribed.is_empty() && unserved.is_empty(),
        "routes the server registers that docs/openapi.json does not describe (add an operation \
         with a summary, a description and its responses): {undescribed:?}; operations \
         docs/openapi.json describes that no route serves (remove them, or register the \
         route): {unserved:?}"
    );
    // The server's own routes are in it, so the comparison saw a whole router.
    for route in [
        ("GET", "/health"),
        ("GET", "/openapi.json"),
        ("POST", "/api/auth/login"),
        ("PUT", "/api/projects/{id}"),
        ("GET", "/api/simulations/{id}/results"),
    ] {
        assert!(
            served.contains(&(route.0.to_string(), route.1.to_string())),
            "{route:?} is not served"
        );
    }
}

/// Follows a local `$ref` (`#/components/...`) once; other values are returned as they are.
fn resolve<'a>(doc: &'a Value, v: &'a Value) -> &'a Value {
    match v.get("$ref").and_then(Value::as_str) {
        Some(r) => doc
            .pointer(r.strip_prefix('#').expect("a local $ref"))
            .unwrap_or_else(|| panic!("$ref {r} does not resolve")),
        None => v,
    }
}

/// Every `$ref` anywhere under `v`.
fn refs<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
    match v {
        Value::Object(map) => {
            for (k, x) in map {
                match (k.as_str(), x) {
                    ("$ref", Value::String(r)) => out.push(r),
                    _ => refs(x, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|x| refs(x, out)),
        _ => {}
    }
}

/// The `{name}` parameters of a path template.
fn template_params(path: &str) -> BTreeSet<String> {
    path.split('/')
        .filter_map(|seg| seg.strip_prefix('{')?.strip_suffix('}'))
        .map(str::to_string)
        .collect()
}

#[test]
fn every_operation_is_described_with_its_errors_and_the_document_is_openapi_3_1() {
    let doc = document();
    let version = doc["openapi"].as_str().expect("`openapi` is a string");
    assert!(version.starts_with("3.1."), "openapi {version}: want 3.1.x");
    for key in ["title", "version"] {
        assert!(doc["info"][key].is_string(), "info.{key} is required");
    }
    let mut all_refs = Vec::new();
    refs(&doc, &mut all_refs);
    for r in all_refs {
        let pointer = r
            .strip_prefix('#')
            .unwrap_or_else(|| panic!("{r}: not local"));
        assert!(doc.pointer(pointer).is_some(), "$ref {r} does not resolve");
    }
    let tags: BTreeSet<&str> = doc["tags"]
        .as_array()
        .expect("tags")
        .iter()
        .map(|t| t["name"].as_str().expect("a tag has a name"))
        .collect();
    let schemes = doc["components"]["securitySchemes"]
        .as_object()
        .expect("securitySchemes");
    assert_eq!(schemes["bearerAuth"]["scheme"], "bearer");
    let error_schema = "#/components/schemas/Error";
    let mut operation_ids = BTreeSet::new();
    let mut problems = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        let mut problem = |what: String| problems.push(format!("{path}: {what}"));
        if !path.starts_with('/') {
            problem("a path starts with /".into());
        }
        for (method, op) in item.as_object().expect("a path item") {
            let mut problem = |what: &str| problem(format!("{method}: {what}"));
            for key in ["summary", "description"] {
                if op[key].as_str().is_none_or(|s| s.trim().is_empty()) {
                    problem(&format!("no {key}"));
                }
            }
            match op["operationId"].as_str() {
                Some(id) if operation_ids.insert(id.to_string()) => {}
                _ => problem("no operationId, or one another operation has"),
            }
            let op_tags = op["tags"].as_array().cloned().unwrap_or_default();
            if op_tags.is_empty()
                || !op_tags
                    .iter()
                    .all(|t| tags.contains(t.as_str().unwrap_or("")))
            {
                problem("tags must name tags the document declares");
            }
            for requirement in op["security"]
                .as_array()
                .expect("every operation says its security")
            {
                for scheme in requirement.as_object().expect("a requirement").keys() {
                    if !schemes.contains_key(scheme) {
                        problem("names an undeclared security scheme");
                    }
                }
            }
            let declared: BTreeSet<String> = op["parameters"]
                .as_array()
                .map(|ps| {
                    ps.iter()
                        .map(|p| resolve(&doc, p))
                        .filter(|p| p["in"] == "path")
                        .inspect(|p| {
                            assert_eq!(p["required"], true, "{path}: path parameters are required")
                        })
                        .map(|p| {
                            p["name"]
                                .as_str()
                                .expect("a parameter has a name")
                                .to_string()
                        })
                        .collect()
                })
                .unwrap_or_default();
            if declared != template_params(path) {
                problem("its path parameters are not those of the path template");
            }
            if let Some(body) = op.get("requestBody") {
                if body["content"]["application/json"]["schema"].is_null() {
                    problem("a request body has a JSON schema");
                }
            }
            let responses = op["responses"].as_object().expect("responses");
            let mut success = false;
            let mut error_with_schema = false;
            for (status, response) in responses {
                let code: u16 = status
                    .parse()
                    .unwrap_or_else(|_| panic!("{path} {method}: status {status}"));
                let response = resolve(&doc, response);
                if response["description"].as_str().is_none_or(str::is_empty) {
                    problem("every response has a description");
                }
                let schema = &response["content"]["application/json"]["schema"];
                success |= code < 400;
                if code >= 400 {
                    if schema["$ref"] == error_schema {
                        error_with_schema = true;
                    } else if !path.starts_with("/health/") {
                        // A health check's 503 is the component's state, for load balancers;
                        // every other error answer is `{"error":{"code","message"}}`.
                        problem(&format!("{status} must use the Error schema"));
                    }
                }
            }
            if !success {
                problem("no success response");
            }
            if !error_with_schema {
                problem("no error response with the Error schema");
            }
        }
    }
    assert!(problems.is_empty(), "docs/openapi.json: {problems:#?}");
    let error = &doc["components"]["schemas"]["Error"];
    assert_eq!(error["required"], serde_json::json!(["error"]));
    assert_eq!(
        error["properties"]["error"]["required"],
        serde_json::json!(["code", "message"])
    );
}

#[test]
fn every_http_listener_serves_the_document_as_committed() {
    let server = support::start(&[]);
    let listeners = [
        ("gateway", Some(server.local_addr())),
        ("auth", server.auth_http_addr()),
        ("project", server.project_http_addr()),
        ("simulation", server.simulation_http_addr()),
    ];
    for (name, addr) in listeners {
        let addr = addr.unwrap_or_else(|| panic!("the {name} role's HTTP listener"));
        let resp = get(addr, "/openapi.json");
        assert_eq!(resp.status, 200, "{name}: {}", resp.text());
        assert_eq!(
            resp.header("content-type"),
            Some("application/json"),
            "{name}"
        );
        assert_eq!(resp.text(), DOCUMENT, "{name}");
    }
    stop(server);
}
