#!/usr/bin/env bash
# Print the path of a real GeoLite2 City database, fetching it once into a cache outside the
# repository. The source is the maxminddb-geolite2 sdist on PyPI (GeoLite2 data by MaxMind,
# CC BY-SA 4.0, built July 2018), pinned by version and checksum. Tests and the demo use it;
# production operators mount a current GeoIP2 or GeoLite2 City database instead.
set -euo pipefail

VERSION=2018.703
SHA256=2bd118c5567f3a8323d6c5da23a6e6d52cfc09cd9987b54eb712cf6001a96e03
CACHE=${TUXIO_CACHE_DIR:-$HOME/.cache/tuxio}/geolite2/$VERSION
DB=$CACHE/GeoLite2-City.mmdb
PIP=${PIP:-$(dirname "$0")/../.venv/bin/pip}

if [ ! -s "$DB" ]; then
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  "$PIP" download --quiet --no-deps --no-binary :all: "maxminddb-geolite2==$VERSION" -d "$work" >&2
  archive=$work/maxminddb-geolite2-$VERSION.tar.gz
  echo "$SHA256  $archive" | sha256sum --check --quiet - >&2 ||
    { echo "fetch-geolite2.sh: checksum mismatch for $archive" >&2; exit 1; }
  tar -xzf "$archive" -C "$work" "maxminddb-geolite2-$VERSION/_maxminddb_geolite2/GeoLite2-City.mmdb"
  mkdir -p "$CACHE"
  mv "$work/maxminddb-geolite2-$VERSION/_maxminddb_geolite2/GeoLite2-City.mmdb" "$DB.tmp"
  mv "$DB.tmp" "$DB"
fi
echo "$DB"
