//! Calling a backend defensively: with a deadline, catching panics, and optionally giving up
//! when the caller cancels.

use crate::error::BoxError;
use futures::FutureExt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Why a guarded backend call produced no value.
#[derive(Debug)]
pub(crate) enum CallError<E> {
    /// The backend returned an error.
    Failed(E),
    /// The deadline passed.
    TimedOut(Duration),
    /// The backend panicked; the message is the panic payload if it was a string.
    Panicked(String),
    /// The caller cancelled before the backend answered.
    Cancelled,
}

/// A guarded backend call that produced neither a value nor an error of its own: the source
/// of a [`GatewayError::Backend`](super::GatewayError::Backend) in those cases.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CallFailure {
    /// The deadline passed.
    #[error("{what} did not answer within {after:?}")]
    TimedOut {
        /// The backend, e.g. `runner`.
        what: &'static str,
        /// The deadline.
        after: Duration,
    },
    /// The backend panicked.
    #[error("{what} panicked: {message}")]
    Panicked {
        /// The backend, e.g. `runner`.
        what: &'static str,
        /// The panic payload, if it was a string.
        message: String,
    },
    /// The caller cancelled before the backend answered.
    #[error("cancelled while waiting for {what}")]
    Cancelled {
        /// The backend, e.g. `runner`.
        what: &'static str,
    },
}

impl<E> CallError<E> {
    /// The gateway's own account of the call, or the backend's error.
    fn split(self, what: &'static str) -> Result<CallFailure, E> {
        match self {
            Self::Failed(e) => Err(e),
            Self::TimedOut(after) => Ok(CallFailure::TimedOut { what, after }),
            Self::Panicked(message) => Ok(CallFailure::Panicked { what, message }),
            Self::Cancelled => Ok(CallFailure::Cancelled { what }),
        }
    }
}

impl<E: std::fmt::Display> CallError<E> {
    /// A one-line description for errors and audit records.
    pub(crate) fn describe(&self, what: &'static str) -> String {
        match self {
            Self::Failed(e) => e.to_string(),
            Self::TimedOut(after) => CallFailure::TimedOut {
                what,
                after: *after,
            }
            .to_string(),
            Self::Panicked(message) => CallFailure::Panicked {
                what,
                message: message.clone(),
            }
            .to_string(),
            Self::Cancelled => CallFailure::Cancelled { what }.to_string(),
        }
    }
}

impl<E: std::error::Error + Send + Sync + 'static> CallError<E> {
    /// The error as a typed source: the backend's own, or a [`CallFailure`].
    pub(crate) fn into_source(self, what: &'static str) -> BoxError {
        match self.split(what) {
            Ok(failure) => Box::new(failure),
            Err(backend) => Box::new(backend),
        }
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}

/// Runs `fut` with a deadline, turning a panic into [`CallError::Panicked`]; if `cancel` is
/// given and fires first, the call is abandoned with [`CallError::Cancelled`].
pub(crate) async fn guarded<T, E>(
    fut: impl Future<Output = Result<T, E>>,
    deadline: Duration,
    cancel: Option<&CancellationToken>,
) -> Result<T, CallError<E>> {
    let call = async {
        match tokio::time::timeout(deadline, AssertUnwindSafe(fut).catch_unwind()).await {
            Ok(Ok(Ok(v))) => Ok(v),
            Ok(Ok(Err(e))) => Err(CallError::Failed(e)),
            Ok(Err(payload)) => Err(CallError::Panicked(panic_message(payload.as_ref()))),
            Err(_) => Err(CallError::TimedOut(deadline)),
        }
    };
    match cancel {
        None => call.await,
        Some(token) => tokio::select! {
            biased;
            () = token.cancelled() => Err(CallError::Cancelled),
            r = call => r,
        },
    }
}
