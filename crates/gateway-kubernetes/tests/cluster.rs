//! Against a real kube-apiserver (started by `scripts/services/kubernetes.sh`, which exports
//! `GATEWAY_TEST_KUBECONFIG`): the broker's RBAC grants really limit the token, revocation and
//! the reapers work, the runner's Job and Pod are what the issue asks for. Tests that run Pods
//! also need a node (`GATEWAY_TEST_K8S_NODE=1`, image in `GATEWAY_TEST_K8S_IMAGE`).
//!
//! Without the variables these tests print a skip notice, or fail when `CI=true`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use gateway_core::conformance::broker::request;
use gateway_core::ids::{AgentId, RequestId};
use gateway_core::runner::{JobSpec, JobStatus, Runner};
use gateway_core::testing::script::ShellRenderer;
use gateway_core::{AccessBroker, CancellationToken, Secret};
use gateway_kubernetes::k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use gateway_kubernetes::k8s_openapi::api::batch::v1::Job;
use gateway_kubernetes::k8s_openapi::api::core::v1::{
    ConfigMap, Container, Namespace, Pod, PodSpec, PodTemplateSpec, Secret as K8sSecret,
    ServiceAccount,
};
use gateway_kubernetes::k8s_openapi::api::networking::v1::NetworkPolicy;
use gateway_kubernetes::k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use gateway_kubernetes::k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, ObjectMeta,
};
use gateway_kubernetes::kube::api::{DeleteParams, ListParams, PostParams};
use gateway_kubernetes::kube::config::{KubeConfigOptions, Kubeconfig};
use gateway_kubernetes::kube::{Api, Client, Config};
use gateway_kubernetes::labels::{self, instance_selector};
use gateway_kubernetes::{
    HINT_SERVICE_ACCOUNT, KubernetesBroker, KubernetesRunner, TOKEN_ENV,
    restricted_profile_violations,
};
use std::time::Duration;

fn kubeconfig_path() -> Option<String> {
    match std::env::var("GATEWAY_TEST_KUBECONFIG") {
        Ok(p) if !p.is_empty() => Some(p),
        _ => {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!(
                    "GATEWAY_TEST_KUBECONFIG is not set under CI=true: run scripts/test (scripts/services/kubernetes.sh starts the cluster)"
                );
            }
            eprintln!("skipping: GATEWAY_TEST_KUBECONFIG not set (run scripts/test)");
            None
        }
    }
}

/// The node's test image, or `None` (skip) when the cluster runs no node. Under `CI=true` a
/// missing node fails the test.
fn node_image() -> Option<String> {
    let node = std::env::var("GATEWAY_TEST_K8S_NODE").unwrap_or_default() == "1";
    match std::env::var("GATEWAY_TEST_K8S_IMAGE") {
        Ok(i) if node && !i.is_empty() => Some(i),
        _ => {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!(
                    "the test cluster has no node (GATEWAY_TEST_K8S_NODE != 1) under CI=true; see the kubelet log of scripts/services/kubernetes.sh"
                );
            }
            eprintln!("skipping: the test cluster runs no node");
            None
        }
    }
}

async fn admin() -> Option<Client> {
    let path = kubeconfig_path()?;
    let kc = Kubeconfig::read_from(&path).expect("read kubeconfig");
    let cfg = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .expect("kubeconfig");
    Some(Client::try_from(cfg).expect("client"))
}

/// A client that authenticates with `token` instead of the admin's.
async fn token_client(token: &str) -> Client {
    let path = kubeconfig_path().unwrap();
    let kc = Kubeconfig::read_from(&path).unwrap();
    let cluster = kc.clusters[0].cluster.clone().unwrap();
    let yaml = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {}\n    certificate-authority: {}\nusers:\n- name: u\n  user:\n    token: {token}\ncontexts:\n- name: x\n  context: {{cluster: c, user: u}}\ncurrent-context: x\n",
        cluster.server.unwrap(),
        cluster.certificate_authority.unwrap()
    );
    let cfg = Config::from_custom_kubeconfig(
        Kubeconfig::from_yaml(&yaml).unwrap(),
        &KubeConfigOptions::default(),
    )
    .await
    .unwrap();
    Client::try_from(cfg).unwrap()
}

fn instance() -> String {
    format!("t-{}", labels::random_suffix())
}

async fn create_namespace(client: &Client) -> String {
    let name = format!("agw-t-{}", labels::random_suffix());
    let ns = Namespace {
        metadata: gateway_kubernetes::k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            name: Some(name.clone()),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
    name
}

async fn delete_namespace(client: &Client, name: &str) {
    let _ = Api::<Namespace>::all(client.clone())
        .delete(name, &DeleteParams::default())
        .await;
}

async fn configmap(client: &Client, ns: &str, name: &str) {
    let cm = ConfigMap {
        metadata: gateway_kubernetes::k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        data: Some([("k".to_owned(), "v".to_owned())].into()),
        ..Default::default()
    };
    Api::<ConfigMap>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &cm)
        .await
        .unwrap();
}

