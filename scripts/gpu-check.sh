#!/usr/bin/env bash
# The standing GPU check of docs/gpu.md, run ON the GPU machine from the repository root
# with the binaries of `TESTS=1 scripts/build-cuda.sh` carried in .gpu/ (stripped and
# gzipped by `scripts/gpu-check.sh pack` on the build machine, to fit the transfer):
#   1. the decoder parity tests (qwen3_rm, llama_rm) on the GPU, f32 and bf16, and the
#      packed flash path's (against transformers' rewards and the eager path, shared and
#      unshared; rewards independent of the token budget);
#   2. on a Qwen3-0.6B-shaped model (random weights, bf16) over PAIRS pairs of ~1,000
#      tokens per side: the kernel table of the flash path (examples/bench_ops --cuda),
#      `synpref score` by the packed flash path (the default) and by the eager path
#      (`--attention eager`, the old one, on the first EAGER_PAIRS pairs), then the same
#      pairs through transformers on the same GPU (sdpa; eager on the first 256):
#      tokens/s, pairs/s, MFU, the ratios, and the rewards against sdpa's;
#   3. (issue 26) the same 64 warm-up pairs scored at two token budgets: rewards must be
#      bit-identical (the score cache relies on it); a run at a 131,072-token budget
#      (the 32-bit-index crash of docs/gpu.md) must finish; `curate --best-rm hf:` on
#      the warm-up pairs beside `score` on them (wall times), and the per-stage timers
#      of report.json (`scoring`).
#   scripts/gpu-check.sh pack          (build machine) -> .gpu/{synpref,integration,bench_ops}.gz
#   scripts/gpu-check.sh run [PAIRS]   (GPU machine; writes logs to $OUT or /tmp/gpu-check)
set -uo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-run}" = pack ]; then
    set -e
    mkdir -p .gpu
    objcopy --strip-debug target-cuda/release/synpref /tmp/synpref-cuda
    objcopy --strip-debug "$(cat target-cuda/integration-test-path)" /tmp/integration-cuda
    objcopy --strip-debug target-cuda/release/examples/bench_ops /tmp/bench_ops-cuda
    for b in synpref integration bench_ops; do gzip -6 -c /tmp/$b-cuda > .gpu/$b.gz; done
    pwd > .gpu/build-root
    ls -l .gpu
    exit 0
fi
PAIRS=${2:-1024}
EAGER_PAIRS=${EAGER_PAIRS:-256}
LOG=${OUT:-/tmp/gpu-check}
mkdir -p "$LOG" /tmp/gpu
W=/tmp/gpu
for b in synpref integration bench_ops; do
    gzip -dc .gpu/$b.gz > $W/$b && chmod +x $W/$b
done
# The CUDA 13 libraries the binary links (cuBLAS, cuRAND, ...) come with PyTorch's wheels.
LIBS=$(python3 - <<'PY'
import glob, os, site
dirs = set()
for base in site.getsitepackages():
    for pat in ("libcublas.so.13*", "libcublasLt.so.13*", "libcurand.so.10*", "libnvrtc.so.13*", "libcudart.so.13*"):
        for f in glob.glob(os.path.join(base, "nvidia", "**", pat), recursive=True):
            dirs.add(os.path.dirname(f))
print(":".join(sorted(dirs)))
PY
)
export LD_LIBRARY_PATH=$LIBS:${LD_LIBRARY_PATH:-}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee $LOG/gpu.txt
ldd $W/synpref | grep -E "cuda|cublas|curand|not found" | tee -a $LOG/gpu.txt

# The test binary finds tests/fixtures under the build machine's checkout path.
ROOT=$(cat .gpu/build-root)
if [ ! -e "$ROOT/tests" ]; then mkdir -p "$ROOT/cluster" && ln -sfn "$PWD/tests" "$ROOT/tests"; fi
# ... and runs the synpref binary from where the build put it.
[ -e "$ROOT/target-cuda/release/synpref" ] || { mkdir -p "$ROOT/target-cuda/release" && cp $W/synpref "$ROOT/target-cuda/release/"; }
export RUST_BACKTRACE=0
echo "== 1. decoder parity on the GPU" | tee $LOG/parity.log
[ -n "${SKIP_PARITY:-}" ] || SYNPREF_TEST_DEVICE=cuda timeout 150 $W/integration parity_qwen3 parity_llama packed_ --test-threads 1 2>&1 | tee -a $LOG/parity.log

echo "== 2. scoring benchmark, $PAIRS pairs" | tee $LOG/bench.log
timeout 100 python3 scripts/gpu_bench.py make $W/bench $PAIRS 2>&1 | tee -a $LOG/bench.log
head -n 64 $W/bench/pairs.jsonl > $W/bench/warm.jsonl
# A first, small run compiles candle's PTX for this GPU (the driver caches it).
timeout 120 $W/synpref score --model hf:$W/bench/model --pairs $W/bench/warm.jsonl --out $W/bench/warm \
    --token-budget ${SYNPREF_BUDGET:-32768} --max-tokens 4096 --device cuda --dtype bf16 --no-score-cache --no-progress \
    2>&1 | tail -12 | tee -a $LOG/bench.log
