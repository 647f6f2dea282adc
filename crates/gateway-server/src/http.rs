//! The agentic REST API: actions, approvals, health, readiness and metrics.

use crate::auth;
use crate::error::ApiError;
use crate::metrics::{Format, PROBE_ATTRIBUTE};
use crate::state::AppState;
use crate::tracker::{Phase, settle};
use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{ConnectInfo, DefaultBodyLimit, FromRequestParts, Path, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use gateway_core::approval::ResolveError;
use gateway_core::policy::POLICY_CONTRACT_VERSION;
use gateway_core::{
    ActionRequest, AgentId, AgentIdentity, ApprovalVerdict, AuthMethod, ErrorKind, PolicyInput,
    RequestId,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use time::OffsetDateTime;

/// Path prefix of the status URLs.
pub const ACTIONS_PATH: &str = "/v1/actions";

/// The REST routes (without `/mcp`): see the crate docs for the list.
pub fn rest_router(state: AppState) -> Router {
    let limit = state.config().max_body_bytes;
    let mut bounded = Router::new()
        .route("/v1/actions/{id}", get(action_status))
        .route("/v1/catalog", get(catalog))
        .route("/v1/approvals", get(list_approvals))
        .route("/v1/approvals/{id}", post(resolve_approval))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz));
    if state.config().expose_metrics {
        bounded = bounded.route("/metrics", get(metrics));
    }
    let bounded = bounded.route_layer(middleware::from_fn_with_state(state.clone(), timeout));
    // `POST /v1/actions` bounds its own wait (then answers 202), so it is outside the timeout.
    bounded
        .route(ACTIONS_PATH, post(submit_action))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

async fn timeout(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let limit = state.config().request_timeout;
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::new(
            ErrorKind::Timeout,
            format!("request took longer than {} ms", limit.as_millis()),
            None,
        )
        .into_response(),
    }
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such endpoint")
}

async fn method_not_allowed(request: Request) -> ApiError {
    ApiError {
        status: StatusCode::METHOD_NOT_ALLOWED,
        ..ApiError::new(
            ErrorKind::InvalidInput,
            format!(
                "{} is not allowed on {}",
                request.method(),
                request.uri().path()
            ),
            None,
        )
    }
}

/// The client's address, when the server was started with connect info (see [`crate::serve`]).
struct ClientAddr(Option<SocketAddr>);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Infallible> {
        Ok(Self(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0),
        ))
    }
}

fn origin(addr: &ClientAddr) -> String {
    match addr.0 {
        Some(a) => format!("http:{a}"),
        None => "http".into(),
    }
}

/// The request id in a path; a segment that is not one (nor even UTF-8) is "no such id", so a
/// stranger learns nothing from the difference, and the answer is in the JSON error shape.
fn path_id(segment: Result<Path<String>, PathRejection>) -> Result<RequestId, ()> {
    let Path(segment) = segment.map_err(drop)?;
    segment.parse().map_err(drop)
}

fn body_error(rejection: &BytesRejection, limit: usize) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::too_large(limit)
    } else if crate::limits::is_body_timeout(rejection) {
        ApiError {
            status: StatusCode::REQUEST_TIMEOUT,
            ..ApiError::new(
                ErrorKind::Timeout,
                "the request body did not arrive within the body read timeout",
                None,
            )
        }
    } else {
        ApiError::new(ErrorKind::InvalidInput, rejection.body_text(), None)
    }
}

/// The state of one action as `GET /v1/actions/{id}` (and a 202) reports it.
#[derive(Debug, Serialize)]
pub struct StatusDoc {
    /// The request id.
    pub id: RequestId,
    /// `running`, `pending_approval`, `completed` (it ran; see `outcome.job`) or `failed`
    /// (it did not run, or could not be recorded; see `error`).
    pub status: &'static str,
    /// Where to poll.
    pub status_url: String,
    /// Approval deadline, while pending.
    #[serde(
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    pub approval_deadline: Option<OffsetDateTime>,
    /// The outcome, once completed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Value>,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ApiError>,
}