fn code(e: &gateway_kubernetes::kube::Error) -> u16 {
    match e {
        gateway_kubernetes::kube::Error::Api(s) => s.code,
        other => panic!("not an API error: {other}"),
    }
}

/// Counts this instance's objects of every kind the crate creates (jobs' namespace `default`
/// plus `extra` namespaces).
async fn leftovers(client: &Client, instance: &str) -> Vec<String> {
    let lp = ListParams::default().labels(&instance_selector(instance));
    let mut left = Vec::new();
    macro_rules! count {
        ($kind:ty, $api:expr) => {
            // Terminating objects count: they still exist.
            for o in $api.list(&lp).await.unwrap().items {
                left.push(format!(
                    "{}/{}",
                    stringify!($kind),
                    o.metadata.name.unwrap_or_default()
                ));
            }
        };
    }
    count!(Job, Api::<Job>::all(client.clone()));
    count!(Pod, Api::<Pod>::all(client.clone()));
    count!(K8sSecret, Api::<K8sSecret>::all(client.clone()));
    count!(NetworkPolicy, Api::<NetworkPolicy>::all(client.clone()));
    count!(ServiceAccount, Api::<ServiceAccount>::all(client.clone()));
    count!(Role, Api::<Role>::all(client.clone()));
    count!(RoleBinding, Api::<RoleBinding>::all(client.clone()));
    left
}

