//! The reference actions that go with the reference policies in `policies/`: what the
//! quickstart, the example servers, the benchmarks and the end-to-end tests run.
//!
//! | action | resource | params | job |
//! |---|---|---|---|
//! | `k8s.scale` | `k8s:<namespace>/deployments/<name>` | `{"replicas": 0..=1000}` | emits the scale request it would send, authorised by its grant token |
//! | `db.query` | `db:<database>` | `{"sql": "<read-only SQL>"}` | emits the query it would run; fails (exit 2) for a database named `missing` |
//! | `diag.echo` | `diag:<anything>` | `{"message": "...", "exit_code": 0..=255}` | prints the message and exits with the code |
//!
//! The jobs are simulations: they print the call they would make instead of reaching a real
//! cluster or database. `k8s.scale` prints its request with the grant's token as a bearer
//! credential (`target-request: ... Bearer <token>`), so that a target can be simulated by
//! reading the job's output and verifying the token ([`gateway_core::hmac_broker::TokenVerifier`]).
//! Params reach jobs only as environment variables, never spliced into the script, so they
//! cannot inject shell code.

use gateway_core::{ActionCatalog, ActionDef, ActionRequest, AgentIdentity, JobSpec};
use serde_json::{Value, json};

/// The `/bin/sh` script of each job (params arrive as environment variables).
mod scripts {
    pub const K8S_SCALE: &str = r#"printf 'target-request: PATCH /apis/apps/v1/namespaces/%s/deployments/%s/scale {"spec":{"replicas":%s}} Bearer %s\n' "$NAMESPACE" "$DEPLOYMENT" "$REPLICAS" "$GATEWAY_GRANT_TOKEN"; echo "scaled $NAMESPACE/$DEPLOYMENT to $REPLICAS replicas (simulated)""#;
    pub const DB_QUERY: &str = r#"if [ "$DATABASE" = missing ]; then echo "database $DATABASE does not exist" >&2; exit 2; fi; printf 'ran on %s (simulated, read-only): %s\n' "$DATABASE" "$SQL""#;
    pub const DIAG_ECHO: &str = r#"printf '%s\n' "$MESSAGE"; exit "$EXIT_CODE""#;
}

fn shell_job(
    request: &ActionRequest,
    who: &AgentIdentity,
    image: Option<&str>,
    script: &str,
    env: &[(&str, String)],
) -> JobSpec {
    let mut spec = JobSpec::new(
        request.id,
        who.id.clone(),
        vec!["/bin/sh".into(), "-c".into(), script.into()],
    );
    spec.image = image.map(str::to_owned);
    for (k, v) in env {
        spec.env.insert((*k).to_owned(), v.clone());
    }
    spec
}

fn int_in(params: &Value, key: &str, max: u64) -> Result<Option<u64>, String> {
    match params.get(key) {
        None => Ok(None),
        Some(v) => match v.as_u64() {
            Some(n) if n <= max => Ok(Some(n)),
            _ => Err(format!("{key} must be an integer from 0 to {max}")),
        },
    }
}

fn string_up_to<'a>(params: &'a Value, key: &str, max: usize) -> Result<Option<&'a str>, String> {
    match params.get(key) {
        None => Ok(None),
        Some(Value::String(s)) if s.len() <= max => Ok(Some(s)),
        Some(_) => Err(format!("{key} must be a string of at most {max} bytes")),
    }
}

fn only_keys(params: &Value, allowed: &[&str]) -> Result<(), String> {
    let obj = params.as_object().ok_or("params must be an object")?;
    match obj.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(format!("unknown parameter {k:?}")),
        None => Ok(()),
    }
}

/// `k8s:<namespace>/deployments/<name>` → (namespace, name), DNS-label characters only.
fn parse_deployment(resource: &str) -> Result<(String, String), String> {
    let err = || format!("resource must be k8s:<namespace>/deployments/<name>, got {resource:?}");
    let rest = resource.strip_prefix("k8s:").ok_or_else(err)?;
    let mut parts = rest.split('/');
    let (Some(ns), Some("deployments"), Some(name), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(err());
    };
    let dns = |s: &str| {
        !s.is_empty()
            && s.len() <= 63
            && s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    };
    if !dns(ns) || !dns(name) {
        return Err(err());
    }
    Ok((ns.to_owned(), name.to_owned()))
}

fn parse_database(resource: &str) -> Result<String, String> {
    let name = resource
        .strip_prefix("db:")
        .filter(|n| !n.is_empty() && n.len() <= 63)
        .filter(|n| {
            n.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        })
        .ok_or_else(|| format!("resource must be db:<database>, got {resource:?}"))?;
    Ok(name.to_owned())
}

