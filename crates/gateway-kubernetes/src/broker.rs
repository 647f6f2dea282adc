//! [`KubernetesBroker`]: just-in-time RBAC grants (ServiceAccount + Role + RoleBinding +
//! TokenRequest token) that exist only while a job runs.

use crate::error::{self, deleted_or_gone};
use crate::hints::{HINT_NAMESPACE, HINT_SERVICE_ACCOUNT, HINT_TARGET_NAMESPACE};
use crate::labels;
use crate::reap::{ReapReport, reap_kind};
use crate::scope::{K8sScope, parse_grant_scopes};
use gateway_core::grant::{AccessBroker, BrokerError, Grant, GrantRequest};
use gateway_core::labels as keys;
use gateway_core::{Secret, async_trait};
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{DeleteParams, PostParams};
use kube::{Api, Client};
use std::collections::BTreeMap;
use std::fmt::Debug;
use std::time::Duration;
use time::OffsetDateTime;

/// The job environment variable holding the grant's TokenRequest token.
pub const TOKEN_ENV: &str = "GATEWAY_KUBERNETES_TOKEN";
/// The job environment variable holding the API server URL jobs use (see
/// [`KubernetesBrokerBuilder::job_server`]). Not a secret; it travels with the token in
/// `job_env` because that is what reaches the job's environment in every runner.
pub const SERVER_ENV: &str = "GATEWAY_KUBERNETES_SERVER";
/// The job environment variable holding the PEM CA bundle that verifies the API server (see
/// [`KubernetesBrokerBuilder::job_ca_pem`]). Not a secret either.
pub const CA_ENV: &str = "GATEWAY_KUBERNETES_CA";
/// The largest CA bundle accepted for [`CA_ENV`].
const MAX_CA_PEM_BYTES: usize = 64 * 1024;
/// The shortest token lifetime the TokenRequest API accepts, in seconds.
pub const MIN_TOKEN_SECONDS: u64 = 600;

const GRANT_PREFIX: &str = "agw-grant-";

/// What `grant` creates for one grant.
struct Plan<'a> {
    name: &'a str,
    target_ns: &'a str,
    rules: Vec<k8s_openapi::api::rbac::v1::PolicyRule>,
    labels: &'a BTreeMap<String, String>,
    annotations: &'a BTreeMap<String, String>,
    token_seconds: i64,
    first: &'a K8sScope,
}

/// Builds a [`KubernetesBroker`].
///
/// ```no_run
/// use gateway_core::{AccessBroker, BrokerError, GrantRequest};
/// use gateway_kubernetes::{HINT_SERVICE_ACCOUNT, KubernetesBrokerBuilder};
/// use std::time::Duration;
///
/// # async fn example(request: GrantRequest) -> Result<(), BrokerError> {
/// // KUBECONFIG, or the in-cluster service account; `KubernetesBroker::builder(client)` takes
/// // a client of your own.
/// let broker = KubernetesBrokerBuilder::from_env()
///     .await?
///     .instance("payments-gw-1")
///     // Where the grant's ServiceAccount lives: the namespace the runner's jobs run in.
///     .namespace("agent-jobs")
///     .max_ttl(Duration::from_secs(900))
///     .build()?;
/// // `request.scopes` are strings such as `k8s:prod:deployments/web:patch`.
/// let grant = broker.grant(&request).await?;
/// assert!(grant.hints.contains_key(HINT_SERVICE_ACCOUNT));
/// broker.revoke(&grant).await?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct KubernetesBrokerBuilder {
    client: Client,
    instance: String,
    namespace: String,
    max_ttl: Duration,
    audiences: Vec<String>,
    effective_timeout: Duration,
    job_server: Option<String>,
    job_ca_pem: Option<String>,
}

impl Debug for KubernetesBrokerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubernetesBrokerBuilder")
            .field("instance", &self.instance)
            .field("namespace", &self.namespace)
            .field("max_ttl", &self.max_ttl)
            .finish_non_exhaustive()
    }
}

