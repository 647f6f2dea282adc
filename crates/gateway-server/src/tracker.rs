//! The status of submitted actions, so a front can answer 202 and be polled later.
//!
//! Every action the front submits runs on its own task; its phase (running, waiting for a human,
//! done) lives here, keyed by the authenticated agent and the request id: an id is claimed only
//! after its agent is authenticated, it is unique per agent (another agent's ids are invisible,
//! so a 409 never tells one agent about another's requests), and a request that did not
//! authenticate is never tracked (it cannot reserve an id or push anything out).
//!
//! A finished entry is kept for the retention period and never evicted before it: that is what
//! makes a repeated id a 409 instead of a second run. Each agent may have at most `capacity`
//! entries (in flight or retained); past that its new requests are refused until entries
//! expire. A request refused before anything ran (rate limited, invalid) is forgotten at once,
//! so the client may retry it with the same id. The tracker is this process's live view (it
//! wakes waiting handlers); the shared, durable record of every action is the gateway's state
//! store, which
//! answers for actions this process does not track (submitted on another replica, or before a
//! restart).
//!
//! To learn that a request waits for approval without changing the core, [`TrackingGate`] wraps
//! the approval queue: it marks the request `pending_approval` (which wakes the waiting HTTP
//! handler) before delegating.

use crate::metrics::Metrics;
use gateway_core::approval::ApprovalError;
use gateway_core::{
    ActionOutcome, AgentId, ApprovalGate, ApprovalRequest, ApprovalVerdict, ErrorKind,
    GatewayError, RequestId, async_trait,
};
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::Poll;
use std::time::{Duration, Instant};
use time::OffsetDateTime;
use tokio::sync::watch;

/// Where an action is.
#[derive(Debug, Clone)]
pub enum Phase {
    /// Being authenticated, decided, granted or run.
    Running,
    /// Waiting for a human approver until `deadline`.
    PendingApproval {
        /// After this the request is denied.
        deadline: OffsetDateTime,
    },
    /// Finished: the outcome, or why it did not run.
    Done(Arc<Result<ActionOutcome, GatewayError>>),
}

impl Phase {
    /// The phase a state store record describes (an action submitted on another replica, or
    /// before this process started).
    pub fn of_record(record: &gateway_core::ActionRecord) -> Self {
        if let Some(result) = gateway_core::gateway::recorded_result(record) {
            return Self::Done(Arc::new(result));
        }
        match (&record.phase, &record.approval) {
            (gateway_core::Phase::AwaitingApproval, Some(ticket)) => Self::PendingApproval {
                deadline: ticket.request.deadline,
            },
            _ => Self::Running,
        }
    }
}

/// Why an action could not be tracked (and so was not submitted).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TrackError {
    /// This agent already submitted a request with this id (within the retention).
    #[error("a request with id {0} was already submitted")]
    Duplicate(RequestId),
    /// The agent has as many actions tracked as it may have.
    #[error(
        "too many actions tracked for this agent ({0}, in flight or finished within the \
         retention); retry later"
    )]
    Full(usize),
}

/// An entry's key: ids are unique per agent.
type Key = (AgentId, RequestId);

#[derive(Default)]
struct Map {
    entries: HashMap<Key, watch::Sender<Phase>>,
    /// Finished entries in finishing order, for expiry.
    finished: VecDeque<(Instant, Key)>,
    /// How many entries each agent has.
    per_agent: HashMap<AgentId, usize>,
}

impl Map {
    fn remove(&mut self, key: &Key) {
        if self.entries.remove(key).is_some()
            && let Some(n) = self.per_agent.get_mut(&key.0)
        {
            *n -= 1;
            if *n == 0 {
                self.per_agent.remove(&key.0);
            }
        }
    }
}

/// The bounded map of submitted actions.
pub struct ActionTracker {
    capacity: usize,
    retention: Duration,
    map: Mutex<Map>,
}

impl std::fmt::Debug for ActionTracker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ActionTracker")
            .field("capacity", &self.capacity)
            .field("retention", &self.retention)
            .field("tracked", &self.len())
            .finish()
    }
}

