//! An agent's concurrency cap across replicas ([`AgentLimits::across_replicas`]): besides its
//! slot on this replica, an action holds one of the agent's slots in the shared store
//! ([`ConcurrencySlots`]), under a lease this replica renews while the job runs, and gives it
//! back at its end (or while it waits for a human). A replica that dies loses its slots when
//! their leases pass.
//!
//! [`AgentLimits::across_replicas`]: super::AgentLimits::across_replicas
//! [`ConcurrencySlots`]: crate::state::ConcurrencySlots

use super::guard::{CallError, guarded};
use super::pipeline::Pipeline;
use crate::ids::{AgentId, RequestId};
use crate::state::StateError;
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

impl Pipeline {
    /// How long a slot is held before the job starts (its lease is renewed with the run
    /// lease from then on): long enough for the policy and the broker to answer.
    pub(crate) fn shared_slot_lease(&self) -> Duration {
        self.config.run_lease + self.config.policy_timeout + self.config.broker_timeout
    }

    /// One of `agent`'s shared slots for action `id`, if the limits ask for shared caps:
    /// `Ok(None)` when they do not, `Err(None)` when every slot is held, `Err(Some(e))` when
    /// the store failed.
    pub(crate) async fn take_shared_slot(
        &self,
        agent: &AgentId,
        id: RequestId,
    ) -> Result<Option<SharedSlot>, Option<CallError<StateError>>> {
        let limits = &self.config.agent_limits;
        if !limits.across_replicas {
            return Ok(None);
        }
        let holder = format!("{}/{id}", self.replica);
        let taken = guarded(
            self.state.acquire_slot(
                agent,
                limits.max_concurrent,
                &holder,
                self.shared_slot_lease(),
            ),
            self.config.audit_timeout,
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

    /// [`Pipeline::take_shared_slot`], waiting up to `wait` for a slot to free.
    pub(crate) async fn take_shared_slot_within(
        &self,
        agent: &AgentId,
        id: RequestId,
        wait: Duration,
    ) -> Result<Option<SharedSlot>, Option<CallError<StateError>>> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match self.take_shared_slot(agent, id).await {
                Err(None) if tokio::time::Instant::now() + POLL < deadline => {
                    tokio::time::sleep(POLL).await;
                }
                other => return other,
            }
        }
    }

    /// Renews `slot` for the run lease; a slot found lost is logged (the cap is a budget: the
    /// run lease, renewed on the same store, is what stops a job its replica no longer holds).
    pub(crate) async fn renew_shared_slot(&self, slot: &SharedSlot) {
        let renewed = guarded(
            self.state
                .renew_slot(&slot.agent, slot.slot, &slot.holder, self.config.run_lease),
            self.config.audit_timeout,
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
    pub(crate) async fn release_shared_slot(&self, slot: Option<SharedSlot>) {
        let Some(slot) = slot else {
            return;
        };
        let released = guarded(
            self.state
                .release_slot(&slot.agent, slot.slot, &slot.holder),
            self.config.audit_timeout,
            None,
        )
        .instrument(tracing::info_span!("state.release_slot"))
        .await;
        if let Err(e) = released {
            tracing::warn!(agent = %slot.agent, slot = slot.slot, error = %e.describe("state store"), "releasing a shared concurrency slot failed; its lease frees it");
        }
    }
}
