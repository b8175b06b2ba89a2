//! The HTTP API of the project service (mounted on the gateway and on the service's own
//! listeners), over its contract: the same handlers serve whether the service runs in this
//! process or in another one. The request helpers here (`respond`, `param`, `query`,
//! `int_query`) serve the simulation service's routes too.
//!
//! Errors are `{"error": {"code", "message"}}` with the status of the services' error table
//! ([`crate::error`]); an invalid design is 422 with `problems: [{path, message}]` listing
//! every problem.

use crate::projects::contract::{NewTemplate, Rollback, Share, Update};
use crate::projects::{Change, Filter, NewProject, ProjectService, Role};
use crate::Failure;
use http::header::CONTENT_DISPOSITION;
use http::{HeaderValue, Method, StatusCode};
use sdsim_contract::{empty, http_caller, response as failure, Authenticate};
use sdsim_net::http::router::Router;
use sdsim_net::http::types::{json, json_body as body, PathParams, Request, Response};
use serde::{Deserialize, Serialize};
use std::rc::Rc;
use std::sync::Arc;

/// The response of a service call: `value` as JSON with `status`, or the failure's error body.
pub fn respond<T: serde::Serialize>(status: StatusCode, r: Result<T, Failure>) -> Response {
    match r {
        Ok(v) => json(status, &v),
        Err(f) => failure(&f),
    }
}

/// The path parameter `name` (`{name}` in the route); empty when the route has none.
pub fn param(req: &Request, name: &str) -> String {
    req.extensions()
        .get::<PathParams>()
        .and_then(|p| p.get(name))
        .unwrap_or_default()
        .to_string()
}

/// The decoded value of query parameter `name`.
pub fn query(req: &Request, name: &str) -> Option<String> {
    req.uri().query()?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then(|| percent_decode(v))
    })
}

fn percent_decode(s: &str) -> String {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 1 < bytes.len() => {
                match (hex(bytes[i + 1]), bytes.get(i + 2).and_then(|b| hex(*b))) {
                    (Some(h), Some(l)) => {
                        out.push(h << 4 | l);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The integer query parameter `name` (`default` when absent); a value that is not an integer
/// is the 400 response naming the parameter.
pub fn int_query(req: &Request, name: &'static str, default: i64) -> Result<i64, Box<Response>> {
    match query(req, name) {
        None => Ok(default),
        Some(v) => v.parse().map_err(|_| {
            Box::new(failure(&Failure::Invalid {
                field: name.into(),
                message: format!("{v:?} is not an integer"),
            }))
        }),
    }
}

macro_rules! try_or {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(resp) => return *resp,
        }
    };
}

/// A JSON value passed on as text (designs and settings are validated by the services).
pub type Raw = Option<sonic_rs::Value>;

fn raw_text(v: &Raw) -> Option<String> {
    v.as_ref().map(|r| r.to_string())
}

// The request bodies are public so that the fuzz targets decode them exactly as the handlers do.

/// The body of `POST /api/projects`.
#[derive(Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CreateBody {
    /// Display name.
    pub name: String,
    /// Free text.
    #[serde(default)]
    pub description: String,
    /// The template the project starts from.
    #[serde(default)]
    pub template_id: Option<String>,
    /// The design document (instead of, or overriding, the template's).
    #[serde(default)]
    pub design: Raw,
    /// Settings (a JSON object).
    #[serde(default)]
    pub settings: Raw,
}

/// The body of `PUT /api/projects/{id}`; absent fields stay as they are.
#[derive(Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateBody {
    /// New display name.
    #[serde(default)]
    pub name: Option<String>,
    /// New description.
    #[serde(default)]
    pub description: Option<String>,
    /// New design document.
    #[serde(default)]
    pub design: Raw,
    /// New settings.
    #[serde(default)]
    pub settings: Raw,
    /// The version the change was made against (409 when the project has moved on).
    #[serde(default)]
    pub expected_version: Option<i64>,
}

