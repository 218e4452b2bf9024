#!/bin/sh
# The Slurm path for real: a one-node Slurm cluster on localhost runs
# deploy/slurm/hdworker-array.sbatch as a two-task array against a local
# hdserver, and the two workers finish a small sync run.
#
#   make test-slurm          (builds build/hdserver and build/hdworker, then runs this)
#   BUILD=build sh tests/slurm/test_slurm.sh
#
# Needs root: it installs slurm-wlm and munge with apt-get when they are
# missing (service start-up during the install is suppressed), starts its own
# munged (as the munge user, with its own key and socket), slurmctld and slurmd
# (with their own slurm.conf, ports, spool and state directories) and hdserver,
# all under one temporary directory. Apart from the install, nothing under /etc
# is changed and the system's munge/Slurm daemons, if any, are not used. Everything this script
# starts is stopped on exit and the temporary directory removed, so it can be
# run again at once.
#
# Not root: prints SKIP and exits 0. tests/run.sh (make test) leaves this
# test out; it runs from make test-slurm.
#
# Environment: BUILD (default build), HD_SLURM_TIMEOUT (seconds for the job
# array to finish, default 180), HD_SLURM_KEEP=1 (keep the temporary directory).
set -u
cd "$(dirname "$0")/../.." || exit 1

if [ "$(id -u)" != 0 ]; then
    echo "SKIP test_slurm: needs root (installs packages, starts munged as the munge user and slurmd)"
    exit 0
fi

BUILD=${BUILD:-build}
case "$BUILD" in /*) ;; *) BUILD=$PWD/$BUILD ;; esac
SBATCH_SCRIPT=$PWD/deploy/slurm/hdworker-array.sbatch
JOB_TIMEOUT=${HD_SLURM_TIMEOUT:-180}
KEEP=${HD_SLURM_KEEP:-0}
for b in hdserver hdworker; do
    [ -x "$BUILD/$b" ] || { echo "FAIL test_slurm: $BUILD/$b is not built (make $BUILD/$b)"; exit 1; }
done

# A clean environment: no HD_* or SLURM_* settings of the caller reach the
# daemons or the job (sbatch --export=ALL passes this environment on).
for v in $(env | sed -n 's/^\(\(HD\|SLURM\)_[A-Za-z0-9_]*\)=.*/\1/p'); do
    unset "$v"
done

T=""
POLICY_RC=""
SERVER_PID=""
JOB=""
STATUS=1
START=$(date +%s)

say() { echo "test_slurm: $*"; }
pass() { echo "PASS $*"; }

# alive PID: the process exists and is not a zombie.
alive() {
    [ -n "$1" ] && [ -r "/proc/$1/stat" ] || return 1
    st=$(sed 's/^.*) \(.\).*/\1/' "/proc/$1/stat" 2>/dev/null) || return 1
    [ -n "$st" ] && [ "$st" != Z ]
}
# stop PID SECONDS: SIGTERM, then SIGKILL after SECONDS.
stop() {
    alive "$1" || return 0
    kill -TERM "$1" 2>/dev/null
    i=0
    while alive "$1"; do
        i=$((i + 1))
        if [ $i -gt $(($2 * 10)) ]; then
            kill -KILL "$1" 2>/dev/null
            sleep 0.2
            break
        fi
        sleep 0.1
    done
}
pidfile() { [ -s "$1" ] && cat "$1"; }
# wait_until SECONDS COMMAND...: poll until the command succeeds.
wait_until() {
    limit=$(($(date +%s) + $1))
    shift
    while ! "$@"; do
        [ "$(date +%s)" -lt "$limit" ] || return 1
        sleep 0.5
    done
}

