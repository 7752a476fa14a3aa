#!/usr/bin/env bash
# A kind node image made without `kind build node-image` (which needs a docker daemon) and
# without an image registry:
#   - a Debian root filesystem from debootstrap with systemd, iptables, conntrack, and
#     containerd, runc and the CNI plugins from Debian's packages
#   - kind's own images/base/files (from the sigs.k8s.io/kind module) and its cri-base.json
#   - kubelet, kubeadm, kubectl and the rest from hack/build-kind-binaries.sh, /kind/version
#   - the images kubeadm runs (kube-apiserver, kube-controller-manager, kube-scheduler,
#     kube-proxy, etcd, coredns, pause), built FROM scratch around those binaries (kube-proxy on
#     the Debian base, for iptables), tagged with the registry.k8s.io names kubeadm asks for and
#     imported into the node's containerd
#   - containerd: restrict_oom_score_adj = true (this host may not lower oom_score_adj; without
#     it every pod sandbox fails with "can't get final child's PID from pipe"), the pause image
#     kubeadm names; a static ptp CNI conflist (hack/kind/10-ptp.conflist) for one node
# The image ($KIND_NODE_IMAGE, about 2 GB) stays in the container engine and is reused; its
# root filesystem is cached in ${TUXIO_CACHE:-$HOME/.cache/tuxio}/kind/. Prints the image name.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=hack/lib/kind-env.sh
source hack/lib/kind-env.sh
ENGINE=$KIND_ENGINE
# The tag names the Kubernetes version; whether the image is current is its inputs label's say.
KIND_NODE_IMAGE=${KIND_NODE_IMAGE:-localhost/tuxio/kind-node:$K8S_VERSION}
ETCD_TAG=3.6.16-0
COREDNS_TAG=v1.14.2
PAUSE_TAG=3.10.2
NODE_PACKAGES=systemd,systemd-sysv,dbus,conntrack,iptables,nftables,iproute2,ethtool,util-linux,mount,kmod
NODE_PACKAGES+=,libseccomp2,pigz,fuse-overlayfs,e2fsprogs,bash,ca-certificates,curl,jq,procps
NODE_PACKAGES+=,containerd,runc,containernetworking-plugins

