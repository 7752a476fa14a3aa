#!/usr/bin/env bash
# Bundle tuxio-web's page: xterm.js and its fit addon from the npm registry, at the versions
# web/frontend/package-lock.json locks, into web/static/dist/ with esbuild. The bundle is
# built, not committed; run again, it rebuilds only when the sources are newer than it.
set -euo pipefail
cd "$(dirname "$0")/../web/frontend"

out=../static/dist/terminal.js
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund --loglevel=error
fi
if [ ! -f "$out" ] || [ -n "$(find src package-lock.json -newer "$out" -print -quit)" ]; then
  npm run --silent build -- --log-level=warning
fi
