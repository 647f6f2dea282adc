//! The hardened Job, Pod, Secret and NetworkPolicy objects of one job, and the Pod Security
//! Standards "restricted" checks they are tested against.
//!
//! Pure construction: nothing here talks to the API server.

use crate::hints::{HINT_NAMESPACE, HINT_SERVICE_ACCOUNT};
use crate::labels;
use gateway_core::NetworkAccess;
use gateway_core::labels as keys;
use gateway_core::runner::JobSpec;
use k8s_openapi::ByteString;
use k8s_openapi::api::batch::v1::{Job, JobSpec as K8sJobSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapProjection, Container, EmptyDirVolumeSource, EnvVar, EnvVarSource,
    KeyToPath, PodSecurityContext, PodSpec, PodTemplateSpec, ProjectedVolumeSource,
    ResourceRequirements, SeccompProfile, Secret, SecretKeySelector, SecurityContext,
    ServiceAccountTokenProjection, Volume, VolumeMount, VolumeProjection,
};
use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyPeer, NetworkPolicyPort,
    NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::collections::BTreeMap;
use std::net::IpAddr;

/// The name of the job's container.
pub(crate) const CONTAINER: &str = "job";
/// Where a mounted grant's service-account token appears (the standard in-cluster path).
pub const TOKEN_MOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// The kubelet keeps at most this many bytes of a termination message.
pub(crate) const TERMINATION_MESSAGE_LIMIT: usize = 4096;
/// The lifetime of the projected token of a mounted grant (the API's minimum).
const PROJECTED_TOKEN_SECONDS: i64 = 600;

/// How the job's stderr is kept apart from its stdout. The Pod log API of the Kubernetes
/// versions this supports merges both streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum StderrCapture {
    /// The command runs under `/bin/sh` (which the image must have), which points stderr at the
    /// container's termination-message file and `exec`s the command unchanged (arguments are
    /// passed as positional parameters, never re-parsed). stdout comes from the Pod log; stderr
    /// is the termination message, which the kubelet caps at 4096 bytes.
    #[default]
    TerminationMessage,
    /// The command runs as given; stdout and stderr are interleaved in `stdout`, `stderr` stays
    /// empty. For images without a shell.
    Merged,
}

/// Everything [`build`] needs besides the job spec.
#[derive(Debug, Clone)]
pub(crate) struct PodSettings {
    pub instance: String,
    pub namespace: String,
    pub image: String,
    pub image_pull_policy: String,
    pub run_as_user: i64,
    pub stderr: StderrCapture,
    pub ttl_after_finished: i32,
    pub grace_seconds: i64,
    pub tmp_size_bytes: u64,
    pub expiry_slack_seconds: i64,
}

/// The objects of one job.
#[derive(Debug, Clone)]
pub(crate) struct JobObjects {
    pub job: Job,
    pub secret: Option<Secret>,
    pub network_policy: NetworkPolicy,
}

