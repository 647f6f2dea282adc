//! The last step of a pre-started sandbox ([`pool`](super::pool)): a constant shell script that
//! bubblewrap starts in place of a job, inside the finished sandbox (namespaces, mounts, uid,
//! seccomp filter, no capabilities), and that waits on its stdin for the job to run.
//!
//! bubblewrap fixes the command at its start, so a sandbox made before its job is known cannot
//! be handed the job's argv by bubblewrap itself; the trampoline reads it instead, with the
//! job's rlimits and environment, from a pipe only the runner holds, sets them, and `exec`s the
//! job. Nothing of the job is ever on a command line (the trampoline's own is the constant
//! script), and no value is ever evaluated: every value is only expanded quoted.
//!
//! The message, line by line (see [`message`]):
//!
//! ```text
//! CPU FILES PROCESSES     rlimits (decimal), lowered with `ulimit`: the trampoline is not root
//! a<text>                 starts the next word
//! n<text>                 continues the current word after a newline
//! .                       end
//! ```
//!
//! The words are the environment as pairs (an empty word, then `NAME=VALUE`), then the job's
//! argv. An empty word never starts an argv (the runner refuses an empty program name), so the
//! pairs end where the argv begins. Every shell variable of the script is set before the first
//! `export`, so a job variable that happens to share its name is exported unchanged.
//!
//! What the trampoline cannot carry goes through the direct launch instead ([`Fit`]): limits
//! above the gateway's own hard limits (an unprivileged `ulimit` can only lower them), and
//! read-only mounts (made by bubblewrap before the job is known). Environment names a POSIX
//! shell cannot export (`A-B`) are left out of the message: the direct launch's own launcher
//! shell drops them too, so a namespaced job never sees them either way.

use super::sandbox::NamespacedRlimits;
use gateway_core::JobSpec;
use zeroize::Zeroizing;

/// The script bubblewrap runs as `/bin/sh -c TRAMPOLINE agw-job`, stdin the runner's pipe.
pub(crate) const TRAMPOLINE: &str = r#"fail() {
  echo "agent-gateway launcher: $1" >&2
  exit 125
}
IFS=' ' read -r cpu files procs || fail "no job arrived"
ulimit -t "$cpu" && ulimit -n "$files" && ulimit -p "$procs" || fail "cannot set the job's rlimits"
set --
have=
cur=
while IFS= read -r line; do
  case $line in
    a*) if [ -n "$have" ]; then set -- "$@" "$cur"; fi; cur=${line#a}; have=1 ;;
    n*) cur="$cur
${line#n}" ;;
    .) if [ -n "$have" ]; then set -- "$@" "$cur"; fi; have=done; break ;;
    *) break ;;
  esac
done
[ "$have" = done ] || fail "incomplete job"
while [ "$#" -gt 1 ] && [ -z "$1" ]; do
  export "$2" || fail "cannot set the job's environment"
  shift 2
done
[ "$#" -gt 0 ] || fail "empty command"
exec </dev/null
exec "$@"
"#;

/// Whether a job can run in a pre-started sandbox, or why not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fit {
    /// The trampoline can carry it.
    Yes,
    /// Read-only mounts are made by bubblewrap, before the job is known.
    Mounts,
    /// An rlimit above the gateway's own hard limit (unprivileged `ulimit` only lowers).
    Rlimits,
}

/// Whether `name` is a name a POSIX shell exports: `[A-Za-z_][A-Za-z0-9_]*`.
pub(crate) fn shell_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Whether `spec` fits a pre-started sandbox; `hard` are the gateway's own hard limits (what
/// every process it starts inherits), `None` for unlimited.
pub(crate) fn fit(spec: &JobSpec, rlimits: NamespacedRlimits, hard: [Option<u64>; 3]) -> Fit {
    if !spec.mounts.is_empty() {
        return Fit::Mounts;
    }
    let wanted = [rlimits.cpu_seconds, rlimits.open_files, rlimits.processes];
    if wanted
        .iter()
        .zip(hard)
        .any(|(want, hard)| hard.is_some_and(|h| *want > h))
    {
        return Fit::Rlimits;
    }
    Fit::Yes
}

