#!/usr/bin/env bash
# The GPU benches as one script for a lent GPU machine, most wanted first.
#
#   bash bench/gpu_all.sh [e2e-5b e2e-a14b decode denoise ...]
#
# Each bench's results (its stdout) are printed; its stdout and stderr are also kept, whole,
# in $OUT (the device tool's folder that comes back) or ./bench-logs. Keep stderr out of the
# printed tail: torch's compile warnings can run to thousands of lines and push the results out.
# PYTHON picks the interpreter (default python3); each bench has its own time limit.
set -u
PY=${PYTHON:-python3}
LOGS=${OUT:-bench-logs}
mkdir -p "$LOGS"

run() {
  local name=$1 limit=$2 start rc
  shift 2
  start=$(date +%s)
  timeout "$limit" "$PY" "$@" >"$LOGS/$name.out" 2>"$LOGS/$name.err"
  rc=$?
  cat "$LOGS/$name.out"
  echo "[$name: exit $rc after $(($(date +%s) - start)) s; stderr in $LOGS/$name.err]"
}

for bench in "${@:-e2e-5b e2e-a14b decode denoise}"; do
  for name in $bench; do
    case $name in
      e2e-5b) run "$name" 300 bench/gpu_end_to_end.py wan2.2-ti2v-5b-turbo ;;
      e2e-a14b) run "$name" 360 bench/gpu_end_to_end.py wan2.2-i2v-a14b-turbo ;;
      decode) run "$name" 300 bench/gpu_decode.py ;;
      denoise) run "$name" 480 bench/gpu_denoise.py --steps 2 ;;
      *) echo "unknown bench $name (known: e2e-5b e2e-a14b decode denoise)" >&2; exit 2 ;;
    esac
  done
done
