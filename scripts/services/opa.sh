#!/usr/bin/env bash
# The real OPA engine for gateway-opa's tests. Sourced by scripts/test (needs scripts/lib.sh).
#
# No `opa` binary is packaged for this machine. PyPI's opa-golib-python-bindings ships OPA as a
# Go c-shared library with a ctypes wrapper; its metadata asks for Python >= 3.14, but the
# library loads under Debian's Python 3.11, so the wheel is downloaded for 3.14 (no
# dependencies), checked against a pinned SHA-256 and unpacked into a cache outside the clone.
#
# opa_start
#   - installs python3 and python3-pip when `python3 -m pip` is missing, then the wheel into
#     $OPA_CACHE_ROOT/<version>/ (default /var/cache/agent-gateway/opa/0.4.4/, or
#     ~/.cache/agent-gateway/opa/0.4.4/ when /var/cache is not writable) unless present;
#   - checks that the library loads and runs a query;
#   - starts tools/opa/opa_harness.py serve (a Data API server backed by the real engine,
#     loaded with policies/) on a free loopback port and waits until it answers;
#   - exports GATEWAY_TEST_OPA_PYTHONPATH (the unpacked wheel), GATEWAY_TEST_OPA_HARNESS (the
#     harness script) and GATEWAY_TEST_OPA_URL (the server's base URL).
# opa_stop
#   - stops the server opa_start started (by its pid) and nothing else.
#
# Cost: the first run downloads 13 MB (a few seconds); later runs only start the server (< 1 s).

OPA_BINDINGS_VERSION=0.4.4
OPA_ENGINE_VERSION=v1.20.2
OPA_WHEEL=opa_golib_python_bindings-0.4.4-py3-none-manylinux_2_34_x86_64.whl
OPA_WHEEL_SHA256=d411c901e14b8c7c3023e23e4a944f4cf429c1d31baf80e959e57d11efbfd24a
# The cache: /var/cache/agent-gateway/opa when it can be written (CI runs as root), else the
# user's cache directory.
if [ -z "${OPA_CACHE_ROOT:-}" ]; then
  if mkdir -p /var/cache/agent-gateway/opa 2>/dev/null && [ -w /var/cache/agent-gateway/opa ]; then
    OPA_CACHE_ROOT=/var/cache/agent-gateway/opa
  else
    OPA_CACHE_ROOT="${XDG_CACHE_HOME:-$HOME/.cache}/agent-gateway/opa"
  fi
fi
_OPA_SERVER_PID=""
_OPA_LOG=""

_opa_install() {
  local dir="$OPA_CACHE_ROOT/$OPA_BINDINGS_VERSION"
  if [ -f "$dir/opa_bindings/libopabridge.so" ]; then echo "$dir"; return 0; fi
  local tmp
  tmp="$(mktemp -d /tmp/agent-gateway-opa.XXXXXX)"
  log "opa: downloading opa-golib-python-bindings==$OPA_BINDINGS_VERSION (OPA $OPA_ENGINE_VERSION)"
  if ! python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.14 \
    --platform manylinux_2_34_x86_64 -d "$tmp" "opa-golib-python-bindings==$OPA_BINDINGS_VERSION" >&2; then
    log "opa: pip download failed"; rm -rf "$tmp"; return 1
  fi
  local actual
  actual="$(sha256sum "$tmp/$OPA_WHEEL" | cut -d' ' -f1)"
  if [ "$actual" != "$OPA_WHEEL_SHA256" ]; then
    log "opa: $OPA_WHEEL has SHA-256 $actual, expected $OPA_WHEEL_SHA256"; rm -rf "$tmp"; return 1
  fi
  mkdir -p "$tmp/unpacked" "$OPA_CACHE_ROOT"
  python3 -m zipfile -e "$tmp/$OPA_WHEEL" "$tmp/unpacked"
  # Atomic: a concurrent or interrupted install never leaves a half-unpacked cache.
  rm -rf "$dir.partial"
  mv "$tmp/unpacked" "$dir.partial"
  mv -T "$dir.partial" "$dir" 2>/dev/null || rm -rf "$dir.partial"
  rm -rf "$tmp"
  echo "$dir"
}

opa_start() {
  if [ "${GATEWAY_OPA:-1}" = "0" ]; then log "opa: disabled (GATEWAY_OPA=0)"; return 0; fi
  if ! python3 -m pip --version >/dev/null 2>&1; then ensure_packages python3 python3-pip || return 1; fi
  local dir
  dir="$(_opa_install)" || return 1
  if ! PYTHONPATH="$dir" timeout 30 python3 -c \
    'from opa_bindings.engine import OpaEngine; e = OpaEngine(); e.add_policy("p.rego", "package p\nx := 1\n"); assert e.eval_document("p.x") == 1'; then
    log "opa: the OPA library in $dir does not load"; return 1
  fi
  export GATEWAY_TEST_OPA_PYTHONPATH="$dir"
  export GATEWAY_TEST_OPA_HARNESS="$PWD/tools/opa/opa_harness.py"
  local port
  port="$(free_port)"
  _OPA_LOG="$(mktemp /tmp/agent-gateway-opa-server.XXXXXX.log)"
  PYTHONPATH="$dir" python3 "$GATEWAY_TEST_OPA_HARNESS" serve --policies "$PWD/policies" \
    --port "$port" >"$_OPA_LOG" 2>&1 &
  _OPA_SERVER_PID=$!
  local i
  for ((i = 0; i < 100; i++)); do
    if python3 -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:$port/health', timeout=1)" 2>/dev/null; then
      export GATEWAY_TEST_OPA_URL="http://127.0.0.1:$port"
      log "opa: OPA $OPA_ENGINE_VERSION Data API on $GATEWAY_TEST_OPA_URL (engine in $dir)"
      return 0
    fi
    kill -0 "$_OPA_SERVER_PID" 2>/dev/null || break
    sleep 0.1
  done
  log "opa: the Data API server did not answer; its log:"; tail -n 20 "$_OPA_LOG" >&2
  return 1
}

opa_stop() {
  [ -n "$_OPA_SERVER_PID" ] || return 0
  kill -TERM "$_OPA_SERVER_PID" 2>/dev/null || true
  local i
  for ((i = 0; i < 50; i++)); do kill -0 "$_OPA_SERVER_PID" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$_OPA_SERVER_PID" 2>/dev/null || true
  _OPA_SERVER_PID=""
  [ -z "$_OPA_LOG" ] || rm -f "$_OPA_LOG"
  unset GATEWAY_TEST_OPA_URL
}
