//! The seccomp filter every namespaced job runs under, compiled once per runner with
//! `seccompiler` and handed to bubblewrap (`--add-seccomp-fd`).
//!
//! The profile follows Docker's default one for a container without added capabilities: the
//! system calls Docker refuses there are refused here with `EPERM`, everything else is allowed.
//! It is written as a deny list rather than Docker's allow list because a deny list cannot break
//! a program by refusing a system call newer than the list (glibc falls back on `ENOSYS` only,
//! and an allow list answers `EPERM`); what it refuses is what lets a job reach the kernel
//! surface outside its sandbox: namespaces (`unshare`, `setns`, `clone` with a namespace flag),
//! mounts, kernel modules and `kexec`, `bpf`, `perf_event_open`, `ptrace` and cross-process
//! memory access, keyrings, `userfaultfd`, `io_uring`, clocks, swap, quotas, reboot.
//!
//! Two programs, because one seccompiler filter has one action:
//! - the deny list answers `EPERM`;
//! - `clone3` answers `ENOSYS`, as in Docker's profile: its flags live in memory a filter cannot
//!   read, and `ENOSYS` makes glibc fall back to `clone`, whose flags the deny list checks.
//!
//! Architectures: the filter checks the audit architecture first (a system call of another ABI,
//! e.g. i386 through `int 0x80`, kills the process). On x86_64 every refused call is also
//! refused under its x32 number (`__X32_SYSCALL_BIT`), which the architecture check cannot tell
//! apart. Only x86_64 and aarch64 are supported; elsewhere the runner reports a lower isolation
//! level instead of running without a filter.

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};
use std::collections::BTreeMap;
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;

/// x86_64's marker bit for the x32 ABI's system call numbers.
#[cfg(target_arch = "x86_64")]
const X32_SYSCALL_BIT: i64 = 0x4000_0000;

/// `clone` flags that create a namespace; a `clone` with any of them is refused.
const NAMESPACE_FLAGS: [libc::c_int; 7] = [
    libc::CLONE_NEWNS,
    libc::CLONE_NEWCGROUP,
    libc::CLONE_NEWUTS,
    libc::CLONE_NEWIPC,
    libc::CLONE_NEWUSER,
    libc::CLONE_NEWPID,
    libc::CLONE_NEWNET,
];

/// System calls refused outright (Docker's default profile refuses each of them to a container
/// without the capability that would make it useful).
fn refused() -> Vec<libc::c_long> {
    let mut calls = vec![
        libc::SYS_acct,
        libc::SYS_add_key,
        libc::SYS_bpf,
        libc::SYS_clock_adjtime,
        libc::SYS_clock_settime,
        libc::SYS_delete_module,
        libc::SYS_fanotify_init,
        libc::SYS_finit_module,
        libc::SYS_fsconfig,
        libc::SYS_fsmount,
        libc::SYS_fsopen,
        libc::SYS_fspick,
        libc::SYS_get_mempolicy,
        libc::SYS_init_module,
        libc::SYS_io_uring_enter,
        libc::SYS_io_uring_register,
        libc::SYS_io_uring_setup,
        libc::SYS_kcmp,
        libc::SYS_kexec_file_load,
        libc::SYS_kexec_load,
        libc::SYS_keyctl,
        libc::SYS_lookup_dcookie,
        libc::SYS_mbind,
        libc::SYS_migrate_pages,
        libc::SYS_mount,
        libc::SYS_mount_setattr,
        libc::SYS_move_mount,
        libc::SYS_move_pages,
        libc::SYS_name_to_handle_at,
        libc::SYS_nfsservctl,
        libc::SYS_open_by_handle_at,
        libc::SYS_open_tree,
        libc::SYS_perf_event_open,
        libc::SYS_pidfd_getfd,
        libc::SYS_pivot_root,
        libc::SYS_process_madvise,
        libc::SYS_process_vm_readv,
        libc::SYS_process_vm_writev,
        libc::SYS_ptrace,
        libc::SYS_quotactl,
        libc::SYS_quotactl_fd,
        libc::SYS_reboot,
        libc::SYS_request_key,
        libc::SYS_set_mempolicy,
        libc::SYS_setns,
        libc::SYS_settimeofday,
        libc::SYS_swapoff,
        libc::SYS_swapon,
        libc::SYS_syslog,
        libc::SYS_umount2,
        libc::SYS_unshare,
        libc::SYS_userfaultfd,
        libc::SYS_vhangup,
    ];
    #[cfg(target_arch = "x86_64")]
    calls.extend([
        libc::SYS_ioperm,
        libc::SYS_iopl,
        libc::SYS__sysctl,
        libc::SYS_sysfs,
        libc::SYS_uselib,
        libc::SYS_ustat,
    ]);
    calls
}

