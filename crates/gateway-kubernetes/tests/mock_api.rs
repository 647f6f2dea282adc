//! Request shapes and error paths against kube's mock service (`tower_test::mock::pair`):
//! exact objects the broker and runner send, and 403, 404, 409, 410-on-watch and unreachable
//! API servers.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use gateway_core::conformance::broker::request;
use gateway_core::ids::{AgentId, RequestId};
use gateway_core::runner::{JobSpec, JobStatus, Runner};
use gateway_core::{AccessBroker, CancellationToken, ErrorKind};
use gateway_kubernetes::kube::client::Body;
use gateway_kubernetes::kube::{Client, Config};
use gateway_kubernetes::{HINT_SERVICE_ACCOUNT, KubernetesBroker, KubernetesRunner, TOKEN_ENV};
use http::{Request, Response};
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One request the mock API server saw.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    uri: String,
    body: Value,
}

type SeenLog = Arc<Mutex<Vec<Seen>>>;
type Route = dyn Fn(&Seen) -> (u16, String) + Send + Sync;

/// A client whose requests are answered by `route` and recorded.
fn mock(
    route: impl Fn(&Seen) -> (u16, String) + Send + Sync + 'static,
) -> (Client, Arc<Mutex<Vec<Seen>>>) {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    let route: Arc<Route> = Arc::new(route);
    tokio::spawn(async move {
        while let Some((req, send)) = handle.next_request().await {
            let (parts, body) = req.into_parts();
            let bytes = body.collect_bytes().await.unwrap();
            let s = Seen {
                method: parts.method.to_string(),
                uri: parts.uri.to_string(),
                body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            };
            log.lock().unwrap().push(s.clone());
            let (code, text) = route(&s);
            send.send_response(
                Response::builder()
                    .status(code)
                    .body(Body::from(text.into_bytes()))
                    .unwrap(),
            );
        }
    });
    (Client::new(service, "default"), seen)
}

fn status(code: u16, reason: &str) -> (u16, String) {
    (
        code,
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
               "message": format!("mock {reason}"), "reason": reason, "code": code})
        .to_string(),
    )
}

/// Echoes the posted object back (what the API server does on create), adding a token for
/// TokenRequests.
fn echo_created(s: &Seen) -> (u16, String) {
    let mut obj = s.body.clone();
    if s.uri.contains("/token") {
        obj["status"] = json!({"token": "mock-token-value-123456", "expirationTimestamp": "2030-01-01T00:00:00Z"});
    }
    (201, obj.to_string())
}

fn deleted() -> (u16, String) {
    (
        200,
        json!({"kind": "Status", "apiVersion": "v1", "status": "Success", "code": 200}).to_string(),
    )
}

fn broker(client: Client) -> KubernetesBroker {
    KubernetesBroker::builder(client)
        .instance("mock")
        .namespace("jobs")
        .effective_timeout(Duration::ZERO)
        .build()
        .unwrap()
}

