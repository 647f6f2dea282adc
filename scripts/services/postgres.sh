#!/usr/bin/env bash
# Throw-away PostgreSQL for the tests. Sourced by scripts/test (needs scripts/lib.sh).
#   postgres_start: installs postgresql if missing, initdb into a temp dir, starts it on a free
#                   loopback port (and a Unix socket in the temp dir), creates database
#                   gateway_test, exports GATEWAY_TEST_POSTGRES_URL (superuser URL). It also
#                   listens on ::1, where every role must give its password (scram-sha-256;
#                   127.0.0.1 and the socket trust everyone; pg_hba matches the client's
#                   address, so a second IPv4 loopback address would not do), and exports
#                   GATEWAY_TEST_POSTGRES_PASSWORD_HOST=::1: the PostgreSQL broker's tests log
#                   in there, so a grant's password and expiry are really checked. The Unix
#                   socket checks passwords too (only the postgres OS user logs in as role
#                   postgres by peer): sandboxed jobs reach the server through it
#                   (GATEWAY_TEST_POSTGRES_SOCKET_DIR), and under trust any job could log in
#                   as the superuser.
#   postgres_stop:  stops that server and removes the temp dir (only what postgres_start made).

_PG_DIR=""
_PG_BIN=""

_pg_run() {
  # PostgreSQL refuses to run as root: run its tools as the postgres OS user.
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

postgres_start() {
  if [ -n "${GATEWAY_TEST_POSTGRES_URL:-}" ] && [ -z "$_PG_DIR" ]; then
    log "postgres: using GATEWAY_TEST_POSTGRES_URL from the environment"; return 0
  fi
  ensure_packages postgresql python3
  _PG_BIN="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1)"
  if [ -z "$_PG_BIN" ] || [ ! -x "$_PG_BIN/initdb" ]; then
    log "postgres: initdb not found under /usr/lib/postgresql/*/bin"; return 1
  fi
  _PG_DIR="$(mktemp -d /tmp/gateway-pg.XXXXXX)"
  chmod 0755 "$_PG_DIR"
  if [ "$(id -u)" -eq 0 ]; then chown postgres:postgres "$_PG_DIR"; fi
  local port; port="$(free_port)"
  _pg_run "$_PG_BIN/initdb" -D "$_PG_DIR/data" -U postgres --auth=trust -E UTF8 --no-locale >/dev/null
  # First match wins: ::1 and the socket check passwords (the postgres OS user may still log in
  # as postgres over the socket, for this script), loopback IPv4 stays trusted.
  { echo "host all all ::1/128 scram-sha-256"; echo "local all postgres peer"
    echo "local all all scram-sha-256"; cat "$_PG_DIR/data/pg_hba.conf"; } \
    > "$_PG_DIR/pg_hba.conf.new"
  _pg_run cp "$_PG_DIR/pg_hba.conf.new" "$_PG_DIR/data/pg_hba.conf"
  # Test cluster: durable commits stay on (the audit tests measure durable appends).
  _pg_run "$_PG_BIN/pg_ctl" -D "$_PG_DIR/data" -l "$_PG_DIR/server.log" -w -t 60 start \
    -o "-c listen_addresses=127.0.0.1,::1 -c port=$port -c unix_socket_directories=$_PG_DIR -c max_connections=300 -c fsync=on -c synchronous_commit=on" >/dev/null
  _pg_run "$_PG_BIN/psql" -h "$_PG_DIR" -p "$port" -U postgres -d postgres -qAt \
    -c "CREATE DATABASE gateway_test" >/dev/null
  export GATEWAY_TEST_POSTGRES_URL="postgres://postgres@127.0.0.1:$port/gateway_test"
  export GATEWAY_TEST_POSTGRES_PASSWORD_HOST=::1
  export GATEWAY_TEST_POSTGRES_SOCKET_DIR="$_PG_DIR"
  log "postgres: running on 127.0.0.1:$port (data in $_PG_DIR)"
}

postgres_stop() {
  [ -n "$_PG_DIR" ] || return 0
  if [ -d "$_PG_DIR/data" ]; then
    _pg_run "$_PG_BIN/pg_ctl" -D "$_PG_DIR/data" -m immediate -w stop >/dev/null 2>&1 || true
  fi
  rm -rf "$_PG_DIR"
  _PG_DIR=""
  unset GATEWAY_TEST_POSTGRES_URL GATEWAY_TEST_POSTGRES_PASSWORD_HOST GATEWAY_TEST_POSTGRES_SOCKET_DIR
}