/// The message for the trampoline: rlimits, then `env` (applied in order: a later value of a
/// name wins; names that are not [`shell_name`]s left out), then the argv. Held in memory
/// that is zeroed when dropped (it carries secrets).
pub(crate) fn message<'a>(
    rlimits: NamespacedRlimits,
    env: impl IntoIterator<Item = (&'a [u8], &'a [u8])>,
    argv: &[String],
) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::with_capacity(256));
    out.extend_from_slice(rlimits.words().join(" ").as_bytes());
    out.push(b'\n');
    for (name, value) in env {
        if !std::str::from_utf8(name).is_ok_and(shell_name) {
            continue;
        }
        word(&mut out, b"");
        let mut pair = Zeroizing::new(Vec::with_capacity(name.len() + value.len() + 1));
        pair.extend_from_slice(name);
        pair.push(b'=');
        pair.extend_from_slice(value);
        word(&mut out, &pair);
    }
    for arg in argv {
        word(&mut out, arg.as_bytes());
    }
    out.extend_from_slice(b".\n");
    out
}

/// One word: `a` + its first line, `n` + each further line.
fn word(out: &mut Vec<u8>, word: &[u8]) {
    for (i, line) in word.split(|b| *b == b'\n').enumerate() {
        out.push(if i == 0 { b'a' } else { b'n' });
        out.extend_from_slice(line);
        out.push(b'\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> JobSpec {
        JobSpec::new(
            gateway_core::RequestId::new(),
            gateway_core::AgentId::new("agent:t").unwrap(),
            vec!["/bin/true".into()],
        )
    }

    const LIMITS: NamespacedRlimits = NamespacedRlimits {
        cpu_seconds: 61,
        open_files: 256,
        processes: 66,
    };

    #[test]
    fn words_split_at_newlines_and_keep_everything_else() {
        let env: Vec<(&[u8], &[u8])> = vec![
            (b"A", b"x\ny\n"),
            (b"A-B", b"left out"),
            (b"B", b"\\n = 'q' $(no)"),
        ];
        let text = message(LIMITS, env, &["sh".into(), "".into(), "-c".into()]);
        assert_eq!(
            String::from_utf8_lossy(&text),
            "61 256 66\na\naA=x\nny\nn\na\naB=\\n = 'q' $(no)\nash\na\na-c\n.\n"
        );
    }

    /// The script and the encoding together, through the real shell (outside any sandbox).
    #[test]
    fn the_trampoline_runs_exactly_the_argv_and_environment_it_is_sent() {
        let values: Vec<(&[u8], &[u8])> = vec![
            (b"PATH", b"/usr/bin:/bin"),
            (b"PLAIN", b"plain value"),
            (b"TRICKY", b"a\nb\\c\n\n $x \"q\" 'r' =\t"),
            // The script's own variable names: exported as sent, not as the script left them.
            (b"line", b"job's line"),
            (b"cur", b""),
            (b"IFS", b":"),
        ];
        let argv: Vec<String> = vec![
            "/bin/sh".into(),
            "-c".into(),
            "printf '%s|' \"$PLAIN\" \"$TRICKY\" \"$line\" \"$cur\" \"$0\" \"$1\"; ulimit -n"
                .into(),
            "zero\nth".into(),
            "".into(),
        ];
        let input = message(LIMITS, values, &argv);
        let mut child = std::process::Command::new("/bin/sh")
            .args(["-c", TRAMPOLINE, "agw-job"])
            .env_clear()
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child.stdin.take().unwrap().write_all(&input).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{out:?}");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "plain value|a\nb\\c\n\n $x \"q\" 'r' =\t|job's line||zero\nth||256\n"
        );
    }

    #[test]
    fn an_incomplete_message_starts_nothing() {
        let input = b"61 256 66\na/bin/echo\naRAN\n";
        let mut child = std::process::Command::new("/bin/sh")
            .args(["-c", TRAMPOLINE, "agw-job"])
            .env_clear()
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child.stdin.take().unwrap().write_all(input).unwrap();
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(125), "{out:?}");
        assert!(out.stdout.is_empty(), "{out:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).starts_with(super::super::launch::LAUNCH_MESSAGE)
        );
    }

    #[test]
    fn what_the_trampoline_cannot_carry_is_named() {
        let hard = [None, Some(1024), None];
        assert_eq!(fit(&spec(), LIMITS, hard), Fit::Yes);
        let mut mounted = spec();
        mounted.mounts.push(gateway_core::runner::ReadOnlyMount {
            host_path: "/srv".into(),
            job_path: "/data".into(),
        });
        assert_eq!(fit(&mounted, LIMITS, hard), Fit::Mounts);
        let many = NamespacedRlimits {
            open_files: 4096,
            ..LIMITS
        };
        assert_eq!(fit(&spec(), many, hard), Fit::Rlimits);
        assert!(shell_name("_a1") && shell_name("PATH"));
        assert!(!shell_name("1a") && !shell_name("") && !shell_name("a.b"));
    }
}
