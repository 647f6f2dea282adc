//! MCP authorization as an OAuth 2.1 protected resource (the MCP authorization specification,
//! 2025-06-18 and later): agents get access tokens from an authorization server and present
//! them here as bearer tokens.
//!
//! With an [`OAuthResource`] in [`ServerConfig::oauth`](crate::ServerConfig::oauth):
//!
//! - `GET /.well-known/oauth-protected-resource` and, for a resource URI with a path (e.g.
//!   `https://gw.example.com/mcp`), `GET /.well-known/oauth-protected-resource/mcp` (RFC 9728
//!   section 3.1) serve the protected resource metadata: `resource`, `authorization_servers`,
//!   `bearer_methods_supported: ["header"]`, `scopes_supported` and, when configured,
//!   `resource_name` and `resource_documentation`. Unauthenticated, any origin may read it.
//!   Without the configuration these paths are 404.
//! - Every 401 of an agent endpoint (REST and `/mcp`) carries
//!   `WWW-Authenticate: Bearer realm="agent-gateway", resource_metadata="<metadata URL>"`,
//!   plus `scope="…"` (the required scopes) and, when a credential was presented and refused,
//!   `error="invalid_token"` (`error="invalid_request"` for an `Authorization` header that is
//!   not a bearer credential), RFC 6750 section 3 and RFC 9728 section 5.1. The approval
//!   endpoints are for people with approver tokens, not OAuth clients: their 401s keep the
//!   plain challenge.
//! - Access tokens are JWTs checked by a [`JwtIdentity`] that
//!   [`OAuthResource::access_token_identity`] builds: its only audience is the resource URI
//!   (RFC 8707: a token the authorization server minted for another resource is refused with
//!   401 `invalid_token`), its issuer one of the authorization servers, and the granted scopes
//!   become the agent's `scopes` attribute, which policies read as
//!   `input.agent.attributes.scopes`.
//! - An access token (a JWT from one of the authorization servers) that lacks a required scope
//!   gets 403 with `WWW-Authenticate: Bearer error="insufficient_scope", scope="…"` (RFC 6750
//!   section 3.1) before anything runs. Other credentials (static API keys, workload JWTs of
//!   other issuers, in an [`IdentityChain`](gateway_core::IdentityChain) with the access-token
//!   identity) are not OAuth grants and are not scope-checked.

use axum::http::HeaderValue;
use gateway_core::{AgentIdentity, AuthMethod};
use gateway_identity::{AudienceRule, JwtIdentity, JwtIdentityBuilder, SCOPES_ATTRIBUTE};
use serde_json::{Value, json};

mod routes;

pub(crate) use routes::{challenge, router};

/// The well-known path of protected resource metadata (RFC 9728 section 3).
pub const METADATA_PATH: &str = "/.well-known/oauth-protected-resource";

/// Why an [`OAuthResource`] or its access-token identity was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OAuthConfigError {
    /// A URL setting is not usable.
    #[error("invalid {setting} {value:?}: {reason}")]
    InvalidUrl {
        /// Which setting.
        setting: &'static str,
        /// The value (at most 200 characters of it).
        value: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// No authorization server is configured.
    #[error("at least one authorization server is required")]
    NoAuthorizationServer,
    /// A scope is not an RFC 6749 scope token.
    #[error(
        "invalid scope {0:?}: a scope is one or more printable ASCII characters other than \
         space, '\"' and '\\'"
    )]
    InvalidScope(String),
    /// A resource name that cannot be served.
    #[error("invalid resource_name: empty, longer than 200 bytes, or holding control characters")]
    InvalidName,
    /// The access-token identity accepts other audiences than this server's resource URI.
    #[error(
        "the access-token identity accepts audiences {audiences:?}, but OAuth access tokens for \
         this server must be bound to its resource URI {resource:?} and nothing else (RFC 8707): \
         configure exactly that audience"
    )]
    AudienceMismatch {
        /// The identity's audiences.
        audiences: Vec<String>,
        /// The configured resource URI.
        resource: String,
    },
    /// The access-token identity accepts tokens that name other audiences too.
    #[error(
        "the access-token identity must use AudienceRule::Single: a token also addressed to \
         other resources could be replayed here"
    )]
    AudienceRule,
    /// The access-token identity trusts an issuer the metadata does not list.
    #[error(
        "the access-token identity's issuer {issuer:?} is not one of the authorization servers \
         {authorization_servers:?}"
    )]
    IssuerNotListed {
        /// The identity's issuer.
        issuer: String,
        /// The configured authorization servers.
        authorization_servers: Vec<String>,
    },
    /// The access-token identity does not map scopes.
    #[error(
        "the access-token identity must copy the token's scopes into the {SCOPES_ATTRIBUTE:?} \
         attribute (JwtIdentityBuilder::scope_attribute)"
    )]
    NoScopeAttribute,
    /// The access-token identity accepts each token once.
    #[error(
        "the access-token identity must not be single-use: an OAuth client presents the same \
         access token on every request"
    )]
    SingleUse,
    /// The access-token identity could not be built.
    #[error("access-token identity: {0}")]
    Identity(String),
}

