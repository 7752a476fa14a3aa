#!/usr/bin/env bash
# The Debian base image tuxio's Dockerfiles build FROM (their DEBIAN_IMAGE build argument),
# made from Debian's archive with debootstrap, as no image registry is needed then. The root
# filesystem is cached in ${TUXIO_CACHE:-$HOME/.cache/tuxio}/kind/; the image is imported into
# the container engine (podman or docker) as $DEBIAN_BASE_IMAGE unless it is there. Idempotent;
# prints the image name.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=hack/lib/kind-env.sh
source hack/lib/kind-env.sh

tarball=$KIND_CACHE/debian-$DEBIAN_SUITE-minbase.tar
if "$KIND_ENGINE" image inspect "$DEBIAN_BASE_IMAGE" >/dev/null 2>&1; then
  log "$DEBIAN_BASE_IMAGE exists"
else
  debootstrap_tarball "$tarball" ""
  log "importing $tarball as $DEBIAN_BASE_IMAGE"
  "$KIND_ENGINE" import --change 'CMD ["/bin/bash"]' "$tarball" "$DEBIAN_BASE_IMAGE" >/dev/null
fi
echo "$DEBIAN_BASE_IMAGE"
