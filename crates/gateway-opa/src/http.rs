//! [`OpaHttp`]: the policy contract evaluated by an OPA server through its Data API.
//!
//! One `POST {base}/v1/data/{package path}` with `{"input": …}` per decision, over one pooled
//! `reqwest::Client`. Every answer that is not a well-formed decision fails closed: connection
//! failures, timeouts, HTTP errors, bodies that are not JSON or are too large, OPA's error
//! documents and warnings all become errors (the gateway denies); an undefined decision (HTTP
//! 200 without `result`) is a deny with reason [`POLICY_UNDEFINED`].

use crate::contract::{
    DEFAULT_LISTING_PATH, DecisionPath, InputLimits, POLICY_UNDEFINED, parse_decision,
    parse_listing, type_name,
};
use crate::error::SetupError;
use async_trait::async_trait;
use gateway_core::Secret;
use gateway_core::policy::{Decision, ListingInput, PolicyDecider, PolicyError, PolicyInput};
use reqwest::{StatusCode, Url, header};
use serde_json::Value;
use std::net::IpAddr;
use std::time::Duration;
use tokio::time::Instant;

/// The longest OPA message carried into an error (errors become reasons in audit records).
const MAX_MESSAGE_CHARS: usize = 1024;

/// Builds an [`OpaHttp`].
#[derive(Debug, Clone)]
pub struct OpaHttpBuilder {
    base_url: String,
    token: Option<Secret>,
    path: Result<DecisionPath, String>,
    listing: Result<DecisionPath, String>,
    timeout: Duration,
    connect_timeout: Duration,
    retries: u32,
    retry_backoff: Duration,
    max_response_bytes: usize,
    limits: InputLimits,
    policy_version: Option<String>,
    allow_plaintext_token: bool,
}

impl OpaHttpBuilder {
    /// A builder for the OPA server at `base_url` (e.g. `http://127.0.0.1:8181`).
    pub fn new(base_url: impl Into<String>) -> Self {
        Self {
            base_url: base_url.into(),
            token: None,
            path: Ok(DecisionPath::default()),
            listing: DecisionPath::parse(DEFAULT_LISTING_PATH).map_err(|e| e.to_string()),
            timeout: Duration::from_secs(1),
            connect_timeout: Duration::from_millis(250),
            retries: 2,
            retry_backoff: Duration::from_millis(25),
            max_response_bytes: 1024 * 1024,
            limits: InputLimits::default(),
            policy_version: None,
            allow_plaintext_token: false,
        }
    }

    /// A builder configured from the environment:
    ///
    /// - `OPA_URL` (required): the server's base URL;
    /// - `OPA_TOKEN` (optional): bearer token for OPA's `--authentication=token`;
    /// - `OPA_DECISION_PATH` (optional): the rule, default [`crate::DEFAULT_DECISION_PATH`];
    /// - `OPA_TIMEOUT_MS` (optional): the per-decision timeout, default 1000.
    pub fn from_env() -> Result<Self, SetupError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Like [`from_env`](Self::from_env), reading variables through `lookup` (for tests and for
    /// services with their own configuration source).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, SetupError> {
        let url = lookup("OPA_URL")
            .filter(|u| !u.trim().is_empty())
            .ok_or_else(|| SetupError::config("OPA_URL is not set"))?;
        let mut builder = Self::new(url.trim());
        if let Some(token) = lookup("OPA_TOKEN").filter(|t| !t.is_empty()) {
            builder = builder.bearer_token(token);
        }
        if let Some(path) = lookup("OPA_DECISION_PATH") {
            builder = builder.decision_path(&path);
        }
        if let Some(ms) = lookup("OPA_TIMEOUT_MS") {
            let ms: u64 = ms.trim().parse().map_err(|_| {
                SetupError::config(format!("OPA_TIMEOUT_MS must be milliseconds, got {ms:?}"))
            })?;
            builder = builder.timeout(Duration::from_millis(ms));
        }
        Ok(builder)
    }

