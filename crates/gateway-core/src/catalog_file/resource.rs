//! Resource patterns: `k8s:{namespace}/deployments/{name}`, each capture with a constraint.
//!
//! A pattern replaces a hand-written parser per action: the request's resource must match it
//! whole, and the captures are what the job template and the scope patterns may use. Every
//! capture must say what it accepts (a named class or a regex), so a capture cannot silently
//! take `../`, `;` or a `/` that shifts the rest of the path. Patterns compile to one anchored
//! expression of the linear-time `regex` crate, so no resource string can make matching slow.

use super::error::{CatalogFileError, Problem};
use regex::Regex;
use std::collections::BTreeMap;

/// The named capture classes.
pub const CLASSES: &[(&str, &str)] = &[
    // RFC 1123 label, as Kubernetes names namespaces and most objects.
    ("dns-label", "[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?"),
    // A database, role or table name: letters, digits, `_` and `-`, at most 63.
    ("identifier", "[A-Za-z0-9_-]{1,63}"),
    // Anything but `/`, at most 253 characters.
    ("segment", "[^/]{1,253}"),
];

/// Largest compiled expression; a constraint that needs more is refused.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// What one capture accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Constraint {
    /// One of [`CLASSES`], by name.
    Class(String),
    /// A regex (the `regex` crate's syntax), matched against the whole capture.
    Regex(String),
}

/// A compiled resource pattern.
#[derive(Debug, Clone)]
pub struct ResourcePattern {
    pattern: String,
    names: Vec<String>,
    regex: Regex,
}

/// One piece of a pattern with `{capture}`s.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Piece {
    Literal(String),
    Capture(String),
    /// `*` (scope patterns only).
    Star,
}

/// Splits `pattern` into literals and `{name}` captures (and `*` when `stars`).
pub(crate) fn pieces(pattern: &str, stars: bool) -> Result<Vec<Piece>, String> {
    let mut out = Vec::new();
    let mut literal = String::new();
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        match c {
            '{' => {
                let mut name = String::new();
                loop {
                    match chars.next() {
                        Some('}') => break,
                        Some(c) => name.push(c),
                        None => return Err("a `{` is not closed".into()),
                    }
                }
                if !valid_name(&name) {
                    return Err(format!(
                        "capture name {name:?} must be a lower-case letter or `_`, then letters, digits or `_`"
                    ));
                }
                if !literal.is_empty() {
                    out.push(Piece::Literal(std::mem::take(&mut literal)));
                }
                out.push(Piece::Capture(name));
            }
            '}' => return Err("a `}` has no `{`".into()),
            '*' if stars => {
                if !literal.is_empty() {
                    out.push(Piece::Literal(std::mem::take(&mut literal)));
                }
                out.push(Piece::Star);
            }
            c => literal.push(c),
        }
    }
    if !literal.is_empty() {
        out.push(Piece::Literal(literal));
    }
    Ok(out)
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && name.len() <= 64
}

impl ResourcePattern {
    /// Compiles `pattern` with a constraint for each of its captures (and none other).
    pub fn new(
        pattern: &str,
        constraints: &BTreeMap<String, Constraint>,
    ) -> Result<Self, CatalogFileError> {
        let bad = |m: String| CatalogFileError::new(Problem::BadResourcePattern, m);
        let pieces = pieces(pattern, false).map_err(|m| bad(format!("{pattern:?}: {m}")))?;
        if pieces.is_empty() {
            return Err(bad("the pattern is empty".into()));
        }
        let mut expr = String::from("^");
        let mut names: Vec<String> = Vec::new();
        let mut last_was_capture = false;
        for piece in &pieces {
            match piece {
                Piece::Literal(l) => {
                    expr.push_str(&regex::escape(l));
                    last_was_capture = false;
                }
                Piece::Capture(name) => {
                    if last_was_capture {
                        return Err(bad(format!(
                            "{pattern:?}: captures must be separated by literal text"
                        )));
                    }
                    if names.contains(name) {
                        return Err(bad(format!(
                            "{pattern:?}: capture {{{name}}} appears twice"
                        )));
                    }
                    let Some(constraint) = constraints.get(name) else {
                        return Err(bad(format!(
                            "capture {{{name}}} has no constraint: add it to `captures` \
                             (a class: {}; or {{ regex = \"...\" }})",
                            class_names()
                        ))
                        .field(format!("captures.{name}")));
                    };
                    let inner = match constraint {
                        Constraint::Class(class) => CLASSES
                            .iter()
                            .find(|(n, _)| n == class)
                            .map(|(_, e)| (*e).to_owned())
                            .ok_or_else(|| {
                                bad(format!(
                                    "unknown capture class {class:?} (one of {})",
                                    class_names()
                                ))
                                .field(format!("captures.{name}"))
                            })?,
                        Constraint::Regex(r) => {
                            // Compiled alone first, so its error names it.
                            regex::RegexBuilder::new(r)
                                .size_limit(REGEX_SIZE_LIMIT)
                                .build()
                                .map_err(|e| {
                                    bad(format!("the regex of capture {{{name}}} does not compile"))
                                        .field(format!("captures.{name}"))
                                        .source(e)
                                })?;
                            r.clone()
                        }
                    };
                    expr.push_str(&format!("(?P<c{}>(?:{inner}))", names.len()));
                    names.push(name.clone());
                    last_was_capture = true;
                }
                Piece::Star => {}
            }
        }
        expr.push('$');
        if let Some(extra) = constraints.keys().find(|k| !names.contains(k)) {
            return Err(bad(format!(
                "`captures` constrains {{{extra}}}, which the pattern does not have"
            ))
            .field(format!("captures.{extra}")));
        }
        let regex = regex::RegexBuilder::new(&expr)
            .size_limit(REGEX_SIZE_LIMIT)
            .build()
            .map_err(|e| bad(format!("{pattern:?} does not compile")).source(e))?;
        Ok(Self {
            pattern: pattern.to_owned(),
            names,
            regex,
        })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.pattern
    }

