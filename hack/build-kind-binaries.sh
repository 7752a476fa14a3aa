#!/usr/bin/env bash
# Build what a kind node runs, from source through the Go module proxy, at pinned versions:
#   kubelet, kubeadm, kube-scheduler, kube-proxy (k8s.io/kubernetes, the same version and the same
#   scratch-module approach as hack/build-control-plane.sh), crictl (sigs.k8s.io/cri-tools),
#   coredns (github.com/coredns/coredns) and a static pause (kubernetes' build/pause/linux/pause.c).
# The control plane's own binaries (kube-apiserver, kube-controller-manager, kubectl, etcd) come
# from hack/build-control-plane.sh and are copied next to these.
#
# The binaries land in a cache directory outside the repo, keyed by version:
#   ${TUXIO_CACHE:-$HOME/.cache/tuxio}/kind/bin-k8s-<ver>-crictl-<ver>-coredns-<ver>/
# When everything is there the script does nothing. Progress goes to stderr; the only line on
# stdout is that directory. Needs Go >= 1.26 and a C compiler (for pause).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD

K8S_VERSION=v1.36.3 # as hack/build-control-plane.sh
K8S_STAGING_VERSION=v0.${K8S_VERSION#v1.}
CRICTL_VERSION=v1.36.0
COREDNS_VERSION=v1.14.2 # what kubeadm v1.36 deploys
PAUSE_VERSION=v3.10.2   # the pause image kubeadm v1.36 names

CACHE_ROOT=${TUXIO_CACHE:-$HOME/.cache/tuxio}/kind
OUT_DIR=$CACHE_ROOT/bin-k8s-$K8S_VERSION-crictl-$CRICTL_VERSION-coredns-$COREDNS_VERSION
BINARIES=(kubelet kubeadm kube-scheduler kube-proxy crictl coredns pause
  kube-apiserver kube-controller-manager kubectl etcd)

log() { echo "build-kind-binaries: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }
trap 'die "failed at line $LINENO (exit $?): $BASH_COMMAND"' ERR

ETCD_VERSION=3.6.16 # as hack/build-control-plane.sh

# What a binary says it is (its own version output, or the module version Go recorded in it),
# against what it must be: a stand-in or a binary of another version is not taken from the cache.
reports() { # BINARY (the whole output is read first: grep -q under pipefail would race SIGPIPE)
  local b=$OUT_DIR/$1 out
  case $1 in
    coredns) out=$("$b" -version) && grep -qx "CoreDNS-${COREDNS_VERSION#v}" <<<"$out" ;;
    crictl) out=$(go version -m "$b") && grep -qP "^\tmod\tsigs\.k8s\.io/cri-tools\t$CRICTL_VERSION\t" <<<"$out" ;;
    pause) out=$("$b" -v 2>&1) && grep -q "$PAUSE_VERSION" <<<"$out" ;;
    etcd) out=$("$b" --version) && grep -qx "etcd Version: $ETCD_VERSION" <<<"$out" ;;
    kubeadm) [ "$("$b" version -o short)" = "$K8S_VERSION" ] ;;
    kubectl) out=$("$b" version --client) && grep -qx "Client Version: $K8S_VERSION" <<<"$out" ;;
    *) [ "$("$b" --version)" = "Kubernetes $K8S_VERSION" ] ;;
  esac
}
complete() {
  local b
  for b in "${BINARIES[@]}"; do
    [ -x "$OUT_DIR/$b" ] || return 1
    if ! reports "$b" >/dev/null 2>&1; then
      log "$OUT_DIR/$b is not $b of the pinned version (a stand-in or stale): rebuilding"
      return 1
    fi
  done
}
if complete; then
  log "cached: $OUT_DIR"
  echo "$OUT_DIR"
  exit 0
fi

command -v go >/dev/null || die "go is not installed (need Go >= 1.26)"
command -v cc >/dev/null || die "a C compiler (cc) is needed for pause"
mkdir -p "$CACHE_ROOT"
exec 9>"$CACHE_ROOT/.bin.lock"
flock 9
if complete; then
  log "built by a concurrent run: $OUT_DIR"
  echo "$OUT_DIR"
  exit 0
