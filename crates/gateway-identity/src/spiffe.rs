//! SPIFFE trust-domain allowlist on top of the core's [`SpiffeId`] validation.

use gateway_core::SpiffeId;
use std::collections::BTreeSet;

/// Why a SPIFFE ID or trust domain was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SpiffeError {
    /// Not a valid SPIFFE ID (per the SPIFFE ID specification).
    #[error("{0}")]
    Invalid(String),
    /// A valid SPIFFE ID of a trust domain that is not allowed.
    #[error("trust domain {0:?} is not allowed")]
    TrustDomainNotAllowed(String),
    /// The ID names a trust domain, not a workload (it has no path).
    #[error("a trust domain's own ID is not a workload identity")]
    NoWorkloadPath,
}

/// The trust domains whose workloads may authenticate. Empty allows nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustDomainAllowlist {
    domains: BTreeSet<String>,
}

impl TrustDomainAllowlist {
    /// An allowlist of these trust domains (e.g. `prod.example.org`). Each must be a valid
    /// trust domain name: lowercase letters, digits, `.`, `-`, `_`; no scheme, port or path.
    pub fn new<I, S>(domains: I) -> Result<Self, SpiffeError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut set = BTreeSet::new();
        for domain in domains {
            let domain = domain.as_ref();
            let id = SpiffeId::new(format!("spiffe://{domain}"))
                .map_err(|e| SpiffeError::Invalid(e.to_string()))?;
            if !id.path().is_empty() {
                return Err(SpiffeError::Invalid(format!(
                    "trust domain {domain:?} must not hold a path"
                )));
            }
            set.insert(domain.to_owned());
        }
        Ok(Self { domains: set })
    }

    /// Whether no trust domain is allowed.
    pub fn is_empty(&self) -> bool {
        self.domains.is_empty()
    }

    /// Whether `domain` is allowed.
    pub fn allows(&self, domain: &str) -> bool {
        self.domains.contains(domain)
    }

    /// Parses a workload SPIFFE ID and checks its trust domain against the allowlist.
    pub fn validate(&self, value: &str) -> Result<SpiffeId, SpiffeError> {
        let id = SpiffeId::new(value).map_err(|e| SpiffeError::Invalid(e.to_string()))?;
        if !self.allows(id.trust_domain()) {
            let shown: String = id.trust_domain().chars().take(64).collect();
            return Err(SpiffeError::TrustDomainNotAllowed(shown));
        }
        if id.path().is_empty() {
            return Err(SpiffeError::NoWorkloadPath);
        }
        Ok(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowlist() {
        let allow = TrustDomainAllowlist::new(["prod.example.org"]).unwrap();
        assert_eq!(
            allow
                .validate("spiffe://prod.example.org/ns/a/sa/b")
                .unwrap()
                .path(),
            "/ns/a/sa/b"
        );
        assert!(matches!(
            allow.validate("spiffe://dev.example.org/ns/a"),
            Err(SpiffeError::TrustDomainNotAllowed(_))
        ));
        assert!(matches!(
            allow.validate("spiffe://prod.example.org"),
            Err(SpiffeError::NoWorkloadPath)
        ));
        for bad in [
            "spiffe://PROD.example.org/a",
            "spiffe://prod.example.org:8443/a",
            "spiffe://u@prod.example.org/a",
            "spiffe://prod.example.org/a?x",
            "spiffe://prod.example.org/a#x",
            "spiffe://prod.example.org/a/../b",
            "spiffe://prod.example.org/./b",
            "https://prod.example.org/a",
        ] {
            assert!(
                matches!(allow.validate(bad), Err(SpiffeError::Invalid(_))),
                "{bad}"
            );
        }
        assert!(TrustDomainAllowlist::new(["Example.org"]).is_err());
        assert!(TrustDomainAllowlist::new(["example.org/a"]).is_err());
        assert!(TrustDomainAllowlist::new(["example.org:443"]).is_err());
        assert!(
            TrustDomainAllowlist::new(Vec::<String>::new())
                .unwrap()
                .validate("spiffe://a/b")
                .is_err()
        );
    }
}