/// A parsed `https://host[:port][/path]` (or `http://` to a loopback host).
struct Url {
    origin: String,
    path: String,
}

fn truncated(value: &str) -> String {
    value.chars().take(200).collect()
}

fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host == "[::1]"
        || host
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Checks an absolute URL as the metadata and the `WWW-Authenticate` header carry it: `https`
/// (or `http` to loopback, for development), in canonical form (lower-case scheme and host, no
/// default port: clients compare resource URIs as strings), no user info, query or fragment,
/// and nothing a quoted header value cannot hold.
fn parse_url(setting: &'static str, value: &str) -> Result<Url, OAuthConfigError> {
    let fail = |reason| OAuthConfigError::InvalidUrl {
        setting,
        value: truncated(value),
        reason,
    };
    if value.len() > 2048 {
        return Err(fail("longer than 2048 bytes"));
    }
    if !value
        .bytes()
        .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
    {
        return Err(fail("only printable ASCII without spaces, '\"' or '\\'"));
    }
    let (scheme, rest) = value
        .split_once("://")
        .ok_or_else(|| fail("not an absolute URL"))?;
    if value.contains(['?', '#']) {
        return Err(fail("a query or fragment is not allowed"));
    }
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    if authority.is_empty() || authority.contains('@') {
        return Err(fail("the host is empty or carries user info"));
    }
    if authority != authority.to_ascii_lowercase() || scheme != "https" && scheme != "http" {
        return Err(fail(
            "write it in canonical form: scheme https (or http), lower-case host",
        ));
    }
    let (host, port) = if authority.starts_with('[') {
        let close = authority
            .find(']')
            .ok_or_else(|| fail("invalid IPv6 literal"))?;
        let (host, after) = authority.split_at(close + 1);
        match after {
            "" => (host, None),
            _ => (
                host,
                Some(
                    after
                        .strip_prefix(':')
                        .ok_or_else(|| fail("invalid port"))?,
                ),
            ),
        }
    } else {
        match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    if host.is_empty() || host == "[]" {
        return Err(fail("the host is empty"));
    }
    if port.is_some_and(|p| p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit())) {
        return Err(fail("invalid port"));
    }
    match (scheme, port) {
        ("https", Some("443")) | ("http", Some("80")) => {
            return Err(fail("leave out the scheme's default port (canonical form)"));
        }
        ("http", _) if !is_loopback(host) => {
            return Err(fail("http is only allowed to a loopback host; use https"));
        }
        _ => {}
    }
    let path = if path == "/" { "" } else { path };
    Ok(Url {
        origin: format!("{scheme}://{authority}"),
        path: path.to_owned(),
    })
}

fn valid_scope(scope: &str) -> bool {
    // RFC 6749 section 3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E ).
    !scope.is_empty()
        && scope.len() <= 256
        && scope
            .bytes()
            .all(|b| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b))
}

fn scope_list(
    scopes: impl IntoIterator<Item = impl Into<String>>,
) -> Result<Vec<String>, OAuthConfigError> {
    let mut list: Vec<String> = Vec::new();
    for scope in scopes {
        let scope = scope.into();
        if !valid_scope(&scope) {
            return Err(OAuthConfigError::InvalidScope(truncated(&scope)));
        }
        if !list.contains(&scope) {
            list.push(scope);
        }
    }
    Ok(list)
}

