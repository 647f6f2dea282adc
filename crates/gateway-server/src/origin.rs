//! `Origin` validation for the MCP endpoint, as the MCP transport specification requires of a
//! streamable-HTTP server (against DNS rebinding: a web page the user visits must not reach a
//! gateway on their machine or network).
//!
//! A request without `Origin` (what non-browser clients, the official SDKs included, send)
//! passes. A request with one passes only when it names an allowed origin: same scheme, host
//! and port (RFC 6454; a missing port is the scheme's default), or an entry's `:*` port
//! matching any port. `Origin: null` passes only if `"null"` is listed. Everything else is 403,
//! before the credential is looked at.

/// One allowed origin, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Allowed {
    /// `null`.
    Null,
    /// `scheme://host:port`, port `None` for `:*`.
    Origin {
        scheme: String,
        host: String,
        port: Option<u16>,
    },
}

/// The allow-list; entries that do not parse are dropped (and logged once, when built).
#[derive(Debug, Clone, Default)]
pub(crate) struct AllowedOrigins(Vec<Allowed>);

impl AllowedOrigins {
    pub(crate) fn new(entries: &[String]) -> Self {
        let parsed = entries
            .iter()
            .filter_map(|entry| {
                let allowed = parse_allowed(entry);
                if allowed.is_none() {
                    tracing::warn!(entry, "ignoring an allowed MCP origin that does not parse");
                }
                allowed
            })
            .collect();
        Self(parsed)
    }

    /// Whether a request carrying this `Origin` value may proceed.
    pub(crate) fn allows(&self, origin: &[u8]) -> bool {
        let Ok(origin) = std::str::from_utf8(origin) else {
            return false;
        };
        let origin = origin.trim();
        if origin == "null" {
            return self.0.contains(&Allowed::Null);
        }
        let Some((scheme, host, port)) = parse_origin(origin) else {
            return false;
        };
        self.0.iter().any(|a| match a {
            Allowed::Null => false,
            Allowed::Origin {
                scheme: s,
                host: h,
                port: p,
            } => *s == scheme && *h == host && p.is_none_or(|p| p == port),
        })
    }
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" => Some(80),
        "https" => Some(443),
        _ => None,
    }
}

/// `scheme://host[:port]`, nothing after: scheme and host lower-cased, the port explicit.
fn parse_origin(origin: &str) -> Option<(String, String, u16)> {
    let (scheme, rest) = origin.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    let (host, port) = split_port(rest)?;
    let port = match port {
        Some(p) => p.parse().ok()?,
        None => default_port(&scheme)?,
    };
    Some((scheme, host, port))
}

fn parse_allowed(entry: &str) -> Option<Allowed> {
    let entry = entry.trim();
    if entry == "null" {
        return Some(Allowed::Null);
    }
    let (scheme, rest) = entry.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    let (host, port) = split_port(rest)?;
    let port = match port {
        Some("*") => None,
        Some(p) => Some(p.parse().ok()?),
        None => Some(default_port(&scheme)?),
    };
    Some(Allowed::Origin { scheme, host, port })
}

/// `host[:port]` with `[v6]` literals; no path, query, user info or empty host.
fn split_port(authority: &str) -> Option<(String, Option<&str>)> {
    if authority.is_empty() || authority.contains(['/', '?', '#', '@', ' ']) {
        return None;
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6.split_once(']')?;
        match after {
            "" => (host, None),
            _ => (host, Some(after.strip_prefix(':')?)),
        }
    } else {
        match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return None;
    }
    Some((host.to_ascii_lowercase(), port))
}

#[cfg(test)]
mod tests {
    use super::AllowedOrigins;

    fn list(entries: &[&str]) -> AllowedOrigins {
        AllowedOrigins::new(&entries.iter().map(|e| (*e).to_owned()).collect::<Vec<_>>())
    }

    #[test]
    fn an_empty_list_allows_no_origin() {
        let none = list(&[]);
        for origin in ["http://localhost", "https://evil.example", "null", ""] {
            assert!(!none.allows(origin.as_bytes()), "{origin}");
        }
    }

    #[test]
    fn scheme_host_and_port_must_match() {
        let allowed = list(&["https://app.example.com", "http://localhost:*", "null"]);
        for ok in [
            "https://app.example.com",
            "https://APP.example.com:443",
            "http://localhost:6274",
            "http://localhost",
            "null",
        ] {
            assert!(allowed.allows(ok.as_bytes()), "{ok}");
        }
        for refused in [
            "http://app.example.com",
            "https://app.example.com:8443",
            "https://app.example.com.evil.example",
            "https://evil.example",
            "http://localhost.evil.example",
            "https://app.example.com/path",
            "https://user@app.example.com",
            "app.example.com",
            "https://",
            "\u{ff}",
        ] {
            assert!(!allowed.allows(refused.as_bytes()), "{refused}");
        }
        assert!(!allowed.allows(b"\xff\xfe"));
    }

    #[test]
    fn ipv6_literals_and_bad_entries() {
        let allowed = list(&["http://[::1]:*", "not an origin", "ftp://x"]);
        assert!(allowed.allows(b"http://[::1]:3000"));
        assert!(!allowed.allows(b"http://[::2]:3000"));
        // `ftp` has no default port, so `ftp://x` names no origin: dropped.
        assert!(!allowed.allows(b"ftp://x:21"));
    }
}
