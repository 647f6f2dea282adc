//! Runs Rego unit tests (`test_*` rules in `*_test.rego` files) with the embedded engine, the
//! way `opa test <dir>` does, so `cargo test` checks the policies with no OPA binary.
//!
//! Every rule whose name starts with `test_` in a `*_test.rego` file is evaluated with no
//! input; it passes when it evaluates to `true`. Undefined (a failed expression), any other
//! value, or an evaluation error fails the test.

use crate::error::SetupError;
use crate::source::{LoadedPolicies, Source};
use std::collections::BTreeSet;
use std::path::Path;

/// The outcome of one Rego test rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegoTestResult {
    /// `data.<package>.<rule>`.
    pub name: String,
    /// `None` when the test passed, else why it failed.
    pub failure: Option<String>,
}

/// All Rego test outcomes of a directory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegoTestReport {
    /// One entry per test rule, in file order.
    pub results: Vec<RegoTestResult>,
}

impl RegoTestReport {
    /// The tests that failed.
    pub fn failures(&self) -> impl Iterator<Item = &RegoTestResult> {
        self.results.iter().filter(|r| r.failure.is_some())
    }

    /// How many tests passed.
    pub fn passed(&self) -> usize {
        self.results.iter().filter(|r| r.failure.is_none()).count()
    }
}

/// Loads every policy, test and data file under `dir` and runs the test rules.
pub fn run_rego_tests(dir: &Path) -> Result<RegoTestReport, SetupError> {
    let loaded = LoadedPolicies::read(&[Source::Dir(dir.to_path_buf())], true)?;
    let engine = loaded.engine()?;
    let mut report = RegoTestReport::default();
    for (file, text) in &loaded.modules {
        if !file.ends_with("_test.rego") {
            continue;
        }
        let Some(package) = text
            .lines()
            .find_map(|l| l.trim().strip_prefix("package "))
            .map(str::trim)
        else {
            continue;
        };
        // Test rules start at column 0 (`test_x if {`); one rule may have several bodies.
        let mut seen = BTreeSet::new();
        for line in text.lines() {
            let Some(rest) = line.strip_prefix("test_") else {
                continue;
            };
            let name: String = std::iter::once('t')
                .chain("est_".chars())
                .chain(
                    rest.chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_'),
                )
                .collect();
            if !seen.insert(name.clone()) {
                continue;
            }
            let rule = format!("data.{package}.{name}");
            let mut engine = engine.clone();
            crate::go_compat::reset_divergence();
            let outcome = engine.eval_rule(rule.clone());
            // A construct the embedded engine cannot evaluate as OPA would fails the test.
            let outcome = match crate::go_compat::take_divergence() {
                Some(divergence) => Err(anyhow::anyhow!(divergence)),
                None => outcome,
            };
            let failure = match outcome {
                Ok(regorus::Value::Bool(true)) => None,
                Ok(regorus::Value::Undefined) => Some("undefined (an expression failed)".into()),
                Ok(other) => Some(format!("evaluated to {other} instead of true")),
                Err(e) => Some(format!("error: {e:#}")),
            };
            report.results.push(RegoTestResult {
                name: rule,
                failure,
            });
        }
    }
    Ok(report)
}