/// The reference catalog for process runners (no image).
pub fn catalog() -> ActionCatalog {
    catalog_with_image(None)
}

/// The reference catalog; container runners get `image` (it needs `/bin/sh` and `printf`).
pub fn catalog_with_image(image: Option<String>) -> ActionCatalog {
    let (i1, i2, i3) = (image.clone(), image.clone(), image);
    ActionCatalog::new()
        .register(
            ActionDef::new(
                "k8s.scale",
                "Scale a Kubernetes deployment (resource k8s:<namespace>/deployments/<name>)",
                move |req, who| {
                    let (ns, name) = parse_deployment(&req.resource)?;
                    let replicas =
                        int_in(&req.params, "replicas", 1000)?.ok_or("replicas is required")?;
                    Ok(shell_job(
                        req,
                        who,
                        i1.as_deref(),
                        scripts::K8S_SCALE,
                        &[
                            ("NAMESPACE", ns),
                            ("DEPLOYMENT", name),
                            ("REPLICAS", replicas.to_string()),
                        ],
                    ))
                },
            )
            .with_schema(json!({
                "type": "object",
                "properties": {"replicas": {"type": "integer", "minimum": 0, "maximum": 1000}},
                "required": ["replicas"],
                "additionalProperties": false
            }))
            .with_validator(|p| {
                only_keys(p, &["replicas"])?;
                int_in(p, "replicas", 1000)?.ok_or("replicas is required")?;
                Ok(())
            }),
        )
        .register(
            ActionDef::new(
                "db.query",
                "Run a read-only SQL query (resource db:<database>)",
                move |req, who| {
                    let db = parse_database(&req.resource)?;
                    let sql = string_up_to(&req.params, "sql", 4096)?.ok_or("sql is required")?;
                    Ok(shell_job(
                        req,
                        who,
                        i2.as_deref(),
                        scripts::DB_QUERY,
                        &[("DATABASE", db), ("SQL", sql.to_owned())],
                    ))
                },
            )
            .with_schema(json!({
                "type": "object",
                "properties": {"sql": {"type": "string", "maxLength": 4096}},
                "required": ["sql"],
                "additionalProperties": false
            }))
            .with_validator(|p| {
                only_keys(p, &["sql"])?;
                string_up_to(p, "sql", 4096)?.ok_or("sql is required")?;
                Ok(())
            }),
        )
        .register(
            ActionDef::new(
                "diag.echo",
                "Print a message and exit with a code (harmless smoke test)",
                move |req, who| {
                    let message = string_up_to(&req.params, "message", 1024)?.unwrap_or("");
                    let code = int_in(&req.params, "exit_code", 255)?.unwrap_or(0);
                    Ok(shell_job(
                        req,
                        who,
                        i3.as_deref(),
                        scripts::DIAG_ECHO,
                        &[
                            ("MESSAGE", message.to_owned()),
                            ("EXIT_CODE", code.to_string()),
                        ],
                    ))
                },
            )
            .with_schema(json!({
                "type": "object",
                "properties": {
                    "message": {"type": "string", "maxLength": 1024},
                    "exit_code": {"type": "integer", "minimum": 0, "maximum": 255}
                },
                "additionalProperties": false
            }))
            .with_validator(|p| {
                only_keys(p, &["message", "exit_code"])?;
                string_up_to(p, "message", 1024)?;
                int_in(p, "exit_code", 255)?;
                Ok(())
            }),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resources_parse_strictly() {
        assert_eq!(
            parse_deployment("k8s:staging/deployments/web").unwrap(),
            ("staging".into(), "web".into())
        );
        for bad in [
            "k8s:staging/pods/web",
            "k8s:/deployments/web",
            "staging/deployments/web",
            "k8s:a/deployments/b/c",
            "k8s:A/deployments/b",
            "k8s:a;rm/deployments/b",
        ] {
            assert!(parse_deployment(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_database("db:orders").unwrap(), "orders");
        assert!(parse_database("db:").is_err());
        assert!(parse_database("db:a b").is_err());
    }

    #[test]
    fn params_are_validated() {
        let cat = catalog();
        let ok = ActionRequest::new("k8s.scale", "k8s:staging/deployments/web")
            .with_params(json!({"replicas": 3}));
        assert!(cat.validate(&ok).is_ok());
        for bad in [
            json!({}),
            json!({"replicas": -1}),
            json!({"replicas": 1001}),
            json!({"replicas": "3"}),
            json!({"replicas": 3, "x": 1}),
        ] {
            let req = ActionRequest::new("k8s.scale", "k8s:staging/deployments/web")
                .with_params(bad.clone());
            assert!(cat.validate(&req).is_err(), "{bad}");
        }
    }
}