show_logs() {
    [ -n "$T" ] || return 0
    for f in "$T"/slurm/slurmctld.log "$T"/slurm/slurmd.log "$T"/munge/munged.log \
        "$T"/hdserver.log "$T"/jobs/*.out; do
        [ -f "$f" ] || continue
        echo "----- $f (last 60 lines)"
        tail -n 60 "$f"
    done
    if [ -n "$JOB" ]; then
        echo "----- scontrol show job $JOB"
        scontrol show job "$JOB" 2>&1 | head -n 80
    fi
    echo "-----"
}

cleanup() {
    trap - EXIT INT TERM
    [ "$STATUS" -eq 0 ] || show_logs
    [ -n "$POLICY_RC" ] && rm -f "$POLICY_RC"
    if [ -n "$T" ]; then
        if [ -n "$JOB" ] && [ -s "$T/slurm/slurmctld.pid" ]; then
            if ! job_gone; then
                scancel "$JOB" 2>/dev/null
                wait_until 20 job_gone || say "job $JOB still in the queue 20 s after scancel"
            fi
        fi
        # Stop slurmd first (it would re-register), then the controller.
        stop "$(pidfile "$T/slurm/slurmd.pid")" 10
        stop "$(pidfile "$T/slurm/slurmctld.pid")" 10
        stop "$SERVER_PID" 10
        # Anything left from the job (a slurmstepd, an hdworker) carries
        # this test's SLURM_CONF in its environment.
        for e in $(grep -lzxF "SLURM_CONF=$T/slurm/slurm.conf" /proc/[0-9]*/environ 2>/dev/null); do
            p=${e#/proc/}
            p=${p%/environ}
            [ "$p" = $$ ] && continue
            alive "$p" || continue
            say "stopping leftover process $p: $(tr '\0' ' ' 2>/dev/null <"/proc/$p/cmdline")"
            stop "$p" 5
        done
        stop "$(pidfile "$T/munge/munged.pid")" 10
        if [ "$KEEP" = 1 ]; then say "kept $T"; else rm -rf "$T"; fi
    fi
    say "done in $(($(date +%s) - START)) s"
    exit "$STATUS"
}
trap cleanup EXIT
trap 'say interrupted; exit 1' INT TERM

fail() {
    echo "FAIL test_slurm: $*"
    STATUS=1
    exit 1
}

# --- packages -------------------------------------------------------------------
have_all() {
    for c in munged mungekey slurmctld slurmd sbatch squeue sinfo scontrol scancel; do
        command -v "$c" >/dev/null 2>&1 || [ -x "/usr/sbin/$c" ] || return 1
    done
}
PATH=$PATH:/usr/sbin:/sbin
if ! have_all; then
    say "installing slurm-wlm munge"
    # The packages would start munge, slurmctld and slurmd as system
    # services (and fail, without a slurm.conf): suppress that with the
    # usual policy-rc.d, removed again right after.
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        POLICY_RC=/usr/sbin/policy-rc.d
        printf '#!/bin/sh\nexit 101\n' >"$POLICY_RC" && chmod 0755 "$POLICY_RC"
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/tmp/hdslurm-apt.$$.log 2>&1 &&
        apt-get install -y -qq --no-install-recommends slurm-wlm munge >>/tmp/hdslurm-apt.$$.log 2>&1
    rc=$?
    [ -n "$POLICY_RC" ] && rm -f "$POLICY_RC"
    POLICY_RC=""
    if [ $rc -ne 0 ]; then
        tail -n 30 /tmp/hdslurm-apt.$$.log
        rm -f /tmp/hdslurm-apt.$$.log
        fail "apt-get install slurm-wlm munge failed"
    fi
    rm -f /tmp/hdslurm-apt.$$.log
    have_all || fail "slurm-wlm and munge installed, but a program is missing"
fi
pass "slurm-wlm $(slurmd -V 2>/dev/null | sed 's/^slurm[^ ]* //') and munge $(munged -V 2>/dev/null | sed -n 's/^munge-\([^ ]*\).*/\1/p') present ($(($(date +%s) - START)) s)"
id munge >/dev/null 2>&1 || fail "no munge user (the munge package creates it)"

T=$(mktemp -d /tmp/hdslurm.XXXXXX) || fail "mktemp"
chmod 0711 "$T"
mkdir -p "$T/slurm/spool" "$T/slurm/state" "$T/jobs" "$T/munge"

# --- munge ------------------------------------------------------------------------
# A key and socket of our own, so the test neither needs nor disturbs a
# system munged. munged runs as the munge user, as the packaged service does,
# and wants its socket directory executable by all.
chown munge:munge "$T/munge"
chmod 0711 "$T/munge"
KEY=$T/munge/munge.key
SOCK=$T/munge/munge.socket
if ! runuser -u munge -- mungekey --create --keyfile="$KEY" 2>"$T/munge/mungekey.err"; then
    cat "$T/munge/mungekey.err"
    # Older munge: no mungekey; a key is 1 KiB of random bytes.
    runuser -u munge -- sh -c "umask 077; dd if=/dev/urandom of='$KEY' bs=1024 count=1 2>/dev/null" ||
        fail "could not create a munge key"
