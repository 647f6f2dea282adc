//! Durable, shared action state: what every gateway replica must agree on about an action
//! (whose id it is, where it is in its lifecycle, its approval ticket and its outcome).
//!
//! A [`StateStore`] is a small set of primitives: [`claim`](StateStore::claim) a key,
//! [`get`](StateStore::get) it, [`update`](StateStore::update) it atomically with a change
//! function, list the records in a phase, and prune finished ones after their retention. The
//! rules (which phase may follow which, how approval votes count) live here, once, in
//! [`StateStoreExt`] and [`crate::approval::ApprovalTicket`], so they mean the
//! same on every backend; a backend only has to make `claim` and `update` atomic across every
//! process that shares it.
//!
//! Backends: [`MemoryStateStore`] (one process; the default, and for tests), and in
//! `gateway-state` SQLite (the embedded default, a file beside the audit log) and PostgreSQL
//! (shared by replicas). Each runs [`conformance::state`](crate::conformance) against itself.
//!
//! Idempotency: an action's key is (authenticated agent, request id). It is claimed only after
//! authentication, and stays taken while the action lives and for the retention after it
//! finishes ([`GatewayConfig::state_retention`](crate::GatewayConfig::state_retention)): a
//! repeated id within it gets the stored record back (the original outcome, or where the action
//! is), never a second run. Ids of other agents are invisible: a key includes its agent.

mod locks;
mod memory;
mod phase;
mod revocations;
mod slots;

pub use locks::{AgentLock, LockList, LockTarget};
pub use memory::MemoryStateStore;
pub use phase::Phase;
pub use revocations::{CachedRevocations, DEFAULT_REVOCATION_CACHE, RevocationList};
pub use slots::ConcurrencySlots;

use crate::action::ActionRequest;
use crate::approval::{ApprovalTicket, ApprovalVote, TicketState, VoteRefused};
use crate::error::concern_error;
use crate::grant::Grant;
use crate::identity::AgentIdentity;
use crate::ids::{AgentId, RequestId};
use crate::runner::RunnerInfo;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::time::Duration;
use time::OffsetDateTime;

/// An action's key: request ids are unique per agent.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ActionKey {
    /// The authenticated agent.
    pub agent: AgentId,
    /// Its request id (the action's correlation id).
    pub id: RequestId,
}

impl ActionKey {
    /// The key of `agent`'s request `id`.
    pub fn new(agent: AgentId, id: RequestId) -> Self {
        Self { agent, id }
    }
}

impl std::fmt::Display for ActionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} of {}", self.id, self.agent)
    }
}

/// What the store holds about one action.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActionRecord {
    /// The agent and request id.
    #[serde(flatten)]
    pub key: ActionKey,
    /// The agent's accountable owner.
    pub owner: String,
    /// The action.
    pub action: String,
    /// The resource.
    pub resource: String,
    /// [`ActionRequest::content_hash`] of the request: a repeat with the same id but other
    /// content is told apart from a retry.
    pub request_hash: String,
    /// Where the action is.
    pub phase: Phase,
    /// When it was claimed.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When it last changed.
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    /// When its key may be claimed again: set when it reaches a terminal phase (that time plus
    /// the retention); never while the action lives.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub expires_at: Option<OffsetDateTime>,
    /// While the action waits for approval or runs: until when the replica holding it does.
    /// The holder renews it ([`APPROVAL_LEASE`] while waiting,
    /// [`GatewayConfig::run_lease`](crate::GatewayConfig::run_lease) while running); once it
    /// has passed, the holder is gone (its process stopped): a waiting action will never run
    /// ([`ActionRecord::waiter_gone`]), and a running one's grant is revoked by a recovery
    /// sweep ([`ActionRecord::runner_gone`]).
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub lease_until: Option<OffsetDateTime>,
    /// Once the action runs: who runs it and what a recovery sweep needs to undo it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<RunLease>,
    /// While it waits for approval: what any replica needs to run it once approved, if the
    /// replica that asked is gone by then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume: Option<Resume>,
    /// The approval ticket, once approval was asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<ApprovalTicket>,
    /// The outcome document of a finished action (the front's status document: what ran, or
    /// why it did not).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<serde_json::Value>,
}

