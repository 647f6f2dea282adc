//! A JWKS URL as a key source: cached, refreshed on a TTL, refetched for an unknown `kid` at
//! most once per interval, and served stale (for a bounded time) while the key server is down.
//!
//! The URL is configuration only. Nothing in a token (`jku`, `x5u`, `jwk`) ever changes where
//! keys come from, redirects are not followed, and responses are size-capped.

use crate::key::KeySet;
use reqwest::Url;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// How a JWKS URL is fetched and cached.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct JwksOptions {
    /// How long a fetched set is used before it is refreshed (default 5 min). A key removed
    /// from the server stops being accepted at most this long after the last fetch.
    pub cache_ttl: Duration,
    /// How long past `cache_ttl` the last set is still served while refreshes fail (default
    /// 1 h). After that, tokens are refused until the key server answers again.
    pub stale_grace: Duration,
    /// The minimum time between two fetches, whatever triggers them (default 30 s): random
    /// `kid`s in forged tokens cannot make the gateway hammer the key server.
    pub min_refetch_interval: Duration,
    /// Timeout of one fetch (default 5 s).
    pub timeout: Duration,
    /// The largest response body accepted (default 256 KiB).
    pub max_body_bytes: usize,
    /// Allow `http://` URLs to hosts other than loopback (default false: an attacker on the
    /// path could otherwise substitute keys).
    pub allow_insecure_http: bool,
}

impl Default for JwksOptions {
    fn default() -> Self {
        Self {
            cache_ttl: Duration::from_secs(300),
            stale_grace: Duration::from_secs(3600),
            min_refetch_interval: Duration::from_secs(30),
            timeout: Duration::from_secs(5),
            max_body_bytes: 256 * 1024,
            allow_insecure_http: false,
        }
    }
}

/// Why a JWKS source could not be set up or used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JwksError {
    /// The URL is not usable.
    #[error("invalid JWKS URL: {0}")]
    InvalidUrl(String),
    /// The HTTP client could not be built.
    #[error("JWKS HTTP client: {0}")]
    Client(#[source] reqwest::Error),
    /// A fetch failed.
    #[error("fetching the JWKS failed: {0}")]
    Fetch(String),
}

struct Snapshot {
    keys: KeySet,
    fetched_at: Instant,
    generation: u64,
}

struct FetchState {
    last_attempt: Option<Instant>,
}

/// Keys fetched from a JWKS URL.
pub(crate) struct JwksCache {
    url: Url,
    client: reqwest::Client,
    options: JwksOptions,
    current: RwLock<Option<Arc<Snapshot>>>,
    /// Held while fetching, so concurrent misses cause one fetch, not one each.
    fetch: tokio::sync::Mutex<FetchState>,
}

impl std::fmt::Debug for JwksCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwksCache")
            .field("url", &self.url.as_str())
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// The keys to verify one token with.
pub(crate) struct Keys(Arc<Snapshot>);

impl Keys {
    pub(crate) fn set(&self) -> &KeySet {
        &self.0.keys
    }
}

