#!/usr/bin/env bash
# Delete the kind cluster of hack/kind-up.sh (KIND_CLUSTER, default tuxio), with everything in it.
# What is cached on the host (images, node image, binaries, kind) stays: see docs/kind.md.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=hack/lib/kind-env.sh
source hack/lib/kind-env.sh
KIND_BIN=$KIND_CACHE/kind-$KIND_VERSION/bin/kind
command -v kind >/dev/null && KIND_BIN=$(command -v kind)
[ -x "$KIND_BIN" ] || {
  log "kind is not installed: no cluster to delete"
  exit 0
}
clusters=$("$KIND_BIN" get clusters 2>/dev/null || true)
if grep -qx "$KIND_CLUSTER" <<<"$clusters"; then
  "$KIND_BIN" delete cluster --name "$KIND_CLUSTER" --kubeconfig "$KIND_KUBECONFIG"
  rm -f "$KIND_KUBECONFIG"
else
  log "no kind cluster $KIND_CLUSTER"
fi
