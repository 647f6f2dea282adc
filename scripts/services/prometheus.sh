#!/usr/bin/env bash
# The Prometheus project's own exposition parsers, for gateway-server's /metrics tests.
# Sourced by scripts/test (needs scripts/lib.sh).
#
# prometheus_start
#   - installs Debian's python3-prometheus-client (the official Python client, whose parsers
#     read both OpenMetrics and the Prometheus text format) when it is missing;
#   - exports GATEWAY_TEST_PROM_PARSER ("INTERPRETER SCRIPT": Debian's python3, which has the
#     package, and tools/promparse/parse.py).
# prometheus_stop
#   - nothing to stop: no process is started.

prometheus_start() {
  ensure_packages python3 python3-prometheus-client || return 1
  # Debian's interpreter, not whatever `python3` comes first on PATH (e.g. a pyenv shim
  # without Debian's dist-packages).
  /usr/bin/python3 -c 'import prometheus_client.openmetrics.parser' || {
    log "prometheus: python3-prometheus-client does not import"; return 1
  }
  export GATEWAY_TEST_PROM_PARSER="/usr/bin/python3 $PWD/tools/promparse/parse.py"
}

prometheus_stop() {
  :
}
