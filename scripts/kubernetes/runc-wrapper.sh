#!/bin/sh
# runc wrapper registered as the default runtime of the kubelet's private dockerd.
# This sandbox refuses a negative oom_score_adj, which the kubelet asks for (pause containers,
# guaranteed pods); runc would fail to create such containers. Before `create`/`run`, rewrite
# the bundle's process.oomScoreAdj to 0 and hand over to the real runc unchanged otherwise.
bundle=""
want=0
prev=""
for arg in "$@"; do
  case "$prev" in --bundle|-b) bundle="$arg" ;; esac
  case "$arg" in create|run) want=1 ;; --bundle=*) bundle="${arg#--bundle=}" ;; esac
  prev="$arg"
done
if [ "$want" = 1 ]; then
  [ -n "$bundle" ] || bundle="$(pwd)"
  cfg="$bundle/config.json"
  if [ -f "$cfg" ] && jq -e '.process.oomScoreAdj // 0 | . < 0' "$cfg" >/dev/null 2>&1; then
    tmp="$cfg.agw.$$"
    jq -c '.process.oomScoreAdj = 0' "$cfg" >"$tmp" && mv "$tmp" "$cfg"
  fi
fi
exec "$(command -v runc || echo /usr/sbin/runc)" "$@"