impl ActionRecord {
    /// A freshly received action of `agent`.
    pub fn received(request: &ActionRequest, agent: &AgentIdentity, now: OffsetDateTime) -> Self {
        Self {
            key: ActionKey::new(agent.id.clone(), request.id),
            owner: agent.owner.clone(),
            action: request.action.clone(),
            resource: request.resource.clone(),
            request_hash: request.content_hash(),
            phase: Phase::Received,
            created_at: now,
            updated_at: now,
            expires_at: None,
            lease_until: None,
            run: None,
            resume: None,
            approval: None,
            outcome: None,
        }
    }

    /// Whether it waits for approval with nobody left waiting: its lease passed at `now`.
    pub fn waiter_gone(&self, now: OffsetDateTime) -> bool {
        self.phase == Phase::AwaitingApproval && self.lease_passed(now)
    }

    /// Whether it was approved and the replica that waited for it is gone (its lease passed at
    /// `now`): any replica may take it over and run it ([`ActionRecord::resume`]).
    pub fn approved_unattended(&self, now: OffsetDateTime) -> bool {
        self.phase == Phase::Approved && self.lease_passed(now)
    }

    /// Whether it runs with nobody left holding it: its lease passed at `now`, so its replica
    /// stopped (or lost the store) and a recovery sweep must revoke its grant.
    pub fn runner_gone(&self, now: OffsetDateTime) -> bool {
        self.phase == Phase::Running && self.lease_passed(now)
    }

    fn lease_passed(&self, now: OffsetDateTime) -> bool {
        self.lease_until.is_some_and(|l| l <= now)
    }

    /// Whether its key may be claimed again at `now`.
    pub fn expired(&self, now: OffsetDateTime) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }
}

/// What the store keeps of a running action: the replica holding it, and what a recovery sweep
/// on another replica needs to undo it if that replica stops (revoke the grant with the broker
/// that issued it, tear down the job's environment, continue the audit trail).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunLease {
    /// The replica running it ([`Gateway::replica`](crate::Gateway::replica)); a sweep that
    /// takes the action over puts its own here.
    pub replica: String,
    /// The grant the job holds. Only what a broker needs to revoke it: a grant's secrets are
    /// never serialised.
    pub grant: Grant,
    /// The named broker that issued the grant; `None` for the gateway's default broker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broker: Option<String>,
    /// The runner the job was handed to (its backend and instance: the reaper's key).
    pub runner: RunnerInfo,
    /// How many events the action's audit trail holds once its job has started (`started`
    /// included): where a sweep continues the trail.
    pub trail_steps: u32,
}

/// What an action waiting for approval needs to run on any replica once approved: the
/// authenticated agent, the policy's decision (its obligations bound the grant and the job)
/// and the request's context, as they were when approval was asked. The request itself is in
/// the approval ticket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Resume {
    /// The agent, as authenticated.
    pub identity: AgentIdentity,
    /// The decision that asked for approval.
    pub decision: crate::policy::Decision,
    /// The request's origin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
    /// How many events the trail holds: once approval is asked (`approval_requested`
    /// included), or once the waiter recorded the verdict (`approval_resolved` included):
    /// where the replica that resumes it continues the trail.
    pub trail_steps: u32,
    /// Whether `approval_resolved` is in the trail already (the waiter saw the verdict before
    /// it stopped); a replica that resumes the action records it otherwise.
    #[serde(default)]
    pub verdict_recorded: bool,
}

/// What [`StateStore::claim`] found.
#[derive(Debug, Clone, PartialEq)]
pub enum Claim {
    /// The key was free (or its previous record had expired): the new record is stored.
    Claimed,
    /// The agent already has a live record with this id; nothing was stored.
    Existing(Box<ActionRecord>),
}

concern_error!(
    /// Why the state store could not do what was asked. The pipeline fails closed on any of
    /// these: an action whose state cannot be stored does not run.
    StateError, "state store", extra {
        /// The lifecycle does not allow this move ([`Phase::may_become`]).
        IllegalTransition ["state store: action {key} cannot move from {from} to {to}"] {
            /// The action.
            key: ActionKey,
            /// Its phase.
            from: Phase,
            /// The refused phase.
            to: Phase,
        } => Conflict,
        /// An approval vote was not counted.
        VoteRefused ["approval vote on {key} refused: {refused}"] {
            /// The action.
            key: ActionKey,
            /// Why.
            refused: VoteRefused,
        } => Conflict,
    }
);

