//! Deleting expired objects of one instance: the sweep the runner's and the broker's reapers
//! share, and the report they return.

use crate::error::{self, deleted_or_gone};
use crate::labels;
use gateway_core::RunnerError;
use kube::api::{DeleteParams, ListParams};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use std::fmt::Debug;

/// What a reaper deleted, and what it could not delete (`kind/namespace/name` entries).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReapReport {
    /// Objects deleted.
    pub deleted: Vec<String>,
    /// Objects that could not be deleted (or must wait, e.g. a NetworkPolicy whose Pod is
    /// still terminating), with the reason.
    pub failed: Vec<String>,
}

/// Adds one delete attempt to the report.
pub(crate) fn record(
    report: &mut ReapReport,
    kind: &str,
    ns: &str,
    name: &str,
    r: Result<(), kube::Error>,
) {
    match r {
        Ok(()) => report.deleted.push(format!("{kind}/{ns}/{name}")),
        Err(e) => report.failed.push(format!("{kind}/{ns}/{name}: {e}")),
    }
}

/// Deletes the objects of one kind matching `selector` that have expired (or all).
pub(crate) async fn reap_kind<K>(
    client: &Client,
    namespace: Option<&str>,
    selector: &str,
    all: bool,
    now: time::OffsetDateTime,
    dp: &DeleteParams,
    report: &mut ReapReport,
) -> Result<(), RunnerError>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope> + Clone + DeserializeOwned + Debug,
    <K as Resource>::DynamicType: Default,
{
    let kind = K::kind(&Default::default()).into_owned();
    let api: Api<K> = match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let list = api
        .list(&ListParams::default().labels(selector))
        .await
        .map_err(|e| error::runner(&format!("listing {kind} objects to reap"), e))?;
    for obj in list.items {
        let meta = obj.meta();
        if meta.deletion_timestamp.is_some() {
            continue;
        }
        if !all && !labels::is_expired(meta.annotations.as_ref(), now) {
            continue;
        }
        let name = meta.name.clone().unwrap_or_default();
        let ns = meta.namespace.clone().unwrap_or_default();
        // Delete through the object's own namespace (a cluster-wide Api cannot address it).
        let api: Api<K> = Api::namespaced(client.clone(), &ns);
        let r = deleted_or_gone(api.delete(&name, dp).await.map(|_| ()));
        record(report, &kind, &ns, &name, r);
    }
    Ok(())
}
