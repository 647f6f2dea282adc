//! Label and annotation *values* on every object this crate creates, and the names it gives
//! them. The keys are the gateway's one vocabulary, [`gateway_core::labels`]; only
//! [`MANAGED_BY`], Kubernetes' own recommended label, is defined here.
//!
//! The instance label scopes the reapers: a gateway only ever deletes objects of its own
//! instance. The expiry annotation lets a reaper delete what a crashed gateway left behind.

use gateway_core::labels::{CORRELATION_ID, EXPIRES_AT, INSTANCE};
use std::collections::BTreeMap;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Marks objects created by agent-gateway (value `agent-gateway`): the Kubernetes recommended
/// label, which tools outside the gateway already understand.
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// The value of [`MANAGED_BY`].
pub const MANAGED_BY_VALUE: &str = "agent-gateway";

/// Whether `value` is a valid label value (≤ 63 characters, alphanumerics and `-_.`, starting
/// and ending alphanumeric, or empty).
pub fn is_label_value(value: &str) -> bool {
    value.is_empty()
        || (value.len() <= 63
            && value.starts_with(|c: char| c.is_ascii_alphanumeric())
            && value.ends_with(|c: char| c.is_ascii_alphanumeric())
            && value
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
}

/// Whether `value` is a DNS-1123 label (namespaces, object names of most kinds).
pub fn is_dns_label(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 63
        && value.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && value.ends_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && value
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// Checks the instance id and namespace every builder takes: both must be DNS-1123 labels (the
/// instance is used as a label value). Returns what is wrong, for the builder's own error type.
pub(crate) fn check_instance_and_namespace(
    instance: &str,
    namespace: &str,
) -> Result<(), &'static str> {
    if !is_dns_label(instance) {
        return Err("instance must be a DNS-1123 label (it is used as a label value)");
    }
    if !is_dns_label(namespace) {
        return Err("namespace must be a DNS-1123 label");
    }
    Ok(())
}

/// Whether `value` is a DNS-1123 subdomain (names of Deployments, ConfigMaps, …).
pub fn is_dns_subdomain(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 253
        && value.split('.').all(|part| {
            !part.is_empty()
                && part.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
                && part.ends_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
                && part
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        })
}

/// The label selector for everything of one instance.
pub fn instance_selector(instance: &str) -> String {
    format!("{MANAGED_BY}={MANAGED_BY_VALUE},{INSTANCE}={instance}")
}

/// The base labels of an object of `instance` serving `correlation_id`.
pub fn base(instance: &str, correlation_id: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (MANAGED_BY.to_owned(), MANAGED_BY_VALUE.to_owned()),
        (INSTANCE.to_owned(), instance.to_owned()),
        (CORRELATION_ID.to_owned(), correlation_id.to_owned()),
    ])
}

/// Formats an expiry for the [`EXPIRES_AT`] annotation.
pub fn format_expiry(at: OffsetDateTime) -> String {
    // Formatting a UTC OffsetDateTime as RFC 3339 only fails for years outside 0..=9999.
    at.format(&Rfc3339)
        .unwrap_or_else(|_| "0000-01-01T00:00:00Z".to_owned())
}

/// Whether an object with these annotations has expired at `now`. An object without a readable
/// expiry counts as expired: it cannot prove it is still needed (fail closed).
pub fn is_expired(annotations: Option<&BTreeMap<String, String>>, now: OffsetDateTime) -> bool {
    annotations
        .and_then(|a| a.get(EXPIRES_AT))
        .and_then(|v| OffsetDateTime::parse(v, &Rfc3339).ok())
        .is_none_or(|at| at <= now)
}

/// A fresh random suffix for object names (16 lowercase hex digits).
pub fn random_suffix() -> String {
    let bytes: [u8; 8] = rand::random();
    hex::encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values() {
        assert!(is_label_value("0193a0c4-7d2e-7c3f-9b1e-2f0e4c5d6a7b"));
        assert!(is_label_value(""));
        assert!(!is_label_value("-x"));
        assert!(!is_label_value("a:b"));
        assert!(!is_label_value(&"a".repeat(64)));
    }

    #[test]
    fn dns_names() {
        assert!(is_dns_label("prod-1"));
        assert!(!is_dns_label("Prod"));
        assert!(!is_dns_label("a.b"));
        assert!(is_dns_subdomain("web.v2"));
        assert!(!is_dns_subdomain("web..v2"));
        assert!(!is_dns_subdomain("*"));
    }

    #[test]
    fn expiry_round_trip_and_fail_closed() {
        let now = OffsetDateTime::now_utc();
        let later = now + time::Duration::minutes(5);
        let mut a = BTreeMap::new();
        a.insert(EXPIRES_AT.to_owned(), format_expiry(later));
        assert!(!is_expired(Some(&a), now));
        assert!(is_expired(Some(&a), later + time::Duration::seconds(1)));
        a.insert(EXPIRES_AT.to_owned(), "garbage".into());
        assert!(is_expired(Some(&a), now));
        assert!(is_expired(None, now));
    }
}