fi
rm -rf "$CACHE_ROOT"/.bin-build.*
WORK=$(mktemp -d "$CACHE_ROOT/.bin-build.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
export CGO_ENABLED=0
export GOFLAGS="${GOFLAGS:-} -trimpath"
start=$SECONDS
mkdir "$WORK/bin"

# --- Kubernetes: the node's and the scheduler's commands -----------------------------------
log "resolving k8s.io/kubernetes@$K8S_VERSION"
mkdir "$WORK/k8s"
cd "$WORK/k8s"
go mod init tuxio.local/build/kubernetes-node >/dev/null 2>&1
k8s_gomod=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/^\t"GoMod": "\(.*\)",$/\1/p')
k8s_dir=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
[ -f "$k8s_gomod" ] && [ -d "$k8s_dir" ] || die "go mod download k8s.io/kubernetes@$K8S_VERSION failed"
mapfile -t staging < <(awk '$2 == "v0.0.0" && $1 ~ /^k8s\.io\// { print $1 }' "$k8s_gomod" | sort -u)
[ "${#staging[@]}" -gt 10 ] || die "found only ${#staging[@]} staging modules in $k8s_gomod"
{
  printf 'module tuxio.local/build/kubernetes-node\n\ngo 1.26.0\n\nrequire k8s.io/kubernetes %s\n\nreplace (\n' "$K8S_VERSION"
  for m in "${staging[@]}"; do printf '\t%s => %s %s\n' "$m" "$m" "$K8S_STAGING_VERSION"; done
  echo ")"
} >go.mod
K8S_CMDS=(k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kubeadm
  k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kube-proxy)
go get "${K8S_CMDS[@]/%/@$K8S_VERSION}" >"$WORK/k8s-get.log" 2>&1 \
  || { tail -n 30 "$WORK/k8s-get.log" >&2; die "go get of the kubernetes commands failed"; }
k8s_minor=${K8S_VERSION#v1.}
k8s_minor=${k8s_minor%%.*}
build_date=$(date -u +%Y-%m-%dT%H:%M:%SZ)
ldflags="-s -w"
for pkg in k8s.io/client-go/pkg/version k8s.io/component-base/version; do
  ldflags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$k8s_minor"
  ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.gitCommit= -X $pkg.buildDate=$build_date"
done
log "compiling ${K8S_CMDS[*]##*/}"
go build -ldflags="$ldflags" -o "$WORK/bin/" "${K8S_CMDS[@]}"
log "kubernetes done after $((SECONDS - start))s"

# --- pause: static, as kubernetes' build/pause/Makefile builds it ----------------------------
cc -Os -Wall -Werror -static -DVERSION="$PAUSE_VERSION-tuxio" -o "$WORK/bin/pause" "$k8s_dir/build/pause/linux/pause.c"
strip "$WORK/bin/pause"

# --- crictl and coredns: plain modules ---------------------------------------------------------
log "compiling crictl $CRICTL_VERSION and coredns $COREDNS_VERSION"
GOBIN=$WORK/bin go install "sigs.k8s.io/cri-tools/cmd/crictl@$CRICTL_VERSION"
GOBIN=$WORK/bin go install -ldflags="-s -w" "github.com/coredns/coredns@$COREDNS_VERSION"

# --- the control plane's binaries (built, or waited for, by hack/build-control-plane.sh) ----
cd "$REPO"
CP_BIN=$(hack/build-control-plane.sh)
for b in kube-apiserver kube-controller-manager kubectl etcd; do cp "$CP_BIN/$b" "$WORK/bin/"; done

rm -rf "$OUT_DIR"
mv "$WORK/bin" "$OUT_DIR"
for b in "${BINARIES[@]}"; do
  [ -x "$OUT_DIR/$b" ] || die "$b was not built"
  reports "$b" || die "the $b built does not report its pinned version"
done
log "built in $((SECONDS - start))s ($(du -sh "$OUT_DIR" | cut -f1)): $OUT_DIR"
echo "$OUT_DIR"
