//! The hardened container configuration every job gets, and the checks that refuse what the
//! runner cannot enforce.

use bollard::models::{
    ContainerCreateBody, HostConfig, HostConfigLogConfig, Mount, MountType, ResourcesUlimits,
};
use gateway_core::labels;
use gateway_core::{JobLimits, JobSpec, NetworkAccess, RunnerError};
use std::collections::HashMap;

/// Settings shared by every container of a runner.
#[derive(Debug, Clone)]
pub(crate) struct Hardening {
    pub(crate) instance: String,
    pub(crate) user: String,
    pub(crate) tmpfs_size: String,
    /// A Docker network that enforces an egress allowlist, and the destinations it allows.
    pub(crate) allowlist_network: Option<(String, Vec<String>)>,
}

/// Whether `image` names an immutable image: a digest reference or a local image id.
pub(crate) fn is_pinned(image: &str) -> bool {
    let hex = |s: &str| s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit());
    if let Some(digest) = image.split_once("@sha256:").map(|(_, d)| d) {
        return hex(digest);
    }
    if let Some(id) = image.strip_prefix("sha256:") {
        return hex(id);
    }
    hex(image)
}

/// The network mode for a job, or why it cannot run.
pub(crate) fn network_mode(
    hardening: &Hardening,
    network: &NetworkAccess,
) -> Result<String, RunnerError> {
    match network {
        NetworkAccess::None => Ok("none".into()),
        NetworkAccess::Allowlist { destinations } => match &hardening.allowlist_network {
            Some((name, allowed)) if destinations.iter().all(|d| allowed.contains(d)) => {
                Ok(name.clone())
            }
            Some((name, _)) => Err(RunnerError::Unsupported {
                message: format!(
                    "network {name} does not enforce every requested destination ({})",
                    destinations.join(", ")
                ),
            }),
            None => Err(RunnerError::Unsupported {
                message: "no allowlist network is configured: egress cannot be restricted".into(),
            }),
        },
        // A kind of network access this runner does not know cannot be enforced.
        _ => Err(RunnerError::Unsupported {
            message: "unknown network access kind".into(),
        }),
    }
}

/// Resource limits and hardening flags, without anything job-specific but the limits.
pub(crate) fn host_config(
    hardening: &Hardening,
    limits: &JobLimits,
    network_mode: String,
    mounts: Vec<Mount>,
) -> HostConfig {
    let memory = i64::try_from(limits.memory_bytes).unwrap_or(i64::MAX);
    HostConfig {
        network_mode: Some(network_mode),
        cap_drop: Some(vec!["ALL".into()]),
        // The default seccomp profile stays: no `seccomp=unconfined` here, ever.
        security_opt: Some(vec!["no-new-privileges:true".into()]),
        readonly_rootfs: Some(true),
        tmpfs: Some(HashMap::from([(
            "/tmp".to_string(),
            format!("rw,noexec,nosuid,nodev,size={}", hardening.tmpfs_size),
        )])),
        memory: Some(memory),
        // Equal to memory: no swap, so a memory hog is OOM-killed instead of thrashing.
        memory_swap: Some(memory),
        nano_cpus: Some(i64::from(limits.cpu_millis) * 1_000_000),
        pids_limit: Some(i64::from(limits.pids)),
        ulimits: Some(vec![ResourcesUlimits {
            name: Some("nofile".into()),
            soft: Some(i64::from(limits.open_files)),
            hard: Some(i64::from(limits.open_files)),
        }]),
        // Output is read through the attach stream with a byte cap; a logging driver would
        // store all of it on the daemon's disk, unbounded.
        log_config: Some(HostConfigLogConfig {
            typ: Some("none".into()),
            config: None,
        }),
        privileged: Some(false),
        mounts: if mounts.is_empty() {
            None
        } else {
            Some(mounts)
        },
        auto_remove: Some(false),
        ..HostConfig::default()
    }
}

/// Read-only bind mounts for the spec's mounts (host paths must be absolute).
pub(crate) fn mounts(spec: &JobSpec) -> Result<Vec<Mount>, RunnerError> {
    spec.mounts
        .iter()
        .map(|m| {
            if !m.host_path.is_absolute() || !m.job_path.is_absolute() {
                return Err(RunnerError::invalid_input("mount paths must be absolute"));
            }
            Ok(Mount {
                target: Some(m.job_path.display().to_string()),
                source: Some(m.host_path.display().to_string()),
                typ: Some(MountType::BIND),
                read_only: Some(true),
                ..Mount::default()
            })
        })
        .collect()
}

