//! Holding a running action: while its job runs, the replica renews the action's run lease in
//! the state store (every third of [`GatewayConfig::run_lease`](super::GatewayConfig)), so the
//! other replicas know it is alive. A replica that cannot show it holds the action stops the
//! job: another replica's recovery sweep takes over an action whose lease passed and revokes
//! its grant, and the job must not outlive its credential's owner.

use super::guard::{CallError, guarded};
use super::shared_slots::{SharedSlot, SharedSlots};
use crate::state::{ActionKey, StateError, StateStore, StateStoreExt};
use std::future::Future;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// Why a replica stopped a job it was running: it no longer held the action.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LeaseLost {
    /// Another replica's recovery sweep took the action over (its lease had passed) and
    /// revoked its grant.
    #[error("another replica took the running action over ({0}); the job was stopped")]
    TakenOver(String),
    /// The state store could not renew the lease before it passed: other replicas may take
    /// the action over, so the job stops first (fail closed).
    #[error("the run lease could not be renewed before it passed ({0}); the job was stopped")]
    Unrenewable(String),
}

/// One replica's hold on one running action (and on its agent's shared concurrency slot, if
/// the cap is shared).
pub(crate) struct RunHold<'a> {
    pub(crate) state: &'a dyn StateStore,
    pub(crate) key: &'a ActionKey,
    pub(crate) replica: &'a str,
    /// How long each renewal holds the action.
    pub(crate) lease: Duration,
    /// The deadline of one renewal call.
    pub(crate) timeout: Duration,
    /// The agent's shared concurrency slot, renewed with the action.
    pub(crate) shared: Option<(SharedSlots<'a>, &'a SharedSlot)>,
}

impl RunHold<'_> {
    /// Drives `job` to its end while renewing the lease; if the hold is lost, cancels
    /// `job_cancel` (the job's token) and still waits for the job to end, then says why.
    pub(crate) async fn run<T>(
        &self,
        job: impl Future<Output = T>,
        job_cancel: &CancellationToken,
    ) -> (T, Option<LeaseLost>) {
        tokio::pin!(job);
        let every = self.lease / 3;
        // The lease was taken (or last renewed) just before the job started.
        let mut held_until = Instant::now() + self.lease;
        let mut lost = None;
        loop {
            tokio::select! {
                out = &mut job => return (out, lost),
                () = tokio::time::sleep(every), if lost.is_none() => {
                    let asked = Instant::now();
                    match self.renew().await {
                        Ok(()) => held_until = asked + self.lease,
                        Err(CallError::Failed(StateError::Conflict { message })) => {
                            lost = Some(LeaseLost::TakenOver(message));
                        }
                        Err(e) if Instant::now() + every >= held_until => {
                            lost = Some(LeaseLost::Unrenewable(e.describe("state store")));
                        }
                        Err(e) => {
                            tracing::warn!(action = %self.key, error = %e.describe("state store"), "renewing the run lease failed; retrying");
                        }
                    }
                    if let Some(why) = &lost {
                        tracing::error!(action = %self.key, %why, "stopping a job this replica no longer holds");
                        job_cancel.cancel();
                    }
                }
            }
        }
    }

    async fn renew(&self) -> Result<(), CallError<StateError>> {
        guarded(
            self.state
                .renew_run_lease(self.key, self.replica, self.lease),
            self.timeout,
            None,
        )
        .instrument(tracing::info_span!("state.renew_lease"))
        .await
        .map(drop)?;
        if let Some((slots, slot)) = &self.shared {
            slots.renew(slot).await;
        }
        Ok(())
    }
}
