//! The status of submitted actions, so a front can answer 202 and be polled later.
//!
//! Every action the front submits runs on its own task; its phase (running, waiting for a human,
//! done) lives here in a bounded map keyed by request id. Finished entries are evicted after the
//! retention period, or earlier, oldest first, when the map is full.
//!
//! To learn that a request waits for approval without changing the core, [`TrackingGate`] wraps
//! the approval queue: it marks the request `pending_approval` (which wakes the waiting HTTP
//! handler) before delegating.

use crate::metrics::Metrics;
use gateway_core::approval::ApprovalError;
use gateway_core::{
    ActionOutcome, AgentId, ApprovalGate, ApprovalRequest, ApprovalVerdict, GatewayError,
    RequestId, async_trait,
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

/// Why an action could not be tracked (and so was not submitted).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TrackError {
    /// A request with this id is already known.
    #[error("a request with id {0} was already submitted")]
    Duplicate(RequestId),
    /// The map is full of actions still in flight.
    #[error("too many actions in flight ({0}); retry later")]
    Full(usize),
}

struct Entry {
    /// Known once the pipeline has authenticated the agent (approval request or outcome).
    agent: Option<AgentId>,
    phase: watch::Sender<Phase>,
}

#[derive(Default)]
struct Map {
    entries: HashMap<RequestId, Entry>,
    /// Finished entries in finishing order, for eviction.
    finished: VecDeque<(Instant, RequestId)>,
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

    /// Starts tracking a request; the receiver sees its phase changes.
    pub fn begin(&self, id: RequestId) -> Result<watch::Receiver<Phase>, TrackError> {
        let mut map = self.lock();
        let now = Instant::now();
        // Evict expired finished entries, then the oldest finished ones while full.
        while let Some(&(at, old)) = map.finished.front() {
            let expired = now.duration_since(at) >= self.retention;
            if !expired && map.entries.len() < self.capacity {
                break;
            }
            map.finished.pop_front();
            map.entries.remove(&old);
        }
        if map.entries.contains_key(&id) {
            return Err(TrackError::Duplicate(id));
        }
        if map.entries.len() >= self.capacity {
            return Err(TrackError::Full(self.capacity));
        }
        let (tx, rx) = watch::channel(Phase::Running);
        map.entries.insert(
            id,
            Entry {
                agent: None,
                phase: tx,
            },
        );
        Ok(rx)
    }

    fn set(&self, id: RequestId, agent: Option<&AgentId>, phase: Phase) {
        let mut map = self.lock();
        let done = matches!(phase, Phase::Done(_));
        let Some(entry) = map.entries.get_mut(&id) else {
            return;
        };
        if let Some(agent) = agent {
            entry.agent = Some(agent.clone());
        }
        entry.phase.send_replace(phase);
        if done {
            map.finished.push_back((Instant::now(), id));
        }
    }

    /// Marks a request as waiting for approval (called by [`TrackingGate`]).
    pub fn mark_pending(&self, request: &ApprovalRequest) {
        self.set(
            request.correlation_id,
            Some(&request.agent),
            Phase::PendingApproval {
                deadline: request.deadline,
            },
        );
    }

    /// Marks a request as running again (after its approval was resolved).
    pub fn mark_running(&self, id: RequestId) {
        self.set(id, None, Phase::Running);
    }

    /// Records the result of a request.
    pub fn finish(&self, id: RequestId, result: Result<ActionOutcome, GatewayError>) {
        let agent = match &result {
            Ok(outcome) => Some(outcome.agent.clone()),
            Err(GatewayError::OutcomeNotRecorded { outcome, .. }) => Some(outcome.agent.clone()),
            Err(_) => None,
        };
        self.set(id, agent.as_ref(), Phase::Done(Arc::new(result)));
    }

    /// The phase of a request, only if `agent` submitted it. Requests whose agent is not known
    /// (refused before a decision, still authenticating) are visible to nobody.
    pub fn phase_for(&self, id: RequestId, agent: &AgentId) -> Option<Phase> {
        let map = self.lock();
        let entry = map.entries.get(&id)?;
        (entry.agent.as_ref() == Some(agent)).then(|| entry.phase.borrow().clone())
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
/// (normally to a `PendingApprovals` queue).
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
        self.tracker.mark_running(request.correlation_id);
        verdict
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_and_capacity() {
        let t = ActionTracker::new(2, Duration::from_secs(60));
        let a = RequestId::new();
        let b = RequestId::new();
        let c = RequestId::new();
        let _ra = t.begin(a).unwrap();
        assert_eq!(t.begin(a).unwrap_err(), TrackError::Duplicate(a));
        let _rb = t.begin(b).unwrap();
        assert_eq!(t.begin(c).unwrap_err(), TrackError::Full(2));
        // Finishing one frees room: the oldest finished entry is evicted.
        t.finish(a, Err(GatewayError::Cancelled { correlation_id: a }));
        assert!(t.begin(c).is_ok());
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn only_the_submitting_agent_sees_a_request() {
        let t = ActionTracker::new(8, Duration::from_secs(60));
        let id = RequestId::new();
        let _rx = t.begin(id).unwrap();
        let me = AgentId::new("agent:me").unwrap();
        let other = AgentId::new("agent:other").unwrap();
        assert!(
            t.phase_for(id, &me).is_none(),
            "unknown agent: visible to nobody"
        );
        t.mark_pending(&ApprovalRequest {
            correlation_id: id,
            agent: me.clone(),
            action: "a".into(),
            resource: "r".into(),
            intent: String::new(),
            params: serde_json::json!({}),
            reasons: vec![],
            deadline: OffsetDateTime::now_utc(),
        });
        assert!(matches!(
            t.phase_for(id, &me),
            Some(Phase::PendingApproval { .. })
        ));
        assert!(t.phase_for(id, &other).is_none());
    }
}
