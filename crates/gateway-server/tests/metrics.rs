//! `GET /metrics` as scrapers read it: the format each asks for, the Prometheus project's own
//! parsers (`tools/promparse/parse.py`, run by `scripts/test`), and a fixed set of series
//! whatever callers send.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Harness, Options, start};
use gateway_core::RequestId;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::io::Write;
use std::process::{Command, Stdio};

/// Prometheus 3's scrape `Accept` header.
const PROMETHEUS_ACCEPT: &str = "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;\
    q=0.6,application/openmetrics-text;version=0.0.1;q=0.5,text/plain;version=1.0.0;\
    escaping=allow-utf-8;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2";

fn action(name: &str) -> Value {
    json!({
        "id": RequestId::new(),
        "action": name,
        "resource": "ops:staging/web",
        "intent": "metrics test",
    })
}

/// One allowed and one denied action.
async fn traffic(h: &Harness) {
    assert_eq!(
        h.post("/v1/actions", Some(&h.agent_a), &action("ops.echo"))
            .await
            .0,
        200
    );
    assert_eq!(
        h.post("/v1/actions", Some(&h.agent_a), &action("ops.frozen"))
            .await
            .0,
        403
    );
}

/// The series of an exposition (sample lines without their values or comments), with bucket
/// bounds as numbers: the two formats write `5e-05` and `0.00005` for the same bound.
fn series(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let name = l.rsplit_once(' ').unwrap().0;
            match name.split_once("{le=\"") {
                Some((family, bound)) => {
                    let bound = bound.trim_end_matches("\"}");
                    let bound: f64 = bound.parse().unwrap();
                    format!("{family}{{le={bound:?}}}")
                }
                None => name.to_owned(),
            }
        })
        .collect()
}

#[tokio::test]
async fn the_format_follows_the_scrapers_accept_header() {
    let h = start(Options::default()).await;
    traffic(&h).await;

    let (status, content_type, text) = h.scrape(None).await;
    assert_eq!(status, 200);
    assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
    assert!(
        text.contains("# TYPE gateway_actions_total counter\n"),
        "{text}"
    );
    assert!(!text.contains("# EOF"), "{text}");

    let (status, content_type, om) = h.scrape(Some(PROMETHEUS_ACCEPT)).await;
    assert_eq!(status, 200);
    assert_eq!(
        content_type,
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    assert!(om.ends_with("# EOF\n"), "{om}");
    assert!(om.contains("# TYPE gateway_actions counter\n"), "{om}");
    assert!(
        om.contains("# UNIT gateway_audit_append_seconds seconds\n"),
        "{om}"
    );
    for line in [
        "gateway_actions_total{result=\"ran\"} 1",
        "gateway_actions_total{result=\"denied\"} 1",
        "gateway_decisions_total{decision=\"deny\"} 1",
    ] {
        assert!(text.lines().any(|l| l == line), "text: {line:?}\n{text}");
        assert!(om.lines().any(|l| l == line), "openmetrics: {line:?}\n{om}");
    }
    // The same series in both formats.
    assert_eq!(series(&text), series(&om));
}

/// Runs the official parser on `body`; `None` (a skip) outside `scripts/test`.
fn parse(format: &str, body: &str) -> Option<Value> {
    let Some(command) = std::env::var("GATEWAY_TEST_PROM_PARSER")
        .ok()
        .filter(|v| !v.is_empty())
    else {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "GATEWAY_TEST_PROM_PARSER is not set (CI=true: the official parsers are required; \
             run scripts/test)"
        );
        eprintln!("SKIPPED: GATEWAY_TEST_PROM_PARSER is not set (run scripts/test)");
        return None;
    };
    let mut words = command.split_whitespace();
    let mut child = Command::new(words.next().unwrap())
        .args(words)
        .arg(format)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the {format} parser refused the exposition: {}\n{body}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(serde_json::from_slice(&out.stdout).unwrap())
}

/// The families a parser read: name → (type, unit, samples as "name{labels}" → value).
fn families(parsed: &Value) -> Vec<(String, String, String, BTreeSet<String>)> {
    parsed
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            let samples = f["samples"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| format!("{}{} {}", s["name"], s["labels"], s["value"]))
                .collect();
            (
                f["name"].as_str().unwrap().to_owned(),
                f["type"].as_str().unwrap().to_owned(),
                f["unit"].as_str().unwrap_or_default().to_owned(),
                samples,
            )
        })
        .collect()
}

#[tokio::test]
async fn the_official_parsers_read_both_formats_alike() {
    let h = start(Options::default()).await;
    traffic(&h).await;
    let (_, _, text) = h.scrape(None).await;
    let (_, _, om) = h.scrape(Some("application/openmetrics-text")).await;
    let (Some(from_text), Some(from_om)) = (parse("text", &text), parse("openmetrics", &om)) else {
        return;
    };
    let from_text = families(&from_text);
    let from_om = families(&from_om);
    let types = |fs: &[(String, String, String, BTreeSet<String>)]| {
        fs.iter()
            .map(|(name, kind, _, _)| (name.clone(), kind.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(types(&from_text), types(&from_om));
    let expected = [
        ("gateway_actions", "counter"),
        ("gateway_decisions", "counter"),
        ("gateway_policy_errors", "counter"),
        ("gateway_grants", "counter"),
        ("gateway_revocations", "counter"),
        ("gateway_runs", "counter"),
        ("gateway_approvals", "counter"),
        ("gateway_audit_append_failures", "counter"),
        ("gateway_audit_append_seconds", "histogram"),
    ];
    assert_eq!(
        types(&from_om),
        expected
            .iter()
            .map(|(n, t)| (n.to_string(), t.to_string()))
            .collect::<Vec<_>>()
    );
    // Counters read the same from both; the histogram's unit is declared in OpenMetrics.
    for ((name, kind, _, text_samples), (_, _, unit, om_samples)) in from_text.iter().zip(&from_om)
    {
        if kind == "counter" {
            assert_eq!(text_samples, om_samples, "{name}");
        } else {
            assert_eq!(unit, "seconds", "{name}");
        }
    }
    let actions = &from_om[0].3;
    assert!(
        actions.contains(r#""gateway_actions_total"{"result":"ran"} 1.0"#),
        "{actions:?}"
    );
}

/// No label takes its value from a request: a flood of action names nobody defined (the part
/// of a request an unauthenticated caller controls most) adds no series and no text.
#[tokio::test]
async fn unknown_action_names_create_no_series() {
    let h = start(Options::default()).await;
    traffic(&h).await;
    let (_, _, before) = h.scrape(None).await;
    let refused_before: u64 = h.metrics.actions().1.iter().map(|(_, n)| n).sum();
    let names: Vec<String> = (0..100)
        .map(|i| format!("made-up.{i}-{}\"}} evil{{x=\"1", RequestId::new()))
        .collect();
    for name in &names {
        let (status, body) = h.post("/v1/actions", Some(&h.agent_a), &action(name)).await;
        assert!((400..500).contains(&status), "{status} {body}");
    }
    let (_, _, after) = h.scrape(None).await;
    assert_eq!(
        series(&before),
        series(&after),
        "new series appeared:\n{after}"
    );
    assert_eq!(before.lines().count(), after.lines().count());
    assert!(!after.contains("made-up"), "{after}");
    let refused_after: u64 = h.metrics.actions().1.iter().map(|(_, n)| n).sum();
    assert_eq!(
        refused_after - refused_before,
        100,
        "each refusal is still counted"
    );
}
