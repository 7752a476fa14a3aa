#!/usr/bin/env bash
# Make the node agents' credentials and store them as the two Secrets of the deployment
# (manifests/base/nodeagent), in the namespace tuxio-system (or $TUXIO_NAMESPACE):
#   tuxio-agent     token, ca.crt   read by the operator (a SandboxHost's credentialsSecretRef)
#                                   and by the agents (their bearer token)
#   tuxio-agent-ca  ca.crt, ca.key  read by the agents only: each issues itself a serving
#                                   certificate for its node's address at start
# Secrets that exist are kept: delete both to rotate (then restart the agents' DaemonSet).
# Needs kubectl (with the cluster as its current context) and openssl.
set -euo pipefail
NAMESPACE=${TUXIO_NAMESPACE:-tuxio-system}
say() { echo "${0##*/}: $*" >&2; }

have=0
for secret in tuxio-agent tuxio-agent-ca; do
  if kubectl -n "$NAMESPACE" get secret "$secret" >/dev/null 2>&1; then
    have=$((have + 1))
  fi
done
if [ "$have" -eq 2 ]; then
  say "Secrets tuxio-agent and tuxio-agent-ca exist in $NAMESPACE: kept"
  exit 0
elif [ "$have" -eq 1 ]; then
  say "ERROR: only one of tuxio-agent and tuxio-agent-ca exists in $NAMESPACE; delete it to start afresh"
  exit 1
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
printf %s "$(openssl rand -hex 32)" >"$work/token"
# A P-256 CA for ten years; the agents' certificates are short-lived leaves under it.
openssl req -x509 -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:P-256 -sha256 -days 3650 \
  -subj "/CN=tuxio-agent-ca" \
  -addext "basicConstraints=critical,CA:TRUE" \
  -addext "keyUsage=critical,keyCertSign,cRLSign" \
  -keyout "$work/ca.key" -out "$work/ca.crt" 2>/dev/null
kubectl -n "$NAMESPACE" create secret generic tuxio-agent \
  --from-file=token="$work/token" --from-file=ca.crt="$work/ca.crt" >/dev/null
kubectl -n "$NAMESPACE" create secret generic tuxio-agent-ca \
  --from-file=ca.crt="$work/ca.crt" --from-file=ca.key="$work/ca.key" >/dev/null
say "created Secrets tuxio-agent and tuxio-agent-ca in $NAMESPACE"
