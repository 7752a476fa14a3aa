#!/usr/bin/env bash
# Build a Kubernetes control plane from source through the Go module proxy:
# kube-apiserver, kube-controller-manager, kubectl (k8s.io/kubernetes) and etcd
# (go.etcd.io/etcd/server/v3), at pinned versions.
#
# The binaries land in a cache directory outside the repo, keyed by version:
#   ${TUXIO_CACHE:-$HOME/.cache/tuxio}/control-plane/k8s-<ver>-etcd-<ver>/bin/
# When all four are already there the script does nothing. Progress goes to stderr;
# the last (only) line on stdout is the bin directory, so callers can do
#   BIN_DIR=$(hack/build-control-plane.sh)
# A first build takes a while: ~9 minutes on 2 cores with a cold Go build cache (plus ~1 minute
# of module downloads), ~3 GB of Go build cache and ~0.9 GB of module cache.
set -euo pipefail

K8S_VERSION=v1.36.3
# The staging modules (k8s.io/api, client-go, ...) are tagged v0.X.Y for Kubernetes v1.X.Y.
K8S_STAGING_VERSION=v0.${K8S_VERSION#v1.}
ETCD_VERSION=v3.6.16

CACHE_ROOT=${TUXIO_CACHE:-$HOME/.cache/tuxio}/control-plane
OUT_DIR=$CACHE_ROOT/k8s-$K8S_VERSION-etcd-$ETCD_VERSION
BIN_DIR=$OUT_DIR/bin
BINARIES=(etcd kube-apiserver kube-controller-manager kubectl)

log() { echo "build-control-plane: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }
trap 'die "failed at line $LINENO (exit $?): $BASH_COMMAND"' ERR

complete() {
  local b
  for b in "${BINARIES[@]}"; do [ -x "$BIN_DIR/$b" ] || return 1; done
}

if complete; then
  log "cached: $BIN_DIR"
  echo "$BIN_DIR"
  exit 0
fi

command -v go >/dev/null || die "go is not installed (need Go >= 1.26)"
go_minor=$(go env GOVERSION | sed -n 's/^go1\.\([0-9]*\).*/\1/p')
[ "${go_minor:-0}" -ge 26 ] || die "need Go >= 1.26 (both go.mods say 'go 1.26.0'), have $(go env GOVERSION)"

mkdir -p "$CACHE_ROOT"
# Two builds at once would race on the final rename; the second one waits, then finds the binaries.
exec 9>"$CACHE_ROOT/.lock"
flock 9
if complete; then
  log "built by a concurrent run: $BIN_DIR"
  echo "$BIN_DIR"
  exit 0
fi
rm -rf "$CACHE_ROOT"/.build.* # left over by a killed build (we hold the lock)

# Everything is built in a scratch dir next to the destination (same filesystem, so the final
# mv is an atomic rename) and only moved into place once all four binaries exist.
WORK=$(mktemp -d "$CACHE_ROOT/.build.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
export CGO_ENABLED=0 # static binaries, as upstream releases them
export GOFLAGS="${GOFLAGS:-} -trimpath"
start=$SECONDS

# --- Kubernetes -------------------------------------------------------------------------
# k8s.io/kubernetes can't be `go install`ed: its go.mod requires the staging modules at v0.0.0
# and replaces them with ./staging/src/... paths, which only work inside its own repo. A scratch
# main module requiring it, with each of those replaced by the published v0.X.Y, builds it.
log "resolving k8s.io/kubernetes@$K8S_VERSION"
mkdir "$WORK/k8s"
cd "$WORK/k8s"
go mod init tuxio.local/build/kubernetes >/dev/null 2>&1
k8s_gomod=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/^\t"GoMod": "\(.*\)",$/\1/p')
[ -f "$k8s_gomod" ] || die "go mod download k8s.io/kubernetes@$K8S_VERSION gave no go.mod"
# The staging modules are exactly the ones k8s.io/kubernetes requires at v0.0.0.
mapfile -t staging < <(awk '$2 == "v0.0.0" && $1 ~ /^k8s\.io\// { print $1 }' "$k8s_gomod" | sort -u)
[ "${#staging[@]}" -gt 10 ] || die "found only ${#staging[@]} staging modules in $k8s_gomod"
while read -r m; do
  [[ " ${staging[*]} " == *" $m "* ]] || log "note: $m is replaced upstream but not required; skipped"
done < <(sed -n 's#^[[:space:]]*\(k8s\.io/[^ ]*\) => \./staging/.*#\1#p' "$k8s_gomod")
{
  echo "module tuxio.local/build/kubernetes"
  echo
  echo "go 1.26.0"
  echo
  echo "require k8s.io/kubernetes $K8S_VERSION"
  echo
  echo "replace ("
  for m in "${staging[@]}"; do echo "	$m => $m $K8S_STAGING_VERSION"; done
  echo ")"
} >go.mod
log "${#staging[@]} staging modules pinned to $K8S_STAGING_VERSION; downloading dependencies"
K8S_CMDS=(k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager k8s.io/kubernetes/cmd/kubectl)
go get "${K8S_CMDS[@]/%/@$K8S_VERSION}" >"$WORK/k8s-get.log" 2>&1 \
  || { tail -n 30 "$WORK/k8s-get.log" >&2; die "go get of the kubernetes commands failed"; }
got=$(go list -m -f '{{.Version}}' k8s.io/kubernetes)
[ "$got" = "$K8S_VERSION" ] || die "k8s.io/kubernetes resolved to $got, not $K8S_VERSION"

# Version stamping as in kubernetes' hack/lib/version.sh: kubectl reports its own version from
# client-go, the servers from component-base. The module proxy has no commit hash to give.
k8s_minor=${K8S_VERSION#v1.}
k8s_minor=${k8s_minor%%.*}
build_date=$(date -u +%Y-%m-%dT%H:%M:%SZ)
ldflags="-s -w"
for pkg in k8s.io/client-go/pkg/version k8s.io/component-base/version; do
  ldflags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$k8s_minor"
  ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.gitCommit= -X $pkg.buildDate=$build_date"
done
mkdir -p "$WORK/bin"
log "compiling ${K8S_CMDS[*]##*/}"
go build -ldflags="$ldflags" -o "$WORK/bin/" "${K8S_CMDS[@]}"
log "kubernetes done after $((SECONDS - start))s"

# --- etcd ---------------------------------------------------------------------------------
# The repo-root module go.etcd.io/etcd/v3 (whose main.go is the usual etcd entry point) is not
# served by the proxy for 3.6, but go.etcd.io/etcd/server/v3 carries the same main package
# (server/main.go -> etcdmain.Main). Its go.mod replaces its sibling modules with ../ paths;
# pin those to the same version here so the build matches an upstream one.
log "resolving go.etcd.io/etcd/server/v3@$ETCD_VERSION"
mkdir "$WORK/etcd"
cd "$WORK/etcd"
go mod init tuxio.local/build/etcd >/dev/null 2>&1
etcd_gomod=$(go mod download -json "go.etcd.io/etcd/server/v3@$ETCD_VERSION" | sed -n 's/^\t"GoMod": "\(.*\)",$/\1/p')
[ -f "$etcd_gomod" ] || die "go mod download go.etcd.io/etcd/server/v3@$ETCD_VERSION gave no go.mod"
mapfile -t siblings < <(sed -n 's#^[[:space:]]*\(go\.etcd\.io/etcd/[^ ]*\) => \.\./.*#\1#p' "$etcd_gomod")
{
  echo "module tuxio.local/build/etcd"
  echo
  echo "go 1.26.0"
  echo
  echo "require go.etcd.io/etcd/server/v3 $ETCD_VERSION"
  if [ "${#siblings[@]}" -gt 0 ]; then
    echo
    echo "replace ("
    for m in "${siblings[@]}"; do echo "	$m => $m $ETCD_VERSION"; done
    echo ")"
  fi
} >go.mod
go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" >"$WORK/etcd-get.log" 2>&1 \
  || { tail -n 30 "$WORK/etcd-get.log" >&2; die "go get of etcd failed"; }
log "compiling etcd"
# etcd's own build sets version.GitSHA; the proxy has no hash, so etcd prints "Not provided".
go build -ldflags="-s -w" -o "$WORK/bin/etcd" go.etcd.io/etcd/server/v3

# --- install --------------------------------------------------------------------------------
for b in "${BINARIES[@]}"; do [ -x "$WORK/bin/$b" ] || die "$b was not built"; done
# Captured first: `| grep -q` exits at the first match, and with pipefail the SIGPIPE kubectl
# then gets on its next line (Kustomize Version) failed this check at random.
kubectl_version=$("$WORK/bin/kubectl" version --client 2>/dev/null || true)
[[ $kubectl_version == *"$K8S_VERSION"* ]] || die "built kubectl does not report $K8S_VERSION"
rm -rf "$OUT_DIR" # a partial result from an older layout, if any; complete() said it's not usable
mkdir -p "$OUT_DIR"
mv "$WORK/bin" "$BIN_DIR"
{
  echo "k8s.io/kubernetes $K8S_VERSION (staging modules $K8S_STAGING_VERSION)"
  echo "go.etcd.io/etcd/server/v3 $ETCD_VERSION"
  echo "built $build_date with $(go env GOVERSION) in $((SECONDS - start))s"
} >"$OUT_DIR/BUILD-INFO"
log "built in $((SECONDS - start))s ($(du -sh "$BIN_DIR" | cut -f1)): $BIN_DIR"
echo "$BIN_DIR"
