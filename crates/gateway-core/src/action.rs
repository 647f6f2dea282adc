//! Action requests and the catalog of actions a gateway will run.

use crate::error::{BoxError, ErrorKind};
use crate::identity::AgentIdentity;
use crate::ids::RequestId;
use crate::params_schema::{ParamsSchema, SchemaError};
use crate::runner::JobSpec;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

/// What an agent asks the gateway to do.
///
/// Deserialising refuses fields it does not know (`deny_unknown_fields`): a misspelt
/// `requested_ttl_secs` is an error, not a silent default of 300 s.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionRequest {
    /// The request's id (and correlation id); generated if the client leaves it out.
    #[serde(default)]
    pub id: RequestId,
    /// A registered action name, e.g. `k8s.scale`.
    pub action: String,
    /// What the action touches, e.g. `k8s:staging/deployments/web`.
    pub resource: String,
    /// Action parameters (a JSON object).
    #[serde(default = "empty_object")]
    pub params: serde_json::Value,
    /// Why the agent wants this (recorded and shown to policies and approvers).
    #[serde(default)]
    pub intent: String,
    /// The grant lifetime the agent asks for, in seconds; the gateway may shorten it.
    #[serde(default = "default_ttl")]
    pub requested_ttl_seconds: u64,
}

fn empty_object() -> serde_json::Value {
    serde_json::Value::Object(serde_json::Map::new())
}

fn default_ttl() -> u64 {
    300
}

impl ActionRequest {
    /// The hash of exactly what this request asks for: lowercase hex SHA-256 of the RFC 8785
    /// canonical JSON of `{"action", "resource", "params", "intent", "requested_ttl_seconds"}`
    /// (the id is not part of it). An approval is bound to it, and a repeated id with another
    /// hash is a different request, not a retry.
    pub fn content_hash(&self) -> String {
        use sha2::Digest as _;
        let content = serde_json::json!({
            "action": self.action,
            "resource": self.resource,
            "params": self.params,
            "intent": self.intent,
            "requested_ttl_seconds": self.requested_ttl_seconds,
        });
        // Canonicalisation fails only on non-finite floats, which `serde_json::Value` cannot
        // hold; the fallback still hashes the whole content.
        let bytes = serde_json_canonicalizer::to_vec(&content)
            .unwrap_or_else(|_| content.to_string().into_bytes());
        hex::encode(sha2::Sha256::digest(&bytes))
    }

    /// A request with a fresh id, empty params and intent, and the default TTL (300 s).
    pub fn new(action: impl Into<String>, resource: impl Into<String>) -> Self {
        Self {
            id: RequestId::new(),
            action: action.into(),
            resource: resource.into(),
            params: empty_object(),
            intent: String::new(),
            requested_ttl_seconds: default_ttl(),
        }
    }

    /// Sets the params.
    pub fn with_params(mut self, params: serde_json::Value) -> Self {
        self.params = params;
        self
    }

    /// Sets the intent.
    pub fn with_intent(mut self, intent: impl Into<String>) -> Self {
        self.intent = intent.into();
        self
    }

    /// Sets the requested TTL.
    pub fn with_ttl_seconds(mut self, seconds: u64) -> Self {
        self.requested_ttl_seconds = seconds;
        self
    }
}

/// Why a [`ParamsValidator`] refused an action's params.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ParamsError {
    message: String,
    #[source]
    source: Option<BoxError>,
}

/// Why a [`JobBuilder`] could not turn a request into a job.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct JobBuildError {
    message: String,
    #[source]
    source: Option<BoxError>,
}

