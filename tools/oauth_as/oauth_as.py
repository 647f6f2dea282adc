#!/usr/bin/env python3
"""A small OAuth 2.1 authorization server built on Authlib (PyPI `authlib`, with its Flask
integration), for gateway-server's MCP authorization tests. Installed into its own virtual
environment by scripts/services/oauth_as.sh.

    oauth_as.py [--port 0] [--user alice] [--scopes "gateway:actions gateway:read"]

Listens on 127.0.0.1 (port 0: any free one) and prints the port alone on the first line of
stdout once it accepts connections. The issuer is http://127.0.0.1:<port>. It serves:

- GET  /.well-known/oauth-authorization-server  RFC 8414 metadata
- GET  /jwks                                    the signing key (RS256, generated at start)
- POST /register                                RFC 7591 dynamic client registration (open)
- GET  /authorize                               authorization code + PKCE S256 (RFC 7636),
                                                consent auto-approved for the one test user
- POST /token                                   authorization_code, refresh_token and
                                                client_credentials grants

Access tokens are RFC 9068 JWTs (`typ: at+jwt`) whose `aud` is the RFC 8707 `resource` the
client asked for: one absolute http(s) URI without a fragment, required (`invalid_target`
otherwise), bound to the authorization code (or refresh token) it was first asked with.
Everything is in memory and lost when the process ends.
"""
import argparse
import sys
import threading
import time
from urllib.parse import urlsplit

from authlib.common.security import generate_token
from authlib.integrations.flask_oauth2 import AuthorizationServer
from authlib.oauth2 import OAuth2Error
from authlib.oauth2.rfc6749 import ClientMixin, grants
from authlib.oauth2.rfc6749.util import scope_to_list
from authlib.oauth2.rfc7591 import ClientRegistrationEndpoint
from authlib.oauth2.rfc7636 import CodeChallenge
from authlib.oauth2.rfc8414 import AuthorizationServerMetadata
from authlib.oauth2.rfc9068 import JWTBearerTokenGenerator
from flask import Flask, g, jsonify, request
from joserfc.jwk import KeySet, RSAKey
from werkzeug.serving import make_server

ACCESS_TOKEN_SECONDS = 600
CODE_SECONDS = 300


class InvalidTargetError(OAuth2Error):
    """RFC 8707 section 2: the requested resource is invalid or unknown."""

    error = "invalid_target"


class Client(ClientMixin):
    def __init__(self, info, metadata):
        self.client_id = info["client_id"]
        self.client_secret = info.get("client_secret")
        self.metadata = metadata

    def get_client_id(self):
        return self.client_id

    def get_default_redirect_uri(self):
        uris = self.metadata.get("redirect_uris") or []
        return uris[0] if uris else None

    def get_allowed_scope(self, scope):
        if not scope:
            return ""
        allowed = set(scope_to_list(self.metadata.get("scope", "")))
        return " ".join(s for s in scope_to_list(scope) if s in allowed)

    def check_redirect_uri(self, redirect_uri):
        return redirect_uri in (self.metadata.get("redirect_uris") or [])

    def check_client_secret(self, client_secret):
        return self.client_secret is not None and client_secret == self.client_secret

    def check_endpoint_auth_method(self, method, endpoint):
        if endpoint == "token":
            return method == self.metadata.get("token_endpoint_auth_method", "client_secret_basic")
        return True

    def check_response_type(self, response_type):
        return response_type in (self.metadata.get("response_types") or ["code"])

    def check_grant_type(self, grant_type):
        return grant_type in (self.metadata.get("grant_types") or ["authorization_code"])


class User:
    def __init__(self, name):
        self.name = name

    def get_user_id(self):
        return self.name


class Record:
    """An authorization code or a refresh token, with what it was granted for."""

    def __init__(self, client_id, user, scope, resource, ttl, redirect_uri=None, challenge=None,
                 method=None):
        self.client_id = client_id
        self.user = user
        self.scope = scope
        self.resource = resource
        self.redirect_uri = redirect_uri
        self.code_challenge = challenge
        self.code_challenge_method = method
        self.expires_at = time.time() + ttl
        self.revoked = False

    # AuthorizationCodeMixin / TokenMixin
    def get_redirect_uri(self):
        return self.redirect_uri

    def get_scope(self):
        return self.scope

    def check_client(self, client):
        return client.get_client_id() == self.client_id

    def is_expired(self):
        return time.time() >= self.expires_at

    def is_revoked(self):
        return self.revoked

    def get_expires_in(self):
        return int(self.expires_at - time.time())


class Store:
    def __init__(self):
        self.lock = threading.Lock()
        self.clients = {}
        self.codes = {}
        self.refresh_tokens = {}


def requested_resource():
    """The one RFC 8707 `resource` of this request (query or form), None when absent."""
    values = request.values.getlist("resource")
    if not values:
        return None
    if len(values) > 1:
        raise InvalidTargetError(description="one resource per request")
    resource = values[0]
    parts = urlsplit(resource)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.fragment or "#" in resource:
        raise InvalidTargetError(description="resource must be an absolute http(s) URI without a fragment")
    return resource


def bound_resource(granted):
    """The token's audience: the resource the grant was made for; a token request may repeat
    it, not change it. Without either there is no audience to bind to (RFC 8707)."""
    asked = requested_resource()
    if granted and asked and asked != granted:
        raise InvalidTargetError(description="resource differs from the one authorized")
    resource = granted or asked
    if not resource:
        raise InvalidTargetError(description="a resource indicator (RFC 8707) is required")
    return resource


