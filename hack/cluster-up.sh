#!/usr/bin/env bash
# Start a real, minimal Kubernetes control plane on loopback: etcd, kube-apiserver and
# kube-controller-manager (no scheduler, no nodes), built from source by build-control-plane.sh.
# State (certificates, etcd data, logs, pid files, kubeconfig) lives in
# ${TUXIO_CLUSTER_DIR:-/var/tmp/tuxio-cluster}; ports and timeouts are in hack/lib/cluster-env.sh.
#
# Idempotent: a healthy cluster is left alone; a component that is not running (e.g. after a
# reboot) is started again on the existing state. hack/cluster-down.sh stops it and wipes the state.
set -euo pipefail
trap 'echo "${0##*/}: ERROR: failed at line $LINENO (exit $?): $BASH_COMMAND" >&2' ERR
HACK=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib/cluster-env.sh
. "$HACK/lib/cluster-env.sh"

command -v openssl >/dev/null || die "openssl is missing: apt-get install -y openssl"
BIN_DIR=$("$HACK/build-control-plane.sh")
KUBECTL=("$BIN_DIR/kubectl" --kubeconfig="$KUBECONFIG_FILE" --request-timeout=5s)

# --- helpers ---------------------------------------------------------------------------------

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

etcd_healthy() {
  local resp
  resp=$(
    exec 3<>"/dev/tcp/127.0.0.1/$ETCD_CLIENT_PORT" || exit 1
    printf 'GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' >&3
    timeout 3 cat <&3
  ) 2>/dev/null || return 1
  [[ $resp == *'"health":"true"'* ]]
}
# The API server's flags as the last start recorded them ($RUN/kube-apiserver.args, one a line)
# equal the ones this script would give it now.
apiserver_flags_current() {
  [ -f "$RUN/kube-apiserver.args" ] && [ "$(<"$RUN/kube-apiserver.args")" = "$(printf '%s\n' "${APISERVER_ARGS[@]}")" ]
}
apiserver_ready() { [ "$("${KUBECTL[@]}" get --raw /readyz 2>/dev/null)" = ok ]; }
default_sa_exists() { "${KUBECTL[@]}" -n default get serviceaccount default >/dev/null 2>&1; }

tail_logs() {
  local c
  for c in "$@"; do
    [ -f "$LOGS/$c.log" ] || continue
    echo "----- last lines of $LOGS/$c.log -----" >&2
    tail -n 25 "$LOGS/$c.log" >&2
  done
}

# wait_for DESCRIPTION COMPONENT CHECK...: poll CHECK for up to START_TIMEOUT seconds; fail early
# with the logs if a component started so far has exited.
UP=() # components started (or found running) by this run
wait_for() {
  local what=$1 component=$2 deadline=$((SECONDS + START_TIMEOUT)) c
  shift 2
  until "$@"; do
    for c in "${UP[@]}"; do
      if ! running "$c"; then
        tail_logs "$c"
        die "$c exited while waiting for $what (log: $LOGS/$c.log)"
      fi
    done
    if [ "$SECONDS" -ge "$deadline" ]; then
      tail_logs "$component"
      die "timed out after ${START_TIMEOUT}s waiting for $what (log: $LOGS/$component.log)"
    fi
    sleep 1
  done
}

