//! An agent's concurrency cap across replicas ([`AgentLimits::across_replicas`]): besides its
//! slot on this replica, an action holds one of the agent's slots in the shared store
//! ([`ConcurrencySlots`]), under a lease this replica renews while the job runs, and gives it
//! back at its end (or while it waits for a human). A replica that dies loses its slots when
//! their leases pass.
//!
//! [`AgentLimits::across_replicas`]: super::AgentLimits::across_replicas
//! [`ConcurrencySlots`]: crate::state::ConcurrencySlots

use super::guard::{CallError, guarded};
use crate::ids::{AgentId, RequestId};
use crate::state::{StateError, StateStore};
use std::time::Duration;
use tracing::Instrument;

/// One of an agent's slots in the shared store, held by one action of this replica.
#[derive(Debug, Clone)]
pub(crate) struct SharedSlot {
    pub(crate) agent: AgentId,
    pub(crate) slot: u32,
    /// `<replica>/<correlation id>`: unique to the action.
    pub(crate) holder: String,
}

/// How often a waiting acquisition looks for a freed slot.
const POLL: Duration = Duration::from_millis(100);

/// The shared slots as one replica uses them.
pub(crate) struct SharedSlots<'a> {
    pub(crate) state: &'a dyn StateStore,
    pub(crate) replica: &'a str,
    /// The cap, when it is shared; `None`: nothing is taken.
    pub(crate) cap: Option<u32>,
    /// How long a slot is held before the job starts (its lease is renewed with the run
    /// lease from then on): long enough for the policy and the broker to answer.
    pub(crate) first_lease: Duration,
    /// The run lease, what each renewal holds a slot for.
    pub(crate) run_lease: Duration,
    /// The deadline of each store call.
    pub(crate) timeout: Duration,
}

impl SharedSlots<'_> {
    /// One of `agent`'s shared slots for action `id`, if the cap is shared: `Ok(None)` when
    /// it is not, `Err(None)` when every slot is held, `Err(Some(e))` when the store failed.
    pub(crate) async fn take(
        &self,
        agent: &AgentId,
        id: RequestId,
    ) -> Result<Option<SharedSlot>, Option<CallError<StateError>>> {
        let Some(cap) = self.cap else {
            return Ok(None);
        };
        let holder = format!("{}/{id}", self.replica);
        let taken = guarded(
            self.state
                .acquire_slot(agent, cap, &holder, self.first_lease),
            self.timeout,
            None,
        )
        .instrument(tracing::info_span!("state.acquire_slot"))
        .await
        .map_err(Some)?;
        match taken {
            Some(slot) => Ok(Some(SharedSlot {
                agent: agent.clone(),
                slot,
                holder,
            })),
            None => Err(None),
        }
    }

    /// [`SharedSlots::take`], waiting up to `wait` for a slot to free.
    pub(crate) async fn take_within(
        &self,
        agent: &AgentId,
        id: RequestId,
        wait: Duration,
    ) -> Result<Option<SharedSlot>, Option<CallError<StateError>>> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match self.take(agent, id).await {
                Err(None) if tokio::time::Instant::now() + POLL < deadline => {
                    tokio::time::sleep(POLL).await;
                }
                other => return other,
            }
        }
    }

    /// Renews `slot` for the run lease; a slot found lost is logged (the cap is a budget: the
    /// run lease, renewed on the same store, is what stops a job its replica no longer holds).
    pub(crate) async fn renew(&self, slot: &SharedSlot) {
        let renewed = guarded(
            self.state
                .renew_slot(&slot.agent, slot.slot, &slot.holder, self.run_lease),
            self.timeout,
            None,
        )
        .await;
        match renewed {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(agent = %slot.agent, slot = slot.slot, "a shared concurrency slot was lost (its lease passed)");
            }
            Err(e) => {
                tracing::warn!(agent = %slot.agent, slot = slot.slot, error = %e.describe("state store"), "renewing a shared concurrency slot failed");
            }
        }
    }

    /// Gives `slot` back; a failure is logged (the lease frees it in the end).
    pub(crate) async fn release(&self, slot: Option<SharedSlot>) {
        let Some(slot) = slot else {
            return;
        };
        let released = guarded(
            self.state
                .release_slot(&slot.agent, slot.slot, &slot.holder),
            self.timeout,
            None,
        )
        .instrument(tracing::info_span!("state.release_slot"))
        .await;
        if let Err(e) = released {
            tracing::warn!(agent = %slot.agent, slot = slot.slot, error = %e.describe("state store"), "releasing a shared concurrency slot failed; its lease frees it");
        }
    }
}