#[tokio::test]
async fn grant_creates_exactly_the_scoped_objects_and_a_token() {
    let (client, seen) = mock(|s| match s.method.as_str() {
        "POST" => echo_created(s),
        _ => status(500, "InternalError"),
    });
    let b = broker(client);
    let req = request(
        vec![
            "k8s:prod:deployments/web:patch".into(),
            "k8s:prod:pods:list".into(),
        ],
        Duration::from_secs(60),
    );
    let grant = b.grant(&req).await.unwrap();
    let seen = seen.lock().unwrap().clone();
    let uris: Vec<&str> = seen.iter().map(|s| s.uri.as_str()).collect();
    let name = grant.hints[HINT_SERVICE_ACCOUNT].clone();
    assert_eq!(
        uris,
        vec![
            "/api/v1/namespaces/jobs/serviceaccounts?".to_owned(),
            "/apis/rbac.authorization.k8s.io/v1/namespaces/prod/roles?".to_owned(),
            "/apis/rbac.authorization.k8s.io/v1/namespaces/prod/rolebindings?".to_owned(),
            format!("/api/v1/namespaces/jobs/serviceaccounts/{name}/token?"),
        ]
    );
    // The Role holds exactly the scopes, one rule each.
    assert_eq!(
        seen[1].body["rules"],
        json!([
            {"apiGroups": ["apps"], "resources": ["deployments"], "resourceNames": ["web"], "verbs": ["patch"]},
            {"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}
        ])
    );
    assert_eq!(seen[0].body["automountServiceAccountToken"], json!(false));
    assert_eq!(
        seen[2].body["subjects"],
        json!([{"kind": "ServiceAccount", "name": name, "namespace": "jobs"}])
    );
    assert_eq!(seen[2].body["roleRef"]["kind"], json!("Role"));
    // A 60 s grant still needs the API's 600 s minimum token; the grant itself ends at 60 s.
    assert_eq!(seen[3].body["spec"]["expirationSeconds"], json!(600));
    let life = grant.not_after - grant.issued_at;
    assert_eq!(life.whole_seconds(), 60);
    for s in &seen[..3] {
        assert_eq!(
            s.body["metadata"]["labels"]["agent-gateway.io/instance"],
            json!("mock")
        );
        assert_eq!(
            s.body["metadata"]["labels"]["agent-gateway.io/correlation-id"],
            json!(req.correlation_id.to_string())
        );
        assert!(s.body["metadata"]["annotations"]["agent-gateway.io/expires-at"].is_string());
    }
    assert_eq!(
        grant.job_env[TOKEN_ENV].expose_str(),
        Some("mock-token-value-123456")
    );
    assert!(!format!("{grant:?}").contains("mock-token-value"));
}

#[tokio::test]
async fn forbidden_role_rolls_back_what_was_created() {
    let (client, seen) = mock(|s| match (s.method.as_str(), s.uri.contains("/roles")) {
        ("POST", true) => status(403, "Forbidden"),
        ("POST", false) => echo_created(s),
        ("DELETE", _) => status(404, "NotFound"),
        _ => status(500, "InternalError"),
    });
    let err = broker(client)
        .grant(&request(
            vec!["k8s:prod:pods:get".into()],
            Duration::from_secs(60),
        ))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(err.to_string().contains("403"), "{err}");
    let seen = seen.lock().unwrap().clone();
    let deletes: Vec<&str> = seen
        .iter()
        .filter(|s| s.method == "DELETE")
        .map(|s| s.uri.split('/').nth_back(1).unwrap())
        .collect();
    assert_eq!(deletes, vec!["rolebindings", "roles", "serviceaccounts"]);
}

#[tokio::test]
async fn conflict_and_invalid_map_to_their_kinds() {
    let (client, _) = mock(|_| status(409, "AlreadyExists"));
    let err = broker(client)
        .grant(&request(
            vec!["k8s:prod:pods:get".into()],
            Duration::from_secs(60),
        ))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict);

    let (client, seen) = mock(|_| status(500, "InternalError"));
    let b = broker(client);
    let err = b
        .grant(&request(
            vec!["k8s:prod:pods:*".into()],
            Duration::from_secs(60),
        ))
        .await
        .unwrap_err();
    assert_eq!(
        err.kind(),
        ErrorKind::Denied,
        "bad scope is refused before any request"
    );
    let err = b
        .grant(&request(
            vec!["k8s:a:pods:get".into(), "k8s:b:pods:get".into()],
            Duration::from_secs(60),
        ))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Denied);
    assert!(seen.lock().unwrap().is_empty());
}

#[tokio::test]
async fn revoke_is_idempotent_on_404_and_reports_403() {
    let (client, seen) = mock(|s| match s.method.as_str() {
        "POST" => echo_created(s),
        "DELETE" => status(404, "NotFound"),
        _ => status(500, "InternalError"),
    });
    let b = broker(client);
    let grant = b
        .grant(&request(
            vec!["k8s:prod:pods:get".into()],
            Duration::from_secs(60),
        ))
        .await
        .unwrap();
    b.revoke(&grant).await.unwrap();
    b.revoke(&grant).await.unwrap();
    let deletes = seen
        .lock()
        .unwrap()
        .iter()
        .filter(|s| s.method == "DELETE")
        .count();
    assert_eq!(deletes, 6);

    let (client, _) = mock(|_| status(403, "Forbidden"));
    let err = broker(client).revoke(&grant).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable);

    let mut forged = grant.clone();
    forged.id = "kube-system-admin".into();
    let (client, seen) = mock(|_| deleted());
    assert_eq!(
        broker(client).revoke(&forged).await.unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
    assert!(
        seen.lock().unwrap().is_empty(),
        "a foreign id must not reach the API"
    );
}

