#!/usr/bin/env bash
# Benchmark of `synpref curate` (not a timed test): generates N pairs once, then runs
# curate and prints wall time, pairs/s, per-stage seconds and peak memory.
#   scripts/bench-curate.sh [PAIRS=1000000] [WORKERS=2] [DIR=/tmp/synpref-bench]
set -euo pipefail
PAIRS=${1:-1000000}
WORKERS=${2:-2}
DIR=${3:-/tmp/synpref-bench}
cd "$(dirname "$0")/.."
cargo build --release -p synpref >&2
BIN=target/release/synpref
if [ ! -d "$DIR/g$PAIRS" ]; then
    "$BIN" gen --pairs "$PAIRS" --out "$DIR/g$PAIRS" >&2
fi
/usr/bin/time -f "peak_rss_kb=%M wall_s=%e" "$BIN" curate --pairs "$DIR/g$PAIRS/pairs" \
    --gold "$DIR/g$PAIRS/gold.parquet" --out "$DIR/o$PAIRS" --workers "$WORKERS" --no-progress 2>&1 >/dev/null | tail -1
python3 - "$DIR/o$PAIRS/report.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print(f"input_rows={r['input_rows']} workers={r['workers']} elapsed_s={r['elapsed_s']:.2f} pairs_per_s={r['pairs_per_s']:.0f}")
print("stages_s=" + ", ".join(f"{k}={v:.2f}" for k, v in r["stages_s"].items()))
PY
