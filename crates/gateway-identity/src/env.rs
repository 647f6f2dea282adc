//! Configuration from environment variables.
//!
//! | variable | meaning |
//! |---|---|
//! | `JWT_ISSUER` | required `iss` |
//! | `JWT_AUDIENCE` | accepted audiences, comma-separated (required) |
//! | `JWT_AUDIENCE_RULE` | `single` (default) or `contains` |
//! | `JWKS_URL` | key source: a JWKS URL, or |
//! | `JWT_JWKS` | key source: an inline JWK set document, or |
//! | `JWT_HS256_SECRET` | key source: a shared HS256 secret (≥ 32 bytes) |
//! | `JWT_ALGORITHMS` | allowlist, comma-separated (default: per key source) |
//! | `JWT_LEEWAY_SECONDS` | clock skew (default 30, at most 300) |
//! | `JWT_TYP` | required `typ` header |
//! | `JWT_AGENT_ID` | `claim:<claim>:<kind>` (default `claim:sub:agent`), `spiffe[:<claim>]` or `k8s:<kind>` |
//! | `JWT_SPIFFE_TRUST_DOMAINS` | allowed trust domains, comma-separated |
//! | `JWT_OWNER_CLAIM`, `JWT_DEFAULT_OWNER` | the agent's owner (at least one) |
//! | `JWT_ATTRIBUTE_CLAIMS` | comma-separated `claim` or `claim=attribute` |
//! | `JWT_SINGLE_USE` | `true` to require and remember `jti` |
//! | `JWKS_CACHE_TTL_SECONDS`, `JWKS_STALE_GRACE_SECONDS`, `JWKS_MIN_REFETCH_SECONDS` | JWKS cache |

use crate::alg::Algorithm;
use crate::builder::{ConfigError, JwtIdentityBuilder};
use crate::claims::AudienceRule;
use crate::identity::JwtIdentity;
use crate::jwks::JwksOptions;
use crate::mapping::AgentIdRule;
use crate::spiffe::TrustDomainAllowlist;
use gateway_core::Secret;
use std::time::Duration;

fn list(value: &str) -> impl Iterator<Item = &str> {
    value.split(',').map(str::trim).filter(|s| !s.is_empty())
}

fn seconds(name: &'static str, value: Option<String>) -> Result<Option<Duration>, ConfigError> {
    value
        .map(|v| {
            v.trim()
                .parse::<u64>()
                .map(Duration::from_secs)
                .map_err(|_| ConfigError::Invalid {
                    setting: name,
                    reason: "not a whole number of seconds".into(),
                })
        })
        .transpose()
}

fn agent_id_rule(value: &str) -> Result<AgentIdRule, ConfigError> {
    let invalid = || ConfigError::Invalid {
        setting: "JWT_AGENT_ID",
        reason: "expected claim:<claim>:<kind>, spiffe[:<claim>] or k8s:<kind>".into(),
    };
    if value == "spiffe" {
        return Ok(AgentIdRule::spiffe_subject());
    }
    if let Some(claim) = value.strip_prefix("spiffe:") {
        return Ok(AgentIdRule::Spiffe {
            claim: claim.to_owned(),
        });
    }
    if let Some(kind) = value.strip_prefix("k8s:") {
        return Ok(AgentIdRule::KubernetesServiceAccount {
            kind: kind.to_owned(),
        });
    }
    let rest = value.strip_prefix("claim:").ok_or_else(invalid)?;
    let (claim, kind) = rest.rsplit_once(':').ok_or_else(invalid)?;
    if claim.is_empty() {
        return Err(invalid());
    }
    Ok(AgentIdRule::Claim {
        claim: claim.to_owned(),
        kind: kind.to_owned(),
    })
}

