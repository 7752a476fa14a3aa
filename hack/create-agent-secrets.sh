#!/usr/bin/env bash
# Make the CA that signs the node agents' serving certificates and store it as the Secret
# tuxio-agent-ca (ca.crt, ca.key) in the namespace tuxio-system (or $TUXIO_NAMESPACE).
#
# Only the operator reads it: it signs each agent's CertificateSigningRequest (signer
# tux.io/agent-serving) for that agent's own node, and writes each host's own Secret
# tuxio-agent-<node> (its bearer token and ca.crt). No agent sees the key, and no Secret is
# shared by the agents. A Secret that exists is kept. To rotate the CA without downtime, put
# the new certificate after the old one in ca.crt and the new key in ca.key (the operator
# signs with the certificate that belongs to the key and hands the whole bundle to clients);
# drop the old certificate once every agent has renewed. See docs/deploy.md.
# Needs kubectl (with the cluster as its current context) and openssl.
set -euo pipefail
NAMESPACE=${TUXIO_NAMESPACE:-tuxio-system}
say() { echo "${0##*/}: $*" >&2; }

if kubectl -n "$NAMESPACE" get secret tuxio-agent-ca >/dev/null 2>&1; then
  say "Secret tuxio-agent-ca exists in $NAMESPACE: kept"
  exit 0
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# A P-256 CA for ten years; the agents' certificates are short-lived leaves under it.
openssl req -x509 -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:P-256 -sha256 -days 3650 \
  -subj "/CN=tuxio-agent-ca" \
  -addext "basicConstraints=critical,CA:TRUE" \
  -addext "keyUsage=critical,keyCertSign,cRLSign" \
  -keyout "$work/ca.key" -out "$work/ca.crt" 2>/dev/null
kubectl -n "$NAMESPACE" create secret generic tuxio-agent-ca \
  --from-file=ca.crt="$work/ca.crt" --from-file=ca.key="$work/ca.key" >/dev/null
say "created Secret tuxio-agent-ca in $NAMESPACE"
