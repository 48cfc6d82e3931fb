#!/usr/bin/env bash
# Runs each built image once as a real container (podman), the way a pod runs it: read-only root
# filesystem, uid 65532, every capability dropped, no privilege escalation, a memory limit, ports
# published on 127.0.0.1 only, and a tmpfs on /tmp where the image's pod gets an emptyDir.
#   operator      starts and stops with its settings error (no cluster here), exit code 2;
#   model server  answers /v2/health/ready and a v1 predict (1 s of silence);
#   router        in the same pod, with a static config pointing at the model server: /healthz,
#                 /readyz and the same predict through the router.
# Every wait is bounded (SMOKE_TIMEOUT seconds, default 120). Builds first unless SMOKE_SKIP_BUILD=1.
# Usage: images/smoke.sh      (root; ports SMOKE_PORT and SMOKE_PORT+1, default 18480/18481)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export CONTAINERS_CONF="$here/containers.conf"
timeout_s="${SMOKE_TIMEOUT:-120}"
router_port="${SMOKE_PORT:-18480}"
server_port=$((router_port + 1))
pod="modelrollout-smoke-$$"  # container name prefix
work="$(mktemp -d "${TMPDIR:-/tmp}/modelrollout-smoke.XXXXXX")"
failures=0

step() { echo "smoke: $*"; }
fail() { echo "smoke: FAIL: $*" >&2; failures=$((failures + 1)); }
cleanup() {
  # One name per call: podman 4.3's `rm -f a b` with `a` already gone silently removed neither.
  # The router first: it lives in the server's network namespace.
  for c in "$pod-router" "$pod-server"; do podman rm -f -t 2 "$c" >/dev/null 2>&1 || true; done
  rm -rf "$work"
}
trap cleanup EXIT

if [[ "${SMOKE_SKIP_BUILD:-0}" != 1 ]]; then
  "$here/build.sh" || { echo "smoke: step 'build' failed (see above)" >&2; exit 1; }
fi
command -v podman >/dev/null || { echo "smoke: step 'preflight' failed: podman is not installed (apt-get install podman)" >&2; exit 1; }
for port in "$router_port" "$server_port"; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "smoke: step 'preflight' failed: 127.0.0.1:$port is taken; set SMOKE_PORT to a free pair" >&2
    exit 1
  fi
done

hardening=(--read-only --user 65532:65532 --cap-drop=ALL --security-opt=no-new-privileges)
# Poll a URL until it answers 200 or the bound passes; prints the last body.
wait_for() {
  local url="$1" deadline=$((SECONDS + timeout_s))
  while ((SECONDS < deadline)); do
    if curl -fsS --max-time 5 "$url" -o "$work/body" 2>/dev/null; then cat "$work/body"; echo; return 0; fi
    sleep 1
  done
  return 1
}

for name in operator model-server router; do
  user="$(podman image inspect --format '{{.Config.User}}' "localhost/modelrollout/$name:dev")"
  [[ "$user" == 65532:65532 ]] && step "$name image: USER $user" || fail "$name image: USER is '$user', expected 65532:65532"
done

# Runs the operator image with the given args for at most $1 seconds; sets out and rc.
run_operator() {
  local bound="$1"; shift
  set +e
  out="$(timeout "$bound" podman run --rm "${hardening[@]}" --memory 256m --tmpfs /tmp:size=64m \
    localhost/modelrollout/operator:dev "$@" 2>&1 | grep -v 'level=')"
  rc=${PIPESTATUS[0]}
  set -e
}
run_operator "$timeout_s" --help
if [[ $rc == 0 ]] && grep -q -- "--model-server-image" <<<"$out"; then step "operator: --help exits 0 and lists the flags"
else fail "operator: --help exited $rc"; fi
run_operator "$timeout_s" --tick-interval=-1
if [[ $rc == 2 ]] && grep -q -- "--tick-interval" <<<"$out"; then step "operator: a bad flag exits 2: $(tail -n 1 <<<"$out" | sed 's/^ *//')"
else fail "operator: --tick-interval=-1 exited $rc (expected 2 naming the flag)"; fi
# No cluster: kopf retries its failed startup activity (every 60 s) instead of exiting, so this
# run is stopped after 20 s; what matters is that it started and said why it can't log in.
run_operator 20
if grep -q "Service host/port is not set" <<<"$out"; then
  step "operator: no cluster: still running after 20 s (rc $rc), logged: $(grep -m1 -o "Activity .*" <<<"$out" | cut -c1-160)"
