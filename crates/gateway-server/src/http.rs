//! The agentic REST API: actions, approvals, health, readiness, metrics and the OpenAPI
//! document ([`openapi`]).

use self::openapi::OPENAPI_PATH;
use crate::auth;
use crate::config::ServerConfig;
use crate::error::ApiError;
use crate::metrics::{Format, PROBE_ATTRIBUTE};
use crate::state::AppState;
use crate::tracker::{Phase, settle};
use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{ConnectInfo, DefaultBodyLimit, FromRequestParts, Path, Request, State};
use axum::handler::Handler;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use gateway_core::approval::{ApprovalRequest, TicketState, VoteRefused};
use gateway_core::approvals::{Ballot, ResolveError};
use gateway_core::policy::POLICY_CONTRACT_VERSION;
use gateway_core::{
    ActionRequest, AgentId, AgentIdentity, AuthMethod, ErrorKind, PolicyInput, RequestId,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use time::OffsetDateTime;
use utoipa::ToSchema;

pub mod locks;
pub mod openapi;

/// Path prefix of the status URLs.
pub const ACTIONS_PATH: &str = "/v1/actions";

/// One REST route. [`rest_router`] serves exactly the table of [`routes`], and the tests check
/// that [`openapi::document`] describes exactly [`rest_routes`]: add a route to the
/// table (never with a bare `.route`), and its `#[utoipa::path]` to the document.
struct RouteEntry {
    method: Method,
    path: &'static str,
    handler: MethodRouter<AppState>,
    /// Under the request timeout (every route but `POST /v1/actions`, which bounds its own
    /// wait and then answers 202).
    bounded: bool,
}

fn get_route<H: Handler<T, AppState>, T: 'static>(path: &'static str, h: H) -> RouteEntry {
    RouteEntry {
        method: Method::GET,
        path,
        handler: get(h),
        bounded: true,
    }
}

fn post_route<H: Handler<T, AppState>, T: 'static>(path: &'static str, h: H) -> RouteEntry {
    RouteEntry {
        method: Method::POST,
        path,
        handler: post(h),
        bounded: true,
    }
}

fn routes(config: &ServerConfig) -> Vec<RouteEntry> {
    let mut table = vec![
        RouteEntry {
            bounded: false,
            ..post_route(ACTIONS_PATH, submit_action)
        },
        get_route("/v1/actions/{id}", action_status),
        get_route("/v1/catalog", catalog),
        get_route("/v1/approvals", list_approvals),
        post_route("/v1/approvals/{id}", resolve_approval),
        get_route("/v1/locks", locks::list_locks),
        post_route("/v1/locks", locks::lock),
        post_route("/v1/locks/unlock", locks::unlock),
        get_route("/healthz", healthz),
        get_route("/readyz", readyz),
        get_route(OPENAPI_PATH, openapi_json),
    ];
    if config.expose_metrics {
        table.push(get_route("/metrics", metrics));
    }
    table
}

/// The method and path of every route [`rest_router`] serves with this configuration (axum's
/// `{name}` path parameters, as in the OpenAPI document).
pub fn rest_routes(config: &ServerConfig) -> Vec<(Method, &'static str)> {
    routes(config)
        .into_iter()
        .map(|r| (r.method, r.path))
        .collect()
}

