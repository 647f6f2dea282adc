//! From verified claims to an agent: its id, its accountable owner and policy attributes.

use crate::spiffe::TrustDomainAllowlist;
use gateway_core::AgentId;
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// The longest owner accepted from a claim, in bytes.
const MAX_OWNER_LEN: usize = 256;

/// How a token's claims name the agent. Each rule yields one distinct id per workload.
///
/// A claim name starting with `/` is a JSON pointer into the claims (e.g.
/// `/kubernetes.io/namespace`); any other name is a top-level claim.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AgentIdRule {
    /// `kind:value` from a string claim: `Claim { claim: "sub", kind: "agent" }` maps
    /// `sub: "deployer"` to `agent:deployer`. The value must fit [`AgentId`]'s name rules.
    Claim {
        /// The claim holding the agent's name.
        claim: String,
        /// The id's kind prefix (lowercase letters, digits, `-`).
        kind: String,
    },
    /// The claim holds a SPIFFE ID (a JWT-SVID's `sub`) of an allowed trust domain; the agent
    /// id is that SPIFFE ID.
    Spiffe {
        /// The claim holding the SPIFFE ID, usually `sub`.
        claim: String,
    },
    /// A Kubernetes service-account token: `sub` is
    /// `system:serviceaccount:<namespace>:<name>` and the agent id is `kind:<namespace>/<name>`.
    /// Use one kind per cluster (e.g. `k8s-prod`) so equal names in two clusters stay distinct.
    KubernetesServiceAccount {
        /// The id's kind prefix, naming the cluster.
        kind: String,
    },
}

impl AgentIdRule {
    /// `Claim { claim: "sub", kind }`.
    pub fn subject(kind: impl Into<String>) -> Self {
        Self::Claim {
            claim: "sub".into(),
            kind: kind.into(),
        }
    }

    /// `Spiffe { claim: "sub" }`.
    pub fn spiffe_subject() -> Self {
        Self::Spiffe {
            claim: "sub".into(),
        }
    }
}

/// Looks a claim up by top-level name or JSON pointer.
pub(crate) fn claim<'a>(claims: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    let Some(pointer) = name.strip_prefix('/') else {
        return claims.get(name);
    };
    let (first, rest) = match pointer.find('/') {
        Some(i) => (&pointer[..i], &pointer[i..]),
        None => (pointer, ""),
    };
    let first = first.replace("~1", "/").replace("~0", "~");
    claims.get(&first)?.pointer(rest)
}

fn string_claim<'a>(claims: &'a Map<String, Value>, name: &str) -> Result<&'a str, String> {
    match claim(claims, name) {
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(format!("claim {name:?} is not a string")),
        None => Err(format!("missing claim {name:?}")),
    }
}

/// The configured claim mapping.
#[derive(Debug, Clone)]
pub(crate) struct ClaimMapping {
    pub rule: AgentIdRule,
    pub trust_domains: TrustDomainAllowlist,
    pub owner_claim: Option<String>,
    pub default_owner: Option<String>,
    /// (claim, attribute name)
    pub attributes: Vec<(String, String)>,
}

/// What the mapping produced.
pub(crate) struct Mapped {
    pub id: AgentId,
    pub owner: String,
    pub attributes: BTreeMap<String, Value>,
}