    /// Whether the pattern has the capture `name`.
    pub fn has_capture(&self, name: &str) -> bool {
        self.names.iter().any(|n| n == name)
    }

    /// The captures of `resource` by name, if it matches the pattern whole.
    pub fn captures(&self, resource: &str) -> Option<BTreeMap<String, String>> {
        let found = self.regex.captures(resource)?;
        let mut out = BTreeMap::new();
        for (i, name) in self.names.iter().enumerate() {
            let value = found.name(&format!("c{i}"))?.as_str().to_owned();
            out.insert(name.clone(), value);
        }
        Some(out)
    }
}

fn class_names() -> String {
    CLASSES
        .iter()
        .map(|(n, _)| *n)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(c: &str) -> Constraint {
        Constraint::Class(c.into())
    }

    fn deployment() -> ResourcePattern {
        let c = BTreeMap::from([
            ("namespace".into(), class("dns-label")),
            ("name".into(), class("dns-label")),
        ]);
        ResourcePattern::new("k8s:{namespace}/deployments/{name}", &c).unwrap()
    }

    #[test]
    fn a_pattern_matches_whole_resources_and_captures() {
        let p = deployment();
        let got = p.captures("k8s:staging/deployments/web").unwrap();
        assert_eq!(got["namespace"], "staging");
        assert_eq!(got["name"], "web");
        for bad in [
            "k8s:staging/pods/web",
            "k8s:/deployments/web",
            "staging/deployments/web",
            "k8s:a/deployments/b/c",
            "k8s:A/deployments/b",
            "k8s:a;rm/deployments/b",
            "k8s:-a/deployments/b",
            "xk8s:a/deployments/b",
        ] {
            assert!(p.captures(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn regex_constraints_are_anchored_to_the_capture() {
        let c = BTreeMap::from([("db".into(), Constraint::Regex("[a-z]+|x".into()))]);
        let p = ResourcePattern::new("db:{db}", &c).unwrap();
        assert!(p.captures("db:orders").is_some());
        // The alternation stays inside the capture: `x` alone, not "db:" + anything + "x".
        assert!(p.captures("db:1x").is_none());
    }

    #[test]
    fn malformed_patterns_are_refused() {
        let dns = BTreeMap::from([
            ("a".into(), class("dns-label")),
            ("b".into(), class("dns-label")),
        ]);
        for (pattern, constraints) in [
            ("", dns.clone()),
            ("x:{a", dns.clone()),
            ("x:a}", dns.clone()),
            ("x:{A}", dns.clone()),
            ("x:{a}{b}", dns.clone()),
            ("x:{a}/{a}", dns.clone()),
            ("x:{a}", dns.clone()),         // b constrained but absent
            ("x:{c}/{a}/{b}", dns.clone()), // c unconstrained
            ("x:{a}", BTreeMap::from([("a".into(), class("nope"))])),
            (
                "x:{a}",
                BTreeMap::from([("a".into(), Constraint::Regex("(".into()))]),
            ),
            (
                "x:{a}",
                BTreeMap::from([("a".into(), Constraint::Regex("(?=a)".into()))]),
            ),
        ] {
            let err = ResourcePattern::new(pattern, &constraints).unwrap_err();
            assert_eq!(
                err.problem(),
                Problem::BadResourcePattern,
                "{pattern}: {err}"
            );
        }
    }
}
