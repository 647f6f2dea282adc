#!/usr/bin/env bash
# schemathesis (PyPI), for gateway-server's tests/openapi.rs: it runs `st run` against a real
# server's /openapi.json. Sourced by scripts/test (needs scripts/lib.sh).
#
# schemathesis_start
#   - picks the interpreter: a CPython >= 3.12.1 when the machine has one (pyenv's, or
#     python3.13 / python3.12 on PATH), else Debian's /usr/bin/python3 (python3 and
#     python3-venv installed when missing);
#   - unless already there, creates a virtualenv with it in
#     $SCHEMATHESIS_CACHE_ROOT/<version>/venv (default /var/cache/agent-gateway/schemathesis/,
#     or ~/.cache/agent-gateway/schemathesis/ when /var/cache is not writable) and pip-installs
#     schemathesis==<version> into it; a stamp file marks a finished install (a venv cannot be
#     moved into place, so an interrupted one is removed and made again);
#   - checks that `st --version` reports the pinned version;
#   - exports GATEWAY_TEST_SCHEMATHESIS (the venv's `st`).
# schemathesis_stop
#   - nothing to stop: no process is started (the test starts and waits for `st` itself).
#
# Why not simply the first `python3` on PATH (pyenv's 3.11.7 here): hypothesis, describing its
# strategies for the free-form `params` object, calls ast.parse deep in the stack, and CPython
# 3.11 before 3.11.8 and 3.12.0 then raise "SystemError: AST constructor recursion depth
# mismatch" (CPython gh-106905), which schemathesis reports as a runtime error of POST
# /v1/actions on some runs (seen with pyenv's 3.11.7 and Debian's 3.11.2, never with 3.12.1).
# Debian bookworm has no newer python3, so Debian's is the fallback only.
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

# The interpreter for the venv (see above).
_schemathesis_python() {
  local p root="${PYENV_ROOT:-$HOME/.pyenv}"
  # Newest first: 3.13.x, then 3.12.1 and later.
  for p in $(ls -d "$root"/versions/3.1[3-9]* "$root"/versions/3.12.[1-9]* 2>/dev/null | sort -rV) \
    python3.13 python3.12; do
    [ -d "$p" ] && p="$p/bin/python3"
    if "$p" -c 'import sys, venv; sys.exit(sys.version_info < (3, 12, 1))' 2>/dev/null; then
      command -v "$p"; return 0
    fi
  done
  ensure_packages python3 python3-venv >&2 || return 1
  log "schemathesis: no Python >= 3.12.1 here; Debian's $(/usr/bin/python3 --version) may hit CPython gh-106905"
  echo /usr/bin/python3
}

# What the stamp holds: a venv made otherwise (another interpreter) is made again.
_schemathesis_ok() {
  [ "$(cat "$1/installed" 2>/dev/null)" = "schemathesis==$SCHEMATHESIS_VERSION $2" ] &&
    "$1/venv/bin/st" --version 2>/dev/null | grep -qF "version $SCHEMATHESIS_VERSION"
}

schemathesis_start() {
  local dir="$SCHEMATHESIS_CACHE_ROOT/$SCHEMATHESIS_VERSION" python
  python="$(_schemathesis_python)" || return 1
  if ! _schemathesis_ok "$dir" "$python"; then
    log "schemathesis: installing schemathesis==$SCHEMATHESIS_VERSION into $dir/venv"
    rm -rf "$dir"
    mkdir -p "$dir"
    "$python" -m venv "$dir/venv" || {
      log "schemathesis: $python -m venv failed"; rm -rf "$dir"; return 1
    }
    "$dir/venv/bin/python" -m pip install --quiet --disable-pip-version-check \
      "schemathesis==$SCHEMATHESIS_VERSION" >&2 || {
      log "schemathesis: pip install failed"; rm -rf "$dir"; return 1
    }
    echo "schemathesis==$SCHEMATHESIS_VERSION $python" > "$dir/installed"
  fi
  _schemathesis_ok "$dir" "$python" || {
    log "schemathesis: $dir/venv/bin/st does not report version $SCHEMATHESIS_VERSION"; return 1
  }
  export GATEWAY_TEST_SCHEMATHESIS="$dir/venv/bin/st"
}

schemathesis_stop() {
  :
}