impl KubernetesBrokerBuilder {
    /// A builder using `client`: instance `agent-gateway`, ServiceAccounts in `default`, TTLs
    /// capped at one hour, the API server's default token audiences, and up to 10 s of waiting
    /// until a new grant is effective.
    pub fn new(client: Client) -> Self {
        Self {
            client,
            instance: "agent-gateway".into(),
            namespace: "default".into(),
            max_ttl: Duration::from_secs(3600),
            audiences: Vec::new(),
            effective_timeout: Duration::from_secs(10),
            job_server: None,
            job_ca_pem: None,
        }
    }

    /// A builder with a client from the environment: `KUBECONFIG` (or `~/.kube/config`), else
    /// the in-cluster service-account configuration.
    pub async fn from_env() -> Result<Self, BrokerError> {
        let client = Client::try_default()
            .await
            .map_err(|e| error::broker("kubernetes client configuration", e))?;
        Ok(Self::new(client))
    }

    /// This broker's instance id (a label value; the reaper's key). Keep it stable across
    /// restarts so the reaper finds a crashed predecessor's grants.
    pub fn instance(mut self, instance: impl Into<String>) -> Self {
        self.instance = instance.into();
        self
    }

    /// The namespace grant ServiceAccounts are created in: the namespace jobs run in.
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }

    /// The longest grant issued, whatever the request asks.
    pub fn max_ttl(mut self, ttl: Duration) -> Self {
        self.max_ttl = ttl;
        self
    }

    /// Audiences of minted tokens (default: the API server's own).
    pub fn audiences(mut self, audiences: Vec<String>) -> Self {
        self.audiences = audiences;
        self
    }

    /// How long `grant` waits (SubjectAccessReview) until the API server's authorizer knows the
    /// new Role; zero skips the check.
    pub fn effective_timeout(mut self, timeout: Duration) -> Self {
        self.effective_timeout = timeout;
        self
    }

    /// The API server URL jobs talk to (`https://host:port`), handed to every grant's job as
    /// [`SERVER_ENV`]: the address as seen from where jobs run, which need not be the broker's
    /// own. Unset, jobs fall back to their in-cluster configuration
    /// (`KUBERNETES_SERVICE_HOST`/`_PORT`, which only routes where kube-proxy or an equivalent
    /// serves the `kubernetes` Service).
    pub fn job_server(mut self, url: impl Into<String>) -> Self {
        self.job_server = Some(url.into());
        self
    }

    /// The PEM CA bundle that verifies the API server's certificate, handed to every grant's
    /// job as [`CA_ENV`]. Unset, jobs fall back to the mounted `ca.crt` of their Pod (the
    /// `kube-root-ca.crt` ConfigMap) or fail.
    pub fn job_ca_pem(mut self, pem: impl Into<String>) -> Self {
        self.job_ca_pem = Some(pem.into());
        self
    }

    /// Validates the settings and builds the broker.
    pub fn build(self) -> Result<KubernetesBroker, BrokerError> {
        labels::check_instance_and_namespace(&self.instance, &self.namespace)
            .map_err(BrokerError::invalid_input)?;
        if self.max_ttl.is_zero() {
            return Err(BrokerError::invalid_input("max_ttl must be positive"));
        }
        if let Some(url) = &self.job_server
            && !is_server_url(url)
        {
            return Err(BrokerError::invalid_input(
                "job server must be an https:// URL of host[:port] without user, path or query",
            ));
        }
        if let Some(pem) = &self.job_ca_pem
            && !is_ca_pem(pem)
        {
            return Err(BrokerError::invalid_input(
                "job CA must be PEM text with at least one CERTIFICATE block (at most 64 KiB)",
            ));
        }
        Ok(KubernetesBroker {
            client: self.client,
            instance: self.instance,
            namespace: self.namespace,
            max_ttl: self.max_ttl,
            audiences: self.audiences,
            effective_timeout: self.effective_timeout,
            job_server: self.job_server,
            job_ca_pem: self.job_ca_pem,
        })
    }
}

