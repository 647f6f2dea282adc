//! Removes what a crashed runner left behind: every container carrying one instance's label,
//! and nothing else (other instances and other users of the daemon are never touched).

use super::config::INSTANCE_LABEL;
use super::{daemon_error, remove};
use bollard::Docker;
use bollard::query_parameters::ListContainersOptionsBuilder;
use gateway_core::RunnerError;
use std::collections::HashMap;

/// Force-removes every container (running or not) labelled with `instance`; returns how many.
pub async fn reap_instance(docker: &Docker, instance: &str) -> Result<usize, RunnerError> {
    if instance.is_empty() {
        // An empty value would still filter on the key alone and match every instance.
        return Err(RunnerError::invalid_input("empty instance id"));
    }
    let filters = HashMap::from([(
        "label".to_string(),
        vec![format!("{INSTANCE_LABEL}={instance}")],
    )]);
    let options = ListContainersOptionsBuilder::default()
        .all(true)
        .filters(&filters)
        .build();
    let containers = docker
        .list_containers(Some(options))
        .await
        .map_err(|e| daemon_error("listing this instance's containers", e))?;
    let mut removed = 0;
    for container in containers {
        // Belt and braces: re-check the label on what the daemon returned.
        let ours = container
            .labels
            .as_ref()
            .and_then(|l| l.get(INSTANCE_LABEL))
            .is_some_and(|v| v == instance);
        let Some(id) = container.id.filter(|_| ours) else {
            continue;
        };
        remove(docker, &id)
            .await
            .map_err(|e| daemon_error("removing a leftover container", e))?;
        removed += 1;
    }
    Ok(removed)
}
