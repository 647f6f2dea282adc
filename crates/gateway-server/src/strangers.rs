//! Requests whose credential does not authenticate: each source (client IP) gets a small
//! budget of them, run through the pipeline and audited one by one as always; past it they are
//! refused (429) before the pipeline, so a flood of garbage credentials cannot cost an audit
//! write per request, and are recorded as counted summaries instead: one `rejected` record per
//! source and window, holding how many were refused.
//!
//! Nothing here is keyed by an agent or a request id: an unauthenticated request can never
//! claim, evict or reveal anything of an authenticated agent.

use gateway_core::{AuditEvent, AuditEventKind, AuditSink, EventOutcome, RequestId};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// How often the refusals counted for each source are written out.
pub const SUMMARY_WINDOW: Duration = Duration::from_secs(10);

/// Sources tracked by the limiter before idle ones are dropped.
const MAX_SOURCES: usize = 100_000;

/// Distinct sources counted per window; the rest are counted under [`OTHER_SOURCES`].
const MAX_COUNTED: usize = 1_000;

/// The summary source for refusals beyond [`MAX_COUNTED`] distinct sources in one window.
pub const OTHER_SOURCES: &str = "other-sources";

/// The per-source budget and the counts of what it refused.
pub(crate) struct Strangers {
    limiter: Option<DefaultKeyedRateLimiter<String>>,
    counts: Mutex<Counts>,
}

struct Counts {
    since: Instant,
    refused: BTreeMap<String, u64>,
}

impl Strangers {
    /// `per_second` sustained, `burst` at once, per source; a zero burst admits none.
    pub(crate) fn new(per_second: f64, burst: u32) -> Self {
        let limiter = NonZeroU32::new(burst).map(|burst| {
            let period = if per_second.is_finite() && per_second > 0.0 {
                Duration::from_secs_f64((1.0 / per_second).min(86_400.0))
            } else {
                Duration::from_secs(86_400)
            };
            let quota = Quota::with_period(period.max(Duration::from_nanos(1)))
                .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
                .allow_burst(burst);
            RateLimiter::keyed(quota)
        });
        Self {
            limiter,
            counts: Mutex::new(Counts {
                since: Instant::now(),
                refused: BTreeMap::new(),
            }),
        }
    }

    /// Whether an unauthenticated request from `source` may still go through the pipeline;
    /// if not, it is counted for the next summary.
    pub(crate) fn admit(&self, source: &str) -> bool {
        let admitted = self.limiter.as_ref().is_some_and(|limiter| {
            if limiter.len() > MAX_SOURCES {
                limiter.retain_recent();
            }
            limiter.check_key(&source.to_owned()).is_ok()
        });
        if !admitted {
            let mut counts = self.lock();
            let key = if counts.refused.len() < MAX_COUNTED || counts.refused.contains_key(source) {
                source.to_owned()
            } else {
                OTHER_SOURCES.to_owned()
            };
            *counts.refused.entry(key).or_insert(0) += 1;
        }
        admitted
    }

    /// Whether a window with refusals in it has ended (a flush would write something).
    pub(crate) fn due(&self) -> bool {
        let counts = self.lock();
        !counts.refused.is_empty() && counts.since.elapsed() >= SUMMARY_WINDOW
    }

    /// The counts of the window that ended (all of them with `force`), emptied; `None` when
    /// the window is still open or nothing was refused.
    fn take(&self, force: bool) -> Option<(Duration, BTreeMap<String, u64>)> {
        let mut counts = self.lock();
        let elapsed = counts.since.elapsed();
        if counts.refused.is_empty() || (!force && elapsed < SUMMARY_WINDOW) {
            return None;
        }
        counts.since = Instant::now();
        Some((elapsed, std::mem::take(&mut counts.refused)))
    }

    /// Writes the summaries of the window that ended (all with `force`) to `audit`: one
    /// `rejected` record per source. A summary that cannot be written is logged with its
    /// count (the requests were refused all the same).
    pub(crate) async fn flush(&self, audit: &Arc<dyn AuditSink>, force: bool) {
        let Some((window, refused)) = self.take(force) else {
            return;
        };
        let events = refused
            .into_iter()
            .map(|(source, count)| summary(&source, count, window))
            .collect();
        if let Err(e) = audit.append_all(events).await {
            tracing::error!(error = %e, "the summary of refused unauthenticated requests was not recorded");
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Counts> {
        // Each critical section is a lookup and an increment, or a swap: always consistent.
        self.counts.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// One source's summary record.
fn summary(source: &str, count: u64, window: Duration) -> AuditEvent {
    let mut event = AuditEvent::new(RequestId::new(), 1, AuditEventKind::Rejected);
    event.outcome = Some(EventOutcome::Failure);
    event.origin = Some(source.to_owned());
    event
        .details
        .insert("error_kind".into(), "unauthenticated".into());
    event.details.insert(
        "reason".into(),
        "unauthenticated requests over the per-source budget, refused before the pipeline".into(),
    );
    event.details.insert("refused_count".into(), count.into());
    event
        .details
        .insert("window_seconds".into(), window.as_secs().into());
    event
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_gets_its_burst_then_is_counted_and_others_are_not_affected() {
        let s = Strangers::new(0.001, 3);
        for _ in 0..3 {
            assert!(s.admit("10.0.0.1"));
        }
        for _ in 0..5 {
            assert!(!s.admit("10.0.0.1"));
        }
        assert!(s.admit("10.0.0.2"), "another source has its own budget");
        let (_, refused) = s.take(true).unwrap_or_default();
        assert_eq!(refused.get("10.0.0.1"), Some(&5));
        assert_eq!(refused.len(), 1);
        assert!(s.take(true).is_none(), "counts go with their summary");
    }

    #[test]
    fn distinct_sources_beyond_the_cap_share_one_count() {
        let s = Strangers::new(0.001, 0);
        for i in 0..(MAX_COUNTED + 50) {
            assert!(!s.admit(&format!("source-{i}")));
        }
        let (_, refused) = s.take(true).unwrap_or_default();
        assert_eq!(refused.len(), MAX_COUNTED + 1);
        assert_eq!(refused.get(OTHER_SOURCES), Some(&50));
    }
}
