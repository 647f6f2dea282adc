//! The state the handlers share, and [`Frontend`], which builds it around a gateway.

use crate::auth::Approvers;
use crate::config::ServerConfig;
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::origin::AllowedOrigins;
use crate::strangers::Strangers;
use crate::tracker::{ActionTracker, Phase, TrackError, TrackingGate};
use gateway_core::CancellationToken;
use gateway_core::{
    ActionDef, ActionRequest, AgentIdentity, ApprovalGate, Approvals, Credential, ErrorKind,
    Gateway, Identity, RequestContext, RequestId, StateStore,
};
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::sync::watch;
use tracing::Instrument;

/// The parts of the front that must exist before the gateway is built: the approval queue
/// (whose gate goes into the gateway, and with it the queue's state store), the status tracker
/// and the metrics (whose backend wrappers go into the gateway).
///
/// Replicas behind one load balancer share their approvals, request ids and action status
/// by sharing one state store: build each front with [`Frontend::with_state`] on it (e.g.
/// `gateway_state::PostgresStateStore`). [`Frontend::new`] keeps them in this process.
///
/// ```ignore
/// let front = Frontend::new(ServerConfig::default());
/// let m = front.metrics();
/// let gateway = Gateway::builder()
///     .identity(identity.clone())
///     .policy(m.policy(policy))
///     .broker(m.broker(broker))
///     .runner(m.runner(runner))
///     .audit(m.audit(audit))
///     .approvals(front.approval_gate())
///     .catalog(catalog)
///     .build()?;
/// let state = front.into_state(gateway, identity, approvers);
/// gateway_server::serve(listener, state).await?;
/// ```
pub struct Frontend {
    config: ServerConfig,
    approvals: Approvals,
    tracker: Arc<ActionTracker>,
    metrics: Arc<Metrics>,
}

impl Frontend {
    /// New, empty parts; approvals and action state in this process only.
    pub fn new(config: ServerConfig) -> Self {
        Self::with_state(config, Arc::new(gateway_core::MemoryStateStore::new()))
    }

    /// New parts whose approval queue and action state are `store`, shared with every
    /// replica that uses it. The gateway takes the store from [`Frontend::approval_gate`].
    pub fn with_state(config: ServerConfig, store: Arc<dyn StateStore>) -> Self {
        let tracker = Arc::new(ActionTracker::new(
            config.tracker_capacity,
            config.tracker_retention,
        ));
        Self {
            config,
            approvals: Approvals::new(store),
            tracker,
            metrics: Metrics::new(),
        }
    }

    /// The gate to give the gateway builder: it parks requests in this front's approval queue
    /// (its state store, which the gateway then uses too) and reports them as
    /// `pending_approval`.
    pub fn approval_gate(&self) -> Arc<dyn ApprovalGate> {
        Arc::new(TrackingGate::new(
            Arc::new(self.approvals.clone()) as Arc<dyn ApprovalGate>,
            Arc::clone(&self.tracker),
            Arc::clone(&self.metrics),
        ))
    }

    /// The metrics; wrap the backends with its `policy`, `broker`, `runner` and `audit`.
    pub fn metrics(&self) -> Arc<Metrics> {
        Arc::clone(&self.metrics)
    }

    /// The approval queue (e.g. to resolve approvals from another front end too).
    pub fn approvals(&self) -> Approvals {
        self.approvals.clone()
    }

    /// The handlers' state. `identity` must be the gateway's identity backend: it authenticates
    /// agents polling `GET /v1/actions/{id}` and the MCP endpoint.
    pub fn into_state(
        self,
        gateway: Gateway,
        identity: Arc<dyn Identity>,
        approvers: Approvers,
    ) -> AppState {
        // The approvals endpoints must see the tickets the gateway stores: if the gateway was
        // built on another store than this front's (without `approval_gate`), list and vote
        // there.
        let same_store = std::ptr::addr_eq(
            Arc::as_ptr(self.approvals.store()),
            Arc::as_ptr(&gateway.state()),
        );
        let approvals = if same_store {
            self.approvals
        } else {
            Approvals::new(gateway.state())
        };
        // Outside a runtime nothing can be spawned: the application runs them itself.
        let in_runtime = tokio::runtime::Handle::try_current().is_ok();
        if !in_runtime {
            tracing::warn!(
                "no async runtime: the recovery sweep and the lock watch are not started; call Gateway::spawn_recovery and Gateway::spawn_lock_watch"
            );
        }
        let background = [
            self.config
                .recovery_interval
                .filter(|_| in_runtime)
                .map(|every| gateway.spawn_recovery(every)),
            self.config
                .lock_watch_interval
                .filter(|_| in_runtime)
                .map(|every| gateway.spawn_lock_watch(every)),
        ];
        AppState {
            inner: Arc::new(Inner {
                _background: background,
                strangers: Strangers::new(
                    self.config.unauthenticated_per_second,
                    self.config.unauthenticated_burst,
                ),
                gateway,
                identity,
                approvers,
                approvals,
                tracker: self.tracker,
                metrics: self.metrics,
                allowed_origins: AllowedOrigins::new(&self.config.mcp_allowed_origins),
                config: self.config,
            }),
        }
    }
}

