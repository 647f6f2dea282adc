//! [`Runner`](gateway_core::Runner) backends for agent-gateway: every job runs in a fresh,
//! isolated, resource-limited environment that is destroyed afterwards, whatever happens.
//!
//! - [`LocalRunner`]: the embedded default. A local process with a cleared environment, own
//!   process group, rlimits and a tree-killing timeout; where the machine allows it (root,
//!   bubblewrap, cgroups), a sandbox: namespaces (no network, read-only system and
//!   `/proc/sys`, sized private tmpfs), a dedicated unprivileged host uid per job, a cgroup per
//!   job for memory, processes and CPU rate, and a seccomp filter.
//! - `DockerRunner` (feature `docker`, on by default): one hardened container per job (no network, no capabilities, read-only
//!   root, non-root user, memory/CPU/pids limits, default seccomp), labelled with the runner's
//!   instance, with a crash reaper and an optional pool of pre-created containers.

#[cfg(feature = "docker")]
pub mod docker;

pub mod local;

#[cfg(feature = "docker")]
pub use docker::{DockerRunner, DockerRunnerBuilder, reap_instance};
pub use local::{DEFAULT_SANDBOX_POOL, LocalRunner, LocalRunnerBuilder};
