//! # gateway-kubernetes
//!
//! Kubernetes backends of agent-gateway:
//!
//! - [`KubernetesRunner`] (a [`gateway_core::Runner`]): every job is one `batch/v1` Job whose Pod
//!   meets the Pod Security Standards "restricted" profile (plus a read-only root file system, no
//!   service-account token unless a grant is mounted, resource requests and limits) behind a
//!   deny-all NetworkPolicy. The runner watches the Pod, collects bounded logs, maps the Pod's
//!   terminated state to a [`gateway_core::JobOutcome`] and deletes everything it created on
//!   every path; [`KubernetesRunner::reap`] removes what a crashed gateway left behind.
//! - [`KubernetesBroker`] (a [`gateway_core::AccessBroker`]): every grant is a ServiceAccount, a
//!   Role with exactly the grant's scopes and a RoleBinding, plus a TokenRequest token; revoking
//!   deletes the three objects, which invalidates every token bound to the ServiceAccount.
//!   [`KubernetesBroker::reap`] deletes expired grant objects even if the gateway crashed.
//!   Configured with [`KubernetesBrokerBuilder::job_server`] and
//!   [`KubernetesBrokerBuilder::job_ca_pem`], a grant also hands its job the API server's
//!   address ([`SERVER_ENV`]) and CA ([`CA_ENV`]), next to the token ([`TOKEN_ENV`]), which is
//!   what the `k8s.scale` and `k8s.rollout_restart` job scripts (`catalog/jobs/`) build their
//!   kubeconfig from.
//!
//! Both are built from a [`kube::Client`], or with `from_env()` from the in-cluster
//! configuration or `KUBECONFIG`. Scope strings are described in [`scope`].
//!
//! Everything this crate creates carries the labels in [`labels`]: the gateway instance, the
//! correlation id, and an expiry annotation the reapers use.

mod error;
pub mod labels;
pub mod scope;

mod broker;
mod gone;
mod hints;
mod pod;
mod reap;
mod runner;
mod watch;

pub use broker::{
    CA_ENV, KubernetesBroker, KubernetesBrokerBuilder, MIN_TOKEN_SECONDS, SERVER_ENV, TOKEN_ENV,
};
pub use hints::{HINT_NAMESPACE, HINT_SERVICE_ACCOUNT, HINT_TARGET_NAMESPACE};
pub use pod::{StderrCapture, TOKEN_MOUNT_PATH, restricted_profile_violations};
pub use reap::ReapReport;
pub use runner::{KubernetesRunner, KubernetesRunnerBuilder};
pub use scope::{K8sScope, ScopeError};

/// Re-exported so callers use the same Kubernetes types.
pub use k8s_openapi;
/// Re-exported so callers build clients with the same version.
pub use kube;
