#!/bin/sh
# Static checks of the deployment files under deploy/ (systemd units,
# environment examples, Slurm script, Kubernetes manifests, Dockerfile).
# Run from the repository root: sh tests/deploy/test_deploy_files.sh
# Prints one line per check (ok / FAIL / skip) and exits non-zero on any failure.

D=deploy
failures=0
TMP=$(mktemp -d "${TMPDIR:-/tmp}/hddeploy.XXXXXX") || exit 1
trap 'rm -rf "$TMP"' EXIT
trap 'exit 1' INT TERM

ok() { echo "ok   $*"; }
fail() { echo "FAIL $*"; failures=$((failures + 1)); }
skip() { echo "skip $*"; }
# check DESCRIPTION COMMAND...: ok when the command succeeds.
check() {
    desc=$1
    shift
    if "$@" >"$TMP/out" 2>&1; then ok "$desc"; else
        fail "$desc"
        sed 's/^/     /' "$TMP/out" | head -n 20
    fi
}
# has FILE FIXED-STRING: the file contains the string.
has() { grep -qF -- "$2" "$1"; }
# has_line FILE LINE: the file has the exact line.
has_line() { grep -qxF -- "$2" "$1"; }

SERVER_UNIT=$D/systemd/hdserver.service
WORKER_UNIT=$D/systemd/hdworker@.service
SBATCH=$D/slurm/hdworker-array.sbatch
SERVER_ENV=$D/env/hdserver.env.example
WORKER_ENV=$D/env/hdworker.env.example
K8S=$D/k8s
DOCKERFILE=$D/docker/Dockerfile

# --- files exist -------------------------------------------------------------
for f in "$SERVER_UNIT" "$WORKER_UNIT" "$D/systemd/hyperdistill.sysusers.conf" \
    "$SERVER_ENV" "$WORKER_ENV" "$SBATCH" \
    "$K8S/namespace.yaml" "$K8S/secret.yaml" "$K8S/server-statefulset.yaml" \
    "$K8S/server-service.yaml" "$K8S/worker-deployment.yaml" "$K8S/kustomization.yaml" \
    "$DOCKERFILE" "$D/README.md"; do
    check "exists: $f" test -s "$f"
done
[ "$failures" -eq 0 ] || {
    echo "deploy files missing: $failures failure(s)"
    exit 1
}

# --- systemd units -------------------------------------------------------------
HARDENING="NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes
PrivateDevices=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX
RestrictNamespaces=yes
LockPersonality=yes
MemoryDenyWriteExecute=yes
RestrictRealtime=yes
SystemCallFilter=@system-service
SystemCallArchitectures=native
CapabilityBoundingSet=
User=hyperdistill
Restart=on-failure
KillSignal=SIGTERM"
units_have_keys() {
    miss=""
    for u in "$SERVER_UNIT" "$WORKER_UNIT"; do
        printf '%s\n' "$HARDENING" >"$TMP/keys"
        while IFS= read -r k; do
            has_line "$u" "$k" || miss="$miss
$u: missing line '$k'"
        done <"$TMP/keys"
        grep -q '^TimeoutStopSec=[0-9]' "$u" || miss="$miss
$u: missing TimeoutStopSec="
    done
    [ -z "$miss" ] || {
        echo "$miss"
        return 1
    }
}
check "systemd: both units have the hardening, restart and stop keys" units_have_keys
check "systemd: hdserver runs /usr/local/bin/hdserver" grep -q '^ExecStart=/usr/local/bin/hdserver\( \|$\)' "$SERVER_UNIT"
check "systemd: hdworker@ runs /usr/local/bin/hdworker" grep -q '^ExecStart=/usr/local/bin/hdworker\( \|$\)' "$WORKER_UNIT"
server_state() {
    has_line "$SERVER_UNIT" "StateDirectory=hyperdistill" &&
        has_line "$SERVER_UNIT" "ReadWritePaths=/var/lib/hyperdistill" &&
        grep -q '^Environment=HD_DB=/var/lib/hyperdistill/' "$SERVER_UNIT" &&
        has_line "$SERVER_UNIT" "EnvironmentFile=/etc/hyperdistill/hdserver.env"
}
check "systemd: hdserver keeps its database in the state directory and reads hdserver.env" server_state
worker_env() {
    grep -q '^EnvironmentFile=-\{0,1\}/etc/hyperdistill/worker.env$' "$WORKER_UNIT" &&
        grep -q '^EnvironmentFile=-\{0,1\}/etc/hyperdistill/%i.env$' "$WORKER_UNIT"
}
check "systemd: hdworker@ reads worker.env and %i.env" worker_env

