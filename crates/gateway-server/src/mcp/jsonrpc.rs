//! JSON-RPC errors for what rmcp would refuse in HTTP terms: a body that is not JSON gets a
//! `-32700` parse error (rmcp answers `415` with plain text), and a `tools/call` whose
//! `arguments` is not an object gets `-32602` invalid params for its id (rmcp cannot even read
//! it as a call, and answers as if the method were unknown). MCP clients understand JSON-RPC
//! errors; they cannot do much with a bare HTTP status.
//!
//! It also follows what can be cancelled without a session (`super::cancel`): each sessionless
//! `tools/call`, and each sessionless `notifications/cancelled` (which rmcp would drop).

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::cancel::{self, Sessionless};
use crate::auth;
use crate::error::ApiError;
use crate::state::AppState;
use std::sync::Arc;

/// JSON-RPC's parse error.
const PARSE_ERROR: i64 = -32700;
/// JSON-RPC's invalid params.
const INVALID_PARAMS: i64 = -32602;

/// The middleware (see the module docs). Only `POST` bodies are looked at.
pub(super) async fn check(
    State((state, sessionless)): State<(AppState, Arc<Sessionless>)>,
    request: Request,
    next: Next,
) -> Response {
    if request.method() != Method::POST {
        return next.run(request).await;
    }
    let (parts, body) = request.into_parts();
    let limit = state.config().max_body_bytes;
    let bytes: Bytes = match axum::body::to_bytes(body, limit).await {
        Ok(bytes) => bytes,
        // Over the limit (the limits layer refused a declared length already) or a failed read.
        Err(_) => return ApiError::too_large(limit).into_response(),
    };
    let message: Value = match serde_json::from_slice(&bytes) {
        Ok(message) => message,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                Value::Null,
                PARSE_ERROR,
                &format!("Parse error: the body is not JSON ({e})"),
            );
        }
    };
    if message["method"] == "tools/call"
        && let Some(arguments) = message["params"].get("arguments")
        && !arguments.is_object()
        && !arguments.is_null()
    {
        return error(
            StatusCode::OK,
            message.get("id").cloned().unwrap_or(Value::Null),
            INVALID_PARAMS,
            "Invalid params: tools/call arguments must be an object",
        );
    }
    let sessionless_credential = if parts.headers.contains_key(super::SESSION_HEADER) {
        None
    } else {
        // The bearer check before this layer accepted it.
        auth::credential(&parts.headers).ok()
    };
    let request = Request::from_parts(parts, Body::from(bytes));
    if let Some(credential) = sessionless_credential {
        let id = message.get("id").filter(|id| !id.is_null());
        match (message["method"].as_str(), id) {
            (Some("tools/call"), Some(id)) => {
                return cancel::follow(&sessionless, &credential, id, request, next).await;
            }
            (Some("notifications/cancelled"), None) => {
                if let Some(id) = message["params"].get("requestId") {
                    let cancelled = sessionless.cancel(&credential, id);
                    tracing::info!(request_id = %id, cancelled, "sessionless cancellation");
                }
            }
            _ => {}
        }
    }
    next.run(request).await
}

fn error(status: StatusCode, id: Value, code: i64, message: &str) -> Response {
    let body = json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}});
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}
