#!/usr/bin/env bash
# Test service: a real, throw-away Kubernetes v1.20 cluster on loopback for gateway-kubernetes.
#
# etcd (Debian's etcd-server) + kube-apiserver (RBAC, token auth, TokenRequest) +
# kube-controller-manager (service accounts, Jobs, garbage collection) and, unless
# GATEWAY_K8S_NODE=0, a node: kube-scheduler + kubelet on dockershim against a PRIVATE dockerd
# (its own socket, data and exec roots; never the main dockerd of scripts/services/docker.sh).
# The Kubernetes binaries (and kubectl) are built once from Debian's source package and cached
# (scripts/kubernetes/build.sh).
#
# kubectl: installed as /usr/local/bin/kubectl (on the PATH the local runner gives jobs, and
# under /usr, which its sandbox binds read-only) and as /bin/kubectl in the test image, for
# the k8s.scale / k8s.rollout_restart job scripts (catalog/jobs/).
#
# Pod network (with the node, unless GATEWAY_K8S_POD_NETWORK=0): the kubelet runs in CNI mode
# with Debian's containernetworking-plugins (bridge + host-local IPAM; loopback). Pods get an
# address in $_K8S_POD_CIDR on the host bridge $_K8S_BRIDGE, which carries $_K8S_POD_GW; no
# route beyond that subnet, no masquerading, no forwarding asked of the host. The apiserver then
# listens on $_K8S_POD_GW (in its certificate's SANs), the one address both the host and the
# Pods reach; kube-proxy does not run, so the `kubernetes` Service IP 10.0.0.1 does NOT route
# and jobs are pointed at the apiserver explicitly (GATEWAY_TEST_K8S_POD_SERVER).
# NetworkPolicies are NOT enforced (the bridge plugin does not implement them). What is
# enforced instead, coarsely, by an iptables chain ($_K8S_FENCE) on traffic from the bridge to
# the host: Pods may open TCP connections to the apiserver's port and nothing else on the host.
# Pod-to-Pod traffic on the bridge is not filtered. `kubernetes_stop` removes the chain and the
# bridge.
#
# Exports: KUBECONFIG and GATEWAY_TEST_KUBECONFIG (admin kubeconfig), GATEWAY_TEST_K8S_IMAGE
# (a busybox image present on the node, when the node runs), GATEWAY_TEST_K8S_NODE (1/0),
# GATEWAY_TEST_KUBECTL (kubectl's path), GATEWAY_TEST_K8S_LOOPBACK_SERVER (the apiserver at
# 127.0.0.1, for local-sandbox jobs), and with the Pod network GATEWAY_TEST_K8S_POD_SERVER
# (the apiserver URL as Pods reach it).
# Sourced by scripts/test; `kubernetes_start` / `kubernetes_stop`.

_K8S_RUN=/run/agent-gateway-k8s
_K8S_PIDS=()
_K8S_BRIDGE=agw-cni0
_K8S_POD_CIDR=10.244.77.0/24
_K8S_POD_GW=10.244.77.1
_K8S_FENCE=AGW-K8S-PODS
_K8S_NET=0

_k8s_wait_file() { # path seconds
  local i
  for ((i = 0; i < $2 * 10; i++)); do [ -e "$1" ] && return 0; sleep 0.1; done
  return 1
}

_k8s_kubeconfig() { # file server token
  cat >"$1" <<KC
apiVersion: v1
kind: Config
clusters:
- name: agw-test
  cluster:
    server: $2
    certificate-authority: $_K8S_DIR/pki/ca.crt
users:
- name: agw-test
  user:
    token: $3
contexts:
- name: agw-test
  context: {cluster: agw-test, user: agw-test, namespace: default}
current-context: agw-test
KC
}

_k8s_pki() {
  local d="$_K8S_DIR/pki"
  mkdir -p "$d"
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=agw-test-ca" \
    -keyout "$d/ca.key" -out "$d/ca.crt" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -subj "/CN=kube-apiserver" \
    -keyout "$d/apiserver.key" -out "$d/apiserver.csr" 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1,IP:10.0.0.1,IP:%s,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default.svc\nextendedKeyUsage=serverAuth\n' "$_K8S_POD_GW" >"$d/ext.cnf"
  openssl x509 -req -in "$d/apiserver.csr" -CA "$d/ca.crt" -CAkey "$d/ca.key" -CAcreateserial \
    -days 2 -extfile "$d/ext.cnf" -out "$d/apiserver.crt" 2>/dev/null
  openssl genrsa -out "$d/sa.key" 2048 2>/dev/null
  openssl rsa -in "$d/sa.key" -pubout -out "$d/sa.pub" 2>/dev/null
}

