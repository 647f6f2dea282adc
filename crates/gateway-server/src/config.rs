//! Tunables of the HTTP and MCP front.

use crate::oauth::OAuthResource;
use std::time::Duration;

/// Limits and timeouts of the front. The pipeline's own limits (per-agent rate and concurrency,
/// backend deadlines, approval deadline) live in the core's `GatewayConfig`.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    /// Largest accepted request body in bytes; larger bodies get 413.
    pub max_body_bytes: usize,
    /// How long `POST /v1/actions` waits for the outcome before answering 202 with a status URL
    /// (the action keeps going; it is never abandoned because the HTTP wait ended).
    pub action_wait: Duration,
    /// Backstop for every other REST request; a handler that passes it gets 504.
    pub request_timeout: Duration,
    /// Deadline for each readiness probe (policy and audit) of `GET /readyz`.
    pub readiness_timeout: Duration,
    /// Most actions the status map holds for one agent (in flight, or finished within
    /// `tracker_retention`); past that the agent's new submissions get 503 until entries
    /// expire. Finished entries are never evicted early: their ids stay taken.
    pub tracker_capacity: usize,
    /// How long a finished action's status stays readable at `GET /v1/actions/{id}`, and its id
    /// is refused (409) to its agent, so that a retried request never runs twice. A request
    /// refused before anything ran (429, 400) is forgotten at once and may be retried.
    pub tracker_retention: Duration,
    /// How long an MCP `tools/call` waits for the outcome before returning a "still pending"
    /// result that names the request id (poll it with the `gateway.action_status` tool).
    pub mcp_call_wait: Duration,
    /// How often a tool call that is still open (running, or waiting for approval) sends the
    /// client a progress notification, when the client asked for them.
    pub mcp_progress_interval: Duration,
    /// Whether MCP clients on protocol versions before 2026-07-28 get sessions
    /// (`Mcp-Session-Id`, a `GET` stream for server-to-client messages, `DELETE` to end one);
    /// with `false` every request stands alone. Clients on 2026-07-28 and later are served
    /// statelessly either way, as that version removed sessions (SEP-2567). Every request,
    /// in a session or not, carries and is checked with its own bearer credential.
    pub mcp_sessions: bool,
    /// `Host` header values the MCP endpoint accepts (DNS-rebinding protection). Loopback names
    /// by default; add the public host names of a real deployment.
    pub mcp_allowed_hosts: Vec<String>,
    /// Browser origins (`scheme://host[:port]`, `:*` for any port, or `null`) that may use the
    /// MCP endpoint. A request carrying any other `Origin` gets 403; requests without `Origin`
    /// (non-browser clients) are not affected. Empty by default: no web page may call it.
    pub mcp_allowed_origins: Vec<String>,
    /// Whether `GET /metrics` is served (OpenMetrics or the Prometheus text format, chosen by
    /// `Accept`; unauthenticated: keep it on an internal network or turn it off).
    pub expose_metrics: bool,
    /// How long a connection may take to deliver a complete request head (its first request and
    /// every keep-alive one); hyper closes it after that. Bounds slow-loris connections.
    pub header_read_timeout: Duration,
    /// How long a request body may take to arrive in full once its head is in; after that the
    /// read fails and the request gets 408.
    pub body_read_timeout: Duration,
    /// How long shutdown waits for in-flight requests before dropping their connections.
    pub shutdown_drain: Duration,
    /// Longest request target (path and query) answered; longer ones get 414.
    pub max_uri_bytes: usize,
    /// Largest total size of a request's headers; larger ones get 431.
    pub max_header_bytes: usize,
    /// This server as an OAuth 2.1 protected resource (MCP authorization): serves the RFC 9728
    /// metadata, names it in every agent 401's `WWW-Authenticate`, and requires the configured
    /// scopes of access tokens ([`crate::oauth`]). `None` by default: no metadata (404), plain
    /// bearer challenges.
    pub oauth: Option<OAuthResource>,
    /// Requests with a credential that does not authenticate that one source (client IP) may
    /// send per second, sustained; each is run through the pipeline and audited. Past the
    /// budget they get 429 before the pipeline and are recorded as one counted summary per
    /// source every 10 s.
    pub unauthenticated_per_second: f64,
    /// How many such requests a source may send at once.
    pub unauthenticated_burst: u32,
    /// How often the server runs the gateway's recovery sweep
    /// ([`Gateway::spawn_recovery`](gateway_core::Gateway::spawn_recovery)), first at start:
    /// it closes what stopped replicas left (approvals nobody waits for, runs whose lease
    /// passed: their grants are revoked). A stopped replica's runs are closed within about the
    /// gateway's `run_lease` plus this. `None`: the embedding application runs it.
    pub recovery_interval: Option<Duration>,
    /// How often the server reads the kill switch's locks and stops the live actions they
    /// cover ([`Gateway::spawn_lock_watch`](gateway_core::Gateway::spawn_lock_watch)): a lock
    /// made on another replica stops this one's actions within about this. `None`: the
    /// embedding application runs it (new requests are checked on every replica regardless).
    pub lock_watch_interval: Option<Duration>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: 64 * 1024,
            action_wait: Duration::from_secs(30),
            request_timeout: Duration::from_secs(30),
            readiness_timeout: Duration::from_secs(2),
            tracker_capacity: 10_000,
            tracker_retention: Duration::from_secs(15 * 60),
            mcp_call_wait: Duration::from_secs(60),
            mcp_progress_interval: Duration::from_secs(5),
            mcp_sessions: true,
            mcp_allowed_hosts: vec!["localhost".into(), "127.0.0.1".into(), "::1".into()],
            mcp_allowed_origins: Vec::new(),
            expose_metrics: true,
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(10),
            shutdown_drain: Duration::from_secs(10),
            max_uri_bytes: 8 * 1024,
            max_header_bytes: 32 * 1024,
            oauth: None,
            unauthenticated_per_second: 1.0,
            unauthenticated_burst: 20,
            recovery_interval: Some(Duration::from_secs(5)),
            lock_watch_interval: Some(Duration::from_secs(1)),
        }
    }
}
