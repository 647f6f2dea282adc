//! The MCP front: every catalog action is an MCP tool, served over streamable HTTP with the
//! agent's bearer credential, so MCP-speaking agents use the gateway without custom code.
//!
//! - `tools/list`: one tool per registered action (its description, and an input schema that
//!   wraps the action's params schema with `resource`, `intent`, `ttl_seconds` and an optional
//!   `request_id`), plus [`STATUS_TOOL`] to poll actions waiting for approval.
//! - `tools/call`: runs `Gateway::execute` with the caller's credential. Every result, success
//!   or not, carries `structuredContent` in one shape, the [status document](result) that
//!   every tool declares as its `outputSchema`, and a readable text summary. Refusals (denied,
//!   invalid, rate limited, unavailable, …) come back as tool errors (`isError: true`) with the
//!   reasons; an action still waiting for a human after [`ServerConfig::mcp_call_wait`] returns
//!   its request id to poll. Arguments the tool's input schema refuses are tool errors too
//!   (`invalid_input`, under a fresh id that names no action), so the model reads what was
//!   wrong and can correct it, as MCP 2025-11-25 asks of input validation errors; an unknown
//!   tool, or a call that is not a well-formed `tools/call`, is a JSON-RPC error (`-32602`).
//!
//! Every HTTP request to the endpoint must carry a bearer credential the gateway's identity
//! backend accepts (401 otherwise), so nothing, not even the tool list, is shown to strangers.
//!
//! [`ServerConfig::mcp_call_wait`]: crate::ServerConfig::mcp_call_wait

use crate::auth;
use crate::error::ApiError;
use crate::state::AppState;
use axum::Router;
use axum::extract::{Request, State};
use axum::http::request::Parts;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use gateway_core::{ActionDef, ActionRequest, CancellationToken, Credential, RequestId};
use result::{phase_result, tool_error};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, Implementation, JsonObject, ListToolsResult,
    PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::RequestContext;
use rmcp::transport::StreamableHttpServerConfig;
use rmcp::transport::StreamableHttpService;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::{ErrorData as McpError, RoleServer, ServerHandler};
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;

/// The path the MCP endpoint is served at by [`router`].
pub const MCP_PATH: &str = "/mcp";

mod cancel;
mod jsonrpc;
mod progress;
pub mod result;

/// The built-in tool that reports an action's status (`request_id` in, status document out).
pub const STATUS_TOOL: &str = "gateway.action_status";

/// The MCP server handler: one instance per MCP session or request.
#[derive(Clone, Debug)]
pub struct GatewayMcp {
    state: AppState,
}

impl GatewayMcp {
    /// A handler over the front's state.
    pub fn new(state: AppState) -> Self {
        Self { state }
    }

    /// The tools of `actions`, and the status tool.
    fn tools<'a>(actions: impl Iterator<Item = &'a ActionDef>) -> Vec<Tool> {
        let mut tools: Vec<Tool> = actions
            .filter(|def| def.name != STATUS_TOOL)
            .map(action_tool)
            .collect();
        tools.push(Tool::new(
            STATUS_TOOL,
            "Reports the status of an action submitted earlier (e.g. one waiting for human approval).",
            Arc::new(object(json!({
                "type": "object",
                "properties": {
                    "request_id": {"type": "string", "format": "uuid", "description": "The action's request id."}
                },
                "required": ["request_id"],
                "additionalProperties": false
            }))),
        ).with_raw_output_schema(Arc::new(object(result::output_schema()))));
        tools
    }
}

fn object(v: Value) -> JsonObject {
    match v {
        Value::Object(map) => map,
        _ => JsonObject::new(),
    }
}