#[tokio::test]
async fn unreachable_api_server_is_unavailable() {
    // Nothing listens on port 1.
    let config = Config::new("http://127.0.0.1:1".parse().unwrap());
    let client = Client::try_from(config).unwrap();
    let err = broker(client.clone())
        .grant(&request(
            vec!["k8s:prod:pods:get".into()],
            Duration::from_secs(60),
        ))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    let runner = KubernetesRunner::builder(client)
        .default_image("busybox")
        .teardown_timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let err = runner
        .run(job(), CancellationToken::new())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
}

fn job() -> JobSpec {
    let mut spec = JobSpec::new(
        RequestId::new(),
        AgentId::new("agent:mock").unwrap(),
        vec!["/bin/sh".into(), "-c".into(), "echo hi".into()],
    );
    spec.limits.timeout = Duration::from_secs(20);
    spec
}

fn runner(client: Client) -> KubernetesRunner {
    KubernetesRunner::builder(client)
        .instance("mock")
        .namespace("jobs")
        .default_image("busybox:test")
        .teardown_timeout(Duration::from_secs(2))
        .build()
        .unwrap()
}

fn pod_json(job: &str, terminated: Option<Value>) -> Value {
    let mut pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": format!("{job}-abcde"), "namespace": "jobs",
                     "labels": {"agent-gateway.io/job": job}},
        "status": {"phase": "Running"}
    });
    if let Some(t) = terminated {
        pod["status"] = json!({"phase": "Failed", "containerStatuses": [{
            "name": "job", "ready": false, "restartCount": 0, "image": "busybox", "imageID": "",
            "state": {"terminated": t}}]});
    }
    pod
}

fn list(items: Vec<Value>) -> String {
    json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": "100"}, "items": items})
        .to_string()
}

