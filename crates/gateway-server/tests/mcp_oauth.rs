//! MCP authorization end to end: the server as an OAuth protected resource (RFC 9728 metadata,
//! `WWW-Authenticate` challenges, audience-bound JWT access tokens, required scopes), against a
//! real authorization server (Authlib, `tools/oauth_as/oauth_as.py`, installed by
//! `scripts/services/oauth_as.sh`) and the official Python MCP SDK's OAuth client
//! (`tools/mcp_sdk/python_oauth_client.py`, with the venv of `scripts/services/mcp_sdk.sh`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use gateway_core::testing::{MemoryAuditSink, MemoryPolicy, MemoryRunner};
use gateway_core::{
    AgentId, AgentLimits, Gateway, GatewayConfig, HmacBroker, Identity, IdentityChain, Secret,
    StaticKeys,
};
use gateway_identity::JwtIdentity;
use gateway_server::{Approvers, Frontend, OAuthResource, ServerConfig};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const REQUIRED: &str = "gateway:actions";

/// An environment variable the test needs; `None` (a skip) outside `scripts/test`, a failure
/// under `CI=true`.
fn required_env(name: &str) -> Option<String> {
    match std::env::var(name) {
        Ok(v) => Some(v),
        Err(_) => {
            assert_ne!(
                std::env::var("CI").as_deref(),
                Ok("true"),
                "{name} is not set (CI=true: the authorization server and the SDK are required; \
                 run scripts/test)"
            );
            eprintln!("SKIPPED: {name} is not set (run scripts/test)");
            None
        }
    }
}

/// The authorization server, on a loopback port of its choosing; killed on drop.
struct AuthServer {
    child: Child,
    issuer: String,
}

impl Drop for AuthServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_auth_server() -> Option<AuthServer> {
    let python = required_env("GATEWAY_TEST_OAUTH_PYTHON")?;
    let script = required_env("GATEWAY_TEST_OAUTH_AS")?;
    let mut child = Command::new(python)
        .arg(script)
        .args(["--port", "0", "--user", "alice"])
        .args(["--scopes", "gateway:actions gateway:read"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the authorization server starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port: u16 = line
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("the authorization server printed {line:?}, not its port"));
    Some(AuthServer {
        child,
        issuer: format!("http://127.0.0.1:{port}"),
    })
}

struct Server {
    base: String,
    resource: String,
    static_key: Secret,
    policy: Arc<MemoryPolicy>,
    runner: Arc<MemoryRunner>,
    http: reqwest::Client,
    stop: CancellationToken,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A gateway whose agents authenticate with a static API key or an access token of `issuer`
/// (OAuth configured with `gateway:actions` required), or, with `oauth: false`, static keys
/// only and no OAuth configuration.
async fn start_server(issuer: &str, oauth: bool) -> Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let resource = format!("{base}/mcp");
    let (keys, static_key) = StaticKeys::new()
        .with_generated_key("key-a", AgentId::new("agent:a").unwrap(), "team-a")
        .unwrap();
    let mut config = ServerConfig::default();
    let identity: Arc<dyn Identity> = if oauth {
        let resource_config = OAuthResource::new(&resource, [issuer])
            .unwrap()
            .with_scopes_supported(["gateway:actions", "gateway:read"])
            .unwrap()
            .with_required_scopes([REQUIRED])
            .unwrap()
            .with_resource_name("agent-gateway (test)")
            .unwrap()
            .with_resource_documentation("https://docs.example.com/agent-gateway")
            .unwrap();
        let tokens = resource_config
            .access_token_identity(
                JwtIdentity::builder()
                    .issuer(issuer)
                    .jwks_url(format!("{issuer}/jwks"))
                    .expected_typ("at+jwt")
                    .default_owner("oauth-users"),
            )
            .unwrap();
        config.oauth = Some(resource_config);
        // Either order works: API keys are not JWT-shaped, JWTs are not API keys.
        Arc::new(IdentityChain::new(vec![Arc::new(tokens), Arc::new(keys)]))
    } else {
        Arc::new(keys)
    };
    let (approvers, _alice) = Approvers::new()
        .with_generated_token("human:alice")
        .unwrap();
    let policy = Arc::new(common::policy());
    let runner = Arc::new(MemoryRunner::new());
    let front = Frontend::new(config);
    let gateway = Gateway::builder()
        .identity(Arc::clone(&identity))
        .policy(policy.clone())
        .broker(Arc::new(HmacBroker::generate()))
        .runner(runner.clone())
        .audit(Arc::new(MemoryAuditSink::new()))
        .approvals(front.approval_gate())
        .catalog(common::catalog())
        .config(GatewayConfig {
            agent_limits: AgentLimits::unlimited(),
            ..GatewayConfig::default()
        })
        .build()
        .unwrap();
    let state = front.into_state(gateway, identity, approvers);
    let stop = CancellationToken::new();
    let s = stop.clone();
    tokio::spawn(async move {
        gateway_server::serve_with_shutdown(listener, state, async move { s.cancelled().await })
            .await
            .unwrap();
    });
    Server {
        base,
        resource,
        static_key,
        policy,
        runner,
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .build()
            .unwrap(),
        stop,
    }
}

/// Status, `WWW-Authenticate` and JSON body of one request.
struct Answer {
    status: u16,
    challenge: Option<String>,
    body: Value,
}

impl Server {
    async fn send(&self, request: reqwest::RequestBuilder) -> Answer {
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let challenge = response
            .headers()
            .get("www-authenticate")
            .map(|v| v.to_str().unwrap().to_owned());
        let text = response.text().await.unwrap();
        Answer {
            status,
            challenge,
            body: serde_json::from_str(&text).unwrap_or(Value::String(text)),
        }
    }

