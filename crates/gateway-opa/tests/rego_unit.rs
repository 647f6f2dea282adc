//! The reference policies' Rego unit tests (`policies/*_test.rego`) pass in the embedded engine,
//! and the runner reports failing tests rather than passing everything.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use gateway_opa::run_rego_tests;
use std::path::PathBuf;

fn policies_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../policies")
}

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
