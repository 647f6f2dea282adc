//! The reference policies' Rego unit tests (`policies/*_test.rego`) pass in the embedded engine,
//! and the runner reports failing tests rather than passing everything; on the real OPA engine the
//! same tests have the same outcomes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::policies_dir;
use gateway_opa::run_rego_tests;

#[test]
fn reference_policy_rego_tests_pass() {
    let report = run_rego_tests(&policies_dir()).expect("policies load");
    let failures: Vec<_> = report.failures().collect();
    assert!(failures.is_empty(), "failing Rego tests: {failures:#?}");
    assert!(
        report.passed() >= 20,
        "only {} Rego tests found",
        report.passed()
    );
}

#[test]
fn failing_rego_tests_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("p.rego"),
        "package p\n\nallow if input.x == 1\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("p_test.rego"),
        "package p_test\n\nimport data.p\n\ntest_pass if p.allow with input as {\"x\": 1}\n\ntest_fail if p.allow with input as {\"x\": 2}\n\ntest_value := 3\n",
    )
    .unwrap();
    let report = run_rego_tests(dir.path()).unwrap();
    let names: Vec<_> = report
        .results
        .iter()
        .map(|r| (r.name.as_str(), r.failure.is_none()))
        .collect();
    assert_eq!(
        names,
        vec![
            ("data.p_test.test_pass", true),
            ("data.p_test.test_fail", false),
            ("data.p_test.test_value", false)
        ]
    );
}

/// `opa test policies/` on the real OPA engine: every test passes there too, and both engines
/// find the same tests with the same outcome.
#[test]
fn reference_policy_rego_tests_agree_on_real_opa() {
    let Some(opa) = common::real_opa("reference_policy_rego_tests_agree_on_real_opa") else {
        return;
    };
    let dir = policies_dir();
    let out = opa.run(
        &["test", "--policies", dir.to_str().unwrap()],
        Vec::new(),
        std::time::Duration::from_secs(60),
    );
    let on_opa: Vec<(String, Option<String>)> = out
        .lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            (
                v["name"].as_str().unwrap().to_owned(),
                v["failure"].as_str().map(str::to_owned),
            )
        })
        .collect();
    let failures: Vec<_> = on_opa.iter().filter(|(_, f)| f.is_some()).collect();
    assert!(failures.is_empty(), "failing on OPA: {failures:#?}");
    let embedded = run_rego_tests(&dir).unwrap();
    let on_regorus: Vec<(String, bool)> = embedded
        .results
        .iter()
        .map(|r| (r.name.clone(), r.failure.is_none()))
        .collect();
    let on_opa: Vec<(String, bool)> = on_opa.into_iter().map(|(n, f)| (n, f.is_none())).collect();
    assert_eq!(on_opa, on_regorus);
    assert!(on_opa.len() >= 20, "only {} tests found", on_opa.len());
}
