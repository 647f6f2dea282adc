//! Removes what a crashed runner left behind: every container carrying one instance's label,
//! and nothing else (other instances and other users of the daemon are never touched).
//!
//! Containers of versions before [`gateway_core::labels`] carry the instance under the legacy
//! key [`labels::legacy::INSTANCE`]; they are reaped too, so a crash left by the previous
//! version is cleaned up by the next one.

use super::{daemon_error, remove};
use bollard::Docker;
use bollard::query_parameters::ListContainersOptionsBuilder;
use gateway_core::RunnerError;
use gateway_core::labels;
use std::collections::{BTreeSet, HashMap};

/// The instance keys a reaper honours: the current one and the legacy one.
const INSTANCE_KEYS: [&str; 2] = [labels::INSTANCE, labels::legacy::INSTANCE];

/// Force-removes every container (running or not) labelled with `instance`, under the current
/// or the legacy instance key; returns how many.
pub async fn reap_instance(docker: &Docker, instance: &str) -> Result<usize, RunnerError> {
    if instance.is_empty() {
        // An empty value would still filter on the key alone and match every instance.
        return Err(RunnerError::invalid_input("empty instance id"));
    }
    // Docker ANDs label filters, so each key is its own listing.
    let mut ids = BTreeSet::new();
    for key in INSTANCE_KEYS {
        let filters = HashMap::from([("label".to_string(), vec![format!("{key}={instance}")])]);
        let options = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        let containers = docker
            .list_containers(Some(options))
            .await
            .map_err(|e| daemon_error("listing this instance's containers", e))?;
        for container in containers {
            // Belt and braces: re-check the label on what the daemon returned.
            let ours = container
                .labels
                .as_ref()
                .and_then(|l| l.get(key))
                .is_some_and(|v| v == instance);
            if let Some(id) = container.id.filter(|_| ours) {
                ids.insert(id);
            }
        }
    }
    for id in &ids {
        remove(docker, id)
            .await
            .map_err(|e| daemon_error("removing a leftover container", e))?;
    }
    Ok(ids.len())
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
    let by_label = HashMap::from([(
        "label".to_string(),
        vec![
            format!("{}={instance}", labels::INSTANCE),
            format!("{}={correlation_id}", labels::CORRELATION_ID),
        ],
    )]);
    let bound_name = format!("agw-{correlation_id}-");
    let by_name = HashMap::from([
        (
            "label".to_string(),
            vec![format!("{}={instance}", labels::INSTANCE)],
        ),
        ("name".to_string(), vec![bound_name.clone()]),
    ]);
    let mut ids = BTreeSet::new();
    for filters in [by_label, by_name] {
        let options = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        let containers = docker
            .list_containers(Some(options))
            .await
            .map_err(|e| daemon_error("listing an abandoned job's containers", e))?;
        for container in containers {
            // Re-check what the daemon matched: the name filter is a substring match.
            let labels = container.labels.as_ref();
            let ours = labels
                .and_then(|l| l.get(labels::INSTANCE))
                .is_some_and(|v| v == instance);
            let this_job = labels
                .and_then(|l| l.get(labels::CORRELATION_ID))
                .is_some_and(|v| v == correlation_id)
                || container
                    .names
                    .iter()
                    .flatten()
                    .any(|n| n.trim_start_matches('/').starts_with(&bound_name));
            if let Some(id) = container.id.filter(|_| ours && this_job) {
                ids.insert(id);
            }
        }
    }
    for id in &ids {
        remove(docker, id)
            .await
            .map_err(|e| daemon_error("removing an abandoned job's container", e))?;
    }
    Ok(ids.len())
}
