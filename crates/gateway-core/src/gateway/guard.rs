//! Calling a backend defensively: with a deadline, catching panics, and optionally giving up
//! when the caller cancels.

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

impl<E: std::fmt::Display> CallError<E> {
    /// A one-line description for errors and audit records.
    pub(crate) fn describe(&self, what: &str) -> String {
        match self {
            Self::Failed(e) => e.to_string(),
            Self::TimedOut(d) => format!("{what} did not answer within {d:?}"),
            Self::Panicked(m) => format!("{what} panicked: {m}"),
            Self::Cancelled => format!("cancelled while waiting for {what}"),
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
