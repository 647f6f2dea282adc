#!/usr/bin/env bash
# schemathesis (PyPI), for gateway-server's tests/openapi.rs: it runs `st run` against a real
# server's /openapi.json. Sourced by scripts/test (needs scripts/lib.sh).
#
# schemathesis_start
#   - installs Debian's python3 and python3-venv when missing;
#   - unless already there, creates a virtualenv with Debian's /usr/bin/python3 in
#     $SCHEMATHESIS_CACHE_ROOT/<version>/venv (default /var/cache/agent-gateway/schemathesis/,
#     or ~/.cache/agent-gateway/schemathesis/ when /var/cache is not writable) and pip-installs
#     schemathesis==<version> into it; a stamp file marks a finished install (a venv cannot be
#     moved into place, so an interrupted one is removed and made again);
#   - checks that `st --version` reports the pinned version;
#   - exports GATEWAY_TEST_SCHEMATHESIS (the venv's `st`).
# schemathesis_stop
#   - nothing to stop: no process is started (the test starts and waits for `st` itself).
#
# Why Debian's interpreter and not the first `python3` on PATH (pyenv's 3.11.7 here):
# hypothesis, under schemathesis' fuzzing of the free-form `params` object, makes CPython 3.11.7
# raise "SystemError: AST constructor recursion depth mismatch" (a CPython bug of some 3.11
# patch releases); Debian's 3.11.2 and 3.12 do not.
#
# Cost: the first run downloads about 15 MB of wheels (under a minute); later runs nothing.
# The test's run itself (GATEWAY_TEST_SCHEMATHESIS_EXAMPLES cases per operation, 100 by
# default) takes well under two minutes on 2 cores.

SCHEMATHESIS_VERSION=4.32.5
if [ -z "${SCHEMATHESIS_CACHE_ROOT:-}" ]; then
  if mkdir -p /var/cache/agent-gateway/schemathesis 2>/dev/null &&
    [ -w /var/cache/agent-gateway/schemathesis ]; then
    SCHEMATHESIS_CACHE_ROOT=/var/cache/agent-gateway/schemathesis
  else
    SCHEMATHESIS_CACHE_ROOT="${XDG_CACHE_HOME:-$HOME/.cache}/agent-gateway/schemathesis"
  fi
fi

# What the stamp holds: a venv made otherwise (another interpreter) is made again.
_SCHEMATHESIS_STAMP="schemathesis==$SCHEMATHESIS_VERSION /usr/bin/python3"

_schemathesis_ok() {
  [ "$(cat "$1/installed" 2>/dev/null)" = "$_SCHEMATHESIS_STAMP" ] &&
    "$1/venv/bin/st" --version 2>/dev/null | grep -qF "version $SCHEMATHESIS_VERSION"
}

schemathesis_start() {
  local dir="$SCHEMATHESIS_CACHE_ROOT/$SCHEMATHESIS_VERSION"
  if ! _schemathesis_ok "$dir"; then
    log "schemathesis: installing schemathesis==$SCHEMATHESIS_VERSION into $dir/venv"
    ensure_packages python3 python3-venv || return 1
    rm -rf "$dir"
    mkdir -p "$dir"
    /usr/bin/python3 -m venv "$dir/venv" || {
      log "schemathesis: /usr/bin/python3 -m venv failed"; rm -rf "$dir"; return 1
    }
    "$dir/venv/bin/python" -m pip install --quiet --disable-pip-version-check \
      "schemathesis==$SCHEMATHESIS_VERSION" >&2 || {
      log "schemathesis: pip install failed"; rm -rf "$dir"; return 1
    }
    echo "$_SCHEMATHESIS_STAMP" > "$dir/installed"
  fi
  _schemathesis_ok "$dir" || {
    log "schemathesis: $dir/venv/bin/st does not report version $SCHEMATHESIS_VERSION"; return 1
  }
  export GATEWAY_TEST_SCHEMATHESIS="$dir/venv/bin/st"
}

schemathesis_stop() {
  :
}
