#!/bin/sh
# The `hdworker --local` and `hdworker probe` command lines (worker/main.c,
# worker/runner.c, worker/probe.c). Run by tests/run.sh with $BUILD set
# (build or build/san); the binary is $BUILD/hdworker.
#  - a small valid spec writes metrics.jsonl (one line per episode),
#    samples.jsonl (one line per estimation episode), lambda.npy, phi.npy and
#    summary.json; a warm start from its own lambda.npy/phi.npy works;
#  - a table of bad specs each exits non-zero, names the offending field (or
#    the file) in its message and writes nothing (the out dir never appears);
#  - a --lambda or --phi of the wrong size is refused the same way;
#  - `hdworker probe` on a task .npz written with python3's standard library
#    (zipfile + a hand-built .npy header: numpy is not needed); skipped with a
#    SKIP line when python3 is missing. tests/num/test_methods covers
#    probe_run itself.
set -u

BUILD=${BUILD:-build}
BIN=$BUILD/hdworker
case $BIN in /*) ;; *) BIN=$(pwd)/$BIN ;; esac
if [ ! -x "$BIN" ]; then
    echo "FAIL: $BIN is not built"
    exit 1
fi

T=$(mktemp -d "${TMPDIR:-/tmp}/hd_local_cli.XXXXXX") || exit 1
trap 'rm -rf "$T"' EXIT
trap 'exit 130' INT TERM

fails=0
fail() {
    echo "FAIL: $*"
    fails=$((fails + 1))
}
ok() { echo "ok: $*"; }

have_py=0
command -v python3 >/dev/null 2>&1 && have_py=1

# A 1-20-20-1 ReLU network with k = 2: n_lam = (20+20) + (400+20) = 460,
# n_w = 21. Estimation episodes (period 2): 1 and 3.
cat >"$T/spec.json" <<'EOF'
{"task": {"family": "sinusoid", "shots": 10, "queries": 10},
 "model": {"layers": [1, 20, 20, 1], "activation": "relu", "hyper_layers": 2},
 "inner": {"steps": 5, "lr": 0.01, "momentum": 0.9},
 "outer": {"optimizer": "adam", "lr": 0.001},
 "method": {"name": "hyperdistill", "gamma": 0.9, "estimation_period": 2},
 "episodes": 3, "meta_batch": 2, "seed": 5,
 "eval": {"meta_val_tasks": 3, "meta_test_tasks": 3}}
EOF
EPISODES=3
EST_EPISODES=2
N_LAM=460
N_W=21

# ---------------------------------------------------------------- good run
OUT=$T/out1
if "$BIN" --local "$T/spec.json" --out "$OUT" --quiet >"$T/good.log" 2>&1; then
    ok "--local exits 0"
else
    fail "--local on a valid spec exited $?"
    sed 's/^/    /' "$T/good.log"
fi
for f in metrics.jsonl samples.jsonl lambda.npy phi.npy summary.json; do
    if [ -s "$OUT/$f" ]; then ok "$f written"; else fail "$f missing or empty"; fi
done
if [ -f "$OUT/metrics.jsonl" ]; then
    n=$(wc -l <"$OUT/metrics.jsonl" | tr -d ' ')
    [ "$n" = "$EPISODES" ] && ok "metrics.jsonl has $n lines" ||
        fail "metrics.jsonl has $n lines, want $EPISODES (one per episode)"
    i=1
    while [ $i -le $EPISODES ]; do
        sed -n "${i}p" "$OUT/metrics.jsonl" | grep -q "\"episode\": *$i[,}]" ||
            fail "metrics.jsonl line $i is not episode $i"
        i=$((i + 1))
    done
fi
if [ -f "$OUT/samples.jsonl" ]; then
    n=$(wc -l <"$OUT/samples.jsonl" | tr -d ' ')
    [ "$n" = "$EST_EPISODES" ] && ok "samples.jsonl has $n lines" ||
        fail "samples.jsonl has $n lines, want $EST_EPISODES (episodes 1 and 3)"
fi
grep -q '"state": *"completed"' "$OUT/summary.json" 2>/dev/null && ok "summary says completed" ||
    fail "summary.json does not say completed"
# .npy: magic and at least 8 bytes per number plus the 10-byte preamble.
for pair in "lambda.npy:$N_LAM" "phi.npy:$N_W"; do
    f=${pair%%:*}
    n=${pair#*:}
    [ -f "$OUT/$f" ] || continue
    if head -c 6 "$OUT/$f" | LC_ALL=C grep -q NUMPY; then ok "$f has the .npy magic"; else fail "$f: no .npy magic"; fi
    size=$(wc -c <"$OUT/$f" | tr -d ' ')
    [ "$size" -ge $((8 * n + 10)) ] && ok "$f size $size for $n numbers" ||
        fail "$f is $size bytes, too small for $n float64"
done
if [ $have_py = 1 ] && [ -f "$OUT/metrics.jsonl" ]; then
    if python3 - "$OUT" <<'EOF'
import json, sys
d = sys.argv[1]
for name in ("metrics.jsonl", "samples.jsonl"):
    with open(d + "/" + name) as f:
        for line in f:
            json.loads(line)
with open(d + "/summary.json") as f:
    s = json.load(f)
assert s["episodes"] == 3 and s["meta_batch"] == 2 and s["steps"] == 5, s
EOF
    then ok "jsonl lines and summary parse as JSON"; else fail "outputs are not valid JSON"; fi
fi

# Warm start from the run's own outputs.
if "$BIN" --local "$T/spec.json" --out "$T/warm" --quiet --lambda "$OUT/lambda.npy" \
    --phi "$OUT/phi.npy" >"$T/warm.log" 2>&1 && [ -s "$T/warm/lambda.npy" ]; then
    ok "warm start with --lambda/--phi"
else
    fail "warm start failed"
    sed 's/^/    /' "$T/warm.log"
fi

# ---------------------------------------------------------------- refusals
# refuse NAME EXPECTED_TEXT ARGS...: non-zero exit, EXPECTED_TEXT in stderr,
# and $T/bad (the out dir of every refused run) never created.
refuse() {
    name=$1
    want=$2
    shift 2
    rm -rf "$T/bad"
    "$BIN" "$@" >"$T/bad.out" 2>"$T/bad.err"
    rc=$?
    if [ $rc -eq 0 ]; then
        fail "$name: exit 0, want non-zero"
    elif ! grep -qF -- "$want" "$T/bad.err"; then
        fail "$name: message does not name '$want':"
        sed 's/^/    /' "$T/bad.err"
    elif [ -e "$T/bad" ]; then
        fail "$name: the out dir was created"
    else
        ok "$name refused (exit $rc): $(head -n 1 "$T/bad.err")"
    fi
}

# bad_spec NAME FIELD JSON
bad_spec() {
    printf '%s\n' "$3" >"$T/bad.json"
    refuse "$1" "$2" --local "$T/bad.json" --out "$T/bad" --quiet
}

BASE='"task": {"family": "sinusoid", "shots": 10, "queries": 10}, "model": {"layers": [1, 20, 20, 1]}, "episodes": 2, "meta_batch": 2'
bad_spec "unknown method" method.name "{$BASE, \"method\": {\"name\": \"bogus\"}}"
bad_spec "negative steps" inner.steps "{$BASE, \"inner\": {\"steps\": -3}}"
bad_spec "zero episodes" episodes \
    '{"task": {"family": "sinusoid"}, "model": {"layers": [1, 20, 1]}, "episodes": 0}'
bad_spec "duplicate field" episodes "{$BASE, \"episodes\": 4}"
bad_spec "sinusoid with input width 2" model.layers \
    '{"task": {"family": "sinusoid"}, "model": {"layers": [2, 20, 1]}}'
bad_spec "sinusoid with output width 3" model.layers \
    '{"task": {"family": "sinusoid"}, "model": {"layers": [1, 20, 3]}}'
bad_spec "gaussmix classes != output width" task.classes \
    '{"task": {"family": "gaussmix", "classes": 5}, "model": {"layers": [20, 16, 3]}}'
bad_spec "gamma 1" method.gamma "{$BASE, \"method\": {\"gamma\": 1}}"
bad_spec "gamma -0.5" method.gamma "{$BASE, \"method\": {\"gamma\": -0.5}}"
bad_spec "unknown top-level field" frobnicate "{$BASE, \"frobnicate\": 1}"
bad_spec "unknown nested field" inner.stepz "{$BASE, \"inner\": {\"stepz\": 3}}"
bad_spec "wrong type" inner.lr "{$BASE, \"inner\": {\"lr\": \"fast\"}}"
bad_spec "not JSON" JSON "this is not json"
refuse "missing spec file" "$T/no/such/spec.json" --local "$T/no/such/spec.json" --out "$T/bad" --quiet
refuse "--lambda of the wrong size" --lambda --local "$T/spec.json" --out "$T/bad" --quiet \
    --lambda "$OUT/phi.npy"
refuse "--phi of the wrong size" --phi --local "$T/spec.json" --out "$T/bad" --quiet \
    --phi "$OUT/lambda.npy"
refuse "missing --lambda file" "$T/none.npy" --local "$T/spec.json" --out "$T/bad" --quiet \
    --lambda "$T/none.npy"
refuse "unknown argument" --bogus --local "$T/spec.json" --out "$T/bad" --bogus

# ---------------------------------------------------------------- probe
if [ $have_py = 0 ]; then
    echo "SKIP: hdworker probe (python3 not found to write the task .npz)"
else
    python3 - "$T/task.npz" <<'EOF'
# A sinusoid task as an uncompressed .npz, with the standard library only.
import math, struct, sys, zipfile
def npy(rows):
    hdr = "{'descr': '<f8', 'fortran_order': False, 'shape': (%d, 1), }" % len(rows)
    pad = 64 - (10 + len(hdr) + 1) % 64
    hdr = hdr + " " * (pad % 64) + "\n"
    return (b"\x93NUMPY\x01\x00" + struct.pack("<H", len(hdr)) + hdr.encode("latin1")
            + struct.pack("<%dd" % len(rows), *rows))
xs = [-5.0 + 10.0 * i / 9.0 for i in range(10)]
xq = [-4.5 + 9.0 * i / 9.0 for i in range(10)]
f = lambda x: 2.0 * math.sin(x + 0.5)
with zipfile.ZipFile(sys.argv[1], "w", zipfile.ZIP_STORED) as z:
    z.writestr("xs.npy", npy(xs))
    z.writestr("ys.npy", npy([f(x) for x in xs]))
    z.writestr("xq.npy", npy(xq))
    z.writestr("yq.npy", npy([f(x) for x in xq]))
EOF
    P=$T/probe
    if "$BIN" probe --spec "$T/spec.json" --lambda "$OUT/lambda.npy" --phi "$OUT/phi.npy" \
        --task "$T/task.npz" --out "$P" >"$T/probe.log" 2>&1; then
        ok "probe exits 0"
    else
        fail "probe exited $?"
        sed 's/^/    /' "$T/probe.log"
    fi
    for m in fo onestep hyperdistill drmad rmd neumann; do
        [ -s "$P/$m.npy" ] || fail "probe: $m.npy missing"
    done
    if [ -s "$P/probe.json" ] && python3 - "$P/probe.json" <<'EOF'
import json, math, sys
r = json.load(open(sys.argv[1]))
ms = r["methods"]
assert set(ms) == {"fo", "onestep", "hyperdistill", "drmad", "rmd", "neumann"}, ms
assert abs(ms["rmd"]["cosine_to_rmd"] - 1.0) <= 1e-12, ms["rmd"]
for k, v in ms.items():
    assert math.isfinite(v["cosine_to_rmd"]) and math.isfinite(v["norm"]), (k, v)
assert ms["fo"]["vjps"] == 0 and ms["rmd"]["vjps"] == r["steps"] == 5, ms
assert len(r["samples"]["x"]) == 5 and len(r["samples"]["y"]) == 5
EOF
    then ok "probe.json: rmd cosine 1, all finite, VJP counts"; else fail "probe.json content"; fi
    rm -rf "$T/bad"
    refuse "probe: missing --task file" "$T/none.npz" probe --spec "$T/spec.json" \
        --lambda "$OUT/lambda.npy" --phi "$OUT/phi.npy" --task "$T/none.npz" --out "$T/bad"
    refuse "probe: --lambda of the wrong size" --lambda probe --spec "$T/spec.json" \
        --lambda "$OUT/phi.npy" --phi "$OUT/phi.npy" --task "$T/task.npz" --out "$T/bad"
fi

if [ $fails -ne 0 ]; then
    echo "test_local_cli: $fails failed"
    exit 1
fi
echo "test_local_cli: all passed"
exit 0