/// Builds the objects of job `id`. Fails (as an invalid-input or unsupported message) if the
/// spec asks for something the runner cannot give safely.
pub(crate) fn build(
    id: &str,
    spec: &JobSpec,
    settings: &PodSettings,
    now: time::OffsetDateTime,
) -> Result<JobObjects, BuildError> {
    if spec.command.is_empty() || spec.command[0].is_empty() {
        return Err(BuildError::Invalid("empty command".into()));
    }
    if !spec.mounts.is_empty() {
        return Err(BuildError::Unsupported(
            "host mounts (hostPath volumes are forbidden by the restricted profile)".into(),
        ));
    }
    for key in spec.env.keys().chain(spec.secret_env.keys()) {
        if !is_env_name(key) {
            return Err(BuildError::Invalid(format!(
                "environment variable name {:?} is not [A-Za-z_][A-Za-z0-9_]*",
                key.chars().take(64).collect::<String>()
            )));
        }
    }
    let correlation = spec.correlation_id.to_string();
    let mut labels = labels::base(&settings.instance, &correlation);
    labels.insert(keys::JOB.to_owned(), id.to_owned());
    // Caller labels may add to but never replace the runner's own.
    let mut pod_labels = BTreeMap::new();
    for (k, v) in &spec.labels {
        // The agent id is kept as an annotation (from `spec.agent`, below): agent ids such as
        // `agent:a` are not valid label values, and refusing them would refuse every agent.
        if k == keys::AGENT {
            continue;
        }
        if !labels::is_label_value(v) || k.is_empty() || k.len() > 253 {
            return Err(BuildError::Invalid(format!(
                "label {:?} is not a valid Kubernetes label",
                k.chars().take(64).collect::<String>()
            )));
        }
        pod_labels.insert(k.clone(), v.clone());
    }
    pod_labels.extend(labels.clone());

    let timeout_secs = i64::try_from(spec.limits.timeout.as_millis().div_ceil(1000))
        .unwrap_or(i64::MAX)
        .max(1);
    let expires =
        now + time::Duration::seconds(timeout_secs.saturating_add(settings.expiry_slack_seconds));
    let annotations = BTreeMap::from([
        (keys::EXPIRES_AT.to_owned(), labels::format_expiry(expires)),
        (keys::AGENT.to_owned(), spec.agent.to_string()),
    ]);
    let meta = |name: String| ObjectMeta {
        name: Some(name),
        namespace: Some(settings.namespace.clone()),
        labels: Some(labels.clone()),
        annotations: Some(annotations.clone()),
        ..Default::default()
    };

    let secret_name = format!("{id}-env");
    let secret = (!spec.secret_env.is_empty()).then(|| Secret {
        metadata: meta(secret_name.clone()),
        type_: Some("Opaque".into()),
        immutable: Some(true),
        data: Some(
            spec.secret_env
                .iter()
                .map(|(k, v)| (k.clone(), ByteString(v.expose().to_vec())))
                .collect(),
        ),
        ..Default::default()
    });

    let mut env: Vec<EnvVar> = spec
        .env
        .iter()
        .map(|(k, v)| EnvVar {
            name: k.clone(),
            value: Some(v.clone()),
            ..Default::default()
        })
        .collect();
    env.extend(spec.secret_env.keys().map(|k| EnvVar {
        name: k.clone(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret_name.clone(),
                key: k.clone(),
                optional: Some(false),
            }),
            ..Default::default()
        }),
        ..Default::default()
    }));

    // Kubernetes expands `$(VAR)` and turns `$$` into `$` in a container's command and args;
    // every `$` is doubled so that the argv reaches the container exactly as given.
    let argv: Vec<String> = spec.command.iter().map(|a| escape_expansion(a)).collect();
    let (command, args) = match settings.stderr {
        StderrCapture::TerminationMessage => (
            vec![
                "/bin/sh".to_owned(),
                "-c".to_owned(),
                // stderr goes to the termination-message file the kubelet reads back; "$@" is
                // the job's own argv, exec'd as is.
                escape_expansion("exec 2>/dev/termination-log; exec \"$@\""),
                "agent-gateway-job".to_owned(),
            ],
            argv,
        ),
        StderrCapture::Merged => (argv, Vec::new()),
    };

    let mut volumes = vec![Volume {
        name: "tmp".into(),
        empty_dir: Some(EmptyDirVolumeSource {
            size_limit: Some(Quantity(settings.tmp_size_bytes.to_string())),
            ..Default::default()
        }),
        ..Default::default()
    }];
    let mut mounts = vec![VolumeMount {
        name: "tmp".into(),
        mount_path: "/tmp".into(),
        ..Default::default()
    }];
    let service_account = spec.grant_hints.get(HINT_SERVICE_ACCOUNT).cloned();
    if let Some(sa) = &service_account {
        if !labels::is_dns_subdomain(sa) {
            return Err(BuildError::Invalid(
                "grant service account is not a valid name".into(),
            ));
        }
        if let Some(ns) = spec.grant_hints.get(HINT_NAMESPACE)
            && ns != &settings.namespace
        {
            return Err(BuildError::Invalid(format!(
                "the grant's service account lives in namespace {ns:?}, jobs run in {:?}",
                settings.namespace
            )));
        }
        // An explicit, short-lived projected token instead of the automounted one.
        volumes.push(Volume {
            name: "grant-token".into(),
            projected: Some(ProjectedVolumeSource {
                default_mode: Some(0o444),
                sources: Some(vec![
                    VolumeProjection {
                        service_account_token: Some(ServiceAccountTokenProjection {
                            path: "token".into(),
                            expiration_seconds: Some(PROJECTED_TOKEN_SECONDS),
                            audience: None,
                        }),
                        ..Default::default()
                    },
                    VolumeProjection {
                        config_map: Some(ConfigMapProjection {
                            name: "kube-root-ca.crt".into(),
                            items: Some(vec![KeyToPath {
                                key: "ca.crt".into(),
                                path: "ca.crt".into(),
                                mode: None,
                            }]),
                            optional: Some(true),
                        }),
                        ..Default::default()
                    },
                ]),
            }),
            ..Default::default()
        });
        mounts.push(VolumeMount {
            name: "grant-token".into(),
            mount_path: TOKEN_MOUNT_PATH.into(),
            read_only: Some(true),
            ..Default::default()
        });
    }

    let cpu = Quantity(format!("{}m", spec.limits.cpu_millis.max(1)));
    let memory = Quantity(spec.limits.memory_bytes.max(4 * 1024 * 1024).to_string());
    let resources = BTreeMap::from([("cpu".to_owned(), cpu), ("memory".to_owned(), memory)]);

    let container = Container {
        name: CONTAINER.into(),
        image: Some(settings.image.clone()),
        image_pull_policy: Some(settings.image_pull_policy.clone()),
        command: Some(command),
        args: (!args.is_empty()).then_some(args),
        env: (!env.is_empty()).then_some(env),
        resources: Some(ResourceRequirements {
            requests: Some(resources.clone()),
            limits: Some(resources),
            ..Default::default()
        }),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            privileged: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            run_as_user: Some(settings.run_as_user),
            run_as_group: Some(settings.run_as_user),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                add: None,
            }),
            seccomp_profile: Some(runtime_default()),
            ..Default::default()
        }),
        termination_message_path: Some("/dev/termination-log".into()),
        termination_message_policy: Some("File".into()),
        volume_mounts: Some(mounts),
        ..Default::default()
    };

    let pod = PodSpec {
        containers: vec![container],
        restart_policy: Some("Never".into()),
        automount_service_account_token: Some(false),
        service_account_name: service_account,
        enable_service_links: Some(false),
        host_network: Some(false),
        host_pid: Some(false),
        host_ipc: Some(false),
        termination_grace_period_seconds: Some(settings.grace_seconds),
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(settings.run_as_user),
            run_as_group: Some(settings.run_as_user),
            fs_group: Some(settings.run_as_user),
            seccomp_profile: Some(runtime_default()),
            ..Default::default()
        }),
        volumes: Some(volumes),
        ..Default::default()
    };

    let job = Job {
        metadata: meta(id.to_owned()),
        spec: Some(K8sJobSpec {
            backoff_limit: Some(0),
            completions: Some(1),
            parallelism: Some(1),
            active_deadline_seconds: Some(timeout_secs),
            ttl_seconds_after_finished: Some(settings.ttl_after_finished),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations: Some(annotations.clone()),
                    ..Default::default()
                }),
                spec: Some(pod),
            },
            ..Default::default()
        }),
        status: None,
    };

    let network_policy = NetworkPolicy {
        metadata: meta(format!("{id}-net")),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(BTreeMap::from([(keys::JOB.to_owned(), id.to_owned())])),
                match_expressions: None,
            }),
            policy_types: Some(vec!["Ingress".into(), "Egress".into()]),
            ingress: None,
            egress: egress_rules(&spec.network)?,
        }),
    };

    Ok(JobObjects {
        job,
        secret,
        network_policy,
    })
}

