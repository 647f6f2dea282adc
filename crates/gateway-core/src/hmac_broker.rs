//! Short-lived HMAC-SHA256 capability tokens: an embedded [`AccessBroker`] for targets that can
//! verify a token with a shared key.
//!
//! Token: `agt1.<base64url(claims JSON)>.<base64url(HMAC-SHA256(key, "agt1." ‖ claims part))>`.
//! The target side calls [`HmacBroker::verify`] (or [`TokenVerifier::verify`] with only the key)
//! with the scope it is about to exercise. Expired tokens fail even if never revoked; revoked
//! tokens fail on the verifier that shares the broker's revocation set.
//!
//! With more than one gateway replica (or verifiers in other processes), share revocations
//! through the state store: give the broker and every verifier the store's
//! [`RevocationList`] ([`HmacBroker::with_shared_revocations`],
//! [`TokenVerifier::with_shared_revocations`]) and verify with
//! [`TokenVerifier::verify_async`]. A revocation then reaches every verifier within the cache
//! age ([`DEFAULT_REVOCATION_CACHE`]), and a verifier that cannot consult the list refuses
//! ([`TokenError::RevocationUnknown`]).

use crate::expiring::ExpiringSet;
use crate::grant::{AccessBroker, BrokerError, Grant, GrantRequest};
use crate::ids::{AgentId, RequestId};
use crate::secret::Secret;
#[cfg(doc)]
use crate::state::DEFAULT_REVOCATION_CACHE;
use crate::state::{CachedRevocations, RevocationList};
use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use time::OffsetDateTime;

/// The environment variable a job finds its token in.
pub const TOKEN_ENV: &str = "GATEWAY_GRANT_TOKEN";
const PREFIX: &str = "agt1.";
/// Tokens longer than this are rejected before any parsing.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;

/// The signed content of a token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenClaims {
    /// Grant id.
    pub gid: String,
    /// Agent id.
    pub agent: AgentId,
    /// Correlation id.
    pub cid: RequestId,
    /// Granted scopes.
    pub scopes: Vec<String>,
    /// Issued at (Unix seconds).
    pub iat: i64,
    /// Not after (Unix seconds).
    pub exp: i64,
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// Not a token of this format (or larger than [`MAX_TOKEN_LEN`]).
    #[error("malformed token")]
    Malformed,
    /// The signature does not match (tampered, or another key).
    #[error("bad token signature")]
    BadSignature,
    /// Past its `exp`.
    #[error("token expired")]
    Expired,
    /// Revoked before its expiry.
    #[error("token revoked")]
    Revoked,
    /// The token does not carry the scope asked about.
    #[error("scope {0:?} not granted")]
    ScopeNotGranted(String),
    /// The shared revocation list could not be consulted (or, for the synchronous
    /// [`TokenVerifier::verify`], holds no fresh answer): the token is refused, as a revoked
    /// one would be (fail closed).
    #[error("the revocation list could not be consulted; token refused")]
    RevocationUnknown,
}

/// Verifies tokens with the shared key (the target side).
#[derive(Clone)]
pub struct TokenVerifier {
    key: Secret,
    /// Revoked grant ids, each until its token's `exp` (Unix seconds).
    revoked: Arc<Mutex<ExpiringSet>>,
    /// The revocation list shared with other processes, if any.
    shared: Option<CachedRevocations>,
}

impl TokenVerifier {
    /// A verifier with its own (empty) revocation set.
    pub fn new(key: Secret) -> Self {
        Self {
            key,
            revoked: Arc::default(),
            shared: None,
        }
    }

    /// Also consults `list`, shared with the broker and every other verifier, through a
    /// cache whose "not revoked" answers are at most `max_age` old. Verify with
    /// [`verify_async`](Self::verify_async).
    pub fn with_shared_revocations(
        mut self,
        list: Arc<dyn RevocationList>,
        max_age: std::time::Duration,
    ) -> Self {
        self.shared = Some(CachedRevocations::new(list, max_age));
        self
    }

    /// [`verify`](Self::verify), consulting the shared revocation list when there is one
    /// (from the cache when its answer is fresh): [`TokenError::RevocationUnknown`] when the
    /// list cannot be reached.
    pub async fn verify_async(
        &self,
        token: &str,
        scope: &str,
        now: OffsetDateTime,
    ) -> Result<TokenClaims, TokenError> {
        let claims = self.verify_locally(token, scope, now)?;
        if let Some(shared) = &self.shared {
            match shared.is_revoked(&claims.gid, now).await {
                Ok(false) => {}
                Ok(true) => return Err(TokenError::Revoked),
                Err(e) => {
                    tracing::warn!(error = %e, "the shared revocation list could not be consulted; token refused");
                    return Err(TokenError::RevocationUnknown);
                }
            }
        }
        Ok(claims)
    }

