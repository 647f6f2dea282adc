#!/bin/sh
# k8s.rollout_restart: restarts the Pods of one Deployment (`kubectl rollout restart`: a new
# `kubectl.kubernetes.io/restartedAt` annotation on its Pod template, which the Deployment
# controller rolls out) through the Kubernetes API with the grant's token and nothing else, and
# prints what changed (the Deployment's generation and the annotation, before and after).
#
# Params arrive ONLY as environment variables (never spliced into this script):
#   NAMESPACE, DEPLOYMENT   the Deployment (DNS-1123 names)
# From the grant (KubernetesBroker):
#   GATEWAY_KUBERNETES_TOKEN   the grant's token (a secret: never printed, never in argv)
#   GATEWAY_KUBERNETES_SERVER  https://host:port of the API server as seen by the job; else
#                              the in-cluster https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT
#   GATEWAY_KUBERNETES_CA      PEM CA bundle of the API server; else the Pod's mounted
#                              /var/run/secrets/kubernetes.io/serviceaccount/ca.crt
# Needs `kubectl` on PATH (scripts/services/kubernetes.sh installs it as /usr/local/bin/kubectl
# and into the test image). The token needs, in NAMESPACE:
#   k8s:<ns>:deployments/<name>:get  and  k8s:<ns>:deployments/<name>:patch
set -eu

fail() { printf 'k8s.rollout_restart: %s\n' "$1" >&2; exit 2; }
dns_label() { # value what: a DNS-1123 label (namespace)
  case $1 in '' | -* | *- | *[!a-z0-9-]*) fail "$2 is not a DNS-1123 label" ;; esac
  [ ${#1} -le 63 ] || fail "$2 is longer than 63 characters"
}
dns_name() { # value what: a DNS-1123 subdomain (object name)
  case $1 in '' | [!a-z0-9]* | *[!a-z0-9] | *[!a-z0-9.-]* | *..* | *.-* | *-.*) fail "$2 is not a DNS-1123 name" ;; esac
  [ ${#1} -le 253 ] || fail "$2 is longer than 253 characters"
}
dns_label "${NAMESPACE:-}" NAMESPACE
dns_name "${DEPLOYMENT:-}" DEPLOYMENT

# --- a kubeconfig holding only the grant's token (the same block in k8s-scale.sh) ---
token=${GATEWAY_KUBERNETES_TOKEN:-}
[ -n "$token" ] || fail "no GATEWAY_KUBERNETES_TOKEN: the job has no grant"
case $token in *[!A-Za-z0-9._-]*) fail "GATEWAY_KUBERNETES_TOKEN is not a bearer token" ;; esac
server=${GATEWAY_KUBERNETES_SERVER:-}
if [ -z "$server" ] && [ -n "${KUBERNETES_SERVICE_HOST:-}" ]; then
  case $KUBERNETES_SERVICE_HOST in
    *:*) server="https://[$KUBERNETES_SERVICE_HOST]:${KUBERNETES_SERVICE_PORT:-443}" ;;
    *) server="https://$KUBERNETES_SERVICE_HOST:${KUBERNETES_SERVICE_PORT:-443}" ;;
  esac
fi
[ -n "$server" ] || fail "no API server: set GATEWAY_KUBERNETES_SERVER (broker job_server)"
case $server in
  https://*) ;;
  *) fail "the API server URL must be https://" ;;
esac
case ${server#https://} in '' | *[!]A-Za-z0-9.:/[-]*) fail "the API server URL has unexpected characters" ;; esac
umask 077
dir="${TMPDIR:-/tmp}/agw-kube.$$"
case $dir in /*) ;; *) fail "TMPDIR ($dir) is not an absolute path" ;; esac
case $dir in *[!A-Za-z0-9._/-]*) fail "TMPDIR ($dir) has unexpected characters" ;; esac
mkdir "$dir" || fail "cannot create $dir"
trap 'rm -rf "$dir"' EXIT
trap 'exit 143' TERM INT
if [ -n "${GATEWAY_KUBERNETES_CA:-}" ]; then
  printf '%s\n' "$GATEWAY_KUBERNETES_CA" >"$dir/ca.crt"
elif [ -r /var/run/secrets/kubernetes.io/serviceaccount/ca.crt ]; then
  cat /var/run/secrets/kubernetes.io/serviceaccount/ca.crt >"$dir/ca.crt"
else
  fail "no CA for the API server: set GATEWAY_KUBERNETES_CA (broker job_ca_pem)"
fi
# printf is a shell builtin: the token never appears in any process's argv.
printf '%s' "$token" >"$dir/token"
cat >"$dir/config" <<KC
apiVersion: v1
kind: Config
clusters:
- name: target
  cluster:
    server: '$server'
    certificate-authority: '$dir/ca.crt'
users:
- name: grant
  user:
    tokenFile: '$dir/token'
contexts:
- name: grant
  context: {cluster: target, user: grant}
current-context: grant
KC
kc() { kubectl --kubeconfig="$dir/config" --cache-dir="$dir/cache" --request-timeout=20s "$@"; }
# --- end of the kubeconfig block ---

restarted() { # "generation [annotation]" -> the annotation or "(none)"
  case $1 in *" "?*) printf '%s' "${1#* }" ;; *) printf '(none)' ;; esac
}
state() {
  kc get deployment "$DEPLOYMENT" --namespace="$NAMESPACE" \
    -o 'jsonpath={.metadata.generation} {.spec.template.metadata.annotations.kubectl\.kubernetes\.io/restartedAt}'
}
before=$(state)
kc rollout restart deployment "$DEPLOYMENT" --namespace="$NAMESPACE" >/dev/null
after=$(state)
printf 'restarted deployment %s/%s: generation %s -> %s, restartedAt %s -> %s\n' \
  "$NAMESPACE" "$DEPLOYMENT" "${before%% *}" "${after%% *}" "$(restarted "$before")" "$(restarted "$after")"
[ "$before" != "$after" ] || fail "the Deployment did not change"
