//! The peer server of the ValidateToken benchmark: an idiomatic tonic 0.14 `AuthService` whose
//! `ValidateToken` verifies sdsim access tokens with the jsonwebtoken crate (EdDSA, aws-lc-rs
//! backend), the way a careful user would write it. The other methods answer UNIMPLEMENTED.
//!
//! `peer-auth --listen 127.0.0.1:9100 --jwks http://127.0.0.1:8000/.well-known/jwks.json --cpus 0`
//!
//! The public keys come from the JWKS URL (`http://` fetched once at start with ureq, or
//! `file:///path`) and are parsed once into `DecodingKey`s by `kid`. Validation is sdsim's:
//! tokens up to 8 KiB, alg EdDSA only, a known `kid`, `iss` == `aud` == `"sdsim"`, `exp` with
//! no leeway and `nbf` with 30 s (`--nbf-leeway`; jsonwebtoken has one leeway for both, so `nbf`
//! is checked here after `decode`). An invalid token is an OK answer with `valid = false` and
//! the problem. No revocation list: sdsim also checks revoked sessions, the peer does not.

use clap::Parser;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use mimalloc::MiMalloc;
use sdsim_bench::proto::auth_service_server::{AuthService, AuthServiceServer};
use sdsim_bench::proto::{TokenProblem, ValidateTokenRequest, ValidateTokenResponse};
use serde::Deserialize;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};
use tonic::{Request, Response, Status};

#[global_allocator]
static GLOBAL: MiMalloc = MiMalloc;

#[derive(Parser)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:9100")]
    listen: SocketAddr,
    /// Where the public keys are: http://HOST:PORT/.well-known/jwks.json or file:///PATH.
    #[arg(long)]
    jwks: String,
    /// CPUs to pin the process to (e.g. 0 or 0,1); tokio gets one worker thread per CPU.
    /// Default: the inherited affinity mask.
    #[arg(long, value_delimiter = ',')]
    cpus: Vec<usize>,
    /// Clock skew allowed on `nbf`, seconds (sdsim: 30; `exp` has none).
    #[arg(long, default_value_t = 30)]
    nbf_leeway: i64,
}

/// The claims the answer is filled from (`iss`, `aud` and `exp` are checked by jsonwebtoken's
/// `Validation`).
#[derive(Deserialize)]
struct Claims {
    sub: String,
    sid: String,
    email: String,
    #[serde(default)]
    roles: Vec<String>,
    #[serde(default)]
    perms: Vec<String>,
    exp: i64,
    nbf: i64,
}

/// Longest token accepted (bytes), as sdsim.
const MAX_TOKEN_BYTES: usize = 8192;

/// The verification keys by `kid` and the validation rules; immutable after start.
struct TokenVerifier {
    keys: HashMap<String, DecodingKey>,
    validation: Validation,
    nbf_leeway: i64,
}

