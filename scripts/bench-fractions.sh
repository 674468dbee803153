#!/usr/bin/env bash
# The checked benchmark of issue 14's "done when" (docs/benchmarks.md, docs/experiments.md):
#
#   scripts/bench-fractions.sh [PAIRS] [DIR] [GEN_SEED]
#
# generates PAIRS pairs (default 200000), runs `synpref fractions` with the built-in
# trainer on gen's eval.parquet (curate with gen's judge votes, as the demo does),
# checks that the curated curve lies above the raw one at every fraction >= 0.05
# (mean over 3 seeds; exit 1 if not), then adds one gold label against a pool label
# and reruns, printing how many models were trained and reused. Every figure printed
# is read from the report.json files the runs wrote.
#
# Environment: BIN (a synpref binary; default: build target/release/synpref unless
# SKIP_BUILD=1), JUDGES=0 to curate without judge votes.
set -euo pipefail
PAIRS=${1:-200000}
DIR=${2:-/tmp/bench-fractions}
GEN_SEED=${3:-7}
cd "$(dirname "$0")/.."
if [[ -z "${BIN:-}" ]]; then
  [[ "${SKIP_BUILD:-0}" == 1 ]] || cargo build --release -p synpref >&2
  BIN=target/release/synpref
fi
rm -rf "$DIR"
mkdir -p "$DIR/gold"
"$BIN" gen --pairs "$PAIRS" --seed "$GEN_SEED" --out "$DIR/data" >&2
cp "$DIR/data/gold.parquet" "$DIR/gold/"
JUDGE_ARGS=()
[[ "${JUDGES:-1}" == 1 ]] && JUDGE_ARGS=(--judges "$DIR/data/judge_votes.parquet")
run() {
  /usr/bin/time -f "%e s, peak RSS %M KB" "$BIN" fractions --pairs "$DIR/data/pairs" --gold "$DIR/gold" \
    "${JUDGE_ARGS[@]}" --eval "$DIR/data/eval.parquet" --out "$DIR/out" --no-progress
}
echo "== first run ($PAIRS pairs, gen seed $GEN_SEED, judges ${JUDGES:-1})"
run
python3 - "$DIR/out/report.json" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
bad = [c for c in r["comparisons"] if c["fraction"] >= 0.05 and not c["curated_above_raw"]]
for c in r["comparisons"]:
    print(f'fraction {c["fraction"]:<5} curated {100*c["curated"]:.2f}%  raw {100*c["raw"]:.2f}%  diff {100*c["difference"]:+.2f} pp')
if bad:
    print("FAIL: curated not above raw at fractions", [c["fraction"] for c in bad])
    sys.exit(1)
print("OK: curated above raw at every fraction >= 0.05 (mean over seeds)")
EOF
# One more human verdict, against the pool's label of a pair no human labelled.
python3 - "$DIR" <<'EOF'
import json, sys
import pyarrow.parquet as pq
d = sys.argv[1]
labelled = set(pq.read_table(f"{d}/data/gold.parquet").column("pair_id").to_pylist())
for r in pq.read_table(f"{d}/data/truth.parquet").to_pylist():
    if r["preference"] == "rejected" and r["pair_id"] not in labelled:
        open(f"{d}/gold/more.jsonl", "w").write(json.dumps({"pair_id": r["pair_id"], "verdict": "rejected"}) + "\n")
        break
EOF
echo "== rerun after one more gold label"
run
python3 - "$DIR/out/report.json" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
print(f'models trained {r["models_trained"]}, reused {r["models_reused"]} of {r["tasks"]}; evaluations computed {r["evaluations_computed"]}, reused {r["evaluations_reused"]}')
EOF
