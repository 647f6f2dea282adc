//! Proptest strategies for audit events: text and JSON weighted towards what JSON escapes and
//! RFC 8785 orders specially, and events with every field varied. Shared by the chain's tests
//! here and the stored-body tests of `gateway-audit` (feature `strategies`).
// Test support: every unwrap below is on a value the strategy itself built to be valid.
#![allow(clippy::unwrap_used)]

use crate::audit::{AuditEvent, AuditEventKind, DecisionRecord, EventOutcome};
use crate::ids::{AgentId, RequestId};
use proptest::prelude::*;
use serde_json::Value;
use time::{OffsetDateTime, UtcOffset};

/// Any Unicode text, weighted towards characters JSON escapes or RFC 8785 sorts specially
/// (U+1F600 and U+FF61 order differently in UTF-8 and UTF-16).
pub fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9_.:/-]{0,10}",
        any::<String>(),
        "[\\\"\u{0}-\u{1f}\u{7f}\u{2028}\u{e9}\u{1f600}\u{ff61}a-zA-Z/]{0,12}",
    ]
}

/// JSON numbers: integers of every range, floats (finite), and the literals whose ECMAScript
/// form is special.
pub fn number() -> impl Strategy<Value = Value> {
    prop_oneof![
        (0u64..1000).prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        (-1e25f64..1e25).prop_map(Value::from),
        (-1e-5f64..1e-5).prop_map(Value::from),
        Just(Value::from(12.5)),
        Just(Value::from(-0.0)),
        Just(Value::from(1e21)),
    ]
}

/// Any JSON value, up to three levels deep.
pub fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        number(),
        text().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map(text(), inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

prop_compose! {
    /// A policy decision as recorded.
    pub fn decision()(
        allow in any::<bool>(),
        reasons in proptest::collection::vec(text(), 0..3),
        policy_id in proptest::option::of(text()),
        decision_id in proptest::option::of(text()),
    ) -> DecisionRecord {
        DecisionRecord { allow, reasons, policy_id, decision_id }
    }
}

prop_compose! {
    /// An audit event with every field varied, its time anywhere in years 1-9999 with any
    /// offset (some of which RFC 3339 cannot express: sealing must fail cleanly on those).
    pub fn audit_event()(
        unix_secs in -62_000_000_000i64..253_000_000_000,
        nanos in prop_oneof![Just(0u32), 0u32..1_000_000_000],
        offset_secs in prop_oneof![Just(0i32), -86_399i32..86_400],
        step in any::<u32>(),
        kind in proptest::sample::select(AuditEventKind::ALL.to_vec()),
        agent in proptest::option::of("[a-z][a-z0-9-]{0,7}:[A-Za-z0-9._@/-]{1,12}"),
        action in text(),
        resource in text(),
        outcome in proptest::option::of(any::<bool>()),
        decision in proptest::option::of(decision()),
        grant_id in proptest::option::of(text()),
        runner_id in proptest::option::of(text()),
        origin in proptest::option::of(text()),
        details in proptest::collection::btree_map(text(), json(), 0..5),
    ) -> AuditEvent {
        let mut event = AuditEvent::new(RequestId::new(), step, kind);
        event.time = OffsetDateTime::from_unix_timestamp(unix_secs)
            .unwrap()
            .replace_nanosecond(nanos)
            .unwrap()
            .to_offset(UtcOffset::from_whole_seconds(offset_secs).unwrap());
        event.agent_id = agent.map(|a| AgentId::new(a).unwrap());
        event.action = action;
        event.resource = resource;
        event.outcome = outcome.map(|ok| if ok { EventOutcome::Success } else { EventOutcome::Failure });
        event.decision = decision;
        event.grant_id = grant_id;
        event.runner_id = runner_id;
        event.origin = origin;
        event.details = details.into_iter().collect();
        event
    }
}