impl ClaimMapping {
    pub(crate) fn map(&self, claims: &Map<String, Value>) -> Result<Mapped, String> {
        let id = match &self.rule {
            AgentIdRule::Claim { claim, kind } => {
                let value = string_claim(claims, claim)?;
                AgentId::new(format!("{kind}:{value}"))
                    .map_err(|_| format!("claim {claim:?} is not a valid agent name"))?
            }
            AgentIdRule::Spiffe { claim } => {
                let value = string_claim(claims, claim)?;
                let spiffe = self
                    .trust_domains
                    .validate(value)
                    .map_err(|e| format!("claim {claim:?}: {e}"))?;
                AgentId::new(spiffe.as_str())
                    .map_err(|_| format!("claim {claim:?} is not a valid agent id"))?
            }
            AgentIdRule::KubernetesServiceAccount { kind } => {
                let sub = string_claim(claims, "sub")?;
                let parts: Vec<&str> = sub.split(':').collect();
                let [system, sa, namespace, name] = parts.as_slice() else {
                    return Err("\"sub\" is not a Kubernetes service account".into());
                };
                if *system != "system" || *sa != "serviceaccount" {
                    return Err("\"sub\" is not a Kubernetes service account".into());
                }
                // Namespaces and names are DNS labels/subdomains: no '/', so the id is unambiguous.
                if namespace.is_empty()
                    || name.is_empty()
                    || namespace.contains('/')
                    || name.contains('/')
                {
                    return Err("\"sub\" has an empty or invalid namespace or name".into());
                }
                AgentId::new(format!("{kind}:{namespace}/{name}"))
                    .map_err(|_| "\"sub\" is not a valid agent id".to_owned())?
            }
        };
        let owner = match (&self.owner_claim, &self.default_owner) {
            (Some(name), default) => match (claim(claims, name), default) {
                (Some(Value::String(owner)), _)
                    if !owner.is_empty() && owner.len() <= MAX_OWNER_LEN =>
                {
                    owner.clone()
                }
                (Some(_), _) => return Err(format!("claim {name:?} is not a valid owner")),
                (None, Some(default)) => default.clone(),
                (None, None) => return Err(format!("missing owner claim {name:?}")),
            },
            (None, Some(default)) => default.clone(),
            // The builder refuses this configuration; fail closed should it ever happen.
            (None, None) => return Err("no owner configured".into()),
        };
        let attributes = self
            .attributes
            .iter()
            .filter_map(|(name, attr)| claim(claims, name).map(|v| (attr.clone(), v.clone())))
            .collect();
        Ok(Mapped {
            id,
            owner,
            attributes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn mapping(rule: AgentIdRule) -> ClaimMapping {
        ClaimMapping {
            rule,
            trust_domains: TrustDomainAllowlist::new(["example.org"]).unwrap(),
            owner_claim: Some("owner".into()),
            default_owner: None,
            attributes: vec![
                ("team".into(), "team".into()),
                ("/kubernetes.io/namespace".into(), "namespace".into()),
            ],
        }
    }

    fn claims(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn rules() {
        let m = mapping(AgentIdRule::subject("agent"));
        let got = m
            .map(&claims(
                json!({"sub": "deployer", "owner": "alice", "team": "payments"}),
            ))
            .unwrap();
        assert_eq!(got.id.as_str(), "agent:deployer");
        assert_eq!(got.owner, "alice");
        assert_eq!(got.attributes.get("team"), Some(&json!("payments")));
        assert!(
            m.map(&claims(json!({"sub": "a b", "owner": "alice"})))
                .is_err()
        );
        assert!(m.map(&claims(json!({"sub": "a", "owner": ""}))).is_err());
        assert!(m.map(&claims(json!({"sub": "a"}))).is_err());

        let s = mapping(AgentIdRule::spiffe_subject());
        let got = s
            .map(&claims(
                json!({"sub": "spiffe://example.org/ns/p/sa/d", "owner": "o"}),
            ))
            .unwrap();
        assert_eq!(got.id.as_str(), "spiffe://example.org/ns/p/sa/d");
        assert!(
            s.map(&claims(
                json!({"sub": "spiffe://evil.org/ns/p", "owner": "o"})
            ))
            .is_err()
        );
        assert!(
            s.map(&claims(json!({"sub": "deployer", "owner": "o"})))
                .is_err()
        );

        let k = mapping(AgentIdRule::KubernetesServiceAccount {
            kind: "k8s-prod".into(),
        });
        let got = k
            .map(&claims(json!({
                "sub": "system:serviceaccount:payments:deployer",
                "owner": "o",
                "kubernetes.io": {"namespace": "payments"}
            })))
            .unwrap();
        assert_eq!(got.id.as_str(), "k8s-prod:payments/deployer");
        assert_eq!(got.attributes.get("namespace"), Some(&json!("payments")));
        for bad in [
            "system:serviceaccount:payments",
            "system:node:x:y",
            "system:serviceaccount::x",
            "system:serviceaccount:a:b:c",
        ] {
            assert!(
                k.map(&claims(json!({"sub": bad, "owner": "o"}))).is_err(),
                "{bad}"
            );
        }
    }
}