/// The body of `POST /api/projects/{id}/share`.
#[derive(Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ShareBody {
    /// A user id or an email.
    pub user: String,
    /// `editor`, `viewer` or `none` (removes).
    pub role: String,
}

/// The body of `POST /api/projects/{id}/rollback`.
#[derive(Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RollbackBody {
    /// The version to go back to.
    pub version: i64,
}

/// The body of `POST /api/templates`.
#[derive(Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateBody {
    /// Display name.
    pub name: String,
    /// Free text.
    #[serde(default)]
    pub description: String,
    /// The design document.
    pub design: sonic_rs::Value,
}

fn add<F, Fut>(router: &mut Router, method: Method, path: &str, handler: F)
where
    F: Fn(Request) -> Fut + 'static,
    Fut: std::future::Future<Output = Response> + 'static,
{
    router
        .route(method, path, handler)
        .expect("project routes are registered once");
}

/// Registers the project routes (`/api/templates`, `/api/projects/*`).
pub fn register_projects(
    router: &mut Router,
    projects: &Rc<dyn ProjectService>,
    auth: &Arc<dyn Authenticate>,
) {
    // Each route: authenticate, then call the service with the request.
    macro_rules! route {
        ($method:expr, $path:expr, |$p:ident, $who:ident, $req:ident| $body:expr) => {{
            let (p, a) = (Rc::clone(projects), Arc::clone(auth));
            add(router, $method, $path, move |$req: Request| {
                let ($p, a) = (Rc::clone(&p), Arc::clone(&a));
                async move {
                    let $who = try_or!(http_caller(&*a, &$req));
                    $body
                }
            });
        }};
    }
    route!(Method::GET, "/api/templates", |p, who, _req| respond(
        StatusCode::OK,
        p.list_templates(&who, None)
            .await
            .map(|templates| Templates { templates })
    ));
    route!(Method::GET, "/api/templates/{id}", |p, who, req| respond(
        StatusCode::OK,
        p.get_template(&who, param(&req, "id")).await
    ));
    route!(Method::POST, "/api/templates", |p, who, req| {
        let b: TemplateBody = try_or!(body(
            &req,
            r#"{"name": string, "description"?: string, "design": object}"#
        ));
        respond(
            StatusCode::CREATED,
            p.create_template(
                &who,
                NewTemplate {
                    name: b.name,
                    description: b.description,
                    design: b.design.to_string(),
                },
            )
            .await,
        )
    });
    route!(Method::POST, "/api/projects", |p, who, req| {
        let b: CreateBody = try_or!(body(
            &req,
            r#"{"name": string, "description"?: string, "template_id"?: string, "design"?: object, "settings"?: object}"#
        ));
        let new = NewProject {
            design: raw_text(&b.design),
            settings: raw_text(&b.settings),
            name: b.name,
            description: b.description,
            template_id: b.template_id,
        };
        respond(StatusCode::CREATED, p.create_project(&who, new).await)
    });
    route!(Method::GET, "/api/projects", |p, who, req| {
        let role = match query(&req, "role").as_deref() {
            None | Some("") => None,
            Some("owner") => Some(Role::Owner),
            Some("editor") => Some(Role::Editor),
            Some("viewer") => Some(Role::Viewer),
            Some(other) => {
                return failure(&Failure::Invalid {
                    field: "role".into(),
                    message: format!("{other:?}: owner, editor or viewer"),
                })
            }
        };
        let filter = Filter {
            query: query(&req, "q"),
            role,
            page: try_or!(int_query(&req, "page", 1)),
            per_page: try_or!(int_query(&req, "per_page", 20)),
        };
        respond(StatusCode::OK, p.list_projects(&who, filter).await)
    });
    route!(Method::POST, "/api/projects/import", |p, who, req| {
        let text = String::from_utf8_lossy(req.body()).into_owned();
        respond(StatusCode::CREATED, p.import_project(&who, text).await)
    });
    route!(Method::GET, "/api/projects/{id}", |p, who, req| respond(
        StatusCode::OK,
        p.get_project(&who, param(&req, "id")).await
    ));
    route!(Method::PUT, "/api/projects/{id}", |p, who, req| {
        let b: UpdateBody = try_or!(body(
            &req,
            r#"{"name"?: string, "description"?: string, "design"?: object, "settings"?: object, "expected_version"?: integer}"#
        ));
        let change = Change {
            design: raw_text(&b.design),
            settings: raw_text(&b.settings),
            name: b.name,
            description: b.description,
            expected_version: b.expected_version,
        };
        respond(
            StatusCode::OK,
            p.update_project(
                &who,
                Update {
                    project_id: param(&req, "id"),
                    change,
                },
            )
            .await,
        )
    });
    route!(Method::DELETE, "/api/projects/{id}", |p, who, req| {
        match p.delete_project(&who, param(&req, "id")).await {
            Ok(()) => empty(StatusCode::NO_CONTENT),
            Err(f) => failure(&f),
        }
    });
    route!(Method::POST, "/api/projects/{id}/share", |p, who, req| {
        let b: ShareBody = try_or!(body(
            &req,
            r#"{"user": string (id or email), "role": "editor" | "viewer" | "none"}"#
        ));
        let role = match b.role.as_str() {
            "editor" => Some(Role::Editor),
            "viewer" => Some(Role::Viewer),
            "none" => None,
            other => {
                return failure(&Failure::Invalid {
                    field: "role".into(),
                    message: format!("{other:?}: editor, viewer or none"),
                })
            }
        };
        respond(
            StatusCode::OK,
            p.share_project(
                &who,
                Share {
                    project_id: param(&req, "id"),
                    grantee: b.user,
                    role,
                },
            )
            .await
            .map(|members| Members { members }),
        )
    });
    route!(Method::GET, "/api/projects/{id}/members", |p, who, req| {
        respond(
            StatusCode::OK,
            p.get_project_permissions(&who, param(&req, "id"))
                .await
                .map(|p| Members { members: p.members }),
        )
    });
    route!(Method::GET, "/api/projects/{id}/versions", |p, who, req| {
        respond(
            StatusCode::OK,
            p.list_versions(&who, param(&req, "id"))
                .await
                .map(|versions| Versions { versions }),
        )
    });
    route!(
        Method::POST,
        "/api/projects/{id}/rollback",
        |p, who, req| {
            let b: RollbackBody = try_or!(body(&req, r#"{"version": integer}"#));
            respond(
                StatusCode::OK,
                p.rollback_project(
                    &who,
                    Rollback {
                        project_id: param(&req, "id"),
                        version: b.version,
                    },
                )
                .await,
            )
        }
    );
    route!(Method::GET, "/api/projects/{id}/export", |p, who, req| {
        let id = param(&req, "id");
        match p.export_project(&who, id.clone()).await {
            Ok(doc) => {
                let mut resp = json(StatusCode::OK, &doc);
                if let Ok(v) =
                    HeaderValue::from_str(&format!("attachment; filename=\"project-{id}.json\""))
                {
                    resp.headers_mut().insert(CONTENT_DISPOSITION, v);
                }
                resp
            }
            Err(f) => failure(&f),
        }
    });
}

#[derive(serde::Serialize)]
struct Templates {
    templates: Vec<crate::projects::TemplateInfo>,
}

#[derive(serde::Serialize)]
struct Members {
    members: Vec<crate::projects::Member>,
}

#[derive(serde::Serialize)]
struct Versions {
    versions: Vec<crate::projects::Version>,
}

#[cfg(test)]
mod tests {
    #[test]
    fn percent_decoding() {
        assert_eq!(super::percent_decode("a%20b+c"), "a b c");
        assert_eq!(super::percent_decode("100%"), "100%");
        assert_eq!(super::percent_decode("%zz"), "%zz");
        assert_eq!(super::percent_decode("%C3%A9"), "é");
        assert_eq!(super::percent_decode("%é%4"), "%é%4");
    }
}
