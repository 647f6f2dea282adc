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
//!
//! The actions are defined in `catalog/reference.toml` (the catalog file format,
//! `docs/catalog.md`), compiled into this crate: the resource patterns, schemas, scripts and
//! scope bounds are there, one self-contained entry per action.

use gateway_core::ActionCatalog;
use gateway_core::catalog_file::{CatalogFile, CatalogFileError};

/// The reference catalog file, `catalog/reference.toml` (format: `docs/catalog.md`).
pub const REFERENCE_TOML: &str = include_str!("../catalog/reference.toml");

/// The infrastructure catalog file, `catalog/infrastructure.toml`: the real counterparts of
/// the reference actions, with the same names, resources and params schemas.
pub const INFRASTRUCTURE_TOML: &str = include_str!("../catalog/infrastructure.toml");

/// The broker name the infrastructure catalog's PostgreSQL actions give
/// (`GatewayBuilder::named_broker`): a `gateway_postgres::PostgresBroker`.
pub const POSTGRES_BROKER: &str = "postgres";

/// The broker name the infrastructure catalog's Kubernetes actions give: a
/// `gateway_kubernetes::KubernetesBroker`.
pub const KUBERNETES_BROKER: &str = "kubernetes";

/// The real infrastructure actions (`catalog/infrastructure.toml`): `db.query` runs the host's
/// `psql` with a role of its own from the [`POSTGRES_BROKER`]. A gateway serving it registers
/// the brokers it names; its runner must show jobs the host's clients (the local sandbox does).
pub fn infrastructure_catalog() -> ActionCatalog {
    // The file is a constant; `the_infrastructure_file_loads` loads it.
    #[allow(clippy::expect_used)]
    CatalogFile::parse(INFRASTRUCTURE_TOML)
        .expect("the infrastructure catalog file loads")
        .into_catalog()
}

/// The reference catalog for process runners (no image).
pub fn catalog() -> ActionCatalog {
    catalog_with_image(None)
}

/// The reference catalog; container runners get `image` (it needs `/bin/sh` and `printf`).
pub fn catalog_with_image(image: Option<String>) -> ActionCatalog {
    // The reference file is a constant; `the_reference_file_loads` loads it.
    #[allow(clippy::expect_used)]
    reference_catalog(image)
        .expect("the reference catalog file loads")
        .into_catalog()
}

fn reference_catalog(image: Option<String>) -> Result<CatalogFile, CatalogFileError> {
    CatalogFile::parse_with_image(REFERENCE_TOML, image.as_deref())
}

#[cfg(test)]
mod tests {
    use super::*;

    use gateway_core::{ActionRequest, AgentIdentity};
    use serde_json::json;

    fn who() -> AgentIdentity {
        AgentIdentity::new(
            gateway_core::AgentId::new("agent:t").unwrap(),
            "team",
            gateway_core::AuthMethod::StaticKey { key_id: "k".into() },
        )
    }

    /// The job of `action` on `resource`, or why it cannot be built.
    fn job(
        action: &str,
        resource: &str,
        params: serde_json::Value,
    ) -> Result<gateway_core::JobSpec, String> {
        let cat = catalog();
        let req = ActionRequest::new(action, resource).with_params(params);
        let def = cat.validate(&req).map_err(|e| e.to_string())?;
        (def.job)(&req, &who()).map_err(|e| e.to_string())
    }

    #[test]
    fn the_infrastructure_file_loads_and_agrees_with_the_reference() {
        let infra = infrastructure_catalog();
        let reference = catalog();
        let mut shared = 0;
        for def in infra.actions() {
            let twin = reference
                .get(&def.name)
                .unwrap_or_else(|| panic!("{} has no reference twin", def.name));
            // What agents are shown and what the policies see must not depend on the catalog.
            assert_eq!(
                def.params_schema.as_value(),
                twin.params_schema.as_value(),
                "{}",
                def.name
            );
            assert_eq!(def.description, twin.description, "{}", def.name);
            assert!(def.broker.is_some(), "{} names no broker", def.name);
            shared += 1;
        }
        assert!(shared >= 1);
        let req =
            ActionRequest::new("db.query", "db:analytics").with_params(json!({"sql": "select 1"}));
        let def = infra.validate(&req).unwrap();
        assert_eq!(def.broker.as_deref(), Some(POSTGRES_BROKER));
        let spec = (def.job)(&req, &who()).unwrap();
        assert_eq!(spec.env["SQL"], "select 1");
        assert!(spec.command[2].contains("psql"), "{spec:?}");
        assert!(!spec.command.iter().any(|a| a.contains("select 1")));
    }

