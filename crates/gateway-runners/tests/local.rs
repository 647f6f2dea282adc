//! The local runner against the real machine: conformance at both isolation levels, and
//! isolation probes run as the job itself.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use gateway_core::testing::script::ShellRenderer;
use gateway_core::{
    AgentId, CancellationToken, IsolationLevel, JobSpec, JobStatus, RequestId, Runner, RunnerError,
};
use gateway_runners::LocalRunner;
use std::time::Duration;

fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// The bwrap-level runner, or `None` (skip) when bwrap is unusable outside CI.
fn bwrap_runner() -> Option<LocalRunner> {
    match LocalRunner::builder()
        .require(IsolationLevel::Namespaces)
        .build()
    {
        Ok(runner) => Some(runner),
        Err(e) if ci() => panic!("CI=true but bwrap is unusable: {e}"),
        Err(e) => {
            eprintln!("skipping: bwrap is unusable here: {e}");
            None
        }
    }
}

fn process_runner() -> LocalRunner {
    LocalRunner::builder()
        .at_most(IsolationLevel::Process)
        .build()
        .unwrap()
}

fn sh(script: &str) -> JobSpec {
    let mut spec = JobSpec::new(
        RequestId::new(),
        AgentId::new("agent:test").unwrap(),
        vec!["/bin/sh".into(), "-c".into(), script.into()],
    );
    spec.limits.timeout = Duration::from_secs(20);
    spec
}

#[tokio::test]
async fn conformance_process_level() {
    let runner = process_runner();
    assert_eq!(runner.info().isolation, IsolationLevel::Process);
    gateway_core::conformance::runner::run_all(&runner, &ShellRenderer { image: None }).await;
}

#[tokio::test]
async fn conformance_bwrap_level() {
    let Some(runner) = bwrap_runner() else { return };
    assert_eq!(runner.info().isolation, IsolationLevel::Namespaces);
    gateway_core::conformance::runner::run_all(&runner, &ShellRenderer { image: None }).await;
}