    async fn catalog(&self, authorization: Option<&str>) -> Answer {
        let mut request = self.http.get(format!("{}/v1/catalog", self.base));
        if let Some(a) = authorization {
            request = request.header("authorization", a);
        }
        self.send(request).await
    }

    async fn submit(&self, bearer: &str) -> Answer {
        let request = self
            .http
            .post(format!("{}/v1/actions", self.base))
            .bearer_auth(bearer)
            .json(&json!({"action": "ops.echo", "resource": "ops:staging/web"}));
        self.send(request).await
    }

    /// An MCP `initialize` POST.
    async fn mcp(&self, authorization: Option<&str>) -> Answer {
        let mut request = self
            .http
            .post(format!("{}/mcp", self.base))
            .header("accept", "application/json, text/event-stream")
            .json(&json!({
                "jsonrpc": "2.0", "id": 1, "method": "initialize",
                "params": {
                    "protocolVersion": "2025-06-18",
                    "capabilities": {},
                    "clientInfo": {"name": "raw", "version": "0"}
                }
            }));
        if let Some(a) = authorization {
            request = request.header("authorization", a);
        }
        self.send(request).await
    }

    fn metadata_url(&self) -> String {
        format!("{}/.well-known/oauth-protected-resource/mcp", self.base)
    }

