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

use gateway_core::action::JobBuildError;
use gateway_core::params_schema::SchemaError;
use gateway_core::{ActionCatalog, ActionDef, ActionRequest, AgentIdentity, JobSpec};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use serde_json::json;

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

/// Reads an action's params, already accepted by its schema, as the job's typed params. The
/// schema is the one definition of what is valid (it is what agents are shown); this only
/// reads, so a failure here means the types below and the schema disagree (a bug, which the
/// tests look for).
fn typed<T: DeserializeOwned>(request: &ActionRequest) -> Result<T, JobBuildError> {
    T::deserialize(&request.params).map_err(|e| {
        JobBuildError::with_source("params passed the schema but do not read as the job's", e)
    })
}

/// A JSON Schema `integer` is any number with a zero fraction (`3` and `3.0` alike).
fn whole<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let n = serde_json::Number::deserialize(d)?;
    if let Some(u) = n.as_u64() {
        return Ok(u);
    }
    match n.as_f64() {
        // Exact: the schemas bound these far below 2^53.
        Some(f) if f.fract() == 0.0 && (0.0..=9_007_199_254_740_992.0).contains(&f) => Ok(f as u64),
        _ => Err(serde::de::Error::custom(format!(
            "{n} is not a whole number"
        ))),
    }
}

#[derive(Deserialize)]
struct ScaleParams {
    #[serde(deserialize_with = "whole")]
    replicas: u64,
}

#[derive(Deserialize)]
struct QueryParams {
    sql: String,
}

#[derive(Deserialize)]
struct EchoParams {
    #[serde(default)]
    message: String,
    #[serde(default, deserialize_with = "whole")]
    exit_code: u64,
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
    // The reference schemas are constants; `every_reference_schema_compiles` compiles them.
    #[allow(clippy::expect_used)]
    reference_catalog(image).expect("the reference schemas compile")
}

fn reference_catalog(image: Option<String>) -> Result<ActionCatalog, SchemaError> {
    let (i1, i2, i3) = (image.clone(), image.clone(), image);
    Ok(ActionCatalog::new()
        .register(
            ActionDef::new(
                "k8s.scale",
                "Scale a Kubernetes deployment (resource k8s:<namespace>/deployments/<name>)",
                move |req, who| {
                    let (ns, name) = parse_deployment(&req.resource)?;
                    let ScaleParams { replicas } = typed(req)?;
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
            }))?,
        )
        .register(
            ActionDef::new(
                "db.query",
                "Run a read-only SQL query (resource db:<database>)",
                move |req, who| {
                    let db = parse_database(&req.resource)?;
                    let QueryParams { sql } = typed(req)?;
                    Ok(shell_job(
                        req,
                        who,
                        i2.as_deref(),
                        scripts::DB_QUERY,
                        &[("DATABASE", db), ("SQL", sql)],
                    ))
                },
            )
            .with_schema(json!({
                "type": "object",
                "properties": {"sql": {"type": "string", "maxLength": 4096}},
                "required": ["sql"],
                "additionalProperties": false
            }))?,
        )
        .register(
            ActionDef::new(
                "diag.echo",
                "Print a message and exit with a code (harmless smoke test)",
                move |req, who| {
                    let EchoParams { message, exit_code } = typed(req)?;
                    Ok(shell_job(
                        req,
                        who,
                        i3.as_deref(),
                        scripts::DIAG_ECHO,
                        &[("MESSAGE", message), ("EXIT_CODE", exit_code.to_string())],
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
            }))?,
        ))
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
    fn every_reference_schema_compiles() {
        let catalog = reference_catalog(None).unwrap();
        assert_eq!(catalog.actions().count(), 3);
    }

    fn request(action: &str, params: serde_json::Value) -> ActionRequest {
        let resource = match action {
            "k8s.scale" => "k8s:staging/deployments/web",
            "db.query" => "db:orders",
            _ => "diag:x",
        };
        ActionRequest::new(action, resource).with_params(params)
    }

    /// For each action, params its schema accepts (the gateway accepts them and the job builds)
    /// and params it refuses (the refusal names the place).
    #[test]
    fn the_schema_is_the_whole_validation() {
        let cat = catalog();
        let who = AgentIdentity::new(
            gateway_core::AgentId::new("agent:t").unwrap(),
            "team",
            gateway_core::AuthMethod::StaticKey { key_id: "k".into() },
        );
        let accepted = [
            ("k8s.scale", json!({"replicas": 0})),
            ("k8s.scale", json!({"replicas": 1000})),
            ("k8s.scale", json!({"replicas": 3.0})),
            ("db.query", json!({"sql": "select 1"})),
            ("db.query", json!({"sql": "é".repeat(4096)})),
            ("diag.echo", json!({})),
            ("diag.echo", json!({"message": "hi", "exit_code": 255})),
        ];
        for (action, params) in accepted {
            let req = request(action, params.clone());
            let def = cat
                .validate(&req)
                .unwrap_or_else(|e| panic!("{action} {params} refused: {e}"));
            (def.job)(&req, &who).unwrap_or_else(|e| panic!("{action} {params}: {e}"));
        }
        let refused = [
            ("k8s.scale", json!({}), "/:"),
            ("k8s.scale", json!({"replicas": -1}), "/replicas"),
            ("k8s.scale", json!({"replicas": 1001}), "/replicas"),
            ("k8s.scale", json!({"replicas": 2.5}), "/replicas"),
            ("k8s.scale", json!({"replicas": "3"}), "/replicas"),
            (
                "k8s.scale",
                json!({"replicas": 3, "x": 1}),
                "additionalProperties",
            ),
            ("db.query", json!({"sql": 1}), "/sql"),
            ("db.query", json!({"sql": "x".repeat(4097)}), "/sql"),
            ("diag.echo", json!({"exit_code": 256}), "/exit_code"),
            ("diag.echo", json!({"message": ["x"]}), "/message"),
        ];
        for (action, params, place) in refused {
            let err = cat.validate(&request(action, params.clone())).unwrap_err();
            assert!(err.to_string().contains(place), "{action} {params}: {err}");
        }
    }

    use proptest::prelude::*;

    proptest::proptest! {
        /// Whatever an agent sends, params the schema accepts always build a job: the schema
        /// and the job's reading of the params cannot drift apart.
        #[test]
        fn accepted_params_always_build(
            action in proptest::sample::select(vec!["k8s.scale", "db.query", "diag.echo"]),
            keys in proptest::collection::vec(
                proptest::sample::select(vec!["replicas", "sql", "message", "exit_code", "x"]),
                0..3,
            ),
            values in proptest::collection::vec(
                proptest::prop_oneof![
                    (-2i64..1100).prop_map(|n| json!(n)),
                    (-2.0f64..1100.0).prop_map(|f| json!(f)),
                    (0u32..300).prop_map(|n| json!(f64::from(n))),
                    "[a-zé ]{0,8}".prop_map(|s| json!(s)),
                    proptest::strategy::Just(json!(null)),
                    proptest::strategy::Just(json!([1])),
                ],
                3,
            ),
        ) {
            let params: serde_json::Map<_, _> = keys
                .iter()
                .zip(&values)
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .collect();
            let req = request(action, params.into());
            let who = AgentIdentity::new(
                gateway_core::AgentId::new("agent:t").unwrap(),
                "team",
                gateway_core::AuthMethod::StaticKey { key_id: "k".into() },
            );
            if let Ok(def) = catalog().validate(&req) {
                let built = (def.job)(&req, &who);
                prop_assert!(built.is_ok(), "{} accepted but: {:?}", req.params, built.err());
            }
        }
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