#[tokio::test]
async fn outcome_reports_the_isolation_used() {
    let runner = process_runner();
    let out = runner
        .run(sh("exit 0"), CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(out.isolation, IsolationLevel::Process);
    if let Some(runner) = bwrap_runner() {
        let out = runner
            .run(sh("exit 0"), CancellationToken::new())
            .await
            .unwrap();
        assert_eq!(out.isolation, IsolationLevel::Namespaces);
    }
}

#[test]
fn requiring_more_than_available_fails_closed() {
    let err = LocalRunner::builder()
        .at_most(IsolationLevel::Process)
        .require(IsolationLevel::Namespaces)
        .build()
        .unwrap_err();
    assert!(matches!(err, RunnerError::Unsupported { .. }), "{err}");
    let err = LocalRunner::builder()
        .require(IsolationLevel::Container)
        .build()
        .unwrap_err();
    assert!(matches!(err, RunnerError::Unsupported { .. }), "{err}");
    let err = LocalRunner::builder()
        .bwrap_path("/nonexistent/bwrap")
        .require(IsolationLevel::Namespaces)
        .build()
        .unwrap_err();
    assert!(matches!(err, RunnerError::Unsupported { .. }), "{err}");
}

#[tokio::test]
async fn environment_holds_only_what_the_spec_gives() {
    // The test process has plenty of variables (CARGO_*, PATH, …) the job must not see.
    let runner = process_runner();
    let mut spec = sh("env | cut -d= -f1 | sort | tr '\\n' ' '");
    spec.env.insert("ONLY_THIS".into(), "1".into());
    let out = runner.run(spec, CancellationToken::new()).await.unwrap();
    assert!(out.succeeded(), "{out:?}");
    let mut names: Vec<&str> = out.stdout.split_whitespace().collect();
    names.retain(|n| !["PWD", "SHLVL", "_", "OLDPWD"].contains(n)); // set by the shell itself
    assert_eq!(
        names,
        ["HOME", "ONLY_THIS", "PATH", "TMPDIR"],
        "{}",
        out.stdout
    );
}

#[tokio::test]
async fn working_directory_is_fresh_and_removed() {
    let runner = process_runner();
    let out = runner
        .run(
            sh("ls -A | wc -l; touch leftover; pwd"),
            CancellationToken::new(),
        )
        .await
        .unwrap();
    let mut lines = out.stdout.lines();
    assert_eq!(lines.next().map(str::trim), Some("0"), "{}", out.stdout);
    let dir = lines.next().unwrap();
    assert_eq!(dir, out.environment_id);
    assert!(!std::path::Path::new(dir).exists(), "{dir} not removed");
    assert!(out.teardown.complete, "{}", out.teardown.detail);
}

#[tokio::test]
async fn timeout_kills_the_whole_tree() {
    let runner = LocalRunner::builder()
        .at_most(IsolationLevel::Process)
        .grace(Duration::from_millis(200))
        .build()
        .unwrap();
    let marker = tempfile::NamedTempFile::new().unwrap();
    let path = marker.path().display().to_string();
    // A background grandchild that would write the marker after 2 s if it survived, and a
    // parent that ignores SIGTERM.
    let mut spec = sh(&format!(
        "trap '' TERM; (sleep 2; echo survived > {path}) & sleep 60"
    ));
    spec.limits.timeout = Duration::from_millis(300);
    let out = runner.run(spec, CancellationToken::new()).await.unwrap();
    assert_eq!(out.status, JobStatus::TimedOut);
    assert!(out.teardown.complete, "{}", out.teardown.detail);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(std::fs::read_to_string(marker.path()).unwrap(), "");
}

#[tokio::test]
async fn background_processes_die_with_the_job() {
    let runner = process_runner();
    let marker = tempfile::NamedTempFile::new().unwrap();
    let path = marker.path().display().to_string();
    let spec = sh(&format!(
        "(sleep 1; echo survived > {path}) >/dev/null 2>&1 & exit 0"
    ));
    let out = runner.run(spec, CancellationToken::new()).await.unwrap();
    assert!(out.succeeded());
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(std::fs::read_to_string(marker.path()).unwrap(), "");
}

#[tokio::test]
async fn rlimits_apply_to_the_job() {
    let runner = process_runner();
    let mut spec = sh("ulimit -n; ulimit -v");
    spec.limits.open_files = 77;
    spec.limits.memory_bytes = 300 * 1024 * 1024;
    let out = runner.run(spec, CancellationToken::new()).await.unwrap();
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines, ["77", &(300 * 1024).to_string()], "{out:?}");
}

#[tokio::test]
async fn missing_program_and_bad_env_are_invalid_input() {
    let runner = process_runner();
    let mut spec = sh("true");
    spec.command = vec!["definitely-not-a-program-xyz".into()];
    let err = runner
        .run(spec, CancellationToken::new())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), gateway_core::ErrorKind::InvalidInput, "{err}");
    let mut spec = sh("true");
    spec.env.insert("A=B".into(), "x".into());
    let err = runner
        .run(spec, CancellationToken::new())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), gateway_core::ErrorKind::InvalidInput, "{err}");
}

#[tokio::test]
async fn allowlist_is_refused() {
    let runner = process_runner();
    let mut spec = sh("true");
    spec.network = gateway_core::NetworkAccess::Allowlist {
        destinations: vec!["example.com:443".into()],
    };
    let err = runner
        .run(spec, CancellationToken::new())
        .await
        .unwrap_err();
    assert!(matches!(err, RunnerError::Unsupported { .. }), "{err}");
}

// ---- bwrap isolation probes: the job reports what it sees; we assert on its output. ----

#[tokio::test]
async fn bwrap_has_no_network_but_loopback() {
    let Some(runner) = bwrap_runner() else { return };
    let out = runner
        .run(
            sh("tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '"),
            CancellationToken::new(),
        )
        .await
        .unwrap();
    assert!(out.succeeded(), "{out:?}");
    assert_eq!(out.stdout.trim(), "lo");
}

