//! A pool of containers created but not started, to take `create` off a job's critical path.
//!
//! A pooled container is created before its job is known, so it cannot carry the job's command
//! or environment: it runs `/bin/sh -s`, and the runner writes a tiny launcher script to its
//! stdin (`export K='v'` lines, then `exec 'argv'…`). Each container runs exactly one job and is
//! removed afterwards; a background task keeps `size` of them ready.

use super::config::{self, Hardening};
use super::{daemon_error, remove};
use bollard::Docker;
use bollard::models::ContainerCreateBody;
use bollard::query_parameters::RenameContainerOptionsBuilder;
use gateway_core::{JobLimits, JobSpec, NetworkAccess};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

struct Inner {
    docker: Docker,
    hardening: Hardening,
    image: String,
    size: usize,
    limits: JobLimits,
    ready: Mutex<VecDeque<String>>,
    wake: Notify,
    stop: CancellationToken,
    done: Notify,
    stopped: std::sync::atomic::AtomicBool,
}

/// The pool; dropping it stops the refill task, which then removes the idle containers.
pub(crate) struct Pool {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("image", &self.inner.image)
            .field("size", &self.inner.size)
            .field("ready", &self.ready())
            .finish()
    }
}

impl Pool {
    /// Starts the refill task (needs a Tokio runtime).
    pub(crate) fn start(
        docker: Docker,
        hardening: Hardening,
        image: String,
        size: usize,
        limits: JobLimits,
    ) -> Self {
        let inner = Arc::new(Inner {
            docker,
            hardening,
            image,
            size,
            limits,
            ready: Mutex::new(VecDeque::with_capacity(size)),
            wake: Notify::new(),
            stop: CancellationToken::new(),
            done: Notify::new(),
            stopped: std::sync::atomic::AtomicBool::new(false),
        });
        tokio::spawn(refill(inner.clone()));
        Self { inner }
    }

    fn queue(&self) -> std::sync::MutexGuard<'_, VecDeque<String>> {
        // The queue holds plain ids; a panic elsewhere cannot leave it inconsistent.
        self.inner
            .ready
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// How many containers are ready.
    pub(crate) fn ready(&self) -> usize {
        self.queue().len()
    }

    /// Takes a ready container (never handed out twice) and asks for a refill.
    pub(crate) fn take(&self) -> Option<String> {
        let id = self.queue().pop_front();
        self.inner.wake.notify_one();
        id
    }

    /// The launcher script for `spec` if a pooled container can run it: same image and
    /// limits, no network, no mounts, environment names a shell can export.
    pub(crate) fn script_for(&self, spec: &JobSpec, image: &str) -> Option<Vec<u8>> {
        let l = &spec.limits;
        let p = &self.inner.limits;
        let same_limits = l.cpu_millis == p.cpu_millis
            && l.memory_bytes == p.memory_bytes
            && l.pids == p.pids
            && l.open_files == p.open_files;
        if image != self.inner.image
            || !same_limits
            || !spec.mounts.is_empty()
            || !matches!(spec.network, NetworkAccess::None)
        {
            return None;
        }
        let mut script = Vec::new();
        let plain = spec.env.iter().map(|(k, v)| (k, v.as_bytes()));
        let secret = spec.secret_env.iter().map(|(k, v)| (k, v.expose()));
        for (key, value) in plain.chain(secret) {
            if !is_shell_name(key) || value.contains(&0) {
                return None;
            }
            script.extend_from_slice(b"export ");
            script.extend_from_slice(key.as_bytes());
            script.push(b'=');
            quote_into(&mut script, value);
            script.push(b'\n');
        }
        script.extend_from_slice(b"exec");
        for arg in &spec.command {
            if arg.contains('\0') {
                return None;
            }
            script.push(b' ');
            quote_into(&mut script, arg.as_bytes());
        }
        // The job's stdin is not the launcher's: it gets nothing, like a fresh container.
        script.extend_from_slice(b" </dev/null\n");
        Some(script)
    }

