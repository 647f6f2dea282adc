//! From verified claims to an agent: its id, its accountable owner and policy attributes.

use crate::spiffe::TrustDomainAllowlist;
use gateway_core::AgentId;
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// The longest owner accepted from a claim, in bytes.
const MAX_OWNER_LEN: usize = 256;

/// The attribute OAuth scopes are copied into by [`JwtIdentityBuilder::scope_attribute`]'s
/// usual setting, as policies read it: `input.agent.attributes.scopes`.
///
/// [`JwtIdentityBuilder::scope_attribute`]: crate::JwtIdentityBuilder::scope_attribute
pub const SCOPES_ATTRIBUTE: &str = "scopes";

/// Most scopes taken from one token; a token granting more is refused.
const MAX_SCOPES: usize = 256;

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
    /// Where the token's OAuth scopes (`scope`, `scp`) go, if anywhere.
    pub scope_attribute: Option<String>,
}

/// The OAuth scopes a token grants: `scope`, a space-separated string (RFC 6749 section 3.3,
/// RFC 9068, RFC 8693), and `scp`, an array of strings (or one such string) as some issuers
/// write it; both when both are present. Sorted, without duplicates. A claim of another shape
/// refuses the token, so a malformed grant never reads as "no scopes, but valid".
pub(crate) fn scopes(claims: &Map<String, Value>) -> Result<Vec<String>, String> {
    let mut found = std::collections::BTreeSet::new();
    let mut add = |text: &str, claim: &str| -> Result<(), String> {
        for scope in text.split(' ').filter(|s| !s.is_empty()) {
            // RFC 6749 section 3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E ).
            if !scope
                .bytes()
                .all(|b| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b))
            {
                return Err(format!("claim {claim:?} holds an invalid scope token"));
            }
            found.insert(scope.to_owned());
        }
        Ok(())
    };
    match claims.get("scope") {
        None => {}
        Some(Value::String(text)) => add(text, "scope")?,
        Some(_) => return Err("claim \"scope\" is not a space-separated string".into()),
    }
    match claims.get("scp") {
        None => {}
        Some(Value::String(text)) => add(text, "scp")?,
        Some(Value::Array(items)) => {
            for item in items {
                let text = item.as_str().ok_or("claim \"scp\" holds a non-string")?;
                if text.contains(' ') {
                    return Err("claim \"scp\" holds a scope with a space".into());
                }
                add(text, "scp")?;
            }
        }
        Some(_) => return Err("claim \"scp\" is neither a string nor an array".into()),
    }
    if found.len() > MAX_SCOPES {
        return Err(format!("more than {MAX_SCOPES} scopes"));
    }
    Ok(found.into_iter().collect())
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
        let mut attributes: BTreeMap<String, Value> = self
            .attributes
            .iter()
            .filter_map(|(name, attr)| claim(claims, name).map(|v| (attr.clone(), v.clone())))
            .collect();
        if let Some(attribute) = &self.scope_attribute {
            // Always set (an empty list when the token grants none), and set last, so no
            // other claim mapping can stand in for the grant.
            let granted = scopes(claims)?.into_iter().map(Value::String).collect();
            attributes.insert(attribute.clone(), Value::Array(granted));
        }
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
            scope_attribute: None,
        }
    }

    #[test]
    fn scopes_from_scope_and_scp() {
        let mut m = mapping(AgentIdRule::subject("agent"));
        m.scope_attribute = Some(SCOPES_ATTRIBUTE.into());
        let scopes_with = |m: &ClaimMapping, extra: Value| {
            let mut c = claims(json!({"sub": "deployer", "owner": "alice"}));
            c.extend(claims(extra));
            m.map(&c)
                .map(|got| got.attributes[SCOPES_ATTRIBUTE].clone())
        };
        let scopes_of = |extra: Value| scopes_with(&m, extra);
        assert_eq!(
            scopes_of(json!({"scope": "b a  b"})).unwrap(),
            json!(["a", "b"])
        );
        assert_eq!(
            scopes_of(json!({"scp": ["c", "a"], "scope": "a"})).unwrap(),
            json!(["a", "c"])
        );
        assert_eq!(scopes_of(json!({"scp": "x y"})).unwrap(), json!(["x", "y"]));
        // No grant is an empty list, never a missing attribute.
        assert_eq!(scopes_of(json!({})).unwrap(), json!([]));
        // A claim the mapping copies under the same name does not stand in for the grant.
        let mut spoofable = m.clone();
        spoofable
            .attributes
            .push(("team".into(), SCOPES_ATTRIBUTE.into()));
        assert_eq!(
            scopes_with(&spoofable, json!({"team": ["admin"], "scope": "a"})).unwrap(),
            json!(["a"])
        );
        for bad in [
            json!({"scope": ["a"]}),
            json!({"scope": 1}),
            json!({"scp": [1]}),
            json!({"scp": ["a b"]}),
            json!({"scp": {"a": true}}),
            json!({"scope": "a\"b"}),
            json!({"scope": "caf\u{e9}"}),
        ] {
            assert!(scopes_of(bad.clone()).is_err(), "{bad}");
        }
        let many: Vec<String> = (0..=MAX_SCOPES).map(|i| format!("s{i}")).collect();
        assert!(scopes_of(json!({"scope": many.join(" ")})).is_err());
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
