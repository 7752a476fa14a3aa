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

if "$ENGINE" image inspect "$DEBIAN_BASE_IMAGE" >/dev/null 2>&1; then
  log "$DEBIAN_BASE_IMAGE exists"
  echo "$DEBIAN_BASE_IMAGE"
  exit 0
fi
tarball=$KIND_CACHE/debian-$DEBIAN_SUITE-minbase.tar
debootstrap_tarball "$tarball" ""
rootfs=localhost/tuxio/debian-rootfs:$DEBIAN_SUITE
log "importing $tarball as $rootfs"
"$ENGINE" import "$tarball" "$rootfs" >/dev/null
ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
mkdir "$ctx/cas"
cas=(/usr/local/share/ca-certificates/*.crt)
if [ -e "${cas[0]}" ]; then
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
CONTAINERFILE
log "building $DEBIAN_BASE_IMAGE"
"$ENGINE" build --network host -q -t "$DEBIAN_BASE_IMAGE" "$ctx" >/dev/null
echo "$DEBIAN_BASE_IMAGE"
