//! Revoked sessions reaching every shard's verifier: the bus for speed, storage as the record.

use crate::service::{self, REVOCATIONS};
use crate::verifier::Verifier;
use crate::REVOCATION_DELAY;
use sdsim_core::bus::{Bus, Event, Sink};
use sdsim_core::metrics::{Key, Metrics};
use sdsim_store::Store;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

/// Applies revocations announced on the bus to this shard's verifier.
struct RevocationSink(Arc<Verifier>, Rc<Metrics>);

impl Sink for RevocationSink {
    fn push(&self, event: &Arc<Event>) -> bool {
        match sonic_rs::from_slice::<service::Revocation>(&event.data) {
            Ok(r) => {
                self.0.revoke(&r.sessions, r.until);
                if r.at_us > 0 {
                    let delay = service::now_us().saturating_sub(r.at_us);
                    self.1.record_us(Key::plain(REVOCATION_DELAY), delay);
                }
            }
            Err(e) => tracing::warn!(error = %e, "malformed revocation on the bus"),
        }
        true
    }
}

/// Where a shard's reads of revoked sessions resume: every revocation stamped before the newest
/// one seen, less a margin for clocks that differ between the instances that stamp them, has
/// been applied.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Reconcile {
    newest: Option<i64>,
}

impl Reconcile {
    /// Instances' clocks may differ by this much: a revocation stamped by a slower clock after
    /// the newest one seen is still read.
    const CLOCK_SKEW_S: i64 = 30;

    fn saw(&mut self, revoked_at: i64) {
        self.newest = Some(self.newest.map_or(revoked_at, |n| n.max(revoked_at)));
    }

    /// The `since` of the next read: from the newest seen less the skew margin, never older
    /// than a token's lifetime (older revocations no longer matter).
    fn since(&self, now: i64, ttl: i64) -> i64 {
        let horizon = now - ttl + 1;
        match self.newest {
            Some(n) => (n - Self::CLOCK_SKEW_S).max(horizon),
            None => horizon,
        }
    }
}

/// Where a shard reads revocations from, and how often.
pub(crate) struct Source {
    /// The storage holding `auth_schema.sessions`.
    pub(crate) store: Store,
    /// How long an access token lives: revocations older than that no longer matter.
    pub(crate) access_ttl: Duration,
    /// How often storage is read.
    pub(crate) sync: Duration,
}

/// Starts the task that keeps this shard's `verifier` told of revoked sessions: the bus
/// channel (every shard of this instance, and through Redis every instance) and storage (the
/// record, read every `sync` and when the link to other instances comes back).
pub(crate) fn spawn(
    shard: &sdsim_core::runtime::Shard,
    verifier: Arc<Verifier>,
    source: Source,
    bus: Rc<Bus>,
    metrics: Rc<Metrics>,
) {
    shard.spawn("auth-revocations", async move {
        let ttl = source.access_ttl.as_secs() as i64;
        let sink = Rc::new(RevocationSink(Arc::clone(&verifier), metrics));
        // Subscribe first, then load what storage knows: nothing falls between the two.
        let subscription = loop {
            match bus.subscribe(REVOCATIONS, sink.clone(), None).await {
                Ok((sub, attached)) => {
                    sub.activate(attached.seq);
                    break sub;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "revocation channel: retrying");
                    monoio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        };
        let mut pause = Duration::from_millis(200);
        let mut reconcile = loop {
            match service::revocations_since(&source.store, service::now() - ttl + 1).await {
                Ok(list) => {
                    let mut reconcile = Reconcile::default();
                    for (sid, revoked_at) in list {
                        reconcile.saw(revoked_at);
                        verifier.revoke(&[sid], revoked_at + ttl);
                    }
                    break reconcile;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "loading revoked sessions: retrying");
                    monoio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(10));
                }
            }
        };
        let mut swept = std::time::Instant::now();
        loop {
            // Storage is the record of every revocation; broadcasts are only the fast path.
            // Read it every `sync`, and at once when the link to other instances comes back
            // (what they published while it was down was lost).
            let links = sdsim_core::bus::remote_links();
            monoio::select! {
                _ = monoio::time::sleep(source.sync) => {}
                _ = sdsim_core::bus::remote_link_changed(links) => {}
            }
            match service::revocations_since(&source.store, reconcile.since(service::now(), ttl))
                .await
            {
                Ok(list) => {
                    for (sid, revoked_at) in list {
                        reconcile.saw(revoked_at);
                        verifier.revoke(&[sid], revoked_at + ttl);
                    }
                }
                Err(e) => tracing::debug!(error = %e, "reading revoked sessions: next time"),
            }
            if swept.elapsed() >= Duration::from_secs(30) {
                verifier.sweep(service::now());
                swept = std::time::Instant::now();
            }
            let _ = subscription.channel();
        }
    });
}

#[cfg(test)]
mod tests {
    use super::Reconcile;

    #[test]
    fn reconciliation_resumes_from_the_newest_revocation_less_the_clock_margin() {
        let mut r = Reconcile::default();
        // Nothing seen: everything within a token's lifetime.
        assert_eq!(r.since(10_000, 900), 9_101);
        r.saw(9_500);
        r.saw(9_400);
        assert_eq!(r.since(10_000, 900), 9_500 - Reconcile::CLOCK_SKEW_S);
        // Never older than a token's lifetime, however long ago the last one was.
        assert_eq!(r.since(20_000, 900), 19_101);
    }
}