macro_rules! message_error {
    ($name:ident) => {
        impl $name {
            /// An error with this message.
            pub fn new(message: impl Into<String>) -> Self {
                Self {
                    message: message.into(),
                    source: None,
                }
            }

            /// An error with this message, caused by `source`.
            pub fn with_source(message: impl Into<String>, source: impl Into<BoxError>) -> Self {
                Self {
                    message: message.into(),
                    source: Some(source.into()),
                }
            }

            /// The message (as recorded in the audit trail).
            pub fn message(&self) -> &str {
                &self.message
            }

            /// The backend-neutral kind: always [`ErrorKind::InvalidInput`], the request is
            /// at fault.
            pub fn kind(&self) -> ErrorKind {
                ErrorKind::InvalidInput
            }
        }

        impl From<String> for $name {
            fn from(message: String) -> Self {
                Self::new(message)
            }
        }

        impl From<&str> for $name {
            fn from(message: &str) -> Self {
                Self::new(message)
            }
        }
    };
}

message_error!(ParamsError);
message_error!(JobBuildError);

/// Why a request was refused before anything was decided: it does not fit the catalog.
/// Every variant is [`ErrorKind::InvalidInput`]; the message is what the audit trail records.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// The action name is too long.
    #[error("action name longer than {max} bytes")]
    ActionNameTooLong {
        /// The limit.
        max: usize,
    },
    /// No such action is registered.
    #[error("unknown action {0:?}")]
    UnknownAction(String),
    /// The resource is empty.
    #[error("resource is empty")]
    EmptyResource,
    /// The resource is too long.
    #[error("resource longer than {max} bytes")]
    ResourceTooLong {
        /// The limit.
        max: usize,
    },
    /// The resource contains control characters.
    #[error("resource contains control characters")]
    ResourceHasControlCharacters,
    /// The intent is too long.
    #[error("intent longer than {max} bytes")]
    IntentTooLong {
        /// The limit.
        max: usize,
    },
    /// The params are not a JSON object.
    #[error("params must be a JSON object")]
    ParamsNotAnObject,
    /// The params are nested too deeply.
    #[error("params nested deeper than {max}")]
    ParamsTooDeep {
        /// The limit.
        max: usize,
    },
    /// The params are too large.
    #[error("params are {size} bytes, more than the {max} allowed for {action}")]
    ParamsTooLarge {
        /// Their serialised size.
        size: usize,
        /// The action's limit.
        max: usize,
        /// The action.
        action: String,
    },
    /// The action's validator refused the params.
    #[error("invalid params: {0}")]
    InvalidParams(#[source] ParamsError),
    /// The requested grant lifetime is zero.
    #[error("requested_ttl_seconds must be at least 1")]
    ZeroTtl,
    /// A string holds a NUL byte, which no program argument, environment variable or C API
    /// downstream can carry (refused here, before any decision or grant, rather than by the
    /// runner after one).
    #[error("{field} contains a NUL byte")]
    NulByte {
        /// `action`, `intent` or `params` (a key or a string value anywhere inside).
        field: &'static str,
    },
}

impl RequestError {
    /// The backend-neutral kind: always [`ErrorKind::InvalidInput`].
    pub fn kind(&self) -> ErrorKind {
        ErrorKind::InvalidInput
    }
}

/// Checks an action's params beyond size and shape.
pub type ParamsValidator = Arc<dyn Fn(&serde_json::Value) -> Result<(), ParamsError> + Send + Sync>;

/// Builds the job for an allowed request, or says why the request cannot be turned into a job.
/// The gateway then applies limits, network, grant and labels to the returned spec.
pub type JobBuilder =
    Arc<dyn Fn(&ActionRequest, &AgentIdentity) -> Result<JobSpec, JobBuildError> + Send + Sync>;

/// Says whether an action may carry one scope of the policy's obligations, for this request
/// (e.g. a catalog file's `scopes = ["pg:{database}:*"]`, with the resource's captures filled
/// in). The pipeline asks it for every obligation scope before any broker call.
pub type ScopeCheck = Arc<dyn Fn(&ActionRequest, &str) -> bool + Send + Sync>;