if command -v systemd-analyze >/dev/null 2>&1; then
    true_bin=/bin/true
    [ -x "$true_bin" ] || true_bin=/usr/bin/true
    mkdir -p "$TMP/units"
    sed "s#^ExecStart=/usr/local/bin/hd[a-z]*#ExecStart=$true_bin#" "$SERVER_UNIT" >"$TMP/units/hdserver.service"
    sed "s#^ExecStart=/usr/local/bin/hd[a-z]*#ExecStart=$true_bin#" "$WORKER_UNIT" >"$TMP/units/hdworker@.service"
    verify_units() {
        (cd "$TMP/units" && systemd-analyze verify ./hdserver.service ./hdworker@test.service) >"$TMP/verify" 2>&1
        rc=$?
        cat "$TMP/verify"
        # verify exits 0 on unknown keys and bad values: treat any message
        # about these units as a failure too.
        [ $rc -eq 0 ] && ! grep -q 'hdserver\|hdworker' "$TMP/verify"
    }
    check "systemd-analyze verify: both units (ExecStart replaced by $true_bin)" verify_units
else
    skip "systemd-analyze verify: systemd-analyze is not installed"
fi

# --- environment examples --------------------------------------------------------
# Every variable the programs read (from their option tables) is documented.
vars_documented() {
    src=$1
    example=$2
    [ -f "$src" ] || {
        echo "$src not found"
        return 1
    }
    miss=""
    for v in $(grep -o '"HD_[A-Z0-9_]*"' "$src" | tr -d '"' | sort -u); do
        grep -q "^#\{0,1\}$v=" "$example" || miss="$miss $v"
    done
    [ -z "$miss" ] || {
        echo "$example lacks:$miss"
        return 1
    }
}
if [ -f server/config.c ]; then
    check "env: $SERVER_ENV has every variable of server/config.c" vars_documented server/config.c "$SERVER_ENV"
else
    skip "env: server/config.c not found"
fi
if [ -f worker/config.c ]; then
    check "env: $WORKER_ENV has every variable of worker/config.c" vars_documented worker/config.c "$WORKER_ENV"
else
    skip "env: worker/config.c not found"
fi
# Each variable line (set or commented out) follows a comment line.
vars_commented() {
    awk '
        /^#?[A-Z][A-Z0-9_]*=/ { if (prev !~ /^#/) { print FILENAME ":" NR ": no comment before " $0; bad = 1 } }
        NF { prev = $0 }
        END { exit bad }
    ' "$@"
}
check "env: every variable in the examples has a comment" vars_commented "$SERVER_ENV" "$WORKER_ENV"
env_syntax() {
    # EnvironmentFile syntax: comments, blank lines and NAME=value lines only.
    ! grep -vn '^#\|^$\|^[A-Z_][A-Z0-9_]*=' "$SERVER_ENV" "$WORKER_ENV"
}
check "env: the examples hold only comments and NAME=value lines" env_syntax

# --- Slurm ------------------------------------------------------------------------
if command -v bash >/dev/null 2>&1; then
    check "slurm: bash -n $SBATCH" bash -n "$SBATCH"
else
    skip "slurm: bash -n (bash is not installed)"
fi
sbatch_directives() {
    for d in '#SBATCH --array=' '#SBATCH --job-name=' '#SBATCH --output=' '#SBATCH --time=' \
        '#SBATCH --cpus-per-task=1' '#SBATCH --signal=B:TERM@'; do
        grep -q "^$d" "$SBATCH" || {
            echo "missing '$d'"
            return 1
        }
    done
    head -n 1 "$SBATCH" | grep -q '^#!/bin/bash' || {
        echo "first line is not #!/bin/bash"
        return 1
    }
    grep -q '^exec "\$bin"' "$SBATCH" || {
        echo "hdworker is not started with exec"
        return 1
    }
}
check "slurm: #SBATCH --array, job name, output, time, cpus, signal; hdworker exec'd" sbatch_directives

