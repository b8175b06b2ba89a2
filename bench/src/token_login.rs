//! The benchmark account of `bench-auth` on a fresh sdsim: a strong random password, register,
//! log in over the gateway's HTTP API.

use crate::token::unix_now;
use anyhow::{ensure, Context};
use std::net::SocketAddr;

/// The benchmark account's email.
pub const EMAIL: &str = "bench@example.com";

/// `POST url` with a JSON body; the status and the JSON answer (its text as a string when it
/// is not JSON).
pub fn post_json(url: &str, body: &serde_json::Value) -> anyhow::Result<(u16, serde_json::Value)> {
    let response = ureq::post(url)
        .config()
        .http_status_as_error(false)
        .build()
        .header("content-type", "application/json")
        .send(body.to_string())
        .with_context(|| format!("POST {url}"))?;
    let status = response.status().as_u16();
    let text = response.into_body().read_to_string()?;
    let json = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
    Ok((status, json))
}

/// Registers the benchmark account on a fresh sdsim.
pub fn register(gateway: SocketAddr, password: &str) -> anyhow::Result<()> {
    let url = format!("http://{gateway}/api/auth/register");
    let (status, body) = post_json(
        &url,
        &serde_json::json!({"email": EMAIL, "password": password}),
    )?;
    ensure!(status == 201, "register answered {status}: {body}");
    Ok(())
}

/// Logs in; returns the access token and its expiry (Unix seconds).
pub fn login(gateway: SocketAddr, password: &str) -> anyhow::Result<(String, u64)> {
    let url = format!("http://{gateway}/api/auth/login");
    let (status, body) = post_json(
        &url,
        &serde_json::json!({"email": EMAIL, "password": password}),
    )?;
    ensure!(status == 200, "login answered {status}: {body}");
    let token = body["access_token"]
        .as_str()
        .with_context(|| format!("login answer has no access_token: {body}"))?;
    let expires_in = body["expires_in"].as_u64().unwrap_or(900);
    Ok((token.to_owned(), unix_now() + expires_in))
}

/// 144 random bits, base64url, plus every character class a password policy may ask for.
pub fn strong_password() -> anyhow::Result<String> {
    use base64::Engine;
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 18];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| anyhow::anyhow!("no randomness"))?;
    Ok(format!(
        "{}-Aa9!",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    ))
}

/// What one argon2id verification (a login's work) costs on one thread of `cpu`: median of 5
/// rounds of 10, in ns.
pub fn argon2_verify_ns(cpu: usize) -> anyhow::Result<f64> {
    std::thread::spawn(move || {
        crate::pin_current(cpu);
        let hash = sdsim_auth::password::hash_now("correct horse battery staple")?;
        let mut rounds = Vec::new();
        for _ in 0..6 {
            let began = std::time::Instant::now();
            for _ in 0..10 {
                ensure!(
                    sdsim_auth::password::verify_now("correct horse battery staple", &hash),
                    "argon2 rejects its own hash"
                );
            }
            rounds.push(began.elapsed().as_nanos() as f64 / 10.0);
        }
        rounds.remove(0); // warm-up
        Ok(crate::median(rounds))
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the argon2 measurement panicked"))?
}
