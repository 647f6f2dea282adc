//! Reading policies and data from directories and strings into a prepared regorus engine.
//!
//! Directory layout follows `opa run <dir>`: every `*.rego` file is a module, every `data.json`
//! is merged into `data` at the path of its directory relative to the root. Hidden entries
//! (`.git`, editor files) are skipped. Files are read in sorted order so the digest, and hence
//! the policy id, depends only on content.

use crate::error::SetupError;
use regorus::Engine;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// Largest single policy or data file read, in bytes; anything bigger is almost certainly a
/// mistake (a dataset copied into the policy directory).
const MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;

/// Where policies come from.
#[derive(Debug, Clone)]
pub(crate) enum Source {
    /// A directory read recursively.
    Dir(PathBuf),
    /// A policy given as a string.
    Rego { name: String, text: String },
    /// A data document merged into `data`.
    Data(serde_json::Value),
}

/// The policies and data read from a set of sources, not yet parsed.
#[derive(Debug, Default)]
pub(crate) struct LoadedPolicies {
    /// (file name, Rego text).
    pub(crate) modules: Vec<(String, String)>,
    /// (file name, data document already nested at its directory path).
    pub(crate) data: Vec<(String, serde_json::Value)>,
}

impl LoadedPolicies {
    /// Reads every source; `include_tests` also keeps `*_test.rego` files.
    pub(crate) fn read(sources: &[Source], include_tests: bool) -> Result<Self, SetupError> {
        let mut loaded = Self::default();
        for source in sources {
            match source {
                Source::Dir(dir) => loaded.read_dir(dir, include_tests)?,
                Source::Rego { name, text } => loaded.modules.push((name.clone(), text.clone())),
                Source::Data(value) => loaded.data.push(("<inline>".into(), value.clone())),
            }
        }
        if loaded.modules.is_empty() {
            return Err(SetupError::policy(
                "no .rego policy found in the configured sources",
            ));
        }
        Ok(loaded)
    }

    fn read_dir(&mut self, root: &Path, include_tests: bool) -> Result<(), SetupError> {
        let mut stack = vec![root.to_path_buf()];
        let mut files = Vec::new();
        while let Some(dir) = stack.pop() {
            let entries = std::fs::read_dir(&dir).map_err(|source| SetupError::Io {
                path: dir.clone(),
                source,
            })?;
            for entry in entries {
                let entry = entry.map_err(|source| SetupError::Io {
                    path: dir.clone(),
                    source,
                })?;
                let path = entry.path();
                let name = entry.file_name();
                if name.to_string_lossy().starts_with('.') {
                    continue;
                }
                let file_type = entry.file_type().map_err(|source| SetupError::Io {
                    path: path.clone(),
                    source,
                })?;
                if file_type.is_dir() {
                    stack.push(path);
                } else {
                    files.push(path);
                }
            }
        }
        files.sort();
        for path in files {
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            let is_test = name.ends_with("_test.rego");
            if name.ends_with(".rego") && (include_tests || !is_test) {
                let text = read_capped(&path)?;
                self.modules.push((path.display().to_string(), text));
            } else if name == "data.json" {
                let text = read_capped(&path)?;
                let file = path.display().to_string();
                let value: serde_json::Value =
                    serde_json::from_str(&text).map_err(|e| SetupError::Data {
                        file: file.clone(),
                        message: e.to_string(),
                    })?;
                // Nest the document at its directory's path below the root, as OPA does.
                let relative = path
                    .parent()
                    .and_then(|p| p.strip_prefix(root).ok())
                    .map(Path::to_path_buf)
                    .unwrap_or_default();
                let mut nested = value;
                let components: Vec<String> = relative
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect();
                for component in components.into_iter().rev() {
                    nested = serde_json::json!({ component: nested });
                }
                self.data.push((file, nested));
            }
        }
        Ok(())
    }

