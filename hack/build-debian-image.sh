#!/usr/bin/env bash
# The Debian base image tuxio's Dockerfiles build FROM (their DEBIAN_IMAGE build argument),
# made from Debian's archive with debootstrap, as no image registry is needed then. The root
# filesystem is cached in ${TUXIO_CACHE:-$HOME/.cache/tuxio}/kind/; the image is made in the
# container engine (podman or docker) as $DEBIAN_BASE_IMAGE unless it is there. Idempotent;
# prints the image name.
#
# The image trusts the certificate authorities this host adds to Debian's
# (/usr/local/share/ca-certificates/*.crt), and pip in it uses the system's bundle: behind a
# TLS-inspecting proxy, pip in the Dockerfiles' build stage reaches PyPI only so.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=hack/lib/kind-env.sh
source hack/lib/kind-env.sh
ENGINE=$KIND_ENGINE

tarball=$KIND_CACHE/debian-$DEBIAN_SUITE-minbase.tar
cas=(/usr/local/share/ca-certificates/*.crt)
[ -e "${cas[0]}" ] || cas=()
debootstrap_tarball "$tarball" ""
# By content: an image of that name made from another root filesystem, script or CAs is rebuilt.
inputs=$(printf '%s\n' "$DEBIAN_SUITE" | inputs_digest "$tarball" hack/build-debian-image.sh "${cas[@]}")
have=$(image_inputs "$DEBIAN_BASE_IMAGE")
if [ "$have" = "$inputs" ]; then
  log "$DEBIAN_BASE_IMAGE exists, made from these inputs ($inputs)"
  echo "$DEBIAN_BASE_IMAGE"
  exit 0
elif [ -n "$(image_id "$DEBIAN_BASE_IMAGE")" ]; then
  log "$DEBIAN_BASE_IMAGE exists but was made from other inputs (${have:-unlabelled}, now $inputs): rebuilding"
fi
rootfs=localhost/tuxio/debian-rootfs:$DEBIAN_SUITE
rootfs_inputs=$(inputs_digest "$tarball" </dev/null) # (a fresh import would be a new image id)
if [ "$(image_inputs "$rootfs")" = "$rootfs_inputs" ]; then
  log "$rootfs is the import of $tarball"
else
  log "importing $tarball as $rootfs"
  "$ENGINE" import --change "LABEL $INPUTS_LABEL=$rootfs_inputs" "$tarball" "$rootfs" >/dev/null
fi
ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
mkdir "$ctx/cas"
if [ ${#cas[@]} -gt 0 ]; then
  log "the image trusts this host's added CAs: ${cas[*]}"
  cp "${cas[@]}" "$ctx/cas/"
fi
cat >"$ctx/Containerfile" <<CONTAINERFILE
FROM $rootfs
COPY cas/ /usr/local/share/ca-certificates/
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \\
    && update-ca-certificates && apt-get clean && rm -rf /var/lib/apt/lists/* \\
    && printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n' >/etc/pip.conf
CMD ["/bin/bash"]
LABEL $INPUTS_LABEL=$inputs
CONTAINERFILE
log "building $DEBIAN_BASE_IMAGE"
"$ENGINE" build --network host -q -t "$DEBIAN_BASE_IMAGE" "$ctx" >/dev/null
[ "$(image_inputs "$DEBIAN_BASE_IMAGE")" = "$inputs" ] || die "$DEBIAN_BASE_IMAGE lacks its inputs label after the build"
echo "$DEBIAN_BASE_IMAGE"
