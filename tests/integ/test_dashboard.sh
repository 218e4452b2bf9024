#!/bin/sh
# The dashboard (GET /) in headless Chromium against a real hdserver with a
# finished run and a running one (both driven by build/hdworker):
#  1. the finished run with --virtual-time-budget --dump-dom: every chart
#     holds data points (data-points="N" attributes written by the page);
#  2. the running run through the DevTools protocol (tests/integ/cdp_page.py):
#     charts filled, the live EventSource stream connected and per-step
#     hypergradient points arriving; a screenshot is saved under $BUILD.
# --dump-dom cannot do (2): virtual time stops while a fetch is pending,
# and the open event stream is one.
#
# Chromium (Debian package `chromium`, ~290 MB installed) is not in the
# Makefile's DEB_PKGS. It is installed here with apt-get only when running
# as root and CI or HD_INSTALL_BROWSER is set; otherwise, when it is missing,
# the test prints SKIP and passes.
set -u
BUILD=${BUILD:-build}
ADMIN=test-admin-token-0123456789
HERE=$(cd "$(dirname "$0")" && pwd)

CHROMIUM=$(command -v chromium || command -v chromium-browser || true)
if [ -z "$CHROMIUM" ] && [ "$(id -u)" = 0 ] && { [ -n "${CI:-}" ] || [ -n "${HD_INSTALL_BROWSER:-}" ]; }; then
    echo "installing chromium (apt-get)"
    apt-get update -qq >/dev/null 2>&1
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null 2>&1
    CHROMIUM=$(command -v chromium || true)
fi
if [ -z "$CHROMIUM" ]; then
    echo "SKIP test_dashboard: chromium is not installed (set HD_INSTALL_BROWSER=1 as root to install it)"
    exit 0
fi
if ! command -v python3 >/dev/null 2>&1; then
    echo "SKIP test_dashboard: python3 is not installed"
    exit 0
fi

DIR=$(mktemp -d /tmp/hdtest-dashboard-XXXXXX)
SRV_PID=""
W_PID=""
cleanup() {
    [ -n "$W_PID" ] && kill "$W_PID" 2>/dev/null && wait "$W_PID" 2>/dev/null
    [ -n "$SRV_PID" ] && kill "$SRV_PID" 2>/dev/null && wait "$SRV_PID" 2>/dev/null
    [ -z "${HD_TEST_KEEP:-}" ] && rm -rf "$DIR"
}
trap cleanup EXIT
fail() {
    echo "FAIL: $*"
    echo "--- server log"; tail -20 "$DIR/server.log" 2>/dev/null
    exit 1
}

"$BUILD/hdserver" --db "$DIR/db.sqlite" --listen 127.0.0.1:0 --port-file "$DIR/port" \
    --admin-token "$ADMIN" --log-level warn >"$DIR/server.log" 2>&1 &
SRV_PID=$!
i=0
while [ ! -s "$DIR/port" ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i + 1)); done
[ -s "$DIR/port" ] || fail "server did not start"
BASE="http://127.0.0.1:$(cat "$DIR/port")"

create() { # spec -> prints "id token"
    curl -sf -H "Authorization: Bearer $ADMIN" -H 'Content-Type: application/json' -d "$1" "$BASE/v1/runs" |
        python3 -c 'import json,sys; j=json.load(sys.stdin); print(j["id"], j["worker_token"])'
}

# Run 1: finished (estimation rounds, meta-validation every 2 episodes, meta-test).
SPEC1='{"task":{"family":"sinusoid","shots":10,"queries":10},"model":{"layers":[1,24,24,1],"hyper_layers":2},"inner":{"steps":6,"lr":0.01,"momentum":0.9},"method":{"name":"hyperdistill","gamma":0.9,"estimation_period":3},"episodes":12,"meta_batch":3,"seed":7,"eval":{"meta_val_tasks":7,"meta_test_tasks":30,"interval":2}}'
set -- $(create "$SPEC1")
[ "${1:-}" = 1 ] || fail "cannot create run 1"
"$BUILD/hdworker" --server "$BASE" --token "$2" --run 1 --slots 8 --no-progress --log-level warn \
    >"$DIR/worker1.log" 2>&1 || fail "hdworker did not finish run 1"

# Run 2: long, kept running by a worker in the background.
SPEC2='{"task":{"family":"sinusoid","shots":10,"queries":10},"model":{"layers":[1,40,40,1],"hyper_layers":2},"inner":{"steps":20,"lr":0.01,"momentum":0.9},"method":{"name":"hyperdistill","gamma":0.9,"estimation_period":4},"episodes":100000,"meta_batch":4,"seed":9,"eval":{"meta_val_tasks":20,"interval":3}}'
set -- $(create "$SPEC2")
[ "${1:-}" = 2 ] || fail "cannot create run 2"
"$BUILD/hdworker" --server "$BASE" --token "$2" --run 2 --slots 2 --no-progress --log-level warn \
    >"$DIR/worker2.log" 2>&1 &
W_PID=$!
sleep 2

CHROME_FLAGS="--headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking --disable-component-update --disable-sync"

# 1. Finished run: DOM after the page settled.
timeout 60 "$CHROMIUM" $CHROME_FLAGS --user-data-dir="$DIR/prof1" --virtual-time-budget=5000 \
    --dump-dom "$BASE/#token=$ADMIN&run=1" >"$DIR/dom1.html" 2>"$DIR/chromium1.log" ||
    fail "chromium --dump-dom failed"
for c in c-loss c-hg c-est c-theta; do
    n=$(grep -o "id=\"$c\" data-points=\"[0-9]*\"" "$DIR/dom1.html" | grep -o '[0-9]*"$' | tr -d '"')
    echo "finished run: chart $c data-points=${n:-none}"
    [ -n "$n" ] && [ "$n" -gt 0 ] || fail "chart $c of the finished run has no data points"
done
grep -q 'class="badge completed">completed' "$DIR/dom1.html" || fail "finished run: no 'completed' badge"
grep -q '<td class="mono">' "$DIR/dom1.html" || fail "finished run: no worker row"

# 2. Running run, live: charts filled, stream connected, per-step points arriving.
SHOT="$BUILD/dashboard.png"
mkdir -p "$BUILD"
WAIT_JS="document.getElementById('live').textContent === 'live' && document.querySelector('#c-hg g[data-series=\"per step (live)\"]') !== null && +document.getElementById('c-loss').getAttribute('data-points') > 0 && +document.getElementById('c-est').getAttribute('data-points') > 0 && +document.getElementById('c-theta').getAttribute('data-points') > 0"
VALUE_JS="Object.assign(Object.fromEntries([...document.querySelectorAll('svg[data-points]')].map(e => [e.id, +e.getAttribute('data-points')])), {live: document.getElementById('live').textContent, runs: document.querySelectorAll('#runs li[data-run]').length, leases: document.querySelectorAll('#leases tr td.mono').length})"
out=$(python3 "$HERE/cdp_page.py" "$CHROMIUM" "$BASE/#token=$ADMIN&run=2" "$WAIT_JS" "$VALUE_JS" "$SHOT" 30)
rc=$?
echo "running run: $out"
[ $rc = 0 ] || fail "the live dashboard did not fill its charts (cdp_page.py exit $rc)"
echo "$out" | grep -q '"runs":2' || fail "run list does not show both runs"
[ -s "$SHOT" ] || fail "no screenshot"
echo "screenshot: $SHOT"

# The page loads nothing from other hosts.
curl -sf "$BASE/" | grep -Eo '(src|href)="https?://[^"]*"' && fail "the page references an external URL"
echo "test_dashboard: ok"
exit 0
