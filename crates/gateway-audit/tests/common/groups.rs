//! `append_all` on a real store: a group is one unit in the chain and in one commit.

use super::{Flaky, event};
use gateway_audit::{AuditStore, ChainedSink, SinkConfig, SoftwareSigner};
use gateway_core::audit::{AuditEvent, AuditSink};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use time::UtcOffset;

/// 64 tasks append single events while 8 others append groups of 5: every group's records
/// are contiguous and in order, every sequence number is taken once, and the chain verifies.
pub async fn groups_stay_contiguous_under_concurrent_appends<S: AuditStore>(
    sink: Arc<ChainedSink<S>>,
) {
    let singles: Vec<_> = (0..64u64)
        .map(|t| {
            let sink = Arc::clone(&sink);
            tokio::spawn(async move {
                let mut seqs = Vec::new();
                for i in 0..20 {
                    seqs.push(sink.append(event(t * 1000 + i)).await.unwrap().sequence);
                }
                seqs
            })
        })
        .collect();
    let groups: Vec<_> = (0..8u64)
        .map(|t| {
            let sink = Arc::clone(&sink);
            tokio::spawn(async move {
                let mut out = Vec::new();
                for g in 0..10u64 {
                    let events: Vec<AuditEvent> = (0..5)
                        .map(|i| event(1_000_000 + t * 10_000 + g * 10 + i))
                        .collect();
                    let resources: Vec<String> =
                        events.iter().map(|e| e.resource.clone()).collect();
                    let receipts = sink.append_all(events).await.unwrap();
                    out.push((resources, receipts));
                }
                out
            })
        })
        .collect();
    let mut all = BTreeSet::new();
    for t in singles {
        for s in t.await.unwrap() {
            assert!(all.insert(s), "duplicate sequence {s}");
        }
    }
    let mut grouped = Vec::new();
    for t in groups {
        grouped.extend(t.await.unwrap());
    }
    for (resources, receipts) in &grouped {
        assert_eq!(receipts.len(), resources.len(), "one receipt per event");
        for pair in receipts.windows(2) {
            assert_eq!(
                pair[1].sequence,
                pair[0].sequence + 1,
                "a group was split by other appends"
            );
        }
        for r in receipts {
            assert!(all.insert(r.sequence), "duplicate sequence {}", r.sequence);
        }
        let stored = sink
            .read(Some(receipts[0].sequence - 1), receipts.len())
            .await
            .unwrap();
        let stored: Vec<&str> = stored.iter().map(|r| r.event.resource.as_str()).collect();
        assert_eq!(stored, *resources, "a group's events are stored in order");
    }
    assert_eq!(all.len(), 64 * 20 + 8 * 10 * 5);
    let report = sink.verify().await.unwrap();
    assert!(report.is_ok(), "{:?}", report.fault);
    assert_eq!(report.head.unwrap().0, *all.last().unwrap());
}

/// A group whose commit fails is stored not at all, and the next append takes the very next
/// sequence number; an empty group never reaches the store.
pub async fn a_failed_group_stores_nothing<S: AuditStore>(sink: ChainedSink<Flaky<S>>) {
    let before = sink.append(event(1)).await.unwrap();
    let commits = sink.store().commits.load(Ordering::SeqCst);
    assert!(sink.append_all(Vec::new()).await.unwrap().is_empty());
    assert_eq!(
        sink.store().commits.load(Ordering::SeqCst),
        commits,
        "an empty group reached the store"
    );

    sink.store().fail_next.store(1, Ordering::SeqCst);
    let group: Vec<AuditEvent> = (0..4).map(|i| event(500 + i)).collect();
    let err = sink.append_all(group).await.unwrap_err();
    assert_eq!(err.kind(), gateway_core::ErrorKind::Unavailable);

    let after = sink.append(event(2)).await.unwrap();
    assert_eq!(
        after.sequence,
        before.sequence + 1,
        "the failed group left a gap"
    );
    let stored = sink.read(None, 100).await.unwrap();
    assert!(
        stored
            .iter()
            .all(|r| !r.event.resource.starts_with("db:orders/50")),
        "part of a failed group was stored"
    );
    assert!(sink.verify().await.unwrap().is_ok());
}

/// A group holding an event that cannot be sealed (its time has a seconds offset, which
/// RFC 3339 cannot write) fails as a whole, while the appends committed in the same batch are
/// stored without a gap.
pub async fn an_unsealable_group_fails_alone<S: AuditStore>(sink: Arc<ChainedSink<S>>) {
    let mut bad = event(3);
    bad.time = bad.time.to_offset(UtcOffset::from_hms(0, 0, 30).unwrap());
    let group = vec![event(600), bad, event(601)];
    let (group_result, singles) = tokio::join!(
        sink.append_all(group),
        futures::future::join_all((0..8).map(|i| sink.append(event(700 + i))))
    );
    assert!(group_result.is_err(), "an unsealable group was accepted");
    let mut seqs: Vec<u64> = singles.into_iter().map(|r| r.unwrap().sequence).collect();
    seqs.sort_unstable();
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "the failed group left a gap: {seqs:?}"
    );
    let stored = sink.read(None, 1000).await.unwrap();
    assert!(
        stored
            .iter()
            .all(|r| !r.event.resource.starts_with("db:orders/60")),
        "part of a failed group was stored"
    );
    assert!(sink.verify().await.unwrap().is_ok());
}

/// A group larger than one statement can bind, with checkpoints due inside it (every 100
/// records), is still one commit on `store`: contiguous, verified, its checkpoint covering its
/// last record.
pub async fn a_large_group_is_one_commit<S: AuditStore>(store: S) {
    let signer = Arc::new(SoftwareSigner::generate());
    let sink = ChainedSink::open(
        Flaky::new(store),
        SinkConfig::new("gw").with_checkpoints(signer, 100, Duration::from_secs(60)),
    )
    .await
    .unwrap();
    let commits = sink.store().commits.load(Ordering::SeqCst);
    let group: Vec<AuditEvent> = (0..3000).map(|i| event(10_000 + i)).collect();
    let receipts = sink.append_all(group).await.unwrap();
    assert_eq!(receipts.len(), 3000);
    assert!(
        receipts
            .windows(2)
            .all(|w| w[1].sequence == w[0].sequence + 1)
    );
    assert_eq!(
        sink.store().commits.load(Ordering::SeqCst),
        commits + 1,
        "a group took more than one commit"
    );
    let checkpoints = sink
        .store()
        .read_checkpoints(sink.stream_id(), None, 100)
        .await
        .unwrap();
    let last = receipts.last().unwrap().sequence;
    assert!(
        checkpoints.iter().any(|c| c.sequence as u64 == last),
        "no checkpoint committed with the group"
    );
    let report = sink.verify().await.unwrap();
    assert!(report.is_ok(), "{:?}", report.fault);
}