fi
runuser -u munge -- munged --socket="$SOCK" --key-file="$KEY" --pid-file="$T/munge/munged.pid" \
    --log-file="$T/munge/munged.log" --seed-file="$T/munge/munged.seed" ||
    fail "munged did not start"
munge_ok() { munge -n -S "$SOCK" 2>/dev/null | unmunge -S "$SOCK" >/dev/null 2>&1; }
wait_until 10 munge_ok || fail "munge -n | unmunge fails on $SOCK"
pass "munged up (pid $(pidfile "$T/munge/munged.pid"), socket $SOCK)"

# --- Slurm --------------------------------------------------------------------------
# free_port: a TCP port nothing listens on (the ports of a system Slurm,
# 6817/6818, are avoided on purpose).
free_port() {
    if command -v python3 >/dev/null 2>&1; then
        python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
    else
        echo $((20000 + ($$ + $1) % 20000))
    fi
}
CTLD_PORT=$(free_port 1)
SLURMD_PORT=$(free_port 2)
while [ "$SLURMD_PORT" = "$CTLD_PORT" ]; do SLURMD_PORT=$(free_port 3); done
NODE=$(hostname -s 2>/dev/null || hostname)
[ -n "$NODE" ] || NODE=localhost
export SLURM_CONF=$T/slurm/slurm.conf
# config_overrides: slurmd reports the configured CPUs/memory, so that the
# node is never drained for having fewer (2 CPUs: both tasks run at once).
cat >"$SLURM_CONF" <<EOF
ClusterName=hdtest
SlurmctldHost=$NODE(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$SOCK
StateSaveLocation=$T/slurm/state
SlurmdSpoolDir=$T/slurm/spool
SlurmctldPidFile=$T/slurm/slurmctld.pid
SlurmdPidFile=$T/slurm/slurmd.pid
SlurmctldLogFile=$T/slurm/slurmctld.log
SlurmdLogFile=$T/slurm/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
SlurmdParameters=config_overrides
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SwitchType=switch/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MailProg=/bin/true
MinJobAge=600
KillWait=10
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=2 RealMemory=1000 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF

slurmctld -i || fail "slurmctld did not start"
wait_until 15 sh -c "scontrol ping 2>/dev/null | grep -q UP" || fail "slurmctld does not answer scontrol ping"
slurmd -N "$NODE" || fail "slurmd did not start"
node_idle() { [ "$(sinfo -h -N -n "$NODE" -o %T 2>/dev/null)" = idle ]; }
wait_until 60 node_idle || fail "node $NODE is not idle: $(sinfo -N 2>&1)"
pass "slurmctld (port $CTLD_PORT, pid $(pidfile "$T/slurm/slurmctld.pid")) and slurmd (port $SLURMD_PORT, pid $(pidfile "$T/slurm/slurmd.pid")): node $NODE idle"

# --- hdserver and a run ----------------------------------------------------------------
ADMIN=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
"$BUILD/hdserver" --db "$T/hd.sqlite" --listen 127.0.0.1:0 --port-file "$T/port" \
    --admin-token "$ADMIN" --log-level info >"$T/hdserver.log" 2>&1 &
SERVER_PID=$!
wait_until 10 test -s "$T/port" || fail "hdserver did not start"
URL="http://127.0.0.1:$(cat "$T/port")"

# jget KEY JSON: the value (number, string or null) of the first "KEY" in a
# JSON text; the run's own fields come before those of its leases.
jget() {
    printf '%s' "$2" | grep -o "\"$1\": *\(\"[^\"]*\"\|[-0-9.eE+]*\|null\)" | head -n 1 |
        sed 's/^"[^"]*": *//' | tr -d '"'
}
api() { curl -s -H "Authorization: Bearer $ADMIN" "$@"; }

SPEC='{"task": {"family": "sinusoid", "shots": 10, "queries": 10},
 "model": {"layers": [1, 40, 40, 1], "activation": "relu", "hyper_layers": 2},
 "inner": {"steps": 10, "lr": 0.01, "momentum": 0.9},
 "outer": {"optimizer": "adam", "lr": 0.001},
 "method": {"name": "hyperdistill", "gamma": 0.9, "estimation_period": 50},
 "episodes": 3, "meta_batch": 4, "reptile_lr": 1.0, "seed": 7,
 "eval": {"meta_val_tasks": 10, "meta_test_tasks": 20, "interval": 2},
 "mode": "sync", "lease_seconds": 30}'
