//! [`AuditSink`] conformance.

use crate::audit::{AuditEvent, AuditEventKind, AuditSink, EventOutcome};
use crate::ids::{AgentId, RequestId};
use std::collections::BTreeSet;

fn event(n: usize) -> AuditEvent {
    let mut ev = AuditEvent::new(RequestId::new(), 1, AuditEventKind::Requested);
    ev.agent_id = Some(AgentId::new("agent:conformance").expect("valid id"));
    ev.action = "conformance.append".into();
    ev.resource = format!("conformance:{n}");
    ev.outcome = Some(EventOutcome::Success);
    ev.details.insert("n".into(), serde_json::json!(n));
    ev
}

/// Runs the suite against a sink whose chain may already hold records.
pub async fn run(sink: &dyn AuditSink) {
    let before = sink.verify().await.expect("verify before");
    assert!(
        before.is_ok(),
        "chain broken before the suite: {:?}",
        before.fault
    );

    // Sequential appends get strictly increasing sequence numbers and read back as written.
    let mut receipts = Vec::new();
    let mut events = Vec::new();
    for n in 0..5 {
        let ev = event(n);
        receipts.push(sink.append(ev.clone()).await.expect("append"));
        events.push(ev);
    }
    for pair in receipts.windows(2) {
        assert_eq!(
            pair[1].sequence,
            pair[0].sequence + 1,
            "sequence numbers must be gapless"
        );
        assert_eq!(pair[0].stream_id, pair[1].stream_id);
    }
    let first = receipts[0].sequence;
    let read = sink.read(Some(first - 1), 5).await.expect("read");
    assert_eq!(read.len(), 5, "read returned the wrong number of records");
    for ((record, receipt), ev) in read.iter().zip(&receipts).zip(&events) {
        assert_eq!(record.sequence, receipt.sequence);
        assert_eq!(
            record.hash, receipt.hash,
            "receipt hash differs from the stored one"
        );
        assert_eq!(record.event.correlation_id, ev.correlation_id);
        assert_eq!(record.event.resource, ev.resource);
        assert_eq!(record.event.details.get("n"), ev.details.get("n"));
    }
    let limited = sink
        .read(Some(first - 1), 2)
        .await
        .expect("read with limit");
    assert_eq!(limited.len(), 2, "read ignores its limit");

    // A group append: receipts in order, contiguous, read back as written. (Whether a group
    // stays contiguous under concurrent appends is each atomic sink's own test: the trait's
    // default does not promise it.)
    let group: Vec<AuditEvent> = (10..13).map(event).collect();
    let grouped = sink.append_all(group.clone()).await.expect("append_all");
    assert_eq!(grouped.len(), group.len(), "one receipt per grouped event");
    for pair in grouped.windows(2) {
        assert_eq!(
            pair[1].sequence,
            pair[0].sequence + 1,
            "a group's records must be contiguous"
        );
    }
    let read = sink
        .read(Some(grouped[0].sequence - 1), group.len())
        .await
        .expect("read group");
    for ((record, receipt), ev) in read.iter().zip(&grouped).zip(&group) {
        assert_eq!(record.sequence, receipt.sequence);
        assert_eq!(record.hash, receipt.hash);
        assert_eq!(record.event.resource, ev.resource);
    }
    assert!(
        sink.append_all(Vec::new())
            .await
            .expect("empty group")
            .is_empty(),
        "an empty group stores nothing"
    );

    // Concurrent appends: all acknowledged, no duplicate sequence numbers, chain valid.
    let tasks = (0..64).map(|n| sink.append(event(100 + n)));
    let results = futures::future::join_all(tasks).await;
    let mut seqs = BTreeSet::new();
    for r in results {
        let receipt = r.expect("concurrent append");
        assert!(
            seqs.insert(receipt.sequence),
            "duplicate sequence number {}",
            receipt.sequence
        );
    }
    let report = sink.verify().await.expect("verify after");
    assert!(
        report.is_ok(),
        "chain broken after appends: {:?}",
        report.fault
    );
    let head = report.head.expect("head").0;
    assert!(
        head >= *seqs.last().expect("non-empty"),
        "verified head is behind the appends"
    );
    assert!(
        report.records_checked >= 70,
        "verify checked too few records"
    );
}
