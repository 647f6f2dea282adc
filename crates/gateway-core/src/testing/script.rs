//! Tiny job scripts the runner conformance suite uses, rendered for each kind of runner: as a
//! POSIX shell command for real runners, or as data for [`super::MemoryRunner`].

use serde::{Deserialize, Serialize};

/// One step of a test job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Step {
    /// Write text to stdout.
    Stdout(String),
    /// Write text to stderr.
    Stderr(String),
    /// Write the value of an environment variable (or nothing) to stdout.
    PrintEnv(String),
    /// Write this many `a` bytes to stdout.
    StdoutBytes(usize),
    /// Sleep this many whole seconds.
    SleepSeconds(u64),
    /// Exit with a code.
    Exit(i32),
}

/// Renders scripts into commands a runner understands.
pub trait ScriptRenderer: Send + Sync {
    /// The image (container runners) and argv for a script.
    fn render(&self, steps: &[Step]) -> (Option<String>, Vec<String>);
}

/// Renders for real runners: `sh -c '…'`, in an optional image.
#[derive(Debug, Clone, Default)]
pub struct ShellRenderer {
    /// The image for container runners (`None` for process runners).
    pub image: Option<String>,
}

fn single_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

impl ScriptRenderer for ShellRenderer {
    fn render(&self, steps: &[Step]) -> (Option<String>, Vec<String>) {
        let mut parts = Vec::new();
        for step in steps {
            parts.push(match step {
                Step::Stdout(s) => format!("printf '%s' {}", single_quote(s)),
                Step::Stderr(s) => format!("printf '%s' {} >&2", single_quote(s)),
                Step::PrintEnv(v) => format!("printf '%s' \"${{{v}}}\""),
                Step::StdoutBytes(n) => format!("head -c {n} /dev/zero | tr '\\000' a"),
                Step::SleepSeconds(n) => format!("sleep {n}"),
                Step::Exit(c) => format!("exit {c}"),
            });
        }
        (
            self.image.clone(),
            vec!["/bin/sh".into(), "-c".into(), parts.join("; ")],
        )
    }
}

/// The program name [`super::MemoryRunner`] recognises; the script follows as JSON.
pub const MEMORY_SCRIPT: &str = "memory-script";

/// Renders for [`super::MemoryRunner`].
#[derive(Debug, Clone, Default)]
pub struct MemoryRenderer;

impl ScriptRenderer for MemoryRenderer {
    fn render(&self, steps: &[Step]) -> (Option<String>, Vec<String>) {
        let json = serde_json::to_string(steps).unwrap_or_default();
        (None, vec![MEMORY_SCRIPT.into(), json])
    }
}
