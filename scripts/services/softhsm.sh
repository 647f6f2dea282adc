#!/usr/bin/env bash
# Throw-away SoftHSM2 token for the PKCS#11 checkpoint signer tests. Sourced by scripts/test
# (needs scripts/lib.sh).
#   softhsm_start: installs softhsm2 if missing, makes a token directory and configuration in a
#                  temp dir and initialises one token in it. Exports SOFTHSM2_CONF (read by the
#                  module) and GATEWAY_TEST_PKCS11_MODULE, _TOKEN and _PIN.
#   softhsm_stop:  removes the temp dir (only what softhsm_start made).

_SOFTHSM_DIR=""

softhsm_start() {
  ensure_packages softhsm2
  _SOFTHSM_DIR="$(mktemp -d /tmp/gateway-softhsm.XXXXXX)"
  mkdir "$_SOFTHSM_DIR/tokens"
  printf 'directories.tokendir = %s/tokens\nobjectstore.backend = file\nlog.level = ERROR\n' \
    "$_SOFTHSM_DIR" > "$_SOFTHSM_DIR/softhsm2.conf"
  export SOFTHSM2_CONF="$_SOFTHSM_DIR/softhsm2.conf"
  export GATEWAY_TEST_PKCS11_MODULE=/usr/lib/softhsm/libsofthsm2.so
  export GATEWAY_TEST_PKCS11_TOKEN=agent-gateway-test
  # A throw-away token's PIN: random per run, never reused.
  GATEWAY_TEST_PKCS11_PIN="$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')"
  export GATEWAY_TEST_PKCS11_PIN
  softhsm2-util --init-token --free --label "$GATEWAY_TEST_PKCS11_TOKEN" \
    --so-pin "so-$GATEWAY_TEST_PKCS11_PIN" --pin "$GATEWAY_TEST_PKCS11_PIN" > /dev/null
}

softhsm_stop() {
  if [ -n "$_SOFTHSM_DIR" ] && [ -d "$_SOFTHSM_DIR" ]; then
    rm -rf "$_SOFTHSM_DIR"
  fi
  _SOFTHSM_DIR=""
}