/// The REST routes (without `/mcp`): see the crate docs for the list.
pub fn rest_router(state: AppState) -> Router {
    let limit = state.config().max_body_bytes;
    let (mut bounded, mut unbounded) = (Router::new(), Router::new());
    for route in routes(state.config()) {
        if route.bounded {
            bounded = bounded.route(route.path, route.handler);
        } else {
            unbounded = unbounded.route(route.path, route.handler);
        }
    }
    bounded
        .route_layer(middleware::from_fn_with_state(state.clone(), timeout))
        .merge(unbounded)
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

pub(crate) async fn method_not_allowed(request: Request) -> ApiError {
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
#[derive(Debug, Serialize, ToSchema)]
pub struct StatusDoc {
    /// The request id.
    #[schema(value_type = String, format = Uuid)]
    pub id: RequestId,
    /// `running`, `pending_approval`, `completed` (it ran; see `outcome.job`) or `failed`
    /// (it did not run, or could not be recorded; see `error`).
    #[schema(value_type = crate::schema::ActionStatus)]
    pub status: &'static str,
    /// Where to poll.
    pub status_url: String,
    /// Approval deadline, while pending.
    #[serde(
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub approval_deadline: Option<OffsetDateTime>,
    /// The outcome, once completed.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<crate::schema::ActionOutcome>)]
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

/// Submit an action.
///
/// Authenticates the agent, checks the request against the catalog and the policy, then runs
/// it with a just-in-time grant. Answers with the outcome when it is done within the server's
/// wait, else (or when a human must approve first) 202 with the status document to poll.
#[utoipa::path(
    post,
    path = "/v1/actions",
    tag = "actions",
    operation_id = "submit_action",
    security(("agent" = [])),
    request_body(content = crate::schema::ActionRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "It ran (whatever its exit status: see `job.status`).",
            body = crate::schema::ActionOutcome),
        (status = 202, description = "Waiting for approval, or still running: poll `status_url`.",
            body = StatusDoc,
            headers(("Location" = String, description = "The status URL."))),
        (status = 403, description = "Denied by policy or by an approver (see `reasons`).",
            body = crate::error::Body),
        (status = 409, description = "This agent already submitted an action with this `id` \
            (within the retention); it did not run again.",
            body = crate::error::Body),
        (status = 429, description = "Over the agent's rate or concurrency limit.",
            body = crate::error::Body,
            headers(("Retry-After" = String, description = "Seconds to wait."))),
        (status = 500, description = "An unexpected failure, e.g. the outcome could not be \
            recorded (see `outcome`).", body = crate::error::Body),
        (status = 503, description = "A backend is unavailable (nothing ran), or too many \
            actions are in flight.", body = crate::error::Body),
        (status = 504, description = "A backend did not answer in time.",
            body = crate::error::Body),
    ),
)]
async fn submit_action(
    State(state): State<AppState>,
    addr: ClientAddr,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let credential = auth::credential(&headers).map_err(ApiError::unauthenticated)?;
    state.check_scopes(&credential).await?;
    let body = body.map_err(|r| body_error(&r, state.config().max_body_bytes))?;
    let request = action_request(&body)?;
    let id = request.id;
    // An HTTP client cannot withdraw a request: leaving does not cancel it.
    let mut rx = state
        .submit(
            credential,
            request,
            &origin(&addr),
            gateway_core::CancellationToken::new(),
        )
        .await?;
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

/// The status of an action.
///
/// Only the agent that submitted it can read it; anyone else (and an id that is not one) gets
/// 404.
#[utoipa::path(
    get,
    path = "/v1/actions/{id}",
    tag = "actions",
    operation_id = "action_status",
    security(("agent" = [])),
    params(("id" = String, Path, format = Uuid, description = "The request id.")),
    responses(
        (status = 200, description = "The status document.", body = StatusDoc),
        (status = 404, description = "No such action for this agent.", body = crate::error::Body),
        (status = 429, description = "Rate limited by the identity backend.",
            body = crate::error::Body,
            headers(("Retry-After" = String, description = "Seconds to wait."))),
        (status = 500, description = "The identity backend failed.", body = crate::error::Body),
        (status = 503, description = "The identity backend is unavailable.",
            body = crate::error::Body),
    ),
)]
async fn action_status(
    State(state): State<AppState>,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<StatusDoc>, ApiError> {
    let credential = auth::credential(&headers).map_err(ApiError::unauthenticated)?;
    let Ok(id) = path_id(id) else {
        // Authenticate first, so the answer to a bad id says nothing to strangers.
        state.authenticate_agent(&credential).await?;
        return Err(ApiError::not_found("no such action"));
    };
    let phase = state.phase_for(&credential, id).await?;
    Ok(Json(status_doc(id, &phase)))
}

/// `GET /v1/catalog`'s answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct Catalog {
    /// The actions this agent is shown.
    pub actions: Vec<CatalogEntry>,
}

/// One action of the catalog.
#[derive(Debug, Serialize, ToSchema)]
pub struct CatalogEntry {
    /// The name to put in `ActionRequest.action`.
    pub name: String,
    /// What it does.
    pub description: String,
    /// The JSON Schema its `params` must match, exactly as enforced.
    #[schema(value_type = Object)]
    pub params_schema: Value,
}

