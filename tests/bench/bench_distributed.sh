#!/bin/sh
# make bench-distributed: the same run in one process (hdworker --local) and
# through hdserver with 1 and 2 workers on this machine, for the paper's
# sinusoid protocol (one seed) and for a heavier configuration where
# computation dominates (784-256-256-10, batch 128). Prints wall time,
# hypergradient posts per second, bytes per step and each worker's time
# waiting at the sync barrier versus computing. Prints figures; not a test.
set -u
BUILD=${BUILD:-build}
W="$BUILD/hdworker"
S="$BUILD/hdserver"
ADMIN=bench-admin-token-0123456789
TMP=$(mktemp -d /tmp/hdbench-dist-XXXXXX)
trap 'kill $(cat "$TMP"/*.pid 2>/dev/null) 2>/dev/null; rm -rf "$TMP"' EXIT INT TERM

now() { date +%s.%N; }

spec_light='{"task": {"family": "sinusoid", "shots": 10, "queries": 10},
 "model": {"layers": [1, 100, 100, 100, 1], "activation": "relu", "hyper_layers": 3},
 "inner": {"steps": 30, "lr": 0.01, "momentum": 0.9},
 "outer": {"optimizer": "adam", "lr": 0.001},
 "method": {"name": "hyperdistill", "gamma": 0.99, "estimation_period": 50},
 "episodes": 30, "meta_batch": 10, "reptile_lr": 1.0, "seed": 1,
 "eval": {"meta_val_tasks": 200, "meta_test_tasks": 1000}}'
spec_heavy='{"task": {"family": "gaussmix", "shots": 128, "queries": 128, "classes": 10},
 "model": {"layers": [784, 256, 256, 10], "activation": "relu", "hyper_layers": 2},
 "inner": {"steps": 10, "lr": 0.1, "momentum": 0.9},
 "outer": {"optimizer": "adam", "lr": 0.001},
 "method": {"name": "hyperdistill", "gamma": 0.9, "estimation_period": 50},
 "episodes": 3, "meta_batch": 4, "reptile_lr": 1.0, "seed": 1,
 "eval": {"meta_val_tasks": 20, "meta_test_tasks": 40}}'

field() { # field NAME FILE: numeric value of NAME=... in the worker's exit line
    grep 'exit status=' "$2" | tail -1 | tr ' ' '\n' | sed -n "s/^$1=//p"
}

# run_dist NAME SPEC NWORKERS SLOTS STEPS: prints one table row
run_dist() {
    name=$1 spec=$2 nw=$3 slots=$4 steps=$5
    d="$TMP/$name-$nw"
    mkdir -p "$d"
    "$S" --db "$d/db.sqlite" --listen 127.0.0.1:0 --port-file "$d/port" --admin-token $ADMIN \
        --log-level warn 2>"$d/server.log" &
    echo $! > "$d/server.pid"
    i=0; while [ ! -s "$d/port" ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done
    url="http://127.0.0.1:$(cat "$d/port")"
    t0=$(now)
    resp=$(printf '%s' "$spec" | curl -s -X POST -H "Authorization: Bearer $ADMIN" --data-binary @- "$url/v1/runs")
    id=$(printf '%s' "$resp" | sed -n 's/.*"id":\([0-9]*\).*/\1/p')
    tok=$(printf '%s' "$resp" | sed -n 's/.*"worker_token":"\([0-9a-f]*\)".*/\1/p')
    pids=""
    k=0; while [ $k -lt "$nw" ]; do
        "$W" --server "$url" --token "$tok" --run "$id" --name "w$k" --slots "$slots" --no-progress 2>"$d/w$k.log" &
        pids="$pids $!"; k=$((k+1))
    done
    for p in $pids; do wait "$p"; done
    t1=$(now)
    kill "$(cat "$d/server.pid")" 2>/dev/null; wait "$(cat "$d/server.pid")" 2>/dev/null; rm -f "$d/server.pid"
    posts=0 sent=0 recv=0 waits="" comps="" psts=""
    k=0; while [ $k -lt "$nw" ]; do
        f="$d/w$k.log"
        posts=$((posts + $(field posts "$f")))
        sent=$((sent + $(field bytes_sent "$f")))
        recv=$((recv + $(field bytes_recv "$f")))
        waits="$waits $(field wait_s "$f")"
        comps="$comps $(field compute_s "$f")"
        psts="$psts $(field post_s "$f")"
        k=$((k+1))
    done
    awk -v n="$name" -v w="$nw" -v t0="$t0" -v t1="$t1" -v p="$posts" -v s="$sent" -v r="$recv" \
        -v st="$steps" -v ws="$waits" -v cs="$comps" -v ps="$psts" -v loc="$LOCAL_WALL" 'BEGIN {
        wall = t1 - t0; split(ws, a, " "); split(cs, b, " "); split(ps, c, " "); wc = "";
        for (i = 1; i <= w; i++) wc = wc sprintf("%s%.1f/%.1f/%.1f", i > 1 ? " " : "", a[i], b[i], c[i]);
        printf "| %-8s | %-13s | %8.2f | %7.2fx | %8.1f | %11.0f | %11.0f | %-25s |\n",
               n, w " worker" (w > 1 ? "s" : ""), wall, wall / loc, p / wall, s / st, r / st, wc }'
}

run_local() {
    name=$1 spec=$2
    d="$TMP/$name-local"; mkdir -p "$d"
    printf '%s' "$spec" > "$d/spec.json"
    t0=$(now)
    "$W" --local "$d/spec.json" --out "$d/out" --quiet 2>"$d/local.log"
    t1=$(now)
    LOCAL_WALL=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
    printf '| %-8s | %-13s | %8.2f | %7.2fx | %8s | %11s | %11s | %-25s |\n' "$name" "local" "$LOCAL_WALL" 1 - - - -
}

echo "bench-distributed: wall time of a whole run (training, estimation and evaluations),"
echo "hypergradient posts/s, bytes sent and received per outer step (all workers),"
echo "and per worker seconds waiting for lam (sync barrier) / computing / posting."
echo
echo "| config   | mode          | wall s   | vs local | posts/s  | sent B/step | recv B/step | wait/compute/post s       |"
echo "|----------|---------------|----------|----------|----------|-------------|-------------|---------------------------|"
run_local light "$spec_light"
run_dist light "$spec_light" 1 10 900
run_dist light "$spec_light" 2 5 900
run_local heavy "$spec_heavy"
run_dist heavy "$spec_heavy" 1 4 30
run_dist heavy "$spec_heavy" 2 2 30
