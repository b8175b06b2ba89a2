//! Outgoing mail through an outbox table: the mail is written in the same transaction as the
//! token it carries, and a dispatcher (one task on shard 0) hands it to the sender, marks it
//! sent and blanks its body (the body holds a live secret). Failed sends are retried with
//! backoff. Senders: the log (default) or a JSON-lines file.

use sdsim_store::{Statement, Store, StoreError, Value};
use std::io::Write;
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::Notify;

/// Why a sender did not deliver a mail (the dispatcher logs it and retries the mail later).
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The mail could not be written as a JSON line.
    #[error("encoding the mail as JSON: {0}")]
    Encode(#[from] sonic_rs::Error),
    /// The mail file could not be written.
    #[error("writing the mail file: {0}")]
    Write(#[from] std::io::Error),
}

/// Where mail goes.
pub trait Sender: Send + Sync {
    /// Delivers one mail.
    fn send(&self, kind: &str, recipient: &str, body: &str) -> Result<(), SendError>;
}

/// Logs every mail at info level (local development and tests).
pub struct LogSender;

impl Sender for LogSender {
    fn send(&self, kind: &str, recipient: &str, body: &str) -> Result<(), SendError> {
        tracing::info!(target: "sdsim::mail", kind, to = recipient, body, "mail");
        Ok(())
    }
}

/// Appends one JSON object per mail to a file.
pub struct FileSender(Mutex<std::fs::File>);

impl FileSender {
    /// Opens (creating) `path` for appending.
    pub fn open(path: &str) -> std::io::Result<FileSender> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        Ok(FileSender(Mutex::new(file)))
    }
}

impl Sender for FileSender {
    fn send(&self, kind: &str, recipient: &str, body: &str) -> Result<(), SendError> {
        #[derive(serde::Serialize)]
        struct Line<'a> {
            kind: &'a str,
            to: &'a str,
            body: &'a str,
        }
        let mut line = sonic_rs::to_vec(&Line {
            kind,
            to: recipient,
            body,
        })?;
        line.push(b'\n');
        let mut file = self.0.lock().unwrap_or_else(|e| e.into_inner());
        Ok(file.write_all(&line)?)
    }
}

/// The outbox and its sender.
pub struct Mail {
    sender: Box<dyn Sender>,
    wake: Notify,
}

/// Attempts after which a mail is given up (and logged).
const MAX_ATTEMPTS: i64 = 8;

/// Seconds a dispatcher's claim on a mail lasts: far longer than a send takes, short enough
/// that a mail claimed by an instance that died goes out the same hour.
pub const CLAIM_LEASE_S: i64 = 300;

impl Mail {
    /// From `auth.mail_sender` ("log" or "file:PATH").
    pub fn from_config(setting: &str) -> std::io::Result<Mail> {
        let sender: Box<dyn Sender> = match setting.strip_prefix("file:") {
            Some(path) => Box::new(FileSender::open(path)?),
            None => Box::new(LogSender),
        };
        Ok(Mail::new(sender))
    }

    /// With a sender of one's own.
    pub fn new(sender: Box<dyn Sender>) -> Mail {
        Mail {
            sender,
            wake: Notify::new(),
        }
    }

    /// The statement queuing a mail (run it in the transaction that creates what it carries).
    pub fn queue(&self, kind: &str, recipient: &str, body: &str, now: i64) -> Statement {
        Statement::new(
            "INSERT INTO auth_schema.outbox (kind, recipient, payload, created_at) VALUES ($1, $2, $3, $4)",
            vec![
                Value::Text(kind.into()),
                Value::Text(recipient.into()),
                Value::Text(body.into()),
                Value::Int(now),
            ],
        )
    }

    /// Tells the dispatcher there is mail.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Sends what is due; returns how many were sent. Each mail is claimed before it is sent,
    /// so dispatchers of several instances on one database never both send it: the claim is a
    /// conditional update that only one of them can win (PostgreSQL re-checks the condition
    /// of a row another transaction changed meanwhile). A claim lasts [`CLAIM_LEASE_S`]; a
    /// mail whose dispatcher died mid-send goes out again after it.
    pub async fn dispatch_once(&self, store: &Store, now: i64) -> Result<usize, StoreError> {
        let rows = store
            .query(
                "SELECT id, kind, recipient, payload, attempts FROM auth_schema.outbox WHERE sent_at IS NULL AND attempts < $1 AND (claimed_until IS NULL OR claimed_until <= $2) ORDER BY id LIMIT 100",
                vec![Value::Int(MAX_ATTEMPTS), Value::Int(now)],
            )
            .await?;
        let mut sent = 0;
        for row in rows {
            let id = row.int(0)?;
            let claimed = store
                .execute(
                    "UPDATE auth_schema.outbox SET claimed_until = $2 WHERE id = $1 AND sent_at IS NULL AND (claimed_until IS NULL OR claimed_until <= $3)",
                    vec![Value::Int(id), Value::Int(now + CLAIM_LEASE_S), Value::Int(now)],
                )
                .await?;
            if claimed != 1 {
                // Another dispatcher sent it or is sending it.
                continue;
            }
            match self.sender.send(row.text(1)?, row.text(2)?, row.text(3)?) {
                Ok(()) => {
                    store
                        .execute(
                            "UPDATE auth_schema.outbox SET sent_at = $2, payload = '', attempts = attempts + 1, claimed_until = NULL WHERE id = $1",
                            vec![Value::Int(id), Value::Int(now)],
                        )
                        .await?;
                    sent += 1;
                }
                Err(e) => {
                    let attempts = row.int(4)? + 1;
                    tracing::warn!(id, attempts, error = %e, "mail not sent");
                    store
                        .execute(
                            "UPDATE auth_schema.outbox SET attempts = $2, claimed_until = NULL WHERE id = $1",
                            vec![Value::Int(id), Value::Int(attempts)],
                        )
                        .await?;
                }
            }
        }
        Ok(sent)
    }

    /// The dispatcher loop: on wake-up, and every few seconds for retries.
    pub async fn run(&self, store: &Store) {
        let mut pause = Duration::from_secs(2);
        loop {
            match self.dispatch_once(store, crate::service::now()).await {
                Ok(_) => pause = Duration::from_secs(2),
                Err(e) => {
                    tracing::warn!(error = %e, "mail dispatcher: storage unavailable");
                    pause = (pause * 2).min(Duration::from_secs(60));
                }
            }
            monoio::select! {
                _ = self.wake.notified() => {}
                _ = monoio::time::sleep(pause) => {}
            }
        }
    }
}