    fn mac(&self) -> Hmac<Sha256> {
        // HMAC accepts keys of any length, so this cannot fail.
        #[allow(clippy::expect_used)]
        <Hmac<Sha256> as Mac>::new_from_slice(self.key.expose()).expect("HMAC takes any key length")
    }

    /// Checks signature, expiry, revocation and that `scope` was granted, at time `now`.
    ///
    /// With a shared revocation list this only has the cache to go by: a token whose grant has
    /// no fresh cached answer is refused ([`TokenError::RevocationUnknown`]). Use
    /// [`verify_async`](Self::verify_async) there.
    pub fn verify(
        &self,
        token: &str,
        scope: &str,
        now: OffsetDateTime,
    ) -> Result<TokenClaims, TokenError> {
        let claims = self.verify_locally(token, scope, now)?;
        match self.shared.as_ref().map(|s| s.cached(&claims.gid)) {
            None | Some(Some(false)) => Ok(claims),
            Some(Some(true)) => Err(TokenError::Revoked),
            Some(None) => Err(TokenError::RevocationUnknown),
        }
    }

    /// Signature, expiry, this process's revocations and scope.
    fn verify_locally(
        &self,
        token: &str,
        scope: &str,
        now: OffsetDateTime,
    ) -> Result<TokenClaims, TokenError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::Malformed);
        }
        let rest = token.strip_prefix(PREFIX).ok_or(TokenError::Malformed)?;
        let (claims_b64, sig_b64) = rest.split_once('.').ok_or(TokenError::Malformed)?;
        let sig = URL_SAFE_NO_PAD
            .decode(sig_b64)
            .map_err(|_| TokenError::Malformed)?;
        let mut mac = self.mac();
        mac.update(PREFIX.as_bytes());
        mac.update(claims_b64.as_bytes());
        // Constant-time comparison.
        mac.verify_slice(&sig)
            .map_err(|_| TokenError::BadSignature)?;
        let claims_json = URL_SAFE_NO_PAD
            .decode(claims_b64)
            .map_err(|_| TokenError::Malformed)?;
        let claims: TokenClaims =
            serde_json::from_slice(&claims_json).map_err(|_| TokenError::Malformed)?;
        if now.unix_timestamp() >= claims.exp {
            return Err(TokenError::Expired);
        }
        if self
            .revoked
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(&claims.gid, now.unix_timestamp())
        {
            return Err(TokenError::Revoked);
        }
        if !claims.scopes.iter().any(|s| s == scope) {
            return Err(TokenError::ScopeNotGranted(scope.to_owned()));
        }
        Ok(claims)
    }

    fn sign(&self, claims: &TokenClaims) -> Result<String, BrokerError> {
        let json =
            serde_json::to_vec(claims).map_err(|e| BrokerError::internal("encoding claims", e))?;
        let claims_b64 = URL_SAFE_NO_PAD.encode(json);
        let mut mac = self.mac();
        mac.update(PREFIX.as_bytes());
        mac.update(claims_b64.as_bytes());
        let sig = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        Ok(format!("{PREFIX}{claims_b64}.{sig}"))
    }

    fn revoke(&self, gid: &str, exp: i64, now: i64) {
        let mut revoked = self.revoked.lock().unwrap_or_else(PoisonError::into_inner);
        // Expired tokens fail on their own; forget them so the set stays small.
        revoked.purge(now);
        revoked.insert(gid, exp, now);
        if let Some(shared) = &self.shared {
            shared.remember_revoked(gid);
        }
    }
}

/// Issues HMAC capability tokens as grants: the embedded default broker, for targets that run a
/// [`TokenVerifier`] sharing the broker's key.
///
/// ```
/// use gateway_core::grant::{AccessBroker, GrantRequest};
/// use gateway_core::hmac_broker::{HmacBroker, TOKEN_ENV};
/// use gateway_core::ids::{AgentId, RequestId};
/// use std::time::Duration;
/// use time::OffsetDateTime;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let broker = HmacBroker::generate();
/// let grant = broker
///     .grant(&GrantRequest {
///         correlation_id: RequestId::new(),
///         agent: AgentId::new("agent:reporter")?,
///         action: "db.query".into(),
///         resource: "db:reports".into(),
///         scopes: vec!["db:reports:read".into()],
///         ttl: Duration::from_secs(60),
///     })
///     .await?;
/// // The job receives the token as a secret environment variable; the target verifies it.
/// let token = grant.job_env[TOKEN_ENV].expose_str().expect("tokens are text");
/// let now = OffsetDateTime::now_utc();
/// assert!(broker.verify(token, "db:reports:read", now).is_ok());
/// assert!(broker.verify(token, "db:reports:write", now).is_err());
/// broker.revoke(&grant).await?;
/// assert!(broker.verify(token, "db:reports:read", now).is_err());
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct HmacBroker {
    verifier: TokenVerifier,
    /// Revocations since the shared list was last pruned.
    revocations: Arc<std::sync::atomic::AtomicU64>,
}

