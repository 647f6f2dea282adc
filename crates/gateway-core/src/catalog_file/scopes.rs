//! Scope patterns: which obligation scopes an action may carry.
//!
//! The policy decides the scopes a grant asks for; the catalog bounds them, so that a policy
//! mistake (or a compromised policy bundle) cannot make the gateway ask a broker for
//! `pg:*:*` on behalf of `db.query`. A pattern is literal text with `{capture}`s of the
//! resource pattern, filled in with this request's values and matched literally, and `*`,
//! which matches any run of characters (possibly empty). There is no other syntax.

use super::resource::{Piece, ResourcePattern, pieces};
use std::collections::BTreeMap;

/// A compiled scope pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScopePattern {
    pieces: Vec<Piece>,
}

impl ScopePattern {
    /// Parses `pattern`; every capture it uses must be one of `resource`'s.
    pub fn new(pattern: &str, resource: Option<&ResourcePattern>) -> Result<Self, ScopeProblem> {
        let pieces = pieces(pattern, true).map_err(ScopeProblem::Malformed)?;
        if pieces.is_empty() {
            return Err(ScopeProblem::Malformed("the pattern is empty".into()));
        }
        for piece in &pieces {
            if let Piece::Capture(name) = piece
                && !resource.is_some_and(|r| r.has_capture(name))
            {
                return Err(ScopeProblem::UndefinedCapture(name.clone()));
            }
        }
        Ok(Self { pieces })
    }

    /// Whether `scope` matches, with the captures filled in from `captures`.
    pub fn matches(&self, scope: &str, captures: &BTreeMap<String, String>) -> bool {
        // Literal runs between stars; captures are literal text.
        let mut runs: Vec<String> = vec![String::new()];
        for piece in &self.pieces {
            match piece {
                Piece::Literal(l) => push(&mut runs, l),
                Piece::Capture(name) => match captures.get(name) {
                    Some(v) => push(&mut runs, v),
                    None => return false,
                },
                Piece::Star => runs.push(String::new()),
            }
        }
        glob(&runs, scope)
    }
}

fn push(runs: &mut [String], s: &str) {
    if let Some(last) = runs.last_mut() {
        last.push_str(s);
    }
}

/// Whether `s` is `runs[0] * runs[1] * … * runs[n]` (a `*` between each two runs). Greedy
/// leftmost matching of the middle runs is exact for patterns whose only wildcard is `*`.
fn glob(runs: &[String], s: &str) -> bool {
    let (Some(first), Some(last)) = (runs.first(), runs.last()) else {
        return false;
    };
    if runs.len() == 1 {
        return s == first;
    }
    if s.len() < first.len() + last.len()
        || !s.starts_with(first.as_str())
        || !s.ends_with(last.as_str())
    {
        return false;
    }
    let mut rest = &s[first.len()..s.len() - last.len()];
    for run in &runs[1..runs.len() - 1] {
        match rest.find(run.as_str()) {
            Some(i) => rest = &rest[i + run.len()..],
            None => return false,
        }
    }
    true
}

/// Why a scope pattern was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScopeProblem {
    /// Unbalanced braces, a bad capture name, or empty.
    Malformed(String),
    /// A capture the resource pattern does not have.
    UndefinedCapture(String),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog_file::resource::Constraint;

    fn db() -> ResourcePattern {
        let c = BTreeMap::from([("database".into(), Constraint::Class("identifier".into()))]);
        ResourcePattern::new("db:{database}", &c).unwrap()
    }

    #[test]
    fn captures_are_filled_in_and_stars_match_any_run() {
        let r = db();
        let caps = r.captures("db:orders").unwrap();
        let p = ScopePattern::new("pg:{database}:*", Some(&r)).unwrap();
        assert!(p.matches("pg:orders:select", &caps));
        assert!(p.matches("pg:orders:", &caps));
        assert!(!p.matches("pg:billing:select", &caps));
        assert!(!p.matches("pg:orders", &caps));
        let exact = ScopePattern::new("db:{database}:select", Some(&r)).unwrap();
        assert!(exact.matches("db:orders:select", &caps));
        assert!(!exact.matches("db:orders:select2", &caps));
        let mid = ScopePattern::new("a*b*c", None).unwrap();
        assert!(mid.matches("abc", &caps) && mid.matches("axxbyyc", &caps));
        assert!(!mid.matches("acb", &caps) && !mid.matches("ab", &caps));
        // overlapping prefix and suffix cannot share characters
        assert!(
            !ScopePattern::new("ab*ba", None)
                .unwrap()
                .matches("aba", &caps)
        );
    }

    #[test]
    fn a_star_in_a_captured_value_is_literal() {
        let c = BTreeMap::from([("v".into(), Constraint::Regex(".+".into()))]);
        let r = ResourcePattern::new("x:{v}", &c).unwrap();
        let caps = r.captures("x:*").unwrap();
        let p = ScopePattern::new("s:{v}", Some(&r)).unwrap();
        assert!(p.matches("s:*", &caps));
        assert!(!p.matches("s:anything", &caps));
    }

    #[test]
    fn undefined_captures_and_malformed_patterns_are_refused() {
        assert_eq!(
            ScopePattern::new("pg:{db}:*", Some(&db())),
            Err(ScopeProblem::UndefinedCapture("db".into()))
        );
        assert_eq!(
            ScopePattern::new("pg:{database}", None),
            Err(ScopeProblem::UndefinedCapture("database".into()))
        );
        for bad in ["", "pg:{database", "pg:}", "pg:{Bad}"] {
            assert!(
                matches!(
                    ScopePattern::new(bad, Some(&db())),
                    Err(ScopeProblem::Malformed(_))
                ),
                "{bad}"
            );
        }
    }
}