impl TokenVerifier {
    fn from_jwks(document: &str, nbf_leeway: i64) -> anyhow::Result<TokenVerifier> {
        let set: JwkSet = serde_json::from_str(document)?;
        let mut keys = HashMap::new();
        for jwk in &set.keys {
            let Some(kid) = &jwk.common.key_id else {
                continue;
            };
            keys.insert(kid.clone(), DecodingKey::from_jwk(jwk)?);
        }
        anyhow::ensure!(!keys.is_empty(), "the JWKS has no key with a kid");
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&["sdsim"]);
        validation.set_audience(&["sdsim"]);
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
        validation.leeway = 0;
        Ok(TokenVerifier {
            keys,
            validation,
            nbf_leeway,
        })
    }

    fn validate(&self, token: &str) -> ValidateTokenResponse {
        let invalid = |problem: TokenProblem| ValidateTokenResponse {
            problem: problem as i32,
            ..Default::default()
        };
        if token.len() > MAX_TOKEN_BYTES {
            return invalid(TokenProblem::Malformed);
        }
        let header = match jsonwebtoken::decode_header(token) {
            Ok(header) => header,
            // jsonwebtoken cannot parse a header naming an algorithm it lacks (`none`).
            Err(_) if names_another_alg(token) => {
                return invalid(TokenProblem::UnsupportedAlgorithm)
            }
            Err(_) => return invalid(TokenProblem::Malformed),
        };
        if header.alg != Algorithm::EdDSA {
            return invalid(TokenProblem::UnsupportedAlgorithm);
        }
        let Some(key) = header.kid.as_deref().and_then(|kid| self.keys.get(kid)) else {
            return invalid(TokenProblem::UnknownKey);
        };
        match jsonwebtoken::decode::<Claims>(token, key, &self.validation) {
            Ok(data) if data.claims.nbf > unix_now() + self.nbf_leeway => {
                invalid(TokenProblem::NotYetValid)
            }
            Ok(data) => {
                let c = data.claims;
                ValidateTokenResponse {
                    valid: true,
                    is_admin: c.roles.iter().any(|r| r == "admin"),
                    user_id: c.sub,
                    email: c.email,
                    session_id: c.sid,
                    permissions: c.perms,
                    roles: c.roles,
                    expires_at: c.exp,
                    problem: TokenProblem::Unspecified as i32,
                }
            }
            Err(e) => invalid(match e.kind() {
                ErrorKind::InvalidSignature => TokenProblem::BadSignature,
                ErrorKind::ExpiredSignature => TokenProblem::Expired,
                ErrorKind::ImmatureSignature => TokenProblem::NotYetValid,
                ErrorKind::InvalidAlgorithm => TokenProblem::UnsupportedAlgorithm,
                // Wrong issuer or audience, missing claims, bad base64 or JSON.
                _ => TokenProblem::Malformed,
            }),
        }
    }
}

/// Whether `token`'s header decodes to JSON with an `alg` other than EdDSA.
fn names_another_alg(token: &str) -> bool {
    use base64::Engine;
    let Some(header) = token.split('.').next() else {
        return false;
    };
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .ok()
        .and_then(|raw| serde_json::from_slice::<serde_json::Value>(&raw).ok())
        .and_then(|h| h.get("alg")?.as_str().map(|alg| alg != "EdDSA"))
        .unwrap_or(false)
}

struct Auth {
    verifier: TokenVerifier,
}

#[tonic::async_trait]
impl AuthService for Auth {
    async fn validate_token(
        &self,
        request: Request<ValidateTokenRequest>,
    ) -> Result<Response<ValidateTokenResponse>, Status> {
        Ok(Response::new(
            self.verifier.validate(&request.get_ref().token),
        ))
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// The JWKS document at `url` (`http://...` or `file:///...`).
fn fetch_jwks(url: &str) -> anyhow::Result<String> {
    use anyhow::Context;
    if let Some(path) = url.strip_prefix("file://") {
        return std::fs::read_to_string(path).with_context(|| format!("reading {path}"));
    }
    let mut response = ureq::get(url)
        .call()
        .with_context(|| format!("fetching {url}"))?;
    Ok(response.body_mut().read_to_string()?)
}

/// Pins the process to `cpus` (threads started later inherit the mask); returns how many CPUs
/// it may run on.
fn pin(cpus: &[usize]) -> anyhow::Result<usize> {
    if !cpus.is_empty() {
        // SAFETY: a zeroed cpu_set_t with the given bits set, for the calling (main) thread.
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            for &cpu in cpus {
                libc::CPU_SET(cpu, &mut set);
            }
            if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
                return Err(std::io::Error::last_os_error().into());
            }
        }
    }
    // Counts the affinity mask, not the machine.
    Ok(std::thread::available_parallelism()?.get())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let workers = pin(&args.cpus)?;
    let verifier = TokenVerifier::from_jwks(&fetch_jwks(&args.jwks)?, args.nbf_leeway)?;
    // The runtime a careful user would pick for a CPU-bound unary service: tokio multi-thread
    // with exactly one worker per CPU the process may run on (more workers than CPUs only adds
    // context switches; fewer leaves a CPU idle). Timers and I/O enabled, default blocking pool
    // (unused: verification is a few tens of µs, well under tokio's "don't block" budget, so it
    // runs inline on the worker). tonic's defaults: TCP_NODELAY on, no concurrency limit.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        tonic::transport::Server::builder()
            .add_service(AuthServiceServer::new(Auth { verifier }))
            .serve(args.listen)
            .await
    })?;
    Ok(())
}