/// The target of this build, or `None` where the runner has no filter to offer.
fn target_arch() -> Option<TargetArch> {
    if cfg!(target_arch = "x86_64") {
        Some(TargetArch::x86_64)
    } else if cfg!(target_arch = "aarch64") {
        Some(TargetArch::aarch64)
    } else {
        None
    }
}

/// The numbers under which `call` can be made on this architecture.
fn numbers(call: libc::c_long) -> Vec<i64> {
    #[cfg(target_arch = "x86_64")]
    return vec![call, call | X32_SYSCALL_BIT];
    #[cfg(not(target_arch = "x86_64"))]
    return vec![call];
}

/// The deny list: refused calls unconditionally, `clone` when it asks for a namespace.
fn deny_filter(arch: TargetArch) -> Result<SeccompFilter, seccompiler::BackendError> {
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for call in refused() {
        for nr in numbers(call) {
            rules.insert(nr, Vec::new());
        }
    }
    // One rule per flag: the rules of a call are OR-ed, the conditions of a rule AND-ed, so
    // "any namespace flag set" is seven single-condition rules on the flags argument (arg 0 of
    // `clone` on both supported architectures).
    let mut clone_rules = Vec::new();
    for flag in NAMESPACE_FLAGS {
        let flag = u64::from(flag.unsigned_abs());
        clone_rules.push(SeccompRule::new(vec![SeccompCondition::new(
            0,
            SeccompCmpArgLen::Qword,
            SeccompCmpOp::MaskedEq(flag),
            flag,
        )?])?);
    }
    for nr in numbers(libc::SYS_clone) {
        rules.insert(nr, clone_rules.clone());
    }
    SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM.unsigned_abs()),
        arch,
    )
}

/// `clone3` answers `ENOSYS`, so that glibc falls back to `clone`.
fn enosys_filter(arch: TargetArch) -> Result<SeccompFilter, seccompiler::BackendError> {
    let rules = numbers(libc::SYS_clone3)
        .into_iter()
        .map(|nr| (nr, Vec::new()))
        .collect();
    SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS.unsigned_abs()),
        arch,
    )
}

/// A compiled program as the kernel reads it: `struct sock_filter` records in native byte order.
fn to_bytes(program: &BpfProgram) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(program.len() * 8);
    for insn in program {
        bytes.extend_from_slice(&insn.code.to_ne_bytes());
        bytes.push(insn.jt);
        bytes.push(insn.jf);
        bytes.extend_from_slice(&insn.k.to_ne_bytes());
    }
    bytes
}

fn compile(filter: Result<SeccompFilter, seccompiler::BackendError>) -> Result<Vec<u8>, String> {
    let filter = filter.map_err(|e| format!("cannot build the seccomp filter: {e}"))?;
    let program =
        BpfProgram::try_from(filter).map_err(|e| format!("cannot compile the filter: {e}"))?;
    Ok(to_bytes(&program))
}