    /// The challenge every agent 401 carries, with `error` when a credential was refused.
    fn challenge_401(&self, error: Option<&str>) -> String {
        let mut c = format!(
            "Bearer realm=\"agent-gateway\", resource_metadata=\"{}\", scope=\"{REQUIRED}\"",
            self.metadata_url()
        );
        if let Some(e) = error {
            c.push_str(&format!(", error=\"{e}\""));
        }
        c
    }
}

#[tokio::test]
async fn the_metadata_document_and_the_challenges() {
    // The authorization server is only named here: nothing is fetched from it.
    let issuer = "http://127.0.0.1:9";
    let s = start_server(issuer, true).await;
    let expected = json!({
        "resource": s.resource,
        "authorization_servers": [issuer],
        "bearer_methods_supported": ["header"],
        "scopes_supported": ["gateway:actions", "gateway:read"],
        "resource_name": "agent-gateway (test)",
        "resource_documentation": "https://docs.example.com/agent-gateway",
    });
    for path in [
        "/.well-known/oauth-protected-resource/mcp",
        "/.well-known/oauth-protected-resource",
    ] {
        let response = s
            .http
            .get(format!("{}{path}", s.base))
            .header("origin", "https://evil.example")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{path}");
        assert_eq!(
            response.headers()["access-control-allow-origin"],
            "*",
            "{path}"
        );
        assert_eq!(response.json::<Value>().await.unwrap(), expected, "{path}");
    }
    let post = s.send(s.http.post(s.metadata_url()).json(&json!({}))).await;
    assert_eq!(post.status, 405);
    assert_eq!(post.body["error"]["kind"], "invalid_input", "{}", post.body);
    let other = s
        .send(s.http.get(format!(
            "{}/.well-known/oauth-protected-resource/other",
            s.base
        )))
        .await;
    assert_eq!(other.status, 404);
    assert_eq!(other.body["error"]["kind"], "not_found", "{}", other.body);

    // No credential: the challenge without an error code (RFC 6750 section 3.1).
    let none = s.catalog(None).await;
    assert_eq!(none.status, 401);
    assert_eq!(none.challenge.as_deref(), Some(&*s.challenge_401(None)));
    let mcp = s.mcp(None).await;
    assert_eq!(mcp.status, 401, "{}", mcp.body);
    assert_eq!(mcp.challenge.as_deref(), Some(&*s.challenge_401(None)));
    // A credential presented and refused: invalid_token, on HTTP and MCP alike.
    for bad in [
        "Bearer agk_nope.nope",
        "Bearer eyJhbGciOiJSUzI1NiJ9.e30.c2ln",
    ] {
        let http = s.catalog(Some(bad)).await;
        assert_eq!(http.status, 401, "{bad}");
        assert_eq!(
            http.challenge.as_deref(),
            Some(&*s.challenge_401(Some("invalid_token"))),
            "{bad}"
        );
        let mcp = s.mcp(Some(bad)).await;
        assert_eq!(mcp.status, 401, "{bad}");
        assert_eq!(
            mcp.challenge.as_deref(),
            Some(&*s.challenge_401(Some("invalid_token"))),
            "{bad}"
        );
    }
    let basic = s.mcp(Some("Basic YTpi")).await;
    assert_eq!(
        basic.challenge.as_deref(),
        Some(&*s.challenge_401(Some("invalid_request")))
    );
    let submit = s.submit("agk_nope.nope").await;
    assert_eq!(submit.status, 401);
    assert_eq!(
        submit.challenge.as_deref(),
        Some(&*s.challenge_401(Some("invalid_token")))
    );
    // The approvers' endpoints are not OAuth-protected: their 401 keeps the plain challenge.
    let approvals = s.send(s.http.get(format!("{}/v1/approvals", s.base))).await;
    assert_eq!(approvals.status, 401);
    assert_eq!(
        approvals.challenge.as_deref(),
        Some("Bearer realm=\"agent-gateway\"")
    );

    // Static API keys keep working beside OAuth, and are not scope-checked.
    let key = format!("Bearer {}", s.static_key.expose_str().unwrap());
    assert_eq!(s.catalog(Some(&key)).await.status, 200);
    assert_eq!(s.mcp(Some(&key)).await.status, 200);
    let ran = s.submit(s.static_key.expose_str().unwrap()).await;
    assert_eq!(ran.status, 200, "{}", ran.body);
    assert_eq!(s.runner.runs().len(), 1);

    // Without the configuration: no metadata (404 in the error shape), plain challenges.
    let plain = start_server(issuer, false).await;
    let missing = plain
        .send(plain.http.get(format!(
            "{}/.well-known/oauth-protected-resource",
            plain.base
        )))
        .await;
    assert_eq!(missing.status, 404);
    assert_eq!(
        missing.body["error"]["kind"], "not_found",
        "{}",
        missing.body
    );
    for answer in [
        plain.catalog(Some("Bearer agk_nope.nope")).await,
        plain.mcp(None).await,
    ] {
        assert_eq!(answer.status, 401);
        assert_eq!(
            answer.challenge.as_deref(),
            Some("Bearer realm=\"agent-gateway\"")
        );
    }
}

#[test]
fn an_access_token_identity_for_another_audience_is_refused() {
    let oauth =
        OAuthResource::new("https://gw.example.com/mcp", ["https://as.example.com"]).unwrap();
    let builder = || {
        JwtIdentity::builder()
            .issuer("https://as.example.com")
            .jwks_url("http://127.0.0.1:9/jwks")
            .default_owner("team")
    };
    let err = oauth
        .access_token_identity(builder().audience("agent-gateway"))
        .unwrap_err();
    assert!(
        err.to_string().contains("https://gw.example.com/mcp"),
        "{err}"
    );
    assert!(err.to_string().contains("RFC 8707"), "{err}");
    let built = oauth.access_token_identity(builder()).unwrap();
    assert_eq!(built.audiences(), ["https://gw.example.com/mcp"]);
}

/// `application/x-www-form-urlencoded`.
fn form(fields: &[(&str, &str)]) -> String {
    let encode = |s: &str| {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                    char::from(b).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect::<String>()
    };
    fields
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// A client registered at the authorization server (RFC 7591) for the client credentials
/// grant, and a token from it for `resource` with `scope`.
async fn client_credentials_token(
    http: &reqwest::Client,
    issuer: &str,
    resource: &str,
    scope: &str,
) -> String {
    let registered: Value = http
        .post(format!("{issuer}/register"))
        .json(&json!({
            "client_name": "gateway test (client credentials)",
            "redirect_uris": ["http://localhost:3030/callback"],
            "grant_types": ["client_credentials"],
            "scope": "gateway:actions gateway:read",
            "token_endpoint_auth_method": "client_secret_post",
        }))
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap()
        .json()
        .await
        .unwrap();
    let answer: Value = http
        .post(format!("{issuer}/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(&[
            ("grant_type", "client_credentials"),
            ("client_id", registered["client_id"].as_str().unwrap()),
            (
                "client_secret",
                registered["client_secret"].as_str().unwrap(),
            ),
            ("scope", scope),
            ("resource", resource),
        ]))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    answer["access_token"]
        .as_str()
        .unwrap_or_else(|| panic!("no token: {answer}"))
        .to_owned()
}

#[tokio::test]
async fn audience_and_scope_of_access_tokens_are_enforced() {
    let Some(auth) = start_auth_server() else {
        return;
    };
    let s = start_server(&auth.issuer, true).await;

    // Bound to this server, with the required scope: accepted on HTTP and MCP.
    let good =
        client_credentials_token(&s.http, &auth.issuer, &s.resource, "gateway:actions").await;
    let bearer = format!("Bearer {good}");
    let catalog = s.catalog(Some(&bearer)).await;
    assert_eq!(catalog.status, 200, "{}", catalog.body);
    assert_eq!(s.mcp(Some(&bearer)).await.status, 200);
    let ran = s.submit(&good).await;
    assert_eq!(ran.status, 200, "{}", ran.body);
    assert_eq!(s.runner.runs().len(), 1);
    // The granted scopes reached the policy as an attribute of the agent.
    let input = s.policy.inputs().pop().unwrap();
    assert_eq!(input.agent.attributes["scopes"], json!(["gateway:actions"]));

    // Minted by the same authorization server for another resource: refused (RFC 8707).
    let elsewhere = client_credentials_token(
        &s.http,
        &auth.issuer,
        "http://127.0.0.1:1/mcp",
        "gateway:actions",
    )
    .await;
    let bearer = format!("Bearer {elsewhere}");
    for answer in [
        s.catalog(Some(&bearer)).await,
        s.mcp(Some(&bearer)).await,
        s.submit(&elsewhere).await,
    ] {
        assert_eq!(answer.status, 401, "{}", answer.body);
        assert_eq!(
            answer.challenge.as_deref(),
            Some(&*s.challenge_401(Some("invalid_token")))
        );
        assert!(
            answer.body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("wrong audience"),
            "{}",
            answer.body
        );
    }

    // Bound to this server but without the required scope: 403 insufficient_scope.
    let narrow = client_credentials_token(&s.http, &auth.issuer, &s.resource, "gateway:read").await;
    let bearer = format!("Bearer {narrow}");
    let insufficient = format!(
        "Bearer realm=\"agent-gateway\", resource_metadata=\"{}\", scope=\"{REQUIRED}\", \
         error=\"insufficient_scope\"",
        s.metadata_url()
    );
    for answer in [
        s.catalog(Some(&bearer)).await,
        s.mcp(Some(&bearer)).await,
        s.submit(&narrow).await,
    ] {
        assert_eq!(answer.status, 403, "{}", answer.body);
        assert_eq!(answer.body["error"]["kind"], "denied", "{}", answer.body);
        assert_eq!(answer.challenge.as_deref(), Some(&*insufficient));
    }
    // Nothing more ran.
    assert_eq!(s.runner.runs().len(), 1);
}

/// What both SDKs do once they hold a token: list, an allowed call, a denied one.
fn oauth_steps() -> Value {
    json!([
        {"list": true},
        {"call": "ops.echo", "arguments": {"resource": "ops:staging/web", "params": {"message": "x"}}},
        {"call": "ops.frozen", "arguments": {"resource": "ops:prod/web"}},
    ])
}

/// Runs an SDK's OAuth driver (`program args… RESOURCE STEPS`, starting without a token) against
/// the server; the JSON report it prints.
async fn run_oauth_client(program: &str, args: &[&str], s: &Server) -> Value {
    let run = tokio::process::Command::new(program)
        .args(args)
        .arg(&s.resource)
        .arg(oauth_steps().to_string())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(90), run)
        .await
        .expect("the SDK client did not finish in 90 s")
        .unwrap();
    assert!(
        out.status.success(),
        "SDK client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    // The SDK logs what it finds wrong with a server or a flow.
    assert!(
        !stderr.contains("WARNING") && !stderr.contains("OAuth flow error"),
        "{stderr}"
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// What an SDK's OAuth client must have done to get its token, and then done with it.
fn check_oauth_report(report: &Value, s: &Server, auth: &AuthServer) {
    // How it got there: refused, read the metadata named in the challenge, then the
    // authorization server's metadata, registered, authorized, exchanged the code, retried.
    let http: Vec<(String, String, u64)> = report["http"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e[0].as_str().unwrap().to_owned(),
                e[1].as_str().unwrap().to_owned(),
                e[2].as_u64().unwrap(),
            )
        })
        .collect();
    let position = |method: &str, url: &str, status: u64| {
        http.iter()
            .position(|(m, u, st)| m == method && u.starts_with(url) && *st == status)
            .unwrap_or_else(|| panic!("no {method} {url} -> {status} in {http:#?}"))
    };
    let refused = position("POST", &s.resource, 401);
    let metadata = position("GET", &s.metadata_url(), 200);
    let as_metadata = position(
        "GET",
        &format!("{}/.well-known/oauth-authorization-server", auth.issuer),
        200,
    );
    let registered = position("POST", &format!("{}/register", auth.issuer), 201);
    let authorized = position("GET", &format!("{}/authorize", auth.issuer), 302);
    let token = position("POST", &format!("{}/token", auth.issuer), 200);
    let accepted = position("POST", &s.resource, 200);
    assert!(
        refused < metadata
            && metadata < as_metadata
            && as_metadata < registered
            && registered < authorized
            && authorized < token
            && token < accepted,
        "{http:#?}"
    );
    // The first metadata URL it tried is the one the challenge named.
    assert_eq!(http[refused + 1].1, s.metadata_url(), "{http:#?}");
    // It asked for this resource (RFC 8707) and the scope the challenge named, with PKCE.
    let authorize = &report["authorize"];
    assert_eq!(authorize["resource"], s.resource.as_str(), "{authorize}");
    assert_eq!(authorize["scope"], REQUIRED, "{authorize}");
    assert_eq!(authorize["code_challenge_method"], "S256", "{authorize}");
    // The token the authorization server issued is bound to this server.
    let claims = &report["token_claims"];
    assert_eq!(claims["aud"], s.resource.as_str(), "{claims}");
    assert_eq!(claims["iss"], auth.issuer.as_str(), "{claims}");
    assert_eq!(claims["sub"], "alice", "{claims}");

    // And with it the agent lists, acts and is refused as the policy says.
    let steps = report["steps"].as_array().unwrap();
    let tools = steps[0]["tools"].as_array().unwrap();
    assert!(tools.contains(&json!("ops.echo")), "{}", steps[0]);
    assert_eq!(steps[1]["is_error"], false, "{}", steps[1]);
    assert_eq!(
        steps[1]["structured"]["status"], "completed",
        "{}",
        steps[1]
    );
    assert_eq!(steps[2]["is_error"], true, "{}", steps[2]);
    assert_eq!(
        steps[2]["structured"]["error"]["kind"], "denied",
        "{}",
        steps[2]
    );
    assert_eq!(s.runner.runs().len(), 1);
    // As agent:alice, her grant's scopes visible to the policy.
    let inputs = s.policy.inputs();
    let echo = inputs.iter().find(|i| i.action == "ops.echo").unwrap();
    assert_eq!(echo.agent.id.as_str(), "agent:alice");
    assert_eq!(echo.agent.attributes["scopes"], json!([REQUIRED]));
}

#[tokio::test]
async fn the_python_sdk_discovers_the_authorization_server_and_acts() {
    let Some(auth) = start_auth_server() else {
        return;
    };
    let Some(python) = required_env("GATEWAY_TEST_MCP_PYTHON") else {
        return;
    };
    let s = start_server(&auth.issuer, true).await;
    let client = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tools/mcp_sdk/python_oauth_client.py"
    );
    let report = run_oauth_client(&python, &[client], &s).await;
    check_oauth_report(&report, &s, &auth);
}

/// The same flow with the official TypeScript SDK, as its documentation has an app run it: the
/// first connection ends in `UnauthorizedError` once the user is sent to the authorization
/// server, the app hands the code to `finishAuth`, and connects again.
#[tokio::test]
async fn the_typescript_sdk_discovers_the_authorization_server_and_acts() {
    let Some(auth) = start_auth_server() else {
        return;
    };
    let Some(node) = required_env("GATEWAY_TEST_MCP_NODE") else {
        return;
    };
    // Where the SDK is installed; the driver reads it from the environment it inherits.
    if required_env("GATEWAY_TEST_MCP_TS_SDK").is_none() {
        return;
    }
    let s = start_server(&auth.issuer, true).await;
    let client = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tools/mcp_sdk/ts/oauth_client.mjs"
    );
    let report = run_oauth_client(&node, &[client], &s).await;
    assert_eq!(
        report["first_error"]["name"], "UnauthorizedError",
        "{}",
        report["first_error"]
    );
    check_oauth_report(&report, &s, &auth);
}