/// The action catalog.
///
/// The actions the policy's listing rule shows this agent (the same as MCP `tools/list`), each
/// with its params schema exactly as the gateway enforces it.
#[utoipa::path(
    get,
    path = "/v1/catalog",
    tag = "actions",
    operation_id = "catalog",
    security(("agent" = [])),
    responses(
        (status = 200, description = "The catalog.", body = Catalog),
        (status = 429, description = "Rate limited by the identity backend.",
            body = crate::error::Body,
            headers(("Retry-After" = String, description = "Seconds to wait."))),
        (status = 500, description = "The identity backend failed.", body = crate::error::Body),
        (status = 503, description = "The identity backend is unavailable.",
            body = crate::error::Body),
    ),
)]
async fn catalog(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Catalog>, ApiError> {
    let credential = auth::credential(&headers).map_err(ApiError::unauthenticated)?;
    let visible = state.visible_actions(&credential).await?;
    let actions = visible
        .iter()
        .map(|def| CatalogEntry {
            name: def.name.clone(),
            description: def.description.clone(),
            params_schema: def.params_schema.as_value().clone(),
        })
        .collect();
    Ok(Json(Catalog { actions }))
}

fn approver(state: &AppState, headers: &HeaderMap) -> Result<String, ApiError> {
    let token = auth::bearer(headers).map_err(ApiError::unauthenticated)?;
    state
        .approvers()
        .authenticate(&token)
        .map(str::to_owned)
        .ok_or_else(|| ApiError::unauthenticated("not an approver credential"))
}

/// `GET /v1/approvals`' answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct PendingList {
    /// The requests waiting for a human verdict.
    #[schema(value_type = Vec<crate::schema::ApprovalRequest>)]
    pub pending: Vec<PendingApproval>,
}

/// One request waiting for approval: what the approver is asked (with the `request_hash` a
/// vote may quote to bind it to exactly this request) and the votes cast so far.
#[derive(Debug, Serialize)]
pub struct PendingApproval {
    /// The request, as the approver is shown it.
    #[serde(flatten)]
    pub request: ApprovalRequest,
    /// The votes so far (with a quorum above 1).
    pub votes: Vec<gateway_core::approval::ApprovalVote>,
}

/// The pending approvals.
#[utoipa::path(
    get,
    path = "/v1/approvals",
    tag = "approvals",
    operation_id = "list_approvals",
    security(("approver" = [])),
    responses((status = 200, description = "The pending approvals.", body = PendingList)),
)]
async fn list_approvals(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<PendingList>, ApiError> {
    let who = approver(&state, &headers)?;
    let pending: Vec<_> = state
        .approvals()
        .pending()
        .await
        .map_err(|e| ApiError::new(e.kind(), e.to_string(), None))?
        .into_iter()
        .map(|t| PendingApproval {
            request: t.request,
            votes: t.votes,
        })
        .collect();
    tracing::info!(approver = %who, count = pending.len(), "approver listed pending approvals");
    Ok(Json(PendingList { pending }))
}

/// An approver's answer, the body of `POST /v1/approvals/{id}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerdictBody {
    /// `approve` or `deny`.
    pub verdict: VerdictChoice,
    /// Why (recorded on approve and on deny; required wording is up to the organisation). At
    /// most 4096 bytes.
    #[serde(default)]
    pub reason: String,
    /// The `request_hash` the approver was shown; when given, the vote counts only if the
    /// waiting request still has it (409 otherwise).
    #[serde(default)]
    pub request_hash: Option<String>,
    /// The requesting agent, needed only when requests of two agents wait under one id.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub agent: Option<String>,
}

/// Approve or deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum VerdictChoice {
    /// Let the action run.
    Approve,
    /// Refuse it.
    Deny,
}

/// `POST /v1/approvals/{id}`'s answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct Resolved {
    /// The request id.
    #[schema(value_type = String, format = Uuid)]
    pub id: RequestId,
    /// `approved` or `denied`, or `pending` when the vote is counted and more approvers are
    /// needed.
    #[schema(value_type = crate::schema::ResolvedVerdict)]
    pub verdict: &'static str,
    /// Who answered (`human:<name>`).
    pub approver: String,
    /// Approvals counted so far, and how many are needed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approvals: Option<u32>,
    /// Approvals needed (the policy's quorum).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quorum: Option<u32>,
    /// The action's status URL.
    pub status_url: String,
}

