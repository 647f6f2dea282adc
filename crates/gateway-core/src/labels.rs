//! The label vocabulary every runner and broker puts on what it creates (containers, Kubernetes
//! objects, …): one set of keys, so an operator can find everything the gateway made, whatever
//! the backend, with one selector.
//!
//! # Why `agent-gateway.io/`
//!
//! Kubernetes reserves unprefixed keys for the user and `kubernetes.io/`/`k8s.io/` for itself;
//! everyone else prefixes their keys with a DNS subdomain they control, so that two tools never
//! read each other's labels by accident. Docker recommends the same reverse-DNS discipline.
//! `agent-gateway.io/` is such a prefix, and a key of the form `agent-gateway.io/<name>` is a
//! valid label key for Kubernetes (prefix ≤ 253 characters, name ≤ 63) and for Docker alike.
//!
//! # What each key means
//!
//! | key | on | value |
//! | --- | --- | --- |
//! | [`INSTANCE`] | every object a runner or broker creates | the creating runner's or broker's instance id: the reapers' key, a gateway only ever deletes objects of its own instance |
//! | [`CORRELATION_ID`] | every job environment and grant object | the correlation id of the action request it serves (the id in the audit trail) |
//! | [`AGENT`] | every job environment | the agent id the request came from (Kubernetes keeps it as an annotation, agent ids are not always valid label values) |
//! | [`JOB`] | Kubernetes job objects | the runner's job id |
//! | [`GRANT`] | Kubernetes grant objects | the broker's grant id |
//! | [`POOL`] | pre-created pool containers (Docker) | `true` while the container is not bound to a job |
//! | [`EXPIRES_AT`] | Kubernetes objects (annotation) | when the object must be gone at the latest, RFC 3339 UTC: the reapers delete it after that even if its gateway crashed |
//!
//! Values: an instance id and a correlation id are always valid label values on every backend
//! (backends check the instance id at build time); other values are backend-checked.
//!
//! # Legacy keys
//!
//! Versions before this vocabulary labelled Docker containers with `agent-gateway/…` keys (no
//! DNS prefix). They are listed in [`legacy`] so that a reaper still finds what a crashed
//! gateway of an older version left behind; nothing new is labelled with them.

/// The runner or broker instance that created the object (the reapers' key).
pub const INSTANCE: &str = "agent-gateway.io/instance";
/// The correlation id of the action request the object serves.
pub const CORRELATION_ID: &str = "agent-gateway.io/correlation-id";
/// The agent the object serves.
pub const AGENT: &str = "agent-gateway.io/agent";
/// The job id of a runner's object (Kubernetes).
pub const JOB: &str = "agent-gateway.io/job";
/// The grant id of a broker's object (Kubernetes).
pub const GRANT: &str = "agent-gateway.io/grant";
/// Marks a pre-created pool container not yet bound to a job (value `true`).
pub const POOL: &str = "agent-gateway.io/pool";
/// Annotation: when the object must be gone at the latest (RFC 3339, UTC).
pub const EXPIRES_AT: &str = "agent-gateway.io/expires-at";

/// Keys of versions before this vocabulary (Docker runner), recognised by the reapers only.
pub mod legacy {
    /// The old spelling of [`super::INSTANCE`].
    pub const INSTANCE: &str = "agent-gateway/instance";
    /// The old spelling of [`super::CORRELATION_ID`].
    pub const CORRELATION_ID: &str = "agent-gateway/correlation-id";
    /// The old spelling of [`super::AGENT`].
    pub const AGENT: &str = "agent-gateway/agent";
    /// The old spelling of [`super::POOL`].
    pub const POOL: &str = "agent-gateway/pool";
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every key must be a valid Kubernetes label key under the one DNS prefix (a Docker label
    /// key is anything, so the Kubernetes rule is the binding one).
    #[test]
    fn keys_share_the_prefix_and_are_valid_kubernetes_keys() {
        for key in [
            INSTANCE,
            CORRELATION_ID,
            AGENT,
            JOB,
            GRANT,
            POOL,
            EXPIRES_AT,
        ] {
            let name = key.strip_prefix("agent-gateway.io/").unwrap_or_default();
            assert!(
                !name.is_empty()
                    && name.len() <= 63
                    && name.starts_with(|c: char| c.is_ascii_alphanumeric())
                    && name.ends_with(|c: char| c.is_ascii_alphanumeric())
                    && name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')),
                "{key}"
            );
        }
        for key in [
            legacy::INSTANCE,
            legacy::CORRELATION_ID,
            legacy::AGENT,
            legacy::POOL,
        ] {
            assert!(key.starts_with("agent-gateway/"), "{key}");
        }
    }
}
