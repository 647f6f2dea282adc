//! A set of keys, each remembered until its own expiry: the revocation list of
//! [`HmacBroker`](crate::hmac_broker::HmacBroker) and replay caches of single-use tokens.
//!
//! Expired keys are forgotten in expiry order through a min-heap, at O(log n) each, so the cost
//! of forgetting never depends on how many keys are still live. (A scan of the whole set on every
//! insert made a busy broker's revocations quadratic: with a 60 s TTL at 10k grants/s the set
//! holds 600k entries, and the scan took a quarter of the gateway's CPU at 64 agents.)

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

/// Keys with expiry times (any monotonic integer unit, e.g. Unix seconds or milliseconds).
///
/// A key counts as held while its expiry is after `now`; [`purge`](Self::purge) drops the
/// expired ones. Memory is bounded by the keys inserted and not yet purged.
#[derive(Debug, Default)]
pub struct ExpiringSet {
    /// Each key's expiry.
    until: HashMap<String, i64>,
    /// The same expiries, earliest first. A key whose expiry was extended also has its older
    /// entry here; that entry is skipped when it surfaces.
    by_expiry: BinaryHeap<Reverse<(i64, String)>>,
}

impl ExpiringSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Forgets every key whose expiry is at or before `now`.
    pub fn purge(&mut self, now: i64) {
        while self
            .by_expiry
            .peek()
            .is_some_and(|Reverse((until, _))| *until <= now)
        {
            let Some(Reverse((until, key))) = self.by_expiry.pop() else {
                break;
            };
            // Only the key's current expiry removes it; an older, extended one does not.
            if self.until.get(&key) == Some(&until) {
                self.until.remove(&key);
            }
        }
    }

    /// Whether `key` is held, unexpired, at `now`.
    pub fn contains(&self, key: &str, now: i64) -> bool {
        self.until.get(key).is_some_and(|until| *until > now)
    }

    /// Holds `key` until `until`, or until its current expiry if that is later. A key that
    /// would already be expired at `now` is not stored.
    pub fn insert(&mut self, key: &str, until: i64, now: i64) {
        if until <= now {
            return;
        }
        match self.until.get_mut(key) {
            Some(current) if *current >= until => return,
            Some(current) => *current = until,
            None => {
                self.until.insert(key.to_owned(), until);
            }
        }
        self.by_expiry.push(Reverse((until, key.to_owned())));
    }

    /// Keys stored, including expired ones not yet purged.
    pub fn len(&self) -> usize {
        self.until.len()
    }

    /// Whether no key is stored.
    pub fn is_empty(&self) -> bool {
        self.until.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_held_until_their_expiry_and_purged_in_order() {
        let mut set = ExpiringSet::new();
        set.insert("a", 10, 0);
        set.insert("b", 30, 0);
        set.insert("c", 20, 0);
        assert!(set.contains("a", 9));
        assert!(
            !set.contains("a", 10),
            "held only while the expiry is after now"
        );
        set.purge(20);
        assert_eq!(set.len(), 1);
        assert!(!set.contains("c", 0), "purged keys are gone");
        assert!(set.contains("b", 20));
        set.purge(30);
        assert!(set.is_empty());
    }

    #[test]
    fn an_extended_expiry_survives_the_purge_of_the_old_one() {
        let mut set = ExpiringSet::new();
        set.insert("a", 10, 0);
        set.insert("a", 50, 5);
        // A shorter expiry never shortens the hold.
        set.insert("a", 20, 5);
        set.purge(40);
        assert!(set.contains("a", 40));
        set.purge(50);
        assert!(set.is_empty());
        assert!(
            set.by_expiry.is_empty(),
            "no stale heap entry is left behind"
        );
    }

    #[test]
    fn already_expired_keys_are_not_stored() {
        let mut set = ExpiringSet::new();
        set.insert("a", 5, 5);
        set.insert("b", 4, 5);
        assert!(set.is_empty());
    }
}
