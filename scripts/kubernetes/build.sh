#!/usr/bin/env bash
# Builds the Kubernetes control plane and node binaries used by the kubernetes test service, and
# kubectl for the jobs of the k8s.* actions,
# once per version, from Debian bookworm's `kubernetes` SOURCE package (the full v1.20.2 tree
# with vendor/). No Kubernetes binaries are packaged in Debian, and only package registries are
# reachable, so building from source is the only way to get a real kube-apiserver here.
#
# The binaries are cached under $K8S_CACHE (default /var/cache/agent-gateway/kubernetes/<version>)
# so later runs (and CI) reuse them. Only the binaries missing from the cache are built (one
# `make` for all of them), so adding a binary to BINARIES does not rebuild the others. Prints the
# cache directory on stdout.
#
#   scripts/kubernetes/build.sh
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
source "$here/../lib.sh"

K8S_SRC_VERSION="${K8S_SRC_VERSION:-1.20.5+really1.20.2-1.1+deb12u1}"
K8S_CACHE="${K8S_CACHE:-/var/cache/agent-gateway/kubernetes/${K8S_SRC_VERSION}}"
BINARIES=(kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl)

MISSING=()
for b in "${BINARIES[@]}"; do [ -x "$K8S_CACHE/bin/$b" ] || MISSING+=("$b"); done
if [ ${#MISSING[@]} -eq 0 ]; then echo "$K8S_CACHE"; exit 0; fi

ensure_packages golang-1.19-go rsync make dpkg-dev ca-certificates

work="$K8S_CACHE/build"
mkdir -p "$work/apt/lists/partial" "$work/apt/archives/partial"
# A private sources list and state directory: the system's apt configuration stays untouched.
cat > "$work/apt/sources.list" <<SRC
deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm main
deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm-updates main
deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian-security bookworm-security main
SRC
apt_opts=(-o "Dir::Etc::SourceList=$work/apt/sources.list" -o "Dir::Etc::SourceParts=-"
  -o "Dir::State::Lists=$work/apt/lists" -o "Dir::Cache::Archives=$work/apt/archives"
  -o "APT::Sandbox::User=root")

cd "$work"
if ! ls kubernetes_*.dsc >/dev/null 2>&1; then
  log "kubernetes: fetching source package kubernetes=$K8S_SRC_VERSION"
  apt-get "${apt_opts[@]}" update -qq
  apt-get "${apt_opts[@]}" source --download-only "kubernetes=$K8S_SRC_VERSION" >/dev/null
fi
src="$(find "$work" -maxdepth 1 -mindepth 1 -type d -name 'kubernetes-*' | head -n1)"
if [ -z "$src" ]; then
  log "kubernetes: unpacking source"
  dpkg-source --no-check -x kubernetes_*.dsc >/dev/null
  src="$(find "$work" -maxdepth 1 -mindepth 1 -type d -name 'kubernetes-*' | head -n1)"
fi

log "kubernetes: building ${MISSING[*]} (takes several minutes on 2 cores, once)"
cd "$src"
export GOROOT=/usr/lib/go-1.19 PATH="/usr/lib/go-1.19/bin:$PATH" GOPROXY=off CGO_ENABLED=0 \
  GOFLAGS=-mod=vendor GOCACHE="$work/gocache" GOPATH="$work/gopath"
whats=""
for b in "${MISSING[@]}"; do whats="$whats cmd/$b"; done
nice -n 10 make WHAT="${whats# }" >"$work/make.log" 2>&1 || {
  log "kubernetes: build failed, see $work/make.log"; tail -n 30 "$work/make.log" >&2; exit 1; }

mkdir -p "$K8S_CACHE/bin"
for b in "${MISSING[@]}"; do
  install -m 0755 "_output/local/go/bin/$b" "$K8S_CACHE/bin/$b" 2>/dev/null ||
    install -m 0755 "$(find _output -type f -name "$b" | head -n1)" "$K8S_CACHE/bin/$b"
done
# The source tree and Go caches are large; only the binaries are needed from now on.
cd "$K8S_CACHE" && rm -rf "$work"
echo "$K8S_CACHE"
