#!/usr/bin/env bash
# CPU benchmark of `synpref score` against PyTorch + transformers (sdpa attention, f32,
# 2 threads) on a Qwen3-shaped sequence classifier with random weights (not a timed
# test). The two sides run one after the other, never together.
#   scripts/bench-score-cpu.sh [SHAPE=small] [PAIRS] [DIR=/tmp/synpref-bench-score-cpu/SHAPE-PAIRS]
# SHAPE: small (8 layers, hidden 512; default 96 pairs) or 0.6b (Qwen3-0.6B; default 8
# pairs). Each pair: a 150-250-token prompt, 200-300-token replies (~540 tokens per
# templated sequence). DIR/model and the pairs are made once and kept.
# Environment: PYTHON (a Python with torch, transformers, tokenizers, safetensors and
# pyarrow; default /work/venv-torch/bin/python), SYNPREF (default target/release/synpref;
# not built here), CURATE=1 (also time `synpref curate --best-rm hf:DIR/model`, gold RM
# built-in, on the same pairs), CURATE_WORKERS (default 1), REPEATS (default 1: each
# side's timing is the best of REPEATS runs; single runs on this VM vary by up to ~40%).
# Timed: synpref, the whole process by the wall clock (model load and tokenising
# included); transformers, the forward passes only (one warm-up batch first, model load,
# tokenising and padding outside the clock). Tokens/s on both sides = the real lengths of
# both templated sequences of every pair (DIR/meta.json), so the ratio is like for like.
set -euo pipefail
cd "$(dirname "$0")/.."
SHAPE=${1:-small}
case "$SHAPE" in
    small) DEFAULT_PAIRS=96 ;;
    0.6b) DEFAULT_PAIRS=8 ;;
    *) echo "SHAPE must be small or 0.6b, not $SHAPE" >&2; exit 2 ;;
esac
PAIRS=${2:-$DEFAULT_PAIRS}
DIR=${3:-/tmp/synpref-bench-score-cpu/$SHAPE-$PAIRS}
PY=${PYTHON:-/work/venv-torch/bin/python}
BIN=${SYNPREF:-target/release/synpref}
[ -x "$BIN" ] || { echo "no $BIN: build it first (cargo build --release -p synpref)" >&2; exit 1; }
REPEATS=${REPEATS:-1}
export OMP_NUM_THREADS=2 MKL_NUM_THREADS=2 RAYON_NUM_THREADS=2
mkdir -p "$DIR"
LOG=$DIR/bench.log
# The timings need both cores to themselves. `timed NAME CMD...` runs CMD under
# /usr/bin/time (DIR/NAME_time: wall s, peak RSS KB, user s, sys s) and warns when other
# processes used more than 5% of the two cores meanwhile (system-wide busy CPU time from
# /proc/stat minus CMD's own) in DIR/NAME_check.
busy_ticks() { local c; c=($(head -1 /proc/stat)); echo $((c[1] + c[2] + c[3] + c[6] + c[7])); }
timed() {
    local name=$1 a b; shift
    a=$(busy_ticks)
    /usr/bin/time -f "%e %M %U %S" -o "$DIR/${name}_time" "$@"
    b=$(busy_ticks)
    read -r wall rss user sys < "$DIR/${name}_time"
    python3 - "$name" "$wall" "$user" "$sys" "$((b - a))" "$(getconf CLK_TCK)" "$(nproc)" <<'PY' > "$DIR/${name}_check"
import sys
name, wall, user, sys_s, ticks, hz, cores = sys.argv[1:]
wall, own, total = float(wall), float(user) + float(sys_s), int(ticks) / int(hz)
other = total - own
print(f"{name}: {own:.1f} CPU s over {wall:.1f} s wall ({own / wall:.2f} cores); other processes {other:.1f} CPU s")
if other > 0.05 * wall * int(cores):
    print(f"WARNING: other processes used {other / wall:.2f} cores during {name}: its timing is not clean")
PY
}
[ -f "$DIR/meta.json" ] || "$PY" scripts/bench_score_cpu.py make "$DIR" "$SHAPE" "$PAIRS" 2>&1 | grep -v "Writing model shards" | tee "$LOG"
# A copy, so that a rebuild during the run changes nothing.
echo "== $(date -Is) $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- . 2>/dev/null || echo +dirty) $BIN ($(date -r "$BIN" +%FT%T))" | tee -a "$LOG"
cp "$BIN" "$DIR/synpref.bin"
BIN=$DIR/synpref.bin

echo "== synpref score, best of $REPEATS" | tee -a "$LOG"
WALL=
for r in $(seq 1 "$REPEATS"); do
    rm -rf "$DIR/synpref"
    timed synpref "$BIN" score --model "hf:$DIR/model" \
        --pairs "$DIR/pairs.jsonl" --out "$DIR/synpref" --no-score-cache --no-progress \
        --device cpu --dtype f32 2>&1 | tail -5 | tee -a "$LOG"
    tee -a "$LOG" < "$DIR/synpref_check"
    read -r W RSS _ < "$DIR/synpref_time"
    echo "synpref score run $r: wall $W s, peak RSS $((RSS / 1024)) MB" | tee -a "$LOG"
    WALL=$(python3 -c "print(min(x for x in (${WALL:-$W}, $W)))")
done
echo "$WALL" > "$DIR/synpref_wall_s"

CURATE_S=
if [ -n "${CURATE:-}" ]; then
    echo "== synpref curate --best-rm hf:DIR/model --workers ${CURATE_WORKERS:-1}" | tee -a "$LOG"
    # With a fresh score cache, as a user's run has one: curate scores the gold-labelled
    # pairs to train on, then the pool, and reads the gold pairs' rewards back from the
    # cache instead of computing them twice (--no-score-cache would).
    rm -rf "$DIR/curate" "$DIR/curate-cache"
    timed curate "$BIN" curate --pairs "$DIR/pairs.jsonl" \
        --gold "$DIR/gold.jsonl" --out "$DIR/curate" --best-rm "hf:$DIR/model" \
        --score-cache "$DIR/curate-cache" --no-progress --device cpu --dtype f32 \
        --workers "${CURATE_WORKERS:-1}" 2>&1 | tail -5 | tee -a "$LOG"
    tee -a "$LOG" < "$DIR/curate_check"
    read -r CURATE_S RSS _ < "$DIR/curate_time"
    echo "synpref curate wall ${CURATE_S} s, peak RSS $((RSS / 1024)) MB" | tee -a "$LOG"
fi

echo "== transformers, best of $REPEATS" | tee -a "$LOG"
timed transformers "$PY" scripts/bench_score_cpu.py transformers "$DIR" "$REPEATS" 2>&1 | tee -a "$LOG"
tee -a "$LOG" < "$DIR/transformers_check"
read -r _ RSS _ < "$DIR/transformers_time"
echo "transformers peak RSS $((RSS / 1024)) MB" | tee -a "$LOG"

echo "== comparison" | tee -a "$LOG"
"$PY" scripts/bench_score_cpu.py compare "$DIR" $CURATE_S 2>&1 | tee -a "$LOG"
