#!/usr/bin/env bash
# tuxio in a local kind cluster, from nothing, from its own manifests and images:
#   1. the host: podman and runc (or a running docker daemon), kind (hack/kind-host-setup.sh;
#      it prints each change it makes to the host)
#   2. the node image, built here (hack/build-kind-node-image.sh), and the Debian base image of
#      tuxio's Dockerfiles (hack/build-debian-image.sh), both cached
#   3. a one-node kind cluster (hack/kind-config.yaml; its API on 127.0.0.1:$KIND_API_PORT,
#      7143 by default), unless it exists
#   4. tuxio-operator, tuxio-agent and tuxio-gateway built from their Dockerfiles and loaded
#      with `kind load image-archive`
#   5. manifests/overlays/default applied, the agents' and the gateway's Secrets made, the node
#      labelled tux.io/lxc-host=true; waits until the operator has registered the node's
#      SandboxHost and it is Ready
# Idempotent: a second run reuses everything cached and restarts only what got a new image.
# The cluster's kubeconfig is written to $KIND_KUBECONFIG (not ~/.kube/config), printed last.
# hack/kind-down.sh deletes the cluster; docs/kind.md says what stays on the host.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=hack/lib/kind-env.sh
source hack/lib/kind-env.sh
TIMEOUT=${TUXIO_KIND_TIMEOUT:-600s}
VERSION=$(sed -n 's/^version = "\(.*\)"$/\1/p' pyproject.toml)
start=$SECONDS

KIND=$(KIND_ENGINE=$KIND_ENGINE hack/kind-host-setup.sh)
BIN=${KIND_BIN_DIR:-$(hack/build-kind-binaries.sh)}
export PATH=${KIND%/kind}:$BIN:$PATH # this kind, and the kubectl of the cluster's version
export KUBECONFIG=$KIND_KUBECONFIG
NODE_IMAGE=$(hack/build-kind-node-image.sh)
BASE=$(hack/build-debian-image.sh)

clusters=$(kind get clusters 2>/dev/null || true)
if grep -qx "$KIND_CLUSTER" <<<"$clusters"; then
  # A cluster whose node runs another image than the current node image is made again.
  running=$("$KIND_ENGINE" inspect --format '{{.Image}}' "$KIND_CLUSTER-control-plane" 2>/dev/null || true)
  if [ "${running#sha256:}" != "$(image_id "$NODE_IMAGE")" ]; then
    log "kind cluster $KIND_CLUSTER runs an older node image (${running:0:19}): deleting it"
    kind delete cluster --name "$KIND_CLUSTER" --kubeconfig "$KIND_KUBECONFIG"
    clusters=
  fi
fi
if grep -qx "$KIND_CLUSTER" <<<"$clusters"; then
  log "kind cluster $KIND_CLUSTER exists, on $NODE_IMAGE"
  kind export kubeconfig --name "$KIND_CLUSTER" --kubeconfig "$KIND_KUBECONFIG"
else
  log "creating kind cluster $KIND_CLUSTER from $NODE_IMAGE (API on 127.0.0.1:$KIND_API_PORT)"
  config=$(mktemp)
  sed "s/^\(  apiServerPort:\).*/\1 $KIND_API_PORT/" hack/kind-config.yaml >"$config"
  kind create cluster --name "$KIND_CLUSTER" --image "$NODE_IMAGE" --config "$config" \
    --kubeconfig "$KIND_KUBECONFIG" --wait 300s
  rm -f "$config"
fi
node=$(kubectl get nodes -o jsonpath='{.items[0].metadata.name}')
kubectl wait --for=condition=Ready "node/$node" --timeout="$TIMEOUT"

# --- tuxio's images ---------------------------------------------------------------------------
restart=()
for part in operator:operator agent:nodeagent gateway:gateway; do
  name=${part%%:*}
  dir=${part#*:}
  image=docker.io/library/tuxio-$name:$VERSION # the name the manifests' tuxio-$name:$VERSION means
  before=$("$KIND_ENGINE" image inspect --format '{{.Id}}' "$image" 2>/dev/null || true)
  log "building $image from $dir/Dockerfile (FROM $BASE)"
  "$KIND_ENGINE" build --network host -q --build-arg "DEBIAN_IMAGE=$BASE" -f "$dir/Dockerfile" -t "$image" . >/dev/null
  after=$("$KIND_ENGINE" image inspect --format '{{.Id}}' "$image")
  id=${after#sha256:}
  if docker_exec_crictl=$("$KIND_ENGINE" exec "$KIND_CLUSTER-control-plane" crictl images -q 2>/dev/null) \
    && grep -q "${id:0:12}" <<<"$docker_exec_crictl"; then
    log "$image is loaded in the node"
  else
    archive=$(mktemp --suffix=.tar)
    "$KIND_ENGINE" save --format docker-archive -o "$archive" "$image" 2>/dev/null \
      || "$KIND_ENGINE" save -o "$archive" "$image"
    kind load image-archive --name "$KIND_CLUSTER" "$archive"
    rm -f "$archive"
    [ -n "$before" ] && [ "$before" != "$after" ] && restart+=("$name")
  fi
done

# --- tuxio --------------------------------------------------------------------------------------
log "applying manifests/overlays/default"
kubectl apply -k manifests/overlays/default
kubectl wait --for=condition=Established --timeout=60s crd --all
hack/create-agent-secrets.sh
hack/create-gateway-secrets.sh
kubectl label node "$node" tux.io/lxc-host=true --overwrite
for name in "${restart[@]}"; do
  case $name in
    agent) kubectl -n tuxio-system rollout restart daemonset/tuxio-agent ;;
    *) kubectl -n tuxio-system rollout restart "deployment/tuxio-$name" ;;
  esac
done
kubectl -n tuxio-system rollout status daemonset/tuxio-agent --timeout="$TIMEOUT"
kubectl -n tuxio-system rollout status deployment/tuxio-operator --timeout="$TIMEOUT"
kubectl -n tuxio-system rollout status deployment/tuxio-gateway --timeout="$TIMEOUT"
log "waiting for the SandboxHost of $node"
deadline=$((SECONDS + 300))
until kubectl get sandboxhost "$node" >/dev/null 2>&1; do
  [ "$SECONDS" -lt "$deadline" ] || die "the operator registered no SandboxHost for $node"
  sleep 2
done
kubectl wait --for=condition=Ready "sandboxhost/$node" --timeout="$TIMEOUT"
kubectl wait --for=condition=Available apiservice/v1alpha1.subresources.tux.io --timeout="$TIMEOUT"
kubectl get nodes,sandboxhosts -o wide
log "tuxio is up in kind cluster $KIND_CLUSTER after $((SECONDS - start))s (KUBECONFIG=$KIND_KUBECONFIG)"
echo "$KIND_KUBECONFIG"
