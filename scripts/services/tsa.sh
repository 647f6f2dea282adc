#!/usr/bin/env bash
# Throw-away RFC 3161 time-stamping authority for the audit witness tests. Sourced by
# scripts/test (needs scripts/lib.sh).
#   tsa_start: makes a test CA and a TSA certificate (extendedKeyUsage timeStamping, critical)
#              in a temp dir, and serves `openssl ts -reply` over HTTP on a free loopback port
#              (a small python3 responder: POST application/timestamp-query in,
#              application/timestamp-reply out). Exports GATEWAY_TEST_TSA_URL and
#              GATEWAY_TEST_TSA_CA (the CA certificate, for `openssl ts -verify -CAfile`).
#   tsa_stop:  stops the responder and removes the temp dir (only what tsa_start made).

_TSA_DIR=""
_TSA_PID=""

tsa_start() {
  ensure_packages openssl python3
  _TSA_DIR="$(mktemp -d /tmp/gateway-tsa.XXXXXX)"
  local d="$_TSA_DIR"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj "/CN=gateway test TSA CA" -keyout "$d/ca.key" -out "$d/ca.pem" 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -subj "/CN=gateway test TSA" -keyout "$d/tsa.key" -out "$d/tsa.csr" 2>/dev/null
  printf 'extendedKeyUsage=critical,timeStamping\nbasicConstraints=CA:FALSE\n' > "$d/ext.cnf"
  openssl x509 -req -in "$d/tsa.csr" -CA "$d/ca.pem" -CAkey "$d/ca.key" -CAcreateserial \
    -days 2 -extfile "$d/ext.cnf" -out "$d/tsa.pem" 2>/dev/null
  echo 01 > "$d/serial"
  cat > "$d/ts.cnf" <<CNF
[ tsa ]
default_tsa = tsa_config
[ tsa_config ]
dir = $d
serial = \$dir/serial
crypto_device = builtin
signer_cert = \$dir/tsa.pem
signer_key = \$dir/tsa.key
signer_digest = sha256
default_policy = 1.2.3.4.1
digests = sha256, sha384, sha512
accuracy = secs:1
ordering = yes
tsa_name = no
ess_cert_id_chain = no
ess_cert_id_alg = sha256
CNF
  cat > "$d/responder.py" <<'PY'
import http.server, subprocess, sys, tempfile, threading, os
CONF = sys.argv[2]
LOCK = threading.Lock()
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        with LOCK, tempfile.TemporaryDirectory() as t:
            q, r = os.path.join(t, "q.tsq"), os.path.join(t, "r.tsr")
            open(q, "wb").write(body)
            p = subprocess.run(["openssl", "ts", "-reply", "-config", CONF, "-queryfile", q,
                                "-out", r], capture_output=True)
            if p.returncode != 0 or not os.path.exists(r):
                self.send_response(400); self.end_headers(); self.wfile.write(p.stderr); return
            out = open(r, "rb").read()
        self.send_response(200)
        self.send_header("Content-Type", "application/timestamp-reply")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
PY
  local port; port="$(free_port)"
  python3 "$d/responder.py" "$port" "$d/ts.cnf" &
  _TSA_PID=$!
  for _ in $(seq 1 50); do
    if python3 -c "import socket; socket.create_connection(('127.0.0.1', $port), 0.2)" 2>/dev/null; then
      break
    fi
    sleep 0.1
  done
  export GATEWAY_TEST_TSA_URL="http://127.0.0.1:$port/"
  export GATEWAY_TEST_TSA_CA="$d/ca.pem"
  log "tsa: openssl ts responder on 127.0.0.1:$port (state in $d)"
}

tsa_stop() {
  if [ -n "$_TSA_PID" ]; then kill "$_TSA_PID" 2>/dev/null || true; wait "$_TSA_PID" 2>/dev/null || true; fi
  if [ -n "$_TSA_DIR" ] && [ -d "$_TSA_DIR" ]; then rm -rf "$_TSA_DIR"; fi
  _TSA_PID=""; _TSA_DIR=""
  unset GATEWAY_TEST_TSA_URL GATEWAY_TEST_TSA_CA
}
