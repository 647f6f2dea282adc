//! The job's process tree: the job leads its own process group (its pgid is its pid), so one
//! signal to the group reaches every descendant that has not deliberately left it.

use rustix::process::{Pid, Signal, kill_process_group, test_kill_process_group};
use std::time::{Duration, Instant};

/// The job's process group. Dropping it SIGKILLs the group, so a job is killed even when the
/// caller's future is dropped mid-run.
#[derive(Debug)]
pub(crate) struct ProcessGroup {
    pgid: Option<Pid>,
}

impl ProcessGroup {
    /// The group led by `pid` (the job was spawned with `process_group(0)`).
    pub(crate) fn new(pid: Option<u32>) -> Self {
        let pgid = pid
            .and_then(|p| i32::try_from(p).ok())
            .and_then(Pid::from_raw);
        Self { pgid }
    }

    /// Sends `signal` to every process of the group; a group that is already gone is fine.
    pub(crate) fn signal(&self, signal: Signal) {
        if let Some(pgid) = self.pgid {
            // ESRCH (nobody left) is the expected end state, not an error.
            let _ = kill_process_group(pgid, signal);
        }
    }

    /// SIGKILLs the group.
    pub(crate) fn kill(&self) {
        self.signal(Signal::KILL);
    }

    /// Whether any process of the group still exists (zombies included).
    pub(crate) fn alive(&self) -> bool {
        match self.pgid {
            Some(pgid) => test_kill_process_group(pgid).is_ok(),
            None => false,
        }
    }

    /// Kills the group and waits up to `within` for every member to be gone (orphaned members
    /// are reaped by init or the nearest subreaper, which takes a moment). Returns whether the
    /// group is gone; once it is, the handle disarms, because the id may then be reused by an
    /// unrelated process group that a later signal must not hit.
    pub(crate) async fn kill_and_confirm(&mut self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        loop {
            self.kill();
            if !self.alive() {
                self.pgid = None;
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        self.kill();
    }
}