/// Why the objects could not be built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum BuildError {
    Invalid(String),
    Unsupported(String),
}

fn runtime_default() -> SeccompProfile {
    SeccompProfile {
        type_: "RuntimeDefault".into(),
        localhost_profile: None,
    }
}

/// `arg` as a container command or argument that Kubernetes' `$(VAR)` expansion leaves as
/// `arg`: every `$` doubled (`$$` is its escape for a literal `$`).
pub(crate) fn escape_expansion(arg: &str) -> String {
    arg.replace('$', "$$")
}

fn is_env_name(name: &str) -> bool {
    name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Egress rules for the network obligation: none (deny all) by default; for an allowlist, one
/// rule per destination, which must be an IP address or CIDR with an optional `:port` (TCP).
/// Host names cannot be expressed in a NetworkPolicy, so they are refused (fail closed).
fn egress_rules(
    network: &NetworkAccess,
) -> Result<Option<Vec<NetworkPolicyEgressRule>>, BuildError> {
    let destinations = match network {
        NetworkAccess::None => return Ok(None),
        NetworkAccess::Allowlist { destinations } => destinations,
        #[allow(unreachable_patterns)]
        // NetworkAccess is non_exhaustive: unknown modes fail closed.
        _ => {
            return Err(BuildError::Unsupported(
                "unknown network access mode".into(),
            ));
        }
    };
    let mut rules = Vec::new();
    for d in destinations {
        let (cidr, port) = parse_destination(d).ok_or_else(|| {
            BuildError::Unsupported(format!(
                "network destination {:?}: only IP addresses or CIDRs (optionally with :port) can be enforced by a NetworkPolicy",
                d.chars().take(100).collect::<String>()
            ))
        })?;
        rules.push(NetworkPolicyEgressRule {
            to: Some(vec![NetworkPolicyPeer {
                ip_block: Some(IPBlock { cidr, except: None }),
                ..Default::default()
            }]),
            ports: port.map(|p| {
                vec![NetworkPolicyPort {
                    port: Some(IntOrString::Int(i32::from(p))),
                    protocol: Some("TCP".into()),
                    end_port: None,
                }]
            }),
        });
    }
    Ok(Some(rules))
}

fn parse_destination(d: &str) -> Option<(String, Option<u16>)> {
    // `[v6]:port`, `v4:port`, `cidr:port` or without a port.
    let (addr, port) = if let Some(rest) = d.strip_prefix('[') {
        let (a, p) = rest.split_once(']')?;
        let port = match p.strip_prefix(':') {
            Some(p) => Some(p.parse::<u16>().ok().filter(|p| *p > 0)?),
            None if p.is_empty() => None,
            None => return None,
        };
        (a, port)
    } else if d.matches(':').count() == 1 {
        let (a, p) = d.split_once(':')?;
        (a, Some(p.parse::<u16>().ok().filter(|p| *p > 0)?))
    } else {
        (d, None)
    };
    let (ip, prefix) = match addr.split_once('/') {
        Some((ip, len)) => (ip.parse::<IpAddr>().ok()?, Some(len.parse::<u8>().ok()?)),
        None => (addr.parse::<IpAddr>().ok()?, None),
    };
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let prefix = prefix.unwrap_or(max);
    (prefix <= max).then(|| (format!("{ip}/{prefix}"), port))
}

/// Checks a Pod spec against the Pod Security Standards "restricted" profile (baseline checks
/// included) and returns every violation found; empty means the Pod passes. Implemented here
/// because the Kubernetes versions this is tested on predate the PodSecurity admission plugin.
pub fn restricted_profile_violations(pod: &PodSpec) -> Vec<String> {
    let mut v = Vec::new();
    if pod.host_network == Some(true) || pod.host_pid == Some(true) || pod.host_ipc == Some(true) {
        v.push("host namespaces".to_owned());
    }
    let psc = pod.security_context.clone().unwrap_or_default();
    if psc.run_as_user == Some(0) {
        v.push("pod runAsUser 0".to_owned());
    }
    if psc.sysctls.as_ref().is_some_and(|s| !s.is_empty()) {
        v.push("sysctls set".to_owned());
    }
    for vol in pod.volumes.iter().flatten() {
        let allowed = vol.config_map.is_some()
            || vol.csi.is_some()
            || vol.downward_api.is_some()
            || vol.empty_dir.is_some()
            || vol.ephemeral.is_some()
            || vol.persistent_volume_claim.is_some()
            || vol.projected.is_some()
            || vol.secret.is_some();
        if !allowed {
            v.push(format!("volume {} has a forbidden type", vol.name));
        }
    }
    let pod_seccomp_ok = psc
        .seccomp_profile
        .as_ref()
        .is_some_and(|s| s.type_ == "RuntimeDefault" || s.type_ == "Localhost");
    let all = pod
        .containers
        .iter()
        .chain(pod.init_containers.iter().flatten());
    for c in all {
        let sc = c.security_context.clone().unwrap_or_default();
        let name = &c.name;
        if sc.privileged == Some(true) {
            v.push(format!("{name}: privileged"));
        }
        if sc.allow_privilege_escalation != Some(false) {
            v.push(format!("{name}: allowPrivilegeEscalation is not false"));
        }
        let non_root = sc.run_as_non_root.or(psc.run_as_non_root);
        if non_root != Some(true) {
            v.push(format!("{name}: runAsNonRoot is not true"));
        }
        if sc.run_as_user == Some(0) {
            v.push(format!("{name}: runAsUser 0"));
        }
        let caps = sc.capabilities.clone().unwrap_or_default();
        if !caps.drop.iter().flatten().any(|d| d == "ALL") {
            v.push(format!("{name}: capabilities do not drop ALL"));
        }
        if caps.add.iter().flatten().any(|a| a != "NET_BIND_SERVICE") {
            v.push(format!("{name}: adds capabilities beyond NET_BIND_SERVICE"));
        }
        let seccomp_ok = match &sc.seccomp_profile {
            Some(s) => s.type_ == "RuntimeDefault" || s.type_ == "Localhost",
            None => pod_seccomp_ok,
        };
        if !seccomp_ok {
            v.push(format!(
                "{name}: seccomp profile is not RuntimeDefault or Localhost"
            ));
        }
        if c.ports
            .iter()
            .flatten()
            .any(|p| p.host_port.is_some_and(|h| h != 0))
        {
            v.push(format!("{name}: host ports"));
        }
        if sc.proc_mount.as_deref().is_some_and(|p| p != "Default") {
            v.push(format!("{name}: unmasked /proc"));
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use gateway_core::Secret as CoreSecret;
    use gateway_core::ids::{AgentId, RequestId};
    use std::time::Duration;

    /// [`build`] with the test settings, now.
    fn build_now(id: &str, spec: &JobSpec) -> Result<JobObjects, BuildError> {
        build(id, spec, &settings(), time::OffsetDateTime::now_utc())
    }

    fn settings() -> PodSettings {
        PodSettings {
            instance: "test".into(),
            namespace: "jobs".into(),
            image: "busybox:1".into(),
            image_pull_policy: "IfNotPresent".into(),
            run_as_user: 65532,
            stderr: StderrCapture::TerminationMessage,
            ttl_after_finished: 300,
            grace_seconds: 1,
            tmp_size_bytes: 1 << 20,
            expiry_slack_seconds: 60,
        }
    }

    fn job_spec() -> JobSpec {
        let mut s = JobSpec::new(
            RequestId::new(),
            AgentId::new("agent:test").unwrap(),
            vec!["/bin/echo".into(), "hi; rm -rf /".into()],
        );
        s.limits.timeout = Duration::from_millis(1500);
        s
    }

    #[test]
    fn the_agent_label_the_gateway_sets_becomes_an_annotation() {
        let mut spec = job_spec();
        spec.labels
            .insert(keys::AGENT.to_owned(), spec.agent.to_string());
        let o = build_now("agw-job-1", &spec).unwrap();
        let meta = &o.job.metadata;
        assert!(!meta.labels.as_ref().unwrap().contains_key(keys::AGENT));
        assert_eq!(
            meta.annotations.as_ref().unwrap()[keys::AGENT],
            "agent:test"
        );
        // Other labels are still checked.
        spec.labels.insert("team".to_owned(), "a:b".to_owned());
        assert!(build_now("agw-job-1", &spec).is_err());
    }

    #[test]
    fn dollars_are_escaped_from_kubernetes_variable_expansion() {
        let mut spec = job_spec();
        spec.env.insert("HOME".into(), "/tmp".into());
        spec.command = vec![
            "/bin/sh".into(),
            "-c".into(),
            "echo $$ $(HOME) $HOME $$(x)".into(),
        ];
        let o = build_now("agw-job-1", &spec).unwrap();
        let c = &o
            .job
            .spec
            .as_ref()
            .unwrap()
            .template
            .spec
            .as_ref()
            .unwrap()
            .containers[0];
        assert_eq!(
            c.args.as_ref().unwrap(),
            &vec![
                "/bin/sh".to_owned(),
                "-c".to_owned(),
                "echo $$$$ $$(HOME) $$HOME $$$$(x)".to_owned()
            ]
        );
        // The runner's own wrapper too: `$$@` reaches the shell as `$@`.
        assert_eq!(
            c.command.as_ref().unwrap()[2],
            "exec 2>/dev/termination-log; exec \"$$@\""
        );
        let mut merged = settings();
        merged.stderr = StderrCapture::Merged;
        let o = build("agw-job-1", &spec, &merged, time::OffsetDateTime::now_utc()).unwrap();
        let c = &o
            .job
            .spec
            .as_ref()
            .unwrap()
            .template
            .spec
            .as_ref()
            .unwrap()
            .containers[0];
        assert_eq!(
            c.command.as_ref().unwrap()[2],
            "echo $$$$ $$(HOME) $$HOME $$$$(x)"
        );
    }

    #[test]
    fn hardened_job_shape() {
        let spec = job_spec();
        let o = build_now("agw-job-1", &spec).unwrap();
        let js = o.job.spec.as_ref().unwrap();
        assert_eq!(js.backoff_limit, Some(0));
        assert_eq!(js.active_deadline_seconds, Some(2), "timeout rounds up");
        assert_eq!(js.ttl_seconds_after_finished, Some(300));
        let pod = js.template.spec.as_ref().unwrap();
        assert_eq!(restricted_profile_violations(pod), Vec::<String>::new());
        assert_eq!(pod.automount_service_account_token, Some(false));
        assert_eq!(pod.service_account_name, None);
        let c = &pod.containers[0];
        assert_eq!(
            c.security_context
                .as_ref()
                .unwrap()
                .read_only_root_filesystem,
            Some(true)
        );
        // The argv is passed through untouched, never re-parsed by the wrapper shell (with `$`
        // escaped for Kubernetes' own `$(VAR)` expansion; this spec has none).
        assert_eq!(c.args.as_ref().unwrap(), &spec.command);
        let limits = c.resources.as_ref().unwrap().limits.as_ref().unwrap();
        assert_eq!(limits["cpu"].0, "1000m");
        assert_eq!(limits["memory"].0, (512u64 * 1024 * 1024).to_string());
        let labels = o.job.metadata.labels.as_ref().unwrap();
        assert_eq!(labels[keys::INSTANCE], "test");
        assert_eq!(
            labels[keys::CORRELATION_ID],
            spec.correlation_id.to_string()
        );
        let pod_labels = js
            .template
            .metadata
            .as_ref()
            .unwrap()
            .labels
            .as_ref()
            .unwrap();
        assert_eq!(pod_labels[keys::JOB], "agw-job-1");
        assert!(o.secret.is_none());
        let np = o.network_policy.spec.unwrap();
        assert_eq!(np.policy_types.unwrap(), vec!["Ingress", "Egress"]);
        assert!(np.ingress.is_none() && np.egress.is_none(), "deny all");
    }

    #[test]
    fn secrets_go_through_a_secret_not_the_pod_spec() {
        let mut spec = job_spec();
        spec.secret_env
            .insert("TOKEN".into(), CoreSecret::from("s3cr3t-value"));
        let o = build_now("agw-job-2", &spec).unwrap();
        let job_json = serde_json::to_string(&o.job).unwrap();
        assert!(!job_json.contains("s3cr3t-value"));
        let secret = o.secret.unwrap();
        assert_eq!(secret.metadata.name.as_deref(), Some("agw-job-2-env"));
        assert_eq!(secret.data.unwrap()["TOKEN"].0, b"s3cr3t-value");
    }

    #[test]
    fn grant_service_account_is_mounted_as_a_projected_token() {
        let mut spec = job_spec();
        spec.grant_hints.insert(
            crate::hints::HINT_SERVICE_ACCOUNT.into(),
            "agw-grant-x".into(),
        );
        spec.grant_hints
            .insert(crate::hints::HINT_NAMESPACE.into(), "jobs".into());
        let o = build_now("agw-job-3", &spec).unwrap();
        let pod = o.job.spec.unwrap().template.spec.unwrap();
        assert_eq!(pod.service_account_name.as_deref(), Some("agw-grant-x"));
        assert_eq!(pod.automount_service_account_token, Some(false));
        assert_eq!(restricted_profile_violations(&pod), Vec::<String>::new());
        let vol = pod
            .volumes
            .unwrap()
            .into_iter()
            .find(|v| v.name == "grant-token")
            .unwrap();
        let sources = vol.projected.unwrap().sources.unwrap();
        assert_eq!(
            sources[0]
                .service_account_token
                .as_ref()
                .unwrap()
                .expiration_seconds,
            Some(600)
        );

        spec.grant_hints
            .insert(crate::hints::HINT_NAMESPACE.into(), "elsewhere".into());
        assert!(matches!(
            build_now("agw-job-4", &spec),
            Err(BuildError::Invalid(_))
        ));
    }

    #[test]
    fn refuses_what_it_cannot_enforce() {
        let mut spec = job_spec();
        spec.network = NetworkAccess::Allowlist {
            destinations: vec!["example.com:443".into()],
        };
        assert!(matches!(
            build_now("j", &spec),
            Err(BuildError::Unsupported(_))
        ));
        spec.network = NetworkAccess::Allowlist {
            destinations: vec![
                "10.0.0.0/8:443".into(),
                "192.168.1.1".into(),
                "[::1]:80".into(),
            ],
        };
        let o = build_now("j", &spec).unwrap();
        let egress = o.network_policy.spec.unwrap().egress.unwrap();
        assert_eq!(egress.len(), 3);
        assert_eq!(
            egress[0].to.as_ref().unwrap()[0]
                .ip_block
                .as_ref()
                .unwrap()
                .cidr,
            "10.0.0.0/8"
        );
        assert_eq!(
            egress[1].to.as_ref().unwrap()[0]
                .ip_block
                .as_ref()
                .unwrap()
                .cidr,
            "192.168.1.1/32"
        );
        assert_eq!(
            egress[2].to.as_ref().unwrap()[0]
                .ip_block
                .as_ref()
                .unwrap()
                .cidr,
            "::1/128"
        );

        let mut empty = job_spec();
        empty.command.clear();
        assert!(matches!(
            build_now("j", &empty),
            Err(BuildError::Invalid(_))
        ));
        let mut bad_env = job_spec();
        bad_env.env.insert("A=B".into(), "x".into());
        assert!(matches!(
            build_now("j", &bad_env),
            Err(BuildError::Invalid(_))
        ));
        let mut mounts = job_spec();
        mounts.mounts.push(gateway_core::runner::ReadOnlyMount {
            host_path: "/etc".into(),
            job_path: "/etc".into(),
        });
        assert!(matches!(
            build_now("j", &mounts),
            Err(BuildError::Unsupported(_))
        ));
    }

    #[test]
    fn restricted_checks_catch_violations() {
        let mut pod = build(
            "j",
            &job_spec(),
            &settings(),
            time::OffsetDateTime::now_utc(),
        )
        .unwrap()
        .job
        .spec
        .unwrap()
        .template
        .spec
        .unwrap();
        pod.host_network = Some(true);
        let sc = pod.containers[0].security_context.as_mut().unwrap();
        sc.allow_privilege_escalation = None;
        sc.capabilities = None;
        let v = restricted_profile_violations(&pod);
        assert_eq!(v.len(), 3, "{v:?}");
    }
}
