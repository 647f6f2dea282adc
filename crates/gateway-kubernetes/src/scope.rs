//! Kubernetes scope strings: what a grant may do, as RBAC rules in one namespace.
//!
//! Grammar (the first two forms are accepted and mean the same):
//!
//! ```text
//! k8s:<namespace>:<resource>[/<name>]:<verb>          e.g. k8s:prod:deployments/web:patch
//! k8s:<namespace>:<resource>:<verb>[:<name>]          e.g. k8s:prod:deployments:patch:web
//! k8s:<namespace>:<resource>/<name>/<subresource>:<verb>
//!                                                     e.g. k8s:prod:deployments/web/scale:patch
//! ```
//!
//! - `<namespace>`: a DNS-1123 label. All scopes of one grant must name the same namespace
//!   (one Role per grant).
//! - `<resource>`: a plural resource name, either one of the well-known built-in resources
//!   (`pods`, `configmaps`, `deployments`, `jobs`, … see [`well_known_group`]) or written as
//!   `<plural>.<group>` (e.g. `deployments.apps`, `widgets.example.com`). Wildcards are not
//!   supported.
//! - `<name>`: optional in the first two forms; a DNS-1123 subdomain. Without it the scope covers
//!   every object of that resource in the namespace.
//! - `<subresource>`: only in the third form, which always names the object: the URL order of
//!   the API (`…/deployments/web/scale`). Names never contain `/`, so a scope with two slashes
//!   is always resource, name, subresource, and one with a single slash is always resource and
//!   name, as before. A subresource scope covers that one object's subresource and nothing of
//!   the object itself: RBAC treats `deployments/scale` as a resource of its own, so
//!   `kubectl scale deployment/web` needs both `k8s:<ns>:deployments/web:get` and
//!   `k8s:<ns>:deployments/web/scale:patch`. Only the subresources in [`SUBRESOURCES`]
//!   (`scale`, `status`, `log`) are accepted: the others (`exec`, `attach`, `portforward`,
//!   `proxy`, `token`, `eviction`, …) run code in, connect to, or mint credentials for someone
//!   else's workload, which no least-privilege grant should carry by accident.
//! - `<verb>`: one of `get list watch create update patch delete deletecollection`. Privilege
//!   verbs (`bind`, `escalate`, `impersonate`, …) and `*` are refused.
//!
//! Each scope becomes exactly one RBAC `PolicyRule` (one group, one resource — `<resource>` or
//! `<resource>/<subresource>` — one verb, and the name if given), so the Role grants the scopes
//! and nothing else.

use crate::labels::{is_dns_label, is_dns_subdomain};
pub use gateway_core::grant::ScopeError;
use k8s_openapi::api::rbac::v1::PolicyRule;
use std::fmt;

/// The verbs a scope may carry.
pub const VERBS: &[&str] = &[
    "get",
    "list",
    "watch",
    "create",
    "update",
    "patch",
    "delete",
    "deletecollection",
];

/// The subresources a scope may name (see the module documentation for why not others).
pub const SUBRESOURCES: &[&str] = &["scale", "status", "log"];

/// The API group of a well-known built-in resource written without a group.
pub fn well_known_group(resource: &str) -> Option<&'static str> {
    Some(match resource {
        "pods"
        | "services"
        | "configmaps"
        | "secrets"
        | "endpoints"
        | "events"
        | "persistentvolumeclaims"
        | "replicationcontrollers"
        | "serviceaccounts"
        | "limitranges"
        | "resourcequotas"
        | "podtemplates" => "",
        "deployments" | "statefulsets" | "daemonsets" | "replicasets" | "controllerrevisions" => {
            "apps"
        }
        "jobs" | "cronjobs" => "batch",
        "ingresses" | "networkpolicies" => "networking.k8s.io",
        "horizontalpodautoscalers" => "autoscaling",
        "poddisruptionbudgets" => "policy",
        "leases" => "coordination.k8s.io",
        _ => return None,
    })
}