/// A compiled program in a sealed memory file that lives as long as the runner. The launcher
/// (root, before it drops to the job's uid) opens it by its `/proc` path and hands the open
/// file to bubblewrap as fd 3 or 4; the seals make it impossible to change once written.
#[derive(Debug)]
pub(crate) struct SealedProgram {
    fd: OwnedFd,
}

impl SealedProgram {
    fn new(name: &str, bytes: &[u8]) -> Result<Self, String> {
        use rustix::fs::{MemfdFlags, SealFlags};
        let fd = rustix::fs::memfd_create(name, MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING)
            .map_err(|e| format!("cannot create a memory file for the seccomp filter: {e}"))?;
        let mut file = std::fs::File::from(fd);
        file.write_all(bytes)
            .map_err(|e| format!("cannot write the seccomp filter: {e}"))?;
        let fd = OwnedFd::from(file);
        rustix::fs::fcntl_add_seals(
            &fd,
            SealFlags::WRITE | SealFlags::GROW | SealFlags::SHRINK | SealFlags::SEAL,
        )
        .map_err(|e| format!("cannot seal the seccomp filter: {e}"))?;
        Ok(Self { fd })
    }

    /// The path under which a process of the same host can open the program from its start.
    pub(crate) fn path(&self) -> PathBuf {
        PathBuf::from(format!(
            "/proc/{}/fd/{}",
            std::process::id(),
            self.fd.as_raw_fd()
        ))
    }
}

/// Both programs of the profile, ready for the launcher.
#[derive(Debug)]
pub(crate) struct Profile {
    /// The deny list (`EPERM`).
    pub(crate) deny: SealedProgram,
    /// `clone3` → `ENOSYS`.
    pub(crate) enosys: SealedProgram,
}

impl Profile {
    /// Compiles the profile for this architecture; an error says why there is none.
    pub(crate) fn compile() -> Result<Self, String> {
        let arch = target_arch().ok_or_else(|| {
            format!(
                "no seccomp profile for the {} architecture",
                std::env::consts::ARCH
            )
        })?;
        Ok(Self {
            deny: SealedProgram::new("agw-seccomp-deny", &compile(deny_filter(arch))?)?,
            enosys: SealedProgram::new("agw-seccomp-enosys", &compile(enosys_filter(arch))?)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_programs_compile_and_check_the_architecture_first() {
        let arch = target_arch().expect("tests run on a supported architecture");
        for filter in [deny_filter(arch), enosys_filter(arch)] {
            let bytes = compile(filter).unwrap();
            assert_eq!(bytes.len() % 8, 0);
            // BPF_LD|BPF_W|BPF_ABS of seccomp_data.arch (offset 4).
            assert_eq!(u16::from_ne_bytes([bytes[0], bytes[1]]), 0x20);
            assert_eq!(
                u32::from_ne_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]),
                4
            );
        }
    }

    #[test]
    fn the_deny_list_names_the_namespace_and_mount_calls() {
        let calls = refused();
        for call in [
            libc::SYS_unshare,
            libc::SYS_setns,
            libc::SYS_mount,
            libc::SYS_bpf,
            libc::SYS_ptrace,
            libc::SYS_keyctl,
            libc::SYS_io_uring_setup,
        ] {
            assert!(calls.contains(&call), "{call} not refused");
        }
        assert!(
            !calls.contains(&libc::SYS_clone),
            "clone is refused by flags only"
        );
        assert!(!calls.contains(&libc::SYS_read));
    }

    #[test]
    fn a_sealed_program_reads_back_and_cannot_be_changed() {
        let program = SealedProgram::new("agw-test", b"12345678").unwrap();
        assert_eq!(std::fs::read(program.path()).unwrap(), b"12345678");
        let opened = std::fs::OpenOptions::new()
            .write(true)
            .open(program.path())
            .and_then(|mut f| f.write_all(b"x"));
        assert!(opened.is_err(), "a sealed program was writable");
    }
}