/// Approve or deny a pending action.
#[utoipa::path(
    post,
    path = "/v1/approvals/{id}",
    tag = "approvals",
    operation_id = "resolve_approval",
    security(("approver" = [])),
    params(("id" = String, Path, format = Uuid, description = "The pending request's id.")),
    request_body(content = VerdictBody, content_type = "application/json"),
    responses(
        (status = 200, description = "The verdict is recorded; the action goes on (or not).",
            body = Resolved),
        (status = 403, description = "This approver may not answer this request.",
            body = crate::error::Body),
        (status = 404, description = "No pending approval with that id.",
            body = crate::error::Body),
    ),
)]
async fn resolve_approval(
    State(state): State<AppState>,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Resolved>, ApiError> {
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
    let agent = match &answer.agent {
        None => None,
        Some(agent) => Some(
            gateway_core::AgentId::new(agent)
                .map_err(|e| ApiError::new(ErrorKind::InvalidInput, e.to_string(), Some(id)))?,
        ),
    };
    let ballot = Ballot {
        approver: who.clone(),
        approve: answer.verdict == VerdictChoice::Approve,
        reason: answer.reason,
        request_hash: answer.request_hash,
    };
    // The pipeline records the verdict (with every vote and reason) in the audit trail.
    let ticket = state
        .approvals()
        .resolve(id, agent.as_ref(), ballot)
        .await
        .map_err(|e| {
            let kind = match &e {
                ResolveError::NotPending(_) => ErrorKind::NotFound,
                ResolveError::Ambiguous(_) => ErrorKind::Conflict,
                ResolveError::Refused(
                    VoteRefused::SelfApproval(_)
                    | VoteRefused::OwnerApproval(_)
                    | VoteRefused::NoApprover,
                ) => ErrorKind::Denied,
                ResolveError::Refused(_) => ErrorKind::Conflict,
                ResolveError::Store(e) => e.kind(),
                _ => ErrorKind::Internal,
            };
            ApiError::new(kind, e.to_string(), Some(id))
        })?;
    tracing::info!(approver = %who, correlation_id = %id, verdict = ?answer.verdict, state = ?ticket, "approval vote counted");
    let (verdict, approvals, quorum) = match ticket {
        TicketState::Pending { approvals, quorum } => ("pending", Some(approvals), Some(quorum)),
        TicketState::Approved => ("approved", None, None),
        TicketState::Denied => ("denied", None, None),
        // A vote counted at the deadline's edge: the request is denied all the same.
        TicketState::Expired => ("denied", None, None),
    };
    Ok(Json(Resolved {
        id,
        verdict,
        approver: who,
        approvals,
        quorum,
        status_url: format!("{ACTIONS_PATH}/{id}"),
    }))
}

/// `GET /healthz` and `GET /readyz`'s answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok` (`/healthz`) or `ready` (`/readyz`).
    #[schema(value_type = String)]
    pub status: &'static str,
}

/// Liveness: the server answers.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    operation_id = "healthz",
    responses((status = 200, description = "Alive.", body = Health,
        example = json!({"status": "ok"}))),
)]
async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
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

/// Readiness: the policy and audit backends answer.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    operation_id = "readyz",
    responses(
        (status = 200, description = "Ready.", body = Health, example = json!({"status": "ready"})),
        (status = 503, description = "The policy or the audit backend does not answer.",
            body = crate::error::Body),
    ),
)]
async fn readyz(State(state): State<AppState>) -> Result<Json<Health>, ApiError> {
    readiness(&state)
        .await
        .map_err(|m| ApiError::new(ErrorKind::Unavailable, format!("not ready: {m}"), None))?;
    Ok(Json(Health { status: "ready" }))
}

/// Metrics: OpenMetrics when the scraper asks for it (`Accept`), else the Prometheus text
/// format.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    operation_id = "metrics",
    responses(
        (status = 200, description = "The metrics.", content(
            (String = "text/plain"),
            (String = "application/openmetrics-text"),
        )),
        (status = 500, description = "The metrics could not be encoded.",
            body = crate::error::Body),
    ),
)]
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

/// This document: the OpenAPI 3.1 description of the REST API.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "operations",
    operation_id = "openapi",
    responses((status = 200, description = "The OpenAPI document.", body = Object)),
)]
async fn openapi_json(State(state): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        openapi::document_json(state.config()),
    )
        .into_response()
}
