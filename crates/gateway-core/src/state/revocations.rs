//! Revoked grants, shared: a credential revoked on one replica (or by a recovery sweep on
//! another) must fail on every verifier, not only on the one in the revoking process.
//!
//! A [`RevocationList`] holds each revoked grant id until its credential's own expiry (after
//! that the credential fails by itself, so the entry can go). The state store backends
//! implement it on the store they already share; [`CachedRevocations`] is what a verifier puts
//! in front of it: a short cache, so a busy target does not ask the store for every request,
//! and a hard rule that a verifier which cannot consult the list refuses (fail closed).

use super::StateError;
use async_trait::async_trait;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use time::OffsetDateTime;

/// Revoked grant ids, shared by every replica and verifier using the same backend.
///
/// Conformance: `gateway_core::conformance::state::run_revocations`.
#[async_trait]
pub trait RevocationList: Send + Sync + 'static {
    /// Records `grant_id` as revoked until `not_after` (its credential's expiry). Idempotent;
    /// a later `not_after` extends the entry, an earlier one never shortens it.
    async fn revoke(&self, grant_id: &str, not_after: OffsetDateTime) -> Result<(), StateError>;

    /// Whether `grant_id` is revoked and its entry not yet past at `now`.
    async fn is_revoked(&self, grant_id: &str, now: OffsetDateTime) -> Result<bool, StateError>;

    /// Deletes the entries past at `now` (their credentials have expired); returns how many.
    async fn prune_revocations(&self, now: OffsetDateTime) -> Result<u64, StateError>;
}

/// The longest [`CachedRevocations`] serves an answer "not revoked" without asking again: a
/// revocation reaches every verifier within this bound.
pub const DEFAULT_REVOCATION_CACHE: Duration = Duration::from_secs(1);

/// Answers kept at most this many; past it, stale answers are dropped first.
const MAX_CACHED: usize = 100_000;

/// A [`RevocationList`] behind a short cache, for verifiers.
///
/// "Revoked" is kept until the entry's expiry (a revocation is never undone); "not revoked" is
/// kept for `max_age`, so a revocation made anywhere takes effect on this verifier within
/// `max_age`. When the list cannot be consulted and no fresh answer is cached, the check fails:
/// the caller must refuse the credential.
#[derive(Clone)]
pub struct CachedRevocations {
    list: Arc<dyn RevocationList>,
    max_age: Duration,
    answers: Arc<Mutex<HashMap<String, Answer>>>,
}

#[derive(Debug, Clone, Copy)]
struct Answer {
    revoked: bool,
    at: Instant,
}

impl std::fmt::Debug for CachedRevocations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachedRevocations")
            .field("max_age", &self.max_age)
            .finish_non_exhaustive()
    }
}

impl CachedRevocations {
    /// `list` behind a cache of "not revoked" answers at most `max_age` old.
    pub fn new(list: Arc<dyn RevocationList>, max_age: Duration) -> Self {
        Self {
            list,
            max_age,
            answers: Arc::default(),
        }
    }

    /// The shared list.
    pub fn list(&self) -> &Arc<dyn RevocationList> {
        &self.list
    }

    /// Whether `grant_id` is revoked, from a fresh cached answer if there is one, else from
    /// the list. `Err` when the list cannot answer: refuse the credential.
    pub async fn is_revoked(
        &self,
        grant_id: &str,
        now: OffsetDateTime,
    ) -> Result<bool, StateError> {
        if let Some(revoked) = self.cached(grant_id) {
            return Ok(revoked);
        }
        let revoked = self.list.is_revoked(grant_id, now).await?;
        self.remember(grant_id, revoked);
        Ok(revoked)
    }

    /// A fresh cached answer, without asking the list.
    pub fn cached(&self, grant_id: &str) -> Option<bool> {
        let answers = self.answers.lock().unwrap_or_else(PoisonError::into_inner);
        let answer = answers.get(grant_id)?;
        (answer.revoked || answer.at.elapsed() < self.max_age).then_some(answer.revoked)
    }

    /// Records a revocation made through this verifier's side at once (no wait for the cache).
    pub fn remember_revoked(&self, grant_id: &str) {
        self.remember(grant_id, true);
    }

    fn remember(&self, grant_id: &str, revoked: bool) {
        let mut answers = self.answers.lock().unwrap_or_else(PoisonError::into_inner);
        if answers.len() >= MAX_CACHED {
            // Stale "not revoked" answers are worth nothing; a "revoked" one is only a saved
            // round trip (the list still holds it), so it may go too if need be.
            let max_age = self.max_age;
            answers.retain(|_, a| a.revoked && a.at.elapsed() < max_age * 60);
            if answers.len() >= MAX_CACHED {
                answers.clear();
            }
        }
        answers.insert(
            grant_id.to_owned(),
            Answer {
                revoked,
                at: Instant::now(),
            },
        );
    }
}