/// How many revocations pass between prunes of the shared list's past entries.
const PRUNE_SHARED_EVERY: u64 = 1024;

impl HmacBroker {
    /// A broker with the given key; keys shorter than 32 bytes are refused.
    pub fn new(key: Secret) -> Result<Self, BrokerError> {
        if key.len() < 32 {
            return Err(BrokerError::invalid_input(
                "HMAC key must be at least 32 bytes",
            ));
        }
        Ok(Self {
            verifier: TokenVerifier::new(key),
            revocations: Arc::default(),
        })
    }

    /// A broker with a fresh random 32-byte key (tokens die with the process).
    pub fn generate() -> Self {
        let mut key = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut key);
        Self {
            verifier: TokenVerifier::new(Secret::new(key.to_vec())),
            revocations: Arc::default(),
        }
    }

    /// Records every revocation in `list` too, shared with verifiers in other processes (and
    /// with other replicas' brokers, so a grant a recovery sweep revokes fails everywhere); this
    /// broker's own [`verifier`](Self::verifier) consults it (cache age `max_age`). A
    /// revocation that cannot be stored there fails (the pipeline records it).
    pub fn with_shared_revocations(
        mut self,
        list: Arc<dyn RevocationList>,
        max_age: std::time::Duration,
    ) -> Self {
        self.verifier = self.verifier.with_shared_revocations(list, max_age);
        self
    }

    /// A verifier sharing this broker's key and revocation set.
    pub fn verifier(&self) -> TokenVerifier {
        self.verifier.clone()
    }

    /// Verifies a token (see [`TokenVerifier::verify`]).
    pub fn verify(
        &self,
        token: &str,
        scope: &str,
        now: OffsetDateTime,
    ) -> Result<TokenClaims, TokenError> {
        self.verifier.verify(token, scope, now)
    }
}

#[async_trait]
impl AccessBroker for HmacBroker {
    async fn grant(&self, request: &GrantRequest) -> Result<Grant, BrokerError> {
        if request.ttl.is_zero() {
            return Err(BrokerError::invalid_input(
                "grant TTL must be at least one second",
            ));
        }
        let now = OffsetDateTime::now_utc();
        // Whole seconds, rounded down, so the token never outlives the requested TTL.
        let issued = now.replace_nanosecond(0).unwrap_or(now);
        let ttl = i64::try_from(request.ttl.as_secs()).unwrap_or(i64::MAX / 2);
        let not_after = issued + time::Duration::seconds(ttl);
        let mut gid = [0u8; 16];
        rand::rngs::OsRng.fill_bytes(&mut gid);
        let claims = TokenClaims {
            gid: format!("hmac-{}", hex::encode(gid)),
            agent: request.agent.clone(),
            cid: request.correlation_id,
            scopes: request.scopes.clone(),
            iat: issued.unix_timestamp(),
            exp: not_after.unix_timestamp(),
        };
        let token = self.verifier.sign(&claims)?;
        let mut job_env = BTreeMap::new();
        job_env.insert(TOKEN_ENV.to_owned(), Secret::from(token));
        Ok(Grant {
            id: claims.gid,
            correlation_id: request.correlation_id,
            agent: request.agent.clone(),
            scopes: request.scopes.clone(),
            issued_at: issued,
            not_after,
            hints: BTreeMap::new(),
            job_env,
            job_vars: BTreeMap::new(),
            job_mounts: Vec::new(),
        })
    }