start=$SECONDS
BIN=${KIND_BIN_DIR:-$(hack/build-kind-binaries.sh)}
BASE=$(hack/build-debian-image.sh)
KIND_SRC=$(cd "$KIND_CACHE" && go mod download -json "sigs.k8s.io/kind@$KIND_VERSION" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
[ -d "$KIND_SRC/images/base/files" ] || die "no images/base/files in sigs.k8s.io/kind@$KIND_VERSION"
rootfs_tar=$KIND_CACHE/node-rootfs-$DEBIAN_SUITE-$(echo "$NODE_PACKAGES" | sha256sum | cut -c1-12).tar

# What the image is made of, by content: this script, the conflist, kind's files, the binaries,
# the base image kube-proxy's image is built on. A node image (or its stage) under the right name
# but made from anything else -- an older binary, a stand-in -- is rebuilt.
mapfile -t kind_files < <(find "$KIND_SRC/images/base/files" -type f | sort)
stage_inputs=$(printf '%s\n' "$NODE_PACKAGES" "$DEBIAN_SUITE" "$KIND_VERSION" "$K8S_VERSION" \
  | inputs_digest hack/build-kind-node-image.sh hack/lib/kind-env.sh hack/kind/10-ptp.conflist "${kind_files[@]}" "$BIN/kubelet" "$BIN/kubeadm" "$BIN/kubectl")
IMAGE_BINARIES=(kube-apiserver kube-controller-manager kube-scheduler kube-proxy etcd coredns pause crictl)
node_inputs=$(printf '%s\n' "$stage_inputs" "$(image_id "$BASE")" "$ETCD_TAG" "$COREDNS_TAG" "$PAUSE_TAG" \
  | inputs_digest "${IMAGE_BINARIES[@]/#/$BIN/}")
have=$(image_inputs "$KIND_NODE_IMAGE")
if [ "$have" = "$node_inputs" ]; then
  log "$KIND_NODE_IMAGE exists, made from these inputs ($node_inputs)"
  echo "$KIND_NODE_IMAGE"
  exit 0
fi
previous=$(image_id "$KIND_NODE_IMAGE")
if [ -n "$previous" ]; then
  log "$KIND_NODE_IMAGE exists but was made from other inputs (${have:-unlabelled}, now $node_inputs): rebuilding"
fi
debootstrap_tarball "$rootfs_tar" "$NODE_PACKAGES"

WORK=$(mktemp -d "$KIND_CACHE/.node.XXXXXX")
builder=tuxio-kind-node-build-$$
cleanup() {
  "$ENGINE" rm -f "$builder" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

assemble_stage() {
  log "assembling the node's root filesystem"
root=$WORK/root
mkdir "$root"
tar -C "$root" --numeric-owner -xf "$rootfs_tar"
files=$KIND_SRC/images/base/files
install -m 0755 "$files"/usr/local/bin/* "$root/usr/local/bin/"
mkdir -p "$root/kind/bin" "$root/LICENSES" "$root/etc/containerd" "$root/etc/kubernetes/manifests" \
  "$root/etc/systemd/system/kubelet.service.d" "$root/opt/cni/bin" "$root/etc/cni/net.d"
cp "$files"/kind/README.txt "$root/kind/"
install -m 0755 "$files"/kind/bin/* "$root/kind/bin/"
install -m 0644 "$files"/LICENSES/* "$root/LICENSES/"
install -m 0644 "$files"/etc/crictl.yaml "$root/etc/"
install -m 0644 "$files"/etc/containerd/* "$root/etc/containerd/"
install -m 0644 "$files"/etc/default/* "$root/etc/default/"
install -m 0644 "$files"/etc/sysctl.d/* "$root/etc/sysctl.d/"
install -m 0644 "$files"/etc/systemd/system/*.service "$files"/etc/systemd/system/*.slice "$root/etc/systemd/system/"
install -m 0644 "$files"/etc/systemd/system/kubelet.service.d/* "$root/etc/systemd/system/kubelet.service.d/"
# containerd and runc from Debian, where kind's units and config look for them.
ln -sf /usr/bin/containerd "$root/usr/local/bin/containerd"
ln -sf /usr/bin/ctr "$root/usr/local/bin/ctr"
ln -sf /usr/bin/runc "$root/usr/local/sbin/runc"
for plugin in "$root"/usr/lib/cni/*; do ln -sf "/usr/lib/cni/${plugin##*/}" "$root/opt/cni/bin/"; done
sed -i -e 's/^\([[:space:]]*restrict_oom_score_adj = \).*/\1true/' \
  -e "s#sandbox_image = .*#sandbox_image = \"registry.k8s.io/pause:$PAUSE_TAG\"#" "$root/etc/containerd/config.toml"
grep -q 'restrict_oom_score_adj = true' "$root/etc/containerd/config.toml" || die "containerd config: no restrict_oom_score_adj"
install -m 0644 hack/kind/10-ptp.conflist "$root/etc/cni/net.d/"
for b in kubelet kubeadm kubectl; do install -m 0755 "$BIN/$b" "$root/usr/bin/"; done
echo "$K8S_VERSION" >"$root/kind/version"
chroot "$root" /bin/sh -euc '
  ctr oci spec \
    | jq ".hooks.createContainer[.hooks.createContainer | length] |= . + {\"path\": \"/kind/bin/mount-product-files.sh\"}" \
    | jq "del(.process.rlimits)" >/etc/containerd/cri-base.json
  find /lib/systemd/system/sysinit.target.wants/ -name systemd-tmpfiles-setup.service -delete
  rm -f /lib/systemd/system/multi-user.target.wants/* /etc/systemd/system/*.wants/* \
    /lib/systemd/system/local-fs.target.wants/* /lib/systemd/system/sockets.target.wants/*udev* \
    /lib/systemd/system/sockets.target.wants/*initctl* /lib/systemd/system/basic.target.wants/*
  echo ReadKMsg=no >>/etc/systemd/journald.conf
  systemctl enable kubelet.service containerd.service undo-mount-hacks.service >/dev/null 2>&1
  systemctl mask systemd-binfmt.service >/dev/null 2>&1
'
[ -s "$root/etc/containerd/cri-base.json" ] || die "no cri-base.json"
tar -C "$root" --numeric-owner -cf "$WORK/root.tar" .
rm -rf "$root"
"$ENGINE" import --change "LABEL $INPUTS_LABEL=$stage_inputs" "$WORK/root.tar" "$stage" >/dev/null
rm -f "$WORK/root.tar"
}

# --- the root filesystem ----------------------------------------------------------------------
stage=localhost/tuxio/kind-node-stage:$K8S_VERSION
if [ "$(image_inputs "$stage")" = "$stage_inputs" ]; then
  log "$stage (the node without its images) exists, made from these inputs"
else
  assemble_stage
fi


# --- the images kubeadm runs, FROM scratch around the binaries ------------------------------------
build_image() { # TAG DIR BINARY: labelled with the binary's digest, checked after the build
  local sum
  sum=$(sha256sum "$BIN/$3" | cut -d' ' -f1)
  echo "LABEL $INPUTS_LABEL=$sum" >>"$2/Containerfile"
  log "building $1 ($3 $(du -h "$BIN/$3" | cut -f1), sha256 ${sum:0:12})"
  "$ENGINE" build --network host -q -t "$1" "$2" >/dev/null
  [ "$(image_inputs "$1")" = "$sum" ] || die "$1 is not the image of $BIN/$3 after its build"
  "$ENGINE" save --format docker-archive -o "$WORK/images/${1//[\/:]/_}.tar" "$1"
}
mkdir "$WORK/images"
static_image() { # NAME TAG BINARY [ENTRYPOINT]
  local dir=$WORK/ctx-${1//\//_}
  mkdir "$dir"
  cp "$BIN/$3" "$dir/"
  {
    echo "FROM scratch"
    echo "COPY $3 /usr/local/bin/$3"
    echo "ENV PATH=/usr/local/bin:/usr/bin:/bin"
    [ -n "${4:-}" ] && echo "ENTRYPOINT [\"$4\"]"
  } >"$dir/Containerfile"
  build_image "registry.k8s.io/$1:$2" "$dir" "$3"
}
static_image kube-apiserver "$K8S_VERSION" kube-apiserver
static_image kube-controller-manager "$K8S_VERSION" kube-controller-manager
static_image kube-scheduler "$K8S_VERSION" kube-scheduler
static_image etcd "$ETCD_TAG" etcd
static_image coredns/coredns "$COREDNS_TAG" coredns /usr/local/bin/coredns
static_image pause "$PAUSE_TAG" pause /usr/local/bin/pause
mkdir "$WORK/ctx-kube-proxy"
cp "$BIN/kube-proxy" "$WORK/ctx-kube-proxy/"
cat >"$WORK/ctx-kube-proxy/Containerfile" <<CONTAINERFILE
FROM $BASE
RUN apt-get update && apt-get install -y --no-install-recommends iptables conntrack ipset kmod \
    && apt-get clean && rm -rf /var/lib/apt/lists/*
COPY kube-proxy /usr/local/bin/kube-proxy
CONTAINERFILE
build_image "registry.k8s.io/kube-proxy:$K8S_VERSION" "$WORK/ctx-kube-proxy" kube-proxy

# --- import them into the node's containerd, commit the node ----------------------------------
log "importing the images into the node's containerd"
"$ENGINE" run -d --privileged --name "$builder" --entrypoint /usr/bin/containerd "$stage" >/dev/null
for _ in $(seq 60); do
  "$ENGINE" exec "$builder" ctr version >/dev/null 2>&1 && break
  sleep 1
done
"$ENGINE" exec "$builder" mkdir -p /kind/images
for archive in "$WORK"/images/*.tar; do
  "$ENGINE" cp "$archive" "$builder:/kind/images/"
  "$ENGINE" exec "$builder" ctr -n k8s.io images import --no-unpack "/kind/images/${archive##*/}" >/dev/null
done
"$ENGINE" exec "$builder" rm -rf /kind/images
"$ENGINE" cp "$BIN/crictl" "$builder:/usr/local/bin/crictl"
"$ENGINE" exec "$builder" ctr -n k8s.io images ls -q | sort >"$WORK/imported"
for want in kube-apiserver:$K8S_VERSION kube-controller-manager:$K8S_VERSION kube-scheduler:$K8S_VERSION \
  kube-proxy:$K8S_VERSION etcd:$ETCD_TAG coredns/coredns:$COREDNS_TAG pause:$PAUSE_TAG; do
  grep -qx "registry.k8s.io/$want" "$WORK/imported" || die "registry.k8s.io/$want is not in the node's containerd"
done
"$ENGINE" stop -t 10 "$builder" >/dev/null
"$ENGINE" commit -q \
  --change 'ENV container=docker' \
  --change 'STOPSIGNAL SIGRTMIN+3' \
  --change 'ENTRYPOINT ["/usr/local/bin/entrypoint", "/sbin/init"]' \
  --change 'CMD []' \
  --change "LABEL $INPUTS_LABEL=$node_inputs" \
  "$builder" "$KIND_NODE_IMAGE" >/dev/null
[ "$(image_inputs "$KIND_NODE_IMAGE")" = "$node_inputs" ] || die "$KIND_NODE_IMAGE lacks its inputs label after the commit"
"$ENGINE" rmi "$stage" >/dev/null 2>&1 || true
# The image this one replaces, unless a cluster's node still runs from it.
[ -n "$previous" ] && "$ENGINE" rmi "$previous" >/dev/null 2>&1 || true
log "built $KIND_NODE_IMAGE in $((SECONDS - start))s"
echo "$KIND_NODE_IMAGE"