    /// Sends `Authorization: Bearer <token>` (never logged or printed).
    pub fn bearer_token(mut self, token: impl Into<Secret>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// The rule to query (default [`crate::DEFAULT_DECISION_PATH`]).
    pub fn decision_path(mut self, path: &str) -> Self {
        self.path = DecisionPath::parse(path).map_err(|e| e.to_string());
        self
    }

    /// The catalog listing rule (default [`crate::DEFAULT_LISTING_PATH`]), queried by
    /// [`PolicyDecider::visible_actions`].
    pub fn listing_path(mut self, path: &str) -> Self {
        self.listing = DecisionPath::parse(path).map_err(|e| e.to_string());
        self
    }

    /// Deadline of one decision, retries and reading the answer included (default 1 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Deadline of establishing one connection (default 250 ms).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Retries after connection errors only (default 2), with exponential backoff starting at
    /// `backoff` (default 25 ms), all within [`timeout`](Self::timeout). A request that reached
    /// OPA is never retried.
    pub fn retries(mut self, retries: u32, backoff: Duration) -> Self {
        self.retries = retries;
        self.retry_backoff = backoff;
        self
    }

    /// The largest response body read (default 1 MiB); a larger one is a malformed answer.
    pub fn max_response_bytes(mut self, bytes: usize) -> Self {
        self.max_response_bytes = bytes;
        self
    }

    /// Bounds on input documents (default [`InputLimits::default`]).
    pub fn input_limits(mut self, limits: InputLimits) -> Self {
        self.limits = limits;
        self
    }

    /// A version label (e.g. the bundle revision) appended to the `policy_id` of decisions.
    pub fn policy_version(mut self, version: impl Into<String>) -> Self {
        self.policy_version = Some(version.into());
        self
    }

    /// Allows sending the bearer token over plain HTTP to a host that is not loopback. Off by
    /// default: a token in cleartext on a network is a leaked token.
    pub fn allow_plaintext_token(mut self, allow: bool) -> Self {
        self.allow_plaintext_token = allow;
        self
    }

    /// Validates the configuration and builds the client.
    pub fn build(self) -> Result<OpaHttp, SetupError> {
        let path = self.path.map_err(SetupError::config)?;
        let listing = self.listing.map_err(SetupError::config)?;
        let base = Url::parse(&self.base_url)
            .map_err(|e| SetupError::config(format!("OPA URL is invalid: {e}")))?;
        match base.scheme() {
            "http" => {}
            "https" if cfg!(feature = "tls") => {}
            "https" => {
                return Err(SetupError::config(
                    "an https OPA URL needs gateway-opa's `tls` feature",
                ));
            }
            other => {
                return Err(SetupError::config(format!(
                    "OPA URL scheme must be http or https, got {other:?}"
                )));
            }
        }
        if !base.username().is_empty() || base.password().is_some() {
            return Err(SetupError::config(
                "OPA URL must not carry credentials; use a bearer token",
            ));
        }
        if base.query().is_some() || base.fragment().is_some() {
            return Err(SetupError::config(
                "OPA URL must not have a query or fragment",
            ));
        }
        let loopback = base.host_str().is_some_and(|host| {
            let host = host.trim_start_matches('[').trim_end_matches(']');
            host.eq_ignore_ascii_case("localhost")
                || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
        });
        if self.token.is_some()
            && base.scheme() == "http"
            && !loopback
            && !self.allow_plaintext_token
        {
            return Err(SetupError::config(
                "refusing to send the OPA token over plain HTTP to a non-loopback host \
                 (use https, or allow_plaintext_token(true))",
            ));
        }
        if self.timeout.is_zero() || self.connect_timeout.is_zero() {
            return Err(SetupError::config("timeouts must be positive"));
        }
        let data_url = |path: &DecisionPath| {
            let url = format!(
                "{}/v1/data/{}",
                base.as_str().trim_end_matches('/'),
                path.url_path()
            );
            Url::parse(&url).map_err(|e| SetupError::config(format!("OPA URL is invalid: {e}")))
        };
        let endpoint = data_url(&path)?;
        let listing_endpoint = data_url(&listing)?;
        let client = reqwest::Client::builder()
            .connect_timeout(self.connect_timeout)
            .pool_idle_timeout(Duration::from_secs(90))
            .tcp_nodelay(true)
            // The decision endpoint is fixed; following a redirect could leak the token.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| SetupError::config(format!("cannot build the HTTP client: {e}")))?;
        let mut policy_id = format!("opa:{}", path.rule());
        if let Some(version) = &self.policy_version {
            policy_id.push('@');
            policy_id.push_str(version);
        }
        let authorization = match &self.token {
            None => None,
            Some(token) => {
                let token = token
                    .expose_str()
                    .ok_or_else(|| SetupError::config("the OPA token must be UTF-8"))?;
                let mut value = header::HeaderValue::try_from(format!("Bearer {token}"))
                    .map_err(|_| SetupError::config("the OPA token has invalid characters"))?;
                value.set_sensitive(true);
                Some(value)
            }
        };
        Ok(OpaHttp {
            client,
            endpoint,
            listing_endpoint,
            authorization,
            timeout: self.timeout,
            retries: self.retries,
            retry_backoff: self.retry_backoff,
            max_response_bytes: self.max_response_bytes,
            limits: self.limits,
            policy_id,
        })
    }
}

/// A [`PolicyDecider`] backed by an OPA server (see the module docs).
#[derive(Clone)]
pub struct OpaHttp {
    client: reqwest::Client,
    endpoint: Url,
    listing_endpoint: Url,
    authorization: Option<header::HeaderValue>,
    timeout: Duration,
    retries: u32,
    retry_backoff: Duration,
    max_response_bytes: usize,
    limits: InputLimits,
    policy_id: String,
}

impl std::fmt::Debug for OpaHttp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpaHttp")
            .field("endpoint", &self.endpoint.as_str())
            .field("token", &self.authorization.as_ref().map(|_| "<redacted>"))
            .field("timeout", &self.timeout)
            .field("retries", &self.retries)
            .field("policy_id", &self.policy_id)
            .finish_non_exhaustive()
    }
}

