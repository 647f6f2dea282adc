//! The grant hints the broker hands to the runner: the only contract between the two, kept
//! here so that neither depends on the other.

/// Grant hint: the ServiceAccount a runner mounts into the job's Pod.
pub const HINT_SERVICE_ACCOUNT: &str = "kubernetes.service_account";
/// Grant hint: the namespace of that ServiceAccount (where the job must run).
pub const HINT_NAMESPACE: &str = "kubernetes.namespace";
/// Grant hint: the namespace the grant's Role applies to.
pub const HINT_TARGET_NAMESPACE: &str = "kubernetes.target_namespace";