/// One registered action.
#[derive(Clone)]
pub struct ActionDef {
    /// The action name.
    pub name: String,
    /// What it does (shown to agents, e.g. as an MCP tool description).
    pub description: String,
    /// JSON Schema of the params: published to agents as written, and checked on every
    /// request before anything else sees the params.
    pub params_schema: ParamsSchema,
    /// Largest accepted params, serialised, in bytes.
    pub max_params_bytes: usize,
    /// Checks on params that JSON Schema cannot say, run after the schema accepted them.
    pub validator: Option<ParamsValidator>,
    /// Turns a request into a job.
    pub job: JobBuilder,
    /// The named broker that issues and revokes this action's grants
    /// ([`GatewayBuilder::named_broker`](crate::GatewayBuilder::named_broker)); `None` is the
    /// gateway's default broker. A name no broker is registered under fails
    /// [`GatewayBuilder::build`](crate::GatewayBuilder::build).
    pub broker: Option<String>,
    /// Which obligation scopes the action may carry; `None` allows whatever the policy asks
    /// for. A scope it refuses fails the action at the grant stage, before any broker call.
    pub allowed_scopes: Option<ScopeCheck>,
}

impl fmt::Debug for ActionDef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ActionDef")
            .field("name", &self.name)
            .field("description", &self.description)
            .field("max_params_bytes", &self.max_params_bytes)
            .field("broker", &self.broker)
            .field("scopes_restricted", &self.allowed_scopes.is_some())
            .finish_non_exhaustive()
    }
}

impl ActionDef {
    /// An action with an object params schema, a 16 KiB params cap and no validator.
    pub fn new(
        name: impl Into<String>,
        description: impl Into<String>,
        job: impl Fn(&ActionRequest, &AgentIdentity) -> Result<JobSpec, JobBuildError>
        + Send
        + Sync
        + 'static,
    ) -> Self {
        Self {
            name: name.into(),
            description: description.into(),
            params_schema: ParamsSchema::any_object(),
            max_params_bytes: 16 * 1024,
            validator: None,
            job: Arc::new(job),
            broker: None,
            allowed_scopes: None,
        }
    }

    /// Has this action's grants issued and revoked by the broker registered under `name`.
    pub fn with_broker(mut self, name: impl Into<String>) -> Self {
        self.broker = Some(name.into());
        self
    }

    /// Restricts the obligation scopes this action may carry to those `allowed` accepts.
    pub fn with_allowed_scopes(
        mut self,
        allowed: impl Fn(&ActionRequest, &str) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.allowed_scopes = Some(Arc::new(allowed));
        self
    }

    /// Sets the params JSON Schema (draft 2020-12, see [`ParamsSchema`]): compiled here, so a
    /// schema that does not compile is refused when the action is defined, naming it.
    pub fn with_schema(mut self, schema: serde_json::Value) -> Result<Self, SchemaError> {
        self.params_schema = ParamsSchema::new(schema).map_err(|e| e.for_action(&self.name))?;
        Ok(self)
    }

    /// Sets the params size cap.
    pub fn with_max_params_bytes(mut self, bytes: usize) -> Self {
        self.max_params_bytes = bytes;
        self
    }

    /// Sets a params validator, for what JSON Schema cannot say (it runs after the schema has
    /// accepted the params). Prefer the schema: only it is published to agents.
    pub fn with_validator(
        mut self,
        validator: impl Fn(&serde_json::Value) -> Result<(), ParamsError> + Send + Sync + 'static,
    ) -> Self {
        self.validator = Some(Arc::new(validator));
        self
    }
}

/// Limits on every request, whatever the action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestLimits {
    /// Longest action name.
    pub max_action_len: usize,
    /// Longest resource string.
    pub max_resource_len: usize,
    /// Longest intent text.
    pub max_intent_len: usize,
    /// Deepest params nesting.
    pub max_params_depth: usize,
}

impl Default for RequestLimits {
    fn default() -> Self {
        Self {
            max_action_len: 128,
            max_resource_len: 512,
            max_intent_len: 4096,
            max_params_depth: 32,
        }
    }
}

/// The registered actions. Only these run.
#[derive(Debug, Clone, Default)]
pub struct ActionCatalog {
    actions: BTreeMap<String, ActionDef>,
    limits: RequestLimits,
}