impl OpaHttp {
    /// A builder for the OPA server at `base_url`. Building checks the settings and connects to
    /// nothing; each decision is one `POST /v1/data/<decision path>`.
    ///
    /// ```
    /// use gateway_opa::OpaHttp;
    /// use std::time::Duration;
    ///
    /// let opa = OpaHttp::builder("http://127.0.0.1:8181")
    ///     .decision_path("agent_gateway/authz/decision")
    ///     .timeout(Duration::from_millis(500))
    ///     .retries(1, Duration::from_millis(20))
    ///     .build()?;
    /// # let _ = opa;
    /// // A path that is not a Data API path is refused when building, not at the first request.
    /// assert!(OpaHttp::builder("http://127.0.0.1:8181").decision_path("../x").build().is_err());
    /// # Ok::<(), gateway_opa::SetupError>(())
    /// ```
    pub fn builder(base_url: impl Into<String>) -> OpaHttpBuilder {
        OpaHttpBuilder::new(base_url)
    }

    /// The decision endpoint, e.g. `http://127.0.0.1:8181/v1/data/agent_gateway/authz/decision`.
    pub fn endpoint(&self) -> &str {
        self.endpoint.as_str()
    }

    /// Decides a raw input document (which must follow the contract).
    pub async fn decide_document(&self, input: &Value) -> Result<Decision, PolicyError> {
        let encoded = self.limits.encode_document(input)?;
        self.decide_encoded(&encoded).await
    }

