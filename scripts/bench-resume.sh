#!/usr/bin/env bash
# Benchmark of curate's resume (not a timed test): an uninterrupted curate of N
# generated pairs, then K runs killed with SIGKILL at random points (seeded) and started
# again with the same arguments. For each: where it was killed, what the restarted run
# resumed and read (report.json's `resume`), its time, and whether its parts are
# byte-identical to the uninterrupted run's.
#   scripts/bench-resume.sh [PAIRS=1000000] [KILLS=10] [WORKERS=2] [DIR=/tmp/synpref-resume] [SEED=1]
# EXTRA: more curate flags (e.g. "--slice-rows 65536").
set -euo pipefail
PAIRS=${1:-1000000}
KILLS=${2:-10}
WORKERS=${3:-2}
DIR=${4:-/tmp/synpref-resume}
SEED=${5:-1}
cd "$(dirname "$0")/.."
[ -n "${SKIP_BUILD:-}" ] || cargo build --release -p synpref --bin synpref >&2
BIN=${BIN:-target/release/synpref}
mkdir -p "$DIR"
[ -d "$DIR/g$PAIRS" ] || "$BIN" gen --pairs "$PAIRS" --out "$DIR/g$PAIRS" >&2
ARGS=(--pairs "$DIR/g$PAIRS/pairs" --gold "$DIR/g$PAIRS/gold.parquet" --workers "$WORKERS" --no-progress ${EXTRA:-})
run() { "$BIN" curate "${ARGS[@]}" --out "$1" >/dev/null; }
digest() { for d in curated discarded quarantine; do (cd "$1/$d" && for f in *; do
    echo "$d/${f%-*} $(md5sum <"$f" | cut -c1-32)"; done); done | sort; }
committed() { # slices every worker had committed when the run died
    local min=-1
    for w in $(seq 0 $((WORKERS - 1))); do
        local n=0
        while [ -e "$1/_staging/resume/$(printf 'slice-w%05d-s%06d.json' "$w" "$n")" ]; do n=$((n + 1)); done
        if [ "$min" -lt 0 ] || [ "$n" -lt "$min" ]; then min=$n; fi
    done
    echo "$min"
}
rm -rf "$DIR/whole"
T0=$(date +%s.%N); run "$DIR/whole"; T1=$(date +%s.%N)
WHOLE_S=$(echo "$T1 - $T0" | bc)
digest "$DIR/whole" >"$DIR/whole.digest"
echo "uninterrupted: ${WHOLE_S} s; $(python3 -c "import json; r=json.load(open('$DIR/whole/report.json')); print('slices', r['resume']['slices'], 'stages_s', {k: round(v, 1) for k, v in r['stages_s'].items()})")"
echo "| kill | killed at | checkpoint | slices committed | restart | survey resumed | slices resumed | rows resumed | rows read | identical |"
echo "|---:|---:|---|---:|---:|---|---:|---:|---:|---|"
RANDOM=$SEED
for k in $(seq 1 "$KILLS"); do
    OUT="$DIR/killed"
    rm -rf "$OUT"
    AT=$(python3 -c "import random; random.seed($SEED * 1000 + $k); print(round(random.uniform(0.02, 0.98) * $WHOLE_S, 2))")
    # The binary itself in the background (a backgrounded shell function would be a
    # subshell, and SIGKILL would leave its curate running).
    "$BIN" curate "${ARGS[@]}" --out "$OUT" >/dev/null & PID=$!
    sleep "$AT"
    kill -9 "$PID" 2>/dev/null || true
    wait "$PID" 2>/dev/null || true
    CKPT=$([ -e "$OUT/_staging/resume/checkpoint.json" ] && echo yes || echo no)
    C=$(committed "$OUT")
    T0=$(date +%s.%N); run "$OUT"; T1=$(date +%s.%N)
    SAME=$(digest "$OUT" | cmp -s - "$DIR/whole.digest" && echo yes || echo NO)
    python3 - "$OUT/report.json" "$k" "$AT" "$CKPT" "$C" "$(echo "$T1 - $T0" | bc)" "$SAME" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))["resume"]
k, at, ckpt, c, restart, same = sys.argv[2:]
print(f"| {k} | {float(at):.1f} s | {ckpt} | {c} | {float(restart):.1f} s | {'yes' if r['survey_resumed'] else 'no'} | "
      f"{r['slices_resumed']} of {r['slices']} | {r['rows_resumed']:,} | {r['rows_read']:,} | {same} |")
PY
done