async fn assert_nothing_left(client: &Client, instance: &str) {
    // Pods with a grace period take a moment to go.
    for _ in 0..60 {
        if leftovers(client, instance).await.is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    panic!(
        "instance {instance} left {:?}",
        leftovers(client, instance).await
    );
}

fn broker(client: &Client, instance: &str) -> KubernetesBroker {
    KubernetesBroker::builder(client.clone())
        .instance(instance)
        .namespace("default")
        .build()
        .unwrap()
}

#[tokio::test]
async fn broker_conformance() {
    let Some(client) = admin().await else { return };
    let inst = instance();
    let ns = create_namespace(&client).await;
    gateway_core::conformance::broker::run_all(
        &broker(&client, &inst),
        vec![format!("k8s:{ns}:configmaps:get")],
    )
    .await;
    assert_nothing_left(&client, &inst).await;
    delete_namespace(&client, &ns).await;
}

#[tokio::test]
async fn granted_token_can_do_exactly_its_scopes_until_revoked() {
    let Some(client) = admin().await else { return };
    let inst = instance();
    let ns = create_namespace(&client).await;
    let other_ns = create_namespace(&client).await;
    configmap(&client, &ns, "allowed").await;
    configmap(&client, &ns, "other").await;
    configmap(&client, &other_ns, "allowed").await;
    let b = broker(&client, &inst);
    let grant = b
        .grant(&request(
            vec![
                format!("k8s:{ns}:configmaps/allowed:get"),
                format!("k8s:{ns}:configmaps:list"),
            ],
            Duration::from_secs(120),
        ))
        .await
        .unwrap();
    let token = grant.job_env[TOKEN_ENV].expose_str().unwrap().to_owned();
    let as_grant = token_client(&token).await;
    let cms: Api<ConfigMap> = Api::namespaced(as_grant.clone(), &ns);

    // Exactly the scopes...
    assert_eq!(cms.get("allowed").await.unwrap().data.unwrap()["k"], "v");
    let names: Vec<String> = cms
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|c| c.metadata.name)
        .collect();
    assert!(
        names.contains(&"allowed".to_owned()) && names.contains(&"other".to_owned()),
        "{names:?}"
    );
    // ...and nothing else: another name, another verb, another resource, another namespace.
    assert_eq!(code(&cms.get("other").await.unwrap_err()), 403);
    assert_eq!(
        code(
            &cms.delete("allowed", &DeleteParams::default())
                .await
                .unwrap_err()
        ),
        403
    );
    let secrets: Api<K8sSecret> = Api::namespaced(as_grant.clone(), &ns);
    assert_eq!(
        code(&secrets.list(&ListParams::default()).await.unwrap_err()),
        403
    );
    let elsewhere: Api<ConfigMap> = Api::namespaced(as_grant.clone(), &other_ns);
    assert_eq!(code(&elsewhere.get("allowed").await.unwrap_err()), 403);
    let roles: Api<Role> = Api::namespaced(as_grant.clone(), &ns);
    assert_eq!(
        code(&roles.list(&ListParams::default()).await.unwrap_err()),
        403
    );

    // After revocation the token is rejected outright (its ServiceAccount is gone).
    b.revoke(&grant).await.unwrap();
    let mut last = 0;
    for _ in 0..100 {
        last = match cms.get("allowed").await {
            Ok(_) => 200,
            Err(e) => code(&e),
        };
        if last == 401 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(last, 401, "revoked token still accepted");
    assert_nothing_left(&client, &inst).await;
    delete_namespace(&client, &ns).await;
    delete_namespace(&client, &other_ns).await;
}

#[tokio::test]
async fn reaper_deletes_expired_grants_after_a_crash() {
    let Some(client) = admin().await else { return };
    let inst = instance();
    let ns = create_namespace(&client).await;
    let scopes = vec![format!("k8s:{ns}:configmaps:get")];
    // A gateway issues two grants and "crashes" without revoking either.
    let crashed = broker(&client, &inst);
    let short = crashed
        .grant(&request(scopes.clone(), Duration::from_secs(1)))
        .await
        .unwrap();
    let long = crashed
        .grant(&request(scopes.clone(), Duration::from_secs(600)))
        .await
        .unwrap();
    // Another instance's expired grant is not this reaper's business.
    let other_inst = instance();
    let foreign = broker(&client, &other_inst)
        .grant(&request(scopes.clone(), Duration::from_secs(1)))
        .await
        .unwrap();
    drop(crashed);
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let restarted = broker(&client, &inst);
    let report = restarted.reap().await.unwrap();
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    let short_name = &short.hints[HINT_SERVICE_ACCOUNT];
    let long_name = &long.hints[HINT_SERVICE_ACCOUNT];
    for kind in ["RoleBinding", "Role", "ServiceAccount"] {
        assert!(
            report
                .deleted
                .iter()
                .any(|d| d.starts_with(kind) && d.ends_with(short_name.as_str())),
            "{kind} of the expired grant not reaped: {report:?}"
        );
    }
    assert!(
        !report
            .deleted
            .iter()
            .any(|d| d.ends_with(long_name.as_str())),
        "live grant reaped"
    );
    assert!(
        Api::<ServiceAccount>::namespaced(client.clone(), "default")
            .get_opt(long_name)
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        Api::<ServiceAccount>::namespaced(client.clone(), "default")
            .get_opt(&foreign.hints[HINT_SERVICE_ACCOUNT])
            .await
            .unwrap()
            .is_some()
    );

    restarted.revoke(&long).await.unwrap();
    broker(&client, &other_inst).revoke(&foreign).await.unwrap();
    assert_nothing_left(&client, &inst).await;
    assert_nothing_left(&client, &other_inst).await;
    delete_namespace(&client, &ns).await;
}

fn runner(client: &Client, instance: &str, image: &str) -> KubernetesRunner {
    KubernetesRunner::builder(client.clone())
        .instance(instance)
        .namespace("default")
        .default_image(image)
        .image_pull_policy("Never")
        .build()
        .unwrap()
}

fn sleeper(timeout: Duration) -> JobSpec {
    let mut spec = JobSpec::new(
        RequestId::new(),
        AgentId::new("agent:cluster-test").unwrap(),
        vec!["/bin/sh".into(), "-c".into(), "sleep 60".into()],
    );
    spec.limits.timeout = timeout;
    spec.limits.cpu_millis = 100;
    spec.limits.memory_bytes = 32 * 1024 * 1024;
    spec
}

/// Works with or without a node: the Job controller creates the Pod either way.
#[tokio::test]
async fn job_and_pod_are_hardened_and_cleaned_up() {
    let Some(client) = admin().await else { return };
    let inst = instance();
    let image = std::env::var("GATEWAY_TEST_K8S_IMAGE").unwrap_or_else(|_| "agw-busybox:1".into());
    let r = runner(&client, &inst, &image);
    let mut spec = sleeper(Duration::from_secs(60));
    spec.secret_env
        .insert("JOB_SECRET".into(), Secret::from("cluster-secret-value"));
    let correlation = spec.correlation_id.to_string();
    let cancel = CancellationToken::new();
    let run = tokio::spawn({
        let r = r.clone();
        let cancel = cancel.clone();
        async move { r.run(spec, cancel).await }
    });

    let lp = ListParams::default().labels(&instance_selector(&inst));
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let mut pod = None;
    for _ in 0..100 {
        if let Some(p) = pods.list(&lp).await.unwrap().items.into_iter().next() {
            pod = Some(p);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let pod = pod.expect("the Job controller created no Pod");
    // The Pod as stored by the API server (after defaulting and admission) passes the
    // restricted profile.
    let pod_spec = pod.spec.clone().unwrap();
    assert_eq!(
        restricted_profile_violations(&pod_spec),
        Vec::<String>::new()
    );
    let c = &pod_spec.containers[0];
    let sc = c.security_context.as_ref().unwrap();
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert!(sc.run_as_user.unwrap() != 0);
    assert_eq!(pod_spec.automount_service_account_token, Some(false));
    assert!(
        c.resources
            .as_ref()
            .unwrap()
            .limits
            .as_ref()
            .unwrap()
            .contains_key("memory")
    );
    assert_eq!(
        pod.metadata.labels.as_ref().unwrap()[gateway_core::labels::CORRELATION_ID],
        correlation
    );
    assert!(
        !serde_json::to_string(&pod)
            .unwrap()
            .contains("cluster-secret-value")
    );

    let job = Api::<Job>::namespaced(client.clone(), "default")
        .list(&lp)
        .await
        .unwrap()
        .items
        .remove(0);
    let js = job.spec.unwrap();
    assert_eq!(js.backoff_limit, Some(0));
    assert_eq!(js.active_deadline_seconds, Some(60));
    let nps = Api::<NetworkPolicy>::namespaced(client.clone(), "default")
        .list(&lp)
        .await
        .unwrap()
        .items;
    assert_eq!(nps.len(), 1, "one deny-all NetworkPolicy per job");
    let np = nps[0].spec.clone().unwrap();
    assert_eq!(np.policy_types.unwrap(), vec!["Ingress", "Egress"]);
    assert!(np.egress.is_none() && np.ingress.is_none());
    let secrets = Api::<K8sSecret>::namespaced(client.clone(), "default")
        .list(&lp)
        .await
        .unwrap()
        .items;
    assert_eq!(secrets.len(), 1);

    cancel.cancel();
    let out = run.await.unwrap().unwrap();
    assert_eq!(out.status, JobStatus::Cancelled);
    assert!(out.teardown.complete, "{}", out.teardown.detail);
    assert!(
        leftovers(&client, &inst).await.is_empty(),
        "{:?}",
        leftovers(&client, &inst).await
    );
}

/// A gateway that dies mid-job leaves its Job behind; the restarted instance's reaper removes it.
#[test]
fn reaper_removes_a_crashed_runners_jobs() {
    let main = tokio::runtime::Runtime::new().unwrap();
    let Some(client) = main.block_on(admin()) else {
        return;
    };
    let inst = instance();
    let image = std::env::var("GATEWAY_TEST_K8S_IMAGE").unwrap_or_else(|_| "agw-busybox:1".into());
    // The "gateway process": its own runtime, torn down without running any cleanup.
    let doomed = tokio::runtime::Runtime::new().unwrap();
    {
        let r = main.block_on(async { runner(&client, &inst, &image) });
        doomed.spawn(async move {
            r.run(sleeper(Duration::from_secs(120)), CancellationToken::new())
                .await
        });
    }
    main.block_on(async {
        let jobs: Api<Job> = Api::namespaced(client.clone(), "default");
        let lp = ListParams::default().labels(&instance_selector(&inst));
        for _ in 0..100 {
            if !jobs.list(&lp).await.unwrap().items.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    doomed.shutdown_timeout(Duration::ZERO);
    main.block_on(async {
        // Give a (wrongly) surviving cleanup task the chance to show itself.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let left = leftovers(&client, &inst).await;
        assert!(
            left.iter().any(|l| l.starts_with("Job/")),
            "the crash left no Job: {left:?}"
        );

        let restarted = runner(&client, &inst, &image);
        // Not expired yet: the periodic reaper leaves it alone...
        let report = restarted.reap().await.unwrap();
        assert!(report.deleted.is_empty(), "{report:?}");
        // ...the start-up reaper removes everything of the instance.
        let mut deleted = Vec::new();
        for _ in 0..60 {
            let report = restarted.reap_all().await.unwrap();
            deleted.extend(report.deleted);
            if report.failed.is_empty() && leftovers(&client, &inst).await.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        assert!(deleted.iter().any(|d| d.starts_with("Job/")), "{deleted:?}");
        assert!(
            deleted.iter().any(|d| d.starts_with("NetworkPolicy/")),
            "{deleted:?}"
        );
        assert_nothing_left(&client, &inst).await;
    });
}

#[tokio::test]
async fn runner_conformance() {
    let Some(client) = admin().await else { return };
    let Some(image) = node_image() else { return };
    let inst = instance();
    let r = runner(&client, &inst, &image);
    gateway_core::conformance::runner::run_all(&r, &ShellRenderer { image: Some(image) }).await;
    assert_nothing_left(&client, &inst).await;
}

#[tokio::test]
async fn grant_is_mounted_into_the_job() {
    let Some(client) = admin().await else { return };
    let Some(image) = node_image() else { return };
    let inst = instance();
    let ns = create_namespace(&client).await;
    let b = broker(&client, &inst);
    let grant = b
        .grant(&request(
            vec![format!("k8s:{ns}:configmaps:get")],
            Duration::from_secs(120),
        ))
        .await
        .unwrap();
    let mut spec = JobSpec::new(
        grant.correlation_id,
        grant.agent.clone(),
        vec![
            "/bin/sh".into(),
            "-c".into(),
            format!(
                "head -c 3 /var/run/secrets/kubernetes.io/serviceaccount/token; printf '|%s' ${{#{TOKEN_ENV}}}"
            ),
        ],
    );
    grant.equip(&mut spec);
    spec.limits.timeout = Duration::from_secs(60);
    let out = runner(&client, &inst, &image)
        .run(spec, CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(out.status, JobStatus::Exited { code: 0 }, "{out:?}");
    let token_len = grant.job_env[TOKEN_ENV].len();
    // A JWT from the projected volume, and the TokenRequest token from the Secret.
    assert_eq!(out.stdout, format!("eyJ|{token_len}"));
    b.revoke(&grant).await.unwrap();
    assert_nothing_left(&client, &inst).await;
    delete_namespace(&client, &ns).await;
}

// ---------------------------------------------------------------------------------------------
// The k8s.scale and k8s.rollout_restart job scripts against real Deployments.

const SCALE_SCRIPT: &str = include_str!("../../../catalog/jobs/k8s-scale.sh");
const RESTART_SCRIPT: &str = include_str!("../../../catalog/jobs/k8s-rollout-restart.sh");

/// The kubectl the test service built (`GATEWAY_TEST_KUBECTL`), or `None` (skip; a failure
/// under `CI=true`).
fn kubectl() -> Option<String> {
    match std::env::var("GATEWAY_TEST_KUBECTL") {
        Ok(p) if !p.is_empty() => Some(p),
        _ => {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!(
                    "GATEWAY_TEST_KUBECTL is not set under CI=true: run scripts/test (scripts/services/kubernetes.sh installs kubectl)"
                );
            }
            eprintln!("skipping: GATEWAY_TEST_KUBECTL not set (run scripts/test)");
            None
        }
    }
}

/// The admin kubeconfig's API server URL and its CA (PEM).
fn server_and_ca() -> (String, String) {
    let kc = Kubeconfig::read_from(kubeconfig_path().unwrap()).unwrap();
    let cluster = kc.clusters[0].cluster.clone().unwrap();
    let ca = std::fs::read_to_string(cluster.certificate_authority.unwrap()).unwrap();
    (cluster.server.unwrap(), ca)
}

/// A Deployment with `replicas` whose Pods are never scheduled (a node selector no node has):
/// the tests change the Deployment, not the node's load.
async fn deployment(client: &Client, ns: &str, name: &str, replicas: i32) {
    let labels = std::collections::BTreeMap::from([("app".to_owned(), name.to_owned())]);
    let d = Deployment {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        spec: Some(DeploymentSpec {
            replicas: Some(replicas),
            selector: LabelSelector {
                match_labels: Some(labels.clone()),
                match_expressions: None,
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![Container {
                        name: "app".into(),
                        image: Some("agw-busybox:1".into()),
                        image_pull_policy: Some("Never".into()),
                        command: Some(vec!["sleep".into(), "3600".into()]),
                        ..Default::default()
                    }],
                    node_selector: Some([("agw-test/none".to_owned(), "1".to_owned())].into()),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        status: None,
    };
    Api::<Deployment>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &d)
        .await
        .unwrap();
}

async fn replicas_of(client: &Client, ns: &str, name: &str) -> i32 {
    Api::<Deployment>::namespaced(client.clone(), ns)
        .get(name)
        .await
        .unwrap()
        .spec
        .unwrap()
        .replicas
        .unwrap()
}

async fn secret(client: &Client, ns: &str, name: &str) {
    let s = K8sSecret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        string_data: Some([("password".to_owned(), "hunter2".to_owned())].into()),
        ..Default::default()
    };
    Api::<K8sSecret>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &s)
        .await
        .unwrap();
}

/// A broker whose grants carry the API server's address and CA for their jobs.
fn job_broker(client: &Client, instance: &str, server: &str, ca: &str) -> KubernetesBroker {
    KubernetesBroker::builder(client.clone())
        .instance(instance)
        .namespace("default")
        .job_server(server)
        .job_ca_pem(ca)
        .build()
        .unwrap()
}

/// Runs `script` as a plain process, the way the local runner does: a cleared environment
/// holding only the params and the grant's job environment.
fn run_script(
    script: &str,
    kubectl: &str,
    params: &[(&str, &str)],
    grant: &gateway_core::Grant,
) -> std::process::Output {
    let bin_dir = std::path::Path::new(kubectl).parent().unwrap();
    let tmp = std::env::temp_dir();
    let mut cmd = std::process::Command::new("/bin/sh");
    cmd.arg("-c").arg(script).env_clear();
    cmd.env("PATH", format!("{}:/usr/bin:/bin", bin_dir.display()));
    cmd.env("TMPDIR", &tmp);
    for (k, v) in params {
        cmd.env(k, v);
    }
    // As the pipeline shapes a job: the grant's plain variables, then its secrets.
    cmd.envs(&grant.job_vars);
    for (k, v) in &grant.job_env {
        cmd.env(k, v.expose_str().unwrap());
    }
    cmd.output().unwrap()
}

/// The token never shows up in what a job prints.
fn assert_no_token(out: &str, grant: &gateway_core::Grant) {
    let token = grant.job_env[TOKEN_ENV].expose_str().unwrap();
    assert!(!out.contains(token), "job output shows the grant's token");
}

/// After revocation the token is rejected: 401 once the ServiceAccount is gone (403 while the
/// authenticator's cache still knows it but RBAC no longer grants anything).
async fn assert_revoked(token: &str, ns: &str, deployment: &str) {
    let as_grant: Api<Deployment> = Api::namespaced(token_client(token).await, ns);
    let mut last = 0;
    for _ in 0..100 {
        last = match as_grant.get(deployment).await {
            Ok(_) => 200,
            Err(e) => code(&e),
        };
        if last == 401 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(last, 401, "revoked token still accepted");
}

fn scale_scopes(ns: &str, name: &str) -> Vec<String> {
    vec![
        format!("k8s:{ns}:deployments/{name}:get"),
        format!("k8s:{ns}:deployments/{name}/scale:patch"),
    ]
}

#[tokio::test]
async fn k8s_scale_script_scales_its_deployment_and_nothing_else() {
    let Some(client) = admin().await else { return };
    let Some(kubectl) = kubectl() else { return };
    let inst = instance();
    let ns = create_namespace(&client).await;
    deployment(&client, &ns, "web", 1).await;
    deployment(&client, &ns, "other", 1).await;
    secret(&client, &ns, "db").await;
    let (server, ca) = server_and_ca();
    let b = job_broker(&client, &inst, &server, &ca);
    let grant = b
        .grant(&request(scale_scopes(&ns, "web"), Duration::from_secs(120)))
        .await
        .unwrap();

    let started = std::time::Instant::now();
    let out = run_script(
        SCALE_SCRIPT,
        &kubectl,
        &[("NAMESPACE", &ns), ("DEPLOYMENT", "web"), ("REPLICAS", "3")],
        &grant,
    );
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    eprintln!("k8s.scale job took {:?}", started.elapsed());
    assert!(out.status.success(), "stdout {stdout}\nstderr {stderr}");
    assert_eq!(
        stdout,
        format!("scaled deployment {ns}/web: replicas 1 -> 3\n")
    );
    assert_no_token(&stdout, &grant);
    assert_no_token(&stderr, &grant);
    // Read back through the API, as the admin.
    assert_eq!(replicas_of(&client, &ns, "web").await, 3);

    // The same token, on another Deployment: the script fails with the API's 403 and the
    // Deployment is unchanged.
    let denied = run_script(
        SCALE_SCRIPT,
        &kubectl,
        &[
            ("NAMESPACE", &ns),
            ("DEPLOYMENT", "other"),
            ("REPLICAS", "5"),
        ],
        &grant,
    );
    let denied_err = String::from_utf8_lossy(&denied.stderr).into_owned();
    assert!(!denied.status.success());
    assert!(denied_err.contains("forbidden"), "{denied_err}");
    assert_no_token(&denied_err, &grant);
    assert_eq!(replicas_of(&client, &ns, "other").await, 1);

    // And through the API directly: no scale of another Deployment, no patch of the Deployment
    // itself (only its scale subresource), no Secrets.
    let token = grant.job_env[TOKEN_ENV].expose_str().unwrap().to_owned();
    let as_grant = token_client(&token).await;
    let deployments: Api<Deployment> = Api::namespaced(as_grant.clone(), &ns);
    let scale = serde_json::json!({"spec": {"replicas": 4}});
    let merge = gateway_kubernetes::kube::api::Patch::Merge(&scale);
    let pp = gateway_kubernetes::kube::api::PatchParams::default();
    assert_eq!(
        code(
            &deployments
                .patch_scale("other", &pp, &merge)
                .await
                .unwrap_err()
        ),
        403
    );
    assert_eq!(
        code(&deployments.patch("web", &pp, &merge).await.unwrap_err()),
        403
    );
    assert_eq!(code(&deployments.get("other").await.unwrap_err()), 403);
    assert!(deployments.patch_scale("web", &pp, &merge).await.is_ok());
    let secrets: Api<K8sSecret> = Api::namespaced(as_grant, &ns);
    assert_eq!(code(&secrets.get("db").await.unwrap_err()), 403);
    assert_eq!(
        code(&secrets.list(&ListParams::default()).await.unwrap_err()),
        403
    );

    b.revoke(&grant).await.unwrap();
    assert_revoked(&token, &ns, "web").await;
    let after = run_script(
        SCALE_SCRIPT,
        &kubectl,
        &[("NAMESPACE", &ns), ("DEPLOYMENT", "web"), ("REPLICAS", "1")],
        &grant,
    );
    assert!(!after.status.success(), "a revoked grant still scales");
    assert_eq!(replicas_of(&client, &ns, "web").await, 4);
    assert_nothing_left(&client, &inst).await;
    delete_namespace(&client, &ns).await;
}

#[tokio::test]
async fn k8s_rollout_restart_script_restarts_its_deployment_and_nothing_else() {
    let Some(client) = admin().await else { return };
    let Some(kubectl) = kubectl() else { return };
    let inst = instance();
    let ns = create_namespace(&client).await;
    deployment(&client, &ns, "web", 1).await;
    deployment(&client, &ns, "other", 1).await;
    secret(&client, &ns, "db").await;
    let (server, ca) = server_and_ca();
    let b = job_broker(&client, &inst, &server, &ca);
    let grant = b
        .grant(&request(
            vec![
                format!("k8s:{ns}:deployments/web:get"),
                format!("k8s:{ns}:deployments/web:patch"),
            ],
            Duration::from_secs(120),
        ))
        .await
        .unwrap();

    let started = std::time::Instant::now();
    let out = run_script(
        RESTART_SCRIPT,
        &kubectl,
        &[("NAMESPACE", &ns), ("DEPLOYMENT", "web")],
        &grant,
    );
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    eprintln!("k8s.rollout_restart job took {:?}", started.elapsed());
    assert!(out.status.success(), "stdout {stdout}\nstderr {stderr}");
    assert_no_token(&stdout, &grant);
    assert_no_token(&stderr, &grant);
    let web = Api::<Deployment>::namespaced(client.clone(), &ns)
        .get("web")
        .await
        .unwrap();
    let restarted_at = web
        .spec
        .unwrap()
        .template
        .metadata
        .unwrap()
        .annotations
        .unwrap_or_default()
        .get("kubectl.kubernetes.io/restartedAt")
        .cloned()
        .expect("no restartedAt annotation on the Pod template");
    let generation = web.metadata.generation.unwrap();
    assert_eq!(
        stdout,
        format!(
            "restarted deployment {ns}/web: generation 1 -> {generation}, restartedAt (none) -> {restarted_at}\n"
        )
    );
    assert!(generation > 1);

    let denied = run_script(
        RESTART_SCRIPT,
        &kubectl,
        &[("NAMESPACE", &ns), ("DEPLOYMENT", "other")],
        &grant,
    );
    let denied_err = String::from_utf8_lossy(&denied.stderr).into_owned();
    assert!(!denied.status.success());
    assert!(denied_err.contains("forbidden"), "{denied_err}");
    let other = Api::<Deployment>::namespaced(client.clone(), &ns)
        .get("other")
        .await
        .unwrap();
    assert_eq!(other.metadata.generation, Some(1));

    let token = grant.job_env[TOKEN_ENV].expose_str().unwrap().to_owned();
    let as_grant = token_client(&token).await;
    let deployments: Api<Deployment> = Api::namespaced(as_grant.clone(), &ns);
    let scale = serde_json::json!({"spec": {"replicas": 4}});
    let merge = gateway_kubernetes::kube::api::Patch::Merge(&scale);
    let pp = gateway_kubernetes::kube::api::PatchParams::default();
    // Patching the Deployment is not patching its scale subresource.
    assert_eq!(
        code(
            &deployments
                .patch_scale("web", &pp, &merge)
                .await
                .unwrap_err()
        ),
        403
    );
    assert_eq!(
        code(&deployments.patch("other", &pp, &merge).await.unwrap_err()),
        403
    );
    let secrets: Api<K8sSecret> = Api::namespaced(as_grant, &ns);
    assert_eq!(
        code(&secrets.list(&ListParams::default()).await.unwrap_err()),
        403
    );

    b.revoke(&grant).await.unwrap();
    assert_revoked(&token, &ns, "web").await;
    assert_nothing_left(&client, &inst).await;
    delete_namespace(&client, &ns).await;
}

/// The apiserver URL as Pods reach it (`GATEWAY_TEST_K8S_POD_SERVER`, set when the test
/// service runs the Pod network), or `None` (skip; a failure under `CI=true`).
fn pod_server() -> Option<String> {
    match std::env::var("GATEWAY_TEST_K8S_POD_SERVER") {
        Ok(s) if !s.is_empty() => Some(s),
        _ => {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!(
                    "GATEWAY_TEST_K8S_POD_SERVER is not set under CI=true: the test cluster has no Pod network (see scripts/services/kubernetes.sh)"
                );
            }
            eprintln!("skipping: the test cluster has no Pod network");
            None
        }
    }
}

#[tokio::test]
async fn k8s_jobs_run_in_a_pod_of_the_kubernetes_runner() {
    let Some(client) = admin().await else { return };
    let Some(image) = node_image() else { return };
    let Some(server) = pod_server() else { return };
    let inst = instance();
    let ns = create_namespace(&client).await;
    deployment(&client, &ns, "web", 1).await;
    let (_, ca) = server_and_ca();
    let b = job_broker(&client, &inst, &server, &ca);
    let grant = b
        .grant(&request(scale_scopes(&ns, "web"), Duration::from_secs(120)))
        .await
        .unwrap();
    let mut spec = JobSpec::new(
        grant.correlation_id,
        grant.agent.clone(),
        vec!["/bin/sh".into(), "-c".into(), SCALE_SCRIPT.into()],
    );
    for (k, v) in [
        ("NAMESPACE", ns.as_str()),
        ("DEPLOYMENT", "web"),
        ("REPLICAS", "2"),
    ] {
        spec.env.insert(k.into(), v.into());
    }
    grant.equip(&mut spec);
    // What a policy's `runner.network` obligation would name: the apiserver, nothing else.
    let authority = server.strip_prefix("https://").unwrap().to_owned();
    spec.network = gateway_core::NetworkAccess::Allowlist {
        destinations: vec![authority],
    };
    spec.limits.timeout = Duration::from_secs(90);
    spec.limits.cpu_millis = 1000;
    spec.limits.memory_bytes = 128 * 1024 * 1024;
    let started = std::time::Instant::now();
    let out = runner(&client, &inst, &image)
        .run(spec, CancellationToken::new())
        .await
        .unwrap();
    eprintln!("k8s.scale Pod job took {:?}", started.elapsed());
    assert_eq!(out.status, JobStatus::Exited { code: 0 }, "{out:?}");
    assert_eq!(
        out.stdout,
        format!("scaled deployment {ns}/web: replicas 1 -> 2\n")
    );
    let token = grant.job_env[TOKEN_ENV].expose_str().unwrap();
    assert!(!out.stdout.contains(token) && !out.stderr.contains(token));
    assert_eq!(replicas_of(&client, &ns, "web").await, 2);
    assert!(out.teardown.complete, "{}", out.teardown.detail);
    b.revoke(&grant).await.unwrap();

    // k8s.rollout_restart the same way, with a grant of its own.
    let grant = b
        .grant(&request(
            vec![
                format!("k8s:{ns}:deployments/web:get"),
                format!("k8s:{ns}:deployments/web:patch"),
            ],
            Duration::from_secs(120),
        ))
        .await
        .unwrap();
    let mut spec = JobSpec::new(
        grant.correlation_id,
        grant.agent.clone(),
        vec!["/bin/sh".into(), "-c".into(), RESTART_SCRIPT.into()],
    );
    for (k, v) in [("NAMESPACE", ns.as_str()), ("DEPLOYMENT", "web")] {
        spec.env.insert(k.into(), v.into());
    }
    grant.equip(&mut spec);
    spec.network = gateway_core::NetworkAccess::Allowlist {
        destinations: vec![server.strip_prefix("https://").unwrap().to_owned()],
    };
    spec.limits.timeout = Duration::from_secs(90);
    spec.limits.cpu_millis = 1000;
    spec.limits.memory_bytes = 128 * 1024 * 1024;
    let out = runner(&client, &inst, &image)
        .run(spec, CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(out.status, JobStatus::Exited { code: 0 }, "{out:?}");
    assert!(
        out.stdout
            .starts_with(&format!("restarted deployment {ns}/web: generation ")),
        "{out:?}"
    );
    let template = Api::<Deployment>::namespaced(client.clone(), &ns)
        .get("web")
        .await
        .unwrap()
        .spec
        .unwrap()
        .template
        .metadata
        .unwrap();
    assert!(
        template
            .annotations
            .unwrap_or_default()
            .contains_key("kubectl.kubernetes.io/restartedAt")
    );
    b.revoke(&grant).await.unwrap();
    assert_nothing_left(&client, &inst).await;
    delete_namespace(&client, &ns).await;
}

/// What a Pod can reach on the test cluster's network, as scripts/services/kubernetes.sh
/// documents it: the apiserver's port on the host (allowed by its iptables fence), and no other
/// port of the host, even one listening on every address. NetworkPolicies are NOT enforced
/// (the bridge plugin has no NetworkPolicy support): the runner's deny-all policy does not stop
/// this job from reaching the apiserver, which this test records rather than hides.
#[tokio::test]
async fn pod_network_reaches_the_apiserver_and_no_other_host_port() {
    let Some(client) = admin().await else { return };
    let Some(image) = node_image() else { return };
    let Some(server) = pod_server() else { return };
    let inst = instance();
    let authority = server.strip_prefix("https://").unwrap().to_owned();
    let (host, api_port) = authority.rsplit_once(':').unwrap();
    // A host service on every address, which the fence must keep from Pods.
    let listener = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let other_port = listener.local_addr().unwrap().port();
    let probe = format!(
        "if nc -w 3 {host} {api_port} </dev/null; then echo api=open; else echo api=closed; fi; \
         if nc -w 3 {host} {other_port} </dev/null; then echo other=open; else echo other=closed; fi"
    );
    let mut spec = JobSpec::new(
        RequestId::new(),
        AgentId::new("agent:cluster-test").unwrap(),
        vec!["/bin/sh".into(), "-c".into(), probe],
    );
    // No network obligation: the runner emits a deny-all NetworkPolicy.
    spec.limits.timeout = Duration::from_secs(60);
    let out = runner(&client, &inst, &image)
        .run(spec, CancellationToken::new())
        .await
        .unwrap();
    drop(listener);
    assert_eq!(out.status, JobStatus::Exited { code: 0 }, "{out:?}");
    assert_eq!(
        out.stdout, "api=open\nother=closed\n",
        "deny-all NetworkPolicy not enforced (expected), fence on other host ports"
    );
    assert_nothing_left(&client, &inst).await;
}