#[tokio::test]
async fn bwrap_cannot_read_outside_the_sandbox() {
    let Some(runner) = bwrap_runner() else { return };
    // A file the gateway can read, in a directory the sandbox does not mount.
    let dir = tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).unwrap();
    let secret = dir.path().join("gateway-secret");
    std::fs::write(&secret, "top secret").unwrap();
    let out = runner
        .run(
            sh(&format!(
                "cat {} /etc/shadow 2>/dev/null; echo rc=$?",
                secret.display()
            )),
            CancellationToken::new(),
        )
        .await
        .unwrap();
    assert!(!out.stdout.contains("top secret"), "{out:?}");
    assert!(!out.stdout.contains("root:"), "{out:?}");
    assert!(out.stdout.contains("rc=1"), "{out:?}");
}

#[tokio::test]
async fn bwrap_cannot_write_system_paths() {
    let Some(runner) = bwrap_runner() else { return };
    let out = runner
        .run(
            sh(
                "for p in /usr/agw-probe /bin/agw-probe /etc/agw-probe /agw-probe; do \
                 (echo x > $p) 2>/dev/null && echo WROTE $p; done; \
                 echo ok > /tmp/t && cat /tmp/t; id -u",
            ),
            CancellationToken::new(),
        )
        .await
        .unwrap();
    assert!(!out.stdout.contains("WROTE"), "{out:?}");
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines, ["ok", "65534"], "{out:?}");
    assert!(!std::path::Path::new("/usr/agw-probe").exists());
}

#[tokio::test]
async fn bwrap_job_has_no_capabilities_and_own_pid_namespace() {
    let Some(runner) = bwrap_runner() else { return };
    let out = runner
        .run(
            sh("grep CapEff /proc/self/status | tr -d '\\t '; ls /proc | grep -c '^[0-9]'"),
            CancellationToken::new(),
        )
        .await
        .unwrap();
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.first(), Some(&"CapEff:0000000000000000"), "{out:?}");
    // bwrap's init, the shell and its two pipeline children: nothing of the host.
    let pids: u32 = lines[1].trim().parse().unwrap();
    assert!(pids <= 5, "{pids} processes visible: {out:?}");
}

#[tokio::test]
async fn bwrap_read_only_mount_is_visible_and_read_only() {
    let Some(runner) = bwrap_runner() else { return };
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("input.txt"), "mounted").unwrap();
    let mut spec = sh("cat /data/input.txt; (echo x > /data/new) 2>/dev/null && echo WROTE");
    spec.mounts.push(gateway_core::runner::ReadOnlyMount {
        host_path: dir.path().to_path_buf(),
        job_path: "/data".into(),
    });
    let out = runner.run(spec, CancellationToken::new()).await.unwrap();
    assert_eq!(out.stdout, "mounted", "{out:?}");
    assert!(!dir.path().join("new").exists());
}

#[tokio::test]
async fn bwrap_timeout_kills_processes_that_left_the_group() {
    let Some(runner) = bwrap_runner() else { return };
    // A sleeper that leaves the job's session and process group (setsid) must still be gone
    // from the host's process table once the job has ended: it dies with the pid namespace.
    let tag = format!("{}", 4_000_000 + std::process::id() % 1000);
    let mut spec = sh(&format!("setsid sleep {tag} & sleep 60"));
    spec.limits.timeout = Duration::from_millis(500);
    let out = runner.run(spec, CancellationToken::new()).await.unwrap();
    assert_eq!(out.status, JobStatus::TimedOut);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ps = std::process::Command::new("pgrep")
        .args(["-f", &format!("sleep {tag}")])
        .output()
        .unwrap();
    assert!(
        ps.stdout.is_empty(),
        "survivor: {}",
        String::from_utf8_lossy(&ps.stdout)
    );
}

#[test]
fn a_missing_part_of_the_sandbox_fails_closed_and_is_named() {
    if bwrap_runner().is_none() {
        return;
    }
    // Each part the namespaced level needs, taken away in turn: the runner would otherwise
    // build at the process level, and `require` turns that into an error naming the part.
    let cases = [
        (
            LocalRunner::builder().job_ids(65_000, 1_000),
            "inside the job id range",
        ),
        (LocalRunner::builder().job_ids(0, 10), "starts at root"),
        (
            LocalRunner::builder().cgroup_parent("/../../escape"),
            "outside the mounted hierarchy",
        ),
        (
            LocalRunner::builder().bwrap_path("/nonexistent/bwrap"),
            "bubblewrap",
        ),
    ];
    for (builder, expected) in cases {
        let err = builder
            .clone()
            .require(IsolationLevel::Namespaces)
            .build()
            .unwrap_err();
        assert!(matches!(err, RunnerError::Unsupported { .. }), "{err}");
        assert!(
            err.to_string().contains(expected),
            "{expected:?} not in: {err}"
        );
        // Without the requirement it is a visible downgrade, never a silent one.
        let runner = builder.build().unwrap();
        assert_eq!(runner.isolation(), IsolationLevel::Process);
    }
}

