#!/usr/bin/env python3
"""Drives agent-gateway's MCP endpoint with the official Python MCP SDK (PyPI `mcp`) as an OAuth
client: no token to start with, so the SDK's `OAuthClientProvider` must discover the
authorization server from the server's 401 (RFC 9728 `resource_metadata`), register (RFC 7591),
run the authorization code flow with PKCE and the `resource` parameter (RFC 8707), and retry
with the access token. Prints what it saw as one JSON document, for gateway-server's tests.

    python_oauth_client.py URL SCRIPT_JSON

SCRIPT_JSON is a list of steps as python_client.py takes them (and runs them: `run_steps`), e.g.
{"list": true} lists the tools; {"call": NAME, "arguments": {...}} calls one. The output is
{"steps": [...], "http": [[method, url, status], ...], "authorize": {query parameters of the
authorization request}, "token_claims": {the access token's payload, unverified}}.

The consent page is the authorization server's: this client follows the authorization URL
itself (the test server approves at once) and hands the redirect's code to the SDK.
"""
import base64
import json
import sys
from urllib.parse import parse_qs, urlsplit

import anyio
import httpx2
from mcp import ClientSession
from mcp.client.auth import AuthorizationCodeResult, OAuthClientProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import OAuthClientInformationFull, OAuthClientMetadata, OAuthToken
# The step language and its runner are python_client.py's (this directory is on sys.path).
from python_client import run_steps

REDIRECT_URI = "http://localhost:3030/callback"


class MemoryStorage:
    def __init__(self):
        self.tokens = None
        self.client_info = None

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client_info

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client_info = client_info


def claims_of(token: str) -> dict:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


async def run(url: str, steps: list) -> dict:
    seen_http = []
    authorize = {}
    redirect = {}

    async def record(response):
        seen_http.append([response.request.method, str(response.request.url), response.status_code])

    async def on_redirect(authorization_url: str) -> None:
        authorize.update({k: v[0] for k, v in parse_qs(urlsplit(authorization_url).query).items()})
        async with httpx2.AsyncClient(timeout=30, event_hooks={"response": [record]}) as browser:
            answer = await browser.get(authorization_url, follow_redirects=False)
        location = answer.headers.get("location", "")
        if answer.status_code != 302 or not location.startswith(REDIRECT_URI):
            raise RuntimeError(f"authorization failed: {answer.status_code} {answer.text}")
        redirect.update({k: v[0] for k, v in parse_qs(urlsplit(location).query).items()})

    async def on_callback() -> AuthorizationCodeResult:
        return AuthorizationCodeResult(code=redirect["code"], state=redirect.get("state"), iss=redirect.get("iss"))

    storage = MemoryStorage()
    provider = OAuthClientProvider(
        server_url=url,
        client_metadata=OAuthClientMetadata(
            client_name="agent-gateway test agent",
            redirect_uris=[REDIRECT_URI],
            grant_types=["authorization_code", "refresh_token"],
            response_types=["code"],
        ),
        storage=storage,
        redirect_handler=on_redirect,
        callback_handler=on_callback,
    )
    async with httpx2.AsyncClient(auth=provider, timeout=30, event_hooks={"response": [record]}) as http:
        async with streamable_http_client(url, http_client=http) as streams:
            read, write = streams[0], streams[1]
            async with ClientSession(read, write) as session:
                await session.initialize()
                out = await run_steps(session, steps)
    token = storage.tokens.access_token if storage.tokens else None
    return {
        "steps": out,
        "http": seen_http,
        "authorize": authorize,
        "token_claims": claims_of(token) if token else None,
    }


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    url, script = sys.argv[1], json.loads(sys.argv[2])
    print(json.dumps(anyio.run(run, url, script)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