/// The runner's labels plus the spec's; the runner's own keys win, so a spec cannot hide a
/// container from the reaper.
pub(crate) fn container_labels(
    hardening: &Hardening,
    spec_labels: &std::collections::BTreeMap<String, String>,
) -> HashMap<String, String> {
    let mut out: HashMap<String, String> = spec_labels
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    out.insert(labels::INSTANCE.into(), hardening.instance.clone());
    // The reaper also honours the old instance key (containers of older versions): a spec
    // must not be able to hand its container to another instance's reaper through it.
    out.remove(labels::legacy::INSTANCE);
    out
}

/// The full create body for one job run directly (not from the pool).
pub(crate) fn job_container(
    hardening: &Hardening,
    spec: &JobSpec,
    image: &str,
) -> Result<ContainerCreateBody, RunnerError> {
    let network = network_mode(hardening, &spec.network)?;
    let mounts = mounts(spec)?;
    let mut all_labels = container_labels(hardening, &spec.labels);
    all_labels
        .entry(labels::CORRELATION_ID.into())
        .or_insert_with(|| spec.correlation_id.to_string());
    let mut env = Vec::with_capacity(spec.env.len() + spec.secret_env.len());
    for (k, v) in &spec.env {
        env.push(format!("{k}={v}"));
    }
    for (k, v) in &spec.secret_env {
        let value = v
            .expose_str()
            .ok_or_else(|| RunnerError::invalid_input(format!("secret {k} is not UTF-8")))?;
        env.push(format!("{k}={value}"));
    }
    let (program, args) = spec
        .command
        .split_first()
        .ok_or_else(|| RunnerError::invalid_input("empty command"))?;
    Ok(ContainerCreateBody {
        image: Some(image.to_string()),
        // Entrypoint is the program itself: an image's ENTRYPOINT must not wrap the job.
        entrypoint: Some(vec![program.clone()]),
        cmd: Some(args.to_vec()),
        env: Some(env),
        user: Some(hardening.user.clone()),
        labels: Some(all_labels),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        attach_stdin: Some(false),
        open_stdin: Some(false),
        tty: Some(false),
        network_disabled: Some(network == "none"),
        host_config: Some(host_config(hardening, &spec.limits, network, mounts)),
        ..ContainerCreateBody::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hardening() -> Hardening {
        Hardening {
            instance: "i".into(),
            user: "65534:65534".into(),
            tmpfs_size: "16m".into(),
            allowlist_network: None,
        }
    }

    #[test]
    fn only_digests_and_ids_are_pinned() {
        let id = "a".repeat(64);
        assert!(is_pinned(&id));
        assert!(is_pinned(&format!("sha256:{id}")));
        assert!(is_pinned(&format!("registry.example/app@sha256:{id}")));
        assert!(!is_pinned("busybox:latest"));
        assert!(!is_pinned("busybox"));
        assert!(!is_pinned("sha256:abc"));
    }

    #[test]
    fn allowlist_fails_closed() {
        let list = NetworkAccess::Allowlist {
            destinations: vec!["db:5432".into()],
        };
        assert!(matches!(
            network_mode(&hardening(), &list),
            Err(RunnerError::Unsupported { .. })
        ));
        let mut h = hardening();
        h.allowlist_network = Some(("egress".into(), vec!["api:443".into()]));
        assert!(matches!(
            network_mode(&h, &list),
            Err(RunnerError::Unsupported { .. })
        ));
        h.allowlist_network = Some(("egress".into(), vec!["db:5432".into(), "api:443".into()]));
        assert_eq!(network_mode(&h, &list).unwrap(), "egress");
        assert_eq!(network_mode(&h, &NetworkAccess::None).unwrap(), "none");
    }

    #[test]
    fn spec_labels_cannot_override_the_instance() {
        let mut spec_labels = std::collections::BTreeMap::new();
        spec_labels.insert(labels::INSTANCE.to_string(), "other".to_string());
        spec_labels.insert(labels::legacy::INSTANCE.to_string(), "other".to_string());
        spec_labels.insert("team".to_string(), "payments".to_string());
        let got = container_labels(&hardening(), &spec_labels);
        assert_eq!(got[labels::INSTANCE], "i");
        assert_eq!(got.get(labels::legacy::INSTANCE), None);
        assert_eq!(got["team"], "payments");
    }
}