    async fn decide_encoded(&self, encoded_input: &str) -> Result<Decision, PolicyError> {
        let (status, bytes) = self.query(&self.endpoint, encoded_input).await?;
        self.interpret(status, &bytes)
    }

    /// POSTs `{"input": …}` to `endpoint` within the timeout (retrying only connections that
    /// never reached OPA) and reads the capped answer.
    async fn query(
        &self,
        endpoint: &Url,
        encoded_input: &str,
    ) -> Result<(StatusCode, Vec<u8>), PolicyError> {
        let body = format!("{{\"input\":{encoded_input}}}");
        let deadline = Instant::now() + self.timeout;
        let mut attempt = 0u32;
        let response = loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(self.timed_out());
            }
            let mut request = self
                .client
                .post(endpoint.clone())
                .timeout(remaining)
                .header(header::CONTENT_TYPE, "application/json")
                .header(header::ACCEPT, "application/json")
                .body(body.clone());
            if let Some(auth) = &self.authorization {
                request = request.header(header::AUTHORIZATION, auth.clone());
            }
            match request.send().await {
                Ok(response) => break response,
                // Only a request that never reached OPA is safe and useful to repeat.
                Err(e) if e.is_connect() && attempt < self.retries => {
                    let backoff = self.retry_backoff.saturating_mul(1 << attempt.min(16));
                    attempt += 1;
                    tracing::debug!(attempt, error = %e, "OPA connection failed; retrying");
                    tokio::time::sleep_until((Instant::now() + backoff).min(deadline)).await;
                }
                Err(e) if e.is_timeout() => return Err(self.timed_out()),
                Err(e) if e.is_connect() => {
                    return Err(PolicyError::unavailable(
                        format!(
                            "cannot connect to OPA at {} after {} attempts",
                            self.endpoint_host(),
                            attempt + 1
                        ),
                        e.without_url(),
                    ));
                }
                Err(e) => {
                    return Err(PolicyError::unavailable(
                        "request to OPA failed",
                        e.without_url(),
                    ));
                }
            }
        };
        let status = response.status();
        let bytes = self.read_capped(response).await?;
        Ok((status, bytes))
    }

    fn timed_out(&self) -> PolicyError {
        PolicyError::Timeout {
            after: self.timeout,
        }
    }

    fn endpoint_host(&self) -> String {
        let host = self.endpoint.host_str().unwrap_or("?");
        match self.endpoint.port_or_known_default() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_owned(),
        }
    }

    /// Reads at most `max_response_bytes`, refusing larger bodies without reading them whole.
    async fn read_capped(&self, mut response: reqwest::Response) -> Result<Vec<u8>, PolicyError> {
        let cap = self.max_response_bytes;
        let too_large = || PolicyError::Malformed {
            message: format!("OPA response is larger than {cap} bytes"),
        };
        if response
            .content_length()
            .is_some_and(|len| len > cap as u64)
        {
            return Err(too_large());
        }
        let mut body = Vec::new();
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    if body.len() + chunk.len() > cap {
                        return Err(too_large());
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => return Ok(body),
                Err(e) if e.is_timeout() => return Err(self.timed_out()),
                Err(e) => {
                    return Err(PolicyError::unavailable(
                        "reading OPA's response failed",
                        e.without_url(),
                    ));
                }
            }
        }
    }

    fn interpret(&self, status: StatusCode, body: &[u8]) -> Result<Decision, PolicyError> {
        let document = response_document(status, body)?;
        let Value::Object(response) = &document else {
            return Err(PolicyError::Malformed {
                message: format!(
                    "OPA response must be an object, got {}",
                    type_name(&document)
                ),
            });
        };
        let decision_id = response
            .get("decision_id")
            .and_then(Value::as_str)
            .map(str::to_owned);
        if let Some(warning) = response.get("warning") {
            tracing::warn!(
                decision_id = decision_id.as_deref().unwrap_or(""),
                warning = %truncate(warning.to_string()),
                "OPA returned a warning with the decision"
            );
        }
        let mut decision = match response.get("result") {
            None => Decision::deny(POLICY_UNDEFINED),
            Some(result) => parse_decision(result).map_err(|e| match (e, &decision_id) {
                // Keep OPA's decision id in the error so the audit record can be matched with
                // OPA's decision log.
                (PolicyError::Malformed { message }, Some(id)) => PolicyError::Malformed {
                    message: format!("{message} (decision_id {id})"),
                },
                (e, _) => e,
            })?,
        };
        decision.policy_id = Some(self.policy_id.clone());
        decision.decision_id = decision_id;
        Ok(decision)
    }
}

