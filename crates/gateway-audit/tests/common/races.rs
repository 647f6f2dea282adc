//! Two sinks writing one stream on a real store: a lost race is retried or fails, and never
//! forks the chain.

use super::event;
use gateway_audit::{AuditStore, ChainedSink};
use gateway_core::audit::AuditSink;
use std::collections::BTreeSet;
use std::sync::Arc;

/// Appends `n` events at once, alternately through `a` and `b`. Asserts that no sequence number
/// is acknowledged twice and that at least three quarters of the appends succeed (losing a race
/// may surface as an error after the retries); returns the acknowledged sequence numbers.
async fn race<S: AuditStore>(
    a: &Arc<ChainedSink<S>>,
    b: &Arc<ChainedSink<S>>,
    n: u64,
) -> BTreeSet<u64> {
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let sink = Arc::clone(if i % 2 == 0 { a } else { b });
            tokio::spawn(async move { sink.append(event(i)).await })
        })
        .collect();
    let mut acked = BTreeSet::new();
    for t in tasks {
        if let Ok(r) = t.await.unwrap() {
            assert!(
                acked.insert(r.sequence),
                "duplicate sequence {}",
                r.sequence
            );
        }
    }
    assert!(
        acked.len() as u64 >= n * 3 / 4,
        "too many appends failed: {}",
        acked.len()
    );
    acked
}

/// 200 appends race through two sinks: the chain verifies and holds every acknowledged record.
pub async fn two_sinks_on_one_stream_never_fork_it<S: AuditStore>(
    a: Arc<ChainedSink<S>>,
    b: Arc<ChainedSink<S>>,
) {
    let acked = race(&a, &b, 200).await;
    let report = a.verify().await.unwrap();
    assert!(report.is_ok(), "{:?}", report.fault);
    let stored: BTreeSet<u64> = a
        .read(None, 1000)
        .await
        .unwrap()
        .iter()
        .map(|r| r.sequence)
        .collect();
    assert!(acked.is_subset(&stored));
}

/// Two sinks that checkpoint every batch (so every commit carries a checkpoint) race: both
/// still work afterwards, and the chain and its checkpoints verify.
pub async fn racing_checkpointed_batches_never_fork_the_stream<S: AuditStore>(
    a: Arc<ChainedSink<S>>,
    b: Arc<ChainedSink<S>>,
) {
    race(&a, &b, 100).await;
    // Both writers still work after their lost races.
    a.append(event(1000)).await.unwrap();
    b.append(event(1001)).await.unwrap();
    let report = a.verify().await.unwrap();
    assert!(report.is_ok(), "{:?}", report.fault);
    // One checkpoint per committed batch, at least the two last ones.
    assert!(report.checkpoints_checked >= 2, "{report:?}");
}