/// This server as an OAuth protected resource: its resource URI, the authorization servers
/// that issue its access tokens, and the scopes. Every value is checked when set, so a built
/// one always serves valid metadata and headers.
///
/// ```
/// use gateway_identity::JwtIdentity;
/// use gateway_server::oauth::OAuthResource;
///
/// let oauth = OAuthResource::new("https://gw.example.com/mcp", ["https://auth.example.com"])?
///     .with_scopes_supported(["gateway:actions", "gateway:read"])?
///     .with_required_scopes(["gateway:actions"])?;
/// assert_eq!(
///     oauth.metadata_url(),
///     "https://gw.example.com/.well-known/oauth-protected-resource/mcp"
/// );
/// // The access-token identity: audience = the resource URI, scopes mapped. (An `https` JWKS
/// // URL needs gateway-identity's `tls` feature, the facade's `jwt-tls`; loopback does not.)
/// let identity = oauth
///     .access_token_identity(
///         JwtIdentity::builder()
///             .issuer("https://auth.example.com")
///             .jwks_url("http://127.0.0.1:8400/jwks")
///             .default_owner("platform-team"),
///     )?;
/// assert_eq!(identity.audiences(), ["https://gw.example.com/mcp"]);
/// // A token audience for anything else is a configuration error, not a silent widening.
/// let err = oauth
///     .access_token_identity(
///         JwtIdentity::builder()
///             .issuer("https://auth.example.com")
///             .audience("agent-gateway")
///             .jwks_url("http://127.0.0.1:8400/jwks")
///             .default_owner("platform-team"),
///     )
///     .unwrap_err();
/// assert!(err.to_string().contains("RFC 8707"), "{err}");
/// # Ok::<(), gateway_server::oauth::OAuthConfigError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthResource {
    resource: String,
    origin: String,
    path: String,
    authorization_servers: Vec<String>,
    scopes_supported: Vec<String>,
    required_scopes: Vec<String>,
    resource_name: Option<String>,
    resource_documentation: Option<String>,
}

impl OAuthResource {
    /// `resource` is this server's canonical resource URI, the URL clients connect to (for MCP,
    /// the endpoint's, e.g. `https://gw.example.com/mcp`); `authorization_servers` are the
    /// issuer identifiers (RFC 8414) of the servers that issue access tokens for it.
    pub fn new(
        resource: impl Into<String>,
        authorization_servers: impl IntoIterator<Item = impl Into<String>>,
    ) -> Result<Self, OAuthConfigError> {
        let resource = resource.into();
        let url = parse_url("resource", &resource)?;
        let mut servers: Vec<String> = Vec::new();
        for server in authorization_servers {
            let server = server.into();
            parse_url("authorization server", &server)?;
            if !servers.contains(&server) {
                servers.push(server);
            }
        }
        if servers.is_empty() {
            return Err(OAuthConfigError::NoAuthorizationServer);
        }
        Ok(Self {
            resource,
            origin: url.origin,
            path: url.path,
            authorization_servers: servers,
            scopes_supported: Vec::new(),
            required_scopes: Vec::new(),
            resource_name: None,
            resource_documentation: None,
        })
    }

    /// The scopes advertised in the metadata (`scopes_supported`; the required scopes are
    /// always added). Clients without a `scope` hint in the challenge request these.
    pub fn with_scopes_supported(
        mut self,
        scopes: impl IntoIterator<Item = impl Into<String>>,
    ) -> Result<Self, OAuthConfigError> {
        self.scopes_supported = scope_list(scopes)?;
        Ok(self)
    }

    /// The scopes every access token must grant (all of them); one without gets 403
    /// `insufficient_scope`. None by default.
    pub fn with_required_scopes(
        mut self,
        scopes: impl IntoIterator<Item = impl Into<String>>,
    ) -> Result<Self, OAuthConfigError> {
        self.required_scopes = scope_list(scopes)?;
        Ok(self)
    }