impl JwtIdentity {
    /// Builds from the process environment (see the [module docs](crate::env)).
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Builds from any variable lookup, e.g. a map in tests.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let mut b = JwtIdentityBuilder::default()
            .issuer(get("JWT_ISSUER").ok_or(ConfigError::Missing("JWT_ISSUER"))?);
        let audiences = get("JWT_AUDIENCE").ok_or(ConfigError::Missing("JWT_AUDIENCE"))?;
        for audience in list(&audiences) {
            b = b.audience(audience);
        }
        if let Some(rule) = get("JWT_AUDIENCE_RULE") {
            b = b.audience_rule(match rule.trim() {
                "single" => AudienceRule::Single,
                "contains" => AudienceRule::Contains,
                _ => {
                    return Err(ConfigError::Invalid {
                        setting: "JWT_AUDIENCE_RULE",
                        reason: "expected single or contains".into(),
                    });
                }
            });
        }
        if let Some(url) = get("JWKS_URL") {
            b = b.jwks_url(url.trim());
        }
        if let Some(doc) = get("JWT_JWKS") {
            b = b.static_jwks_json(doc.as_bytes())?;
        }
        if let Some(secret) = lookup("JWT_HS256_SECRET") {
            b = b.hs256_secret(Secret::from(secret));
        }
        if let Some(algs) = get("JWT_ALGORITHMS") {
            let parsed = list(&algs)
                .map(str::parse::<Algorithm>)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| ConfigError::Invalid {
                    setting: "JWT_ALGORITHMS",
                    reason: e.to_string(),
                })?;
            b = b.algorithms(parsed);
        }
        if let Some(leeway) = seconds("JWT_LEEWAY_SECONDS", get("JWT_LEEWAY_SECONDS"))? {
            b = b.leeway(leeway);
        }
        if let Some(typ) = get("JWT_TYP") {
            b = b.expected_typ(typ.trim());
        }
        if let Some(rule) = get("JWT_AGENT_ID") {
            b = b.agent_id_rule(agent_id_rule(rule.trim())?);
        }
        if let Some(domains) = get("JWT_SPIFFE_TRUST_DOMAINS") {
            let allow =
                TrustDomainAllowlist::new(list(&domains)).map_err(|e| ConfigError::Invalid {
                    setting: "JWT_SPIFFE_TRUST_DOMAINS",
                    reason: e.to_string(),
                })?;
            b = b.spiffe_trust_domains(allow);
        }
        if let Some(claim) = get("JWT_OWNER_CLAIM") {
            b = b.owner_claim(claim.trim());
        }
        if let Some(owner) = get("JWT_DEFAULT_OWNER") {
            b = b.default_owner(owner.trim());
        }
        if let Some(attrs) = get("JWT_ATTRIBUTE_CLAIMS") {
            for item in list(&attrs) {
                b = match item.split_once('=') {
                    Some((claim, attr)) => b.attribute_claim_as(claim.trim(), attr.trim()),
                    None => b.attribute_claim(item),
                };
            }
        }
        if let Some(flag) = get("JWT_SINGLE_USE") {
            b = b.single_use(match flag.trim() {
                "true" | "1" => true,
                "false" | "0" => false,
                _ => {
                    return Err(ConfigError::Invalid {
                        setting: "JWT_SINGLE_USE",
                        reason: "expected true or false".into(),
                    });
                }
            });
        }
        let mut options = JwksOptions::default();
        if let Some(ttl) = seconds("JWKS_CACHE_TTL_SECONDS", get("JWKS_CACHE_TTL_SECONDS"))? {
            options.cache_ttl = ttl;
        }
        if let Some(grace) = seconds("JWKS_STALE_GRACE_SECONDS", get("JWKS_STALE_GRACE_SECONDS"))? {
            options.stale_grace = grace;
        }
        if let Some(min) = seconds("JWKS_MIN_REFETCH_SECONDS", get("JWKS_MIN_REFETCH_SECONDS"))? {
            options.min_refetch_interval = min;
        }
        b.jwks_options(options).build()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn build(vars: &[(&str, &str)]) -> Result<JwtIdentity, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        JwtIdentity::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn env_configuration() {
        let secret = "0123456789abcdef0123456789abcdef";
        let ok = build(&[
            ("JWT_ISSUER", "https://issuer"),
            ("JWT_AUDIENCE", "gw, gw2"),
            ("JWT_HS256_SECRET", secret),
            ("JWT_DEFAULT_OWNER", "platform"),
            ("JWT_AGENT_ID", "claim:sub:svc"),
            ("JWT_ATTRIBUTE_CLAIMS", "team,/kubernetes.io/namespace=ns"),
        ])
        .unwrap();
        assert_eq!(ok.rules.audiences, ["gw", "gw2"]);
        assert_eq!(
            ok.algorithms.iter().copied().collect::<Vec<_>>(),
            [Algorithm::HS256]
        );
        assert!(!format!("{ok:?}").contains(secret));

        assert!(matches!(
            build(&[("JWT_AUDIENCE", "gw")]),
            Err(ConfigError::Missing("JWT_ISSUER"))
        ));
        // No key source, then two.
        assert!(
            build(&[
                ("JWT_ISSUER", "i"),
                ("JWT_AUDIENCE", "a"),
                ("JWT_DEFAULT_OWNER", "o")
            ])
            .is_err()
        );
        assert!(
            build(&[
                ("JWT_ISSUER", "i"),
                ("JWT_AUDIENCE", "a"),
                ("JWT_DEFAULT_OWNER", "o"),
                ("JWT_HS256_SECRET", secret),
                ("JWKS_URL", "http://127.0.0.1:1/jwks"),
            ])
            .is_err()
        );
        // HS256 with public keys, short secrets, remote plain http and a SPIFFE rule without
        // trust domains are all refused.
        let base = [
            ("JWT_ISSUER", "i"),
            ("JWT_AUDIENCE", "a"),
            ("JWT_DEFAULT_OWNER", "o"),
        ];
        for extra in [
            vec![
                ("JWKS_URL", "http://127.0.0.1:1/jwks"),
                ("JWT_ALGORITHMS", "RS256,HS256"),
            ],
            vec![("JWT_HS256_SECRET", "short")],
            vec![("JWKS_URL", "http://keys.example.com/jwks")],
            vec![
                ("JWKS_URL", "http://127.0.0.1:1/jwks"),
                ("JWT_AGENT_ID", "spiffe"),
            ],
            vec![
                ("JWKS_URL", "http://127.0.0.1:1/jwks"),
                ("JWT_LEEWAY_SECONDS", "3600"),
            ],
            vec![
                ("JWKS_URL", "http://127.0.0.1:1/jwks"),
                ("JWT_ALGORITHMS", "none"),
            ],
            vec![("JWKS_URL", "ftp://127.0.0.1/jwks")],
        ] {
            let vars: Vec<_> = base.iter().copied().chain(extra.iter().copied()).collect();
            assert!(build(&vars).is_err(), "{extra:?}");
        }
        let spiffe = build(&[
            ("JWT_ISSUER", "i"),
            ("JWT_AUDIENCE", "a"),
            ("JWT_OWNER_CLAIM", "owner"),
            ("JWKS_URL", "http://localhost:1/jwks"),
            ("JWT_AGENT_ID", "spiffe"),
            ("JWT_SPIFFE_TRUST_DOMAINS", "example.org"),
            ("JWT_SINGLE_USE", "true"),
        ])
        .unwrap();
        assert!(spiffe.replay.is_some());
    }
}
