//! Errors raised while setting a decider up (loading policies, reading configuration).
//!
//! Errors while deciding are the core's [`gateway_core::PolicyError`]; these happen before any
//! request is served, so a gateway refuses to start (or keeps its previous policies on reload).

use gateway_core::ErrorKind;
use std::path::PathBuf;

/// Why a decider could not be built or its policies (re)loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SetupError {
    /// A policy or data file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A policy does not parse (or does not compile).
    #[error("{file}:{line}:{column}: {message}")]
    Parse {
        /// The policy file (or the name given to a policy string).
        file: String,
        /// 1-based line of the error (0 when the engine did not say).
        line: u32,
        /// 1-based column of the error (0 when the engine did not say).
        column: u32,
        /// The engine's message.
        message: String,
    },
    /// A data document is not valid JSON or cannot be merged into `data`.
    #[error("invalid data document {file}: {message}")]
    Data {
        /// The data file (or `<inline>`).
        file: String,
        /// What is wrong.
        message: String,
    },
    /// The policies load but cannot serve decisions (no policy, decision rule not declared…).
    #[error("invalid policy set: {message}")]
    Policy {
        /// What is wrong.
        message: String,
    },
    /// A configuration value is missing or invalid (URL, timeout, environment variable…).
    #[error("invalid configuration: {message}")]
    Config {
        /// What is wrong (never contains a secret).
        message: String,
    },
}

impl SetupError {
    /// The backend-neutral kind of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                ErrorKind::NotFound
            }
            Self::Io { .. } => ErrorKind::Unavailable,
            Self::Parse { .. } | Self::Data { .. } | Self::Policy { .. } | Self::Config { .. } => {
                ErrorKind::InvalidInput
            }
        }
    }

    pub(crate) fn config(message: impl Into<String>) -> Self {
        Self::Config {
            message: message.into(),
        }
    }

    pub(crate) fn policy(message: impl Into<String>) -> Self {
        Self::Policy {
            message: message.into(),
        }
    }
}