def create_app(issuer_holder, user_name, scopes):
    app = Flask(__name__)
    store = Store()
    key = RSAKey.generate_key(2048, parameters={"kid": generate_token(12), "use": "sig", "alg": "RS256"})
    keys = KeySet([key])

    def query_client(client_id):
        with store.lock:
            return store.clients.get(client_id)

    def save_token(token, req):
        refresh = token.get("refresh_token")
        if refresh:
            user = req.user.get_user_id() if req.user else None
            with store.lock:
                store.refresh_tokens[refresh] = Record(
                    req.client.get_client_id(), user, token.get("scope", ""), g.resource, 86400
                )

    class TokenGenerator(JWTBearerTokenGenerator):
        def get_jwks(self):
            return keys

        def get_audiences(self, client, user, scope):
            # Set by the grant from the authorization code, refresh token or token request.
            return g.resource

    class AuthorizationCodeGrant(grants.AuthorizationCodeGrant):
        TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post", "none"]

        def save_authorization_code(self, code, req):
            resource = requested_resource()
            if not resource:
                raise InvalidTargetError(description="a resource indicator (RFC 8707) is required")
            with store.lock:
                store.codes[code] = Record(
                    req.client.get_client_id(), req.user.get_user_id(), req.payload.scope or "",
                    resource, CODE_SECONDS, req.payload.redirect_uri,
                    req.payload.data.get("code_challenge"), req.payload.data.get("code_challenge_method"),
                )

        def query_authorization_code(self, code, client):
            with store.lock:
                record = store.codes.get(code)
            if record and record.check_client(client) and not record.is_expired():
                return record
            return None

        def delete_authorization_code(self, record):
            with store.lock:
                for code, r in list(store.codes.items()):
                    if r is record:
                        del store.codes[code]

        def authenticate_user(self, record):
            return User(record.user)

        def validate_token_request(self):
            super().validate_token_request()
            g.resource = bound_resource(self.request.authorization_code.resource)

    class RefreshTokenGrant(grants.RefreshTokenGrant):
        TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post", "none"]
        INCLUDE_NEW_REFRESH_TOKEN = True

        def authenticate_refresh_token(self, refresh_token):
            with store.lock:
                record = store.refresh_tokens.get(refresh_token)
            if record and not record.is_expired() and not record.is_revoked():
                g.resource = bound_resource(record.resource)
                return record
            return None

        def authenticate_user(self, record):
            return User(record.user) if record.user else None

        def revoke_old_credential(self, record):
            record.revoked = True

    class ClientCredentialsGrant(grants.ClientCredentialsGrant):
        TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post"]

        def validate_token_request(self):
            super().validate_token_request()
            g.resource = bound_resource(None)

    def metadata():
        issuer = issuer_holder[0]
        return {
            "issuer": issuer,
            "authorization_endpoint": f"{issuer}/authorize",
            "token_endpoint": f"{issuer}/token",
            "registration_endpoint": f"{issuer}/register",
            "jwks_uri": f"{issuer}/jwks",
            "scopes_supported": scopes,
            "response_types_supported": ["code"],
            "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
            "code_challenge_methods_supported": ["S256"],
        }

    class Registration(ClientRegistrationEndpoint):
        def authenticate_token(self, req):
            # Open registration (RFC 7591 section 3), as MCP clients expect.
            return True

        def get_server_metadata(self):
            return metadata()

        def save_client(self, info, client_metadata, req):
            client = Client(info, client_metadata)
            with store.lock:
                store.clients[client.client_id] = client
            return client

        def generate_client_info(self, req):
            info = super().generate_client_info(req)
            if req.payload.data.get("token_endpoint_auth_method") == "none":
                info.pop("client_secret")
                info.pop("client_secret_expires_at")
            return info

    app.config["OAUTH2_SCOPES_SUPPORTED"] = scopes
    server = AuthorizationServer(app, query_client=query_client, save_token=save_token)
    server.register_token_generator(
        "default",
        TokenGenerator(issuer="", expires_generator=lambda client, grant_type: ACCESS_TOKEN_SECONDS),
    )
    server.register_grant(AuthorizationCodeGrant, [CodeChallenge(required=True)])
    server.register_grant(RefreshTokenGrant)
    server.register_grant(ClientCredentialsGrant)
    server.register_endpoint(Registration)

    @app.before_request
    def set_issuer():
        server._token_generators["default"].issuer = issuer_holder[0]

    @app.get("/.well-known/oauth-authorization-server")
    def authorization_server_metadata():
        doc = AuthorizationServerMetadata(metadata())
        doc.validate()
        return jsonify(dict(doc))

    @app.get("/jwks")
    def jwks():
        return jsonify(keys.as_dict(private=False))

    @app.post("/register")
    def register():
        return server.create_endpoint_response("client_registration")

    @app.get("/authorize")
    def authorize():
        # Consent is auto-approved for the test user; the resource is checked before a code
        # is issued (a bad one is an error to the client's redirect URI, RFC 8707 section 2).
        return server.create_authorization_response(grant_user=User(user_name))

    @app.post("/token")
    def token():
        return server.create_token_response()

    return app


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--user", default="alice")
    parser.add_argument("--scopes", default="gateway:actions gateway:read")
    args = parser.parse_args()
    issuer_holder = [""]
    app = create_app(issuer_holder, args.user, args.scopes.split())
    httpd = make_server("127.0.0.1", args.port, app, threaded=True)
    issuer_holder[0] = f"http://127.0.0.1:{httpd.port}"
    print(httpd.port, flush=True)
    try:
        httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