else fail "operator: no cluster: rc $rc and no credentials error in its output"; echo "$out" | tail -n 5 | sed 's/^/  | /'; fi

# The router joins the server container's network namespace, like two containers of one pod
# (a podman pod would need a pause image, which needs a registry or catatonit).
step "model server + router in one network namespace: 127.0.0.1:$router_port (router), 127.0.0.1:$server_port (server)"
podman run -d --name "$pod-server" "${hardening[@]}" --memory 768m --tmpfs /tmp:size=64m \
  -p "127.0.0.1:$router_port:8080" -p "127.0.0.1:$server_port:8081" \
  localhost/modelrollout/model-server:dev --port=8081 --model-version=v2 >/dev/null
cat > "$work/static.json" <<'EOF'
{"traffic": {"stable": {"version": "v2", "weight": 100}}, "endpoints": {"v2": ["127.0.0.1:8081"]}}
EOF
chmod 0644 "$work/static.json"
podman run -d --network "container:$pod-server" --name "$pod-router" "${hardening[@]}" --memory 64m \
  -v "$work/static.json:/etc/router/static.json:ro" \
  localhost/modelrollout/router:dev --rollout=smoke --namespace=default --host=0.0.0.0 --port=8080 \
  --static-config=/etc/router/static.json >/dev/null

t0=$SECONDS
if body="$(wait_for "http://127.0.0.1:$server_port/v2/health/ready")"; then
  step "model server: /v2/health/ready 200 after $((SECONDS - t0)) s: $body"
else fail "model server: /v2/health/ready not 200 within $timeout_s s"; podman logs --tail 20 "$pod-server" 2>&1 | sed 's/^/  | /'; fi
for path in healthz readyz; do
  if body="$(wait_for "http://127.0.0.1:$router_port/$path")"; then step "router: /$path 200: $body"
  else fail "router: /$path not 200 within $timeout_s s"; podman logs --tail 20 "$pod-router" 2>&1 | sed 's/^/  | /'; fi
done

# One second of silence as raw PCM16LE: exercises the VAD and the recognizer without test data.
printf '{"instances": [{"audio_b64": "%s"}]}' "$(head -c 32000 /dev/zero | base64 -w0)" > "$work/predict.json"
for target in "model server:$server_port" "router:$router_port"; do
  if curl -fsS --max-time 30 -D "$work/headers" -H 'content-type: application/json' --data @"$work/predict.json" \
      "http://127.0.0.1:${target##*:}/v1/models/speech-commands:predict" -o "$work/answer"; then
    step "${target%%:*}: predict 200 ($(grep -i '^x-model-version' "$work/headers" | tr -d '\r')): $(head -c 200 "$work/answer")"
  else fail "${target%%:*}: predict failed"; fi
done

for c in server router; do
  step "$c: $(podman top "$pod-$c" user huser 2>/dev/null | tail -n 1 | tr -s ' ') (container user, host user)"
  if podman exec "$pod-server" true 2>/dev/null && [[ $c == server ]]; then
    if podman exec "$pod-server" sh -c 'touch /opt/venv/x' 2>/dev/null; then fail "server: root filesystem is writable"
    else step "server: writing /opt/venv fails (read-only root)"; fi
    step "server: /tmp holds $(podman exec "$pod-server" sh -c 'ls -A /tmp | wc -l') entries after a predict"
    caps="$(podman exec "$pod-server" sh -c 'grep -E "^Cap(Eff|Prm|Bnd)" /proc/1/status' | tr -s '\t\n' '  ')"
    if [[ "$caps" =~ ^(Cap(Prm|Eff|Bnd):\ 0+\ ?)+$ ]]; then step "server: no capabilities: $caps"
    else fail "server: capabilities left: $caps"; fi
  fi
done
podman stats --no-stream --format '{{.Name}} {{.MemUsage}}' "$pod-server" "$pod-router" 2>/dev/null | sed 's/^/smoke: memory /' || true

if ((failures)); then echo "smoke: $failures check(s) failed" >&2; exit 1; fi
step "all checks passed"
