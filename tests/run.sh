#!/bin/sh
# Runs every test binary under $BUILD/tests and every tests/*/test_*.sh script
# (but tests/slurm/, which brings up a Slurm cluster: `make test-slurm`),
# prints one line per test and a closing "N passed, N failed" line.
BUILD=${BUILD:-build}
export BUILD
passed=0
failed=0
failed_names=""
for t in $(find "$BUILD/tests" -type f -perm -u+x 2>/dev/null | sort) $(ls tests/*/test_*.sh 2>/dev/null | grep -v '^tests/slurm/' | sort); do
    name=${t#"$BUILD/"}
    start=$(date +%s)
    case "$t" in
        *.sh) sh "$t" >"/tmp/hdtest.$$.log" 2>&1 ;;
        *) "$t" >"/tmp/hdtest.$$.log" 2>&1 ;;
    esac
    rc=$?
    secs=$(( $(date +%s) - start ))
    if [ $rc -eq 0 ]; then
        passed=$((passed + 1))
        echo "PASS $name (${secs}s)"
    else
        failed=$((failed + 1))
        failed_names="$failed_names $name"
        echo "FAIL $name (exit $rc, ${secs}s)"
        tail -n 40 "/tmp/hdtest.$$.log" | sed 's/^/    /'
    fi
done
rm -f "/tmp/hdtest.$$.log"
[ -n "$failed_names" ] && echo "failed:$failed_names"
echo "$passed passed, $failed failed"
[ $failed -eq 0 ]