    /// A human-readable name of the resource (`resource_name`).
    pub fn with_resource_name(mut self, name: impl Into<String>) -> Result<Self, OAuthConfigError> {
        let name = name.into();
        if name.is_empty() || name.len() > 200 || name.chars().any(char::is_control) {
            return Err(OAuthConfigError::InvalidName);
        }
        self.resource_name = Some(name);
        Ok(self)
    }

    /// A page of documentation for developers (`resource_documentation`).
    pub fn with_resource_documentation(
        mut self,
        url: impl Into<String>,
    ) -> Result<Self, OAuthConfigError> {
        let url = url.into();
        parse_url("resource_documentation", &url)?;
        self.resource_documentation = Some(url);
        Ok(self)
    }

    /// The resource URI.
    pub fn resource(&self) -> &str {
        &self.resource
    }

    /// The authorization servers' issuer identifiers.
    pub fn authorization_servers(&self) -> &[String] {
        &self.authorization_servers
    }

    /// The required scopes.
    pub fn required_scopes(&self) -> &[String] {
        &self.required_scopes
    }

    /// Where the metadata is, as `resource_metadata` in challenges names it: the well-known
    /// path inserted between the resource URI's host and path (RFC 9728 section 3.1).
    pub fn metadata_url(&self) -> String {
        format!("{}{METADATA_PATH}{}", self.origin, self.path)
    }

    /// The paths the metadata is served at: the well-known path, and the path-suffixed form
    /// when the resource URI has a path.
    pub fn metadata_paths(&self) -> Vec<String> {
        let mut paths = vec![METADATA_PATH.to_owned()];
        if !self.path.is_empty() {
            paths.push(format!("{METADATA_PATH}{}", self.path));
        }
        paths
    }

    /// The protected resource metadata document (RFC 9728 section 2).
    pub fn metadata(&self) -> Value {
        let mut scopes = self.scopes_supported.clone();
        for scope in &self.required_scopes {
            if !scopes.contains(scope) {
                scopes.push(scope.clone());
            }
        }
        let mut doc = json!({
            "resource": self.resource,
            "authorization_servers": self.authorization_servers,
            "bearer_methods_supported": ["header"],
        });
        if !scopes.is_empty() {
            doc["scopes_supported"] = json!(scopes);
        }
        if let Some(name) = &self.resource_name {
            doc["resource_name"] = json!(name);
        }
        if let Some(url) = &self.resource_documentation {
            doc["resource_documentation"] = json!(url);
        }
        doc
    }

    /// Builds the access-token identity from `builder` (issuer, key source, owner, …): its
    /// audience is set to the resource URI when the builder names none, its scopes are copied
    /// into [`SCOPES_ATTRIBUTE`], and the result must pass [`check_identity`](Self::check_identity).
    /// Chain it with other backends (e.g. `StaticKeys`) in an
    /// [`IdentityChain`](gateway_core::IdentityChain), in either order.
    pub fn access_token_identity(
        &self,
        builder: JwtIdentityBuilder,
    ) -> Result<JwtIdentity, OAuthConfigError> {
        let builder = if builder.configured_audiences().is_empty() {
            builder.audience(self.resource.clone())
        } else {
            builder
        };
        let identity = builder
            .scope_attribute(SCOPES_ATTRIBUTE)
            .build()
            .map_err(|e| OAuthConfigError::Identity(e.to_string()))?;
        self.check_identity(&identity)?;
        Ok(identity)
    }

    /// Checks that `identity` verifies access tokens for this resource: exactly the resource
    /// URI as audience with [`AudienceRule::Single`], an issuer among the authorization
    /// servers, scopes mapped into [`SCOPES_ATTRIBUTE`], and tokens usable more than once.
    pub fn check_identity(&self, identity: &JwtIdentity) -> Result<(), OAuthConfigError> {
        if identity.audiences().is_empty()
            || identity.audiences().iter().any(|a| *a != self.resource)
        {
            return Err(OAuthConfigError::AudienceMismatch {
                audiences: identity.audiences().to_vec(),
                resource: self.resource.clone(),
            });
        }
        if identity.audience_rule() != AudienceRule::Single {
            return Err(OAuthConfigError::AudienceRule);
        }
        if !self
            .authorization_servers
            .iter()
            .any(|s| s == identity.issuer())
        {
            return Err(OAuthConfigError::IssuerNotListed {
                issuer: identity.issuer().to_owned(),
                authorization_servers: self.authorization_servers.clone(),
            });
        }
        if identity.scope_attribute() != Some(SCOPES_ATTRIBUTE) {
            return Err(OAuthConfigError::NoScopeAttribute);
        }
        if identity.is_single_use() {
            return Err(OAuthConfigError::SingleUse);
        }
        Ok(())
    }

