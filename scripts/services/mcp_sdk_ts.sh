#!/usr/bin/env bash
# The official TypeScript MCP SDK (npm `@modelcontextprotocol/sdk`), for gateway-server's SDK
# tests (crates/gateway-server/tests/mcp_sdk_ts.rs). Sourced by scripts/test (needs
# scripts/lib.sh).
#
# mcp_sdk_ts_start
#   - installs Debian's nodejs and npm when `node` or `npm` is missing;
#   - installs the SDK exactly as tools/mcp_sdk/ts/package-lock.json pins it (`npm ci`) under
#     /var/cache/agent-gateway/mcp-ts/<version>/ (or ~/.cache/… when /var/cache is not
#     writable) unless the same lock file is installed there (about 10 s and 30 MB the first
#     time, nothing later);
#   - exports GATEWAY_TEST_MCP_NODE (node), GATEWAY_TEST_MCP_TS_CLIENT
#     (tools/mcp_sdk/ts/client.mjs) and GATEWAY_TEST_MCP_TS_SDK (the directory whose
#     node_modules holds the SDK: an ES module cannot find packages through NODE_PATH, so the
#     driver imports the SDK from there by file URL).
# mcp_sdk_ts_stop
#   - nothing to stop: no process is started.

MCP_TS_SDK_VERSION=1.32.2
if [ -z "${MCP_TS_SDK_CACHE_ROOT:-}" ]; then
  if mkdir -p /var/cache/agent-gateway/mcp-ts 2>/dev/null && [ -w /var/cache/agent-gateway/mcp-ts ]; then
    MCP_TS_SDK_CACHE_ROOT=/var/cache/agent-gateway/mcp-ts
  else
    MCP_TS_SDK_CACHE_ROOT="${XDG_CACHE_HOME:-$HOME/.cache}/agent-gateway/mcp-ts"
  fi
fi

mcp_sdk_ts_start() {
  local src="$PWD/tools/mcp_sdk/ts"
  local dir="$MCP_TS_SDK_CACHE_ROOT/$MCP_TS_SDK_VERSION"
  if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    ensure_packages nodejs npm || return 1
  fi
  grep -q "\"@modelcontextprotocol/sdk\": \"$MCP_TS_SDK_VERSION\"" "$src/package.json" || {
    log "mcp ts sdk: $src/package.json does not pin $MCP_TS_SDK_VERSION"; return 1
  }
  # `.complete` is written only after a whole install, and the lock file it was made from is
  # kept beside it: a run cut short, or a changed lock file, means a fresh install.
  if [ ! -e "$dir/.complete" ] || ! cmp -s "$src/package-lock.json" "$dir/package-lock.json"; then
    log "mcp ts sdk: installing @modelcontextprotocol/sdk@$MCP_TS_SDK_VERSION into $dir (once, cached)"
    rm -rf "$dir" && mkdir -p "$dir"
    cp "$src/package.json" "$src/package-lock.json" "$dir/" &&
      (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error >/dev/null) || {
      log "mcp ts sdk: installing the SDK failed"; rm -rf "$dir"; return 1
    }
    touch "$dir/.complete"
  fi
  local installed
  installed="$(node -p 'require(process.argv[1]).version' \
    "$dir/node_modules/@modelcontextprotocol/sdk/package.json" 2>/dev/null)"
  [ "$installed" = "$MCP_TS_SDK_VERSION" ] || {
    log "mcp ts sdk: found version '${installed}' in $dir, not $MCP_TS_SDK_VERSION"; return 1
  }
  export GATEWAY_TEST_MCP_NODE
  GATEWAY_TEST_MCP_NODE="$(command -v node)"
  export GATEWAY_TEST_MCP_TS_CLIENT="$src/client.mjs"
  export GATEWAY_TEST_MCP_TS_SDK="$dir"
}

mcp_sdk_ts_stop() {
  :
}
