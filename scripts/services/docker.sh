#!/usr/bin/env bash
# Docker service for the test suite (sourced by scripts/test; needs scripts/lib.sh).
#
# docker_start
#   - installs docker.io, busybox-static (the test image's only binary) and bubblewrap (the
#     local runner's namespace level) when missing;
#   - starts `dockerd` in the background when no daemon answers, and remembers that it did;
#   - builds the test image WITHOUT a registry: a root filesystem holding /bin/busybox, one symlink
#     per applet, /tmp and an /etc/passwd with a `nobody` user, imported with `docker import`;
#   - exports GATEWAY_TEST_DOCKER_IMAGE (the image id, so tests run a pinned image, never a tag
#     that could be re-pointed or pulled).
# docker_stop
#   - stops dockerd only if docker_start started it.
#
# dockerd flags, and why (a fresh Debian bookworm machine, or a sandbox VM without systemd):
#   --bridge=none --iptables=false --ip6tables=false
#       Every test container runs with `--network none`, so the default bridge is not needed.
#       Without it dockerd neither creates docker0 nor rewrites the host firewall, so it cannot
#       collide with another daemon on the same host (the Kubernetes service runs its own) and
#       leaves no iptables state behind.
#   --storage-driver=overlay2 (default) works on ext4 with the overlay module, as here. If a
#       machine lacks overlayfs, add `--storage-driver=vfs` through docker.d (slow but works).
#   cgroups: dockerd picks cgroupfs on hosts without systemd (v1 here: memory and pids
#       controllers present, which the runner's OOM and fork-bomb tests need).
# Machine-specific extra flags go in scripts/services/docker.d/*.sh, which may append to the
# DOCKERD_EXTRA_ARGS array; they are sourced right before dockerd starts.

DOCKER_TEST_IMAGE_REF="${DOCKER_TEST_IMAGE_REF:-agent-gateway-test/busybox:latest}"
_docker_started_pid=""
_docker_log=""

_docker_answers() { timeout 10 docker info >/dev/null 2>&1; }

_docker_build_test_image() {
  if docker image inspect "$DOCKER_TEST_IMAGE_REF" >/dev/null 2>&1; then return 0; fi
  log "docker: building $DOCKER_TEST_IMAGE_REF from busybox-static (no registry)"
  local rootfs applet
  rootfs="$(mktemp -d)"
  mkdir -p "$rootfs/bin" "$rootfs/tmp" "$rootfs/etc" "$rootfs/proc" "$rootfs/dev" "$rootfs/sys"
  chmod 1777 "$rootfs/tmp"
  cp /bin/busybox "$rootfs/bin/busybox"
  for applet in $("$rootfs/bin/busybox" --list); do
    [ "$applet" = busybox ] || ln -sf busybox "$rootfs/bin/$applet"
  done
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/sh\n' \
    >"$rootfs/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\n' >"$rootfs/etc/group"
  tar -C "$rootfs" -c . | docker import \
    --change 'ENV PATH=/bin' --change 'CMD ["/bin/sh"]' - "$DOCKER_TEST_IMAGE_REF" >/dev/null
  rm -rf "$rootfs"
}

docker_start() {
  ensure_packages docker.io busybox-static bubblewrap util-linux
  if ! _docker_answers; then
    DOCKERD_EXTRA_ARGS=()
    local hook
    for hook in scripts/services/docker.d/*.sh; do
      [ -e "$hook" ] || continue
      # shellcheck disable=SC1090
      source "$hook"
    done
    _docker_log="$(mktemp /tmp/agent-gateway-dockerd.XXXXXX.log)"
    log "docker: starting dockerd (log: $_docker_log)"
    dockerd --bridge=none --iptables=false --ip6tables=false "${DOCKERD_EXTRA_ARGS[@]}" \
      >"$_docker_log" 2>&1 &
    _docker_started_pid=$!
    local i
    for i in $(seq 1 60); do
      _docker_answers && break
      if ! kill -0 "$_docker_started_pid" 2>/dev/null; then
        log "docker: dockerd exited; last lines of $_docker_log:"; tail -n 20 "$_docker_log" >&2
        _docker_started_pid=""; return 1
      fi
      sleep 1
    done
    _docker_answers || { log "docker: dockerd did not answer within 60 s"; return 1; }
  fi
  _docker_build_test_image
  GATEWAY_TEST_DOCKER_IMAGE="$(docker image inspect -f '{{.Id}}' "$DOCKER_TEST_IMAGE_REF")"
  export GATEWAY_TEST_DOCKER_IMAGE
  log "docker: GATEWAY_TEST_DOCKER_IMAGE=$GATEWAY_TEST_DOCKER_IMAGE"
}

docker_stop() {
  [ -n "$_docker_started_pid" ] || return 0
  log "docker: stopping the dockerd we started (pid $_docker_started_pid)"
  kill -TERM "$_docker_started_pid" 2>/dev/null || true
  local i
  for i in $(seq 1 30); do
    kill -0 "$_docker_started_pid" 2>/dev/null || break
    sleep 1
  done
  kill -KILL "$_docker_started_pid" 2>/dev/null || true
  _docker_started_pid=""
}
