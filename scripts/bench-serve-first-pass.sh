#!/usr/bin/env bash
# Serve's first pass and one epoch, for before/after comparisons of one binary against
# another (not a timed test). Run from a directory holding `g/` (a `synpref gen` pool)
# and `batch.jsonl` (a label batch); starts serve on 2 workers with g/gold.parquet, waits
# until it is loaded, posts the batch, waits until it is applied, and prints the load
# time, pool_pairs, state bytes per pair, conflicting_labels after the batch, the
# epoch's latency and wall, and serve's peak RSS (VmHWM).
#   scripts/bench-serve-first-pass.sh BIN TAG
# docs/benchmarks.md ("serve and labels on a canonical key") has the data and batch.
set -euo pipefail
BIN=$1; TAG=$2
rm -rf out-$TAG labels-$TAG; mkdir labels-$TAG; cp g/gold.parquet labels-$TAG/
PORT=$((20000 + RANDOM % 20000))
export SYNPREF_TOKEN=t
/usr/bin/time -v "$BIN" serve --pairs g/pairs --labels labels-$TAG --out out-$TAG --listen 127.0.0.1:$PORT --workers 2 --snapshot-every 0 --poll-interval 0.2 --no-progress > log-$TAG 2> time-$TAG &
PID=$!
until grep -q "loaded at" time-$TAG 2>/dev/null; do sleep 0.5; done
grep "loaded at" time-$TAG
T0=$(date +%s.%N)
EPOCH=$(curl -s -H "Authorization: Bearer t" --data-binary @batch.jsonl http://127.0.0.1:$PORT/v1/labels | python3 -c "import sys,json;print(json.load(sys.stdin)['epoch'])")
until [ "$(curl -s -H "Authorization: Bearer t" http://127.0.0.1:$PORT/v1/status | python3 -c "import sys,json;s=json.load(sys.stdin);print(s['applied_epoch']>=$EPOCH)")" = True ]; do sleep 0.1; done
T1=$(date +%s.%N)
curl -s -H "Authorization: Bearer t" http://127.0.0.1:$PORT/v1/status | python3 -c "import sys,json;s=json.load(sys.stdin);print('pool_pairs',s['pool_pairs'],'bytes/pair',s['state_bytes_per_pair'],'conflicting',s['reasons'].get('conflicting_labels'),'latency',s['last_update']['latency_s'])"
echo "epoch wall $(echo "$T1 - $T0" | bc)"
CHILD=$(pgrep -P $PID); grep VmHWM /proc/$CHILD/status; kill -INT $CHILD || true; sleep 2; kill $PID 2>/dev/null || true; wait $PID 2>/dev/null || true
grep "Maximum resident" time-$TAG