if command -v bash >/dev/null 2>&1; then
    # A stand-in hdworker prints what it was given.
    cat >"$TMP/fake-hdworker" <<'EOF'
#!/bin/sh
echo "args=$* name=$HD_NAME run=${HD_RUN:-} server=$HD_SERVER"
EOF
    chmod +x "$TMP/fake-hdworker"
    # run_sbatch VAR=value... : run the script as array task with the fake binary.
    run_sbatch() {
        env -u HD_SHARDS -u HD_SERVER -u HD_TOKEN -u HD_RUN -u SLURM_ARRAY_TASK_MIN \
            HDWORKER="$TMP/fake-hdworker" SLURM_ARRAY_JOB_ID=4242 "$@" bash "$SBATCH" 2>&1
    }
    sbatch_no_shards() {
        out=$(run_sbatch HD_SERVER=http://s:8080 HD_TOKEN=t HD_RUN=7 SLURM_ARRAY_TASK_ID=3)
        echo "$out"
        echo "$out" | grep -qx 'args=--shard 0/1 name=slurm-4242-3 run=7 server=http://s:8080'
    }
    check "slurm: without HD_SHARDS task 3 runs shard 0/1 named slurm-JOB-3" sbatch_no_shards
    sbatch_shards() {
        out=$(run_sbatch HD_SERVER=http://s:8080 HD_TOKEN=t HD_SHARDS=2 SLURM_ARRAY_TASK_ID=3)
        echo "$out"
        echo "$out" | grep -qx 'args=--shard 1/2 name=slurm-4242-3 run= server=http://s:8080'
    }
    check "slurm: HD_SHARDS=2 makes task 3 run shard 1/2" sbatch_shards
    sbatch_refuses() {
        run_sbatch HD_TOKEN=t SLURM_ARRAY_TASK_ID=0 && return 1
        [ $? -eq 2 ] || return 1
        run_sbatch HD_SERVER=http://s:8080 HD_TOKEN=t HD_SHARDS=x SLURM_ARRAY_TASK_ID=0 && return 1
        [ $? -eq 2 ]
    }
    check "slurm: exits 2 without HD_SERVER or with a bad HD_SHARDS" sbatch_refuses
else
    skip "slurm: behaviour (bash is not installed)"
fi

# --- Kubernetes ---------------------------------------------------------------------
kustomization_complete() {
    miss=""
    for f in "$K8S"/*.yaml; do
        b=$(basename "$f")
        [ "$b" = kustomization.yaml ] && continue
        grep -q "^  - $b\$" "$K8S/kustomization.yaml" || miss="$miss $b"
    done
    for r in $(sed -n 's/^  - \([A-Za-z0-9._-]*\.yaml\)$/\1/p' "$K8S/kustomization.yaml"); do
        [ -f "$K8S/$r" ] || miss="$miss (listed but absent: $r)"
    done
    [ -z "$miss" ] || {
        echo "not in kustomization.yaml resources:$miss"
        return 1
    }
}
check "k8s: every manifest is listed in kustomization.yaml" kustomization_complete
no_tabs() { ! grep -n "$(printf '\t')" "$K8S"/*.yaml; }
check "k8s: no tab characters in YAML" no_tabs
if command -v python3 >/dev/null 2>&1 && python3 -c 'import yaml' >/dev/null 2>&1; then
    yaml_parses() {
        python3 - "$K8S"/*.yaml <<'EOF'
import sys, yaml
bad = 0
for path in sys.argv[1:]:
    try:
        docs = [d for d in yaml.safe_load_all(open(path)) if d is not None]
    except yaml.YAMLError as e:
        print(path, e); bad = 1; continue
    for d in docs:
        if not isinstance(d, dict) or "apiVersion" not in d or "kind" not in d:
            print(path, ": a document without apiVersion/kind"); bad = 1
sys.exit(bad)
EOF
    }
    check "k8s: every manifest parses as YAML with apiVersion and kind" yaml_parses
else
    skip "k8s: YAML parsing (python3 with the yaml module is not installed)"
fi
k8s_contents() {
    S=$K8S/server-statefulset.yaml
    W=$K8S/worker-deployment.yaml
    for pair in "$S|kind: StatefulSet" "$S|replicas: 1" "$S|image: hyperdistill:latest" \
        "$S|\"--db\", \"/data/hd.sqlite\"" "$S|\"--listen\", \"0.0.0.0:8080\"" \
        "$S|path: /readyz" "$S|path: /healthz" "$S|volumeClaimTemplates:" "$S|storage: 1Gi" \
        "$S|mountPath: /data" "$S|serviceName: hdserver-headless" "$S|name: hyperdistill-tokens" \
        "$S|runAsNonRoot: true" "$S|readOnlyRootFilesystem: true" "$S|allowPrivilegeEscalation: false" \
        "$S|resources:" \
        "$W|kind: Deployment" "$W|replicas: 4" "$W|image: hyperdistill:latest" \
        "$W|value: \"http://hdserver:8080\"" "$W|name: HD_TOKEN" "$W|name: hyperdistill-tokens" \
        "$W|terminationGracePeriodSeconds: 60" "$W|runAsNonRoot: true" \
        "$W|readOnlyRootFilesystem: true" "$W|allowPrivilegeEscalation: false" "$W|resources:" \
        "$K8S/server-service.yaml|name: hdserver" "$K8S/server-service.yaml|clusterIP: None" \
        "$K8S/server-service.yaml|port: 8080" \
        "$K8S/secret.yaml|name: hyperdistill-tokens" "$K8S/secret.yaml|stringData:"; do
        f=${pair%%|*}
        s=${pair#*|}
        has "$f" "$s" || {
            echo "$f: missing '$s'"
            return 1
        }
    done
    grep -q 'HD_RUN' "$W" "$K8S"/*configmap*.yaml 2>/dev/null || {
        echo "no HD_RUN for the workers"
        return 1
    }
}
check "k8s: server StatefulSet, services, worker Deployment and Secret have the required fields" k8s_contents

# --- Dockerfile -----------------------------------------------------------------------
dockerfile_ok() {
    grep -q '^FROM debian:bookworm-slim AS build' "$DOCKERFILE" || {
        echo "no build stage"
        return 1
    }
    [ "$(grep -c '^FROM ' "$DOCKERFILE")" -ge 2 ] || {
        echo "not multi-stage"
        return 1
    }
    for p in libopenblas0 libcjson1 libsqlite3-0 libmicrohttpd12 libcurl4 make; do
        grep -qw -- "$p" "$DOCKERFILE" || {
            echo "missing $p"
            return 1
        }
    done
    grep -q '^USER [1-9][0-9]*' "$DOCKERFILE" || {
        echo "no numeric non-root USER"
        return 1
    }
}
check "docker: multi-stage bookworm-slim build, runtime libraries, non-root user" dockerfile_ok

# --- hygiene --------------------------------------------------------------------------
no_todo() { ! grep -rnE 'TODO|FIXME' "$D"; }
check "no TODO or FIXME under $D/" no_todo
no_secrets() {
    # Tokens the server makes are hex; long hex or base64 runs and literal
    # bearer tokens have no place in these files.
    ! grep -rnE '[0-9A-Fa-f]{24,}|[A-Za-z0-9+/]{40,}={0,2}|Bearer [A-Za-z0-9._~+/-]{12,}' "$D"
}
check "no real-looking token under $D/" no_secrets
placeholders() {
    bad=0
    for l in $(grep -hE '^(HD_TOKEN|HD_ADMIN_TOKEN)=' "$SERVER_ENV" "$WORKER_ENV"); do
        case "$l" in *=REPLACE-*) ;; *) echo "not a placeholder: $l"; bad=1 ;; esac
    done
    for k in admin-token worker-token; do
        grep -q "^  $k: \"REPLACE-" "$K8S/secret.yaml" || {
            echo "secret.yaml: $k is not a REPLACE- placeholder"
            bad=1
        }
    done
    [ $bad -eq 0 ]
}
check "token values in the examples and the Secret are REPLACE- placeholders" placeholders
readme_sections() {
    for s in '## systemd' '## Slurm' '## Kubernetes'; do
        has_line "$D/README.md" "$s" || {
            echo "README lacks '$s'"
            return 1
        }
    done
}
check "README: systemd, Slurm and Kubernetes sections" readme_sections

if [ "$failures" -ne 0 ]; then
    echo "deploy files: $failures check(s) failed"
    exit 1
fi
echo "deploy files: all checks passed"