/// One parsed scope.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct K8sScope {
    /// The namespace.
    pub namespace: String,
    /// The API group (`""` for the core group).
    pub group: String,
    /// The plural resource name.
    pub resource: String,
    /// The object name, if the scope is limited to one object (always, with a subresource).
    pub name: Option<String>,
    /// The subresource (`scale`, `status`, `log`), if the scope is one object's subresource.
    pub subresource: Option<String>,
    /// The verb.
    pub verb: String,
}

impl K8sScope {
    /// Parses a scope string (see the module documentation).
    pub fn parse(scope: &str) -> Result<Self, ScopeError> {
        let err = |reason: &str| ScopeError::new(scope, reason);
        let parts: Vec<&str> = scope.split(':').collect();
        if parts.first() != Some(&"k8s") {
            return Err(err("not a k8s: scope"));
        }
        let (namespace, resource_part, verb, trailing_name) = match parts.as_slice() {
            [_, ns, res, verb] => (*ns, *res, *verb, None),
            [_, ns, res, verb, name] => (*ns, *res, *verb, Some(*name)),
            _ => {
                return Err(err(
                    "expected k8s:<namespace>:<resource>[/<name>[/<subresource>]]:<verb> or k8s:<namespace>:<resource>:<verb>:<name>",
                ));
            }
        };
        if !is_dns_label(namespace) {
            return Err(err("namespace is not a DNS-1123 label"));
        }
        let (resource_ref, slash_name, subresource) =
            match resource_part.split('/').collect::<Vec<_>>()[..] {
                [r] => (r, None, None),
                [r, n] => (r, Some(n), None),
                [r, n, sub] => (r, Some(n), Some(sub)),
                _ => {
                    return Err(err(
                        "too many '/': expected <resource>[/<name>[/<subresource>]]",
                    ));
                }
            };
        let name = match (slash_name, trailing_name) {
            (Some(_), Some(_)) => return Err(err("the object name is given twice")),
            (n, None) | (None, n) => n,
        };
        if let Some(n) = name
            && !is_dns_subdomain(n)
        {
            return Err(err("object name is not a DNS-1123 subdomain"));
        }
        if let Some(sub) = subresource
            && !SUBRESOURCES.contains(&sub)
        {
            return Err(err(
                "subresource must be one of scale status log (others are refused)",
            ));
        }
        let (resource, group) = match resource_ref.split_once('.') {
            Some((plural, group)) => {
                if !is_dns_subdomain(group) {
                    return Err(err("API group is not a DNS-1123 subdomain"));
                }
                (plural, group.to_owned())
            }
            None => match well_known_group(resource_ref) {
                Some(g) => (resource_ref, g.to_owned()),
                None => {
                    return Err(err(
                        "unknown resource; write it as <plural>.<group> (e.g. widgets.example.com)",
                    ));
                }
            },
        };
        if resource.is_empty()
            || !resource
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        {
            return Err(err("resource must be a lowercase plural name"));
        }
        if !VERBS.contains(&verb) {
            return Err(err(
                "verb must be one of get list watch create update patch delete deletecollection",
            ));
        }
        Ok(Self {
            namespace: namespace.to_owned(),
            group,
            resource: resource.to_owned(),
            name: name.map(str::to_owned),
            subresource: subresource.map(str::to_owned),
            verb: verb.to_owned(),
        })
    }

    /// The RBAC resource: `<resource>` or `<resource>/<subresource>`.
    pub fn rbac_resource(&self) -> String {
        match &self.subresource {
            Some(sub) => format!("{}/{sub}", self.resource),
            None => self.resource.clone(),
        }
    }

    /// The RBAC rule granting exactly this scope.
    pub fn rule(&self) -> PolicyRule {
        PolicyRule {
            api_groups: Some(vec![self.group.clone()]),
            resources: Some(vec![self.rbac_resource()]),
            resource_names: self.name.clone().map(|n| vec![n]),
            verbs: vec![self.verb.clone()],
            non_resource_urls: None,
        }
    }
}