# start NAME ARGS...: run a binary in its own session (setsid), so it survives the shell that
# started it and a Ctrl-C there. The child writes its own pid before exec'ing the binary, so the
# pid file is right whether or not setsid had to fork.
start() {
  local name=$1 port
  shift
  UP+=("$name")
  if running "$name"; then
    log "$name already running (pid $(pid_of "$name"))"
    return
  fi
  case $name in
    etcd) port=$ETCD_CLIENT_PORT ;;
    kube-apiserver) port=$APISERVER_PORT ;;
    kube-controller-manager) port=$KCM_PORT ;;
  esac
  port_in_use "$port" && die "port $port (for $name) is taken by another process; stop it or choose another port (see hack/lib/cluster-env.sh)"
  log "starting $name"
  rm -f "$RUN/$name.pid"
  echo "=== $(date -u +%FT%TZ) starting $name" >>"$LOGS/$name.log"
  # shellcheck disable=SC2016 # $$ and $@ are for the inner bash
  setsid bash -c 'echo $$ >"$0"; exec "$@"' "$RUN/$name.pid" "$BIN_DIR/$name" "$@" \
    >>"$LOGS/$name.log" 2>&1 </dev/null &
  # The pid file is written by the inner bash before its exec: until the exec has happened the
  # process is still bash, so wait for it to be the binary (or to have died), not just the file.
  local tries=100
  until running "$name" || [ $((tries -= 1)) -eq 0 ]; do sleep 0.1; done
  running "$name" || { tail_logs "$name"; die "$name did not start"; }
}

# stop NAME: TERM, then KILL after STOP_TIMEOUT seconds (as hack/cluster-down.sh does).
stop() {
  local pid deadline
  pid=$(pid_of "$1") || return 0
  log "restarting $1 (pid $pid) on new flags"
  kill -TERM "$pid" 2>/dev/null || true
  deadline=$((SECONDS + STOP_TIMEOUT))
  while running "$1" && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.2; done
  if running "$1"; then
    kill -KILL "$pid" 2>/dev/null || true
    sleep 0.5
  fi
  ! running "$1" || die "could not stop $1 (pid $pid)"
}

print_usage() {
  cat <<EOF

Kubernetes $("$BIN_DIR/kubectl" version --client 2>/dev/null | sed -n 's/^Client Version: //p') control plane is up on https://127.0.0.1:$APISERVER_PORT (state in $CLUSTER_DIR).
Use it with:
  export KUBECONFIG=$KUBECONFIG_FILE
  export PATH=$BIN_DIR:\$PATH
  kubectl get ns
There are no nodes and no scheduler: API objects, controllers and CRDs only.
Stop it and delete its state with: $HACK/cluster-down.sh
EOF
}

# --- the API server's flags ------------------------------------------------------------------
# --advertise-address=127.0.0.1 with --endpoint-reconciler-type=none: the `kubernetes` Service
# would otherwise get a loopback endpoint, which the API rejects, and nothing runs in-cluster
# that could use it anyway. --enable-aggregator-routing: a webhook or an aggregated API behind a
# Service is called at the Service's endpoints, not its cluster IP (there is no kube-proxy
# here), so the operator's claim webhook and the gateway's aggregated API can be tested as the
# manifests deploy them, behind a Service.
# The front proxy (the aggregation layer): the API server authenticates every request itself,
# then proxies those for an aggregated API (the gateway's subresources.tux.io) with the client
# certificate front-proxy-client and the user in X-Remote-User, X-Remote-Group and
# X-Remote-Extra-*. The aggregated server trusts those headers only from a certificate of the
# front-proxy CA with an allowed name; it reads CA, names and header names from the ConfigMap
# kube-system/extension-apiserver-authentication, which the API server writes from these flags.
# A CA of its own, never the cluster CA: a user's client certificate named front-proxy-client
# must not be able to speak for anyone.
# shellcheck disable=SC2054 # --authorization-mode=Node,RBAC: a comma inside one flag
APISERVER_ARGS=(
  --bind-address=127.0.0.1
  --enable-aggregator-routing=true
  --secure-port="$APISERVER_PORT"
  --advertise-address=127.0.0.1
  --endpoint-reconciler-type=none
  --etcd-servers="http://127.0.0.1:$ETCD_CLIENT_PORT"
  --tls-cert-file="$PKI/apiserver.crt"
  --tls-private-key-file="$PKI/apiserver.key"
  --client-ca-file="$PKI/ca.crt"
  --token-auth-file="$PKI/tokens.csv"
  --authorization-mode=Node,RBAC
  --allow-privileged=true
  --service-cluster-ip-range=10.96.0.0/16
  --service-account-issuer=https://kubernetes.default.svc
  --service-account-key-file="$PKI/sa.pub"
  --service-account-signing-key-file="$PKI/sa.key"
  --requestheader-client-ca-file="$PKI/front-proxy-ca.crt"
  --requestheader-allowed-names=front-proxy-client
  --requestheader-username-headers=X-Remote-User
  --requestheader-group-headers=X-Remote-Group
  --requestheader-extra-headers-prefix=X-Remote-Extra-
  --proxy-client-cert-file="$PKI/front-proxy-client.crt"
  --proxy-client-key-file="$PKI/front-proxy-client.key"
  --admission-control-config-file="$CLUSTER_DIR/admission.yaml"
)

