//! One action's audit trail: numbers the steps and stamps every event with the same
//! correlation id, agent, action, resource and origin.

use super::guard::guarded;
use crate::audit::{AuditEvent, AuditEventKind, AuditReceipt, AuditSink, EventOutcome};
use crate::ids::{AgentId, RequestId};
use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument;

pub(crate) struct Trail {
    sink: Arc<dyn AuditSink>,
    timeout: Duration,
    correlation_id: RequestId,
    agent_id: Option<AgentId>,
    action: String,
    resource: String,
    origin: Option<String>,
    step: u32,
    last_receipt: Option<AuditReceipt>,
    terminal_stored: bool,
}

impl Trail {
    pub(crate) fn new(
        sink: Arc<dyn AuditSink>,
        timeout: Duration,
        correlation_id: RequestId,
        action: &str,
        resource: &str,
        origin: Option<String>,
    ) -> Self {
        Self {
            sink,
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
        }
    }

    pub(crate) fn set_agent(&mut self, agent: AgentId) {
        self.agent_id = Some(agent);
    }

    pub(crate) fn correlation_id(&self) -> RequestId {
        self.correlation_id
    }

    /// Whether the trail has begun (something is stored) but has no terminal record yet.
    pub(crate) fn is_open(&self) -> bool {
        self.last_receipt.is_some() && !self.terminal_stored
    }

    pub(crate) fn last_receipt(&self) -> Option<&AuditReceipt> {
        self.last_receipt.as_ref()
    }

    /// Appends the next event and waits until the sink says it is durable. `Err` carries a
    /// description; the event is then *not* stored and the caller must fail closed.
    pub(crate) async fn record(
        &mut self,
        kind: AuditEventKind,
        outcome: Option<EventOutcome>,
        fill: impl FnOnce(&mut AuditEvent),
    ) -> Result<AuditReceipt, String> {
        self.step += 1;
        let mut event = AuditEvent::new(self.correlation_id, self.step, kind);
        event.agent_id = self.agent_id.clone();
        event.action = self.action.clone();
        event.resource = self.resource.clone();
        event.origin = self.origin.clone();
        event.outcome = outcome;
        fill(&mut event);
        let span = tracing::info_span!("audit.append", kind = ?kind, step = self.step);
        match guarded(self.sink.append(event), self.timeout, None)
            .instrument(span)
            .await
        {
            Ok(receipt) => {
                self.last_receipt = Some(receipt.clone());
                self.terminal_stored |= kind.is_terminal();
                Ok(receipt)
            }
            Err(e) => {
                let message = e.describe("audit sink");
                tracing::error!(correlation_id = %self.correlation_id, ?kind, %message, "audit append failed");
                Err(message)
            }
        }
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}