# curl against the test apiserver. A user agent that is not curl's: kube-apiserver pretty-prints
# JSON for curl, and 1.20's pretty printer (json-iterator on reflect2 1.0.1) crashes when built
# with Go >= 1.18.
_k8s_curl() { curl -fsS -A agw-test-script --cacert "$_K8S_DIR/pki/ca.crt" "$@"; }

_k8s_token() { head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n'; }

# Private dockerd for the kubelet, plus the pause and busybox test images imported into it.
_k8s_docker_start() {
  mkdir -p "$_K8S_RUN" "$_K8S_DIR/docker-data"
  install -m 0755 "$_K8S_SCRIPTS/runc-wrapper.sh" "$_K8S_DIR/runc-wrapper"
  dockerd --data-root "$_K8S_DIR/docker-data" --exec-root "$_K8S_RUN/exec" \
    --pidfile "$_K8S_RUN/docker.pid" -H "unix://$_K8S_RUN/docker.sock" \
    --bridge=none --iptables=false --ip-masq=false --ip-forward=false \
    --add-runtime "agw-runc=$_K8S_DIR/runc-wrapper" --default-runtime agw-runc \
    --storage-driver=vfs >"$_K8S_DIR/logs/dockerd.log" 2>&1 &
  _K8S_PIDS+=($!)
  local i
  for ((i = 0; i < 300; i++)); do
    DOCKER_HOST="unix://$_K8S_RUN/docker.sock" docker version >/dev/null 2>&1 && break
    sleep 0.1
  done
  DOCKER_HOST="unix://$_K8S_RUN/docker.sock" docker version >/dev/null 2>&1 || {
    log "kubernetes: private dockerd did not start"; tail -n 20 "$_K8S_DIR/logs/dockerd.log" >&2; return 1; }
  # One busybox rootfs for both images (Debian's busybox-static, no registry needed).
  local root="$_K8S_DIR/rootfs"
  mkdir -p "$root/bin" "$root/tmp" "$root/etc"
  cp /bin/busybox "$root/bin/busybox"
  local a
  for a in sh printf head tr sleep cat env echo true false ls id wc mkdir rm nc wget ip; do ln -sf busybox "$root/bin/$a"; done
  # kubectl (static) for the k8s.* job scripts.
  cp "$_K8S_BIN/kubectl" "$root/bin/kubectl"
  echo 'nobody:x:65532:65532:nobody:/tmp:/bin/sh' >"$root/etc/passwd"
  tar -C "$root" -cf "$_K8S_DIR/rootfs.tar" .
  DOCKER_HOST="unix://$_K8S_RUN/docker.sock" docker import \
    --change 'CMD ["/bin/sh","-c","trap \"exit 0\" TERM INT; sleep 2147483647 & wait"]' \
    "$_K8S_DIR/rootfs.tar" agw-pause:1 >/dev/null
  DOCKER_HOST="unix://$_K8S_RUN/docker.sock" docker import "$_K8S_DIR/rootfs.tar" \
    agw-busybox:1 >/dev/null
}

# The Pod network: the bridge (with the address the apiserver will listen on), the CNI config,
# and the fence. Returns non-zero (and undoes itself) if any of it fails.
_k8s_net_start() {
  [ -x /usr/lib/cni/bridge ] && [ -x /usr/lib/cni/host-local ] && [ -x /usr/lib/cni/loopback ] || {
    log "kubernetes: CNI plugins missing in /usr/lib/cni"; return 1; }
  # A bridge left by a killed run of this script (nothing else uses the name).
  ip link del "$_K8S_BRIDGE" 2>/dev/null || true
  _k8s_fence_del
  ip link add "$_K8S_BRIDGE" type bridge &&
    ip addr add "$_K8S_POD_GW/${_K8S_POD_CIDR#*/}" dev "$_K8S_BRIDGE" &&
    ip link set "$_K8S_BRIDGE" up || { log "kubernetes: cannot create bridge $_K8S_BRIDGE"; _k8s_net_stop; return 1; }
  _K8S_NET=1
  mkdir -p "$_K8S_DIR/cni/net.d" "$_K8S_DIR/cni/cache" "$_K8S_DIR/cni/ipam"
  cat >"$_K8S_DIR/cni/net.d/10-agw.conflist" <<CNI
{"cniVersion": "0.4.0", "name": "agw-pods", "plugins": [{
  "type": "bridge", "bridge": "$_K8S_BRIDGE", "isGateway": false, "ipMasq": false,
  "hairpinMode": false,
  "ipam": {"type": "host-local", "dataDir": "$_K8S_DIR/cni/ipam",
           "ranges": [[{"subnet": "$_K8S_POD_CIDR", "rangeStart": "${_K8S_POD_GW%.*}.10",
                        "rangeEnd": "${_K8S_POD_GW%.*}.250", "gateway": "$_K8S_POD_GW"}]]}
}]}
CNI
}

# The fence: from the bridge to the host, only TCP to the apiserver's port ($1).
_k8s_fence_add() {
  iptables -w -N "$_K8S_FENCE" &&
    iptables -w -A "$_K8S_FENCE" -p tcp --dport "$1" -j ACCEPT &&
    iptables -w -A "$_K8S_FENCE" -j DROP &&
    iptables -w -I INPUT 1 -i "$_K8S_BRIDGE" -j "$_K8S_FENCE"
}

_k8s_fence_del() {
  while iptables -w -D INPUT -i "$_K8S_BRIDGE" -j "$_K8S_FENCE" 2>/dev/null; do :; done
  iptables -w -F "$_K8S_FENCE" 2>/dev/null || true
  iptables -w -X "$_K8S_FENCE" 2>/dev/null || true
}

_k8s_net_stop() {
  _k8s_fence_del
  ip link del "$_K8S_BRIDGE" 2>/dev/null || true
  _K8S_NET=0
}

kubernetes_start() {
  if [ "${GATEWAY_K8S:-1}" = "0" ]; then log "kubernetes: disabled (GATEWAY_K8S=0)"; return 0; fi
  _K8S_SCRIPTS="$(cd "$(dirname "${BASH_SOURCE[0]}")/../kubernetes" && pwd)"
  local cache
  cache="$(bash "$_K8S_SCRIPTS/build.sh")" || return 1
  local bin="$cache/bin"
  _K8S_BIN="$bin"
  ensure_packages etcd-server openssl jq busybox-static curl ca-certificates || return 1
  local node="${GATEWAY_K8S_NODE:-1}"
  local podnet="${GATEWAY_K8S_POD_NETWORK:-1}"
  [ "$node" = "1" ] || podnet=0
  if [ "$node" = "1" ]; then ensure_packages docker.io runc || return 1; fi
  if [ "$podnet" = "1" ]; then ensure_packages containernetworking-plugins iproute2 iptables util-linux || return 1; fi
  # kubectl where jobs find it: on the local runner's PATH, under /usr (bound into its sandbox).
  if ! cmp -s "$bin/kubectl" /usr/local/bin/kubectl; then
    install -m 0755 "$bin/kubectl" /usr/local/bin/kubectl.agw.$$ && mv /usr/local/bin/kubectl.agw.$$ /usr/local/bin/kubectl || return 1
  fi
  export GATEWAY_TEST_KUBECTL=/usr/local/bin/kubectl

  _K8S_DIR="$(mktemp -d /tmp/agw-k8s.XXXXXX)"
  mkdir -p "$_K8S_DIR/logs"
  _k8s_pki
  # With the Pod network the apiserver listens on the bridge's address (host and Pods reach
  # it); without, on loopback as before.
  local api_host=127.0.0.1
  if [ "$podnet" = "1" ]; then
    if _k8s_net_start; then api_host="$_K8S_POD_GW"; else log "kubernetes: no Pod network; Pods cannot reach the apiserver"; fi
  fi

  local etcd_port etcd_peer api_port
  etcd_port="$(free_port)"; etcd_peer="$(free_port)"; api_port="$(free_port)"
  etcd --data-dir "$_K8S_DIR/etcd" --listen-client-urls "http://127.0.0.1:$etcd_port" \
    --advertise-client-urls "http://127.0.0.1:$etcd_port" \
    --listen-peer-urls "http://127.0.0.1:$etcd_peer" --initial-advertise-peer-urls "http://127.0.0.1:$etcd_peer" \
    --initial-cluster "default=http://127.0.0.1:$etcd_peer" --unsafe-no-fsync \
    >"$_K8S_DIR/logs/etcd.log" 2>&1 &
  _K8S_PIDS+=($!)

  local admin_token node_token
  admin_token="$(_k8s_token)"; node_token="$(_k8s_token)"
  # Test-only identities: the admin (tests), and the control-plane/node components.
  printf '%s,agw-admin,agw-admin,"system:masters"\n%s,system:node:localhost,agw-node,"system:masters,system:nodes"\n' \
    "$admin_token" "$node_token" >"$_K8S_DIR/pki/tokens.csv"
  local server="https://$api_host:$api_port"
  _k8s_kubeconfig "$_K8S_DIR/admin.kubeconfig" "$server" "$admin_token"
  _k8s_kubeconfig "$_K8S_DIR/node.kubeconfig" "$server" "$node_token"

  local p="$_K8S_DIR/pki"
  # On every address (the bridge's for Pods, 127.0.0.1 for the local sandbox's loopback egress
  # forwarders, both in the certificate); Pods reach only this port of the host (AGW-K8S-PODS).
  "$bin/kube-apiserver" --etcd-servers "http://127.0.0.1:$etcd_port" \
    --bind-address 0.0.0.0 --advertise-address "$api_host" --secure-port "$api_port" --insecure-port 0 \
    --tls-cert-file "$p/apiserver.crt" --tls-private-key-file "$p/apiserver.key" \
    --client-ca-file "$p/ca.crt" --token-auth-file "$p/tokens.csv" --authorization-mode RBAC \
    --service-account-issuer https://kubernetes.default.svc --service-account-key-file "$p/sa.pub" \
    --service-account-signing-key-file "$p/sa.key" --api-audiences https://kubernetes.default.svc \
    --service-cluster-ip-range 10.0.0.0/24 --allow-privileged=false \
    --kubelet-preferred-address-types Hostname,InternalIP --profiling=false \
    >"$_K8S_DIR/logs/kube-apiserver.log" 2>&1 &
  _K8S_PIDS+=($!)

  local i ready=0
  for ((i = 0; i < 600; i++)); do
    if _k8s_curl -H "Authorization: Bearer $admin_token" "$server/readyz" >/dev/null 2>&1; then
      ready=1; break
    fi
    sleep 0.2
  done
  if [ "$ready" != 1 ]; then
    log "kubernetes: kube-apiserver not ready"; tail -n 30 "$_K8S_DIR/logs/kube-apiserver.log" >&2; return 1
  fi

  "$bin/kube-controller-manager" --kubeconfig "$_K8S_DIR/node.kubeconfig" \
    --service-account-private-key-file "$p/sa.key" --root-ca-file "$p/ca.crt" \
    --leader-elect=false --port 0 --secure-port 0 --use-service-account-credentials=false \
    --concurrent-gc-syncs 5 --controllers '*,-nodeipam,-cloud-node-lifecycle' \
    >"$_K8S_DIR/logs/kube-controller-manager.log" 2>&1 &
  _K8S_PIDS+=($!)

  export GATEWAY_TEST_K8S_NODE=0
  if [ "$node" = "1" ]; then
    if _k8s_docker_start; then
      "$bin/kube-scheduler" --kubeconfig "$_K8S_DIR/node.kubeconfig" --leader-elect=false \
        --port 0 --secure-port 0 >"$_K8S_DIR/logs/kube-scheduler.log" 2>&1 &
      _K8S_PIDS+=($!)
      local kport
      kport="$(free_port)"
      local netflags=()
      if [ "$_K8S_NET" = 1 ]; then
        netflags=(--network-plugin cni --cni-bin-dir /usr/lib/cni --cni-conf-dir "$_K8S_DIR/cni/net.d"
          --cni-cache-dir "$_K8S_DIR/cni/cache")
        _k8s_fence_add "$api_port" || { log "kubernetes: cannot install the iptables fence"; return 1; }
      fi
      "$bin/kubelet" --kubeconfig "$_K8S_DIR/node.kubeconfig" --root-dir "$_K8S_DIR/kubelet" \
        --cert-dir "$_K8S_DIR/kubelet-pki" --container-runtime docker \
        --experimental-dockershim-root-directory "$_K8S_DIR/dockershim" \
        --docker-endpoint "unix://$_K8S_RUN/docker.sock" --pod-infra-container-image agw-pause:1 \
        --hostname-override localhost --address 127.0.0.1 --port "$kport" --read-only-port 0 \
        --healthz-port 0 --anonymous-auth=true --authorization-mode AlwaysAllow \
        --cgroups-per-qos=false --enforce-node-allocatable= --fail-swap-on=false --eviction-hard= \
        --cgroup-driver cgroupfs --image-gc-high-threshold 100 --image-gc-low-threshold 99 \
        --serialize-image-pulls=false --sync-frequency 2s --file-check-frequency 2s \
        --node-status-update-frequency 5s --max-pods 50 "${netflags[@]}" \
        >"$_K8S_DIR/logs/kubelet.log" 2>&1 &
      _K8S_PIDS+=($!)
      for ((i = 0; i < 300; i++)); do
        if _k8s_curl -H "Authorization: Bearer $admin_token" \
          "$server/api/v1/nodes/localhost" 2>/dev/null | jq -e '.status.conditions[]? | select(.type=="Ready" and .status=="True")' >/dev/null; then
          export GATEWAY_TEST_K8S_NODE=1 GATEWAY_TEST_K8S_IMAGE=agw-busybox:1
          [ "$_K8S_NET" != 1 ] || export GATEWAY_TEST_K8S_POD_SERVER="$server"
          break
        fi
        sleep 0.2
      done
      [ "$GATEWAY_TEST_K8S_NODE" = 1 ] || { log "kubernetes: node not ready (see $_K8S_DIR/logs/kubelet.log); control plane only"; tail -n 15 "$_K8S_DIR/logs/kubelet.log" >&2; }
    else
      log "kubernetes: no private dockerd; control plane only"
    fi
  fi

  # The default ServiceAccount shows that the controller-manager works.
  ready=0
  for ((i = 0; i < 300; i++)); do
    if _k8s_curl -H "Authorization: Bearer $admin_token" \
      "$server/api/v1/namespaces/default/serviceaccounts/default" >/dev/null 2>&1; then
      ready=1; break
    fi
    sleep 0.2
  done
  if [ "$ready" != 1 ]; then
    log "kubernetes: no default ServiceAccount (controller-manager or apiserver down, logs in $_K8S_DIR/logs)"
    tail -n 15 "$_K8S_DIR/logs/kube-apiserver.log" "$_K8S_DIR/logs/kube-controller-manager.log" >&2
    return 1
  fi
  export KUBECONFIG="$_K8S_DIR/admin.kubeconfig" GATEWAY_TEST_KUBECONFIG="$_K8S_DIR/admin.kubeconfig"
  # The same apiserver on loopback: what a local-sandbox job reaches through its egress.
  export GATEWAY_TEST_K8S_LOOPBACK_SERVER="https://127.0.0.1:$api_port"
  log "kubernetes: apiserver $server ready (node: $GATEWAY_TEST_K8S_NODE), state in $_K8S_DIR"
}

kubernetes_stop() {
  [ -n "${_K8S_DIR:-}" ] || return 0
  local i pid
  # Reverse order: kubelet, scheduler, (dockerd later), controller-manager, apiserver, etcd.
  for ((i = ${#_K8S_PIDS[@]} - 1; i >= 0; i--)); do
    pid="${_K8S_PIDS[$i]}"
    if [ -S "$_K8S_RUN/docker.sock" ] && [ -f "$_K8S_RUN/docker.pid" ] && [ "$pid" = "$(cat "$_K8S_RUN/docker.pid" 2>/dev/null)" ]; then
      local ids
      ids="$(DOCKER_HOST="unix://$_K8S_RUN/docker.sock" docker ps -aq 2>/dev/null || true)"
      [ -z "$ids" ] || DOCKER_HOST="unix://$_K8S_RUN/docker.sock" docker rm -f $ids >/dev/null 2>&1 || true
    fi
    kill "$pid" 2>/dev/null || true
    for ((j = 0; j < 100; j++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  done
  _K8S_PIDS=()
  # The kubelet and dockerd leave mounts (secret tmpfs, overlay/vfs, netns) under the state dirs.
  local m
  for m in $(awk -v a="$_K8S_DIR" -v b="$_K8S_RUN" '$2 ~ "^"a || $2 ~ "^"b {print $2}' /proc/mounts | sort -r); do
    umount -l "$m" 2>/dev/null || true
  done
  [ "$_K8S_NET" != 1 ] || _k8s_net_stop
  rm -rf "$_K8S_DIR" "$_K8S_RUN"
  _K8S_DIR=""
}
