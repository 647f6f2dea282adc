//! What every request must fit before any handler (REST or MCP) sees it, each refusal in the
//! documented JSON error shape:
//!
//! - a request target over `max_uri_bytes`: 414;
//! - request headers over `max_header_bytes` in all: 431;
//! - a `Content-Length` over `max_body_bytes`: 413, before a byte of the body is read (a body
//!   without one is still cut at the limit as it is read);
//! - a body that has not fully arrived `body_read_timeout` after the head: the read fails and the
//!   handler answers 408 (a client trickling one byte a second holds nothing for long).

use crate::error::ApiError;
use crate::state::AppState;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use gateway_core::ErrorKind;
use tower_http::timeout::DeadlineBody;

/// The middleware (see the module docs).
pub(crate) async fn guard(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let config = state.config();
    let target = request
        .uri()
        .path_and_query()
        .map_or(0, |p| p.as_str().len());
    if target > config.max_uri_bytes {
        return refuse(
            StatusCode::URI_TOO_LONG,
            format!("request target longer than {} bytes", config.max_uri_bytes),
        );
    }
    // As on the wire: `name: value\r\n` per header.
    let head: usize = request
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    if head > config.max_header_bytes {
        return refuse(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            format!(
                "request headers larger than {} bytes",
                config.max_header_bytes
            ),
        );
    }
    if let Some(length) = request.headers().get(header::CONTENT_LENGTH) {
        // hyper has already refused a malformed or repeated Content-Length.
        let length = length.to_str().ok().and_then(|l| l.parse::<u64>().ok());
        if length.is_some_and(|l| l > config.max_body_bytes as u64) {
            return ApiError::too_large(config.max_body_bytes).into_response();
        }
    }
    let deadline = config.body_read_timeout;
    let request = request.map(|body| Body::new(DeadlineBody::new(deadline, body)));
    next.run(request).await
}

fn refuse(status: StatusCode, message: String) -> Response {
    ApiError {
        status,
        ..ApiError::new(ErrorKind::InvalidInput, message, None)
    }
    .into_response()
}

/// Whether a body read failed because the body deadline passed.
pub(crate) fn is_body_timeout(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(e) = current {
        if e.is::<tower_http::timeout::TimeoutError>() {
            return true;
        }
        current = e.source();
    }
    false
}
