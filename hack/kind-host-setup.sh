#!/usr/bin/env bash
# Make this host able to run kind clusters with podman, and say what it changes. Idempotent:
# each step is skipped, and says so, when it is already done. Used by hack/kind-up.sh.
#
# Host changes (only where they are missing):
#   - apt packages: podman runc debootstrap (and their dependencies)
#   - /etc/containers/containers.conf.d/50-tuxio-kind.conf: podman's runtime is runc (crun refuses
#     the cgroup v1 hybrid hierarchy: "cgroups in hybrid mode not supported"), and containers get
#     rlimits this host's hard limits allow (podman's default asks for more and fails)
#   - /lib/modules: an empty directory when the host has none (kind bind-mounts it into nodes)
#   - kind, from the Go module proxy (go install sigs.k8s.io/kind@KIND_VERSION) into
#     ${TUXIO_CACHE:-$HOME/.cache/tuxio}/kind/kind-<version>/bin/kind
# With a running docker daemon (KIND_ENGINE=docker) only kind itself is installed.
# The only line on stdout is the kind binary's path.
set -euo pipefail
KIND_VERSION=${KIND_VERSION:-v0.33.0}
ENGINE=${KIND_ENGINE:-podman}
CACHE_ROOT=${TUXIO_CACHE:-$HOME/.cache/tuxio}/kind
KIND_BIN=$CACHE_ROOT/kind-$KIND_VERSION/bin/kind
DROPIN=/etc/containers/containers.conf.d/50-tuxio-kind.conf

log() { echo "kind-host-setup: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

if [ "$ENGINE" = podman ]; then
  [ "$(id -u)" -eq 0 ] || die "run as root (rootful podman; kind's podman provider needs it)"
  missing=()
  for pkg in podman runc debootstrap; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    log "HOST CHANGE: apt-get install ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    for _ in $(seq 30); do # another apt-get may hold the dpkg lock for a while
      apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null && break
      sleep 10
    done
    for pkg in "${missing[@]}"; do
      dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" \
        || die "apt-get could not install $pkg"
    done
  else
    log "podman, runc and debootstrap are installed"
  fi

  # The sandbox's hard limits cap what a container may ask for; stay below them.
  nofile=$(ulimit -Hn)
  nproc=$(ulimit -Hu)
  [ "$nofile" = unlimited ] && nofile=1048576
  [ "$nproc" = unlimited ] && nproc=1048576
  [ "$nofile" -gt 1048576 ] && nofile=1048576
  [ "$nproc" -gt 32768 ] && nproc=32768
  want=$(
    cat <<CONF
# Written by tuxio's hack/kind-host-setup.sh for kind clusters on this host.
[containers]
default_ulimits = ["nofile=$nofile:$nofile", "nproc=$nproc:$nproc"]

[engine]
# crun refuses a cgroup v1 hybrid hierarchy ("cgroups in hybrid mode not supported").
runtime = "runc"
CONF
  )
  if [ "$(cat "$DROPIN" 2>/dev/null)" != "$want" ]; then
    log "HOST CHANGE: writing $DROPIN (runtime runc, default_ulimits nofile=$nofile nproc=$nproc)"
    mkdir -p "${DROPIN%/*}"
    printf '%s\n' "$want" >"$DROPIN"
  else
    log "$DROPIN is in place"
  fi
  if [ ! -e /lib/modules ]; then
    log "HOST CHANGE: creating an empty /lib/modules (kind mounts it into its nodes)"
    mkdir -p /lib/modules
  fi
  podman info --format '{{.Host.OCIRuntime.Name}}' 2>/dev/null | grep -qx runc \
    || die "podman does not use runc after writing $DROPIN"
fi

if [ -x "$KIND_BIN" ] && [[ "$("$KIND_BIN" version)" == *"kind $KIND_VERSION "* ]]; then
  log "kind $KIND_VERSION is cached: $KIND_BIN"
else
  command -v go >/dev/null || die "go is needed to install kind (go install sigs.k8s.io/kind@$KIND_VERSION)"
  log "installing kind $KIND_VERSION with go install into ${KIND_BIN%/kind}"
  mkdir -p "${KIND_BIN%/kind}"
  GOBIN=${KIND_BIN%/kind} GOFLAGS="${GOFLAGS:-} -trimpath" go install "sigs.k8s.io/kind@$KIND_VERSION"
fi
echo "$KIND_BIN"
