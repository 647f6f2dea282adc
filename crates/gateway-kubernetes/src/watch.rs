//! Watching one job until it ends: list, then watch from the list's resource version; relist
//! when the watch ends or the server answers 410 Gone. No tight polling loop.

use crate::error;
use crate::pod::CONTAINER;
use futures::{StreamExt, TryStreamExt};
use gateway_core::RunnerError;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ContainerStateTerminated, Pod};
use kube::Api;
use kube::api::{ListParams, WatchEvent, WatchParams};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How long one watch request stays open before the runner relists (and rechecks the Job).
const WATCH_WINDOW_SECONDS: u32 = 10;
/// Pause after a failed list or watch before trying again.
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
/// fires. API errors while waiting are retried until then; the deadline bounds every wait.
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
    loop {
        let cycle = async {
            // 1. The current state, and the resource version to watch from.
            let list = pods
                .list(&ListParams::default().labels(selector))
                .await
                .map_err(|e| error::runner("listing job pods", e))?;
            for pod in &list.items {
                remember(pod);
                if let Some(end) = judge_pod(pod) {
                    return Ok(Some(end));
                }
            }
            if let Some(job) = jobs
                .get_opt(name)
                .await
                .map_err(|e| error::runner("reading the job", e))?
                && job_deadline_exceeded(&job)
            {
                return Ok(Some(End::TimedOut { pod: last() }));
            }
            let version = list.metadata.resource_version.unwrap_or_else(|| "0".into());
            // 2. Changes from there, until the window closes or the server says 410 Gone.
            let params = WatchParams::default()
                .labels(selector)
                .timeout(WATCH_WINDOW_SECONDS);
            let mut stream = pods
                .watch(&params, &version)
                .await
                .map_err(|e| error::runner("watching job pods", e))?
                .boxed();
            while let Some(event) = stream
                .try_next()
                .await
                .map_err(|e| error::runner("reading the pod watch", e))?
            {
                match event {
                    WatchEvent::Added(pod) | WatchEvent::Modified(pod) => {
                        remember(&pod);
                        if let Some(end) = judge_pod(&pod) {
                            return Ok(Some(end));
                        }
                    }
                    // The Job controller deletes Pods when the deadline passes: relist.
                    WatchEvent::Deleted(_) => return Ok(None),
                    WatchEvent::Bookmark(_) => {}
                    // 410 Gone (history compacted) or another error event: relist.
                    WatchEvent::Error(status) => {
                        tracing::debug!(code = status.code, "pod watch error event; relisting");
                        return Ok(None);
                    }
                }
            }
            Ok::<_, RunnerError>(None)
        };
        let outcome = tokio::select! {
            biased;
            () = cancel.cancelled() => return Ok(End::Cancelled { pod: last() }),
            () = tokio::time::sleep_until(deadline) => return Ok(End::TimedOut { pod: last() }),
            r = cycle => r,
        };
        match outcome {
            Ok(Some(end)) => return Ok(end),
            Ok(None) => {}
            Err(e) => {
                // Transient API trouble: keep trying until the deadline or cancellation decide.
                tracing::warn!(error = %e, "watching job {name} failed; retrying");
                tokio::select! {
                    biased;
                    () = cancel.cancelled() => return Ok(End::Cancelled { pod: last() }),
                    () = tokio::time::sleep_until(deadline) => return Ok(End::TimedOut { pod: last() }),
                    () = tokio::time::sleep(RETRY_PAUSE) => {}
                }
            }
        }
    }
}