impl ActionTracker {
    /// A tracker holding at most `capacity` actions, finished ones for `retention`.
    pub fn new(capacity: usize, retention: Duration) -> Self {
        Self {
            capacity: capacity.max(1),
            retention,
            map: Mutex::new(Map::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Map> {
        // Every critical section leaves the map consistent, so a poisoned lock is still usable.
        self.map.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// How many actions are tracked.
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// Whether nothing is tracked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Starts tracking `agent`'s request `id`; the receiver sees its phase changes.
    pub fn begin(
        &self,
        agent: &AgentId,
        id: RequestId,
    ) -> Result<watch::Receiver<Phase>, TrackError> {
        let mut map = self.lock();
        let now = Instant::now();
        // Forget finished entries whose retention is over (never earlier).
        while let Some((at, _)) = map.finished.front() {
            if now.duration_since(*at) < self.retention {
                break;
            }
            if let Some((_, key)) = map.finished.pop_front() {
                map.remove(&key);
            }
        }
        let key = (agent.clone(), id);
        if map.entries.contains_key(&key) {
            return Err(TrackError::Duplicate(id));
        }
        let count = map.per_agent.get(agent).copied().unwrap_or(0);
        if count >= self.capacity {
            return Err(TrackError::Full(self.capacity));
        }
        let (tx, rx) = watch::channel(Phase::Running);
        map.entries.insert(key, tx);
        map.per_agent.insert(agent.clone(), count + 1);
        Ok(rx)
    }

    fn set(&self, agent: &AgentId, id: RequestId, phase: Phase) {
        let mut map = self.lock();
        let key = (agent.clone(), id);
        let Some(entry) = map.entries.get(&key) else {
            return;
        };
        // Refused before anything ran, or a repeat of an id the state store already holds
        // (which answers for it from then on).
        let refused_before_running = match &phase {
            Phase::Done(result) => match result.as_ref() {
                Err(e) => matches!(
                    e.kind(),
                    ErrorKind::RateLimited
                        | ErrorKind::InvalidInput
                        | ErrorKind::Unauthenticated
                        | ErrorKind::Conflict
                ),
                Ok(_) => false,
            },
            _ => false,
        };
        let done = matches!(phase, Phase::Done(_));
        entry.send_replace(phase);
        if refused_before_running {
            // Nothing ran: the same id may be sent again (e.g. after a 429's Retry-After).
            map.remove(&key);
        } else if done {
            map.finished.push_back((Instant::now(), key));
        }
    }

    /// Marks a request as waiting for approval (called by [`TrackingGate`]).
    pub fn mark_pending(&self, request: &ApprovalRequest) {
        self.set(
            &request.agent,
            request.correlation_id,
            Phase::PendingApproval {
                deadline: request.deadline,
            },
        );
    }

    /// Marks a request as running again (after its approval was resolved).
    pub fn mark_running(&self, agent: &AgentId, id: RequestId) {
        self.set(agent, id, Phase::Running);
    }

    /// Records the result of `agent`'s request `id`.
    pub fn finish(
        &self,
        agent: &AgentId,
        id: RequestId,
        result: Result<ActionOutcome, GatewayError>,
    ) {
        self.set(agent, id, Phase::Done(Arc::new(result)));
    }

    /// The phase of `agent`'s request `id`, in every phase; another agent's is not found.
    pub fn phase_for(&self, id: RequestId, agent: &AgentId) -> Option<Phase> {
        let map = self.lock();
        let entry = map.entries.get(&(agent.clone(), id))?;
        Some(entry.borrow().clone())
    }
}

/// Waits until a request leaves [`Phase::Running`], or `wait` passes; returns the phase then.
pub async fn settle(rx: &mut watch::Receiver<Phase>, wait: Duration) -> Phase {
    let settled = tokio::time::timeout(wait, async {
        loop {
            let phase = rx.borrow_and_update().clone();
            if !matches!(phase, Phase::Running) {
                return phase;
            }
            if rx.changed().await.is_err() {
                // The entry was evicted; it cannot change any more.
                return Phase::Running;
            }
        }
    })
    .await;
    settled.unwrap_or(Phase::Running)
}

/// An [`ApprovalGate`] that tells the tracker a request is waiting for a human, then delegates
/// (normally to the front's [`Approvals`](gateway_core::Approvals) queue).
pub struct TrackingGate {
    inner: Arc<dyn ApprovalGate>,
    tracker: Arc<ActionTracker>,
    metrics: Arc<Metrics>,
}

impl TrackingGate {
    /// Wraps `inner`, reporting to `tracker` and counting approvals in `metrics`.
    pub fn new(
        inner: Arc<dyn ApprovalGate>,
        tracker: Arc<ActionTracker>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            inner,
            tracker,
            metrics,
        }
    }
}

#[async_trait]
impl ApprovalGate for TrackingGate {
    async fn await_approval(
        &self,
        request: &ApprovalRequest,
    ) -> Result<ApprovalVerdict, ApprovalError> {
        self.metrics.approval_requested();
        // Poll the inner gate once before reporting `pending_approval`: a queue registers the
        // request on its first poll, so a client that sees the 202 (or the status) can list and
        // resolve the approval at once, instead of getting 404 until the queue catches up.
        let mut wait = std::pin::pin!(self.inner.await_approval(request));
        let first = std::future::poll_fn(|cx| Poll::Ready(wait.as_mut().poll(cx))).await;
        let verdict = match first {
            Poll::Ready(verdict) => verdict,
            Poll::Pending => {
                self.tracker.mark_pending(request);
                wait.await
            }
        };
        self.metrics
            .approval_resolved(matches!(verdict, Ok(ApprovalVerdict::Approved { .. })));
        self.tracker
            .mark_running(&request.agent, request.correlation_id);
        verdict
    }

    fn state_store(&self) -> Option<Arc<dyn gateway_core::StateStore>> {
        self.inner.state_store()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(name: &str) -> AgentId {
        AgentId::new(name).unwrap()
    }

    #[test]
    fn ids_are_unique_per_agent_and_capacity_is_per_agent() {
        let t = ActionTracker::new(2, Duration::from_secs(60));
        let (me, other) = (agent("agent:me"), agent("agent:other"));
        let (a, b, c) = (RequestId::new(), RequestId::new(), RequestId::new());
        let _ra = t.begin(&me, a).unwrap();
        assert_eq!(t.begin(&me, a).unwrap_err(), TrackError::Duplicate(a));
        // Another agent's id space is its own: no 409 that reveals `me`'s request.
        let _ro = t.begin(&other, a).unwrap();
        let _rb = t.begin(&me, b).unwrap();
        assert_eq!(t.begin(&me, c).unwrap_err(), TrackError::Full(2));
        // A finished action is retained, not evicted: its id stays taken, the agent stays full.
        t.finish(&me, a, Err(GatewayError::Cancelled { correlation_id: a }));
        assert_eq!(t.begin(&me, a).unwrap_err(), TrackError::Duplicate(a));
        assert_eq!(t.begin(&me, c).unwrap_err(), TrackError::Full(2));
        // Other agents are not affected by `me` being full.
        assert!(t.begin(&other, c).is_ok());
    }

    #[test]
    fn a_request_refused_before_running_may_be_sent_again() {
        let t = ActionTracker::new(4, Duration::from_secs(60));
        let me = agent("agent:me");
        let id = RequestId::new();
        let rx = t.begin(&me, id).unwrap();
        t.finish(
            &me,
            id,
            Err(GatewayError::RateLimited {
                correlation_id: id,
                reason: "slow down".into(),
                retry_after: None,
            }),
        );
        assert!(
            matches!(&*rx.borrow(), Phase::Done(_)),
            "the waiter still sees it"
        );
        assert!(t.begin(&me, id).is_ok(), "a 429'd id can be retried");
    }

    #[test]
    fn finished_entries_expire_after_the_retention_only() {
        let t = ActionTracker::new(1, Duration::from_millis(50));
        let me = agent("agent:me");
        let (a, b) = (RequestId::new(), RequestId::new());
        let _ra = t.begin(&me, a).unwrap();
        t.finish(&me, a, Err(GatewayError::Cancelled { correlation_id: a }));
        assert_eq!(t.begin(&me, b).unwrap_err(), TrackError::Full(1));
        std::thread::sleep(Duration::from_millis(60));
        assert!(t.begin(&me, b).is_ok());
        assert!(t.phase_for(a, &me).is_none(), "expired");
    }

    #[test]
    fn only_the_submitting_agent_sees_a_request_in_every_phase() {
        let t = ActionTracker::new(8, Duration::from_secs(60));
        let id = RequestId::new();
        let (me, other) = (agent("agent:me"), agent("agent:other"));
        let _rx = t.begin(&me, id).unwrap();
        assert!(matches!(t.phase_for(id, &me), Some(Phase::Running)));
        t.mark_pending(&ApprovalRequest {
            correlation_id: id,
            agent: me.clone(),
            owner: "team".into(),
            action: "a".into(),
            resource: "r".into(),
            intent: String::new(),
            params: serde_json::json!({}),
            reasons: vec![],
            requested_ttl_seconds: 60,
            request_hash: String::new(),
            rule: gateway_core::approval::ApprovalRule::default(),
            deadline: OffsetDateTime::now_utc(),
        });
        assert!(matches!(
            t.phase_for(id, &me),
            Some(Phase::PendingApproval { .. })
        ));
        assert!(t.phase_for(id, &other).is_none());
        t.finish(&me, id, Err(GatewayError::Cancelled { correlation_id: id }));
        assert!(matches!(t.phase_for(id, &me), Some(Phase::Done(_))));
        assert!(t.phase_for(id, &other).is_none());
    }
}