# --- fast path: already up ------------------------------------------------------------------
# Up, and the API server runs with the flags this script gives it (a cluster made by an older
# version of this script, e.g. before the front proxy, falls through: its PKI is completed and
# its API server restarted below).
if [ -f "$MARKER" ] && running etcd && running kube-apiserver && running kube-controller-manager \
  && [ -f "$PKI/front-proxy-client.crt" ] && apiserver_flags_current && apiserver_ready; then
  log "cluster already running"
  print_usage
  exit 0
fi

# --- state: certificates, keys, token, kubeconfigs (made once, kept across restarts) ---------
mkdir -p "$CLUSTER_DIR" "$LOGS" "$RUN" "$CLUSTER_DIR/etcd"
chmod 700 "$CLUSTER_DIR" "$CLUSTER_DIR/etcd"
touch "$MARKER"

# openssl is quiet unless it fails; then its messages are shown.
ossl() {
  local err
  err=$(openssl "$@" 2>&1 >/dev/null) || { echo "$err" >&2; die "openssl $1 failed"; }
}
gen_pki() {
  local d=$CLUSTER_DIR/pki.tmp
  rm -rf "$d"
  mkdir -m 700 "$d"
  # One config file for all certificates; the sections are picked with -extensions.
  cat >"$d/openssl.cnf" <<'EOF'
[req]
distinguished_name = dn
[dn]
[ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign,digitalSignature
subjectKeyIdentifier = hash
[server]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth
authorityKeyIdentifier = keyid
subjectAltName = @sans
[sans]
DNS.1 = localhost
DNS.2 = kubernetes
DNS.3 = kubernetes.default
DNS.4 = kubernetes.default.svc
DNS.5 = kubernetes.default.svc.cluster.local
IP.1 = 127.0.0.1
# first address of --service-cluster-ip-range: the ClusterIP of the `kubernetes` Service
IP.2 = 10.96.0.1
[client]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = clientAuth
authorityKeyIdentifier = keyid
EOF
  local q=(-config "$d/openssl.cnf")
  ossl req -x509 -new -nodes -newkey rsa:2048 -sha256 -days 3650 "${q[@]}" -extensions ca \
    -subj "/CN=tuxio-local-ca" -keyout "$d/ca.key" -out "$d/ca.crt"
  # leaf NAME SUBJECT SECTION
  leaf() {
    ossl req -new -nodes -newkey rsa:2048 "${q[@]}" -subj "$2" \
      -keyout "$d/$1.key" -out "$d/$1.csr"
    ossl x509 -req -sha256 -days 3650 -in "$d/$1.csr" -CA "$d/ca.crt" -CAkey "$d/ca.key" \
      -CAcreateserial -CAserial "$d/ca.srl" -extfile "$d/openssl.cnf" -extensions "$3" \
      -out "$d/$1.crt"
    rm "$d/$1.csr"
  }
  leaf apiserver "/CN=kube-apiserver" server
  # kube-controller-manager authenticates with a client certificate as the user the built-in
  # RBAC roles are bound to (system:kube-controller-manager).
  leaf controller-manager "/CN=system:kube-controller-manager" client
  # Service-account tokens: the apiserver signs with the private key and verifies with the public one.
  ossl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$d/sa.key"
  ossl pkey -in "$d/sa.key" -pubout -out "$d/sa.pub"
  # Static token file (token,user,uid,"groups"): the admin is in system:masters, i.e. cluster-admin.
  echo "$(openssl rand -hex 32),admin,admin,system:masters" >"$d/tokens.csv"
  chmod 600 "$d"/*.key "$d/tokens.csv"
  ossl verify -CAfile "$d/ca.crt" "$d/apiserver.crt" "$d/controller-manager.crt"
  mv "$d" "$PKI" # all or nothing
}
if [ ! -f "$PKI/tokens.csv" ]; then
  log "generating certificates and keys in $PKI"
  rm -rf "$PKI"
  gen_pki
fi

# gen_client_pki CA CLIENT CLIENT-CN: a CA of its own ($PKI/CA.crt, .key) and one client
# certificate from it ($PKI/CLIENT.crt, .key). Made apart from gen_pki so that a cluster made
# before them gets them on its next cluster-up; all or nothing, through a scratch directory.
gen_client_pki() {
  local ca=$1 client=$2 cn=$3 d=$CLUSTER_DIR/$2.tmp
  rm -rf "$d"
  mkdir -m 700 "$d"
  cat >"$d/openssl.cnf" <<'EOF'
[req]
distinguished_name = dn
[dn]
[ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign,digitalSignature
subjectKeyIdentifier = hash
[client]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = clientAuth
authorityKeyIdentifier = keyid
EOF
  local q=(-config "$d/openssl.cnf")
  ossl req -x509 -new -nodes -newkey rsa:2048 -sha256 -days 3650 "${q[@]}" -extensions ca \
    -subj "/CN=tuxio-local-$ca" -keyout "$d/$ca.key" -out "$d/$ca.crt"
  ossl req -new -nodes -newkey rsa:2048 "${q[@]}" -subj "/CN=$cn" \
    -keyout "$d/$client.key" -out "$d/$client.csr"
  ossl x509 -req -sha256 -days 3650 -in "$d/$client.csr" -CA "$d/$ca.crt" \
    -CAkey "$d/$ca.key" -CAcreateserial -CAserial "$d/$ca.srl" \
    -extfile "$d/openssl.cnf" -extensions client -out "$d/$client.crt"
  ossl verify -CAfile "$d/$ca.crt" "$d/$client.crt"
  chmod 600 "$d"/*.key
  # The client certificate last: its presence means that everything else is there.
  mv "$d/$ca.key" "$d/$client.key" "$d/$ca.crt" "$PKI/"
  mv "$d/$client.crt" "$PKI/"
  rm -rf "$d"
}
# The front proxy's CA and client certificate (see the API server's flags above).
if [ ! -f "$PKI/front-proxy-client.crt" ]; then
  log "generating the front proxy's CA and client certificate in $PKI"
  gen_client_pki front-proxy-ca front-proxy-client front-proxy-client
fi
# The certificate the API server presents to webhooks, from a CA of its own as the front
# proxy's: the claim webhook answers no other caller (see the admission configuration below).
if [ ! -f "$PKI/webhook-client.crt" ]; then
  log "generating the API server's webhook client CA and certificate in $PKI"
  gen_client_pki webhook-client-ca webhook-client kube-apiserver-webhook-client
fi

# kubeconfig FILE USER-LINES: a kubeconfig for this cluster, the CA embedded.
kubeconfig() {
  cat >"$1.tmp" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: tuxio
  cluster:
    server: https://127.0.0.1:$APISERVER_PORT
    certificate-authority-data: $(base64 -w0 "$PKI/ca.crt")
users:
- name: $2
  user:
$3
contexts:
- name: $2@tuxio
  context:
    cluster: tuxio
    user: $2
current-context: $2@tuxio
EOF
  chmod 600 "$1.tmp"
  mv "$1.tmp" "$1"
}
# Rewritten each time: cheap, and picks up a changed APISERVER_PORT.
kubeconfig "$KUBECONFIG_FILE" admin "    token: $(cut -d, -f1 "$PKI/tokens.csv")"
kubeconfig "$CLUSTER_DIR/controller-manager.kubeconfig" kube-controller-manager \
  "    client-certificate: $PKI/controller-manager.crt
    client-key: $PKI/controller-manager.key"
# The API server's admission configuration: to every webhook ("*") it presents the
# certificate above (WebhookAdmissionConfiguration, kubeConfigFile).
cat >"$CLUSTER_DIR/webhook-client.kubeconfig.tmp" <<EOF
apiVersion: v1
kind: Config
users:
- name: "*"
  user:
    client-certificate: $PKI/webhook-client.crt
    client-key: $PKI/webhook-client.key
EOF
chmod 600 "$CLUSTER_DIR/webhook-client.kubeconfig.tmp"
mv "$CLUSTER_DIR/webhook-client.kubeconfig.tmp" "$CLUSTER_DIR/webhook-client.kubeconfig"
cat >"$CLUSTER_DIR/admission.yaml.tmp" <<EOF
apiVersion: apiserver.config.k8s.io/v1
kind: AdmissionConfiguration
plugins:
- name: MutatingAdmissionWebhook
  configuration:
    apiVersion: apiserver.config.k8s.io/v1
    kind: WebhookAdmissionConfiguration
    kubeConfigFile: $CLUSTER_DIR/webhook-client.kubeconfig
- name: ValidatingAdmissionWebhook
  configuration:
    apiVersion: apiserver.config.k8s.io/v1
    kind: WebhookAdmissionConfiguration
    kubeConfigFile: $CLUSTER_DIR/webhook-client.kubeconfig
EOF
mv "$CLUSTER_DIR/admission.yaml.tmp" "$CLUSTER_DIR/admission.yaml"

# --- etcd ------------------------------------------------------------------------------------
# Plain http on loopback: keeps the setup small. Note that any local user can reach etcd (and
# so bypass the apiserver's authorization); this is a throwaway test cluster.
start etcd \
  --name=tuxio \
  --data-dir="$CLUSTER_DIR/etcd" \
  --listen-client-urls="http://127.0.0.1:$ETCD_CLIENT_PORT" \
  --advertise-client-urls="http://127.0.0.1:$ETCD_CLIENT_PORT" \
  --listen-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
  --initial-advertise-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
  --initial-cluster="tuxio=http://127.0.0.1:$ETCD_PEER_PORT" \
  --initial-cluster-state=new
wait_for "etcd /health" etcd etcd_healthy

# --- kube-apiserver --------------------------------------------------------------------------
if running kube-apiserver && ! apiserver_flags_current; then
  # Started by an older version of this script (without the front proxy, say): restart it on
  # the current flags. Its state is in etcd; nothing is lost.
  stop kube-apiserver
fi
start kube-apiserver "${APISERVER_ARGS[@]}"
printf '%s\n' "${APISERVER_ARGS[@]}" >"$RUN/kube-apiserver.args"
wait_for "kube-apiserver /readyz" kube-apiserver apiserver_ready

# --- kube-controller-manager -----------------------------------------------------------------
# All default controllers (garbage collector, namespace, service accounts, ...). The ones that
# need a cloud or node CIDRs stay idle on their own; --leader-elect=false as there is one instance.
# The flex-volume dir would otherwise be created under /usr/libexec on the host. No
# --authentication-kubeconfig: without a front-proxy CA it logs an error every few seconds, and
# only its own /metrics would need it (its /healthz is open anyway).
start kube-controller-manager \
  --kubeconfig="$CLUSTER_DIR/controller-manager.kubeconfig" \
  --flex-volume-plugin-dir="$CLUSTER_DIR/flexvolume" \
  --bind-address=127.0.0.1 \
  --secure-port="$KCM_PORT" \
  --leader-elect=false \
  --controllers='*' \
  --use-service-account-credentials=true \
  --service-account-private-key-file="$PKI/sa.key" \
  --root-ca-file="$PKI/ca.crt" \
  --cluster-signing-cert-file="$PKI/ca.crt" \
  --cluster-signing-key-file="$PKI/ca.key"
# The service-account controller runs in kube-controller-manager: its work shows it is up.
wait_for "the default service account" kube-controller-manager default_sa_exists

print_usage