#[tokio::test]
async fn namespaced_jobs_run_as_ids_of_the_configured_range() {
    if bwrap_runner().is_none() {
        return;
    }
    let runner = LocalRunner::builder()
        .job_ids(1_900_000_000, 4)
        .require(IsolationLevel::Namespaces)
        .build()
        .unwrap();
    // The job sees itself as nobody; its files, seen from outside its user namespace (the
    // tmpfs mount options name the owner), belong to the range.
    let out = runner
        .run(
            sh("id -u; grep ' /work ' /proc/self/mounts"),
            CancellationToken::new(),
        )
        .await
        .unwrap();
    assert!(out.succeeded(), "{out:?}");
    let mut lines = out.stdout.lines();
    assert_eq!(lines.next(), Some("65534"), "{out:?}");
    let mount = lines.next().unwrap_or_default();
    let uid: u32 = mount
        .split([',', ' '])
        .find_map(|o| o.strip_prefix("uid="))
        .and_then(|u| u.parse().ok())
        .unwrap_or_else(|| panic!("no owner in {mount:?}"));
    assert!((1_900_000_000..1_900_000_004).contains(&uid), "{mount}");
    assert!(mount.contains("nosuid"), "{mount}");
}

// ---- sandboxes started ahead of their jobs (the runner's pool) ----

/// A runner whose pool holds sandboxes for `spec`'s limits, ready before the job arrives.
async fn warm_runner(spec: &JobSpec) -> Option<LocalRunner> {
    bwrap_runner()?;
    let runner = LocalRunner::builder()
        .require(IsolationLevel::Namespaces)
        .sandbox_pool(2)
        .build()
        .unwrap();
    assert!(runner.prestart(&spec.limits, Duration::from_secs(10)).await);
    Some(runner)
}

#[tokio::test]
async fn a_pooled_sandbox_serves_one_job_and_keeps_nothing_of_it() {
    let probe = "id -u; grep ' /work ' /proc/self/mounts; find /tmp /work -mindepth 1 | wc -l; \
                 echo left > /tmp/left; echo left > /work/left; sleep 1 & echo started";
    let Some(runner) = warm_runner(&sh(probe)).await else {
        return;
    };
    let mut seen = Vec::new();
    for _ in 0..3 {
        assert!(
            runner
                .prestart(&sh(probe).limits, Duration::from_secs(10))
                .await
        );
        let before = runner.pooled_jobs();
        let started = std::time::Instant::now();
        let out = runner
            .run(sh(probe), CancellationToken::new())
            .await
            .unwrap();
        eprintln!("pooled job: {:?}", started.elapsed());
        assert!(out.succeeded(), "{out:?}");
        assert_eq!(runner.pooled_jobs(), before + 1, "launched directly");
        assert!(out.teardown.complete, "{}", out.teardown.detail);
        let lines: Vec<&str> = out.stdout.lines().collect();
        // nobody inside; nothing in /tmp or /work: the earlier jobs' files are gone.
        assert_eq!(lines.len(), 4, "{out:?}");
        assert_eq!(lines[0], "65534", "{out:?}");
        assert_eq!(
            lines[2].trim(),
            "0",
            "files of an earlier job visible: {out:?}"
        );
        assert_eq!(lines[3], "started", "{out:?}");
        let uid = lines[1]
            .split([',', ' '])
            .find_map(|o| o.strip_prefix("uid="))
            .unwrap_or_else(|| panic!("no owner in {out:?}"))
            .to_string();
        seen.push((out.environment_id.clone(), uid));
    }
    let ids: std::collections::BTreeSet<_> = seen.iter().map(|(e, _)| e).collect();
    let uids: std::collections::BTreeSet<_> = seen.iter().map(|(_, u)| u).collect();
    assert_eq!(ids.len(), 3, "a sandbox served two jobs: {seen:?}");
    assert_eq!(uids.len(), 3, "two jobs shared a host uid: {seen:?}");
}

