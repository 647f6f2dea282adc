//! Sandboxes started ahead of their jobs, each used by one job only.
//!
//! A parked sandbox is the whole launch chain ([`launch`](super::launch)) already run: its
//! cgroup made and joined (the costly step, see there), its uid taken, its namespaces, mounts
//! and seccomp filter in place, its trampoline ([`trampoline`](super::trampoline)) waiting on
//! stdin. A job takes one whose cgroup limits are its own, sends it the rest (argv, environment,
//! rlimits) and supervises it like any other; nothing of the sandbox existed before it was
//! started for that job, and nothing of it outlives the job: the entry leaves the pool when
//! taken (the type moves out, it cannot be handed out twice), its tmpfs, namespaces and
//! processes end with it and its cgroup is removed after it like a direct launch's.
//!
//! The pool holds a few sandboxes ([`LocalRunnerBuilder::sandbox_pool`]
//! (super::LocalRunnerBuilder::sandbox_pool)) for the limits of the most recent jobs; every job
//! that fits tops the pool up in the background once it is over and its cgroup removed (a
//! sandbox joining its cgroup would hold that removal up, see `launch`), so a job finds a
//! sandbox started several jobs earlier, long enough ago to be parked unless the runner is
//! saturated. (Refilling in batches, so that the joins share one grace period, was tried:
//! the batch then competes with the next jobs for the CPU, and a closed loop got slower.)
//! Dropping an entry (unused, when the pool makes room for other limits) kills its processes
//! and removes its cgroup (`kill_on_drop`, and [`JobCgroup`]'s own drop);
//! dropping the pool (the runner's last clone) does the same for every entry before it returns.
//!
//! A parked child belongs to the Tokio runtime it was started on (its exit is watched through
//! that runtime's driver), so a job only takes an entry of its own runtime; others are dropped.

use super::cgroup::{CgroupLimits, JobCgroup};
use std::sync::Mutex;
use tokio::process::Child;

/// One started sandbox waiting for its job.
#[derive(Debug)]
pub(crate) struct Parked {
    /// The launch chain (stdin: the trampoline's; stdout, stderr: the job's).
    pub(crate) child: Child,
    /// The job's cgroup, joined by the chain.
    pub(crate) cgroup: JobCgroup,
    /// The name of the cgroup (`job-<name>`) and of the environment (`local-job-<name>`).
    pub(crate) name: String,
    limits: CgroupLimits,
    runtime: Option<tokio::runtime::Id>,
}

impl Parked {
    /// A sandbox just started (from within a Tokio runtime, whose id it keeps).
    pub(crate) fn new(child: Child, cgroup: JobCgroup, name: String, limits: CgroupLimits) -> Self {
        Self {
            child,
            cgroup,
            name,
            limits,
            runtime: current_runtime(),
        }
    }
}

fn current_runtime() -> Option<tokio::runtime::Id> {
    tokio::runtime::Handle::try_current().ok().map(|h| h.id())
}

#[derive(Debug, Default)]
struct State {
    ready: Vec<Parked>,
    /// Sandboxes being started, counted against the capacity.
    starting: usize,
}

/// The parked sandboxes of one runner.
#[derive(Debug)]
pub(crate) struct Pool {
    capacity: usize,
    state: Mutex<State>,
}

