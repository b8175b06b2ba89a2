//! Blocking HTTP calls to the API (ureq): accounts (register, log in), projects.

use anyhow::{ensure, Context};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::time::Duration;

pub(super) fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(180)))
        .build()
        .new_agent()
}

/// One HTTP call; the answer's status and JSON body.
pub(super) fn call(
    agent: &ureq::Agent,
    method: &str,
    url: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> anyhow::Result<(u16, Value)> {
    let auth = token.map(|t| format!("Bearer {t}"));
    let response = match (method, body) {
        ("GET", _) => {
            let mut req = agent.get(url);
            if let Some(a) = &auth {
                req = req.header("authorization", a);
            }
            req.call()
        }
        (_, body) => {
            let mut req = if method == "PUT" {
                agent.put(url)
            } else {
                agent.post(url)
            };
            if let Some(a) = &auth {
                req = req.header("authorization", a);
            }
            req.header("content-type", "application/json")
                .send(body.map_or(String::new(), Value::to_string))
        }
    }
    .with_context(|| format!("{method} {url}"))?;
    let status = response.status().as_u16();
    let text = response.into_body().read_to_string()?;
    Ok((
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    ))
}

pub(super) struct User {
    pub(super) id: String,
    pub(super) token: String,
}

/// Registers `email` (a random strong password) and logs in.
pub(super) fn account(gateway: SocketAddr, email: &str) -> anyhow::Result<User> {
    let creds = json!({"email": email, "password": strong_password()?});
    let url = format!("http://{gateway}/api/auth/register");
    let (status, body) = call(&agent(), "POST", &url, None, Some(&creds))?;
    ensure!(status == 201, "register answered {status}: {body}");
    login(gateway, &creds)
}

/// 144 random bits, base64url, and every character class a password policy may ask for.
pub(super) fn strong_password() -> anyhow::Result<String> {
    use base64::Engine;
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 18];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| anyhow::anyhow!("no randomness"))?;
    let text = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    Ok(format!("{text}-Aa9!"))
}

/// Logs in with `{"email", "password"}`.
pub(super) fn login(gateway: SocketAddr, creds: &Value) -> anyhow::Result<User> {
    let url = format!("http://{gateway}/api/auth/login");
    let (status, body) = call(&agent(), "POST", &url, None, Some(creds))?;
    ensure!(status == 200, "login answered {status}: {body}");
    let text = |v: &Value, what: &str| {
        v.as_str()
            .map(str::to_string)
            .with_context(|| format!("login: {what}"))
    };
    Ok(User {
        id: text(&body["user"]["id"], "user.id")?,
        token: text(&body["access_token"], "access_token")?,
    })
}

/// Creates a project; returns it as sdsim answers.
pub(super) fn create_project(
    gateway: SocketAddr,
    user: &User,
    body: &Value,
) -> anyhow::Result<Value> {
    let (status, project) = call(
        &agent(),
        "POST",
        &format!("http://{gateway}/api/projects"),
        Some(&user.token),
        Some(body),
    )?;
    ensure!(status == 201, "create project answered {status}: {project}");
    Ok(project)
}