/// OPA's answer as a JSON document: an HTTP error becomes the typed error for its status, with
/// OPA's own message; a body that is not JSON is [`PolicyError::Malformed`].
fn response_document(status: StatusCode, body: &[u8]) -> Result<Value, PolicyError> {
    let parsed: Result<Value, _> = serde_json::from_slice(body);
    if status != StatusCode::OK {
        let detail = match &parsed {
            Ok(document) => opa_error_message(document),
            Err(_) => snippet(body),
        };
        let message = truncate(format!("OPA answered HTTP {}: {detail}", status.as_u16()));
        return Err(match status {
            StatusCode::BAD_REQUEST => PolicyError::InvalidInput { message },
            StatusCode::NOT_FOUND => PolicyError::NotFound { message },
            StatusCode::INTERNAL_SERVER_ERROR
                if parsed.as_ref().is_ok_and(|d| d.get("errors").is_some()) =>
            {
                PolicyError::Evaluation { message }
            }
            _ => PolicyError::Unavailable {
                message,
                source: None,
            },
        });
    }
    let document = parsed.map_err(|e| PolicyError::Malformed {
        message: format!("OPA response is not JSON ({e}): {}", snippet(body)),
    })?;
    Ok(document)
}

/// OPA's error document (`{"code","message","errors":[{"code","message","location"}]}`) on
/// one line.
fn opa_error_message(document: &Value) -> String {
    let field = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
    let mut message = format!(
        "{}: {}",
        field(document, "code"),
        field(document, "message")
    );
    if let Some(Value::Array(errors)) = document.get("errors") {
        for error in errors {
            message.push_str(&format!(
                "; {}: {}",
                field(error, "code"),
                field(error, "message")
            ));
            if let Some(location) = error.get("location") {
                message.push_str(&format!(
                    " ({}:{}:{})",
                    field(location, "file"),
                    location.get("row").and_then(Value::as_u64).unwrap_or(0),
                    location.get("col").and_then(Value::as_u64).unwrap_or(0)
                ));
            }
        }
    }
    message
}

/// The start of a body that is not what was expected, for an error message.
fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(200)]);
    format!("{:?}", text.trim())
}

fn truncate(message: String) -> String {
    if message.chars().count() <= MAX_MESSAGE_CHARS {
        return message;
    }
    message.chars().take(MAX_MESSAGE_CHARS).collect::<String>() + "…"
}

#[async_trait]
impl PolicyDecider for OpaHttp {
    async fn decide(&self, input: &PolicyInput) -> Result<Decision, PolicyError> {
        let encoded = self.limits.encode(input)?;
        self.decide_encoded(&encoded).await
    }

    async fn visible_actions(&self, input: &ListingInput) -> Result<Vec<String>, PolicyError> {
        let encoded = self.limits.encode_listing(input)?;
        let (status, bytes) = self.query(&self.listing_endpoint, &encoded).await?;
        match response_document(status, &bytes)? {
            Value::Object(response) => parse_listing(response.get("result")),
            other => Err(PolicyError::Malformed {
                message: format!("OPA response must be an object, got {}", type_name(&other)),
            }),
        }
    }
}