    /// Stops refilling and removes the idle containers; waits for it.
    pub(crate) async fn shutdown(&self) {
        let done = self.inner.done.notified();
        tokio::pin!(done);
        done.as_mut().enable();
        self.inner.stop.cancel();
        if !self.inner.stopped.load(std::sync::atomic::Ordering::SeqCst) {
            let _ = tokio::time::timeout(Duration::from_secs(30), done).await;
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.inner.stop.cancel();
    }
}

/// Renames a pooled container after the job it now serves: labels cannot change after
/// creation, so the name carries the correlation id. Best effort (the id is in the outcome).
pub(crate) async fn bind(docker: &Docker, id: &str, spec: &JobSpec) {
    let short: String = id.chars().take(8).collect();
    let name = format!("agw-{}-{short}", spec.correlation_id);
    let options = RenameContainerOptionsBuilder::default().name(&name).build();
    if let Err(e) = docker.rename_container(id, options).await {
        tracing::debug!(container = %id, error = %e, "docker: renaming a pooled container failed");
    }
}

fn is_shell_name(key: &str) -> bool {
    let mut chars = key.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// POSIX single quotes: everything literal; a `'` becomes `'\''`.
fn quote_into(out: &mut Vec<u8>, value: &[u8]) {
    out.push(b'\'');
    for &b in value {
        if b == b'\'' {
            out.extend_from_slice(b"'\\''");
        } else {
            out.push(b);
        }
    }
    out.push(b'\'');
}

fn pooled_container(inner: &Inner) -> ContainerCreateBody {
    let mut labels = config::container_labels(&inner.hardening, &Default::default());
    labels.insert(gateway_core::labels::POOL.into(), "true".into());
    ContainerCreateBody {
        image: Some(inner.image.clone()),
        entrypoint: Some(vec!["/bin/sh".into()]),
        cmd: Some(vec!["-s".into()]),
        user: Some(inner.hardening.user.clone()),
        labels: Some(labels),
        attach_stdin: Some(true),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        open_stdin: Some(true),
        stdin_once: Some(true),
        tty: Some(false),
        network_disabled: Some(true),
        host_config: Some(config::host_config(
            &inner.hardening,
            &inner.limits,
            "none".into(),
            Vec::new(),
        )),
        ..ContainerCreateBody::default()
    }
}

async fn refill(inner: Arc<Inner>) {
    let mut backoff = Duration::from_millis(100);
    'outer: loop {
        loop {
            let missing = inner.size.saturating_sub(
                inner
                    .ready
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .len(),
            );
            if missing == 0 || inner.stop.is_cancelled() {
                break;
            }
            let created = tokio::select! {
                r = inner.docker.create_container(None, pooled_container(&inner)) => r,
                () = inner.stop.cancelled() => break 'outer,
            };
            match created {
                Ok(c) => {
                    backoff = Duration::from_millis(100);
                    inner
                        .ready
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push_back(c.id);
                }
                Err(e) => {
                    let e = daemon_error("creating a pooled container", e);
                    tracing::warn!(error = %e, "docker: pool refill failed; retrying");
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        () = inner.stop.cancelled() => break 'outer,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
            }
        }
        tokio::select! {
            () = inner.wake.notified() => {}
            () = inner.stop.cancelled() => break,
        }
    }
    let idle: Vec<String> = inner
        .ready
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .drain(..)
        .collect();
    for id in idle {
        if let Err(e) = remove(&inner.docker, &id).await {
            tracing::warn!(container = %id, error = %e, "docker: removing an idle pooled container failed");
        }
    }
    inner
        .stopped
        .store(true, std::sync::atomic::Ordering::SeqCst);
    inner.done.notify_waiters();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_is_literal() {
        let mut out = Vec::new();
        quote_into(&mut out, b"it's $HOME `x`");
        assert_eq!(out, b"'it'\\''s $HOME `x`'");
    }

    #[test]
    fn shell_names() {
        assert!(is_shell_name("A_1"));
        assert!(is_shell_name("_x"));
        assert!(!is_shell_name("1A"));
        assert!(!is_shell_name("A-B"));
        assert!(!is_shell_name(""));
    }
}
