//! One action's audit trail: numbers the steps and stamps every event with the same
//! correlation id, agent, action, resource and origin.
//!
//! An event that guards no side effect of its own can be *deferred*: it is stored together with
//! the trail's next event, in one [`AuditSink::append_all`] (one durable commit on sinks that
//! group), instead of costing a commit of its own. The pipeline defers `requested`, `decided`
//! and `granted` (stored with `started` before the job runs, or with the terminal record of a
//! refusal) and `revoked` (stored with the outcome): two commits per allowed action, one per
//! refused one.

use super::events::Event;
use super::guard::guarded;
use crate::audit::{AuditError, AuditEvent, AuditReceipt, AuditSink};
use crate::error::BoxError;
use crate::ids::{AgentId, RequestId};
use crate::redact::Redactor;
use crate::text::truncate;
use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument;

/// An event the sink did not store: a description for records and logs, and the typed cause.
#[derive(Debug)]
pub(crate) struct AuditFailure {
    pub(crate) message: String,
    pub(crate) source: BoxError,
}

impl AuditFailure {
    /// What the caller is told when an action stops because this record was not stored.
    pub(crate) fn stopped_message(&self) -> String {
        format!("audit record not stored, action stopped: {}", self.message)
    }
}

pub(crate) struct Trail {
    sink: Arc<dyn AuditSink>,
    /// Applied to every event before the sink sees it.
    redactor: Arc<Redactor>,
    timeout: Duration,
    correlation_id: RequestId,
    agent_id: Option<AgentId>,
    action: String,
    resource: String,
    origin: Option<String>,
    step: u32,
    last_receipt: Option<AuditReceipt>,
    terminal_stored: bool,
    /// Deferred events, stored with the next recorded one.
    pending: Vec<AuditEvent>,
}

impl Trail {
    pub(crate) fn new(
        sink: Arc<dyn AuditSink>,
        redactor: Arc<Redactor>,
        timeout: Duration,
        correlation_id: RequestId,
        action: &str,
        resource: &str,
        origin: Option<String>,
    ) -> Self {
        Self {
            sink,
            redactor,
            timeout,
            correlation_id,
            agent_id: None,
            // Bound what an unauthenticated caller can make us store.
            action: truncate(action, 256),
            resource: truncate(resource, 1024),
            origin,
            step: 0,
            last_receipt: None,
            terminal_stored: false,
            pending: Vec::new(),
        }
    }

    /// Continues a trail whose first `step` events another trail stored (a recovery closing
    /// an action its own replica left open).
    pub(crate) fn after_step(mut self, step: u32) -> Self {
        self.step = step;
        self
    }

    pub(crate) fn set_agent(&mut self, agent: AgentId) {
        self.agent_id = Some(agent);
    }

    /// How many events the trail holds, deferred ones included.
    pub(crate) fn steps(&self) -> u32 {
        self.step
    }

    pub(crate) fn correlation_id(&self) -> RequestId {
        self.correlation_id
    }

    /// Whether the trail has begun (something is stored, or deferred to be) but has no terminal
    /// record yet.
    pub(crate) fn is_open(&self) -> bool {
        (self.last_receipt.is_some() || !self.pending.is_empty()) && !self.terminal_stored
    }

    pub(crate) fn last_receipt(&self) -> Option<&AuditReceipt> {
        self.last_receipt.as_ref()
    }

    /// Appends the next event, with any deferred ones before it, and waits until the sink says
    /// they are durable. `Err` carries a description; the event is then *not* stored and the
    /// caller must fail closed. Deferred events stay deferred after an error, so the next
    /// record (e.g. the pipeline's retry of the terminal record) still stores them.
    pub(crate) async fn record(&mut self, event: Event) -> Result<AuditReceipt, AuditFailure> {
        let kind = event.kind;
        let event = self.next_event(event);
        let span = tracing::info_span!("audit.append", kind = ?kind, step = self.step, deferred = self.pending.len());
        let result = if self.pending.is_empty() {
            guarded(self.sink.append(event), self.timeout, None)
                .instrument(span)
                .await
                .map(Some)
        } else {
            let mut events = self.pending.clone();
            events.push(event);
            guarded(self.sink.append_all(events), self.timeout, None)
                .instrument(span)
                .await
                .map(|mut receipts| receipts.pop())
        };
        match result {
            Ok(Some(receipt)) => {
                self.pending.clear();
                self.last_receipt = Some(receipt.clone());
                self.terminal_stored |= kind.is_terminal();
                Ok(receipt)
            }
            Ok(None) => {
                let message = "audit sink acknowledged no record";
                Err(AuditFailure {
                    message: message.to_owned(),
                    source: Box::new(AuditError::internal_msg(message)),
                })
            }
            Err(e) => {
                let message = e.describe("audit sink");
                tracing::error!(correlation_id = %self.correlation_id, ?kind, %message, "audit append failed");
                Err(AuditFailure {
                    message,
                    source: e.into_source("audit sink"),
                })
            }
        }
    }

    /// Prepares the next event and stores it with the next [`record`](Self::record). Only for
    /// events that need not be durable before the next step: the caller must record another
    /// event before acting on anything this one reports.
    pub(crate) fn defer(&mut self, event: Event) {
        let event = self.next_event(event);
        self.pending.push(event);
    }

    /// Stamps `event` with its step and the trail's common fields, and redacts it: no sink ever
    /// sees an unredacted event.
    fn next_event(&mut self, event: Event) -> AuditEvent {
        self.step += 1;
        let mut stamped = AuditEvent::new(self.correlation_id, self.step, event.kind);
        stamped.agent_id = self.agent_id.clone();
        stamped.action = self.action.clone();
        stamped.resource = self.resource.clone();
        stamped.origin = self.origin.clone();
        stamped.outcome = event.outcome;
        stamped.decision = event.decision;
        stamped.grant_id = event.grant_id;
        stamped.runner_id = event.runner_id;
        stamped.details = event.details;
        self.redactor.redact(&mut stamped);
        stamped
    }
}