#[tokio::test]
async fn pooled_jobs_get_their_environment_and_secrets_off_every_command_line() {
    let tag = format!("agw-secret-{}", std::process::id());
    let mut spec = sh(
        "printf '%s|' \"$PLAIN\" \"$MULTI\" \"$HOME\" \"$TMPDIR\" \"$PWD\"; \
                       [ \"$SECRET\" = \"$EXPECTED\" ] && echo secret-ok; exec sleep 30",
    );
    spec.env.insert("PLAIN".into(), "a b=c".into());
    spec.env.insert("MULTI".into(), "x\ny\\n\n".into());
    spec.env.insert("EXPECTED".into(), format!("{tag}-value"));
    spec.secret_env.insert(
        "SECRET".into(),
        gateway_core::Secret::new(format!("{tag}-value").into_bytes()),
    );
    let Some(runner) = warm_runner(&spec).await else {
        return;
    };
    let before = runner.pooled_jobs();
    let cancel = CancellationToken::new();
    let job = tokio::spawn({
        let (runner, cancel) = (runner.clone(), cancel.clone());
        async move { runner.run(spec, cancel).await }
    });
    // While the job runs: no process on the host shows the secret on its command line.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            let cmdline = String::from_utf8_lossy(&cmdline);
            assert!(
                !cmdline.contains(&format!("{tag}-value")),
                "secret on a command line: {cmdline}"
            );
        }
    }
    cancel.cancel();
    let out = job.await.unwrap().unwrap();
    assert_eq!(runner.pooled_jobs(), before + 1, "launched directly");
    assert_eq!(
        out.stdout, "a b=c|x\ny\\n\n|/work|/tmp|/work|secret-ok\n",
        "{out:?}"
    );
}

