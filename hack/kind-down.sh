#!/usr/bin/env bash
# Delete the kind cluster of hack/kind-up.sh (KIND_CLUSTER, default tuxio), with everything in it.
set -euo pipefail
CLUSTER=${KIND_CLUSTER:-tuxio}
[ "${CONTAINER_ENGINE:-docker}" = podman ] && export KIND_EXPERIMENTAL_PROVIDER=podman
if kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
  kind delete cluster --name "$CLUSTER"
else
  echo "${0##*/}: no kind cluster $CLUSTER" >&2
fi
