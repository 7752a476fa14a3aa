# shellcheck shell=bash disable=SC2034 # variables are used by the scripts that source this
# Settings and helpers shared by hack/cluster-up.sh and hack/cluster-down.sh. Sourced, not run.
# Every setting can be overridden from the environment.

CLUSTER_DIR=${TUXIO_CLUSTER_DIR:-/var/tmp/tuxio-cluster}
# Non-default ports, so this cluster can sit next to a kind cluster or a real etcd.
ETCD_CLIENT_PORT=${TUXIO_ETCD_CLIENT_PORT:-2479}
ETCD_PEER_PORT=${TUXIO_ETCD_PEER_PORT:-2480}
APISERVER_PORT=${TUXIO_APISERVER_PORT:-6443}
KCM_PORT=${TUXIO_KCM_PORT:-10357}
START_TIMEOUT=${TUXIO_START_TIMEOUT:-120} # seconds, per component
STOP_TIMEOUT=${TUXIO_STOP_TIMEOUT:-20}    # seconds between TERM and KILL

PKI=$CLUSTER_DIR/pki
LOGS=$CLUSTER_DIR/logs
RUN=$CLUSTER_DIR/run
KUBECONFIG_FILE=$CLUSTER_DIR/kubeconfig
# cluster-down only deletes a directory carrying this file, never some other directory that
# TUXIO_CLUSTER_DIR happens to point at.
MARKER=$CLUSTER_DIR/.tuxio-cluster

# Started and stopped in this order (stopped in reverse).
COMPONENTS=(etcd kube-apiserver kube-controller-manager)

log() { echo "${0##*/}: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# The pid in run/NAME.pid, if that process is alive and really is NAME (a stale pid file after a
# reboot may name an unrelated process that got the same pid).
pid_of() {
  local pidf=$RUN/$1.pid pid argv0
  [ -s "$pidf" ] || return 1
  pid=$(<"$pidf")
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  argv0=$(tr '\0' '\n' 2>/dev/null <"/proc/$pid/cmdline" | head -n 1) || return 1
  [ "${argv0##*/}" = "$1" ] || return 1
  echo "$pid"
}
running() { pid_of "$1" >/dev/null; }