struct Inner {
    /// The periodic recovery sweep and lock watch, stopped when the state is dropped.
    _background: [Option<gateway_core::BackgroundTask>; 2],
    /// The per-source budget of unauthenticated requests.
    strangers: Strangers,
    gateway: Gateway,
    identity: Arc<dyn Identity>,
    approvers: Approvers,
    approvals: Approvals,
    tracker: Arc<ActionTracker>,
    metrics: Arc<Metrics>,
    /// `config.mcp_allowed_origins`, parsed once.
    allowed_origins: AllowedOrigins,
    config: ServerConfig,
}

/// What the HTTP and MCP handlers share. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("config", &self.inner.config)
            .field("approvers", &self.inner.approvers)
            .field("tracker", &self.inner.tracker)
            .finish_non_exhaustive()
    }
}

impl AppState {
    /// The gateway.
    pub fn gateway(&self) -> &Gateway {
        &self.inner.gateway
    }

    /// The agents' identity backend.
    pub fn identity(&self) -> &Arc<dyn Identity> {
        &self.inner.identity
    }

    /// The human approvers.
    pub fn approvers(&self) -> &Approvers {
        &self.inner.approvers
    }

    /// The approval queue.
    pub fn approvals(&self) -> &Approvals {
        &self.inner.approvals
    }

    /// The status tracker.
    pub fn tracker(&self) -> &ActionTracker {
        &self.inner.tracker
    }