    async fn revoke(&self, grant: &Grant) -> Result<(), BrokerError> {
        let now = OffsetDateTime::now_utc().unix_timestamp();
        self.verifier
            .revoke(&grant.id, grant.not_after.unix_timestamp(), now);
        if let Some(shared) = &self.verifier.shared {
            let list = shared.list();
            list.revoke(&grant.id, grant.not_after).await.map_err(|e| {
                BrokerError::unavailable("storing the revocation in the shared list", e)
            })?;
            // Entries past their grant's expiry only take room: prune them now and then.
            let n = self
                .revocations
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if n % PRUNE_SHARED_EVERY == PRUNE_SHARED_EVERY - 1 {
                let now = OffsetDateTime::now_utc();
                if let Err(e) = list.prune_revocations(now).await {
                    tracing::warn!(error = %e, "pruning the shared revocation list failed");
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn request(scopes: &[&str], ttl: u64) -> GrantRequest {
        GrantRequest {
            correlation_id: RequestId::new(),
            agent: AgentId::new("agent:a").unwrap(),
            action: "x".into(),
            resource: "y".into(),
            scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
            ttl: Duration::from_secs(ttl),
        }
    }

    fn token(grant: &Grant) -> String {
        grant.job_env[TOKEN_ENV].expose_str().unwrap().to_owned()
    }

    #[tokio::test]
    async fn valid_token_verifies_for_its_scopes_only() {
        let broker = HmacBroker::generate();
        let grant = broker.grant(&request(&["db:x:select"], 60)).await.unwrap();
        let now = OffsetDateTime::now_utc();
        let claims = broker.verify(&token(&grant), "db:x:select", now).unwrap();
        assert_eq!(claims.gid, grant.id);
        assert_eq!(claims.agent.as_str(), "agent:a");
        assert_eq!(
            broker.verify(&token(&grant), "db:x:drop", now),
            Err(TokenError::ScopeNotGranted("db:x:drop".into()))
        );
    }

    #[tokio::test]
    async fn tampered_scope_is_rejected() {
        let broker = HmacBroker::generate();
        let grant = broker.grant(&request(&["db:x:select"], 60)).await.unwrap();
        let t = token(&grant);
        let (_, rest) = t.split_at(PREFIX.len());
        let (claims_b64, sig) = rest.split_once('.').unwrap();
        let mut claims: TokenClaims =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(claims_b64).unwrap()).unwrap();
        claims.scopes.push("db:x:drop".into());
        let forged = format!(
            "{PREFIX}{}.{sig}",
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap())
        );
        assert_eq!(
            broker.verify(&forged, "db:x:drop", OffsetDateTime::now_utc()),
            Err(TokenError::BadSignature)
        );
    }

    #[tokio::test]
    async fn expired_token_fails_even_if_never_revoked() {
        let broker = HmacBroker::generate();
        let grant = broker.grant(&request(&["s"], 5)).await.unwrap();
        let later = OffsetDateTime::now_utc() + time::Duration::seconds(6);
        assert_eq!(
            broker.verify(&token(&grant), "s", later),
            Err(TokenError::Expired)
        );
        assert!(grant.not_after <= OffsetDateTime::now_utc() + time::Duration::seconds(5));
    }

    #[tokio::test]
    async fn revoked_token_fails_on_a_shared_verifier() {
        let broker = HmacBroker::generate();
        let verifier = broker.verifier();
        let grant = broker.grant(&request(&["s"], 60)).await.unwrap();
        let now = OffsetDateTime::now_utc();
        assert!(verifier.verify(&token(&grant), "s", now).is_ok());
        broker.revoke(&grant).await.unwrap();
        assert_eq!(
            verifier.verify(&token(&grant), "s", now),
            Err(TokenError::Revoked)
        );
        broker.revoke(&grant).await.unwrap();
    }

    #[tokio::test]
    async fn wrong_key_and_truncated_and_garbage_are_rejected() {
        let broker = HmacBroker::generate();
        let other = HmacBroker::generate();
        let grant = broker.grant(&request(&["s"], 60)).await.unwrap();
        let t = token(&grant);
        let now = OffsetDateTime::now_utc();
        assert_eq!(other.verify(&t, "s", now), Err(TokenError::BadSignature));
        for cut in [1, 5, t.len() / 2, t.len() - 1] {
            assert!(
                broker.verify(&t[..cut], "s", now).is_err(),
                "truncated at {cut}"
            );
        }
        for garbage in ["", "agt1.", "agt1..", "agt1.a.b", "x.y.z", "agt1.!!!.###"] {
            assert!(broker.verify(garbage, "s", now).is_err(), "{garbage:?}");
        }
        assert_eq!(
            broker.verify(&"a".repeat(MAX_TOKEN_LEN + 1), "s", now),
            Err(TokenError::Malformed)
        );
        assert!(HmacBroker::new(Secret::from("short")).is_err());
    }

    #[tokio::test]
    async fn zero_ttl_is_refused() {
        let broker = HmacBroker::generate();
        assert!(broker.grant(&request(&["s"], 0)).await.is_err());
    }

    /// Two replicas' brokers and a target's verifier, each with the same key, sharing one
    /// revocation list (what the state store gives them).
    mod shared {
        use super::*;
        use crate::state::{MemoryStateStore, RevocationList, StateError};
        use std::time::Duration;

        const KEY: [u8; 32] = [7; 32];

        fn broker(list: &Arc<dyn RevocationList>) -> HmacBroker {
            HmacBroker::new(Secret::new(KEY.to_vec()))
                .unwrap()
                .with_shared_revocations(Arc::clone(list), Duration::ZERO)
        }

        fn verifier(list: &Arc<dyn RevocationList>, max_age: Duration) -> TokenVerifier {
            TokenVerifier::new(Secret::new(KEY.to_vec()))
                .with_shared_revocations(Arc::clone(list), max_age)
        }

        #[tokio::test]
        async fn a_grant_revoked_on_one_replica_fails_on_every_verifier() {
            let list: Arc<dyn RevocationList> = Arc::new(MemoryStateStore::new());
            let (a, b) = (broker(&list), broker(&list));
            let target = verifier(&list, Duration::ZERO);
            let grant = a.grant(&request(&["s"], 60)).await.unwrap();
            let t = token(&grant);
            let now = OffsetDateTime::now_utc();
            assert!(target.verify_async(&t, "s", now).await.is_ok());
            // Replica B revokes what A issued (a recovery sweep after A stopped).
            b.revoke(&grant).await.unwrap();
            assert_eq!(
                target.verify_async(&t, "s", now).await,
                Err(TokenError::Revoked)
            );
            assert_eq!(
                a.verifier().verify_async(&t, "s", now).await,
                Err(TokenError::Revoked),
                "the issuing replica's own verifier must see it too"
            );
        }

        #[tokio::test]
        async fn a_cached_answer_bounds_how_late_a_revocation_is_seen() {
            let list: Arc<dyn RevocationList> = Arc::new(MemoryStateStore::new());
            let issuer = broker(&list);
            let target = verifier(&list, Duration::from_millis(200));
            let grant = issuer.grant(&request(&["s"], 60)).await.unwrap();
            let t = token(&grant);
            let now = OffsetDateTime::now_utc();
            assert!(target.verify_async(&t, "s", now).await.is_ok());
            // The synchronous check goes by the fresh cached answer.
            assert!(target.verify(&t, "s", now).is_ok());
            list.revoke(&grant.id, grant.not_after).await.unwrap();
            tokio::time::sleep(Duration::from_millis(250)).await;
            assert_eq!(
                target.verify_async(&t, "s", now).await,
                Err(TokenError::Revoked),
                "a revocation was not seen after the cache age"
            );
        }

        /// A list that cannot be reached.
        struct Unreachable;

        #[async_trait]
        impl RevocationList for Unreachable {
            async fn revoke(&self, _: &str, _: OffsetDateTime) -> Result<(), StateError> {
                Err(StateError::unavailable_msg("the state store is down"))
            }
            async fn is_revoked(&self, _: &str, _: OffsetDateTime) -> Result<bool, StateError> {
                Err(StateError::unavailable_msg("the state store is down"))
            }
            async fn prune_revocations(&self, _: OffsetDateTime) -> Result<u64, StateError> {
                Err(StateError::unavailable_msg("the state store is down"))
            }
        }

        #[tokio::test]
        async fn an_unreachable_list_refuses_tokens_and_fails_revocations() {
            let list: Arc<dyn RevocationList> = Arc::new(Unreachable);
            let issuer = broker(&list);
            let grant = issuer.grant(&request(&["s"], 60)).await.unwrap();
            let t = token(&grant);
            let now = OffsetDateTime::now_utc();
            let target = verifier(&list, Duration::from_secs(1));
            assert_eq!(
                target.verify_async(&t, "s", now).await,
                Err(TokenError::RevocationUnknown)
            );
            assert_eq!(
                target.verify(&t, "s", now),
                Err(TokenError::RevocationUnknown),
                "the synchronous check had no answer to go by"
            );
            let failed = issuer.revoke(&grant).await.unwrap_err();
            assert_eq!(failed.kind(), crate::ErrorKind::Unavailable);
            // The issuing process itself still refuses the token at once.
            assert_eq!(issuer.verify(&t, "s", now), Err(TokenError::Revoked));
        }
    }
}