/// The MCP tool of one action.
pub fn action_tool(def: &ActionDef) -> Tool {
    let schema = json!({
        "type": "object",
        "properties": {
            "resource": {"type": "string", "description": "What the action touches, e.g. k8s:staging/deployments/web."},
            "params": def.params_schema.as_value(),
            "intent": {"type": "string", "description": "Why you want this; recorded and shown to policies and approvers."},
            "ttl_seconds": {"type": "integer", "minimum": 1, "description": "Lifetime of the just-in-time grant you ask for; the gateway may shorten it."},
            "request_id": {"type": "string", "format": "uuid", "description": "Optional idempotency/correlation id (UUID)."}
        },
        "required": ["resource"],
        "additionalProperties": false
    });
    Tool::new(
        def.name.clone(),
        def.description.clone(),
        Arc::new(object(schema)),
    )
    .with_raw_output_schema(Arc::new(object(result::output_schema())))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ActionArgs {
    resource: String,
    #[serde(default)]
    params: Option<Value>,
    #[serde(default)]
    intent: Option<String>,
    #[serde(default)]
    ttl_seconds: Option<u64>,
    #[serde(default)]
    request_id: Option<RequestId>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StatusArgs {
    request_id: RequestId,
}

/// The call's arguments as `T`, or the `invalid_input` error that says what is wrong with them.
fn args<T: serde::de::DeserializeOwned>(request: &CallToolRequestParams) -> Result<T, ApiError> {
    let value = Value::Object(request.arguments.clone().unwrap_or_default());
    serde_json::from_value(value).map_err(|e| {
        ApiError::new(
            gateway_core::ErrorKind::InvalidInput,
            format!("invalid arguments: {e}"),
            None,
        )
    })
}

impl ServerHandler for GatewayMcp {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new(
                "agent-gateway",
                env!("CARGO_PKG_VERSION"),
            ))
            .with_instructions(
                "Each tool runs one infrastructure action through agent-gateway: it is \
                 authenticated, checked by policy, audited, run in an isolated environment with \
                 a short-lived grant, and may need human approval.",
            )
    }

    /// Only the actions the policy's listing rule shows this agent (none if it fails).
    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        let credential = credential(&context)?;
        let visible = self
            .state
            .visible_actions(&credential)
            .await
            .map_err(|api| McpError::invalid_request(api.message, None))?;
        Ok(ListToolsResult::with_all_items(Self::tools(visible.iter())))
    }

    /// Any catalog action (a call is decided by the policy whatever the listing showed).
    fn get_tool(&self, name: &str) -> Option<Tool> {
        Self::tools(self.state.gateway().catalog().actions())
            .into_iter()
            .find(|t| t.name == name)
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let credential = credential(&context)?;
        if request.name == STATUS_TOOL {
            let StatusArgs { request_id } = match args(&request) {
                Ok(a) => a,
                Err(api) => return Ok(tool_error(RequestId::new(), &api).into()),
            };
            return Ok(match self.state.phase_for(&credential, request_id).await {
                Ok(phase) => phase_result(request_id, &phase),
                Err(api) => tool_error(request_id, &api),
            }
            .into());
        }
        if self.state.gateway().catalog().get(&request.name).is_none() {
            return Err(McpError::invalid_params(
                format!(
                    "unknown tool {:?}",
                    request.name.chars().take(128).collect::<String>()
                ),
                None,
            ));
        }
        let a: ActionArgs = match args(&request) {
            Ok(a) => a,
            Err(api) => return Ok(tool_error(RequestId::new(), &api).into()),
        };
        let mut action = ActionRequest::new(request.name.to_string(), a.resource);
        if let Some(id) = a.request_id {
            action.id = id;
        }
        if let Some(params) = a.params {
            action.params = params;
        }
        if let Some(intent) = a.intent {
            action.intent = intent;
        }
        if let Some(ttl) = a.ttl_seconds {
            action.requested_ttl_seconds = ttl;
        }
        let id = action.id;
        // Made without a session, the call is cancelled through the middleware (`cancel`).
        let cancel = context
            .extensions
            .get::<Parts>()
            .and_then(|parts| parts.extensions.get::<cancel::Withdrawn>())
            .map_or_else(CancellationToken::new, |w| w.0.child_token());
        let mut rx = match self
            .state
            .submit(credential, action, "mcp", cancel.clone())
            .await
        {
            Ok(rx) => rx,
            Err(api) => return Ok(tool_error(id, &api).into()),
        };
        let config = self.state.config();
        let phase = progress::follow(
            &mut rx,
            config.mcp_call_wait,
            config.mcp_progress_interval,
            &context,
            &cancel,
        )
        .await;
        Ok(phase_result(id, &phase).into())
    }
}

/// The bearer credential of the HTTP request behind an MCP request.
fn credential(context: &RequestContext<RoleServer>) -> Result<Credential, McpError> {
    let parts = context
        .extensions
        .get::<Parts>()
        .ok_or_else(|| McpError::internal_error("no HTTP request attached", None))?;
    auth::credential(&parts.headers).map_err(|m| McpError::invalid_request(m.to_owned(), None))
}

/// The streamable HTTP transport's session header.
const SESSION_HEADER: &str = "mcp-session-id";

/// The streamable-HTTP MCP service: sessions for clients on older protocol versions when
/// `mcp_sessions` is on, stateless otherwise; every POST carries its own credential either way.
/// Served without [`router`]'s middleware, a call made without a session cannot be cancelled
/// (`cancel`).
pub fn service(state: AppState) -> StreamableHttpService<GatewayMcp, LocalSessionManager> {
    let config = StreamableHttpServerConfig::default()
        .with_legacy_session_mode(state.config().mcp_sessions)
        .with_json_response(true)
        .with_max_request_body_bytes(state.config().max_body_bytes)
        .with_allowed_hosts(state.config().mcp_allowed_hosts.clone());
    StreamableHttpService::new(
        move || Ok(GatewayMcp::new(state.clone())),
        Arc::new(LocalSessionManager::default()),
        config,
    )
}

/// Refuses MCP HTTP requests from a browser origin that is not allowed (403, before the
/// credential is looked at: `crate::origin`), and those without a bearer credential the
/// identity backend accepts.
async fn require_agent(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if let Some(origin) = request.headers().get(axum::http::header::ORIGIN)
        && !state.allowed_origins().allows(origin.as_bytes())
    {
        return ApiError::new(
            gateway_core::ErrorKind::Denied,
            "this Origin may not use the MCP endpoint (add it to mcp_allowed_origins)",
            None,
        )
        .into_response();
    }
    let delete = request.method() == axum::http::Method::DELETE;
    let credential = match auth::credential(request.headers()) {
        Ok(c) => c,
        Err(m) => return ApiError::unauthenticated(m).into_response(),
    };
    if let Err(e) = state.authenticate_agent(&credential).await {
        return e.into_response();
    }
    let mut response = next.run(request).await;
    // rmcp answers a session's DELETE with 202; the official Python SDK takes only 200 or 204
    // as "terminated" (and logs a failure otherwise). Nothing is pending after a DELETE.
    if delete && response.status() == axum::http::StatusCode::ACCEPTED {
        *response.status_mut() = axum::http::StatusCode::NO_CONTENT;
        *response.body_mut() = axum::body::Body::empty();
    }
    response
}

/// The MCP endpoint at [`MCP_PATH`], behind the bearer check.
pub fn router(state: AppState) -> Router {
    let sessionless = Arc::new(cancel::Sessionless::default());
    Router::new()
        .route_service(MCP_PATH, service(state.clone()))
        // Layers run outside in: origin and bearer first, then the JSON-RPC shape (and what
        // cancels calls made without a session).
        .layer(middleware::from_fn_with_state(
            (state.clone(), sessionless),
            jsonrpc::check,
        ))
        .layer(middleware::from_fn_with_state(state, require_agent))
}
