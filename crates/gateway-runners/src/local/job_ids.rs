//! The host uids and gids namespaced jobs run as.
//!
//! bubblewrap maps the sandbox's user (`nobody`, 65534) onto the uid that starts it. Started by
//! a root gateway, that is host root: a job could then write host sysctls through `/proc/sys`
//! and leave set-uid-root files behind. So the launcher drops to a dedicated uid and gid before
//! it starts bubblewrap, taken from a range the operator reserves for jobs: it must own nothing
//! on the host and belong to no account. Each job takes the next id of the range (one counter
//! for every runner of the process, starting at a random point), so two jobs running at the
//! same time are two different host users, and RLIMIT_NPROC (counted per user) is a second,
//! per-job bound on processes beside the pids cgroup. Two gateway processes on one host should
//! be given ranges of their own: sharing one, two of their jobs may share a uid, and then share
//! that second bound (the pids cgroup, the one that counts, stays per job).
//!
//! The default range, 65,536 ids from 1,879,048,192 (`0x7000_0000`), lies above the ranges
//! Debian and systemd hand out to accounts, dynamic users and containers.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

/// Jobs started by this process so far, from a random start (so that two processes sharing a
/// range are unlikely to hand out the same ids at the same time).
fn next_job() -> u32 {
    static NEXT: OnceLock<AtomicU32> = OnceLock::new();
    NEXT.get_or_init(|| {
        // The low bits of a v7 uuid are random.
        let random = uuid::Uuid::now_v7().as_u128();
        AtomicU32::new(random as u32)
    })
    .fetch_add(1, Ordering::Relaxed)
}

/// The first id of the default range.
pub const DEFAULT_FIRST_JOB_ID: u32 = 0x7000_0000;
/// The size of the default range.
pub const DEFAULT_JOB_ID_COUNT: u32 = 65_536;

/// A reserved range of host ids, handed out round-robin.
#[derive(Debug)]
pub(crate) struct JobIds {
    first: u32,
    count: u32,
}

impl JobIds {
    /// Checks the range and that this process can switch to it (it runs as root).
    pub(crate) fn new(first: u32, count: u32) -> Result<Self, String> {
        if first == 0 || count == 0 || first.checked_add(count - 1).is_none() {
            return Err(format!(
                "job id range {first}+{count} is empty, starts at root or overflows"
            ));
        }
        // u32::MAX is (uid_t)-1, "no change" to setresuid.
        if first.saturating_add(count - 1) == u32::MAX {
            return Err("job id range must end below 4294967295".into());
        }
        if !rustix::process::geteuid().is_root() {
            return Err(
                "the gateway does not run as root, so jobs cannot run as dedicated host uids \
                 (under bubblewrap they would be the gateway's own uid, which owns its files)"
                    .into(),
            );
        }
        for file in ["/etc/passwd", "/etc/group"] {
            if let Some(name) = account_in_range(file, first, count) {
                return Err(format!(
                    "{file} has an entry {name:?} inside the job id range {first}..{}: \
                     reserve ids that belong to nobody (LocalRunnerBuilder::job_ids)",
                    u64::from(first) + u64::from(count)
                ));
            }
        }
        Ok(Self { first, count })
    }

    /// The id for the next job (used as both uid and gid).
    pub(crate) fn take(&self) -> u32 {
        self.first + next_job() % self.count
    }

    /// Whether `id` lies in the range.
    #[cfg(test)]
    pub(crate) fn contains(&self, id: u32) -> bool {
        id >= self.first && id - self.first < self.count
    }
}

/// The first `name:x:id:…` entry of a passwd/group file whose id lies in the range.
fn account_in_range(file: &str, first: u32, count: u32) -> Option<String> {
    let text = std::fs::read_to_string(file).ok()?;
    text.lines().find_map(|line| {
        let mut fields = line.split(':');
        let name = fields.next()?;
        let id: u32 = fields.nth(1)?.parse().ok()?;
        (id >= first && id - first < count).then(|| name.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_come_from_the_range_and_cycle_through_it() {
        if !rustix::process::geteuid().is_root() {
            return;
        }
        let ids = JobIds::new(3_000_000_000, 3).unwrap();
        // Other tests take ids concurrently from the same counter, so only the range and the
        // cycling are certain.
        let taken: std::collections::BTreeSet<u32> = (0..300).map(|_| ids.take()).collect();
        assert!(taken.iter().all(|id| ids.contains(*id)), "{taken:?}");
        assert_eq!(taken.len(), 3, "{taken:?}");
        assert!(!ids.contains(2_999_999_999) && !ids.contains(3_000_000_003));
    }

    #[test]
    fn root_empty_and_overflowing_ranges_are_refused() {
        assert!(JobIds::new(0, 10).is_err());
        assert!(JobIds::new(10, 0).is_err());
        assert!(JobIds::new(u32::MAX - 1, 5).is_err());
        assert!(JobIds::new(u32::MAX - 1, 2).is_err());
    }

    #[test]
    fn a_range_holding_an_account_is_refused() {
        // Every Debian system has root (0) and nobody (65534) in /etc/passwd.
        if !rustix::process::geteuid().is_root() {
            return;
        }
        let err = JobIds::new(65_000, 1_000).unwrap_err();
        assert!(err.contains("nobody") || err.contains("nogroup"), "{err}");
    }
}