impl ActionCatalog {
    /// An empty catalog with default request limits.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers an action (replacing one of the same name).
    pub fn register(mut self, action: ActionDef) -> Self {
        self.actions.insert(action.name.clone(), action);
        self
    }

    /// Sets the request limits.
    pub fn with_limits(mut self, limits: RequestLimits) -> Self {
        self.limits = limits;
        self
    }

    /// The registered actions, by name.
    pub fn actions(&self) -> impl Iterator<Item = &ActionDef> {
        self.actions.values()
    }

    /// Looks an action up.
    pub fn get(&self, name: &str) -> Option<&ActionDef> {
        self.actions.get(name)
    }

    /// Checks a request against the catalog; on success returns its action.
    pub fn validate(&self, request: &ActionRequest) -> Result<&ActionDef, RequestError> {
        let l = &self.limits;
        if request.action.len() > l.max_action_len {
            return Err(RequestError::ActionNameTooLong {
                max: l.max_action_len,
            });
        }
        let Some(def) = self.actions.get(&request.action) else {
            return Err(RequestError::UnknownAction(request.action.clone()));
        };
        if request.resource.is_empty() {
            return Err(RequestError::EmptyResource);
        }
        if request.resource.len() > l.max_resource_len {
            return Err(RequestError::ResourceTooLong {
                max: l.max_resource_len,
            });
        }
        if request.resource.chars().any(char::is_control) {
            return Err(RequestError::ResourceHasControlCharacters);
        }
        if request.action.contains('\0') {
            return Err(RequestError::NulByte { field: "action" });
        }
        if request.intent.contains('\0') {
            return Err(RequestError::NulByte { field: "intent" });
        }
        if request.intent.len() > l.max_intent_len {
            return Err(RequestError::IntentTooLong {
                max: l.max_intent_len,
            });
        }
        if !request.params.is_object() {
            return Err(RequestError::ParamsNotAnObject);
        }
        if holds_nul(&request.params) {
            return Err(RequestError::NulByte { field: "params" });
        }
        if json_depth(&request.params) > l.max_params_depth {
            return Err(RequestError::ParamsTooDeep {
                max: l.max_params_depth,
            });
        }
        let size = serde_json::to_vec(&request.params)
            .map(|v| v.len())
            .unwrap_or(usize::MAX);
        if size > def.max_params_bytes {
            return Err(RequestError::ParamsTooLarge {
                size,
                max: def.max_params_bytes,
                action: def.name.clone(),
            });
        }
        def.params_schema
            .validate(&request.params)
            .map_err(|v| RequestError::InvalidParams(ParamsError::with_source(v.to_string(), v)))?;
        if let Some(validator) = &def.validator {
            validator(&request.params).map_err(RequestError::InvalidParams)?;
        }
        Ok(def)
    }
}

/// Whether any string of `value`, object keys included, holds a NUL byte; without recursion,
/// like [`json_depth`].
fn holds_nul(value: &serde_json::Value) -> bool {
    let mut stack = vec![value];
    while let Some(v) = stack.pop() {
        match v {
            serde_json::Value::String(s) if s.contains('\0') => return true,
            serde_json::Value::Array(a) => stack.extend(a),
            serde_json::Value::Object(o) => {
                if o.keys().any(|k| k.contains('\0')) {
                    return true;
                }
                stack.extend(o.values());
            }
            _ => {}
        }
    }
    false
}

/// Nesting depth of a JSON value (a scalar is 0), computed without recursion so hostile input
/// cannot overflow the stack.
pub fn json_depth(value: &serde_json::Value) -> usize {
    let mut max = 0;
    let mut stack = vec![(value, 0usize)];
    while let Some((v, d)) = stack.pop() {
        max = max.max(d);
        match v {
            serde_json::Value::Array(a) => stack.extend(a.iter().map(|x| (x, d + 1))),
            serde_json::Value::Object(o) => stack.extend(o.values().map(|x| (x, d + 1))),
            _ => {}
        }
    }
    max
}
