#!/usr/bin/env bash
# Runs every fuzz harness for a bounded time and prints its executions.
#   tests/fuzz/run.sh SECONDS BUILD_DIR PYTHON        (make fuzz / make test-fuzz call it)
# BUILD_DIR holds the clang build of native/fuzz (fuzz_<kernel> executables); the
# working corpora grow in BUILD_DIR/corpus (the repository's seeds stay as they
# are) and a finding is written to BUILD_DIR/findings/<harness>-crash-<sha1>.
# FUZZ_ONLY="median bundle" restricts the run to those harnesses.
# Exit status 1 when any harness found something (a crash, a sanitizer report, a
# mismatch between an ISA and the scalar reference, an untyped exception, a hang).
set -uo pipefail
seconds=${1:?seconds per harness}
build=${2:?build directory of the libFuzzer harnesses}
python=${3:?python with atheris and edgeguard}
root=$(cd "$(dirname "$0")/../.." && pwd)
work=$build/corpus
findings=$build/findings
mkdir -p "$findings"

status=0
total_native=0
total_python=0
run() {  # name kind seeds command...
    local name=$1 kind=$2 seeds=$3
    shift 3
    if [ -n "${FUZZ_ONLY:-}" ] && [[ " $FUZZ_ONLY " != *" $name "* ]]; then return; fi
    mkdir -p "$work/$name"
    local log=$build/$name.log
    "$@" -max_total_time="$seconds" -timeout=20 -rss_limit_mb=2048 -print_final_stats=1 \
        -artifact_prefix="$findings/$name-" "$work/$name" "$seeds" >"$log" 2>&1
    local rc=$?
    local runs
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    runs=${runs:-0}
    local result=ok
    if [ $rc -ne 0 ]; then
        result="FINDING (exit $rc; see $log)"
        status=1
        grep -m5 -E "FUZZ FINDING|ERROR: AddressSanitizer|runtime error|Uncaught Python exception|Traceback|timeout" "$log"
    fi
    if [ "$kind" = native ]; then total_native=$((total_native + runs)); else total_python=$((total_python + runs)); fi
    printf "fuzz %-11s %10d executions in %ss: %s\n" "$name" "$runs" "$seconds" "$result"
}

for kernel in bit_depth median softmax scores preprocess lut nlm; do
    run "$kernel" native "$root/native/fuzz/corpus/$kernel" "$build/fuzz_$kernel" -max_len=4096
done
for target in bundle manifest; do
    run "$target" python "$root/tests/fuzz/corpus/$target" "$python" "$root/tests/fuzz/fuzz_$target.py" -max_len=8192
done
printf "fuzz total: %d kernel executions (every SIMD variant against scalar each), %d bundle/manifest executions\n" \
    "$total_native" "$total_python"
exit $status
