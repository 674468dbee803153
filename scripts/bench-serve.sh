#!/usr/bin/env bash
# Benchmark of `synpref serve` (not a timed test): generates N pairs once, starts serve
# with gen's gold labels (5% of the pool) as the first epoch, posts batches of 1, 100 and
# 1,000 random labels, and prints update latencies (median, p99), serve's memory, and a
# from-scratch curate of the final state for comparison.
#   scripts/bench-serve.sh [PAIRS=1000000] [WORKERS=2] [REPS=20,10,5] [DIR=/tmp/synpref-bench]
# EXTRA: more flags for serve and the from-scratch curate, e.g. an encoder gold RM:
#   EXTRA="--gold-rm encoder:tests/fixtures/bert_minilm --score-cache /tmp/cache"
# The from-scratch curate then reads the encoder outputs serve cached. COLD_EXTRA, if
# set, runs a second from-scratch curate with these flags instead, e.g.
#   COLD_EXTRA="--gold-rm encoder:tests/fixtures/bert_minilm --no-score-cache"
# which computes every encoder output, as a first run would.
# PROCS (default 1): serve as that many timely processes on loopback (--hostfile), each
# with WORKERS workers; memory is summed over the processes. The from-scratch curate
# runs as one process with PROCS × WORKERS workers (the same cores).
set -euo pipefail
PAIRS=${1:-1000000}
WORKERS=${2:-2}
REPS=${3:-20,10,5}
DIR=${4:-/tmp/synpref-bench}
cd "$(dirname "$0")/.."
[ -n "${SKIP_BUILD:-}" ] || cargo build --release -p synpref --bins --example bench_serve >&2
BIN=${BIN:-target/release/synpref}
DRIVER=target/release/examples/bench_serve
if [ ! -d "$DIR/g$PAIRS" ]; then
    "$BIN" gen --pairs "$PAIRS" --out "$DIR/g$PAIRS" >&2
fi
OUT="$DIR/serve$PAIRS"
rm -rf "$OUT" "$DIR/labels$PAIRS" "$DIR/scratch$PAIRS" "$DIR"/pool*
mkdir -p "$DIR/labels$PAIRS"
cp "$DIR/g$PAIRS/gold.parquet" "$DIR/labels$PAIRS/"
PORT=$((20000 + RANDOM % 20000))
PROCS=${PROCS:-1}
export SYNPREF_TOKEN=bench-token
CLUSTER=()
PIDS=()
if [ "$PROCS" -gt 1 ]; then
    HOSTS="$DIR/hosts$PAIRS"
    : >"$HOSTS"
    for p in $(seq 0 $((PROCS - 1))); do echo "127.0.0.1:$((PORT + 1 + p))" >>"$HOSTS"; done
fi
T0=$(date +%s.%N)
for p in $(seq $((PROCS - 1)) -1 0); do
    [ "$PROCS" -gt 1 ] && CLUSTER=(--hostfile "$HOSTS" --process "$p")
    RUST_LOG=info "$BIN" serve --pairs "$DIR/g$PAIRS/pairs" --labels "$DIR/labels$PAIRS" --out "$OUT" \
        --workers "$WORKERS" --snapshot-every 0 --no-progress --listen "127.0.0.1:$PORT" \
        --pool-dir "$DIR/pool$p" "${CLUSTER[@]}" ${EXTRA:-} 2>"$DIR/serve$PAIRS-p$p.log" &
    PIDS+=($!)
done
SERVE=${PIDS[-1]}
trap 'kill -9 ${PIDS[*]} 2>/dev/null || true' EXIT
rss() { local t=0; for pid in "${PIDS[@]}"; do t=$((t + $(awk "/$1/ {print \$2}" /proc/$pid/status))); done; echo $t; }
# Ready: the first pass done and the gold labels applied (the API answers before).
until curl -s -H "Authorization: Bearer $SYNPREF_TOKEN" "http://127.0.0.1:$PORT/v1/status" 2>/dev/null \
    | grep -q '"state":"ready"'; do sleep 0.5; done
T1=$(date +%s.%N)
STARTUP_S=$(echo "$T1 - $T0" | bc)
RSS_LOADED=$(rss VmRSS)
echo "serve loaded in $STARTUP_S s; processes=$PROCS rss_kb=$RSS_LOADED" >&2
IFS=, read -r R1 R100 R1000 <<<"$REPS"
for spec in "1 $R1" "100 $R100" "1000 $R1000"; do
    set -- $spec
    "$DRIVER" "127.0.0.1:$PORT" "$SYNPREF_TOKEN" "$DIR/g$PAIRS/truth.parquet" "$1" "$2" "$1" \
        > "$DIR/serve$PAIRS-batch$1.json"
done
RSS_AFTER=$(rss VmRSS)
RSS_PEAK=$(rss VmHWM)
DISK_KB=$(du -sk "$DIR"/pool* | awk '{t += $1} END {print t}')
python3 - "$DIR" "$PAIRS" "$RSS_LOADED" "$RSS_AFTER" "$RSS_PEAK" "$DISK_KB" "$STARTUP_S" <<'PY'
import json, sys
d, n, loaded, after, peak, disk = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:7])
startup = float(sys.argv[7])
for b in (1, 100, 1000):
    r = json.load(open(f"{d}/serve{n}-batch{b}.json"))
    u = r["updates"][0]
    print(f"batch={b} batches={u['batches']} latency_median_s={u['latency_s']['median']:.4f} "
          f"p99_s={u['latency_s']['p99']:.4f} max_s={u['latency_s']['max']:.4f} "
          f"client_median_s={u['client_latency_s']['median']:.4f} train_median_s={u['train_s_median']:.4f} "
          f"rescored_median={u['rescored_pairs_median']:.0f} changed_rows_median={u['changed_rows_median']:.0f}")
st = r["status"]
pairs = st["pool_pairs"]
print(f"pool_pairs={pairs} labels_total={st['labels_total']} epoch={st['epoch']} "
      f"state_arrays_bytes_per_pair={st['state_bytes_per_pair']:.1f} "
      f"rss_loaded_kb={loaded} rss_after_kb={after} peak_rss_kb={peak} "
      f"rss_loaded_bytes_per_pair={loaded * 1024 / pairs:.1f} "
      f"rss_after_bytes_per_pair={after * 1024 / pairs:.1f} "
      f"store_on_disk_bytes_per_pair={disk * 1024 / pairs:.1f} startup_s={startup:.1f}")
PY
kill -9 "${PIDS[@]}" 2>/dev/null || true
/usr/bin/time -f "scratch_curate peak_rss_kb=%M wall_s=%e" "$BIN" curate --pairs "$DIR/g$PAIRS/pairs" \
    --gold "$OUT/labels-log" --out "$DIR/scratch$PAIRS" --workers "$((WORKERS * PROCS))" --no-progress ${EXTRA:-} \
    2>&1 >/dev/null | tail -1
if [ -n "${COLD_EXTRA:-}" ]; then
    rm -rf "$DIR/scratch$PAIRS"
    /usr/bin/time -f "scratch_curate_cold peak_rss_kb=%M wall_s=%e" "$BIN" curate --pairs "$DIR/g$PAIRS/pairs" \
        --gold "$OUT/labels-log" --out "$DIR/scratch$PAIRS" --workers "$((WORKERS * PROCS))" --no-progress $COLD_EXTRA \
        2>&1 >/dev/null | tail -1
fi
