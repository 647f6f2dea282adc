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

/// Runs every case against a sink whose chain may already hold records, checking that the chain
/// verifies before and after.
pub async fn run_all(sink: &dyn AuditSink) {
    chain_verifies(sink, "before the suite").await;
    appends_are_gapless_and_read_back(sink).await;
    read_honours_its_limit(sink).await;
    group_appends_are_contiguous(sink).await;
    an_empty_group_stores_nothing(sink).await;
    let last = concurrent_appends_get_distinct_sequences(sink).await;
    let report = chain_verifies(sink, "after the suite").await;
    let head = report.head.expect("head").0;
    assert!(head >= last, "verified head is behind the appends");
    assert!(
        report.records_checked >= 70,
        "verify checked too few records"
    );
}

async fn chain_verifies(sink: &dyn AuditSink, when: &str) -> crate::audit::VerifyReport {
    let report = sink.verify().await.expect("verify");
    assert!(report.is_ok(), "chain broken {when}: {:?}", report.fault);
    report
}

/// Sequential appends get strictly increasing, gapless sequence numbers on one stream, and read
/// back as written, with the receipts' hashes.
pub async fn appends_are_gapless_and_read_back(sink: &dyn AuditSink) {
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
}

/// `read` returns at most `limit` records.
pub async fn read_honours_its_limit(sink: &dyn AuditSink) {
    let mut first = None;
    for n in 20..23 {
        let receipt = sink.append(event(n)).await.expect("append");
        first.get_or_insert(receipt.sequence);
    }
    let first = first.expect("three appends");
    let limited = sink
        .read(Some(first - 1), 2)
        .await
        .expect("read with limit");
    assert_eq!(limited.len(), 2, "read ignores its limit");
    assert_eq!(limited[0].sequence, first, "read starts after `after`");
}

/// A group append: one receipt per event, in order, contiguous, read back as written. (Whether
/// a group stays contiguous under concurrent appends is each atomic sink's own test: the trait's
/// default does not promise it.)
pub async fn group_appends_are_contiguous(sink: &dyn AuditSink) {
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
}

/// An empty group stores nothing and returns no receipt.
pub async fn an_empty_group_stores_nothing(sink: &dyn AuditSink) {
    let before = sink.verify().await.expect("verify").head;
    assert!(
        sink.append_all(Vec::new())
            .await
            .expect("empty group")
            .is_empty(),
        "an empty group returns receipts"
    );
    let after = sink.verify().await.expect("verify").head;
    assert_eq!(before, after, "an empty group moved the head");
}

/// 64 concurrent appends are all acknowledged with distinct sequence numbers, and the chain still
/// verifies. Returns the highest sequence number acknowledged.
pub async fn concurrent_appends_get_distinct_sequences(sink: &dyn AuditSink) -> u64 {
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
    chain_verifies(sink, "after concurrent appends").await;
    *seqs.last().expect("64 appends")
}
