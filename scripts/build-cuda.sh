#!/usr/bin/env bash
# Builds `synpref` with `--features cuda` on a machine without a GPU (docs/gpu.md), for
# copying to a GPU machine with CUDA 13 drivers and libraries.
#   scripts/build-cuda.sh [VENV=/opt/nvcc]   -> target-cuda/release/synpref
#   TESTS=1 scripts/build-cuda.sh             also the integration-test binary (its path
#                                             is printed), for the GPU parity tests,
#                                             and examples/bench_ops (the kernel table)
# nvcc and the CUDA libraries come from PyPI, pinned to 13.0: cudarc 0.19.10 (under
# candle 0.11) rejects newer toolkits such as 13.5. candle makes cudarc link
# dynamically, so the linker needs unversioned library names (symlinks here) and
# libcuda, the driver, which only GPU machines have: a link-time stub defining every
# driver function cudarc declares stands in for it, as the toolkit's own stubs/ do. At
# run time the GPU machine's real libcuda.so.1 is loaded.
#
# candle-flash-attn (the packed CUDA path's attention) clones CUTLASS from GitHub in its
# build script, which this machine cannot reach: PyPI's nvidia-cutlass 3.5.0 carries the
# same headers, placed where the crate's build helper (cudaforge) keeps its checkout,
# under a git HEAD naming the commit the crate asks for, so it finds them and fetches
# nothing. The crate itself builds from a copy trimmed to the bf16 head-size-128 kernels
# (scripts/trim_flash_attn.py: 3 CUDA files instead of 53, ~15 minutes instead of 1-2
# hours here), through a `--config` patch; Cargo.lock is restored afterwards.
set -euo pipefail
VENV=${1:-/opt/nvcc}
cd "$(dirname "$0")/.."
if [ ! -x "$VENV/bin/pip" ]; then python3 -m venv "$VENV"; fi
"$VENV/bin/pip" install -q 'nvidia-cuda-nvcc==13.0.*' 'nvidia-cuda-runtime==13.0.*' \
    'nvidia-cuda-crt==13.0.*' 'nvidia-nvvm==13.0.*' 'nvidia-cuda-cccl==13.0.*' \
    'nvidia-cublas==13.0.*' 'nvidia-curand==10.*' 'nvidia-cuda-nvrtc==13.0.*' \
    'nvidia-cutlass==3.5.0.0'
NV=$("$VENV/bin/python" -c 'import nvidia, os; print(os.path.join(list(nvidia.__path__)[0], "cu13"))')
LINK=$PWD/target-cuda/link
mkdir -p "$LINK"
for l in cublas cublasLt cudart nvrtc; do ln -sf "$NV/lib/lib$l.so.13" "$LINK/lib$l.so"; done
ln -sf "$NV/lib/libcurand.so.10" "$LINK/libcurand.so"
cargo fetch
crate_dir() {
    dirname "$(cargo metadata --format-version 1 --all-features | "$VENV/bin/python" -c \
        'import json,sys; print(next(p["manifest_path"] for p in json.load(sys.stdin)["packages"] if p["name"]==sys.argv[1]))' "$1")"
}
SYS=$(crate_dir cudarc)/src/driver/sys
grep -rhoE "fn cu[A-Z][A-Za-z0-9_]*" "$SYS" | sed 's/fn //' | sort -u \
    | sed 's/.*/int &(void) { return 999; }/' > "$LINK/libcuda_stub.c"
cc -shared -fPIC -o "$LINK/libcuda.so" -Wl,-soname,libcuda.so.1 "$LINK/libcuda_stub.c"
FA_REGISTRY=$(crate_dir candle-flash-attn)
FA=$PWD/target-cuda/candle-flash-attn
if [ ! -f "$FA/.trimmed" ] || [ "$FA/.trimmed" -ot scripts/trim_flash_attn.py ]; then
    rm -rf "$FA"
    cp -r "$FA_REGISTRY" "$FA"
    chmod -R u+w "$FA"
    python3 scripts/trim_flash_attn.py "$FA"
    touch "$FA/.trimmed"
fi
COMMIT=$(grep -oE 'CUTLASS_COMMIT: &str = "[0-9a-f]{40}"' "$FA/build.rs" | grep -oE '[0-9a-f]{40}')
CUTLASS=$("$VENV/bin/python" -c 'import importlib.util as u; print(u.find_spec("cutlass_library").submodule_search_locations[0])')/source
export CUDAFORGE_HOME=$PWD/target-cuda/cudaforge
DEP=$CUDAFORGE_HOME/git/checkouts/cutlass-${COMMIT:0:16}
if [ ! -f "$DEP/include/cutlass/cutlass.h" ]; then
    rm -rf "$DEP"
    mkdir -p "$DEP/tools/util"
    cp -r "$CUTLASS/include" "$DEP/include"
    cp -r "$CUTLASS/tools/util/include" "$DEP/tools/util/include"
    git -C "$DEP" init -q
    echo "$COMMIT" > "$DEP/.git/HEAD"
fi
mkdir -p target-cuda/flash-attn-build
export CANDLE_FLASH_ATTN_BUILD_DIR=$PWD/target-cuda/flash-attn-build
cp Cargo.lock target-cuda/Cargo.lock.saved
trap 'cp target-cuda/Cargo.lock.saved Cargo.lock' EXIT
PATCH=(--config "patch.crates-io.candle-flash-attn.path=\"$FA\"")
export PATH=$NV/bin:$PATH CUDA_ROOT=$NV CUDA_PATH=$NV CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}
RUSTFLAGS="-L $LINK" cargo build "${PATCH[@]}" --release -p synpref --features cuda --target-dir target-cuda
if [ "${TESTS:-0}" = 1 ]; then
    RUSTFLAGS="-L $LINK" cargo test "${PATCH[@]}" --release -p synpref --features cuda --target-dir target-cuda \
        --test integration --no-run 2>&1 | tee /dev/stderr | grep -o 'target-cuda/release/deps/integration-[0-9a-f]*' \
        | tail -1 > target-cuda/integration-test-path
    echo "built $(cat target-cuda/integration-test-path)"
    # The GPU kernel table of scripts/gpu-check.sh.
    RUSTFLAGS="-L $LINK" cargo build "${PATCH[@]}" --release -p synpref-operators --features cuda \
        --target-dir target-cuda --example bench_ops
    echo "built target-cuda/release/examples/bench_ops"
fi
echo "built target-cuda/release/synpref (needs libcuda.so.1, libcublas.so.13, libcurand.so.10 at run time)"
