# shellcheck shell=bash disable=SC2034 # variables are used by the scripts that source this
# Settings and helpers shared by the hack/kind-*.sh and hack/build-kind-*.sh scripts. Sourced.
# Every setting can be overridden from the environment.

KIND_CLUSTER=${KIND_CLUSTER:-tuxio}
KIND_VERSION=${KIND_VERSION:-v0.33.0}
# The kind cluster's API server listens on 127.0.0.1:KIND_API_PORT, clear of the local control
# planes of hack/cluster-up.sh (6443 and the per-developer ports).
KIND_API_PORT=${KIND_API_PORT:-7143}
KIND_CACHE=${TUXIO_CACHE:-$HOME/.cache/tuxio}/kind
DEBIAN_SUITE=${DEBIAN_SUITE:-bookworm}
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
# The Debian base image the Dockerfiles build FROM (build argument DEBIAN_IMAGE), made here.
DEBIAN_BASE_IMAGE=${DEBIAN_BASE_IMAGE:-localhost/tuxio/debian:$DEBIAN_SUITE}
K8S_VERSION=${K8S_VERSION:-v1.36.3}

# docker where a docker daemon answers, podman otherwise (KIND_ENGINE overrides).
if [ -z "${KIND_ENGINE:-}" ]; then
  if command -v docker >/dev/null && timeout 10 docker info >/dev/null 2>&1; then
    KIND_ENGINE=docker
  else
    KIND_ENGINE=podman
  fi
fi
[ "$KIND_ENGINE" = podman ] && export KIND_EXPERIMENTAL_PROVIDER=podman

log() { echo "${0##*/}: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# debootstrap_tarball OUT PACKAGES: a $DEBIAN_SUITE root filesystem (minbase plus the comma-separated
# PACKAGES) packed as the tarball OUT, unless OUT exists. Packages are cached in $KIND_CACHE/debs.
debootstrap_tarball() {
  local out=$1 packages=$2 root
  if [ -s "$out" ]; then
    log "cached: $out"
    return 0
  fi
  command -v debootstrap >/dev/null || die "debootstrap is missing (apt-get install debootstrap)"
  mkdir -p "$KIND_CACHE/debs" "${out%/*}"
  root=$(mktemp -d "$KIND_CACHE/.rootfs.XXXXXX")
  log "debootstrap $DEBIAN_SUITE (minbase${packages:+ + $packages}) into $root"
  if ! debootstrap --variant=minbase --cache-dir="$KIND_CACHE/debs" ${packages:+--include="$packages"} \
    "$DEBIAN_SUITE" "$root" "$DEBIAN_MIRROR" >"$root.log" 2>&1; then
    tail -n 20 "$root.log" >&2
    rm -rf "$root"
    die "debootstrap failed (log: $root.log)"
  fi
  rm -f "$root.log"
  chroot "$root" apt-get clean
  rm -rf "$root"/var/lib/apt/lists/*
  tar -C "$root" --numeric-owner -cf "$out.part" .
  rm -rf "$root"
  mv "$out.part" "$out"
}

# The kind cluster's kubeconfig: its own file, so ~/.kube/config and the local clusters' stay.
KIND_KUBECONFIG=${KIND_KUBECONFIG:-$KIND_CACHE/kubeconfig-$KIND_CLUSTER}

# Images made here carry a label with the digest of what they were made from (binaries,
# scripts, packages, base image), so a stale or stand-in image under the right name is found by
# its content and rebuilt, never reused because of its name alone.
INPUTS_LABEL=io.tux.kind.inputs

# inputs_digest FILE...: one digest of the files' contents, of the lines on stdin (versions,
# package lists, image ids) and of the files' names relative to where they are found.
inputs_digest() {
  { cat; sha256sum "$@" | sed 's#  .*/#  #'; } | sha256sum | cut -c1-32
}

# image_inputs IMAGE: the inputs label of IMAGE in the engine, empty when it has none or is absent.
image_inputs() {
  "$KIND_ENGINE" image inspect --format "{{ index .Config.Labels \"$INPUTS_LABEL\" }}" "$1" 2>/dev/null \
    | grep -v '^<no value>$' || true
}

# image_id IMAGE: the engine's id of IMAGE without the sha256: prefix, empty when absent.
image_id() {
  local id
  id=$("$KIND_ENGINE" image inspect --format '{{.Id}}' "$1" 2>/dev/null) || return 0
  echo "${id#sha256:}"
}
