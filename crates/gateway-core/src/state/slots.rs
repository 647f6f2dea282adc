//! Concurrency slots shared by every replica: an agent capped at N concurrent actions holds
//! at most N slots, whichever replicas its actions run on
//! ([`AgentLimits::across_replicas`](crate::AgentLimits::across_replicas)).
//!
//! A slot is numbered `0..N` and held under a lease: a replica that dies with slots held loses
//! them when their leases pass, so a cap never stays used up by a process that is gone. The
//! holder renews while its action runs and releases at its end.

use super::StateError;
use crate::ids::AgentId;
use async_trait::async_trait;
use std::time::Duration;

/// An agent's concurrency slots, shared by every replica using the same backend.
///
/// Conformance: `gateway_core::conformance::state::run_slots`.
#[async_trait]
pub trait ConcurrencySlots: Send + Sync + 'static {
    /// Takes a free slot of `agent` among `0..limit` (one never held, or whose lease passed)
    /// for `holder`, for `lease`; `None` when all `limit` are held. Atomic across every process
    /// sharing the store: two holders never hold one slot.
    async fn acquire_slot(
        &self,
        agent: &AgentId,
        limit: u32,
        holder: &str,
        lease: Duration,
    ) -> Result<Option<u32>, StateError>;

    /// Extends `holder`'s lease of `slot` to `lease` from now; `false` when `holder` no longer
    /// holds it (its lease passed and another took it, or it was released).
    async fn renew_slot(
        &self,
        agent: &AgentId,
        slot: u32,
        holder: &str,
        lease: Duration,
    ) -> Result<bool, StateError>;

    /// Gives `slot` back, if `holder` holds it.
    async fn release_slot(
        &self,
        agent: &AgentId,
        slot: u32,
        holder: &str,
    ) -> Result<(), StateError>;
}
