//! Single-use tokens: a bounded cache of seen `jti`s, each kept until its token expires.

use std::collections::HashMap;
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
    /// jti -> the time (Unix seconds) after which the token can no longer be presented.
    seen: Mutex<HashMap<String, f64>>,
}

impl JtiCache {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            capacity,
            seen: Mutex::new(HashMap::new()),
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
        // The map stays consistent even if a holder panicked: each operation is one insert.
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(until) = seen.get(jti)
            && *until > now
        {
            return Err(ReplayError::Replayed);
        }
        if seen.len() >= self.capacity && !seen.contains_key(jti) {
            seen.retain(|_, until| *until > now);
            if seen.len() >= self.capacity {
                return Err(ReplayError::Full);
            }
        }
        seen.insert(jti.to_owned(), forget_after);
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
