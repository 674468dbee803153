#!/usr/bin/env bash
# Peak memory of curate at two pool sizes, for the growth per pair (docs/benchmarks.md,
# "Memory that scales"). Usage:
#   scripts/bench-memory.sh BINARY SMALL_PAIRS_DIR LARGE_PAIRS_DIR GOLD OUT_DIR [curate flags...]
# Both runs use the same gold file, so only pool-size state grows. Each run's output is
# removed after its report and log are kept (a 40M-pair output is ~10 GB).
set -euo pipefail
bin=$1 small=$2 large=$3 gold=$4 out=$5
shift 5
mkdir -p "$out"
for size in small large; do
  pairs=${!size}
  rm -rf "$out/$size"
  RUST_LOG=info /usr/bin/time -f "wall_s=%e peak_rss_kb=%M" \
    "$bin" curate --pairs "$pairs" --gold "$gold" --out "$out/$size" --workers 2 --no-progress "$@" \
    > "$out/$size.log" 2>&1
  cp "$out/$size/report.json" "$out/$size.report.json"
  rm -rf "$out/$size"
  rows=$(python3 -c "import json;print(json.load(open('$out/$size.report.json'))['input_rows'])")
  echo "$size rows=$rows $(tail -1 "$out/$size.log")" | tee -a "$out/summary.txt"
done
python3 - "$out/summary.txt" <<'PY'
import re, sys
lines = open(sys.argv[1]).read().split("\n")[-3:-1]
(r1, k1), (r2, k2) = [(int(re.search(r"rows=(\d+)", l)[1]), int(re.search(r"peak_rss_kb=(\d+)", l)[1])) for l in lines]
print(f"growth: {(k2 - k1) * 1024 / (r2 - r1):.1f} bytes per pair ({k1/2**20:.2f} -> {k2/2**20:.2f} GiB)")
PY