/// How long a replica waiting for an approval holds its request without renewing: a waiter
/// renews its lease when less than half is left (it checks at every poll, 250 ms by default);
/// one that stops is known gone this long after (votes are refused from then on, and
/// [`Gateway::abandon_orphaned_approvals`](crate::Gateway::abandon_orphaned_approvals) records
/// the action as abandoned).
pub const APPROVAL_LEASE: Duration = Duration::from_secs(15);

/// A change [`StateStore::update`] applies to a record. It may run more than once (a backend
/// retrying a serialisation failure), so it must depend only on the record it is given.
pub type Change = dyn Fn(&mut ActionRecord) -> Result<(), StateError> + Send + Sync;

/// Applies `change` to a copy of `record` and returns the copy, refusing a change that moved
/// the record to another key or claim time: what every backend's `update` calls.
pub fn apply_change(record: &ActionRecord, change: &Change) -> Result<ActionRecord, StateError> {
    let mut changed = record.clone();
    change(&mut changed)?;
    if changed.key != record.key || changed.created_at != record.created_at {
        return Err(StateError::internal_msg(format!(
            "a state change moved action {} to another key",
            record.key
        )));
    }
    Ok(changed)
}

/// Durable action state, shared by every gateway replica that uses the same backend. A store
/// also keeps what replicas must agree on besides actions: revoked grants
/// ([`RevocationList`]), the kill switch's locks ([`LockList`]) and agents' concurrency slots
/// ([`ConcurrencySlots`]).
///
/// Conformance: `gateway_core::conformance::state::run_all` (and `run_revocations`,
/// `run_locks`, `run_slots`).
#[async_trait]
pub trait StateStore: RevocationList + LockList + ConcurrencySlots + Send + Sync + 'static {
    /// Stores `record` unless its agent holds a live record with that id (one not
    /// [expired](ActionRecord::expired) at `record.created_at`; an expired one is replaced).
    /// Atomic across every process sharing the store: of concurrent claims of one key,
    /// exactly one gets [`Claim::Claimed`]; the others get the record as it is when they read
    /// it (later updates included).
    async fn claim(&self, record: &ActionRecord) -> Result<Claim, StateError>;

    /// The record of `key`, if any (expired ones included until pruned).
    async fn get(&self, key: &ActionKey) -> Result<Option<ActionRecord>, StateError>;

    /// Reads the record of `key`, applies `change` ([`apply_change`]) and stores the result,
    /// as one atomic step: concurrent updates of one record, on any replica, are serialised.
    /// An error from `change` is returned and the record stays as it was;
    /// [`StateError::NotFound`] when there is no record.
    async fn update(&self, key: &ActionKey, change: &Change) -> Result<ActionRecord, StateError>;

    /// The records in `phase`, oldest claim first, at most `limit`.
    async fn in_phase(&self, phase: Phase, limit: usize) -> Result<Vec<ActionRecord>, StateError>;

    /// Deletes the records whose retention ended at or before `now`; returns how many.
    async fn prune(&self, now: OffsetDateTime) -> Result<u64, StateError>;
}

/// The lifecycle's rules on top of any [`StateStore`].
#[async_trait]
pub trait StateStoreExt: StateStore {
    /// Moves `key` to `to` (with its outcome document, for a terminal phase), if the lifecycle
    /// allows it; a terminal phase starts the key's `retention`.
    async fn advance(
        &self,
        key: &ActionKey,
        to: Phase,
        outcome: Option<serde_json::Value>,
        retention: Duration,
    ) -> Result<ActionRecord, StateError> {
        // Read once: a retried change must write the same times.
        let now = OffsetDateTime::now_utc();
        let change = move |record: &mut ActionRecord| {
            check_move(record, to)?;
            record.phase = to;
            record.updated_at = now;
            if to.is_terminal() {
                record.expires_at = Some(now + retention);
                record.lease_until = None;
                record.outcome = outcome.clone();
            }
            Ok(())
        };
        self.update(key, &change).await
    }

    /// Moves `key` to [`Phase::Running`], held by `run.replica` for `lease` from now.
    async fn start_running(
        &self,
        key: &ActionKey,
        run: RunLease,
        lease: Duration,
    ) -> Result<ActionRecord, StateError> {
        let now = OffsetDateTime::now_utc();
        let change = move |record: &mut ActionRecord| {
            let to = Phase::Running;
            check_move(record, to)?;
            record.phase = to;
            record.updated_at = now;
            record.lease_until = Some(now + lease);
            record.run = Some(run.clone());
            Ok(())
        };
        self.update(key, &change).await
    }

