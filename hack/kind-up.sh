#!/usr/bin/env bash
# tuxio in a local kind cluster, from the manifests and the two images:
#   1. a kind cluster (hack/kind-config.yaml), unless it exists
#   2. build tuxio-operator and tuxio-agent, load them into the nodes
#   3. apply manifests/overlays/default, make the agents' Secrets
#   4. label the worker tux.io/lxc-host=true: the agent starts there and the operator
#      registers a SandboxHost for it
#   5. apply the samples (a Sandbox, a SandboxPool, a Sandbox claiming from it); wait Ready
# Needs kind, kubectl, openssl and docker (or podman: CONTAINER_ENGINE=podman, which also sets
# KIND_EXPERIMENTAL_PROVIDER). Idempotent. hack/kind-down.sh deletes the cluster.
#
# The development machines of this project have no container engine: this script runs in
# .github/workflows/kind.yaml, not in `make test` (docs/deploy.md says what is tested where).
set -euo pipefail
cd "$(dirname "$0")/.."
CLUSTER=${KIND_CLUSTER:-tuxio}
ENGINE=${CONTAINER_ENGINE:-docker}
TIMEOUT=${TUXIO_KIND_TIMEOUT:-300s}
VERSION=$(sed -n 's/^version = "\(.*\)"$/\1/p' pyproject.toml)
# The names the manifests use; podman would otherwise file them under localhost/.
OPERATOR_IMAGE=docker.io/library/tuxio-operator:$VERSION
AGENT_IMAGE=docker.io/library/tuxio-agent:$VERSION
say() { echo "${0##*/}: $*" >&2; }
die() { say "ERROR: $*"; exit 1; }

for tool in kind kubectl openssl "$ENGINE"; do
  command -v "$tool" >/dev/null || die "$tool is missing"
done
[ "$ENGINE" = podman ] && export KIND_EXPERIMENTAL_PROVIDER=podman

if kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
  say "kind cluster $CLUSTER exists"
else
  say "creating kind cluster $CLUSTER"
  kind create cluster --name "$CLUSTER" --config hack/kind-config.yaml --wait 120s
fi
export KUBECONFIG=${KUBECONFIG:-$HOME/.kube/config}
kind export kubeconfig --name "$CLUSTER"

say "building $OPERATOR_IMAGE and $AGENT_IMAGE"
"$ENGINE" build -f operator/Dockerfile -t "$OPERATOR_IMAGE" .
"$ENGINE" build -f nodeagent/Dockerfile -t "$AGENT_IMAGE" .
for image in "$OPERATOR_IMAGE" "$AGENT_IMAGE"; do
  if [ "$ENGINE" = docker ]; then
    kind load docker-image --name "$CLUSTER" "$image"
  else
    archive=$(mktemp)
    "$ENGINE" save -o "$archive" "$image"
    kind load image-archive --name "$CLUSTER" "$archive"
    rm -f "$archive"
  fi
done

say "applying manifests/overlays/default"
kubectl apply -k manifests/overlays/default
kubectl wait --for=condition=Established --timeout=60s crd --all
hack/create-agent-secrets.sh
worker=$(kubectl get nodes -o name | grep -v control-plane | head -n 1)
worker=${worker#node/}
[ -n "$worker" ] || die "the kind cluster has no worker node"
kubectl label node "$worker" tux.io/lxc-host=true --overwrite

kubectl -n tuxio-system rollout status deployment/tuxio-operator --timeout="$TIMEOUT"
kubectl -n tuxio-system rollout status daemonset/tuxio-agent --timeout="$TIMEOUT"
say "waiting for the SandboxHost of $worker"
deadline=$((SECONDS + 120))
until kubectl get sandboxhost "$worker" >/dev/null 2>&1; do
  [ "$SECONDS" -lt "$deadline" ] || die "the operator registered no SandboxHost for $worker"
  sleep 2
done
kubectl wait --for=condition=Ready "sandboxhost/$worker" --timeout="$TIMEOUT"

say "applying the samples"
kubectl apply -f manifests/samples/sandbox.yaml -f manifests/samples/sandboxpool.yaml
kubectl wait --for=condition=Ready sandboxpool/busybox-warm --timeout="$TIMEOUT"
kubectl apply -f manifests/samples/sandbox-from-pool.yaml
kubectl wait --for=condition=Ready sandbox/visitor-42 sandbox/visitor-43 --timeout="$TIMEOUT"
kubectl get sandboxhosts,sandboxpools,sandboxes -o wide
say "tuxio is up in kind cluster $CLUSTER (kubectl context kind-$CLUSTER)"
