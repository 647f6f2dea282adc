#!/usr/bin/env bash
# The official Python MCP SDK (PyPI `mcp`), for gateway-server's SDK tests. Sourced by
# scripts/test (needs scripts/lib.sh).
#
# mcp_sdk_start
#   - installs python3-venv when a virtual environment cannot be made;
#   - creates a virtual environment with mcp==$MCP_PYTHON_SDK_VERSION under
#     /var/cache/agent-gateway/mcp-python/<version>/ (or ~/.cache/… when /var/cache is not
#     writable) unless it is there (about 20 s and 70 MB the first time, nothing later);
#   - exports GATEWAY_TEST_MCP_PYTHON (its interpreter) and GATEWAY_TEST_MCP_PYTHON_CLIENT
#     (tools/mcp_sdk/python_client.py).
# mcp_sdk_stop
#   - nothing to stop: no process is started.

MCP_PYTHON_SDK_VERSION=2.3.0
if [ -z "${MCP_SDK_CACHE_ROOT:-}" ]; then
  if mkdir -p /var/cache/agent-gateway/mcp-python 2>/dev/null && [ -w /var/cache/agent-gateway/mcp-python ]; then
    MCP_SDK_CACHE_ROOT=/var/cache/agent-gateway/mcp-python
  else
    MCP_SDK_CACHE_ROOT="${XDG_CACHE_HOME:-$HOME/.cache}/agent-gateway/mcp-python"
  fi
fi

mcp_sdk_start() {
  local dir="$MCP_SDK_CACHE_ROOT/$MCP_PYTHON_SDK_VERSION"
  # `.complete` is written only after a whole install: a run cut short leaves no half venv.
  if [ ! -e "$dir/.complete" ]; then
    python3 -m venv --help >/dev/null 2>&1 || ensure_packages python3-venv || return 1
    log "mcp sdk: installing mcp==$MCP_PYTHON_SDK_VERSION into $dir (once, cached)"
    rm -rf "$dir" && mkdir -p "$(dirname "$dir")"
    python3 -m venv "$dir" && "$dir/bin/pip" install --quiet "mcp==$MCP_PYTHON_SDK_VERSION" || {
      log "mcp sdk: installing the SDK failed"; rm -rf "$dir"; return 1
    }
    touch "$dir/.complete"
  fi
  "$dir/bin/python" -c 'import mcp.client.streamable_http' || {
    log "mcp sdk: the SDK does not import"; return 1
  }
  export GATEWAY_TEST_MCP_PYTHON="$dir/bin/python"
  export GATEWAY_TEST_MCP_PYTHON_CLIENT="$PWD/tools/mcp_sdk/python_client.py"
}

mcp_sdk_stop() {
  :
}