/// Builds the status document of a phase.
pub fn status_doc(id: RequestId, phase: &Phase) -> StatusDoc {
    let mut doc = StatusDoc {
        id,
        status: "running",
        status_url: format!("{ACTIONS_PATH}/{id}"),
        approval_deadline: None,
        outcome: None,
        error: None,
    };
    match phase {
        Phase::Running => {}
        Phase::PendingApproval { deadline } => {
            doc.status = "pending_approval";
            doc.approval_deadline = Some(*deadline);
        }
        Phase::Done(result) => match result.as_ref() {
            Ok(outcome) => {
                doc.status = "completed";
                doc.outcome = serde_json::to_value(outcome).ok();
            }
            Err(e) => {
                doc.status = "failed";
                doc.error = Some(ApiError::from(e));
            }
        },
    }
    doc
}

fn accepted(doc: StatusDoc) -> Response {
    let location = HeaderValue::from_str(&doc.status_url).ok();
    let mut response = (StatusCode::ACCEPTED, Json(doc)).into_response();
    if let Some(location) = location {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
}

/// An action body, parsed exactly as the client wrote it: a duplicate key, or a number the
/// policy would see rounded to a float (where OPA reading the same text would not), is refused
/// here.
pub(crate) fn action_request(body: &[u8]) -> Result<ActionRequest, ApiError> {
    gateway_core::strict_json::parse_exact(body)
        .and_then(serde_json::from_value)
        .map_err(|e| {
            ApiError::new(
                ErrorKind::InvalidInput,
                format!("body is not a valid ActionRequest: {e}"),
                None,
            )
        })
}

async fn submit_action(
    State(state): State<AppState>,
    addr: ClientAddr,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let credential = auth::credential(&headers).map_err(ApiError::unauthenticated)?;
    let body = body.map_err(|r| body_error(&r, state.config().max_body_bytes))?;
    let request = action_request(&body)?;
    let id = request.id;
    // An HTTP client cannot withdraw a request: leaving does not cancel it.
    let mut rx = state.submit(
        credential,
        request,
        &origin(&addr),
        gateway_core::CancellationToken::new(),
    )?;
    let phase = settle(&mut rx, state.config().action_wait).await;
    Ok(match &phase {
        Phase::Done(result) => match result.as_ref() {
            Ok(outcome) => (StatusCode::OK, Json(outcome)).into_response(),
            Err(e) => ApiError::from(e).into_response(),
        },
        // Waiting for a human, or still running after the wait: poll the status URL.
        _ => accepted(status_doc(id, &phase)),
    })
}

async fn action_status(
    State(state): State<AppState>,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<StatusDoc>, ApiError> {
    let credential = auth::credential(&headers).map_err(ApiError::unauthenticated)?;
    let Ok(id) = path_id(id) else {
        // Authenticate first, so the answer to a bad id says nothing to strangers.
        state
            .identity()
            .authenticate(&credential)
            .await
            .map_err(|e| ApiError::new(e.kind(), e.to_string(), None))?;
        return Err(ApiError::not_found("no such action"));
    };
    let phase = state.phase_for(&credential, id).await?;
    Ok(Json(status_doc(id, &phase)))
}

/// `GET /v1/catalog`: the actions the policy's listing rule shows this agent (the same as MCP
/// `tools/list`), each with its params schema exactly as the gateway enforces it.
async fn catalog(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let credential = auth::credential(&headers).map_err(ApiError::unauthenticated)?;
    let visible = state.visible_actions(&credential).await?;
    let actions: Vec<Value> = visible
        .iter()
        .map(|def| {
            json!({
                "name": def.name,
                "description": def.description,
                "params_schema": def.params_schema.as_value(),
            })
        })
        .collect();
    Ok(Json(json!({ "actions": actions })))
}

fn approver(state: &AppState, headers: &HeaderMap) -> Result<String, ApiError> {
    let token = auth::bearer(headers).map_err(ApiError::unauthenticated)?;
    state
        .approvers()
        .authenticate(&token)
        .map(str::to_owned)
        .ok_or_else(|| ApiError::unauthenticated("not an approver credential"))
}

async fn list_approvals(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let who = approver(&state, &headers)?;
    let pending = state.approvals().pending();
    tracing::info!(approver = %who, count = pending.len(), "approver listed pending approvals");
    Ok(Json(json!({ "pending": pending })))
}

/// An approver's answer, the body of `POST /v1/approvals/{id}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerdictBody {
    /// `approve` or `deny`.
    pub verdict: VerdictChoice,
    /// Why (recorded; required wording is up to the organisation).
    #[serde(default)]
    pub reason: String,
}

/// Approve or deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VerdictChoice {
    /// Let the action run.
    Approve,
    /// Refuse it.
    Deny,
}

