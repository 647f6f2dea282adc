//! Identifiers: agents, requests (correlation ids) and SPIFFE IDs.

use serde::{Deserialize, Deserializer, Serialize};
use std::fmt;
use std::str::FromStr;

/// Why an identifier was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} {value:?}: {reason}")]
pub struct IdError {
    what: &'static str,
    value: String,
    reason: &'static str,
}

impl IdError {
    fn new(what: &'static str, value: &str, reason: &'static str) -> Self {
        // Echo at most a short prefix of the rejected value: it may be attacker-sized.
        let value: String = value.chars().take(64).collect();
        Self {
            what,
            value,
            reason,
        }
    }
}

/// The longest agent id accepted, in bytes.
pub const MAX_AGENT_ID_LEN: usize = 255;

/// The distinct, non-human identity of one agent.
///
/// Either `kind:name` (e.g. `agent:deployer`, `team-a:db-reader`) where `kind` is lowercase
/// ASCII letters, digits and `-`, and `name` is ASCII letters, digits and `. _ - @ /`; or a
/// SPIFFE ID (`spiffe://trust-domain/path`, see [`SpiffeId`]).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct AgentId(String);

impl AgentId {
    /// Validates and wraps an agent id.
    pub fn new(value: impl AsRef<str>) -> Result<Self, IdError> {
        let value = value.as_ref();
        if value.len() > MAX_AGENT_ID_LEN {
            return Err(IdError::new("agent id", value, "longer than 255 bytes"));
        }
        if value.starts_with("spiffe://") {
            SpiffeId::new(value)?;
            return Ok(Self(value.to_owned()));
        }
        let Some((kind, name)) = value.split_once(':') else {
            return Err(IdError::new(
                "agent id",
                value,
                "expected `kind:name` or a spiffe:// URI",
            ));
        };
        let kind_ok = kind.len() <= 32
            && kind.starts_with(|c: char| c.is_ascii_lowercase())
            && kind
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !kind_ok {
            return Err(IdError::new(
                "agent id",
                value,
                "kind must be 1-32 lowercase letters, digits or '-', starting with a letter",
            ));
        }
        let name_ok = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@' | '/'));
        if !name_ok {
            return Err(IdError::new(
                "agent id",
                value,
                "name must be non-empty ASCII letters, digits or . _ - @ /",
            ));
        }
        Ok(Self(value.to_owned()))
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AgentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for AgentId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl<'de> Deserialize<'de> for AgentId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::new(s).map_err(serde::de::Error::custom)
    }
}

/// A SPIFFE ID, validated per the SPIFFE ID specification: `spiffe://` scheme, a lowercase trust
/// domain of `a-z 0-9 . - _`, no port, userinfo, query or fragment, and a path whose segments are
/// non-empty, not `.` or `..`, and made of `A-Z a-z 0-9 . - _`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct SpiffeId(String);

impl SpiffeId {
    /// Parses and validates a SPIFFE ID.
    pub fn new(value: impl AsRef<str>) -> Result<Self, IdError> {
        let value = value.as_ref();
        let err = |reason| Err(IdError::new("SPIFFE ID", value, reason));
        if value.len() > 2048 {
            return err("longer than 2048 bytes");
        }
        let Some(rest) = value.strip_prefix("spiffe://") else {
            return err("scheme must be spiffe://");
        };
        let (domain, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if domain.is_empty() {
            return err("trust domain is empty");
        }
        if domain.len() > 255 {
            return err("trust domain longer than 255 bytes");
        }
        if !domain
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '-' | '_'))
        {
            return err(
                "trust domain may hold only lowercase letters, digits, '.', '-', '_' (no port, userinfo, query or fragment)",
            );
        }
        if !path.is_empty() {
            for segment in path[1..].split('/') {
                if segment.is_empty() {
                    return err("path has an empty segment or a trailing '/'");
                }
                if segment == "." || segment == ".." {
                    return err("path segments must not be '.' or '..'");
                }
                if !segment
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
                {
                    return err(
                        "path may hold only letters, digits, '.', '-', '_' (no query or fragment)",
                    );
                }
            }
        }
        Ok(Self(value.to_owned()))
    }

    /// The trust domain, e.g. `example.org`.
    pub fn trust_domain(&self) -> &str {
        let rest = &self.0["spiffe://".len()..];
        rest.split('/').next().unwrap_or(rest)
    }

    /// The path, e.g. `/ns/prod/sa/deployer` (empty for a trust domain's own ID).
    pub fn path(&self) -> &str {
        let rest = &self.0["spiffe://".len()..];
        rest.find('/').map_or("", |i| &rest[i..])
    }

    /// The ID as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for SpiffeId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::new(s).map_err(serde::de::Error::custom)
    }
}

/// The id of one action request; it is also the correlation id of every audit record, grant and
/// job that the request causes. A UUIDv7, so ids sort by creation time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RequestId(uuid::Uuid);

impl RequestId {
    /// A new, time-ordered request id.
    pub fn new() -> Self {
        Self(uuid::Uuid::now_v7())
    }

    /// The underlying UUID.
    pub fn as_uuid(&self) -> uuid::Uuid {
        self.0
    }
}

impl Default for RequestId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for RequestId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        uuid::Uuid::parse_str(s)
            .map(Self)
            .map_err(|_| IdError::new("request id", s, "not a UUID"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_ids() {
        for ok in [
            "agent:deployer",
            "team-a:db.reader",
            "sa:ns/name",
            "spiffe://example.org/ns/a",
        ] {
            assert!(AgentId::new(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "deployer",
            ":x",
            "Agent:x",
            "agent:",
            "agent:a b",
            "1a:x",
            "spiffe://Ex.org/a",
        ] {
            assert!(AgentId::new(bad).is_err(), "{bad}");
        }
        assert!(AgentId::new("a:".to_owned() + &"x".repeat(300)).is_err());
        let back: Result<AgentId, _> = serde_json::from_str("\"nope\"");
        assert!(back.is_err());
    }

    #[test]
    fn spiffe_ids() {
        let id = SpiffeId::new("spiffe://example.org/ns/prod/sa/deployer").unwrap();
        assert_eq!(id.trust_domain(), "example.org");
        assert_eq!(id.path(), "/ns/prod/sa/deployer");
        assert_eq!(SpiffeId::new("spiffe://example.org").unwrap().path(), "");
        for bad in [
            "http://example.org/a",
            "spiffe://",
            "spiffe:///a",
            "spiffe://Example.org/a",
            "spiffe://example.org:443/a",
            "spiffe://user@example.org/a",
            "spiffe://example.org/a?q=1",
            "spiffe://example.org/a#f",
            "spiffe://example.org/a/../b",
            "spiffe://example.org/./b",
            "spiffe://example.org/a//b",
            "spiffe://example.org/a/",
            "spiffe://example.org/a%20b",
        ] {
            assert!(SpiffeId::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn request_ids_are_time_ordered_and_parse() {
        let a = RequestId::new();
        let b = RequestId::new();
        assert!(a < b);
        assert_eq!(a.to_string().parse::<RequestId>().unwrap(), a);
        assert!("zzz".parse::<RequestId>().is_err());
    }
}
