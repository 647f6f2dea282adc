//! The kill switch on one replica: refuses a locked agent's new requests and stops its live
//! actions (waiting for approval, or running: the job is cancelled, and the pipeline's own
//! revocation and terminal record follow as on every path).
//!
//! The locks live in the shared state store ([`LockList`]); this replica reads them at most
//! [`LOCK_CACHE`] apart on the request path, and a watcher
//! ([`Gateway::spawn_lock_watch`](crate::Gateway::spawn_lock_watch)) reads them every tick
//! and stops what they cover, so a lock made on any replica reaches this one within about the
//! watcher's period. A list that cannot be read refuses new requests (fail closed).

use super::events::{Completion, RecordedStage, Status};
use super::stop::{Stop, Terminal};
use super::{GatewayError, Stage};
use crate::error::ErrorKind;
use crate::ids::{AgentId, RequestId};
use crate::state::{ActionKey, AgentLock, StateError, StateStore};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// The oldest list of locks the request path goes by before reading it again.
pub const LOCK_CACHE: Duration = Duration::from_secs(1);

/// A live action was stopped because its agent (or owner) was locked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("stopped by the kill switch: {lock}")]
pub struct StoppedByKillSwitch {
    /// The lock that stopped it.
    pub lock: AgentLock,
}

/// The locks as last read, and when.
struct Snapshot {
    read_at: Instant,
    locks: Arc<Vec<AgentLock>>,
}

/// One live action of this replica, as the switch sees it.
struct Live {
    owner: String,
    cancel: CancellationToken,
    stopped_by: Arc<OnceLock<AgentLock>>,
}

pub(crate) struct KillSwitch {
    state: Arc<dyn StateStore>,
    snapshot: Mutex<Option<Snapshot>>,
    /// One read of the list at a time: requests that find the snapshot stale wait for it.
    reading: tokio::sync::Mutex<()>,
    live: Mutex<HashMap<ActionKey, Live>>,
}

/// A live action registered with the switch until dropped.
pub(crate) struct LiveAction<'a> {
    switch: &'a KillSwitch,
    key: ActionKey,
    stopped_by: Arc<OnceLock<AgentLock>>,
}

impl LiveAction<'_> {
    /// `stop` as the kill switch's, when the switch stopped this action (it cancelled it and
    /// said why); any other stop, and a stop without a terminal record to write (an audit
    /// failure), stays as it is.
    pub(crate) fn explain(&self, id: RequestId, stop: Stop) -> Stop {
        let Some(lock) = self.stopped_by.get() else {
            return stop;
        };
        let grant_revoked = match &stop.terminal {
            None => return stop,
            Some(Terminal::Completed(Completion::Stopped { grant_revoked, .. })) => *grant_revoked,
            Some(_) => None,
        };
        let stopped = StoppedByKillSwitch { lock: lock.clone() };
        let message = stopped.to_string();
        Stop::completed(
            Completion::Stopped {
                status: Status::Denied,
                stage: Some(RecordedStage::Stage(Stage::KillSwitch)),
                kind: ErrorKind::Denied,
                reason: message.clone(),
                grant_revoked,
            },
            GatewayError::Backend {
                correlation_id: id,
                stage: Stage::KillSwitch,
                kind: ErrorKind::Denied,
                message,
                source: Box::new(stopped),
            },
        )
    }
}

impl Drop for LiveAction<'_> {
    fn drop(&mut self) {
        self.switch.live().remove(&self.key);
    }
}

impl KillSwitch {
    pub(crate) fn new(state: Arc<dyn StateStore>) -> Self {
        Self {
            state,
            snapshot: Mutex::new(None),
            reading: tokio::sync::Mutex::new(()),
            live: Mutex::new(HashMap::new()),
        }
    }

    fn live(&self) -> MutexGuard<'_, HashMap<ActionKey, Live>> {
        // Each critical section is one insert, remove or scan: nothing is left half-done.
        self.live.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The lock that stops `agent` (owned by `owner`), from a list at most [`LOCK_CACHE`]
    /// old. `Err` when the list cannot be read: refuse the request.
    pub(crate) async fn lock_of(
        &self,
        agent: &AgentId,
        owner: &str,
    ) -> Result<Option<AgentLock>, StateError> {
        let locks = match self.fresh() {
            Some(locks) => locks,
            None => {
                let _one_reader = self.reading.lock().await;
                match self.fresh() {
                    Some(locks) => locks,
                    None => self.read().await?,
                }
            }
        };
        Ok(locks
            .iter()
            .find(|l| l.target.covers(agent, owner))
            .cloned())
    }

    /// The snapshot, if it is fresh.
    fn fresh(&self) -> Option<Arc<Vec<AgentLock>>> {
        let snapshot = self.snapshot.lock().unwrap_or_else(PoisonError::into_inner);
        snapshot
            .as_ref()
            .filter(|s| s.read_at.elapsed() < LOCK_CACHE)
            .map(|s| Arc::clone(&s.locks))
    }

    /// Reads the list from the store and keeps it as the snapshot.
    async fn read(&self) -> Result<Arc<Vec<AgentLock>>, StateError> {
        let read_at = Instant::now();
        let locks = Arc::new(self.state.locks().await?);
        *self.snapshot.lock().unwrap_or_else(PoisonError::into_inner) = Some(Snapshot {
            read_at,
            locks: Arc::clone(&locks),
        });
        Ok(locks)
    }

    /// Registers a live action: the switch may stop it through `cancel` until the returned
    /// guard is dropped.
    pub(crate) fn enter(
        &self,
        key: ActionKey,
        owner: &str,
        cancel: CancellationToken,
    ) -> LiveAction<'_> {
        let stopped_by = Arc::new(OnceLock::new());
        self.live().insert(
            key.clone(),
            Live {
                owner: owner.to_owned(),
                cancel,
                stopped_by: Arc::clone(&stopped_by),
            },
        );
        LiveAction {
            switch: self,
            key,
            stopped_by,
        }
    }

    /// Reads the list now and stops every live action of this replica it covers; how many.
    pub(crate) async fn enforce(&self) -> Result<usize, StateError> {
        let locks = {
            let _one_reader = self.reading.lock().await;
            self.read().await?
        };
        let live = self.live();
        let mut stopped = 0;
        for (key, action) in live.iter() {
            let Some(lock) = locks
                .iter()
                .find(|l| l.target.covers(&key.agent, &action.owner))
            else {
                continue;
            };
            // The reason first, then the cancellation that makes the pipeline read it.
            if action.stopped_by.set(lock.clone()).is_ok() {
                tracing::warn!(action = %key, %lock, "kill switch: stopping a live action");
                action.cancel.cancel();
                stopped += 1;
            }
        }
        Ok(stopped)
    }
}