    /// Whether `agent` was authenticated by an access token of one of the authorization
    /// servers (so its scopes are checked).
    fn is_access_token(&self, agent: &AgentIdentity) -> bool {
        matches!(&agent.auth, AuthMethod::Jwt { issuer, .. }
            if self.authorization_servers.iter().any(|s| s == issuer))
    }

    /// `Err` with the required scopes (space-separated) when `agent` holds an access token
    /// that does not grant all of them.
    pub(crate) fn check_scopes(&self, agent: &AgentIdentity) -> Result<(), String> {
        if self.required_scopes.is_empty() || !self.is_access_token(agent) {
            return Ok(());
        }
        let granted = agent
            .attributes
            .get(SCOPES_ATTRIBUTE)
            .and_then(Value::as_array);
        let has = |scope: &String| {
            granted.is_some_and(|list| list.iter().any(|g| g.as_str() == Some(scope.as_str())))
        };
        if self.required_scopes.iter().all(has) {
            return Ok(());
        }
        tracing::info!(agent = %agent.id, "access token refused: a required scope is missing");
        Err(self.required_scopes.join(" "))
    }

    /// The `WWW-Authenticate` value of a 401 (`error` when a credential was presented) or of a
    /// 403 for missing scopes.
    pub(crate) fn challenge(
        &self,
        error: Option<&str>,
        insufficient: Option<&str>,
    ) -> Option<HeaderValue> {
        let mut value = format!(
            "Bearer realm=\"agent-gateway\", resource_metadata=\"{}\"",
            self.metadata_url()
        );
        let scope = match insufficient {
            Some(scope) => Some(scope.to_owned()),
            None if !self.required_scopes.is_empty() => Some(self.required_scopes.join(" ")),
            None => None,
        };
        if let Some(scope) = scope {
            value.push_str(&format!(", scope=\"{scope}\""));
        }
        if let Some(error) = error {
            value.push_str(&format!(", error=\"{error}\""));
        }
        // Every part was checked to be printable ASCII without quotes; never fails then.
        HeaderValue::from_str(&value).ok()
    }
}

