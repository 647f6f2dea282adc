//! The OpenAPI 3.1 document of the REST API, served at `GET /openapi.json`.
//!
//! It is derived from the code: each handler in [`crate::http`] carries its `#[utoipa::path]`
//! (its success responses and the refusals only it makes), the types this crate sends derive
//! their schemas, and the refusals that come from layers every route shares are added here by
//! rule, from the same facts the layers act on:
//!
//! - every route: 413 (`Content-Length` over the cap), 414 and 431 (the limits layer);
//! - every route that needs a bearer: 401 (with the OAuth challenge on the agent routes), and
//!   on the agent routes the 403 of an OAuth access token without the required scopes;
//! - every route with a body: 408 (body read deadline) and 422;
//! - every route under the request timeout (all but `POST /v1/actions`): 504.
//!
//! The wire types of gateway-core (`ActionRequest`, `ActionOutcome`, `ApprovalRequest`, …)
//! are described in the crate's `schema` module, field for field as they serialise; the
//! integration tests validate real responses against them, so a change in the core that the
//! document does not follow fails there.

use crate::config::ServerConfig;
use crate::http::ACTIONS_PATH;
use std::sync::OnceLock;
use utoipa::OpenApi;
use utoipa::openapi::link::LinkBuilder;
use utoipa::openapi::schema::{Object, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{
    ContentBuilder, HeaderBuilder, HttpMethod, OpenApi as Document, Ref, RefOr, ResponseBuilder,
};

/// Path of the document.
pub const OPENAPI_PATH: &str = "/openapi.json";

/// Name of the security scheme of agents (their identity backend's bearer credential).
pub const AGENT_SCHEME: &str = "agent";
/// Name of the security scheme of human approvers (`apr_…` bearer tokens).
pub const APPROVER_SCHEME: &str = "approver";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "agent-gateway",
        description = "The agent-facing REST API of agent-gateway: actions, their status, the \
            catalog, human approvals, the kill switch (locks), health, readiness and metrics. Every error is \
            `{\"error\": {\"kind\", \"message\", \"correlation_id\"}}` (plus `reasons` on \
            denials). The MCP endpoint (`/mcp`, streamable HTTP) and the OAuth protected \
            resource metadata (`/.well-known/oauth-protected-resource`, RFC 9728, served only \
            when OAuth is configured) are not described here.",
    ),
    paths(
        crate::http::submit_action,
        crate::http::action_status,
        crate::http::catalog,
        crate::http::list_approvals,
        crate::http::resolve_approval,
        crate::http::locks::list_locks,
        crate::http::locks::lock,
        crate::http::locks::unlock,
        crate::http::healthz,
        crate::http::readyz,
        crate::http::metrics,
        crate::http::openapi_json,
    ),
    components(schemas(crate::error::Body, crate::error::ApiError)),
    modifiers(&CommonResponses, &Links),
)]
struct ApiDoc;

/// Links from the answers that carry a request id to the operations that take one (OpenAPI
/// links; schemathesis' stateful phase follows them).
struct Links;

impl utoipa::Modify for Links {
    fn modify(&self, openapi: &mut Document) {
        let link = |operation: &str, pointer: &str, description: &str| {
            LinkBuilder::new()
                .operation_id(operation)
                .parameter("id", format!("$response.body#/{pointer}"))
                .description(description)
                .build()
        };
        let mut add = |path: &str, method: HttpMethod, status: &str, name: &str, l| {
            let Some(item) = openapi.paths.paths.get_mut(path) else {
                return;
            };
            let operation = match method {
                HttpMethod::Post => item.post.as_mut(),
                _ => item.get.as_mut(),
            };
            if let Some(RefOr::T(response)) =
                operation.and_then(|o| o.responses.responses.get_mut(status))
            {
                response.links.insert(name.to_owned(), RefOr::T(l));
            }
        };
        let status = "The action's status document.";
        add(
            ACTIONS_PATH,
            HttpMethod::Post,
            "200",
            "status",
            link("action_status", "correlation_id", status),
        );
        add(
            ACTIONS_PATH,
            HttpMethod::Post,
            "202",
            "status",
            link("action_status", "id", status),
        );
        add(
            ACTIONS_PATH,
            HttpMethod::Post,
            "202",
            "resolve",
            link(
                "resolve_approval",
                "id",
                "An approver's verdict, while it waits for one.",
            ),
        );
        add(
            "/v1/approvals/{id}",
            HttpMethod::Post,
            "200",
            "status",
            link("action_status", "id", status),
        );
    }
}

/// The 401 challenge of the agent endpoints.
const UNAUTHORIZED_AGENT_CHALLENGE: &str = "`Bearer realm=\"agent-gateway\"`. With OAuth \
    configured (`ServerConfig::oauth`) also `resource_metadata=\"<URL>\"` (the protected \
    resource metadata, RFC 9728), `scope=\"<required scopes>\"` when scopes are required, and \
    `error=\"invalid_token\"` when a credential was presented and refused \
    (`error=\"invalid_request\"` for an `Authorization` header that is not a bearer \
    credential; RFC 6750 section 3).";

/// The 403 challenge for an OAuth access token without the required scopes.
const INSUFFICIENT_SCOPE_CHALLENGE: &str = "On a 403 for missing scopes only: `Bearer \
    realm=\"agent-gateway\", resource_metadata=\"<URL>\", scope=\"<required scopes>\", \
    error=\"insufficient_scope\"` (RFC 6750 section 3.1).";