/// The Job's name, taken from the recorded create request.
fn job_name(seen: &Mutex<Vec<Seen>>) -> String {
    seen.lock()
        .unwrap()
        .iter()
        .find(|s| s.method == "POST" && s.uri.contains("/jobs"))
        .and_then(|s| s.body["metadata"]["name"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

#[tokio::test]
async fn gone_watch_relists_and_the_outcome_comes_from_the_terminated_state() {
    // State: pods are listed as running until the watch has answered 410 Gone once; the relist
    // then shows the container terminated with exit code 3 and an OOM-free reason.
    let state = Arc::new(Mutex::new((0u32, false))); // (watches, torn down)
    let st = Arc::clone(&state);
    let seen_cell: Arc<Mutex<Option<SeenLog>>> = Arc::new(Mutex::new(None));
    let seen_for_route = Arc::clone(&seen_cell);
    let (client, seen) = mock(move |s| {
        let seen = seen_for_route.lock().unwrap().clone().unwrap();
        let name = job_name(&seen);
        let mut st = st.lock().unwrap();
        let uri = s.uri.as_str();
        match s.method.as_str() {
            "POST" => echo_created(s),
            "GET" if uri.contains("/log") => (200, "hello from the job".into()),
            "GET" if uri.contains("watch=true") => {
                st.0 += 1;
                (
                    200,
                    format!(
                        "{}\n",
                        json!({"type": "ERROR", "object": {
                    "kind": "Status", "apiVersion": "v1", "status": "Failure",
                    "message": "too old resource version", "reason": "Expired", "code": 410}})
                    ),
                )
            }
            "GET" if uri.contains("/pods") => {
                if st.1 {
                    (200, list(vec![]))
                } else if st.0 == 0 {
                    (200, list(vec![pod_json(&name, None)]))
                } else {
                    (
                        200,
                        list(vec![pod_json(
                            &name,
                            Some(json!({
                        "exitCode": 3, "reason": "Error", "message": "some stderr"})),
                        )]),
                    )
                }
            }
            // The teardown's wait for the Job (a list by name, then a watch), answered as an
            // API server does: an empty list once the Job is deleted.
            "GET" if uri.contains("fieldSelector=metadata.name") => {
                if st.1 {
                    (200, list(vec![]))
                } else {
                    (
                        200,
                        list(vec![
                            json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name}}),
                        ]),
                    )
                }
            }
            "GET" if uri.contains("/jobs/") => {
                if st.1 {
                    status(404, "NotFound")
                } else {
                    (200, json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name}}).to_string())
                }
            }
            "DELETE" => {
                if uri.contains("/jobs/") {
                    st.1 = true;
                }
                deleted()
            }
            _ => status(500, "InternalError"),
        }
    });
    *seen_cell.lock().unwrap() = Some(Arc::clone(&seen));
    let out = runner(client)
        .run(job(), CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(out.status, JobStatus::Exited { code: 3 });
    assert_eq!(out.stdout, "hello from the job");
    assert_eq!(out.stderr, "some stderr");
    assert!(out.teardown.complete, "{}", out.teardown.detail);
    assert_eq!(
        state.lock().unwrap().0,
        1,
        "exactly one watch, then a relist"
    );

    let seen = seen.lock().unwrap().clone();
    let creates: Vec<&Seen> = seen.iter().filter(|s| s.method == "POST").collect();
    assert!(
        creates[0]
            .uri
            .starts_with("/apis/networking.k8s.io/v1/namespaces/jobs/networkpolicies")
    );
    assert!(
        creates[1]
            .uri
            .starts_with("/apis/batch/v1/namespaces/jobs/jobs")
    );
    let job = &creates[1].body;
    assert_eq!(job["spec"]["backoffLimit"], json!(0));
    assert_eq!(job["spec"]["activeDeadlineSeconds"], json!(20));
    assert_eq!(
        job["spec"]["template"]["spec"]["automountServiceAccountToken"],
        json!(false)
    );
    // The log request is bounded.
    let log = seen.iter().find(|s| s.uri.contains("/log")).unwrap();
    assert!(log.uri.contains("limitBytes=65537"), "{}", log.uri);
    // The NetworkPolicy is deleted last, after the Job and Pods are gone.
    let last_delete = seen.iter().rev().find(|s| s.method == "DELETE").unwrap();
    assert!(
        last_delete.uri.contains("/networkpolicies/"),
        "{}",
        last_delete.uri
    );
}

#[tokio::test]
async fn forbidden_job_create_is_unavailable_and_cleans_up() {
    let (client, seen) = mock(|s| match s.method.as_str() {
        "POST" if s.uri.contains("/jobs") => status(403, "Forbidden"),
        "POST" => echo_created(s),
        "GET" if s.uri.contains("/pods") => (200, list(vec![])),
        // A list of Jobs by name (the teardown's wait): there is none.
        "GET" if s.uri.contains("fieldSelector=metadata.name") => (200, list(vec![])),
        "GET" => status(404, "NotFound"),
        "DELETE" => status(404, "NotFound"),
        _ => status(500, "InternalError"),
    });
    let mut spec = job();
    spec.secret_env
        .insert("TOKEN".into(), gateway_core::Secret::from("do-not-leak-me"));
    let err = runner(client)
        .run(spec, CancellationToken::new())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(!err.to_string().contains("do-not-leak-me"));
    let seen = seen.lock().unwrap().clone();
    for kind in ["/jobs/", "/secrets/", "/networkpolicies/"] {
        assert!(
            seen.iter()
                .any(|s| s.method == "DELETE" && s.uri.contains(kind)),
            "no cleanup of {kind}"
        );
    }
}

#[tokio::test]
async fn not_found_namespace_is_not_found() {
    let (client, _) = mock(|s| match s.method.as_str() {
        "POST" => status(404, "NotFound"),
        "GET" if s.uri.contains("/pods") => (200, list(vec![])),
        _ => status(404, "NotFound"),
    });
    let err = runner(client)
        .run(job(), CancellationToken::new())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
}