async fn resolve_approval(
    State(state): State<AppState>,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let who = approver(&state, &headers)?;
    let body = body.map_err(|r| body_error(&r, state.config().max_body_bytes))?;
    let answer: VerdictBody = serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            ErrorKind::InvalidInput,
            format!("body must be {{\"verdict\": \"approve\"|\"deny\", \"reason\": \"…\"}}: {e}"),
            None,
        )
    })?;
    if answer.reason.len() > 4096 {
        return Err(ApiError::new(
            ErrorKind::InvalidInput,
            "reason longer than 4096 bytes",
            None,
        ));
    }
    let id = path_id(id).map_err(|()| ApiError::not_found("no pending approval with that id"))?;
    let verdict = match answer.verdict {
        VerdictChoice::Approve => ApprovalVerdict::Approved {
            approver: who.clone(),
        },
        VerdictChoice::Deny => ApprovalVerdict::Denied {
            approver: who.clone(),
            reason: answer.reason,
        },
    };
    // The pipeline records the verdict (with the approver) in the audit trail.
    state.approvals().resolve(id, verdict).map_err(|e| {
        let kind = match e {
            ResolveError::ApproverNotAllowed(_) => ErrorKind::Denied,
            _ => ErrorKind::NotFound,
        };
        ApiError::new(kind, e.to_string(), Some(id))
    })?;
    tracing::info!(approver = %who, correlation_id = %id, verdict = ?answer.verdict, "approval resolved");
    Ok(Json(json!({
        "id": id,
        "verdict": match answer.verdict { VerdictChoice::Approve => "approved", VerdictChoice::Deny => "denied" },
        "approver": who,
        "status_url": format!("{ACTIONS_PATH}/{id}"),
    })))
}

async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

fn probe_input() -> Option<PolicyInput> {
    let mut context = BTreeMap::new();
    context.insert(PROBE_ATTRIBUTE.to_owned(), Value::Bool(true));
    Some(PolicyInput {
        contract_version: POLICY_CONTRACT_VERSION,
        agent: AgentIdentity::new(
            AgentId::new("probe:readyz").ok()?,
            "gateway-server",
            AuthMethod::Other {
                description: "readiness probe".into(),
            },
        ),
        action: "gateway.readiness-probe".into(),
        resource: "gateway:readyz".into(),
        params: json!({}),
        intent: "readiness probe".into(),
        requested_ttl_seconds: 1,
        request_time: OffsetDateTime::now_utc(),
        correlation_id: RequestId::new(),
        context,
    })
}

/// Whether the policy and audit backends answer, each within the readiness timeout.
pub async fn readiness(state: &AppState) -> Result<(), String> {
    let limit = state.config().readiness_timeout;
    let policy = state.gateway().policy();
    let audit = state.gateway().audit();
    let policy_check = async {
        let input = probe_input().ok_or("cannot build the probe input")?;
        match tokio::time::timeout(limit, policy.decide(&input)).await {
            // Any well-formed decision, allow or deny, means the policy engine answers.
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(format!("policy: {e}")),
            Err(_) => Err(format!("policy: no answer within {} ms", limit.as_millis())),
        }
    };
    let audit_check = async {
        match tokio::time::timeout(limit, audit.read(None, 1)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(format!("audit: {e}")),
            Err(_) => Err(format!("audit: no answer within {} ms", limit.as_millis())),
        }
    };
    let (p, a): (Result<(), String>, Result<(), String>) = tokio::join!(policy_check, audit_check);
    let failures: Vec<String> = [p, a].into_iter().filter_map(Result::err).collect();
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures.join("; "))
    }
}

async fn readyz(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    readiness(&state)
        .await
        .map_err(|m| ApiError::new(ErrorKind::Unavailable, format!("not ready: {m}"), None))?;
    Ok(Json(json!({ "status": "ready" })))
}

/// `GET /metrics`: OpenMetrics when the scraper asks for it, else the Prometheus text format.
async fn metrics(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    let format = Format::negotiate(accept);
    let body = state.metrics().render(format).map_err(|e| {
        ApiError::new(
            ErrorKind::Internal,
            format!("metrics could not be encoded: {e}"),
            None,
        )
    })?;
    Ok(([(header::CONTENT_TYPE, format.content_type())], body).into_response())
}
