#!/usr/bin/env bash
# Install what tuxio needs on a Debian 12 host: the apt packages and the Python environment.
# Idempotent and quick when everything is there. Fails loudly when something cannot be had.
set -euo pipefail
cd "$(dirname "$0")/.."

# prometheus: the e2e tests start Debian's Prometheus with a configuration of their own (its
# packaged service is not needed).
APT_PACKAGES=(lxc busybox-static debootstrap uidmap iproute2 openssl python3-venv python3-dev ca-certificates e2fsprogs prometheus postgresql chromium)
PYTHON=${PYTHON:-/usr/bin/python3}
VENV=${VENV:-.venv}

if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps: run as root (LXC containers and the agent need it)" >&2
  exit 1
fi

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
# tuxio-web's page is bundled with npm and esbuild (hack/build-web.sh): any Node.js 18 or newer
# does, Debian's own when none is there.
command -v npm >/dev/null || missing+=(nodejs npm)
if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps: apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
for tool in lxc-start lxc-attach lxc-ls busybox debootstrap newuidmap openssl mkfs.ext4 prometheus chromium npm; do
  command -v "$tool" >/dev/null || { echo "install-deps: $tool is still missing" >&2; exit 1; }
done
# The control plane is built from source: it needs a recent Go toolchain (1.26), which Debian 12's
# own golang package is too old to be.
command -v go >/dev/null || { echo "install-deps: Go 1.26 or newer is needed to build the control plane (hack/build-control-plane.sh)" >&2; exit 1; }

stamp="$VENV/.installed"
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  "$VENV/bin/pip" install -q --upgrade pip
  "$VENV/bin/pip" install -q -e '.[dev]'
  touch "$stamp"
fi
# The terminal page's bundle (xterm.js), from the locked npm packages.
hack/build-web.sh
