//! Cancelling tool calls that were made without a session.
//!
//! In a session, rmcp hands a `notifications/cancelled` to the call it names, which then stops
//! and sends no response. Without one (a server with `mcp_sessions` off, or a client on a
//! protocol version without sessions) every POST is served on its own, and rmcp answers a
//! notification with 202 and drops it: the call it names is being served for another POST. A
//! client that cancels as MCP says it should, by sending the notification while the call's
//! response stream stays open (streamable HTTP: a disconnection is not a cancellation), then
//! saw its call given up while the action went on waiting for a human, who could still approve
//! it and have it run. The official TypeScript SDK does exactly that when a call's
//! `AbortSignal` fires.
//!
//! So the endpoint's middleware (`super::jsonrpc`) [follows](follow) each `tools/call` made
//! without a session: it registers the call while it is open, under a SHA-256 digest of the
//! caller's bearer credential and its JSON-RPC id, and hands the handler a [`Withdrawn`]
//! token, from which the call's action token derives. A sessionless `notifications/cancelled`
//! with the same credential [cancels](Sessionless::cancel) the calls it names: their actions
//! are cancelled (`Gateway::execute_until`), and their HTTP responses end there, so that, as
//! in a session, no response is sent for a cancelled request (ending them also makes rmcp
//! stop the handlers). JSON-RPC ids are unique per client only: when two clients sharing a
//! credential both have a call with that id open, both are cancelled. That fails safe (what
//! the caller asked to stop does not run; the other call can be made again), and no
//! credential reaches another's calls.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use gateway_core::{CancellationToken, Credential};
use hyper::body::{Body as HttpBody, Bytes, Frame, SizeHint};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};

/// The credential's digest and the JSON-RPC id as JSON text (`7` and `"7"` are different ids).
type Key = ([u8; 32], String);

/// The sessionless calls in flight (see the module docs).
#[derive(Debug, Default)]
pub(crate) struct Sessionless {
    calls: Mutex<HashMap<Key, Vec<(u64, CancellationToken)>>>,
    serial: AtomicU64,
}

/// In a sessionless call's HTTP request extensions: cancelled when the client cancels the
/// call. The handler derives the action's cancellation token from it.
#[derive(Debug, Clone)]
pub(crate) struct Withdrawn(pub(crate) CancellationToken);

/// A registered call; dropping it (when the call's response ends) forgets it.
#[derive(Debug)]
pub(super) struct Registered {
    registry: Arc<Sessionless>,
    key: Key,
    serial: u64,
}

fn key(credential: &Credential, id: &Value) -> Key {
    (
        Sha256::digest(credential.secret().expose()).into(),
        id.to_string(),
    )
}

impl Sessionless {
    fn calls(&self) -> MutexGuard<'_, HashMap<Key, Vec<(u64, CancellationToken)>>> {
        // Nothing is left half-done under the lock: a poisoned map is still consistent.
        self.calls.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers the call `id` of `credential`, to be cancelled through `cancel`.
    pub(super) fn register(
        self: &Arc<Self>,
        credential: &Credential,
        id: &Value,
        cancel: CancellationToken,
    ) -> Registered {
        let key = key(credential, id);
        let serial = self.serial.fetch_add(1, Ordering::Relaxed);
        self.calls()
            .entry(key.clone())
            .or_default()
            .push((serial, cancel));
        Registered {
            registry: Arc::clone(self),
            key,
            serial,
        }
    }

    /// Cancels the open calls `id` of `credential`; how many there were.
    pub(super) fn cancel(&self, credential: &Credential, id: &Value) -> usize {
        let calls = self.calls();
        let Some(open) = calls.get(&key(credential, id)) else {
            return 0;
        };
        for (_, token) in open {
            token.cancel();
        }
        open.len()
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.calls().values().map(Vec::len).sum()
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        let mut calls = self.registry.calls();
        if let Some(open) = calls.get_mut(&self.key) {
            open.retain(|(serial, _)| *serial != self.serial);
            if open.is_empty() {
                calls.remove(&self.key);
            }
        }
    }
}

/// Serves the sessionless `tools/call` `id` of `credential` so that it can be cancelled (see
/// the module docs): until the client cancels it, its response is rmcp's.
pub(super) async fn follow(
    sessionless: &Arc<Sessionless>,
    credential: &Credential,
    id: &Value,
    mut request: Request,
    next: Next,
) -> Response {
    let withdrawn = CancellationToken::new();
    let registered = sessionless.register(credential, id, withdrawn.clone());
    request
        .extensions_mut()
        .insert(Withdrawn(withdrawn.clone()));
    let response = tokio::select! {
        response = next.run(request) => response,
        // Cancelled before the first message: an event stream with nothing in it.
        () = withdrawn.cancelled() => return ended(),
    };
    if withdrawn.is_cancelled() {
        return ended();
    }
    let (parts, body) = response.into_parts();
    let body = EndOnCancel {
        body,
        cancelled: Box::pin(async move { withdrawn.cancelled().await }),
        _registered: registered,
    };
    Response::from_parts(parts, Body::new(body))
}

/// The answer to a request cancelled before its response began.
fn ended() -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/event-stream")],
        Body::empty(),
    )
        .into_response()
}

/// A response body that ends where the call is cancelled, before anything else is sent.
struct EndOnCancel {
    body: Body,
    cancelled: Pin<Box<dyn Future<Output = ()> + Send>>,
    _registered: Registered,
}

impl HttpBody for EndOnCancel {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        if this.cancelled.as_mut().poll(cx).is_ready() {
            return Poll::Ready(None);
        }
        Pin::new(&mut this.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    /// The inner body's, so that a JSON answer keeps its `Content-Length` (one frame, which a
    /// cancellation cuts short only if it comes first, and then nobody reads it).
    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_the_same_credential_and_id_cancel_and_a_finished_call_is_forgotten() {
        let registry = Arc::new(Sessionless::default());
        let (a, b) = (Credential::bearer("key-a"), Credential::bearer("key-b"));
        let (first, second) = (CancellationToken::new(), CancellationToken::new());
        let one = registry.register(&a, &json!(3), first.clone());
        let two = registry.register(&a, &json!(4), second.clone());
        // Another credential, another id, or the same digits as a string: nothing.
        assert_eq!(registry.cancel(&b, &json!(3)), 0);
        assert_eq!(registry.cancel(&a, &json!(5)), 0);
        assert_eq!(registry.cancel(&a, &json!("3")), 0);
        assert!(!first.is_cancelled() && !second.is_cancelled());
        assert_eq!(registry.cancel(&a, &json!(3)), 1);
        assert!(first.is_cancelled() && !second.is_cancelled());
        drop(one);
        assert_eq!(registry.cancel(&a, &json!(3)), 0);
        drop(two);
        assert_eq!(registry.len(), 0);
    }

    #[test]
    fn two_open_calls_with_one_id_are_both_cancelled() {
        let registry = Arc::new(Sessionless::default());
        let a = Credential::bearer("key-a");
        let (first, second) = (CancellationToken::new(), CancellationToken::new());
        let _one = registry.register(&a, &json!("x"), first.clone());
        let two = registry.register(&a, &json!("x"), second.clone());
        drop(two);
        let _three = registry.register(&a, &json!("x"), second.clone());
        assert_eq!(registry.len(), 2);
        assert_eq!(registry.cancel(&a, &json!("x")), 2);
        assert!(first.is_cancelled() && second.is_cancelled());
    }
}