/// A 403 for missing scopes (the space-separated scopes), marked on the response so the
/// challenge layer writes its header.
#[derive(Debug, Clone)]
pub(crate) struct InsufficientScope(pub(crate) String);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_urls_must_be_canonical_https() {
        for ok in [
            "https://gw.example.com/mcp",
            "https://gw.example.com",
            "https://gw.example.com:8443/a/mcp",
            "http://127.0.0.1:3000/mcp",
            "http://localhost/mcp",
            "http://[::1]:8080/mcp",
            "http://[::1]/mcp",
        ] {
            assert!(
                OAuthResource::new(ok, ["https://as.example.com"]).is_ok(),
                "{ok}"
            );
        }
        for bad in [
            "gw.example.com/mcp",
            "ftp://gw.example.com/mcp",
            "HTTPS://gw.example.com/mcp",
            "https://GW.example.com/mcp",
            "https://gw.example.com:443/mcp",
            "https://gw.example.com/mcp?x=1",
            "https://gw.example.com/mcp#f",
            "https://user@gw.example.com/mcp",
            "https:///mcp",
            "http://gw.example.com/mcp",
            "http://10.0.0.1/mcp",
            "https://gw.example.com/m\"cp",
            "https://gw.example.com/m cp",
            "https://gw.example.com:x/mcp",
        ] {
            assert!(
                OAuthResource::new(bad, ["https://as.example.com"]).is_err(),
                "{bad}"
            );
        }
        assert_eq!(
            OAuthResource::new("https://gw.example.com/mcp", Vec::<String>::new()),
            Err(OAuthConfigError::NoAuthorizationServer)
        );
        assert!(
            OAuthResource::new("https://gw.example.com/mcp", ["http://as.example.com"]).is_err()
        );
    }

    #[test]
    fn metadata_and_paths() {
        let oauth = OAuthResource::new("https://gw.example.com/mcp", ["https://as.example.com"])
            .unwrap()
            .with_scopes_supported(["gateway:read"])
            .unwrap()
            .with_required_scopes(["gateway:actions"])
            .unwrap()
            .with_resource_documentation("https://docs.example.com/gw")
            .unwrap();
        assert_eq!(
            oauth.metadata_paths(),
            [METADATA_PATH, "/.well-known/oauth-protected-resource/mcp"]
        );
        assert_eq!(
            oauth.metadata(),
            json!({
                "resource": "https://gw.example.com/mcp",
                "authorization_servers": ["https://as.example.com"],
                "bearer_methods_supported": ["header"],
                "scopes_supported": ["gateway:read", "gateway:actions"],
                "resource_documentation": "https://docs.example.com/gw",
            })
        );
        let root =
            OAuthResource::new("https://gw.example.com/", ["https://as.example.com"]).unwrap();
        assert_eq!(root.metadata_paths(), [METADATA_PATH]);
        assert_eq!(
            root.metadata_url(),
            "https://gw.example.com/.well-known/oauth-protected-resource"
        );
        assert!(oauth.clone().with_required_scopes(["a\"b"]).is_err());
        assert!(oauth.clone().with_scopes_supported([""]).is_err());
        assert!(oauth.clone().with_resource_name("a\nb").is_err());
        let challenge = oauth.challenge(Some("invalid_token"), None).unwrap();
        assert_eq!(
            challenge.to_str().unwrap(),
            "Bearer realm=\"agent-gateway\", resource_metadata=\
             \"https://gw.example.com/.well-known/oauth-protected-resource/mcp\", \
             scope=\"gateway:actions\", error=\"invalid_token\""
        );
    }

    fn builder(issuer: &str) -> JwtIdentityBuilder {
        JwtIdentity::builder()
            .issuer(issuer)
            .hs256_secret(gateway_core::Secret::from(
                "0123456789abcdef0123456789abcdef",
            ))
            .default_owner("team")
    }

    #[test]
    fn the_access_token_identity_is_bound_to_the_resource() {
        let oauth =
            OAuthResource::new("https://gw.example.com/mcp", ["https://as.example.com"]).unwrap();
        let identity = oauth
            .access_token_identity(builder("https://as.example.com"))
            .unwrap();
        assert_eq!(identity.audiences(), ["https://gw.example.com/mcp"]);
        assert_eq!(identity.scope_attribute(), Some(SCOPES_ATTRIBUTE));
        // The same audience, spelled out, is fine.
        assert!(
            oauth
                .access_token_identity(
                    builder("https://as.example.com").audience("https://gw.example.com/mcp")
                )
                .is_ok()
        );
        for (wrong, expected) in [
            (
                builder("https://as.example.com").audience("agent-gateway"),
                "AudienceMismatch",
            ),
            (
                builder("https://as.example.com")
                    .audience("https://gw.example.com/mcp")
                    .audience("https://other.example.com/mcp"),
                "AudienceMismatch",
            ),
            (
                builder("https://as.example.com").audience_rule(AudienceRule::Contains),
                "AudienceRule",
            ),
            (builder("https://evil.example.com"), "IssuerNotListed"),
            (
                builder("https://as.example.com").single_use(true),
                "SingleUse",
            ),
        ] {
            let err = oauth.access_token_identity(wrong).unwrap_err();
            assert!(format!("{err:?}").starts_with(expected), "{err:?}");
        }
        let unmapped = builder("https://as.example.com")
            .audience("https://gw.example.com/mcp")
            .build()
            .unwrap();
        assert_eq!(
            oauth.check_identity(&unmapped),
            Err(OAuthConfigError::NoScopeAttribute)
        );
    }
}
