//! Removes what a crashed runner left behind: every container carrying one instance's label,
//! and nothing else (other instances and other users of the daemon are never touched).
//!
//! Containers of versions before [`gateway_core::labels`] carry the instance under the legacy
//! key [`labels::legacy::INSTANCE`]; they are reaped too, so a crash left by the previous
//! version is cleaned up by the next one.

use super::{daemon_error, remove};
use bollard::Docker;
use bollard::models::ContainerSummary;
use bollard::query_parameters::ListContainersOptionsBuilder;
use gateway_core::RunnerError;
use gateway_core::labels;
use std::collections::{BTreeSet, HashMap};

/// The instance keys a reaper honours: the current one and the legacy one.
const INSTANCE_KEYS: [&str; 2] = [labels::INSTANCE, labels::legacy::INSTANCE];

/// A listing filter on labels, `key=value` each (Docker ANDs them).
fn labelled(pairs: &[(&str, &str)]) -> HashMap<String, Vec<String>> {
    let labels = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
    HashMap::from([("label".to_string(), labels)])
}

/// Whether `container` carries `value` under label `key`.
fn has_label(container: &ContainerSummary, key: &str, value: &str) -> bool {
    container
        .labels
        .as_ref()
        .and_then(|l| l.get(key))
        .is_some_and(|v| v == value)
}

/// Force-removes the containers (running or not) any of `listings` finds and `ours` accepts:
/// what the daemon returned is checked again, so a loose filter (a name is matched as a
/// substring) never removes another's container. Returns how many; `what` names them in errors.
async fn remove_listed(
    docker: &Docker,
    listings: Vec<HashMap<String, Vec<String>>>,
    ours: impl Fn(&ContainerSummary) -> bool,
    what: &str,
) -> Result<usize, RunnerError> {
    let mut ids = BTreeSet::new();
    for filters in listings {
        let options = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        let containers = docker
            .list_containers(Some(options))
            .await
            .map_err(|e| daemon_error(&format!("listing {what}"), e))?;
        for container in containers {
            if ours(&container)
                && let Some(id) = container.id
            {
                ids.insert(id);
            }
        }
    }
    for id in &ids {
        remove(docker, id)
            .await
            .map_err(|e| daemon_error(&format!("removing one of {what}"), e))?;
    }
    Ok(ids.len())
}

/// Force-removes every container (running or not) labelled with `instance`, under the current
/// or the legacy instance key; returns how many.
pub async fn reap_instance(docker: &Docker, instance: &str) -> Result<usize, RunnerError> {
    if instance.is_empty() {
        // An empty value would still filter on the key alone and match every instance.
        return Err(RunnerError::invalid_input("empty instance id"));
    }
    // Docker ANDs label filters, so each key is its own listing.
    let listings = INSTANCE_KEYS
        .iter()
        .map(|key| labelled(&[(key, instance)]))
        .collect();
    let ours = |c: &ContainerSummary| INSTANCE_KEYS.iter().any(|key| has_label(c, key, instance));
    remove_listed(
        docker,
        listings,
        ours,
        "this instance's leftover containers",
    )
    .await
}

/// Force-removes the containers of one job of `instance`: the one labelled with its
/// correlation id, or the pooled one bound to it (pooled containers are created before their
/// job, so they carry its correlation id in their name, not in a label). Returns how many.
pub async fn reap_job(
    docker: &Docker,
    instance: &str,
    correlation_id: &str,
) -> Result<usize, RunnerError> {
    if instance.is_empty() || correlation_id.is_empty() {
        return Err(RunnerError::invalid_input(
            "empty instance or correlation id",
        ));
    }
    let bound_name = format!("agw-{correlation_id}-");
    let by_label = labelled(&[
        (labels::INSTANCE, instance),
        (labels::CORRELATION_ID, correlation_id),
    ]);
    let mut by_name = labelled(&[(labels::INSTANCE, instance)]);
    by_name.insert("name".to_string(), vec![bound_name.clone()]);
    let ours = |c: &ContainerSummary| {
        let bound = c
            .names
            .iter()
            .flatten()
            .any(|n| n.trim_start_matches('/').starts_with(&bound_name));
        has_label(c, labels::INSTANCE, instance)
            && (has_label(c, labels::CORRELATION_ID, correlation_id) || bound)
    };
    remove_listed(
        docker,
        vec![by_label, by_name],
        ours,
        "an abandoned job's containers",
    )
    .await
}
