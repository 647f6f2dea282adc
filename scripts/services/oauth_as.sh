#!/usr/bin/env bash
# A real OAuth 2.1 authorization server for gateway-server's MCP authorization tests: Authlib
# (PyPI `authlib`) with its Flask integration, driven by tools/oauth_as/oauth_as.py (RFC 8414
# metadata, JWKS, RFC 7591 registration, authorization code + PKCE, RFC 8707 resource ->
# `aud`). Sourced by scripts/test (needs scripts/lib.sh).
#
# oauth_as_start
#   - installs python3-venv when a virtual environment cannot be made;
#   - creates a virtual environment with the pinned packages below under
#     /var/cache/agent-gateway/oauth-as/<authlib version>/ (or ~/.cache/… when /var/cache is
#     not writable) unless it is there (a few seconds and about 30 MB the first time, nothing
#     later);
#   - exports GATEWAY_TEST_OAUTH_PYTHON (its interpreter) and GATEWAY_TEST_OAUTH_AS
#     (tools/oauth_as/oauth_as.py). Each test starts its own server on a free loopback port
#     (the script prints the port) and stops it when done.
# oauth_as_stop
#   - nothing to stop: no process is started here.

OAUTH_AS_AUTHLIB_VERSION=1.9.6
# Authlib and everything it and Flask pull in, pinned, so every machine runs the same server.
OAUTH_AS_PACKAGES=(
  "authlib==$OAUTH_AS_AUTHLIB_VERSION"
  "joserfc==1.8.0"
  "cryptography==51.0.1"
  "cffi==2.1.1"
  "pycparser==3.12"
  "flask==3.1.3"
  "werkzeug==3.1.9"
  "jinja2==3.1.6"
  "markupsafe==3.0.4"
  "itsdangerous==2.2.0"
  "click==8.5.1"
  "blinker==1.9.0"
)
if [ -z "${OAUTH_AS_CACHE_ROOT:-}" ]; then
  if mkdir -p /var/cache/agent-gateway/oauth-as 2>/dev/null && [ -w /var/cache/agent-gateway/oauth-as ]; then
    OAUTH_AS_CACHE_ROOT=/var/cache/agent-gateway/oauth-as
  else
    OAUTH_AS_CACHE_ROOT="${XDG_CACHE_HOME:-$HOME/.cache}/agent-gateway/oauth-as"
  fi
fi

oauth_as_start() {
  local dir="$OAUTH_AS_CACHE_ROOT/$OAUTH_AS_AUTHLIB_VERSION"
  # `.complete` is written only after a whole install: a run cut short leaves no half venv.
  if [ ! -e "$dir/.complete" ]; then
    python3 -m venv --help >/dev/null 2>&1 || ensure_packages python3-venv || return 1
    log "oauth as: installing authlib==$OAUTH_AS_AUTHLIB_VERSION and flask into $dir (once, cached)"
    rm -rf "$dir" && mkdir -p "$(dirname "$dir")"
    python3 -m venv "$dir" && "$dir/bin/pip" install --quiet "${OAUTH_AS_PACKAGES[@]}" || {
      log "oauth as: installing the packages failed"; rm -rf "$dir"; return 1
    }
    touch "$dir/.complete"
  fi
  "$dir/bin/python" -c 'import authlib.integrations.flask_oauth2, authlib.oauth2.rfc9068' || {
    log "oauth as: authlib does not import"; return 1
  }
  export GATEWAY_TEST_OAUTH_PYTHON="$dir/bin/python"
  export GATEWAY_TEST_OAUTH_AS="$PWD/tools/oauth_as/oauth_as.py"
}

oauth_as_stop() {
  :
}
