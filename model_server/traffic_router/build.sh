#!/usr/bin/env bash
# Builds the traffic router once into the cache and prints the binary's path. Rebuilds only when
# the Go sources, go.mod/go.sum or the Go toolchain change (keyed by a hash of all of them).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out_dir="${MODELROLLOUT_CACHE:-$HOME/.cache/modelrollout}/bin/router"
bin="$out_dir/router"
stamp="$out_dir/router.sha256"
key="$(cd "$here" && { go version; find . -name '*.go' -o -name go.mod -o -name go.sum | LC_ALL=C sort | xargs sha256sum; } | sha256sum | cut -d' ' -f1)"
if [[ -x "$bin" && -f "$stamp" && "$(cat "$stamp")" == "$key" ]]; then
  echo "$bin"
  exit 0
fi
mkdir -p "$out_dir"
echo "building the traffic router into $bin" >&2
(cd "$here" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$bin.tmp" .)
mv "$bin.tmp" "$bin"
echo "$key" > "$stamp"
echo "$bin"
