#!/usr/bin/env bash
# Benchmark of the candle reward models on the CPU (not a timed test). Each case runs
# twice with a fresh score cache: cold (every pair computed), then warm (every pair from
# the cache). Prints wall time, pairs/s, scored/cached counts and peak memory.
#   scripts/bench-models.sh [PAIRS=2000] [DIR=/tmp/synpref-bench-models]
# Cases:
#   1. `score` with the qwen3_rm_chat fixture (Qwen3 template + BPE tokenizer, 2 layers,
#      hidden 64) on PAIRS generated pairs;
#   2. `curate --best-rm encoder:all-MiniLM-L6-v2 --max-tokens 512` on the 200 real
#      pairs of ../shared/data/sample_200.jsonl (long AlpacaEval and HH-RLHF texts, so
#      the 512-token limit is reached), gold RM builtin.
set -euo pipefail
PAIRS=${1:-2000}
DIR=${2:-/tmp/synpref-bench-models}
cd "$(dirname "$0")/.."
cargo build --release -p synpref >&2
BIN=target/release/synpref
SHARED=../shared
[ -d "$DIR/g$PAIRS" ] || "$BIN" gen --pairs "$PAIRS" --out "$DIR/g$PAIRS" >&2
report() {
    python3 - "$1" "$2" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
u = r["usage"] if "usage" in r else r["best_rm"]["scoring"]
n = r.get("scored_rows", r.get("input_rows"))
print(f"  {sys.argv[2]}: rows={n} elapsed_s={r['elapsed_s']:.2f} pairs_per_s={n / r['elapsed_s']:.1f} scored={u['scored']} cached={u['cached']} truncations={u['truncations']}")
PY
}
echo "qwen3_rm_chat fixture, score, $PAIRS generated pairs"
rm -rf "$DIR/cache1"
for run in cold warm; do
    /usr/bin/time -f "  peak_rss_kb=%M" "$BIN" score --model hf:tests/fixtures/qwen3_rm_chat \
        --pairs "$DIR/g$PAIRS/pairs" --out "$DIR/s1" --score-cache "$DIR/cache1" --no-progress >/dev/null
    report "$DIR/s1/report.json" "$run"
done
echo "all-MiniLM-L6-v2 encoder RM at 512 tokens, curate, sample_200.jsonl"
rm -rf "$DIR/cache2"
for run in cold warm; do
    /usr/bin/time -f "  peak_rss_kb=%M" "$BIN" curate --pairs "$SHARED/data/sample_200.jsonl" \
        --gold "$SHARED/data/hh_rlhf_harmless_gold.parquet" --out "$DIR/c2" \
        --best-rm "encoder:$SHARED/models/all-MiniLM-L6-v2" --max-tokens 512 \
        --score-cache "$DIR/cache2" --workers 2 --no-progress >/dev/null
    report "$DIR/c2/report.json" "$run"
done
