//! Passwords: strength (zxcvbn), argon2id hashing on a pool of threads off the shards (a hash
//! costs tens of milliseconds of CPU by design), and a bounded queue so a flood of logins gets
//! 503s instead of an unbounded backlog.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

/// Longest password accepted (bytes): hashing cost must not depend on attacker-chosen sizes.
pub const MAX_PASSWORD_BYTES: usize = 256;
/// Shortest password accepted (characters).
pub const MIN_PASSWORD_CHARS: usize = 8;

/// Why a password is refused at registration or reset.
pub fn weakness(password: &str, email: &str, min_score: u8) -> Option<String> {
    if password.len() > MAX_PASSWORD_BYTES {
        return Some(format!("must be at most {MAX_PASSWORD_BYTES} bytes"));
    }
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Some(format!("must be at least {MIN_PASSWORD_CHARS} characters"));
    }
    let local = email.split('@').next().unwrap_or_default();
    let estimate = zxcvbn::zxcvbn(password, &[email, local]);
    let score = u8::from(estimate.score());
    if score < min_score {
        let mut why = format!("is too weak (strength {score} of 4, at least {min_score} needed)");
        if let Some(feedback) = estimate.feedback() {
            if let Some(warning) = feedback.warning() {
                why.push_str(&format!(": {warning}"));
            }
            if let Some(tip) = feedback.suggestions().first() {
                why.push_str(&format!(". {tip}"));
            }
        }
        return Some(why);
    }
    None
}

enum Job {
    Hash(String, oneshot::Sender<Result<String, HashError>>),
    Verify(String, String, oneshot::Sender<bool>),
}

/// The hashing pool is busy (queue full) or gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("password hashing is overloaded; retry shortly")]
pub struct Busy;

/// A pool of hashing threads with a bounded queue.
pub struct Hasher {
    jobs: SyncSender<Job>,
    /// A fixed hash verified for unknown accounts, so their timing matches known ones.
    dummy: String,
}

impl Hasher {
    /// Starts `threads` hashing threads sharing a queue of `queue` jobs.
    pub fn start(threads: usize, queue: usize) -> std::io::Result<Arc<Hasher>> {
        let (tx, rx) = sync_channel::<Job>(queue.max(1));
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..threads.max(1) {
            let rx = Arc::clone(&rx);
            std::thread::Builder::new()
                .name(format!("sdsim-hash-{i}"))
                .spawn(move || loop {
                    let job = match rx.lock().unwrap_or_else(|e| e.into_inner()).recv() {
                        Ok(job) => job,
                        Err(_) => return,
                    };
                    match job {
                        Job::Hash(password, reply) => {
                            let _ = reply.send(hash_now(&password));
                        }
                        Job::Verify(password, hash, reply) => {
                            let _ = reply.send(verify_now(&password, &hash));
                        }
                    }
                })?;
        }
        let dummy =
            hash_now("not a real password, only for timing").map_err(std::io::Error::other)?;
        Ok(Arc::new(Hasher { jobs: tx, dummy }))
    }

    fn submit(&self, job: Job) -> Result<(), Busy> {
        self.jobs.try_send(job).map_err(|e| match e {
            TrySendError::Full(_) | TrySendError::Disconnected(_) => Busy,
        })
    }

    /// The argon2id PHC string of `password`.
    pub async fn hash(&self, password: &str) -> Result<String, Busy> {
        let (tx, rx) = oneshot::channel();
        self.submit(Job::Hash(password.to_string(), tx))?;
        rx.await.map_err(|_| Busy)?.map_err(|_| Busy)
    }

    /// Whether `password` matches `hash` (`None`: check against a dummy hash, answer false).
    pub async fn verify(&self, password: &str, hash: Option<&str>) -> Result<bool, Busy> {
        let (tx, rx) = oneshot::channel();
        let known = hash.is_some();
        let hash = hash.unwrap_or(&self.dummy).to_string();
        self.submit(Job::Verify(password.to_string(), hash, tx))?;
        Ok(rx.await.map_err(|_| Busy)? && known)
    }
}

/// Why argon2 did not hash a password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HashError {
    /// argon2 refused the input or its parameters (e.g. a password over its length limit).
    #[error("argon2: {0}")]
    Argon2(argon2::password_hash::Error),
}

/// The argon2id PHC string of `password`, on the calling thread (what a pool thread runs).
pub fn hash_now(password: &str) -> Result<String, HashError> {
    let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(HashError::Argon2)
}

/// Whether `password` matches the PHC string `hash`, on the calling thread (what a pool thread
/// runs for a login).
pub fn verify_now(password: &str, hash: &str) -> bool {
    match PasswordHash::new(hash) {
        Ok(parsed) => Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strength_rules() {
        assert!(weakness("short", "a@b.co", 3)
            .unwrap()
            .contains("at least 8"));
        assert!(weakness("password", "a@b.co", 3)
            .unwrap()
            .contains("too weak"));
        assert!(weakness("alice2024!", "alice2024@example.com", 4).is_some());
        assert!(weakness(&"x".repeat(300), "a@b.co", 0)
            .unwrap()
            .contains("at most"));
        assert_eq!(
            weakness("correct horse battery staple 9!", "a@b.co", 3),
            None
        );
    }

    #[test]
    fn hashes_verify_off_thread_and_the_queue_is_bounded() {
        let hasher = Hasher::start(1, 1).unwrap();
        let mut rt = monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
            .build()
            .unwrap();
        rt.block_on(async {
            let h = hasher.hash("correct horse battery staple").await.unwrap();
            assert!(h.starts_with("$argon2id$"));
            assert!(hasher
                .verify("correct horse battery staple", Some(&h))
                .await
                .unwrap());
            assert!(!hasher.verify("wrong", Some(&h)).await.unwrap());
            assert!(!hasher
                .verify("correct horse battery staple", None)
                .await
                .unwrap());
            assert!(!hasher.verify("x", Some("not a phc string")).await.unwrap());
        });
        // One thread, queue of one: a burst of submissions is refused, not queued forever.
        let mut refused = 0;
        let mut waiting = Vec::new();
        for _ in 0..10 {
            let (tx, rx) = oneshot::channel();
            match hasher.submit(Job::Hash("p".repeat(10), tx)) {
                Ok(()) => waiting.push(rx),
                Err(Busy) => refused += 1,
            }
        }
        assert!(refused >= 7, "refused {refused}");
    }
}
