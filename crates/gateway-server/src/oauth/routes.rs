//! The metadata routes and the challenge layer of [`super`].

use super::InsufficientScope;
use crate::error::ApiError;
use crate::state::AppState;
use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

/// The metadata routes, when OAuth is configured (otherwise none: the paths are 404).
pub(crate) fn router(state: AppState) -> Router {
    let Some(oauth) = state.config().oauth.as_ref() else {
        return Router::new();
    };
    let mut router = Router::new();
    for path in oauth.metadata_paths() {
        router = router.route(&path, get(metadata));
    }
    router
        .method_not_allowed_fallback(crate::http::method_not_allowed)
        .with_state(state)
}

async fn metadata(State(state): State<AppState>) -> Response {
    let Some(oauth) = state.config().oauth.as_ref() else {
        return ApiError::not_found("no such endpoint").into_response();
    };
    let mut response = axum::Json(oauth.metadata()).into_response();
    // Public, credential-free metadata: browser-based MCP clients fetch it cross-origin.
    response.headers_mut().insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    response
}

/// Writes the OAuth challenges: on every 401 of an agent endpoint (not the approvers') and on
/// 403s for missing scopes. A no-op without OAuth configuration.
pub(crate) async fn challenge(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let Some(oauth) = state.config().oauth.as_ref() else {
        return next.run(request).await;
    };
    let approvals = request.uri().path().starts_with("/v1/approvals");
    let presented = if request.headers().contains_key(header::AUTHORIZATION) {
        Some(match crate::auth::bearer(request.headers()) {
            Ok(_) => "invalid_token",
            Err(_) => "invalid_request",
        })
    } else {
        None
    };
    let mut response = next.run(request).await;
    let value = match response.status() {
        StatusCode::UNAUTHORIZED if !approvals => oauth.challenge(presented, None),
        StatusCode::FORBIDDEN => match response.extensions().get::<InsufficientScope>() {
            Some(InsufficientScope(scope)) => {
                oauth.challenge(Some("insufficient_scope"), Some(scope))
            }
            None => None,
        },
        _ => None,
    };
    if let Some(value) = value {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, value);
    }
    response
}