    /// The metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.inner.metrics
    }

    /// The configuration.
    pub fn config(&self) -> &ServerConfig {
        &self.inner.config
    }

    /// The browser origins the MCP endpoint accepts.
    pub(crate) fn allowed_origins(&self) -> &AllowedOrigins {
        &self.inner.allowed_origins
    }

    /// Submits an action: tracks it and runs it on its own task (so it is never abandoned when
    /// a client goes away; only `cancel` stops it, as `Gateway::execute_until` does). Returns a
    /// receiver of its phase changes.
    ///
    /// The id is claimed for the agent only once the credential authenticates (see
    /// [`crate::tracker`]); a credential that does not is still run through the pipeline,
    /// which refuses and audits it, but it is not tracked: it can neither reserve an id nor
    /// push another request out.
    pub async fn submit(
        &self,
        credential: Credential,
        request: ActionRequest,
        origin: &str,
        cancel: CancellationToken,
    ) -> Result<watch::Receiver<Phase>, ApiError> {
        let id = request.id;
        // An approver's token never acts as an agent, whatever the identity backend says.
        if self.approvers().is_approver_token(credential.secret()) {
            return Err(
                ApiError::unauthenticated("approver credentials cannot submit actions")
                    .with_correlation_id(id),
            );
        }
        let (rx, report) = match self.identity().authenticate(&credential).await {
            Ok(agent) => {
                let rx = self.tracker().begin(&agent.id, id).map_err(|e| {
                    let kind = match e {
                        TrackError::Duplicate(_) => ErrorKind::Conflict,
                        _ => ErrorKind::Unavailable,
                    };
                    ApiError::new(kind, e.to_string(), Some(id))
                })?;
                (rx, Report::Tracked(agent.id))
            }
            Err(_) => {
                self.admit_stranger(origin, id)?;
                let (tx, rx) = watch::channel(Phase::Running);
                (rx, Report::Untracked(tx))
            }
        };
        let state = self.clone();
        let context = RequestContext {
            origin: Some(origin.to_owned()),
            ..RequestContext::default()
        };
        let span = tracing::info_span!("gateway_server.action", correlation_id = %id, origin);
        tokio::spawn(
            async move {
                let result = state
                    .gateway()
                    .execute_until(credential, request, context, cancel)
                    .await;
                state.metrics().observe(&result);
                if let Err(e) = &result {
                    tracing::info!(kind = %e.kind(), error = %e, "action refused or failed");
                }
                match report {
                    Report::Tracked(agent) => state.tracker().finish(&agent, id, result),
                    Report::Untracked(tx) => {
                        tx.send_replace(Phase::Done(Arc::new(result)));
                    }
                }
            }
            .instrument(span),
        );
        Ok(rx)
    }

    /// An unauthenticated request within its source's budget goes on (to be refused and
    /// audited by the pipeline); past it, 429 and a count for the next summary
    /// ([`crate::strangers`]).
    fn admit_stranger(&self, origin: &str, id: RequestId) -> Result<(), ApiError> {
        let strangers = &self.inner.strangers;
        let source = source_of(origin);
        let admitted = strangers.admit(&source);
        if strangers.due() {
            let state = self.clone();
            tokio::spawn(async move {
                let audit = state.gateway().audit();
                state.inner.strangers.flush(&audit, false).await;
            });
        }
        if admitted {
            return Ok(());
        }
        let mut error = ApiError::new(
            ErrorKind::RateLimited,
            "too many requests with credentials that do not authenticate from this source: \
             refused before the pipeline and counted in the audit trail, nothing ran",
            Some(id),
        );
        error.retry_after_seconds = std::num::NonZeroU32::new(
            u32::try_from(crate::strangers::SUMMARY_WINDOW.as_secs()).unwrap_or(u32::MAX),
        );
        Err(error)
    }

    /// Writes the counted summaries of refused unauthenticated requests now (the server does
    /// this on shutdown; otherwise they are written every 10 s as refusals come in).
    pub async fn flush_refusal_summaries(&self) {
        let audit = self.gateway().audit();
        self.inner.strangers.flush(&audit, true).await;
    }

    /// Authenticates an agent as every agent endpoint does: an approver's token is refused
    /// (401), then the identity backend decides, then, with OAuth configured, an access token
    /// must grant the required scopes (403 `insufficient_scope`, [`crate::oauth`]).
    pub async fn authenticate_agent(
        &self,
        credential: &Credential,
    ) -> Result<AgentIdentity, ApiError> {
        if self.approvers().is_approver_token(credential.secret()) {
            return Err(ApiError::unauthenticated(
                "approver credentials cannot act as agents",
            ));
        }
        let agent = self
            .identity()
            .authenticate(credential)
            .await
            .map_err(|e| ApiError::new(e.kind(), e.to_string(), None))?;
        if let Some(oauth) = &self.config().oauth {
            oauth
                .check_scopes(&agent)
                .map_err(ApiError::insufficient_scope)?;
        }
        Ok(agent)
    }

    /// With OAuth scopes required: refuses (403) an access token that lacks them before an
    /// action is submitted. A credential the identity backend refuses passes here, so the
    /// pipeline refuses it and records the attempt as it always does.
    pub async fn check_scopes(&self, credential: &Credential) -> Result<(), ApiError> {
        let Some(oauth) = self
            .config()
            .oauth
            .as_ref()
            .filter(|o| !o.required_scopes().is_empty())
        else {
            return Ok(());
        };
        match self.identity().authenticate(credential).await {
            Ok(agent) => oauth
                .check_scopes(&agent)
                .map_err(ApiError::insufficient_scope),
            Err(_) => Ok(()),
        }
    }

    /// The catalog actions `credential`'s agent may see, as the policy's listing rule answers
    /// (`Gateway::visible_actions`), or 401. A policy that fails lists nothing: the error is
    /// logged and the list is empty (fail closed), never the whole catalog.
    pub async fn visible_actions(
        &self,
        credential: &Credential,
    ) -> Result<Vec<ActionDef>, ApiError> {
        let agent = self.authenticate_agent(credential).await?;
        let gateway = self.gateway();
        let names = match gateway.visible_actions(&agent, BTreeMap::new()).await {
            Ok(names) => names,
            Err(e) => {
                tracing::warn!(agent = %agent.id, error = %e, "the policy's listing failed: showing no actions");
                Vec::new()
            }
        };
        Ok(names
            .iter()
            .filter_map(|name| gateway.catalog().get(name).cloned())
            .collect())
    }

    /// The id of a tracked request for `credential`'s agent, or 401/404.
    pub async fn phase_for(
        &self,
        credential: &Credential,
        id: RequestId,
    ) -> Result<Phase, ApiError> {
        let agent = self.authenticate_agent(credential).await?;
        if let Some(phase) = self.tracker().phase_for(id, &agent.id) {
            return Ok(phase);
        }
        // Not submitted here (or before a restart): the shared store knows.
        let record = self
            .gateway()
            .action_state(&agent.id, id)
            .await
            .map_err(|e| ApiError::new(e.kind(), e.to_string(), Some(id)))?;
        record
            .as_ref()
            .map(Phase::of_record)
            .ok_or_else(|| ApiError::not_found(format!("no action {id} for this agent")))
    }
}

/// The source an origin names: the client's IP without its port (`http:10.0.0.1:5000` ->
/// `10.0.0.1`), else the origin itself.
fn source_of(origin: &str) -> String {
    let address = origin.strip_prefix("http:").unwrap_or(origin);
    address
        .parse::<std::net::SocketAddr>()
        .map_or_else(|_| origin.to_owned(), |a| a.ip().to_string())
}

/// Where a submitted action's result goes.
enum Report {
    /// The tracker, under the authenticated agent.
    Tracked(gateway_core::AgentId),
    /// Only the submitter's receiver (the credential did not authenticate).
    Untracked(watch::Sender<Phase>),
}