    /// Renews `replica`'s hold on the running action `key` for `lease` from now.
    /// [`StateError::Conflict`] when it is no longer `replica`'s: a sweep took it over (the
    /// lease had passed) or it is no longer running. The holder must then stop the job.
    async fn renew_run_lease(
        &self,
        key: &ActionKey,
        replica: &str,
        lease: Duration,
    ) -> Result<ActionRecord, StateError> {
        let now = OffsetDateTime::now_utc();
        let replica = replica.to_owned();
        let change = move |record: &mut ActionRecord| {
            let held = record.phase == Phase::Running
                && record.run.as_ref().is_some_and(|r| r.replica == replica);
            if !held {
                return Err(StateError::Conflict {
                    message: format!(
                        "action {} is no longer run by replica {replica} (it is {})",
                        record.key, record.phase
                    ),
                });
            }
            record.lease_until = Some(now + lease);
            Ok(())
        };
        self.update(key, &change).await
    }

    /// Moves `key` to [`Phase::AwaitingApproval`] with `ticket`, and what another replica
    /// needs to run it once approved (`resume`; without it, the action is abandoned when its
    /// waiter goes).
    async fn await_approval(
        &self,
        key: &ActionKey,
        ticket: ApprovalTicket,
        resume: Option<Resume>,
    ) -> Result<ActionRecord, StateError> {
        let now = OffsetDateTime::now_utc();
        let change = move |record: &mut ActionRecord| {
            let to = Phase::AwaitingApproval;
            check_move(record, to)?;
            record.phase = to;
            record.updated_at = now;
            record.lease_until = Some(now + APPROVAL_LEASE);
            record.approval = Some(ticket.clone());
            record.resume = resume.clone();
            Ok(())
        };
        self.update(key, &change).await
    }

    /// Renews the lease of an action waiting for approval, or approved and waiting to run
    /// ([`APPROVAL_LEASE`] from now); a record in another phase is left as it is.
    async fn renew_approval_lease(&self, key: &ActionKey) -> Result<ActionRecord, StateError> {
        let now = OffsetDateTime::now_utc();
        let change = move |record: &mut ActionRecord| {
            if matches!(record.phase, Phase::AwaitingApproval | Phase::Approved) {
                record.lease_until = Some(now + APPROVAL_LEASE);
            }
            Ok(())
        };
        self.update(key, &change).await
    }

    /// Counts `vote` on `key`'s ticket ([`ApprovalTicket::cast`]); a vote that completes the
    /// quorum moves the action to [`Phase::Approved`], in the same atomic step.
    async fn vote(
        &self,
        key: &ActionKey,
        vote: ApprovalVote,
        shown_hash: Option<String>,
    ) -> Result<TicketState, StateError> {
        let change = move |record: &mut ActionRecord| {
            let key = record.key.clone();
            let refuse = |refused| StateError::VoteRefused {
                key: key.clone(),
                refused,
            };
            let now = vote.at;
            let Some(ticket) = record.approval.as_mut() else {
                return Err(refuse(VoteRefused::Closed(TicketState::Expired)));
            };
            if record.phase != Phase::AwaitingApproval {
                let state = ticket.state(now);
                return Err(refuse(VoteRefused::Closed(state)));
            }
            // An unattended ticket (its waiter gone) is still answered when another replica
            // can run the action once approved; without what that needs, it is abandoned.
            if record.resume.is_none() && record.lease_until.is_some_and(|l| l <= now) {
                return Err(refuse(VoteRefused::Abandoned));
            }
            let state = ticket
                .cast(vote.clone(), shown_hash.as_deref())
                .map_err(refuse)?;
            if state == TicketState::Approved {
                record.phase = Phase::Approved;
            }
            record.updated_at = now;
            Ok(())
        };
        let record = self.update(key, &change).await?;
        let now = OffsetDateTime::now_utc();
        Ok(record
            .approval
            .map_or(TicketState::Expired, |t| t.state(now)))
    }
}

impl<T: StateStore + ?Sized> StateStoreExt for T {}

/// [`StateError::IllegalTransition`] unless the lifecycle lets `record` move to `to`.
fn check_move(record: &ActionRecord, to: Phase) -> Result<(), StateError> {
    if record.phase.may_become(to) {
        Ok(())
    } else {
        Err(StateError::IllegalTransition {
            key: record.key.clone(),
            from: record.phase,
            to,
        })
    }
}
