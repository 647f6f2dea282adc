//! Backend-neutral error kinds shared by every concern.
//!
//! Each trait has its own error enum (`IdentityError`, `PolicyError`, …) so that a caller can
//! match on what went wrong in that concern; every one of them maps onto an [`ErrorKind`] so that
//! front ends (HTTP status codes, audit records, metrics) can treat all backends alike.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A boxed error used as the `source` of backend failures.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What kind of failure happened, independent of the backend that reported it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorKind {
    /// The caller could not be authenticated.
    Unauthenticated,
    /// The caller is known but the action is not allowed.
    Denied,
    /// The request (or a backend's answer) is malformed, too large or otherwise invalid.
    InvalidInput,
    /// The caller exceeded a rate or concurrency limit.
    RateLimited,
    /// A backend could not be reached or refused to work.
    Unavailable,
    /// A deadline passed.
    Timeout,
    /// The operation was cancelled by its caller.
    Cancelled,
    /// A referenced object does not exist.
    NotFound,
    /// The operation conflicts with existing state.
    Conflict,
    /// A bug or an unexpected state, including a panic inside a backend.
    Internal,
}

impl ErrorKind {
    /// The stable snake_case name of the kind, as used in JSON and audit records.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unauthenticated => "unauthenticated",
            Self::Denied => "denied",
            Self::InvalidInput => "invalid_input",
            Self::RateLimited => "rate_limited",
            Self::Unavailable => "unavailable",
            Self::Timeout => "timeout",
            Self::Cancelled => "cancelled",
            Self::NotFound => "not_found",
            Self::Conflict => "conflict",
            Self::Internal => "internal",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Declares a concern's error enum with the same backend-neutral variants, so that every trait
/// reports failures the same way without repeating the boilerplate.
macro_rules! concern_error {
    (
        $(#[$meta:meta])* $name:ident, $concern:literal
        $(, extra {
            $(
                $(#[doc = $vdoc:literal])*
                $variant:ident [$msg:literal] { $($(#[$fmeta:meta])* $field:ident : $fty:ty),* $(,)? } => $kind:ident
            ),* $(,)?
        })?
    ) => {
        $(#[$meta])*
        #[derive(Debug, thiserror::Error)]
        #[non_exhaustive]
        pub enum $name {
            $($(
                $(#[doc = $vdoc])*
                #[error($msg)]
                $variant { $($(#[$fmeta])* $field: $fty),* },
            )*)?
            #[doc = concat!("The ", $concern, " rejected the input as invalid.")]
            #[error("{concern}: invalid input: {message}", concern = $concern)]
            InvalidInput {
                /// What is wrong.
                message: String,
            },
            #[doc = concat!("The ", $concern, " backend could not be reached or refused to work.")]
            #[error("{concern} unavailable: {message}", concern = $concern)]
            Unavailable {
                /// What failed.
                message: String,
                /// The underlying error, if any.
                #[source]
                source: Option<$crate::error::BoxError>,
            },
            #[doc = concat!("The ", $concern, " did not answer in time.")]
            #[error("{concern} timed out after {after:?}", concern = $concern)]
            Timeout {
                /// How long the caller waited.
                after: std::time::Duration,
            },
            #[doc = concat!("The referenced ", $concern, " object does not exist.")]
            #[error("{concern}: not found: {message}", concern = $concern)]
            NotFound {
                /// What was not found.
                message: String,
            },
            #[doc = concat!("The ", $concern, " operation conflicts with existing state.")]
            #[error("{concern}: conflict: {message}", concern = $concern)]
            Conflict {
                /// What conflicts.
                message: String,
            },
            #[doc = concat!("An unexpected failure inside the ", $concern, " backend.")]
            #[error("{concern}: internal error: {message}", concern = $concern)]
            Internal {
                /// What failed.
                message: String,
                /// The underlying error, if any.
                #[source]
                source: Option<$crate::error::BoxError>,
            },
        }

        impl $name {
            /// The backend-neutral kind of this error.
            pub fn kind(&self) -> $crate::error::ErrorKind {
                use $crate::error::ErrorKind;
                match self {
                    $($(Self::$variant { .. } => ErrorKind::$kind,)*)?
                    Self::InvalidInput { .. } => ErrorKind::InvalidInput,
                    Self::Unavailable { .. } => ErrorKind::Unavailable,
                    Self::Timeout { .. } => ErrorKind::Timeout,
                    Self::NotFound { .. } => ErrorKind::NotFound,
                    Self::Conflict { .. } => ErrorKind::Conflict,
                    Self::Internal { .. } => ErrorKind::Internal,
                }
            }

            /// Shorthand for [`Self::InvalidInput`].
            pub fn invalid_input(message: impl Into<String>) -> Self {
                Self::InvalidInput { message: message.into() }
            }

            /// Shorthand for [`Self::Unavailable`] with a source error.
            pub fn unavailable(
                message: impl Into<String>,
                source: impl Into<$crate::error::BoxError>,
            ) -> Self {
                Self::Unavailable { message: message.into(), source: Some(source.into()) }
            }

            /// Shorthand for [`Self::Unavailable`] without a source error.
            pub fn unavailable_msg(message: impl Into<String>) -> Self {
                Self::Unavailable { message: message.into(), source: None }
            }

            /// Shorthand for [`Self::Internal`] with a source error.
            pub fn internal(
                message: impl Into<String>,
                source: impl Into<$crate::error::BoxError>,
            ) -> Self {
                Self::Internal { message: message.into(), source: Some(source.into()) }
            }

            /// Shorthand for [`Self::Internal`] without a source error.
            pub fn internal_msg(message: impl Into<String>) -> Self {
                Self::Internal { message: message.into(), source: None }
            }
        }
    };
}

pub(crate) use concern_error;
