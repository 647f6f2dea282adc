//! The OpenAPI 3.1 document of the REST API, served at `GET /openapi.json`.
//!
//! It is derived from the code: each handler in [`crate::http`] carries its `#[utoipa::path]`
//! (its success responses and the refusals only it makes), the types this crate sends derive
//! their schemas, and the refusals that come from layers every route shares are added here by
//! rule, from the same facts the layers act on ([`CommonResponses`]):
//!
//! - every route: 413 (`Content-Length` over the cap), 414 and 431 ([`crate::limits`]);
//! - every route that needs a bearer: 401;
//! - every route with a body: 408 (body read deadline) and 422;
//! - every route under the request timeout (all but `POST /v1/actions`): 504.
//!
//! The wire types of gateway-core (`ActionRequest`, `ActionOutcome`, `ApprovalRequest`, …)
//! are described in [`schemas`], field for field as they serialise; the integration tests
//! validate real responses against them, so a change in the core that the document does not
//! follow fails there.

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
            catalog, human approvals, health, readiness and metrics. Every error is \
            `{\"error\": {\"kind\", \"message\", \"correlation_id\"}}` (plus `reasons` on \
            denials). The MCP endpoint (`/mcp`, streamable HTTP) is not described here.",
    ),
    paths(
        crate::http::submit_action,
        crate::http::action_status,
        crate::http::catalog,
        crate::http::list_approvals,
        crate::http::resolve_approval,
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
                "An agent's credential as its identity backend accepts it (e.g. a static API key).",
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
                    let challenge = HeaderBuilder::new()
                        .schema(Some(Object::with_type(Type::String)))
                        .description(Some("`Bearer realm=\"agent-gateway\"`"))
                        .build();
                    add(
                        "401",
                        error_response("No bearer credential, or one that is not accepted here.")
                            .header("WWW-Authenticate", challenge),
                    );
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

/// Schemas of the gateway-core types the API sends and receives, field for field as they
/// (de)serialise. They are never built: only their derived schemas are used.
#[allow(dead_code)]
pub(crate) mod schemas {
    use serde::Serialize;
    use utoipa::ToSchema;

    /// The backend-neutral error kind.
    #[derive(Serialize, ToSchema)]
    #[serde(rename_all = "snake_case")]
    pub(crate) enum ErrorKind {
        Unauthenticated,
        Denied,
        InvalidInput,
        RateLimited,
        Unavailable,
        Timeout,
        Cancelled,
        NotFound,
        Conflict,
        Internal,
    }

    /// What an agent asks the gateway to do. Unknown fields are refused (422), and so are
    /// duplicate keys and integers a float would round.
    #[derive(Serialize, ToSchema)]
    #[serde(deny_unknown_fields)]
    #[schema(example = json!({
        "action": "ops.echo",
        "resource": "ops:staging/echo",
        "params": {"message": "hi"},
        "intent": "check the gateway",
        "requested_ttl_seconds": 60
    }))]
    pub(crate) struct ActionRequest {
        /// The request's id (and correlation id); generated if left out.
        #[serde(default)]
        #[schema(format = Uuid)]
        id: String,
        /// A registered action name (see `GET /v1/catalog`), e.g. `k8s.scale`; at most 128
        /// bytes by default.
        action: String,
        /// What the action touches, e.g. `k8s:staging/deployments/web`: not empty, no control
        /// characters, at most 512 bytes by default.
        #[schema(min_length = 1, pattern = r"^[^\u0000-\u001F\u007F-\u009F]+$")]
        resource: String,
        /// The action's parameters: a JSON object, checked against the action's
        /// `params_schema` from `GET /v1/catalog`; nested at most 32 deep by default.
        #[serde(default)]
        #[schema(value_type = Object)]
        params: (),
        /// Why the agent wants this (recorded; shown to policies and approvers); at most 4096
        /// bytes by default; no NUL.
        #[serde(default)]
        #[schema(pattern = r"^[^\u0000]*$")]
        intent: String,
        /// The grant lifetime asked for, in seconds; the gateway may shorten it. Like every
        /// number of the body, it must be exact as a 64-bit float (what the policy sees), so
        /// larger integers than 2^53 are refused unless a float holds them exactly; and it is
        /// written as an integer (`300`, not `300.0`, which JSON Schema would also call one).
        #[serde(default)]
        #[schema(default = 300, minimum = 1, maximum = 9_007_199_254_740_992_u64)]
        requested_ttl_seconds: u64,
    }

    /// The result of an action that ran (whatever its exit status).
    #[derive(Serialize, ToSchema)]
    pub(crate) struct ActionOutcome {
        /// The request's correlation id.
        #[schema(format = Uuid)]
        correlation_id: String,
        /// The agent.
        agent: String,
        /// The action.
        action: String,
        /// The policy decision (an allow).
        decision: Decision,
        /// Who approved, when approval was required.
        #[serde(skip_serializing_if = "Option::is_none")]
        approved_by: Option<String>,
        /// The grant the job ran with.
        grant: GrantSummary,
        /// The runner.
        runner: RunnerInfo,
        /// How the job went.
        job: JobOutcome,
        /// The receipt of the final audit record.
        audit: AuditReceipt,
    }

    /// A policy's answer.
    #[derive(Serialize, ToSchema)]
    pub(crate) struct Decision {
        /// Whether the action may go ahead.
        allow: bool,
        /// Human-readable reasons.
        reasons: Vec<String>,
        /// What must happen if the action goes ahead.
        obligations: Obligations,
        /// Which policy decided.
        #[serde(skip_serializing_if = "Option::is_none")]
        policy_id: Option<String>,
        /// The decision engine's own id for this decision.
        #[serde(skip_serializing_if = "Option::is_none")]
        decision_id: Option<String>,
    }

    /// What the gateway must do if it goes ahead.
    #[derive(Serialize, ToSchema)]
    pub(crate) struct Obligations {
        /// The longest grant the policy allows, in seconds.
        #[serde(skip_serializing_if = "Option::is_none")]
        max_ttl_seconds: Option<u64>,
        /// The scopes the grant carries.
        scopes: Vec<String>,
        /// A human must approve before the action runs.
        require_approval: bool,
        /// Limits on the job's environment.
        runner: RunnerObligations,
    }

    /// Limits a policy imposes on the job's environment.
    #[derive(Serialize, ToSchema)]
    pub(crate) struct RunnerObligations {
        /// Network access the job gets.
        network: NetworkAccess,
        /// CPU limit in millicores.
        #[serde(skip_serializing_if = "Option::is_none")]
        cpu_millis: Option<u32>,
        /// Memory limit in bytes.
        #[serde(skip_serializing_if = "Option::is_none")]
        memory_bytes: Option<u64>,
        /// Maximum number of processes.
        #[serde(skip_serializing_if = "Option::is_none")]
        pids: Option<u32>,
        /// Wall-clock limit in seconds.
        #[serde(skip_serializing_if = "Option::is_none")]
        timeout_seconds: Option<u64>,
    }

    /// Whether a job may reach the network.
    #[derive(Serialize, ToSchema)]
    #[serde(tag = "mode", rename_all = "snake_case")]
    pub(crate) enum NetworkAccess {
        /// No network at all.
        None,
        /// Egress only to the named destinations.
        Allowlist {
            /// Allowed destinations (`host:port` or CIDR).
            destinations: Vec<String>,
        },
    }

    /// The grant as reported to the caller: no secret material.
    #[derive(Serialize, ToSchema)]
    pub(crate) struct GrantSummary {
        /// The grant id.
        id: String,
        /// The scopes granted.
        scopes: Vec<String>,
        /// The TTL the gateway asked for.
        ttl_seconds: u64,
        /// When it expires by itself (RFC 3339).
        #[schema(format = DateTime)]
        not_after: String,
        /// Whether revocation succeeded.
        revoked: bool,
    }

    /// The runner.
    #[derive(Serialize, ToSchema)]
    pub(crate) struct RunnerInfo {
        /// The backend, e.g. `local`, `docker`, `kubernetes`.
        backend: String,
        /// The runner instance's id.
        instance: String,
        /// The isolation level jobs get.
        isolation: IsolationLevel,
    }

    /// How strongly a runner isolated a job.
    #[derive(Serialize, ToSchema)]
    #[serde(rename_all = "snake_case")]
    pub(crate) enum IsolationLevel {
        None,
        Process,
        Namespaces,
        Container,
    }

    /// The result of one job.
    #[derive(Serialize, ToSchema)]
    pub(crate) struct JobOutcome {
        /// How it ended.
        status: JobStatus,
        /// Captured stdout (lossy UTF-8), at most the output cap.
        stdout: String,
        /// Captured stderr (lossy UTF-8), at most the output cap.
        stderr: String,
        /// Whether stdout was cut at the cap.
        stdout_truncated: bool,
        /// Whether stderr was cut at the cap.
        stderr_truncated: bool,
        /// Wall-clock time from start to exit, in milliseconds.
        duration: u64,
        /// The id of the environment the job ran in.
        environment_id: String,
        /// The isolation actually used.
        isolation: IsolationLevel,
        /// Whether the environment was fully destroyed.
        teardown: Teardown,
    }

    /// How a job ended.
    #[derive(Serialize, ToSchema)]
    #[serde(tag = "status", rename_all = "snake_case")]
    pub(crate) enum JobStatus {
        /// The program exited by itself.
        Exited {
            /// The exit code.
            code: i32,
        },
        /// The program was killed by a signal.
        Signaled {
            /// The signal number.
            signal: i32,
        },
        /// The wall-clock limit passed and the runner killed the job.
        TimedOut,
        /// The job ran out of memory and was killed.
        OomKilled,
        /// The caller cancelled the job.
        Cancelled,
    }

    /// What happened to the job's environment afterwards.
    #[derive(Serialize, ToSchema)]
    pub(crate) struct Teardown {
        /// Whether everything the runner created for the job is gone.
        complete: bool,
        /// Details, e.g. what could not be removed.
        #[serde(default, skip_serializing_if = "String::is_empty")]
        detail: String,
    }

    /// The audit sink's acknowledgement of the final record.
    #[derive(Serialize, ToSchema)]
    pub(crate) struct AuditReceipt {
        /// The chain it went into.
        stream_id: String,
        /// Its sequence number.
        sequence: u64,
        /// Its hash (hex).
        hash: String,
    }

    /// What an approver is asked to approve.
    #[derive(Serialize, ToSchema)]
    pub(crate) struct ApprovalRequest {
        /// The action request's id (and correlation id).
        #[schema(format = Uuid)]
        correlation_id: String,
        /// The requesting agent.
        agent: String,
        /// The action.
        action: String,
        /// The resource.
        resource: String,
        /// The agent's stated intent.
        intent: String,
        /// The params.
        #[schema(value_type = Object)]
        params: (),
        /// The policy's reasons for asking.
        reasons: Vec<String>,
        /// After this the request counts as denied (RFC 3339).
        #[schema(format = DateTime)]
        deadline: String,
    }

    /// The state of an action.
    #[derive(Serialize, ToSchema)]
    #[serde(rename_all = "snake_case")]
    pub(crate) enum ActionStatus {
        /// Running (or about to).
        Running,
        /// Waiting for a human approver.
        PendingApproval,
        /// It ran; see `outcome.job`.
        Completed,
        /// It did not run, or could not be recorded; see `error`.
        Failed,
    }

    /// An approver's recorded verdict.
    #[derive(Serialize, ToSchema)]
    #[serde(rename_all = "snake_case")]
    pub(crate) enum ResolvedVerdict {
        Approved,
        Denied,
    }
}
