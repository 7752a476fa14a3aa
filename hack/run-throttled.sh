#!/usr/bin/env bash
# Run a command with it and everything it starts held to a share of the machine's CPU, to show
# that the tests do not depend on how fast the machine is (`make test-slow`).
#
#   hack/run-throttled.sh [--cores 0.5] -- COMMAND [ARGS...]
#
# The command runs in a cgroup of its own with a CFS quota of that many cores (cgroup v1: the
# cpu controller's cpu.cfs_quota_us; v2: cpu.max), and the cgroup is removed afterwards. What
# it starts stays in it (the API server, etcd, agents, the operator, pytest's own threads),
# except the LXC containers the agents start: LXC puts each into a cgroup of its own, outside
# this one, as it would on any host. The exit code is the command's.
set -euo pipefail
say() { echo "${0##*/}: $*" >&2; }
die() { say "ERROR: $*"; exit 1; }

cores=${TUXIO_THROTTLE_CORES:-0.5}
while [ $# -gt 0 ]; do
  case $1 in
    --cores) cores=$2; shift 2 ;;
    --) shift; break ;;
    *) die "unknown argument $1 (usage: ${0##*/} [--cores N] -- COMMAND...)" ;;
  esac
done
[ $# -gt 0 ] || die "no command given"
[ "$(id -u)" -eq 0 ] || die "making a cgroup needs root"
period=100000
quota=$(awk -v c="$cores" -v p="$period" 'BEGIN { q = int(c * p); if (q < 1000) exit 1; print q }') \
  || die "--cores $cores is not a share of a core of at least 0.01"

name=tuxio-throttle-$$
if [ -f /sys/fs/cgroup/cgroup.controllers ]; then
  # cgroup v2: the cpu controller must be enabled for the root's children.
  grep -qw cpu /sys/fs/cgroup/cgroup.subtree_control \
    || echo +cpu >/sys/fs/cgroup/cgroup.subtree_control \
    || die "cannot enable the cpu controller in /sys/fs/cgroup/cgroup.subtree_control"
  dir=/sys/fs/cgroup/$name
  mkdir "$dir"
  echo "$quota $period" >"$dir/cpu.max"
else
  dir=/sys/fs/cgroup/cpu/$name
  [ -d /sys/fs/cgroup/cpu ] || die "no cgroup v1 cpu hierarchy at /sys/fs/cgroup/cpu"
  mkdir "$dir"
  echo "$period" >"$dir/cpu.cfs_period_us"
  echo "$quota" >"$dir/cpu.cfs_quota_us"
fi

# shellcheck disable=SC2329 # called by the EXIT trap
cleanup() {
  # Whatever is still in the cgroup (a daemon the command left) moves back to the root, so
  # the directory can go; the tests' own leak check says whether anything was left.
  if [ -f "$dir/cgroup.procs" ]; then
    local root
    root=$(dirname "$dir")
    while read -r pid; do echo "$pid" >"$root/cgroup.procs" 2>/dev/null || true; done <"$dir/cgroup.procs"
    rmdir "$dir" 2>/dev/null || say "could not remove $dir"
  fi
}
trap cleanup EXIT
say "running with $cores of a core (quota $quota of $period us) in $dir: $*"
# A subshell moves itself into the cgroup, then becomes the command.
set +e
(echo "$BASHPID" >"$dir/cgroup.procs" && exec "$@")
status=$?
set -e
say "exit $status"
exit "$status"