    /// Parses every module and merges every data document into a fresh engine.
    pub(crate) fn engine(&self) -> Result<Engine, SetupError> {
        // A builtin regorus evaluates differently from OPA, with no replacement: refused.
        if let Some((file, line, builtin, reason)) =
            crate::go_compat::refuse_divergent_builtins(&self.modules)
        {
            return Err(SetupError::Parse {
                file,
                line,
                column: 0,
                message: format!(
                    "{builtin} is not supported by the embedded engine: {reason} (the policy could decide differently than on OPA)"
                ),
            });
        }
        let mut engine = Engine::new();
        // OPA's default: a builtin that fails (e.g. parsing a malformed date) makes its
        // expression undefined instead of aborting the query, so the same policy behaves the
        // same on both backends.
        engine.set_strict_builtin_errors(false);
        // OPA's semantics for the builtins where regorus's differ (see go_compat).
        crate::go_compat::install_in_engine(&mut engine).map_err(|e| {
            SetupError::policy(format!("cannot install OPA-compatible builtins: {e:#}"))
        })?;
        for (name, text) in &self.modules {
            engine
                .add_policy(name.clone(), text.clone())
                .map_err(|e| parse_error(name, &e.to_string()))?;
        }
        // A negation OPA and regorus evaluate differently: refused (the modules parse here,
        // after the engine has reported any syntax error).
        if let Some((file, line, message)) =
            crate::go_compat::refuse_negated_calls(&self.modules)
                .map_err(|e| SetupError::policy(format!("cannot analyse the policies: {e:#}")))?
        {
            return Err(SetupError::Parse {
                file,
                line,
                column: 0,
                message,
            });
        }
        for (file, value) in &self.data {
            if !value.is_object() {
                return Err(SetupError::Data {
                    file: file.clone(),
                    message: "a data document must be a JSON object".into(),
                });
            }
            engine
                .add_data(regorus::Value::from(value.clone()))
                .map_err(|e| SetupError::Data {
                    file: file.clone(),
                    message: format!("{e:#}"),
                })?;
        }
        Ok(engine)
    }

    /// `sha256:` and the first 12 hex digits of a digest over every module and data document.
    pub(crate) fn digest(&self) -> String {
        let mut hasher = Sha256::new();
        for (name, text) in &self.modules {
            // Length-prefixed so that moving bytes between fields changes the digest.
            for part in [name.as_bytes(), text.as_bytes()] {
                hasher.update((part.len() as u64).to_be_bytes());
                hasher.update(part);
            }
        }
        for (_, value) in &self.data {
            let text = value.to_string();
            hasher.update((text.len() as u64).to_be_bytes());
            hasher.update(text.as_bytes());
        }
        let digest = hex::encode(hasher.finalize());
        format!("sha256:{}", &digest[..12])
    }
}

fn read_capped(path: &Path) -> Result<String, SetupError> {
    let io = |source| SetupError::Io {
        path: path.to_path_buf(),
        source,
    };
    let len = std::fs::metadata(path).map_err(io)?.len();
    if len > MAX_FILE_BYTES {
        return Err(SetupError::policy(format!(
            "{} is {len} bytes, over the limit of {MAX_FILE_BYTES}",
            path.display()
        )));
    }
    std::fs::read_to_string(path).map_err(io)
}

/// Turns regorus' parse error (`--> file:line:col`, the source line, a caret, `error: msg`)
/// into file, line, column and message.
pub(crate) fn parse_error(name: &str, text: &str) -> SetupError {
    let location = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("--> "))
        .and_then(|loc| {
            let mut parts = loc.rsplitn(3, ':');
            let column = parts.next()?.trim().parse().ok()?;
            let line = parts.next()?.trim().parse().ok()?;
            let file = parts.next()?.to_owned();
            Some((file, line, column))
        });
    let message = text
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map(|l| l.strip_prefix("error: ").unwrap_or(l).to_owned())
        .unwrap_or_else(|| text.trim().to_owned());
    match location {
        Some((file, line, column)) => SetupError::Parse {
            file,
            line,
            column,
            message,
        },
        None => SetupError::Parse {
            file: name.to_owned(),
            line: 0,
            column: 0,
            message,
        },
    }
}