#[tokio::test]
async fn a_job_with_mounts_is_launched_directly_and_odd_names_are_dropped_either_way() {
    // The job's shell would hide such a name from its children: read what it was given.
    let probe = "tr '\\0' '\\n' < /proc/$$/environ | grep -c '^A-B=' || true";
    let mut spec = sh(probe);
    spec.env.insert("A-B".into(), "dropped".into());
    let Some(runner) = warm_runner(&spec).await else {
        return;
    };
    // Pooled: the launch shell of the direct path drops names no shell exports; so does
    // the trampoline's message, rather than failing the job.
    let before = runner.pooled_jobs();
    let out = runner
        .run(spec.clone(), CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(
        (out.stdout.as_str(), runner.pooled_jobs()),
        ("0\n", before + 1),
        "{out:?}"
    );
    // A read-only mount is made when bubblewrap starts, so that job is launched directly.
    let dir = tempfile::tempdir().unwrap();
    spec.mounts.push(gateway_core::runner::ReadOnlyMount {
        host_path: dir.path().to_path_buf(),
        job_path: "/data".into(),
    });
    let out = runner.run(spec, CancellationToken::new()).await.unwrap();
    assert_eq!(
        (out.stdout.as_str(), runner.pooled_jobs()),
        ("0\n", before + 1),
        "{out:?}"
    );
}

/// The job cgroups (`job-*`) under this runner's own parent in every hierarchy.
fn job_cgroups(parent: &str) -> Vec<std::path::PathBuf> {
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    let mut found = Vec::new();
    for line in own.lines() {
        let mut f = line.splitn(3, ':');
        let (_, controllers, _) = (f.next(), f.next().unwrap_or(""), f.next());
        for c in controllers
            .split(',')
            .filter(|c| ["memory", "pids", "cpu"].contains(c))
        {
            let dir = std::path::Path::new("/sys/fs/cgroup").join(c).join(parent);
            if let Ok(entries) = std::fs::read_dir(&dir) {
                found.extend(
                    entries
                        .flatten()
                        .filter(|e| e.file_name().to_string_lossy().starts_with("job-"))
                        .map(|e| e.path()),
                );
            }
        }
    }
    found
}

#[tokio::test]
async fn dropping_the_runner_tears_down_its_unused_sandboxes() {
    if bwrap_runner().is_none() {
        return;
    }
    if !std::path::Path::new("/sys/fs/cgroup/pids").exists() {
        // The check below reads the v1 layout; the pool is the same on v2.
        return;
    }
    let parent = format!("agw-pool-test-{}", std::process::id());
    let runner = LocalRunner::builder()
        .require(IsolationLevel::Namespaces)
        .cgroup_parent(format!("/{parent}"))
        .sandbox_pool(3)
        .build()
        .unwrap();
    let limits = gateway_core::JobLimits::default();
    assert!(runner.prestart(&limits, Duration::from_secs(10)).await);
    assert!(runner.wait_pool_ready(3, Duration::from_secs(10)).await);
    // Parked: their cgroups exist and hold the waiting sandboxes.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let cgroups = job_cgroups(&parent);
    assert_eq!(cgroups.len(), 3 * 3, "{cgroups:?}");
    let members: Vec<String> = cgroups
        .iter()
        .filter(|d| d.starts_with("/sys/fs/cgroup/pids"))
        .flat_map(|d| {
            std::fs::read_to_string(d.join("cgroup.procs"))
                .unwrap()
                .lines()
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(members.len() >= 3, "{members:?}");
    drop(runner);
    // Gone when the drop returns, not later: a process often exits right after it.
    let left = job_cgroups(&parent);
    assert!(left.is_empty(), "cgroups left behind: {left:?}");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        // Killed; a zombie waits for the runtime to reap it.
        let alive: Vec<&String> = members
            .iter()
            .filter(|p| {
                std::fs::read_to_string(format!("/proc/{p}/stat")).is_ok_and(|stat| {
                    !stat
                        .rsplit(')')
                        .next()
                        .unwrap_or("")
                        .trim_start()
                        .starts_with('Z')
                })
            })
            .collect();
        if alive.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "processes left behind: {alive:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for c in ["memory", "pids", "cpu"] {
        let _ = std::fs::remove_dir(std::path::Path::new("/sys/fs/cgroup").join(c).join(&parent));
    }
}

/// bwrap's `--die-with-parent` follows the thread that spawned it: sandboxes started from a
/// thread that exits (an idle blocking-pool thread) would be killed while they wait.
#[test]
fn a_pooled_sandbox_outlives_the_thread_that_started_it() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_keep_alive(Duration::from_millis(50))
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let spec = sh("echo alive");
        let Some(runner) = warm_runner(&spec).await else {
            return;
        };
        // Every idle thread of the blocking pool has exited by now.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let before = runner.pooled_jobs();
        let out = runner.run(spec, CancellationToken::new()).await.unwrap();
        assert_eq!(runner.pooled_jobs(), before + 1, "launched directly");
        assert!(out.succeeded(), "{out:?}");
        assert_eq!(out.stdout, "alive\n");
    });
}

/// A parked sandbox killed from outside while it waits (an operator, the OOM killer) is not
/// handed to a job: the job gets a live one, or is launched directly, and succeeds.
#[tokio::test]
async fn a_parked_sandbox_killed_while_waiting_is_not_used() {
    if bwrap_runner().is_none() || !std::path::Path::new("/sys/fs/cgroup/pids").exists() {
        return;
    }
    let parent = format!("agw-pool-kill-{}", std::process::id());
    let runner = LocalRunner::builder()
        .require(IsolationLevel::Namespaces)
        .cgroup_parent(format!("/{parent}"))
        .sandbox_pool(1)
        .build()
        .unwrap();
    let spec = sh("echo alive");
    assert!(runner.prestart(&spec.limits, Duration::from_secs(10)).await);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let pids: Vec<String> = job_cgroups(&parent)
        .iter()
        .filter(|d| d.starts_with("/sys/fs/cgroup/pids"))
        .flat_map(|d| {
            let procs = std::fs::read_to_string(d.join("cgroup.procs")).unwrap();
            procs.lines().map(str::to_string).collect::<Vec<_>>()
        })
        .collect();
    assert!(!pids.is_empty(), "no parked sandbox found");
    for pid in &pids {
        let _ = std::process::Command::new("kill")
            .args(["-KILL", pid])
            .status();
    }
    // Let the runtime see the chain's first process exit.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = runner.pooled_jobs();
    let out = runner.run(spec, CancellationToken::new()).await.unwrap();
    assert!(out.succeeded(), "{out:?}");
    assert_eq!(out.stdout, "alive\n");
    assert_eq!(runner.pooled_jobs(), before, "the killed sandbox was used");
    drop(runner);
    for c in ["memory", "pids", "cpu"] {
        let _ = std::fs::remove_dir(std::path::Path::new("/sys/fs/cgroup").join(c).join(&parent));
    }
}