/// `https://` and a host (name, IPv4 or `[IPv6]`) with an optional port, nothing else: the
/// job's script writes it into a kubeconfig, so nothing in it may need quoting.
fn is_server_url(url: &str) -> bool {
    let Some(authority) = url.strip_prefix("https://") else {
        return false;
    };
    let authority = authority.strip_suffix('/').unwrap_or(authority);
    !authority.is_empty()
        && authority.len() <= 255
        && authority
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'))
}

fn is_ca_pem(pem: &str) -> bool {
    pem.len() <= MAX_CA_PEM_BYTES
        && pem.contains("-----BEGIN CERTIFICATE-----")
        && pem.contains("-----END CERTIFICATE-----")
        && !pem.contains('\0')
}

/// Issues just-in-time Kubernetes access: per grant a ServiceAccount (in the jobs' namespace), a
/// Role with exactly the grant's scopes and a RoleBinding (in the scopes' namespace), and a
/// TokenRequest token (`job_env[`[`TOKEN_ENV`]`]`). The ServiceAccount's name is the hint
/// [`HINT_SERVICE_ACCOUNT`], which `KubernetesRunner` mounts as a projected token. If the
/// builder was given them, the grant's plain variables (`job_vars`) hold the API server URL
/// ([`SERVER_ENV`]) and its CA ([`CA_ENV`]): not secrets, so recorded with the grant; the
/// pipeline puts them in the job's environment in every runner (the local sandbox as much as a
/// Pod).
///
/// # Lifetimes shorter than ten minutes
///
/// The TokenRequest API refuses `expirationSeconds` below [`MIN_TOKEN_SECONDS`] (600). A grant
/// with a shorter TTL still gets a 600 s token, but its `not_after` is the requested TTL and
/// the token stops working earlier by other means:
/// 1. revocation: the gateway revokes every grant when its job ends (on every path), and
///    deleting the ServiceAccount invalidates every token bound to it at once;
/// 2. the expiry annotation: [`KubernetesBroker::reap`] (run periodically) deletes the objects
///    of grants past `not_after` even if the gateway that issued them crashed;
/// 3. for targets that verify gateway tokens, the HMAC layer ([`gateway_core::HmacBroker`])
///    enforces the exact expiry on every request.
///
/// The broker's own identity needs: create/delete ServiceAccounts and `serviceaccounts/token`
/// in the jobs' namespace; create/delete/list Roles and RoleBindings in target namespaces
/// (Kubernetes only lets it grant what it holds itself: RBAC escalation prevention); create
/// SubjectAccessReviews (unless `effective_timeout` is zero).
#[derive(Clone)]
pub struct KubernetesBroker {
    client: Client,
    instance: String,
    namespace: String,
    max_ttl: Duration,
    audiences: Vec<String>,
    effective_timeout: Duration,
    job_server: Option<String>,
    job_ca_pem: Option<String>,
}

impl Debug for KubernetesBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubernetesBroker")
            .field("instance", &self.instance)
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

impl KubernetesBroker {
    /// A builder using `client`.
    pub fn builder(client: Client) -> KubernetesBrokerBuilder {
        KubernetesBrokerBuilder::new(client)
    }

    /// The job environment of a grant: the token, and the connection facts if configured.
    /// Where the job finds the API server: not secret (the token is the only secret), so plain
    /// variables, recorded with the grant.
    fn job_vars(&self) -> BTreeMap<String, String> {
        let mut vars = BTreeMap::new();
        if let Some(url) = &self.job_server {
            vars.insert(SERVER_ENV.to_owned(), url.clone());
        }
        if let Some(pem) = &self.job_ca_pem {
            vars.insert(CA_ENV.to_owned(), pem.clone());
        }
        vars
    }

