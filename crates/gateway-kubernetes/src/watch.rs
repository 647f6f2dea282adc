//! Watching one job until it ends, with [`kube::runtime::watcher`]: it lists, watches from the
//! list's resource version, re-watches when a watch call ends and relists when the server
//! answers 410 Gone. No polling loop.

use crate::error;
use crate::pod::CONTAINER;
use futures::StreamExt;
use gateway_core::RunnerError;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ContainerStateTerminated, Pod};
use kube::Api;
use kube::runtime::watcher::{self, Event, ListSemantic, watcher};
use std::pin::pin;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Pause after a failed list, watch or Job read before trying again.
const RETRY_PAUSE: Duration = Duration::from_millis(500);

/// Waiting reasons after which the container will never start by itself.
const FATAL_WAITING: &[&str] = &[
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "ErrImageNeverPull",
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
];

/// How the watch ended.
#[derive(Debug)]
pub(crate) enum End {
    /// The job's container terminated (the Pod is named for the log request).
    Terminated {
        pod: String,
        state: Box<ContainerStateTerminated>,
    },
    /// The runner's own deadline passed, or the Job controller reported DeadlineExceeded.
    TimedOut { pod: Option<String> },
    /// The caller cancelled.
    Cancelled { pod: Option<String> },
    /// The container can never start (bad image, missing secret, …) or the Pod failed without
    /// a container state (evicted, …).
    StartFailed { reason: String, message: String },
}

/// What a Pod's state says about the job.
pub(crate) fn judge_pod(pod: &Pod) -> Option<End> {
    let name = pod.metadata.name.clone().unwrap_or_default();
    let status = pod.status.as_ref()?;
    let container = status
        .container_statuses
        .iter()
        .flatten()
        .find(|c| c.name == CONTAINER);
    if let Some(state) = container.and_then(|c| c.state.as_ref()) {
        if let Some(t) = &state.terminated {
            return Some(End::Terminated {
                pod: name,
                state: Box::new(t.clone()),
            });
        }
        if let Some(w) = &state.waiting
            && let Some(reason) = w.reason.as_deref()
            && FATAL_WAITING.contains(&reason)
        {
            return Some(End::StartFailed {
                reason: reason.to_owned(),
                message: w.message.clone().unwrap_or_default(),
            });
        }
    }
    if status.phase.as_deref() == Some("Failed") {
        if status.reason.as_deref() == Some("DeadlineExceeded") {
            return Some(End::TimedOut { pod: Some(name) });
        }
        return Some(End::StartFailed {
            reason: status.reason.clone().unwrap_or_else(|| "PodFailed".into()),
            message: status.message.clone().unwrap_or_default(),
        });
    }
    None
}

/// Whether the Job controller gave up on the job because its deadline passed.
pub(crate) fn job_deadline_exceeded(job: &Job) -> bool {
    job.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| {
            cs.iter().any(|c| {
                c.type_ == "Failed"
                    && c.status == "True"
                    && c.reason.as_deref() == Some("DeadlineExceeded")
            })
        })
}

/// Watches job `name` (its Pods by `selector`) until it ends, the deadline passes or `cancel`
/// fires. Watch errors are retried until then (the watcher relists by itself after a 410
/// Gone); the deadline bounds every wait.
pub(crate) async fn wait_for_end(
    pods: &Api<Pod>,
    jobs: &Api<Job>,
    name: &str,
    selector: &str,
    deadline: Instant,
    cancel: &CancellationToken,
) -> Result<End, RunnerError> {
    // The last Pod seen, for the log request after a timeout or cancellation. A Mutex only
    // because the select arms below read it while the watch future holds it (never across an
    // await).
    let last_pod: Mutex<Option<String>> = Mutex::new(None);
    let remember = |pod: &Pod| {
        if let Some(n) = &pod.metadata.name {
            *last_pod.lock().unwrap_or_else(PoisonError::into_inner) = Some(n.clone());
        }
    };
    let last = || {
        last_pod
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    };
    let config = watcher::Config::default()
        .labels(selector)
        // A consistent list, as a plain GET would give, rather than the API server's cache.
        .list_semantic(ListSemantic::MostRecent);
    let watch = async {
        let mut events = pin!(watcher(pods.clone(), config));
        loop {
            match events.next().await {
                Some(Ok(Event::InitApply(pod) | Event::Apply(pod))) => {
                    remember(&pod);
                    if let Some(end) = judge_pod(&pod) {
                        return Ok(end);
                    }
                }
                // After every (re)list, and whenever a Pod disappears (the Job controller
                // deletes Pods when the Job's deadline passes), ask the Job itself.
                Some(Ok(Event::InitDone | Event::Delete(_))) => match jobs.get_opt(name).await {
                    Ok(Some(job)) if job_deadline_exceeded(&job) => {
                        return Ok(End::TimedOut { pod: last() });
                    }
                    Ok(_) => {}
                    Err(e) => {
                        let e = error::runner("reading the job", e);
                        tracing::warn!(error = %e, "watching job {name}: retrying");
                        tokio::time::sleep(RETRY_PAUSE).await;
                    }
                },
                Some(Ok(Event::Init)) => {}
                // The watcher recovers by itself on the next poll (re-watch, or relist after
                // 410 Gone); the pause keeps a failing API server from being hammered.
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "watching job {name}: retrying");
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
                // A watcher never ends by itself.
                None => {
                    return Err(RunnerError::internal_msg(
                        "the pod watch ended unexpectedly",
                    ));
                }
            }
        }
    };
    tokio::select! {
        biased;
        () = cancel.cancelled() => Ok(End::Cancelled { pod: last() }),
        () = tokio::time::sleep_until(deadline) => Ok(End::TimedOut { pod: last() }),
        r = watch => r,
    }
}
