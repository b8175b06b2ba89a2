//! What every ValidateToken server of the benchmark must answer before it is measured: the
//! access token valid (with its claims, when known), a tampered copy invalid, and refused tokens
//! with sdsim's problem codes. Calls go through the generated tonic client.

use crate::proto::auth_service_client::AuthServiceClient;
use crate::proto::{TokenProblem, ValidateTokenRequest, ValidateTokenResponse};
use crate::token::{escalate, unix_now, unsigned, Claims, Signer};
use anyhow::ensure;
use std::fmt::Write as _;
use std::net::SocketAddr;
use tonic::transport::Channel;

/// A server to check: its name in the report and its gRPC address.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    /// Name in the report.
    pub name: &'a str,
    /// gRPC address.
    pub addr: SocketAddr,
}

/// A token a verifier must refuse, and why.
struct Refused {
    label: &'static str,
    token: String,
    problem: TokenProblem,
}

/// Tokens every verifier refuses; with `own` (the key the servers trust) also signed ones that
/// are expired, not yet valid, or for another issuer or audience.
fn refused_tokens(own: Option<&Signer>) -> anyhow::Result<Vec<Refused>> {
    let stranger = Signer::generate("bench-unknown-kid")?;
    let claims = serde_json::to_value(Claims::sample(600))?;
    let mut cases = vec![
        Refused {
            label: "not a JWT",
            token: "not-a-token".into(),
            problem: TokenProblem::Malformed,
        },
        Refused {
            label: "alg none",
            token: unsigned(&serde_json::json!({"alg": "none", "typ": "JWT"}), &claims)?,
            problem: TokenProblem::UnsupportedAlgorithm,
        },
        Refused {
            label: "alg HS256",
            token: stranger.mint_with(
                &serde_json::json!({"alg": "HS256", "typ": "JWT", "kid": "k1"}),
                &claims,
            )?,
            problem: TokenProblem::UnsupportedAlgorithm,
        },
        Refused {
            label: "unknown kid",
            token: stranger.mint(&Claims::sample(600))?,
            problem: TokenProblem::UnknownKey,
        },
        Refused {
            label: "9 KiB",
            token: "a".repeat(9 * 1024),
            problem: TokenProblem::Malformed,
        },
    ];
    if let Some(own) = own {
        let now = unix_now();
        let mut expired = Claims::sample(600);
        (expired.iat, expired.nbf, expired.exp) = (now - 100, now - 100, now - 10);
        let mut early = Claims::sample(600);
        (early.nbf, early.exp) = (now + 3600, now + 7200);
        let mut issuer = Claims::sample(600);
        issuer.iss = "someone-else".into();
        let mut audience = Claims::sample(600);
        audience.aud = "someone-else".into();
        for (label, claims, problem) in [
            ("expired", expired, TokenProblem::Expired),
            ("nbf in 1 h", early, TokenProblem::NotYetValid),
            ("other issuer", issuer, TokenProblem::Malformed),
            ("other audience", audience, TokenProblem::Malformed),
        ] {
            cases.push(Refused {
                label,
                token: own.mint(&claims)?,
                problem,
            });
        }
    }
    Ok(cases)
}

async fn validate(
    client: &mut AuthServiceClient<Channel>,
    token: &str,
) -> Result<ValidateTokenResponse, tonic::Status> {
    let request = ValidateTokenRequest {
        token: token.to_owned(),
        calling_service: "bench".into(),
    };
    Ok(client.validate_token(request).await?.into_inner())
}

/// Checks `targets` with `token`; returns report lines (`# ...`).
///
/// Fails when a target answers the token invalid, accepts a tampered copy, fills the answer
/// differently from the first target or from `expected`, or, when `strict`, refuses a token
/// with another problem than sdsim would (otherwise such differences are listed).
pub fn check(
    targets: &[Target<'_>],
    token: &str,
    own: Option<&Signer>,
    expected: Option<&Claims>,
    strict: bool,
) -> anyhow::Result<String> {
    let forged = escalate(token)?;
    let refused = refused_tokens(own)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut lines = String::new();
    let mut first: Option<ValidateTokenResponse> = None;
    for target in targets {
        let (good, bad, problems) = runtime.block_on(async {
            let mut client = AuthServiceClient::connect(format!("http://{}", target.addr)).await?;
            let good = validate(&mut client, token).await?;
            let bad = validate(&mut client, &forged).await?;
            let mut problems = Vec::new();
            for case in &refused {
                problems.push(validate(&mut client, &case.token).await?);
            }
            Ok::<_, anyhow::Error>((good, bad, problems))
        })?;
        let name = target.name;
        ensure!(
            good.valid && !good.user_id.is_empty(),
            "{name} answers the token invalid: {good:?}"
        );
        if let Some(c) = expected {
            ensure!(
                good.user_id == c.sub
                    && good.session_id == c.sid
                    && good.email == c.email
                    && good.roles == c.roles
                    && good.permissions == c.perms
                    && good.expires_at == c.exp as i64
                    && good.is_admin == c.roles.iter().any(|r| r == "admin"),
                "{name} answers other claims: {good:?}, expected {c:?}"
            );
        }
        if let Some(f) = &first {
            ensure!(
                *f == good,
                "{} and {name} answer differently: {f:?} vs {good:?}",
                targets[0].name
            );
        }
        ensure!(
            !bad.valid && bad.problem() == TokenProblem::BadSignature,
            "{name} does not refuse a tampered token as a bad signature: {bad:?}"
        );
        writeln!(
            lines,
            "# {name}: token valid (user {}, roles {:?}, perms {:?}); with \"admin\" added to its roles: {:?}",
            good.user_id,
            good.roles,
            good.permissions,
            bad.problem()
        )?;
        let mut verdicts = Vec::new();
        for (case, answer) in refused.iter().zip(&problems) {
            let right = !answer.valid && answer.problem() == case.problem;
            if !right {
                let message = format!(
                    "{name} answers the {} token valid={} {:?}, sdsim's rule is {:?}",
                    case.label,
                    answer.valid,
                    answer.problem(),
                    case.problem
                );
                ensure!(!strict, "{message}");
                eprintln!("warning: {message}");
            }
            verdicts.push(format!(
                "{} → {:?}{}",
                case.label,
                answer.problem(),
                if right { "" } else { " (DIFFERS)" }
            ));
        }
        writeln!(lines, "# {name} refuses: {}", verdicts.join(", "))?;
        first = Some(good);
    }
    Ok(lines)
}