#[tokio::test]
async fn image_pull_failure_is_an_error_not_an_outcome() {
    let (client, seen) = mock(|s| match s.method.as_str() {
        "POST" => echo_created(s),
        "GET" if s.uri.contains("/pods") => (
            200,
            list(vec![json!({
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
            "status": {"phase": "Pending", "containerStatuses": [{"name": "job", "ready": false,
              "restartCount": 0, "image": "x", "imageID": "",
              "state": {"waiting": {"reason": "ErrImageNeverPull", "message": "not present"}}}]}})]),
        ),
        "GET" => status(404, "NotFound"),
        "DELETE" => deleted(),
        _ => status(500, "InternalError"),
    });
    let err = runner(client)
        .run(job(), CancellationToken::new())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(err.to_string().contains("ErrImageNeverPull"));
    assert!(
        seen.lock()
            .unwrap()
            .iter()
            .any(|s| s.method == "DELETE" && s.uri.contains("/jobs/"))
    );
}

/// The Job controller deletes a Pod when the Job's deadline passes: a Pod deleted while the
/// runner waits makes it ask the Job, which reports DeadlineExceeded, so the job ends as timed
/// out then, not only when the runner's own (longer) deadline passes.
#[tokio::test]
async fn pod_deleted_while_waiting_asks_the_job_and_times_out() {
    // (watches, torn down)
    let state = Arc::new(Mutex::new((0u32, false)));
    let st = Arc::clone(&state);
    let seen_cell: Arc<Mutex<Option<SeenLog>>> = Arc::new(Mutex::new(None));
    let seen_for_route = Arc::clone(&seen_cell);
    let (client, seen) = mock(move |s| {
        let seen = seen_for_route.lock().unwrap().clone().unwrap();
        let name = job_name(&seen);
        let mut st = st.lock().unwrap();
        let uri = s.uri.as_str();
        let job = |deadline_passed: bool| {
            let mut j =
                json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name}});
            if deadline_passed {
                j["status"] = json!({"conditions": [{"type": "Failed", "status": "True",
                    "reason": "DeadlineExceeded"}]});
            }
            j
        };
        match s.method.as_str() {
            "POST" => echo_created(s),
            "GET" if uri.contains("/log") => (200, "partial".into()),
            "GET" if uri.contains("watch=true") => {
                st.0 += 1;
                if st.0 == 1 {
                    let mut pod = pod_json(&name, None);
                    // A real event carries the object's resource version (without one the
                    // watcher would relist, which would hide what this test checks).
                    pod["metadata"]["resourceVersion"] = json!("101");
                    let event = json!({"type": "DELETED", "object": pod});
                    (200, format!("{event}\n"))
                } else {
                    // Later watches see nothing happen.
                    (200, String::new())
                }
            }
            "GET" if uri.contains("/pods") => {
                if st.1 {
                    (200, list(vec![]))
                } else {
                    (200, list(vec![pod_json(&name, None)]))
                }
            }
            "GET" if uri.contains("fieldSelector=metadata.name") => {
                if st.1 {
                    (200, list(vec![]))
                } else {
                    (200, list(vec![job(st.0 > 0)]))
                }
            }
            "GET" if uri.contains("/jobs/") => (200, job(st.0 > 0).to_string()),
            "DELETE" => {
                if uri.contains("/jobs/") {
                    st.1 = true;
                }
                deleted()
            }
            _ => status(500, "InternalError"),
        }
    });
    *seen_cell.lock().unwrap() = Some(Arc::clone(&seen));
    let mut spec = job();
    spec.limits.timeout = Duration::from_secs(8);
    let started = std::time::Instant::now();
    let out = runner(client)
        .run(spec, CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(out.status, JobStatus::TimedOut);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "ended by the runner's own deadline ({:?}), not by the Job's condition",
        started.elapsed()
    );
    assert_eq!(out.stdout, "partial", "the last Pod seen is the one logged");
    assert!(out.teardown.complete, "{}", out.teardown.detail);
    assert!(state.lock().unwrap().0 >= 1);
}
