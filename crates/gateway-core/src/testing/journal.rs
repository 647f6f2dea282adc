//! A shared, ordered record of what the doubles did, so tests can check ordering guarantees
//! across backends (e.g. "no job started before `decided(allow)` was acknowledged").

use crate::audit::AuditEventKind;
use crate::ids::RequestId;
use std::sync::{Arc, Mutex, PoisonError};

/// One thing a double did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// The audit double acknowledged an event as durable.
    AuditAcked {
        /// Correlation id.
        correlation_id: RequestId,
        /// Kind of event.
        kind: AuditEventKind,
        /// For `decided`: whether it allowed.
        allow: Option<bool>,
    },
    /// The audit double stored one group of events (one [`append`] or [`append_all`] call:
    /// one durable commit on a sink that groups), after their [`Entry::AuditAcked`] entries.
    ///
    /// [`append`]: crate::audit::AuditSink::append
    /// [`append_all`]: crate::audit::AuditSink::append_all
    AuditCommitted {
        /// Correlation id of the group's first event (the pipeline never mixes trails in a
        /// group).
        correlation_id: RequestId,
        /// How many events the group held.
        events: usize,
    },
    /// The broker issued a grant.
    Granted {
        /// Correlation id.
        correlation_id: RequestId,
        /// Grant id.
        grant_id: String,
    },
    /// The broker was asked to revoke a grant.
    RevokeCalled {
        /// Grant id.
        grant_id: String,
    },
    /// The runner started a job.
    JobStarted {
        /// Correlation id.
        correlation_id: RequestId,
    },
    /// The runner tore a job's environment down.
    JobTornDown {
        /// Correlation id.
        correlation_id: RequestId,
    },
}

/// The shared journal (cheap to clone).
#[derive(Debug, Clone, Default)]
pub struct Journal {
    entries: Arc<Mutex<Vec<Entry>>>,
}

impl Journal {
    /// An empty journal.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends an entry.
    pub fn push(&self, entry: Entry) {
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(entry);
    }

    /// A copy of all entries, in order.
    pub fn entries(&self) -> Vec<Entry> {
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}
