//! The JSON error body every endpoint returns: `{"error": {"kind", "message", "correlation_id"}}`.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use gateway_core::{ActionOutcome, ErrorKind, GatewayError, RequestId};
use serde::Serialize;
use utoipa::ToSchema;

/// An error as the API reports it. Messages never hold credentials: they come from the core's
/// errors (which never include them) or from this crate's fixed texts.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = Error)]
pub struct ApiError {
    /// The HTTP status.
    #[serde(skip)]
    pub status: StatusCode,
    /// The backend-neutral kind (`unauthenticated`, `denied`, `invalid_input`, …).
    #[schema(value_type = crate::schema::ErrorKind)]
    pub kind: &'static str,
    /// What went wrong, for people.
    pub message: String,
    /// The request's correlation id (look it up in the audit trail), if one was assigned.
    #[schema(value_type = Option<String>, format = Uuid, required = true)]
    pub correlation_id: Option<RequestId>,
    /// The policy's or approver's reasons, on denials.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reasons: Option<Vec<String>>,
    /// What the action did, when it ran but its final audit record could not be written.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<crate::schema::ActionOutcome>)]
    pub outcome: Option<Box<ActionOutcome>>,
    /// On a 403 for an OAuth access token that lacks required scopes: those scopes,
    /// space-separated (they go into the `WWW-Authenticate` challenge, not the body).
    #[serde(skip)]
    pub insufficient_scope: Option<String>,
    /// On a 429: whole seconds until a retry would pass (the `Retry-After` header); unknown
    /// (a concurrency cap) is sent as 1.
    #[serde(skip)]
    pub retry_after_seconds: Option<std::num::NonZeroU32>,
}

/// The body of every error response: `{"error": {…}}`.
#[derive(Serialize, ToSchema)]
#[schema(as = ErrorBody)]
pub(crate) struct Body<'a> {
    #[schema(value_type = ApiError)]
    error: &'a ApiError,
}

/// The HTTP status for a backend-neutral error kind.
pub fn status_for(kind: ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::Unauthenticated => StatusCode::UNAUTHORIZED,
        ErrorKind::Denied => StatusCode::FORBIDDEN,
        ErrorKind::InvalidInput => StatusCode::UNPROCESSABLE_ENTITY,
        ErrorKind::RateLimited => StatusCode::TOO_MANY_REQUESTS,
        ErrorKind::Timeout => StatusCode::GATEWAY_TIMEOUT,
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::Conflict => StatusCode::CONFLICT,
        // A cancelled request did not run; from the client's side the service could not serve it.
        ErrorKind::Unavailable | ErrorKind::Cancelled => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl ApiError {
    /// An error of `kind` with its usual status.
    pub fn new(
        kind: ErrorKind,
        message: impl Into<String>,
        correlation_id: Option<RequestId>,
    ) -> Self {
        Self {
            status: status_for(kind),
            kind: kind.as_str(),
            message: message.into(),
            correlation_id,
            reasons: None,
            outcome: None,
            insufficient_scope: None,
            retry_after_seconds: None,
        }
    }

    /// 403: an OAuth access token that does not grant `scopes` (space-separated), all of which
    /// are required (RFC 6750 section 3.1 `insufficient_scope`).
    pub fn insufficient_scope(scopes: impl Into<String>) -> Self {
        let scopes = scopes.into();
        Self {
            insufficient_scope: Some(scopes.clone()),
            ..Self::new(
                ErrorKind::Denied,
                format!("the access token does not grant the required scopes: {scopes}"),
                None,
            )
        }
    }

    /// 401: missing or unaccepted credential.
    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unauthenticated, message, None)
    }

    /// 404.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, message, None)
    }

    /// 413: the body is over the cap.
    pub fn too_large(limit: usize) -> Self {
        Self {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            ..Self::new(
                ErrorKind::InvalidInput,
                format!("request body larger than {limit} bytes"),
                None,
            )
        }
    }

    /// Sets the correlation id.
    pub fn with_correlation_id(mut self, id: RequestId) -> Self {
        self.correlation_id = Some(id);
        self
    }
}

impl From<&GatewayError> for ApiError {
    fn from(e: &GatewayError) -> Self {
        let mut api = Self::new(e.kind(), e.to_string(), Some(e.correlation_id()));
        match e {
            GatewayError::Denied { reasons, .. } => api.reasons = Some(reasons.clone()),
            GatewayError::RateLimited {
                retry_after: Some(after),
                ..
            } => {
                // Rounded up: a client that waits the whole seconds it is told passes.
                let millis = u64::try_from(after.as_millis()).unwrap_or(u64::MAX);
                let seconds = u32::try_from(millis.div_ceil(1000)).unwrap_or(u32::MAX);
                api.retry_after_seconds = std::num::NonZeroU32::new(seconds.max(1));
            }
            // Read back from the state store: a denial keeps its reasons.
            GatewayError::Recorded { reasons, .. } if !reasons.is_empty() => {
                api.reasons = Some(reasons.clone());
            }
            GatewayError::OutcomeNotRecorded { outcome, .. } => api.outcome = Some(outcome.clone()),
            // An audit failure means the action was stopped before it ran (fail closed).
            GatewayError::Backend {
                stage: gateway_core::gateway::Stage::Audit,
                ..
            } => api.status = StatusCode::SERVICE_UNAVAILABLE,
            _ => {}
        }
        api
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(Body { error: &self })).into_response();
        match self.status {
            StatusCode::UNAUTHORIZED => {
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"agent-gateway\""),
                );
            }
            StatusCode::FORBIDDEN => {
                if let Some(scope) = &self.insufficient_scope {
                    // The challenge layer (`crate::oauth`) writes the header from this.
                    response
                        .extensions_mut()
                        .insert(crate::oauth::InsufficientScope(scope.clone()));
                }
            }
            StatusCode::TOO_MANY_REQUESTS => {
                let seconds = self
                    .retry_after_seconds
                    .map_or(1, std::num::NonZeroU32::get);
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
            }
            _ => {}
        }
        response
    }
}