    /// The name of the ServiceAccount, Role and RoleBinding of grant `id`.
    fn object_name(id: &str) -> Result<String, BrokerError> {
        let ok = id.strip_prefix(GRANT_PREFIX).is_some_and(|h| {
            h.len() == 16
                && h.chars()
                    .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        });
        if ok {
            Ok(id.to_owned())
        } else {
            Err(BrokerError::invalid_input("not a grant id of this broker"))
        }
    }

    fn meta(
        &self,
        name: &str,
        ns: &str,
        labels: &BTreeMap<String, String>,
        ann: &BTreeMap<String, String>,
    ) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(ns.to_owned()),
            labels: Some(labels.clone()),
            annotations: Some(ann.clone()),
            ..Default::default()
        }
    }

    /// Deletes the RoleBinding, Role and ServiceAccount of grant `name` (404 counts as done).
    /// Returns the first failure after trying all three.
    async fn delete_objects(&self, name: &str, target_ns: &str) -> Result<(), BrokerError> {
        let dp = DeleteParams::default();
        let rb: Api<RoleBinding> = Api::namespaced(self.client.clone(), target_ns);
        let role: Api<Role> = Api::namespaced(self.client.clone(), target_ns);
        let sa: Api<ServiceAccount> = Api::namespaced(self.client.clone(), &self.namespace);
        // The binding first: from then on the token can do nothing, whatever fails next.
        let results = [
            deleted_or_gone(rb.delete(name, &dp).await.map(|_| ()))
                .map_err(|e| error::broker("deleting the grant's RoleBinding", e)),
            deleted_or_gone(role.delete(name, &dp).await.map(|_| ()))
                .map_err(|e| error::broker("deleting the grant's Role", e)),
            deleted_or_gone(sa.delete(name, &dp).await.map(|_| ()))
                .map_err(|e| error::broker("deleting the grant's ServiceAccount", e)),
        ];
        results
            .into_iter()
            .collect::<Result<Vec<()>, _>>()
            .map(|_| ())
    }

    /// Waits until the API server's authorizer allows the first scope to the ServiceAccount
    /// (RBAC is served from a cache that lags writes by a little).
    async fn wait_effective(&self, name: &str, scope: &K8sScope) -> Result<(), BrokerError> {
        if self.effective_timeout.is_zero() {
            return Ok(());
        }
        let api: Api<SubjectAccessReview> = Api::all(self.client.clone());
        let review = SubjectAccessReview {
            metadata: ObjectMeta::default(),
            spec: SubjectAccessReviewSpec {
                user: Some(format!("system:serviceaccount:{}:{name}", self.namespace)),
                groups: Some(vec![
                    "system:serviceaccounts".into(),
                    format!("system:serviceaccounts:{}", self.namespace),
                    "system:authenticated".into(),
                ]),
                resource_attributes: Some(ResourceAttributes {
                    namespace: Some(scope.namespace.clone()),
                    group: Some(scope.group.clone()),
                    resource: Some(scope.resource.clone()),
                    subresource: scope.subresource.clone(),
                    name: scope.name.clone(),
                    verb: Some(scope.verb.clone()),
                    ..Default::default()
                }),
                ..Default::default()
            },
            status: None,
        };
        let deadline = tokio::time::Instant::now() + self.effective_timeout;
        loop {
            let r = api
                .create(&PostParams::default(), &review)
                .await
                .map_err(|e| error::broker("checking that the grant is effective", e))?;
            if r.status.is_some_and(|s| s.allowed) {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(BrokerError::Timeout {
                    after: self.effective_timeout,
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn create_all(&self, plan: Plan<'_>) -> Result<String, BrokerError> {
        let Plan {
            name,
            target_ns,
            rules,
            labels,
            annotations: ann,
            token_seconds,
            first,
        } = plan;
        let pp = PostParams::default();
        let sa_api: Api<ServiceAccount> = Api::namespaced(self.client.clone(), &self.namespace);
        sa_api
            .create(
                &pp,
                &ServiceAccount {
                    metadata: self.meta(name, &self.namespace, labels, ann),
                    automount_service_account_token: Some(false),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| error::broker("creating the grant's ServiceAccount", e))?;
        Api::<Role>::namespaced(self.client.clone(), target_ns)
            .create(
                &pp,
                &Role {
                    metadata: self.meta(name, target_ns, labels, ann),
                    rules: Some(rules),
                },
            )
            .await
            .map_err(|e| error::broker("creating the grant's Role", e))?;
        Api::<RoleBinding>::namespaced(self.client.clone(), target_ns)
            .create(
                &pp,
                &RoleBinding {
                    metadata: self.meta(name, target_ns, labels, ann),
                    role_ref: RoleRef {
                        api_group: "rbac.authorization.k8s.io".into(),
                        kind: "Role".into(),
                        name: name.to_owned(),
                    },
                    subjects: Some(vec![Subject {
                        kind: "ServiceAccount".into(),
                        name: name.to_owned(),
                        namespace: Some(self.namespace.clone()),
                        api_group: None,
                    }]),
                },
            )
            .await
            .map_err(|e| error::broker("creating the grant's RoleBinding", e))?;
        let tr = sa_api
            .create_token_request(
                name,
                &pp,
                &TokenRequest {
                    metadata: ObjectMeta::default(),
                    spec: TokenRequestSpec {
                        audiences: self.audiences.clone(),
                        bound_object_ref: None,
                        expiration_seconds: Some(token_seconds),
                    },
                    status: None,
                },
            )
            .await
            .map_err(|e| error::broker("requesting the grant's token", e))?;
        let token = tr
            .status
            .map(|s| s.token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| BrokerError::internal_msg("the TokenRequest returned no token"))?;
        self.wait_effective(name, first).await?;
        Ok(token)
    }

    /// Deletes this instance's grant objects (ServiceAccounts in the jobs' namespace, Roles and
    /// RoleBindings in every namespace) whose expiry annotation has passed, even if the gateway
    /// that issued them crashed. Run it periodically. Listing Roles across namespaces needs
    /// cluster-wide `list` on roles and rolebindings.
    pub async fn reap(&self) -> Result<ReapReport, BrokerError> {
        let selector = labels::instance_selector(&self.instance);
        let now = OffsetDateTime::now_utc();
        let mut report = ReapReport::default();
        let dp = DeleteParams::default();
        // The listing helper is shared with the runner and speaks RunnerError; every failure of
        // it means the API server refused or failed, so it is this broker's Unavailable.
        let to_broker = |e: gateway_core::RunnerError| BrokerError::unavailable(e.to_string(), e);
        // Bindings first, so an expired grant loses its permissions before anything else.
        reap_kind::<RoleBinding>(&self.client, None, &selector, false, now, &dp, &mut report)
            .await
            .map_err(to_broker)?;
        reap_kind::<Role>(&self.client, None, &selector, false, now, &dp, &mut report)
            .await
            .map_err(to_broker)?;
        reap_kind::<ServiceAccount>(
            &self.client,
            Some(&self.namespace),
            &selector,
            false,
            now,
            &dp,
            &mut report,
        )
        .await
        .map_err(to_broker)?;
        Ok(report)
    }
}

#[async_trait]
impl AccessBroker for KubernetesBroker {
    async fn grant(&self, request: &GrantRequest) -> Result<Grant, BrokerError> {
        let (target_ns, scopes) =
            parse_grant_scopes(&request.scopes).map_err(|e| BrokerError::ScopeRefused {
                message: e.to_string(),
            })?;
        let ttl = request.ttl.min(self.max_ttl);
        if ttl.is_zero() {
            return Err(BrokerError::invalid_input("grant TTL must be positive"));
        }
        let name = format!("{GRANT_PREFIX}{}", labels::random_suffix());
        let issued_at = OffsetDateTime::now_utc();
        let not_after = issued_at + ttl;
        let correlation = request.correlation_id.to_string();
        let mut object_labels = labels::base(&self.instance, &correlation);
        object_labels.insert(keys::GRANT.to_owned(), name.clone());
        let annotations = BTreeMap::from([
            (
                keys::EXPIRES_AT.to_owned(),
                labels::format_expiry(not_after),
            ),
            (keys::AGENT.to_owned(), request.agent.to_string()),
        ]);
        let token_seconds = i64::try_from(ttl.as_secs().max(MIN_TOKEN_SECONDS)).unwrap_or(i64::MAX);
        let rules = scopes.iter().map(K8sScope::rule).collect();
        // `parse_grant_scopes` guarantees at least one scope.
        let Some(first) = scopes.first() else {
            return Err(BrokerError::ScopeRefused {
                message: "a grant needs at least one scope".into(),
            });
        };
        let plan = Plan {
            name: &name,
            target_ns: &target_ns,
            rules,
            labels: &object_labels,
            annotations: &annotations,
            token_seconds,
            first,
        };
        let token = match self.create_all(plan).await {
            Ok(token) => token,
            Err(e) => {
                // Roll back whatever was created; the reaper catches what this misses.
                if let Err(cleanup) = self.delete_objects(&name, &target_ns).await {
                    tracing::warn!(grant = %name, error = %cleanup, "rolling back a failed grant failed");
                }
                return Err(e);
            }
        };
        Ok(Grant {
            id: name.clone(),
            correlation_id: request.correlation_id,
            agent: request.agent.clone(),
            scopes: request.scopes.clone(),
            issued_at,
            not_after,
            hints: BTreeMap::from([
                (HINT_SERVICE_ACCOUNT.to_owned(), name),
                (HINT_NAMESPACE.to_owned(), self.namespace.clone()),
                (HINT_TARGET_NAMESPACE.to_owned(), target_ns),
            ]),
            job_env: BTreeMap::from([(TOKEN_ENV.to_owned(), Secret::from(token))]),
            job_vars: self.job_vars(),
            job_mounts: Vec::new(),
        })
    }

    async fn revoke(&self, grant: &Grant) -> Result<(), BrokerError> {
        let name = Self::object_name(&grant.id)?;
        let target_ns = match grant.hints.get(HINT_TARGET_NAMESPACE) {
            Some(ns) if labels::is_dns_label(ns) => ns.clone(),
            Some(_) => return Err(BrokerError::invalid_input("bad target namespace hint")),
            None => {
                parse_grant_scopes(&grant.scopes)
                    .map_err(|e| BrokerError::invalid_input(e.to_string()))?
                    .0
            }
        };
        self.delete_objects(&name, &target_ns).await
    }
}

#[cfg(test)]
mod tests {
    use super::{is_ca_pem, is_server_url};

    #[test]
    fn job_server_urls_need_no_quoting() {
        for ok in [
            "https://127.0.0.1:6443",
            "https://10.0.0.1",
            "https://api.example.com:443/",
            "https://[fd00::1]:6443",
        ] {
            assert!(is_server_url(ok), "{ok}");
        }
        for bad in [
            "http://127.0.0.1:6443",
            "https://",
            "https://a b",
            "https://h/path",
            "https://user@h",
            "https://h?x=1",
            "https://h'",
            "https://h\n",
            "127.0.0.1:6443",
        ] {
            assert!(!is_server_url(bad), "{bad:?}");
        }
    }

    #[test]
    fn job_ca_must_be_a_pem_certificate() {
        assert!(is_ca_pem(
            "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
        ));
        assert!(!is_ca_pem("MIIB"));
        assert!(!is_ca_pem(&"x".repeat(70 * 1024)));
    }
}