r=$(printf '%s' "$SPEC" | api -X POST -H 'Content-Type: application/json' --data-binary @- "$URL/v1/runs")
RUN=$(jget id "$r")
WTOKEN=$(jget worker_token "$r")
[ -n "$RUN" ] && [ -n "$WTOKEN" ] || fail "could not create the run: $r"
# Paused until both array tasks have registered: then each one surely gets
# work, however far apart Slurm starts them.
r=$(api -X POST "$URL/v1/runs/$RUN/pause")
[ "$(jget state "$r")" = paused ] || fail "could not pause run $RUN: $r"
pass "hdserver on $URL: run $RUN created (sinusoid 1-40-40-1, T 10, B 4, 3 episodes, sync), paused"

# --- the batch script ---------------------------------------------------------------------
out=$(cd "$T/jobs" && sbatch --parsable --array=0-1 --time=10 --cpus-per-task=1 \
    --chdir="$T/jobs" --output="$T/jobs/slurm-%A_%a.out" \
    --export="ALL,HD_SERVER=$URL,HD_TOKEN=$WTOKEN,HD_RUN=$RUN,HDWORKER=$BUILD/hdworker,HD_POLL_WAIT=2" \
    "$SBATCH_SCRIPT" 2>&1)
JOB=${out%%;*}
case "$JOB" in '' | *[!0-9]*) JOB=""; fail "sbatch failed: $out" ;; esac
pass "sbatch --array=0-1 deploy/slurm/hdworker-array.sbatch: job $JOB"

job_gone() { [ -z "$(squeue -h -j "$JOB" -o %i 2>/dev/null)" ]; }
registered() {
    w=$(api "$URL/v1/runs/$RUN")
    case "$w" in *"\"slurm-$JOB-0\""*) ;; *) return 1 ;; esac
    case "$w" in *"\"slurm-$JOB-1\""*) ;; *) return 1 ;; esac
}
registered_or_gone() { registered || job_gone; }
wait_until 60 registered_or_gone || fail "the workers did not register within 60 s: $(squeue -j "$JOB" 2>&1)"
registered || fail "job $JOB ended before both workers registered"
pass "both array tasks started a worker: slurm-$JOB-0 and slurm-$JOB-1 registered with run $RUN ($(squeue -h -j "$JOB" -o '%i %T' | tr '\n' ' '))"
r=$(api -X POST "$URL/v1/runs/$RUN/resume")
[ "$(jget state "$r")" = running ] || fail "could not resume run $RUN: $r"

t0=$(date +%s)
wait_until "$JOB_TIMEOUT" job_gone || fail "job $JOB still in the queue after $JOB_TIMEOUT s: $(squeue -j "$JOB" 2>&1)"
r=$(api "$URL/v1/runs/$RUN")
state=$(jget state "$r")
[ "$state" = completed ] || fail "run $RUN is '$state', not completed: $(api "$URL/v1/runs/$RUN?format=text")"
pass "job $JOB left the queue after $(($(date +%s) - t0)) s; run $RUN completed (episode $(jget episode "$r")/$(jget episodes "$r"), meta-test loss $(jget meta_test_loss "$r"), theta $(jget theta "$r"))"

# --- each task: a worker that leased work and exited 0 -----------------------------------
info=$(scontrol -o show job "$JOB" 2>&1)
for k in 0 1; do
    f=$T/jobs/slurm-${JOB}_$k.out
    [ -s "$f" ] || fail "no output file $f"
    grep -q "hdworker-array: task $k on .*name=slurm-$JOB-$k shard=0/1 run=$RUN" "$f" || fail "$f: no start line of task $k"
    grep -q "registered run=$RUN .*name=slurm-$JOB-$k " "$f" || fail "$f: the worker did not register"
    grep -q "lease granted run=$RUN" "$f" || fail "$f: the worker got no lease"
    grep -q "exit status=0 " "$f" || fail "$f: no 'exit status=0'"
    line=$(printf '%s\n' "$info" | grep "ArrayTaskId=$k ")
    case "$line" in
        *"JobState=COMPLETED "*"ExitCode=0:0 "*) ;;
        *) fail "task $k: not COMPLETED with exit code 0: $line" ;;
    esac
    pass "task $k: COMPLETED, exit code 0; worker slurm-$JOB-$k: $(grep -c 'lease granted' "$f") lease(s), $(sed -n 's/.*exit status=0 \(posts=[0-9]*\).*/\1/p' "$f"), exit status=0"
done

STATUS=0
pass "test_slurm: two Slurm array tasks of deploy/slurm/hdworker-array.sbatch finished run $RUN"
