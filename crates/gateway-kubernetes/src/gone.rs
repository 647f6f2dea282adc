//! Waiting until a job's objects are gone, with [`kube::runtime`]: [`await_condition`] for the
//! Job (one named object) and a [`watcher`] on the job's Pod selector for its Pods (whose
//! names the runner may never have seen). No polling loop.
//!
//! Both waits run until they succeed: API errors are retried after a pause. The caller bounds
//! them with its teardown deadline.

use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::runtime::wait::await_condition;
use kube::runtime::watcher::{self, Event, ListSemantic, watcher};
use std::collections::BTreeSet;
use std::pin::pin;
use std::time::Duration;

/// Pause after a failed list or watch before trying again.
const RETRY_PAUSE: Duration = Duration::from_millis(250);

/// Returns once the Job `name` and every Pod matching `selector` are gone.
pub(crate) async fn job_and_pods(jobs: &Api<Job>, pods: &Api<Pod>, name: &str, selector: &str) {
    futures::join!(job(jobs, name), no_pods(pods, selector));
}

/// Returns once the Job `name` does not exist. Job names carry a random suffix and are never
/// reused, so "absent" is enough (no uid check).
async fn job(jobs: &Api<Job>, name: &str) {
    loop {
        match await_condition(jobs.clone(), name, |j: Option<&Job>| j.is_none()).await {
            Ok(_) => return,
            Err(e) => {
                tracing::debug!(job = name, error = %e, "waiting for the job to go; retrying");
                tokio::time::sleep(RETRY_PAUSE).await;
            }
        }
    }
}

/// Returns once a complete view (a list, then the watch events after it) holds no Pod matching
/// `selector`.
async fn no_pods(pods: &Api<Pod>, selector: &str) {
    let config = watcher::Config::default()
        .labels(selector)
        // A consistent list: the API server's cache could still lack a Pod just created.
        .list_semantic(ListSemantic::MostRecent);
    let mut events = pin!(watcher(pods.clone(), config));
    // Names seen in the current (re)list, and the Pods known to exist once it is complete.
    let mut listing = BTreeSet::new();
    let mut live: Option<BTreeSet<String>> = None;
    while let Some(event) = events.next().await {
        match event {
            Ok(Event::Init) => listing.clear(),
            Ok(Event::InitApply(pod)) => {
                listing.insert(pod.metadata.name.unwrap_or_default());
            }
            Ok(Event::InitDone) => live = Some(std::mem::take(&mut listing)),
            Ok(Event::Apply(pod)) => {
                if let Some(live) = &mut live {
                    live.insert(pod.metadata.name.unwrap_or_default());
                }
            }
            Ok(Event::Delete(pod)) => {
                if let Some(live) = &mut live {
                    live.remove(&pod.metadata.name.unwrap_or_default());
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "waiting for the job's pods to go; retrying");
                tokio::time::sleep(RETRY_PAUSE).await;
            }
        }
        if live.as_ref().is_some_and(BTreeSet::is_empty) {
            return;
        }
    }
    // A watcher never ends; if one did, nothing proves the Pods gone (fail closed: the caller's
    // deadline decides).
    std::future::pending::<()>().await;
}
