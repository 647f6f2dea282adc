//! Kubernetes backends on the local test cluster (scripts/services/kubernetes.sh):
//!
//! - `baseline/api_round_trip`: one authenticated GET of a Namespace (what any API call costs);
//! - `broker/grant_revoke`: a grant (ServiceAccount + Role + RoleBinding + TokenRequest + the
//!   SubjectAccessReview that waits until RBAC is effective) and its revocation;
//! - `runner/job_exit_0`: a Job from creation to teardown (`exit 0` in the busybox test image),
//!   which needs the cluster's node.
//!
//! Report each as a ratio to the baseline. Skips (prints a notice) when `GATEWAY_TEST_KUBECONFIG`
//! is not set. `cargo bench --bench kubernetes`
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use criterion::{Criterion, criterion_group, criterion_main};
use gateway_core::conformance::broker::request;
use gateway_core::ids::{AgentId, RequestId};
use gateway_core::{AccessBroker, CancellationToken, JobSpec, Runner};
use gateway_kubernetes::k8s_openapi::api::core::v1::Namespace;
use gateway_kubernetes::kube::config::{KubeConfigOptions, Kubeconfig};
use gateway_kubernetes::kube::{Api, Client, Config};
use gateway_kubernetes::{KubernetesBroker, KubernetesRunner};
use std::time::Duration;

fn bench(c: &mut Criterion) {
    let Ok(path) = std::env::var("GATEWAY_TEST_KUBECONFIG") else {
        eprintln!(
            "kubernetes bench skipped: GATEWAY_TEST_KUBECONFIG not set (start scripts/services/kubernetes.sh)"
        );
        return;
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = rt.block_on(async {
        let kc = Kubeconfig::read_from(&path).unwrap();
        let cfg = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
            .await
            .unwrap();
        Client::try_from(cfg).unwrap()
    });
    let suffix: u32 = rand::random();
    let instance = format!("bench-{suffix:08x}");

    let mut g = c.benchmark_group("kubernetes");
    g.sample_size(10).measurement_time(Duration::from_secs(5));
    let namespaces: Api<Namespace> = Api::all(client.clone());
    g.bench_function("baseline/api_round_trip", |b| {
        b.to_async(&rt)
            .iter(|| async { namespaces.get("default").await.unwrap() });
    });

    let broker = KubernetesBroker::builder(client.clone())
        .instance(&instance)
        .namespace("default")
        .build()
        .unwrap();
    g.bench_function("broker/grant_revoke", |b| {
        b.to_async(&rt).iter(|| async {
            let grant = broker
                .grant(&request(
                    vec!["k8s:default:configmaps:get".into()],
                    Duration::from_secs(60),
                ))
                .await
                .unwrap();
            broker.revoke(&grant).await.unwrap();
        });
    });

    match std::env::var("GATEWAY_TEST_K8S_IMAGE") {
        Ok(image) if std::env::var("GATEWAY_TEST_K8S_NODE").as_deref() == Ok("1") => {
            let runner = KubernetesRunner::builder(client.clone())
                .instance(&instance)
                .namespace("default")
                .default_image(image)
                .image_pull_policy("Never")
                .build()
                .unwrap();
            g.measurement_time(Duration::from_secs(20));
            g.bench_function("runner/job_exit_0", |b| {
                b.to_async(&rt).iter(|| async {
                    let spec = JobSpec::new(
                        RequestId::new(),
                        AgentId::new("agent:bench").unwrap(),
                        vec!["/bin/sh".into(), "-c".into(), "exit 0".into()],
                    );
                    let out = runner.run(spec, CancellationToken::new()).await.unwrap();
                    assert!(out.succeeded() && out.teardown.complete, "{out:?}");
                });
            });
        }
        _ => eprintln!("runner bench skipped: the test cluster runs no node"),
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
