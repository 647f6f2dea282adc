# db.query: runs one read-only SQL statement with the grant's PostgreSQL role and prints the
# rows (tab-separated, a header line first), at most $MAX_ROWS of them.
#
# Everything arrives in the environment: SQL (the request's param), MAX_ROWS (the catalog's),
# and from the grant PGUSER, PGPASSWORD (a secret), PGHOST, PGPORT, PGDATABASE. The SQL is
# passed to psql as one argument, never parsed by this shell, and sent as one simple query:
# several statements would run in one implicit transaction, which the role's
# default_transaction_read_only (and PGOPTIONS below) makes read-only.
set -u
psql=
for p in /usr/lib/postgresql/*/bin/psql /usr/bin/psql; do
  if [ -x "$p" ]; then psql=$p; break; fi
done
if [ -z "$psql" ]; then
  echo "db.query: psql (postgresql-client) is not installed" >&2
  exit 127
fi
export PGOPTIONS="-c default_transaction_read_only=on"
export PGCONNECT_TIMEOUT=10
out="$TMPDIR/rows"
# -X: no psqlrc; -w: never prompt; ON_ERROR_STOP: a failed statement fails the job.
"$psql" -X -w -q -A -F '	' -P footer=off -v ON_ERROR_STOP=1 -c "$SQL" >"$out"
rc=$?
if [ "$rc" -ne 0 ]; then
  exit "$rc"
fi
limit=$((MAX_ROWS + 1))
head -n "$limit" "$out"
total=$(wc -l <"$out")
if [ "$total" -gt "$limit" ]; then
  echo "db.query: $((total - 1)) rows, only the first $MAX_ROWS shown" >&2
fi