impl fmt::Display for K8sScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let resource = if self.group.is_empty() {
            self.resource.clone()
        } else {
            format!("{}.{}", self.resource, self.group)
        };
        match (&self.name, &self.subresource) {
            (Some(n), Some(sub)) => {
                write!(
                    f,
                    "k8s:{}:{resource}/{n}/{sub}:{}",
                    self.namespace, self.verb
                )
            }
            (Some(n), None) => write!(f, "k8s:{}:{resource}/{n}:{}", self.namespace, self.verb),
            // `parse` never yields a subresource without a name.
            (None, _) => write!(f, "k8s:{}:{resource}:{}", self.namespace, self.verb),
        }
    }
}

/// Parses all scopes of one grant: at least one, all in one namespace. Returns the namespace and
/// the parsed scopes, in order.
pub fn parse_grant_scopes(scopes: &[String]) -> Result<(String, Vec<K8sScope>), ScopeError> {
    let mut parsed = Vec::with_capacity(scopes.len());
    for s in scopes {
        parsed.push(K8sScope::parse(s)?);
    }
    let Some(first) = parsed.first() else {
        return Err(ScopeError::new("", "a grant needs at least one scope"));
    };
    let namespace = first.namespace.clone();
    if let Some(other) = parsed.iter().find(|s| s.namespace != namespace) {
        return Err(ScopeError::new(
            &other.to_string(),
            format!("all scopes of a grant must be in one namespace ({namespace})"),
        ));
    }
    Ok((namespace, parsed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_policy_form() {
        let s = K8sScope::parse("k8s:prod:deployments/web:patch").unwrap();
        assert_eq!(s.namespace, "prod");
        assert_eq!(s.group, "apps");
        assert_eq!(s.resource, "deployments");
        assert_eq!(s.name.as_deref(), Some("web"));
        assert_eq!(s.verb, "patch");
        assert_eq!(
            s,
            K8sScope::parse("k8s:prod:deployments:patch:web").unwrap()
        );
        assert_eq!(
            s,
            K8sScope::parse("k8s:prod:deployments.apps/web:patch").unwrap()
        );
        let rule = s.rule();
        assert_eq!(rule.api_groups, Some(vec!["apps".to_owned()]));
        assert_eq!(rule.resource_names, Some(vec!["web".to_owned()]));
        assert_eq!(rule.verbs, vec!["patch".to_owned()]);
    }

    #[test]
    fn core_group_and_custom_resources() {
        let s = K8sScope::parse("k8s:team-a:configmaps:get").unwrap();
        assert_eq!(s.group, "");
        assert_eq!(s.name, None);
        assert_eq!(s.rule().resource_names, None);
        let c = K8sScope::parse("k8s:team-a:widgets.example.com:list").unwrap();
        assert_eq!(c.group, "example.com");
        assert_eq!(c.resource, "widgets");
    }

    #[test]
    fn refuses_wildcards_privilege_verbs_and_junk() {
        for bad in [
            "k8s:prod:deployments/web:*",
            "k8s:prod:*:get",
            "k8s:*:pods:get",
            "k8s:prod:roles.rbac.authorization.k8s.io:escalate",
            "k8s:prod:rolebindings.rbac.authorization.k8s.io:bind",
            "k8s:prod:serviceaccounts:impersonate",
            "k8s:prod:deployments/web:patch:web",
            "k8s:prod:widgets:get",
            "k8s:Prod:pods:get",
            "k8s:prod:pods",
            "aws:prod:pods:get",
            "k8s:prod:pods:get:a:b",
            "k8s:prod:pods/WEB:get",
            "",
        ] {
            assert!(K8sScope::parse(bad).is_err(), "accepted {bad:?}");
        }
    }

    #[test]
    fn subresources_name_the_object_and_become_their_own_rbac_resource() {
        let s = K8sScope::parse("k8s:prod:deployments/web/scale:patch").unwrap();
        assert_eq!(s.group, "apps");
        assert_eq!(s.resource, "deployments");
        assert_eq!(s.name.as_deref(), Some("web"));
        assert_eq!(s.subresource.as_deref(), Some("scale"));
        assert_eq!(s.verb, "patch");
        let rule = s.rule();
        assert_eq!(rule.api_groups, Some(vec!["apps".to_owned()]));
        assert_eq!(rule.resources, Some(vec!["deployments/scale".to_owned()]));
        assert_eq!(rule.resource_names, Some(vec!["web".to_owned()]));
        assert_eq!(rule.verbs, vec!["patch".to_owned()]);
        // Display round-trips, with the group spelled out or not.
        assert_eq!(s.to_string(), "k8s:prod:deployments.apps/web/scale:patch");
        assert_eq!(K8sScope::parse(&s.to_string()).unwrap(), s);
        assert_eq!(
            K8sScope::parse("k8s:prod:deployments.apps/web/scale:patch").unwrap(),
            s
        );
        let status = K8sScope::parse("k8s:prod:widgets.example.com/w1/status:update").unwrap();
        assert_eq!(
            status.rule().resources,
            Some(vec!["widgets/status".to_owned()])
        );
        let log = K8sScope::parse("k8s:prod:pods/p-1/log:get").unwrap();
        assert_eq!(log.group, "");
        assert_eq!(log.rbac_resource(), "pods/log");
    }

    #[test]
    fn the_existing_forms_keep_their_meaning() {
        // One slash is still resource/name: a Deployment called `scale`, not the subresource.
        let named_scale = K8sScope::parse("k8s:prod:deployments/scale:patch").unwrap();
        assert_eq!(named_scale.name.as_deref(), Some("scale"));
        assert_eq!(named_scale.subresource, None);
        assert_eq!(
            named_scale.rule().resources,
            Some(vec!["deployments".to_owned()])
        );
        assert_eq!(
            named_scale,
            K8sScope::parse("k8s:prod:deployments:patch:scale").unwrap()
        );
        let s = K8sScope::parse("k8s:prod:deployments/web:get").unwrap();
        assert_eq!(s.subresource, None);
        assert_eq!(s.to_string(), "k8s:prod:deployments.apps/web:get");
    }

    #[test]
    fn refuses_bad_subresource_scopes() {
        for bad in [
            // No wildcards, no privilege verbs, with a subresource either.
            "k8s:prod:deployments/web/scale:*",
            "k8s:prod:deployments/web/*:patch",
            "k8s:prod:deployments/*/scale:patch",
            "k8s:prod:deployments/web/scale:escalate",
            // Subresources that run code in, connect to or mint credentials for a workload.
            "k8s:prod:pods/p/exec:create",
            "k8s:prod:pods/p/attach:create",
            "k8s:prod:pods/p/portforward:create",
            "k8s:prod:pods/p/proxy:get",
            "k8s:prod:serviceaccounts/sa/token:create",
            "k8s:prod:pods/p/eviction:create",
            // A subresource always names its object; the name is not given twice.
            "k8s:prod:deployments//scale:patch",
            "k8s:prod:deployments/web/scale:patch:web",
            "k8s:prod:deployments/web/:patch",
            "k8s:prod:deployments/web/scale/x:patch",
            "k8s:prod:deployments/web/Scale:patch",
            "k8s:prod:deployments/web/scale",
        ] {
            assert!(K8sScope::parse(bad).is_err(), "accepted {bad:?}");
        }
    }

    #[test]
    fn one_namespace_per_grant() {
        let ok = parse_grant_scopes(&["k8s:a:pods:get".into(), "k8s:a:pods:list".into()]).unwrap();
        assert_eq!(ok.0, "a");
        assert_eq!(ok.1.len(), 2);
        assert!(parse_grant_scopes(&["k8s:a:pods:get".into(), "k8s:b:pods:get".into()]).is_err());
        assert!(parse_grant_scopes(&[]).is_err());
    }
}
