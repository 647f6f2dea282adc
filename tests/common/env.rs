//! Settings the tests take from the environment `scripts/test` sets up.

/// Whether this is a CI run (`CI=true`): then a missing service is a failure, not a skip.
pub fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// The value of `var`; missing or empty: a panic under `CI=true`, otherwise a skip notice
/// naming `test`, and `None`.
pub fn required(var: &str, test: &str) -> Option<String> {
    match std::env::var(var).ok().filter(|v| !v.is_empty()) {
        Some(v) => Some(v),
        None if ci() => panic!("{test}: {var} is not set (CI=true: run scripts/test)"),
        None => {
            eprintln!("SKIPPED {test}: {var} is not set (run scripts/test)");
            None
        }
    }
}
