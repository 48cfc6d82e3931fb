#!/usr/bin/env bash
# The router's fuzz tier: runs each `go test -fuzz` target for a bounded time (go runs one
# target per invocation), prints how many inputs each tried, and fails if any found a crasher.
#
#   model_server/traffic_router/fuzz.sh            # each target for $FUZZTIME (default 18s: about 85 s in all on 2 cores)
#   FUZZTIME=5s model_server/traffic_router/fuzz.sh
#   FUZZ_KEEP=1 model_server/traffic_router/fuzz.sh  # also copy new interesting inputs into
#                                                     # testdata/fuzz/<Target>/ (to commit)
#
# Needs only Go (and the module proxy on a cold module cache). The seed corpus is the
# f.Add seeds plus testdata/fuzz/<Target>/ in each package; a crasher is written there by go
# test itself, so the failing input can be committed with its fix as a regression case.
set -euo pipefail
cd "$(dirname "$0")"

FUZZTIME="${FUZZTIME:-18s}"
TARGETS=(
	"./internal/proxy FuzzForward"              # raw requests: parsing, paths, headers, body, budgets
	"./internal/shadow FuzzEvaluateAgreement"   # a backend's answers, as the shadow comparison decodes them
	"./internal/split FuzzStickyBucket"         # sticky header values: range, determinism, monotone
	"./internal/split FuzzParseRollout"         # status.traffic / stickyHeader as read from the API
)

failed=0
summary=()
for entry in "${TARGETS[@]}"; do
	read -r pkg target <<<"$entry"
	log="$(mktemp)"
	echo "== $target ($pkg), $FUZZTIME"
	if go test -run '^$' -fuzz "^${target}\$" -fuzztime "$FUZZTIME" "$pkg" >"$log" 2>&1; then
		outcome="no crasher"
	else
		outcome="FAILED (crasher or build error, see above)"
		failed=1
	fi
	# The last progress line holds the totals: "fuzz: elapsed: 20s, execs: 165620 (5393/sec), new interesting: 52 (total: 62)"
	last="$(grep -E '^fuzz: elapsed: .*execs: ' "$log" | tail -n 1 || true)"
	execs="$(sed -E 's/.*execs: ([0-9]+).*/\1/' <<<"$last")"
	interesting="$(sed -nE 's/.*new interesting: ([0-9]+).*/\1/p' <<<"$last")"
	if [[ "$outcome" != "no crasher" ]]; then
		cat "$log"
	fi
	summary+=("$target: ${execs:-0} execs, ${interesting:-0} new interesting inputs, $outcome")
	if [[ "${FUZZ_KEEP:-}" == "1" ]]; then
		cache="$(go env GOCACHE)/fuzz/$(go list "$pkg")/$target"
		if [[ -d "$cache" ]]; then
			mkdir -p "$pkg/testdata/fuzz/$target"
			cp -n "$cache"/* "$pkg/testdata/fuzz/$target/" 2>/dev/null || true
		fi
	fi
	rm -f "$log"
done

echo "== fuzz summary (each target $FUZZTIME)"
printf '%s\n' "${summary[@]}"
exit "$failed"
