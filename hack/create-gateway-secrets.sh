#!/usr/bin/env bash
# Make the gateway's serving certificate and tell the API server to trust it, for
# manifests/base/gateway, in the namespace tuxio-system (or $TUXIO_NAMESPACE):
#   Secret tuxio-gateway-serving (kubernetes.io/tls: tls.crt, tls.key, ca.crt)
#       a certificate for the Services tuxio-gateway-api and tuxio-gateway
#       (<name>.<namespace>.svc, .svc.cluster.local), under a CA of its own
#   APIService v1alpha1.subresources.tux.io: spec.caBundle = that CA (the API server verifies
#       the gateway with it before it proxies a single request)
# A Secret that exists is kept and the caBundle written from its ca.crt again, so running this
# twice changes nothing; delete the Secret to make a new certificate (then restart the gateway).
# On clusters with cert-manager, make the Secret with a Certificate of that name instead: the
# APIService's cert-manager.io/inject-ca-from annotation has its CA injector write the caBundle.
# The token signing key is not made here: the gateway writes the first one into its (empty)
# Secret at first start. Needs kubectl (with the cluster as its current context) and openssl.
set -euo pipefail
NAMESPACE=${TUXIO_NAMESPACE:-tuxio-system}
SECRET=tuxio-gateway-serving
APISERVICE=v1alpha1.subresources.tux.io
DAYS=${TUXIO_GATEWAY_CERT_DAYS:-825}
say() { echo "${0##*/}: $*" >&2; }

if ! kubectl -n "$NAMESPACE" get secret "$SECRET" >/dev/null 2>&1; then
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  names="DNS:tuxio-gateway-api.$NAMESPACE.svc,DNS:tuxio-gateway-api.$NAMESPACE.svc.cluster.local"
  names+=",DNS:tuxio-gateway.$NAMESPACE.svc,DNS:tuxio-gateway.$NAMESPACE.svc.cluster.local"
  openssl req -x509 -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:P-256 -sha256 -days 3650 \
    -subj "/CN=tuxio-gateway-ca" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -keyout "$work/ca.key" -out "$work/ca.crt" 2>/dev/null
  openssl req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:P-256 \
    -subj "/CN=tuxio-gateway-api.$NAMESPACE.svc" \
    -keyout "$work/tls.key" -out "$work/tls.csr" 2>/dev/null
  printf '%s\n' "basicConstraints=critical,CA:FALSE" "keyUsage=critical,digitalSignature" \
    "extendedKeyUsage=serverAuth" "subjectAltName=$names" >"$work/ext.cnf"
  openssl x509 -req -sha256 -days "$DAYS" -in "$work/tls.csr" -CA "$work/ca.crt" \
    -CAkey "$work/ca.key" -CAcreateserial -extfile "$work/ext.cnf" -out "$work/tls.crt" 2>/dev/null
  openssl verify -CAfile "$work/ca.crt" "$work/tls.crt" >/dev/null
  # The CA's key is not kept: a new certificate comes with a new CA (and caBundle).
  kubectl -n "$NAMESPACE" create secret generic "$SECRET" --type=kubernetes.io/tls \
    --from-file=tls.crt="$work/tls.crt" --from-file=tls.key="$work/tls.key" \
    --from-file=ca.crt="$work/ca.crt" >/dev/null
  say "created Secret $SECRET in $NAMESPACE"
else
  say "Secret $SECRET exists in $NAMESPACE: kept"
fi

ca=$(kubectl -n "$NAMESPACE" get secret "$SECRET" -o jsonpath='{.data.ca\.crt}')
[ -n "$ca" ] || { say "ERROR: Secret $SECRET has no ca.crt"; exit 1; }
kubectl patch apiservice "$APISERVICE" --type=merge -p "{\"spec\":{\"caBundle\":\"$ca\"}}" >/dev/null
say "APIService $APISERVICE trusts the CA of $SECRET"
