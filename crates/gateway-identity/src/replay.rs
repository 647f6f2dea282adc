//! Single-use tokens: a bounded cache of seen `jti`s, each kept until its token expires.

use gateway_core::expiring::ExpiringSet;
use std::sync::Mutex;

/// The longest `jti` accepted, in bytes.
const MAX_JTI_LEN: usize = 256;

/// Why a token was refused by the replay cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReplayError {
    /// The token has no usable `jti`.
    MissingJti,
    /// The `jti` was seen before and its token has not expired.
    Replayed,
    /// The cache is full of unexpired entries; refusing is the only safe answer.
    Full,
}

/// Remembers `jti`s until their tokens expire.
#[derive(Debug)]
pub(crate) struct JtiCache {
    capacity: usize,
    /// Seen `jti`s, each until the time (Unix milliseconds) after which its token can no longer
    /// be presented. Expired ones are purged in expiry order, so a cache kept full by an
    /// attacker costs no scan per request.
    seen: Mutex<ExpiringSet>,
}

/// Unix seconds to whole milliseconds, rounded up: an entry is never forgotten early.
fn millis(seconds: f64) -> i64 {
    // Saturating float-to-int conversion; the times come from a clock and validated claims.
    (seconds * 1000.0).ceil() as i64
}

impl JtiCache {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            capacity,
            seen: Mutex::new(ExpiringSet::new()),
        }
    }

    /// Records `jti` as used until `forget_after`, or refuses it.
    pub(crate) fn check_and_insert(
        &self,
        jti: Option<&str>,
        forget_after: f64,
        now: f64,
    ) -> Result<(), ReplayError> {
        let jti = match jti {
            Some(j) if !j.is_empty() && j.len() <= MAX_JTI_LEN => j,
            _ => return Err(ReplayError::MissingJti),
        };
        let now = millis(now);
        // A poisoned lock is taken over: the set's operations do not panic part-way.
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        seen.purge(now);
        if seen.contains(jti, now) {
            return Err(ReplayError::Replayed);
        }
        if seen.len() >= self.capacity {
            return Err(ReplayError::Full);
        }
        seen.insert(jti, millis(forget_after), now);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replays_are_refused_until_expiry_and_the_cache_is_bounded() {
        let cache = JtiCache::new(2);
        assert_eq!(
            cache.check_and_insert(None, 10.0, 0.0),
            Err(ReplayError::MissingJti)
        );
        assert_eq!(
            cache.check_and_insert(Some(""), 10.0, 0.0),
            Err(ReplayError::MissingJti)
        );
        assert!(cache.check_and_insert(Some("a"), 10.0, 0.0).is_ok());
        assert_eq!(
            cache.check_and_insert(Some("a"), 10.0, 5.0),
            Err(ReplayError::Replayed)
        );
        assert!(cache.check_and_insert(Some("b"), 20.0, 5.0).is_ok());
        assert_eq!(
            cache.check_and_insert(Some("c"), 20.0, 5.0),
            Err(ReplayError::Full)
        );
        // Once "a" expired its slot is reclaimed.
        assert!(cache.check_and_insert(Some("c"), 20.0, 11.0).is_ok());
        assert_eq!(
            cache.check_and_insert(Some("b"), 20.0, 12.0),
            Err(ReplayError::Replayed)
        );
    }
}
