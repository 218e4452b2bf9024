#!/bin/sh
# make demo: a HyperDistill run and a one-step run of the same size on a local
# hdserver (SQLite file under ./demo-data/) with two hdworker daemons, followed
# on the terminal; prints the final meta-test losses side by side. Stops
# everything it started when it ends or on Ctrl-C. Running it again starts over.
set -u
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
DATA=${HD_DEMO_DATA:-demo-data}
mkdir -p "$DATA"
rm -f "$DATA"/demo.sqlite "$DATA"/demo.sqlite-wal "$DATA"/demo.sqlite-shm "$DATA"/port "$DATA"/*.log
ADMIN=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
PIDS=""

cleanup() {
    trap - EXIT INT TERM
    for p in $PIDS; do kill "$p" 2>/dev/null; done
    for p in $PIDS; do wait "$p" 2>/dev/null; done
}
trap cleanup EXIT
trap 'echo; echo "demo: interrupted, stopping"; cleanup; exit 130' INT TERM

"$BUILD/hdserver" --db "$DATA/demo.sqlite" --listen 127.0.0.1:0 --port-file "$DATA/port" \
    --admin-token "$ADMIN" --log-level warn 2>"$DATA/server.log" &
PIDS="$PIDS $!"
i=0
while [ ! -s "$DATA/port" ]; do
    i=$((i + 1))
    if [ $i -gt 200 ]; then echo "demo: the server did not start (see $DATA/server.log)"; exit 1; fi
    sleep 0.05
done
URL="http://127.0.0.1:$(cat "$DATA/port")"

# jget KEY JSON: the first number or string value of "KEY" in a JSON text.
jget() {
    printf '%s' "$2" | sed -n "s/.*\"$1\":\(\"[^\"]*\"\|[-0-9.eE+]*\|null\).*/\1/p" | head -1 | tr -d '"'
}
api() { curl -s -H "Authorization: Bearer $ADMIN" "$@"; }

# The paper's sinusoid protocol (ALGORITHM.md section 8), one seed.
spec() {
    cat <<JSON
{"task": {"family": "sinusoid", "shots": 10, "queries": 10},
 "model": {"layers": [1, 100, 100, 100, 1], "activation": "relu", "hyper_layers": 3},
 "inner": {"steps": 30, "lr": 0.01, "momentum": 0.9},
 "outer": {"optimizer": "adam", "lr": 0.001},
 "method": {"name": "$1", "gamma": 0.99, "estimation_period": 50},
 "episodes": 30, "meta_batch": 10, "reptile_lr": 1.0, "seed": 1,
 "eval": {"meta_val_tasks": 200, "meta_test_tasks": 1000, "interval": 5}}
JSON
}

create() {
    r=$(spec "$1" | api -X POST --data-binary @- "$URL/v1/runs")
    id=$(jget id "$r")
    if [ -z "$id" ]; then echo "demo: could not create the $1 run: $r"; exit 1; fi
    echo "$id"
}
HD=$(create hyperdistill)
OS=$(create onestep)

echo "hdserver on $URL (database $DATA/demo.sqlite, log $DATA/server.log)"
echo "dashboard: $URL/#token=$ADMIN"
echo "runs: $HD hyperdistill, $OS onestep (sinusoid, 1-100-100-100-1, T 30, B 10, 30 episodes)"
echo "watch with: curl -s -H 'Authorization: Bearer $ADMIN' '$URL/v1/runs/$HD?format=text'"
echo

# Two workers; with the admin token and no --run they work on whichever run
# has work and exit when none is left.
for w in 1 2; do
    "$BUILD/hdworker" --server "$URL" --token "$ADMIN" --name "demo-worker-$w" --slots 5 \
        --exit-when-done --no-progress 2>"$DATA/worker$w.log" &
    PIDS="$PIDS $!"
done

follow() {
    id=$1 name=$2 last=""
    while :; do
        r=$(api "$URL/v1/runs/$id")
        state=$(jget state "$r")
        ep=$(jget episode "$r")
        eps=$(jget episodes "$r")
        theta=$(jget theta "$r")
        phase=$(jget phase "$r")
        tl=$(printf '%s' "$r" | sed -n 's/.*"last_metrics":{[^}]*"train_loss":\([-0-9.eE+]*\).*/\1/p')
        vl=$(printf '%s' "$r" | sed -n 's/.*"last_metrics":{[^}]*"val_loss":\([-0-9.eE+]*\).*/\1/p')
        nw=$(printf '%s' "$r" | sed -n 's/.*"workers":\[\([^]]*\)\].*/\1/p' | grep -o '"worker_id"' | wc -l)
        if [ -n "$vl" ]; then vl=$(printf '%.4f' "$vl"); else vl=-; fi
        line=$(printf '%-12s episode %2s/%s  %-8s  train loss %-8.4f  val loss %-8s  theta %-7.4g  workers %s' \
            "$name" "$ep" "$eps" "$phase" "${tl:-0}" "$vl" "${theta:-0}" "$nw")
        if [ "$line" != "$last" ]; then echo "$line"; last=$line; fi
        case "$state" in completed|failed|cancelled) break ;; esac
        for p in $PIDS; do kill -0 "$p" 2>/dev/null || { echo "demo: a process stopped unexpectedly (logs in $DATA)"; exit 1; }; done
        sleep 0.5
    done
    echo "$name: $state"
}
t0=$(date +%s)
follow "$HD" hyperdistill
follow "$OS" onestep
t1=$(date +%s)

rh=$(api "$URL/v1/runs/$HD")
ro=$(api "$URL/v1/runs/$OS")
echo
echo "| method       | meta-val MSE | meta-test MSE | theta  |"
echo "|--------------|--------------|---------------|--------|"
printf '| %-12s | %12.4f | %13.4f | %6.3f |\n' hyperdistill "$(jget meta_val_loss "$rh")" "$(jget meta_test_loss "$rh")" "$(jget theta "$rh")"
printf '| %-12s | %12.4f | %13.4f | %6s |\n' onestep "$(jget meta_val_loss "$ro")" "$(jget meta_test_loss "$ro")" "-"
echo
echo "both runs done in $((t1 - t0)) s with 2 workers; state kept in $DATA/demo.sqlite"
[ "$(jget state "$rh")" = completed ] && [ "$(jget state "$ro")" = completed ]
