#!/usr/bin/env bash
# The router's Go lint: `go vet` and staticcheck over the whole module; fails on any finding.
# staticcheck is built once from the Go module proxy into the project's binary cache, keyed by
# its version and the Go toolchain (a staticcheck built by an older Go cannot read newer code).
#
#   model_server/traffic_router/lint.sh      # called by `make lint`
set -euo pipefail
cd "$(dirname "$0")"

STATICCHECK_VERSION="${STATICCHECK_VERSION:-v0.8.2}"
go_version="$(go env GOVERSION)"
out_dir="${MODELROLLOUT_CACHE:-$HOME/.cache/modelrollout}/bin/staticcheck-$STATICCHECK_VERSION-$go_version"
staticcheck="$out_dir/staticcheck"
if [[ ! -x "$staticcheck" ]]; then
	echo "building staticcheck $STATICCHECK_VERSION into $out_dir" >&2
	mkdir -p "$out_dir"
	# GOFLAGS from the caller (e.g. -mod=vendor) must not leak into a tool install.
	GOFLAGS=-buildvcs=false GOBIN="$out_dir" CGO_ENABLED=0 \
		go install -trimpath "honnef.co/go/tools/cmd/staticcheck@$STATICCHECK_VERSION"
fi

echo "== go vet ./..."
go vet ./...
echo "== staticcheck $STATICCHECK_VERSION ./..."
"$staticcheck" ./...
echo "== go lint: no findings"