# WARM_ONLY=1: stop after the small run (a quick check of a fix within a short lease).
[ -z "${WARM_ONLY:-}" ] || exit 0
echo "-- kernel table of the packed flash path (16 pairs, 450-token prompts, 500-token replies)" | tee -a $LOG/bench.log
timeout 90 $W/bench_ops --cuda $W/bench/model 16 450 500 3 2>&1 | tee -a $LOG/bench.log
head -n $EAGER_PAIRS $W/bench/pairs.jsonl > $W/bench/eager-pairs.jsonl
# Each whole process timed (model load included) into DIR/wall_s for gpu_bench.py.
for run in synpref:auto:pairs synpref-eager:eager:eager-pairs; do
    IFS=: read -r dir attention input <<< "$run"
    T0=$(date +%s.%N)
    timeout 200 $W/synpref score --model hf:$W/bench/model --pairs $W/bench/$input.jsonl --out $W/bench/$dir \
        --attention $attention --token-budget ${SYNPREF_BUDGET:-32768} --max-tokens 4096 --device cuda --dtype bf16 \
        --no-score-cache --no-progress 2>&1 | tail -12 | tee -a $LOG/bench.log
    rc=${PIPESTATUS[0]}
    mkdir -p $W/bench/$dir && python3 -c "print($(date +%s.%N) - $T0)" > $W/bench/$dir/wall_s
    echo "synpref score --attention $attention ($input): exit $rc, $(cat $W/bench/$dir/wall_s) s wall" | tee -a $LOG/bench.log
    cp $W/bench/$dir/report.json $LOG/$dir-report.json 2>/dev/null
done
GPU_BENCH_EAGER_PAIRS=$EAGER_PAIRS timeout 200 python3 scripts/gpu_bench.py transformers $W/bench 2>&1 | tee -a $LOG/bench.log
cp $W/bench/summary.json $LOG/ 2>/dev/null

echo "== 3. batch-size independence, a 131,072-token budget, curate beside score" | tee $LOG/issue26.log
for budget in 4096 65536; do
    timeout 60 $W/synpref score --model hf:$W/bench/model --pairs $W/bench/warm.jsonl --out $W/bench/budget-$budget \
        --token-budget $budget --max-tokens 4096 --device cuda --dtype bf16 --no-score-cache --no-progress \
        2>&1 | tail -3 | tee -a $LOG/issue26.log
done
python3 - $W/bench <<'PY' 2>&1 | tee -a $LOG/issue26.log
import glob, sys
import pyarrow.parquet as pq
def rewards(d):
    t = pq.read_table(sorted(glob.glob(f"{d}/part-*.parquet")))
    return dict(zip(t.column("pair_id").to_pylist(),
                    zip(t.column("r_chosen").to_pylist(), t.column("r_rejected").to_pylist())))
a, b = rewards(f"{sys.argv[1]}/budget-4096"), rewards(f"{sys.argv[1]}/budget-65536")
same = sum(a[k] == b[k] for k in a)
print(f"rewards bit-identical across token budgets 4096 and 65536: {same} of {len(a)} pairs")
PY
T0=$(date +%s.%N)
timeout 150 $W/synpref score --model hf:$W/bench/model --pairs $W/bench/pairs.jsonl --out $W/bench/big-budget \
    --token-budget 131072 --max-tokens 4096 --device cuda --dtype bf16 --no-score-cache --no-progress \
    2>&1 | tail -3 | tee -a $LOG/issue26.log
echo "token budget 131072: exit ${PIPESTATUS[0]}, $(python3 -c "print(round($(date +%s.%N) - $T0, 2))") s" | tee -a $LOG/issue26.log
cp $W/bench/big-budget/report.json $LOG/big-budget-report.json 2>/dev/null
python3 - $W/bench <<'PY' > $W/bench/warm-gold.jsonl
import json, sys
for i, line in enumerate(open(f"{sys.argv[1]}/warm.jsonl")):
    if i % 2 == 0:
        print(json.dumps({"pair_id": json.loads(line)["pair_id"], "verdict": "chosen"}))
PY
for job in score curate; do
    T0=$(date +%s.%N)
    if [ $job = score ]; then
        timeout 60 $W/synpref score --model hf:$W/bench/model --pairs $W/bench/warm.jsonl --out $W/bench/warm-score \
            --device cuda --dtype bf16 --score-cache $W/bench/cache-score --no-progress 2>&1 | tail -2
    else
        timeout 90 $W/synpref curate --pairs $W/bench/warm.jsonl --gold $W/bench/warm-gold.jsonl --out $W/bench/warm-curate \
            --best-rm hf:$W/bench/model --device cuda --dtype bf16 --score-cache $W/bench/cache-curate --no-progress 2>&1 | tail -2
    fi
    echo "$job on the 64 warm-up pairs: exit $?, $(python3 -c "print(round($(date +%s.%N) - $T0, 2))") s wall" | tee -a $LOG/issue26.log
done
true
