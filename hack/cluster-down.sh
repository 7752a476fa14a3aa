#!/usr/bin/env bash
# Stop the control plane started by hack/cluster-up.sh (by its pid files: TERM, then KILL after
# TUXIO_STOP_TIMEOUT seconds) and delete its state directory. Safe to run when nothing is up.
set -euo pipefail
HACK=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib/cluster-env.sh
. "$HACK/lib/cluster-env.sh"

if [ ! -e "$CLUSTER_DIR" ]; then
  log "no cluster at $CLUSTER_DIR"
  exit 0
fi
[ -f "$MARKER" ] || die "$CLUSTER_DIR has no $(basename "$MARKER") file: not a tuxio cluster directory, not deleting it"

# Reverse start order: controller-manager, apiserver, then etcd, which the others depend on.
for ((i = ${#COMPONENTS[@]} - 1; i >= 0; i--)); do
  c=${COMPONENTS[i]}
  pid=$(pid_of "$c") || continue
  log "stopping $c (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  deadline=$((SECONDS + STOP_TIMEOUT))
  while running "$c" && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.2; done
  if running "$c"; then
    log "$c still running after ${STOP_TIMEOUT}s: KILL"
    kill -KILL "$pid" 2>/dev/null || true
    sleep 0.5
    ! running "$c" || die "could not stop $c (pid $pid)"
  fi
done

rm -rf "$CLUSTER_DIR"
log "stopped; removed $CLUSTER_DIR"
