//! [`MemoryStateStore`]: the state of one process, in a map. The default when no store is
//! given; state is lost with the process and not shared with other replicas.

use super::{
    ActionKey, ActionRecord, AgentLock, Change, Claim, ConcurrencySlots, LockList, LockTarget,
    Phase, RevocationList, StateError, StateStore, apply_change,
};
use crate::expiring::ExpiringSet;
use crate::ids::AgentId;
use async_trait::async_trait;
use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use time::OffsetDateTime;

/// Action state in this process's memory.
#[derive(Debug, Default)]
pub struct MemoryStateStore {
    records: Mutex<HashMap<ActionKey, ActionRecord>>,
    /// Revoked grant ids, each until its credential's expiry (Unix seconds).
    revoked: Mutex<ExpiringSet>,
    /// The kill switch's locks, by [`LockTarget::key`].
    locks: Mutex<std::collections::BTreeMap<String, AgentLock>>,
    /// Held concurrency slots: their holder and lease.
    slots: Mutex<HashMap<(AgentId, u32), (String, OffsetDateTime)>>,
}

impl MemoryStateStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many records it holds (expired ones included until pruned).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<ActionKey, ActionRecord>> {
        // Every critical section is one lookup and one insert or remove: a panic elsewhere
        // cannot leave the map half-changed.
        self.records.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[async_trait]
impl StateStore for MemoryStateStore {
    async fn claim(&self, record: &ActionRecord) -> Result<Claim, StateError> {
        let mut records = self.lock();
        if let Some(existing) = records.get(&record.key)
            && !existing.expired(record.created_at)
        {
            return Ok(Claim::Existing(Box::new(existing.clone())));
        }
        records.insert(record.key.clone(), record.clone());
        Ok(Claim::Claimed)
    }

    async fn get(&self, key: &ActionKey) -> Result<Option<ActionRecord>, StateError> {
        Ok(self.lock().get(key).cloned())
    }

    async fn update(&self, key: &ActionKey, change: &Change) -> Result<ActionRecord, StateError> {
        let mut records = self.lock();
        let Some(record) = records.get_mut(key) else {
            return Err(StateError::NotFound {
                message: format!("no action {key}"),
            });
        };
        let changed = apply_change(record, change)?;
        *record = changed.clone();
        Ok(changed)
    }

    async fn in_phase(&self, phase: Phase, limit: usize) -> Result<Vec<ActionRecord>, StateError> {
        let mut found: Vec<ActionRecord> = self
            .lock()
            .values()
            .filter(|r| r.phase == phase)
            .cloned()
            .collect();
        found.sort_by(|a, b| (a.created_at, &a.key).cmp(&(b.created_at, &b.key)));
        found.truncate(limit);
        Ok(found)
    }

    async fn prune(&self, now: OffsetDateTime) -> Result<u64, StateError> {
        let mut records = self.lock();
        let before = records.len();
        records.retain(|_, r| !r.expired(now));
        Ok(u64::try_from(before - records.len()).unwrap_or(u64::MAX))
    }
}

#[async_trait]
impl RevocationList for MemoryStateStore {
    async fn revoke(&self, grant_id: &str, not_after: OffsetDateTime) -> Result<(), StateError> {
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let mut revoked = self.revoked.lock().unwrap_or_else(PoisonError::into_inner);
        revoked.purge(now);
        revoked.insert(grant_id, not_after.unix_timestamp(), now);
        Ok(())
    }

    async fn is_revoked(&self, grant_id: &str, now: OffsetDateTime) -> Result<bool, StateError> {
        let revoked = self.revoked.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(revoked.contains(grant_id, now.unix_timestamp()))
    }

    async fn prune_revocations(&self, now: OffsetDateTime) -> Result<u64, StateError> {
        let mut revoked = self.revoked.lock().unwrap_or_else(PoisonError::into_inner);
        let before = revoked.len();
        revoked.purge(now.unix_timestamp());
        Ok(u64::try_from(before - revoked.len()).unwrap_or(u64::MAX))
    }
}

#[async_trait]
impl LockList for MemoryStateStore {
    async fn lock(&self, lock: &AgentLock) -> Result<(), StateError> {
        let mut locks = self.locks.lock().unwrap_or_else(PoisonError::into_inner);
        locks.insert(lock.target.key(), lock.clone());
        Ok(())
    }

    async fn unlock(&self, target: &LockTarget) -> Result<bool, StateError> {
        let mut locks = self.locks.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(locks.remove(&target.key()).is_some())
    }

    async fn locks(&self) -> Result<Vec<AgentLock>, StateError> {
        let locks = self.locks.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(locks.values().cloned().collect())
    }
}

#[async_trait]
impl ConcurrencySlots for MemoryStateStore {
    async fn acquire_slot(
        &self,
        agent: &AgentId,
        limit: u32,
        holder: &str,
        lease: std::time::Duration,
    ) -> Result<Option<u32>, StateError> {
        let now = OffsetDateTime::now_utc();
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        let free = (0..limit).find(|slot| {
            slots
                .get(&(agent.clone(), *slot))
                .is_none_or(|(_, until)| *until <= now)
        });
        if let Some(slot) = free {
            slots.insert((agent.clone(), slot), (holder.to_owned(), now + lease));
        }
        Ok(free)
    }

    async fn renew_slot(
        &self,
        agent: &AgentId,
        slot: u32,
        holder: &str,
        lease: std::time::Duration,
    ) -> Result<bool, StateError> {
        let now = OffsetDateTime::now_utc();
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        match slots.get_mut(&(agent.clone(), slot)) {
            Some((held_by, until)) if held_by == holder && *until > now => {
                *until = now + lease;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn release_slot(
        &self,
        agent: &AgentId,
        slot: u32,
        holder: &str,
    ) -> Result<(), StateError> {
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        let key = (agent.clone(), slot);
        if slots
            .get(&key)
            .is_some_and(|(held_by, _)| held_by == holder)
        {
            slots.remove(&key);
        }
        Ok(())
    }
}