    /// The Kubernetes jobs are also files of their own (the broker crate's cluster tests run
    /// them); the catalog's copies must be those files, byte for byte.
    #[test]
    fn the_infrastructure_jobs_are_the_job_files() {
        let infra = infrastructure_catalog();
        for (action, file) in [
            ("k8s.scale", include_str!("../catalog/jobs/k8s-scale.sh")),
            (
                "k8s.rollout_restart",
                include_str!("../catalog/jobs/k8s-rollout-restart.sh"),
            ),
        ] {
            let req = ActionRequest::new(action, "k8s:team-a/deployments/web")
                .with_params(json!({"replicas": 1}));
            let req = if action == "k8s.scale" {
                req
            } else {
                req.with_params(json!({}))
            };
            let def = infra.validate(&req).unwrap();
            assert_eq!(def.broker.as_deref(), Some(KUBERNETES_BROKER));
            let spec = (def.job)(&req, &who()).unwrap();
            assert_eq!(spec.command[2].trim_end(), file.trim_end(), "{action}");
        }
    }

    #[test]
    fn resources_parse_strictly() {
        let spec = job(
            "k8s.scale",
            "k8s:staging/deployments/web",
            json!({"replicas": 3}),
        )
        .unwrap();
        assert_eq!(spec.env["NAMESPACE"], "staging");
        assert_eq!(spec.env["DEPLOYMENT"], "web");
        assert_eq!(spec.env["REPLICAS"], "3");
        for bad in [
            "k8s:staging/pods/web",
            "k8s:/deployments/web",
            "staging/deployments/web",
            "k8s:a/deployments/b/c",
            "k8s:A/deployments/b",
            "k8s:a;rm/deployments/b",
        ] {
            let err = job("k8s.scale", bad, json!({"replicas": 1})).unwrap_err();
            assert!(
                err.contains("resource must match k8s:{namespace}/deployments/{name}"),
                "{bad}: {err}"
            );
        }
        assert_eq!(
            job("db.query", "db:orders", json!({"sql": "select 1"}))
                .unwrap()
                .env["DATABASE"],
            "orders"
        );
        assert!(job("db.query", "db:", json!({"sql": "x"})).is_err());
        assert!(job("db.query", "db:a b", json!({"sql": "x"})).is_err());
    }

    #[test]
    fn the_reference_file_loads() {
        let file = reference_catalog(None).unwrap();
        let names: Vec<_> = file.actions().iter().map(|d| d.name.as_str()).collect();
        assert_eq!(
            names,
            ["k8s.scale", "k8s.rollout_restart", "db.query", "diag.echo"]
        );
        let with_image = reference_catalog(Some("busybox@sha256:00".into()))
            .unwrap()
            .into_catalog();
        let req = ActionRequest::new("diag.echo", "diag:x");
        let spec = (with_image.get("diag.echo").unwrap().job)(&req, &who()).unwrap();
        assert_eq!(spec.image.as_deref(), Some("busybox@sha256:00"));
        assert_eq!(spec.command[..2], ["/bin/sh".to_string(), "-c".to_string()]);
        assert_eq!(spec.env["MESSAGE"], "");
        assert_eq!(spec.env["EXIT_CODE"], "0");
    }

    #[test]
    fn reference_scopes_are_the_reference_policys() {
        let cat = catalog();
        let allowed = |action: &str, resource: &str, scope: &str| {
            let req = ActionRequest::new(action, resource);
            (cat.get(action).unwrap().allowed_scopes.as_ref().unwrap())(&req, scope)
        };
        assert!(allowed(
            "k8s.scale",
            "k8s:team-a/deployments/web",
            "k8s:team-a:deployments/web/scale:patch"
        ));
        assert!(!allowed(
            "k8s.scale",
            "k8s:team-a/deployments/web",
            "k8s:team-b:deployments/web/scale:patch"
        ));
        assert!(allowed(
            "db.query",
            "db:analytics",
            "pg:analytics:public.orders:select"
        ));
        assert!(!allowed(
            "db.query",
            "db:analytics",
            "pg:analytics:public.orders:insert"
        ));
        assert!(!allowed(
            "db.query",
            "db:analytics",
            "pg:payments:public.orders:select"
        ));
        assert!(allowed("diag.echo", "diag:x", "diag:echo"));
        assert!(!allowed("diag.echo", "diag:x", "diag:*"));
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