impl Pool {
    /// A pool of at most `capacity` sandboxes (0: none, every job launches directly).
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            capacity,
            state: Mutex::new(State::default()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock leaves the lists consistent (every change is one
        // push, remove or counter step), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A ready sandbox for `limits` started on the current runtime and still waiting, removed
    /// from the pool.
    pub(crate) fn take(&self, limits: CgroupLimits) -> Option<Parked> {
        let runtime = current_runtime();
        let (found, stale) = {
            let mut state = self.state();
            let mut stale: Vec<Parked> = extract(&mut state.ready, |p| p.runtime != runtime);
            let mut found = None;
            while let Some(i) = state.ready.iter().position(|p| p.limits == limits) {
                let mut parked = state.ready.remove(i);
                // A sandbox that is no longer waiting (killed from outside while parked) would
                // fail its job: it is discarded and the next one tried.
                if matches!(parked.child.try_wait(), Ok(None)) {
                    found = Some(parked);
                    break;
                }
                stale.push(parked);
            }
            (found, stale)
        };
        // Killed and cleaned up outside the lock.
        drop(stale);
        found
    }

    /// Whether to start one more sandbox for `limits`: yes while the pool has room, making
    /// room by dropping one parked for other limits if it has none. A `true` must be followed
    /// by [`put`](Self::put) or [`abandon`](Self::abandon).
    pub(crate) fn reserve(&self, limits: CgroupLimits) -> bool {
        let evicted = {
            let mut state = self.state();
            let mut evicted = None;
            if state.ready.len() + state.starting >= self.capacity {
                match state.ready.iter().position(|p| p.limits != limits) {
                    Some(i) => evicted = Some(state.ready.remove(i)),
                    None => return false,
                }
            }
            state.starting += 1;
            evicted
        };
        drop(evicted);
        true
    }

    /// A reserved sandbox, now started.
    pub(crate) fn put(&self, parked: Parked) {
        let mut state = self.state();
        state.starting = state.starting.saturating_sub(1);
        state.ready.push(parked);
    }

    /// A reserved sandbox that could not be started.
    pub(crate) fn abandon(&self) {
        let mut state = self.state();
        state.starting = state.starting.saturating_sub(1);
    }

    /// How many sandboxes are ready.
    pub(crate) fn ready(&self) -> usize {
        self.state().ready.len()
    }
}

impl Drop for Pool {
    /// Tears the unused sandboxes down now rather than in background threads (a runner is
    /// often dropped just before its process exits, which would leave their cgroups behind):
    /// all are killed first, then each cgroup is emptied and removed.
    fn drop(&mut self) {
        let ready = std::mem::take(&mut self.state().ready);
        let mut cgroups = Vec::with_capacity(ready.len());
        for parked in ready {
            let Parked {
                mut child, cgroup, ..
            } = parked;
            // The chain's first process; the cgroup removal below kills the rest.
            let _ = child.start_kill();
            cgroups.push(cgroup);
        }
        for cgroup in cgroups {
            // On failure the cgroup's own drop retries in the background.
            let _ = cgroup.remove(TEARDOWN);
        }
    }
}

/// How long dropping the pool waits for one unused sandbox's processes to be gone.
const TEARDOWN: std::time::Duration = std::time::Duration::from_secs(2);

/// Removes and returns the elements matching `pred`.
fn extract<T>(items: &mut Vec<T>, pred: impl Fn(&T) -> bool) -> Vec<T> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < items.len() {
        if pred(&items[i]) {
            out.push(items.swap_remove(i));
        } else {
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extract_takes_exactly_the_matching_elements() {
        let mut v = vec![1, 2, 3, 4, 5, 6];
        let mut odd = extract(&mut v, |x| x % 2 == 1);
        odd.sort_unstable();
        v.sort_unstable();
        assert_eq!((odd, v), (vec![1, 3, 5], vec![2, 4, 6]));
    }

    #[test]
    fn reservations_stop_at_the_capacity() {
        let limits = CgroupLimits {
            memory_bytes: 1,
            pids: 1,
            cpu_millis: 1,
        };
        let pool = Pool::new(2);
        assert!(pool.reserve(limits) && pool.reserve(limits));
        assert!(!pool.reserve(limits), "a third sandbox beyond the capacity");
        pool.abandon();
        assert!(pool.reserve(limits));
        assert!(!Pool::new(0).reserve(limits), "a disabled pool started one");
        assert_eq!(pool.ready(), 0);
        assert!(pool.take(limits).is_none());
    }
}