fn is_loopback(url: &Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || bare
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

impl JwksCache {
    /// Checks the URL and builds the HTTP client. Nothing is fetched yet.
    pub(crate) fn new(url: &str, options: JwksOptions) -> Result<Self, JwksError> {
        let url = Url::parse(url).map_err(|e| JwksError::InvalidUrl(e.to_string()))?;
        match url.scheme() {
            "https" => {
                if !cfg!(feature = "tls") {
                    return Err(JwksError::InvalidUrl(
                        "https JWKS URLs need the `tls` feature of gateway-identity".into(),
                    ));
                }
            }
            "http" if options.allow_insecure_http || is_loopback(&url) => {}
            "http" => {
                return Err(JwksError::InvalidUrl(
                    "plain http is only allowed to loopback hosts (or with allow_insecure_http)"
                        .into(),
                ));
            }
            other => {
                return Err(JwksError::InvalidUrl(format!(
                    "unsupported scheme {other:?}"
                )));
            }
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(JwksError::InvalidUrl("credentials in the URL".into()));
        }
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(options.timeout)
            .connect_timeout(options.timeout)
            .build()
            .map_err(JwksError::Client)?;
        Ok(Self {
            url,
            client,
            options,
            current: RwLock::new(None),
            fetch: tokio::sync::Mutex::new(FetchState { last_attempt: None }),
        })
    }

    fn snapshot(&self) -> Option<Arc<Snapshot>> {
        // Writers only swap an Arc, so a poisoned lock still holds a consistent value.
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The keys to verify a token naming `kid` with. Errors mean no trustworthy keys are
    /// available (the message is safe to show).
    pub(crate) async fn keys(&self, kid: Option<&str>) -> Result<Keys, String> {
        let snapshot = self.snapshot();
        let generation = snapshot.as_ref().map_or(0, |s| s.generation);
        if let Some(snap) = snapshot {
            let age = snap.fetched_at.elapsed();
            if age < self.options.cache_ttl {
                let unknown = kid.is_some_and(|k| !snap.keys.contains_kid(k));
                if unknown && let Ok(Some(fresh)) = self.refresh(generation).await {
                    return Ok(Keys(fresh));
                }
                return Ok(Keys(snap));
            }
            if age < self.options.cache_ttl + self.options.stale_grace {
                return match self.refresh(generation).await {
                    Ok(Some(fresh)) => Ok(Keys(fresh)),
                    // Rate limited or the key server is down: the last set is still trusted.
                    Ok(None) | Err(_) => Ok(Keys(snap)),
                };
            }
        }
        match self.refresh(generation).await {
            Ok(Some(fresh)) => Ok(Keys(fresh)),
            Ok(None) => Err("no current signing keys (key server recently failed)".into()),
            Err(e) => Err(format!("no current signing keys: {e}")),
        }
    }

    /// Fetches the set unless another task already replaced snapshot `seen_generation`, or the
    /// last attempt was less than `min_refetch_interval` ago (then `Ok(None)`).
    async fn refresh(&self, seen_generation: u64) -> Result<Option<Arc<Snapshot>>, JwksError> {
        let mut state = self.fetch.lock().await;
        if let Some(current) = self.snapshot()
            && current.generation != seen_generation
        {
            return Ok(Some(current));
        }
        if state
            .last_attempt
            .is_some_and(|t| t.elapsed() < self.options.min_refetch_interval)
        {
            return Ok(None);
        }
        state.last_attempt = Some(Instant::now());
        match self.fetch_set().await {
            Ok(keys) => {
                let snap = Arc::new(Snapshot {
                    keys,
                    fetched_at: Instant::now(),
                    generation: seen_generation + 1,
                });
                *self.current.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::clone(&snap));
                tracing::debug!(url = %self.url, keys = snap.keys.len(), "JWKS refreshed");
                Ok(Some(snap))
            }
            Err(e) => {
                tracing::warn!(url = %self.url, error = %e, "JWKS refresh failed");
                Err(e)
            }
        }
    }

    /// Fetches now, ignoring the rate limit: for warming the cache at startup.
    pub(crate) async fn prefetch(&self) -> Result<(), JwksError> {
        let mut state = self.fetch.lock().await;
        state.last_attempt = Some(Instant::now());
        let keys = self.fetch_set().await?;
        let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
        let generation = current.as_ref().map_or(0, |s| s.generation) + 1;
        *current = Some(Arc::new(Snapshot {
            keys,
            fetched_at: Instant::now(),
            generation,
        }));
        Ok(())
    }

    async fn fetch_set(&self) -> Result<KeySet, JwksError> {
        let max = self.options.max_body_bytes;
        let mut response = self
            .client
            .get(self.url.clone())
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| JwksError::Fetch(e.without_url().to_string()))?;
        let status = response.status();
        if !status.is_success() {
            return Err(JwksError::Fetch(format!("HTTP status {status}")));
        }
        if response
            .content_length()
            .is_some_and(|len| len > max as u64)
        {
            return Err(JwksError::Fetch(format!(
                "response larger than {max} bytes"
            )));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| JwksError::Fetch(e.without_url().to_string()))?
        {
            if body.len() + chunk.len() > max {
                return Err(JwksError::Fetch(format!(
                    "response larger than {max} bytes"
                )));
            }
            body.extend_from_slice(&chunk);
        }
        KeySet::from_jwks_json(&body).map_err(|e| JwksError::Fetch(e.to_string()))
    }
}
