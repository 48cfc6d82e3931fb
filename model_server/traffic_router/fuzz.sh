#!/usr/bin/env bash
# The router's fuzz tier: runs each `go test -fuzz` target for a bounded number of executions
# (go runs one target per invocation), prints how many inputs each tried, and fails if any found
# a crasher.
#
# The budgets are counts (`-fuzztime Nx`), not durations: with a duration, Go 1.26's fuzz
# coordinator can fail a target with a bare "context deadline exceeded" and no crasher when the
# deadline races a busy worker (golang/go#75804, fixed in Go 1.27); a count has no deadline to
# race. Each count is about 18 s of fuzzing on this project's loaded 2-core CI machine.
#
#   model_server/traffic_router/fuzz.sh            # each target for its count below
#   FUZZTIME=5s model_server/traffic_router/fuzz.sh  # every target for FUZZTIME instead (a count or a duration)
#   FUZZ_KEEP=1 model_server/traffic_router/fuzz.sh  # also copy new interesting inputs into
#                                                     # testdata/fuzz/<Target>/ (to commit)
#
# Needs only Go (and the module proxy on a cold module cache). The seed corpus is the
# f.Add seeds plus testdata/fuzz/<Target>/ in each package; a crasher is written there by go
# test itself, so the failing input can be committed with its fix as a regression case.
set -euo pipefail
cd "$(dirname "$0")"

TARGETS=(
	"./internal/proxy FuzzForward 150000x"              # raw requests: parsing, paths, headers, body, budgets
	"./internal/shadow FuzzEvaluateAgreement 200000x"   # a backend's answers, as the shadow comparison decodes them
	"./internal/split FuzzStickyBucket 1000000x"        # sticky header values: range, determinism, monotone
	"./internal/split FuzzParseRollout 1000000x"        # status.traffic / stickyHeader as read from the API
	"./internal/feedback FuzzFeedbackBody 100000x"      # POST /feedback bodies: codes, counts, strict parsing
)

failed=0
summary=()
for entry in "${TARGETS[@]}"; do
	read -r pkg target budget <<<"$entry"
	budget="${FUZZTIME:-$budget}"
	log="$(mktemp)"
	echo "== $target ($pkg), $budget"
	if go test -run '^$' -fuzz "^${target}\$" -fuzztime "$budget" "$pkg" >"$log" 2>&1; then
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

echo "== fuzz summary"
printf '%s\n' "${summary[@]}"
exit "$failed"