/// A host server on loopback that greets every connection, and its address.
async fn greeter(greeting: &'static str) -> std::net::SocketAddr {
    use tokio::io::AsyncWriteExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let _ = s.write_all(greeting.as_bytes()).await;
        }
    });
    addr
}

/// A job that connects to each port on 127.0.0.1 (bash's `/dev/tcp`) and prints what it read
/// or `refused`.
fn connect_to(ports: &[u16]) -> JobSpec {
    let mut script = String::new();
    for p in ports {
        script.push_str(&format!(
            "if exec 3<>/dev/tcp/127.0.0.1/{p}; then echo \"{p}: $(head -n1 <&3)\"; exec 3>&-; else echo '{p}: refused'; fi 2>/dev/null\n"
        ));
    }
    let mut spec = sh("");
    spec.command = vec!["/bin/bash".into(), "-c".into(), script];
    spec
}

#[tokio::test]
async fn bwrap_allowlist_reaches_exactly_its_destinations() {
    let Some(runner) = bwrap_runner() else { return };
    let allowed = greeter("allowed\n").await;
    let other = greeter("other\n").await;
    let mut spec = connect_to(&[allowed.port(), other.port()]);
    spec.network = gateway_core::NetworkAccess::Allowlist {
        destinations: vec![allowed.to_string()],
    };
    let out = runner.run(spec, CancellationToken::new()).await.unwrap();
    assert!(out.succeeded(), "{out:?}");
    assert_eq!(
        out.stdout,
        format!("{}: allowed\n{}: refused\n", allowed.port(), other.port()),
        "{out:?}"
    );
    // Without the obligation, the same job reaches neither.
    let out = runner
        .run(
            connect_to(&[allowed.port(), other.port()]),
            CancellationToken::new(),
        )
        .await
        .unwrap();
    assert_eq!(
        out.stdout,
        format!("{}: refused\n{}: refused\n", allowed.port(), other.port()),
        "{out:?}"
    );
}

#[tokio::test]
async fn bwrap_allowlist_with_mounts_and_many_connections() {
    let Some(runner) = bwrap_runner() else { return };
    let allowed = greeter("hi\n").await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("f"), "mounted\n").unwrap();
    let p = allowed.port();
    let mut spec = sh("");
    spec.command = vec![
        "/bin/bash".into(),
        "-c".into(),
        format!(
            "cat /data/f; n=0; for i in $(seq 100); do exec 3<>/dev/tcp/127.0.0.1/{p} && read -r l <&3 && [ \"$l\" = hi ] && n=$((n+1)); exec 3>&-; done; echo $n"
        ),
    ];
    spec.mounts.push(gateway_core::runner::ReadOnlyMount {
        host_path: dir.path().to_owned(),
        job_path: "/data".into(),
    });
    spec.network = gateway_core::NetworkAccess::Allowlist {
        destinations: vec![format!("localhost:{p}")],
    };
    let out = runner.run(spec, CancellationToken::new()).await.unwrap();
    assert_eq!(out.stdout, "mounted\n100\n", "{out:?}");
}

#[tokio::test]
async fn bwrap_allowlist_beyond_loopback_is_refused_by_name() {
    let Some(runner) = bwrap_runner() else { return };
    let mut spec = sh("true");
    spec.network = gateway_core::NetworkAccess::Allowlist {
        destinations: vec!["127.0.0.1:80".into(), "10.1.2.3:443".into()],
    };
    let err = runner
        .run(spec, CancellationToken::new())
        .await
        .unwrap_err();
    assert!(matches!(err, RunnerError::Unsupported { .. }), "{err}");
    assert!(err.to_string().contains("10.1.2.3:443"), "{err}");
}