const INSUFFICIENT_SCOPE: &str = "With OAuth configured: the access token does not grant the \
    required scopes (`insufficient_scope`).";

/// Documents the 403 an OAuth access token without the required scopes gets on an agent
/// endpoint: added to the operation's own 403, or as its 403.
fn add_insufficient_scope(operation: &mut utoipa::openapi::path::Operation) {
    let header = HeaderBuilder::new()
        .schema(Some(Object::with_type(Type::String)))
        .description(Some(INSUFFICIENT_SCOPE_CHALLENGE))
        .build();
    match operation.responses.responses.get_mut("403") {
        Some(RefOr::T(response)) => {
            response.description = format!("{} {INSUFFICIENT_SCOPE}", response.description);
            response
                .headers
                .insert("WWW-Authenticate".to_owned(), header.into());
        }
        Some(RefOr::Ref(_)) => {}
        None => {
            operation.responses.responses.insert(
                "403".to_owned(),
                error_response(INSUFFICIENT_SCOPE)
                    .header("WWW-Authenticate", header)
                    .build()
                    .into(),
            );
        }
    }
}

/// Adds the security schemes and the responses that layers shared by many routes give (see
/// the module docs).
struct CommonResponses;

fn error_response(description: &str) -> ResponseBuilder {
    ResponseBuilder::new().description(description).content(
        "application/json",
        ContentBuilder::new()
            .schema(Some(Ref::from_schema_name("ErrorBody")))
            .build(),
    )
}

impl utoipa::Modify for CommonResponses {
    fn modify(&self, openapi: &mut Document) {
        let components = openapi.components.get_or_insert_with(Default::default);
        for (name, description) in [
            (
                AGENT_SCHEME,
                "An agent's credential as its identity backend accepts it: e.g. a static API key, \
                 or, with OAuth configured, an OAuth 2.1 access token (a JWT whose audience is \
                 this server's resource URI; see `/.well-known/oauth-protected-resource`).",
            ),
            (
                APPROVER_SCHEME,
                "A human approver's token (`apr_…`); refused wherever an agent is expected.",
            ),
        ] {
            components.add_security_scheme(
                name,
                SecurityScheme::Http(
                    HttpBuilder::new()
                        .scheme(HttpAuthScheme::Bearer)
                        .description(Some(description))
                        .build(),
                ),
            );
        }
        for (path, item) in openapi.paths.paths.iter_mut() {
            let operations = [
                (HttpMethod::Get, item.get.as_mut()),
                (HttpMethod::Post, item.post.as_mut()),
            ];
            for (method, operation) in operations {
                let Some(operation) = operation else { continue };
                let mut scope_checked = false;
                let mut add = |status: &str, response: ResponseBuilder| {
                    operation
                        .responses
                        .responses
                        .entry(status.to_owned())
                        .or_insert_with(|| response.build().into());
                };
                add(
                    "413",
                    error_response("The `Content-Length` is over the body size cap."),
                );
                add("414", error_response("The request target is too long."));
                add("431", error_response("The request headers are too large."));
                if operation.security.as_ref().is_some_and(|s| !s.is_empty()) {
                    let agent = !path.starts_with("/v1/approvals");
                    let challenge = HeaderBuilder::new()
                        .schema(Some(Object::with_type(Type::String)))
                        .description(Some(if agent {
                            UNAUTHORIZED_AGENT_CHALLENGE
                        } else {
                            "`Bearer realm=\"agent-gateway\"`"
                        }))
                        .build();
                    add(
                        "401",
                        error_response("No bearer credential, or one that is not accepted here.")
                            .header("WWW-Authenticate", challenge),
                    );
                    scope_checked = agent;
                }
                if operation.request_body.is_some() {
                    add(
                        "408",
                        error_response("The body did not arrive within the body read timeout."),
                    );
                    add(
                        "422",
                        error_response(
                            "Invalid input: the body is not JSON of the documented shape \
                             (or, for an action, does not fit the catalog or the action's \
                             params schema).",
                        ),
                    );
                }
                let unbounded = method == HttpMethod::Post && path == ACTIONS_PATH;
                if !unbounded {
                    add(
                        "504",
                        error_response("The request took longer than the request timeout."),
                    );
                }
                if scope_checked {
                    add_insufficient_scope(operation);
                }
            }
        }
    }
}

/// The document of every REST route.
pub fn document() -> Document {
    ApiDoc::openapi()
}

/// The document of the routes a server with this configuration serves (`/metrics` only when
/// `expose_metrics`).
pub fn document_for(config: &ServerConfig) -> Document {
    let mut doc = document();
    let served = crate::http::rest_routes(config);
    doc.paths
        .paths
        .retain(|path, _| served.iter().any(|(_, p)| p == path));
    doc
}

/// The document as served (built once per variant).
pub(crate) fn document_json(config: &ServerConfig) -> &'static str {
    static WITH_METRICS: OnceLock<String> = OnceLock::new();
    static WITHOUT_METRICS: OnceLock<String> = OnceLock::new();
    let cell = if config.expose_metrics {
        &WITH_METRICS
    } else {
        &WITHOUT_METRICS
    };
    // The routes depend on `expose_metrics` only.
    cell.get_or_init(|| {
        document_for(config)
            .to_pretty_json()
            .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    })
}
