#!/usr/bin/env bash
# Fetches uPlot from the npm registry (`npm pack`, no CDN) and copies the three files the HTML
# report inlines into this folder, after checking the tarball against the registry's integrity
# hash and the files against the sha256 sums pinned in VENDOR.md. Run it from anywhere:
#   bash ddscope/exporters/report/vendor/fetch_uplot.sh
# The report needs no network when it is built or viewed: these files are committed.
set -euo pipefail
VERSION=1.6.32
INTEGRITY="sha512-KIMVnG68zvu5XXUbC4LQEPnhwOxBuLyW1AHtpm6IKTXImkbLgkMy+jabjLgSLMasNuGGzQm/ep3tOkyTxpiQIw=="
here="$(cd "$(dirname "$0")" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$work"
npm pack --silent "uplot@${VERSION}" >/dev/null
tarball="uplot-${VERSION}.tgz"
actual="sha512-$(openssl dgst -sha512 -binary "$tarball" | base64 -w0)"
if [ "$actual" != "$INTEGRITY" ]; then
  echo "integrity mismatch for $tarball: $actual" >&2
  exit 1
fi
tar xzf "$tarball"
cp package/dist/uPlot.iife.min.js package/dist/uPlot.min.css "$here/"
cp package/LICENSE "$here/uPlot.LICENSE"
cd "$here"
sha256sum --check --strict <<SUMS
$(grep -E '^[0-9a-f]{64}  ' VENDOR.md)
SUMS
echo "uPlot ${VERSION} vendored in $here"
