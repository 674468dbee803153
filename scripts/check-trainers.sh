#!/usr/bin/env bash
# Loads curate's output with the real TRL, OpenRLHF and RewardBench loaders (issue 11):
# for pools in the four input forms (strings; message lists everywhere; no prompt with
# whole conversations; a message-list prompt with string replies), `--format
# conversational` output trains 3 steps in TRL's RewardTrainer on the tiny Qwen3 reward
# model of tests/fixtures/qwen3_rm_chat and loads in OpenRLHF's and RewardBench's
# dataset code given only the output directory; so do the presets.
#
#   scripts/check-trainers.sh [WORKDIR]
#
# Two virtual environments (made once under WORKDIR, default target/check-trainers):
# TRL 1.x with OpenRLHF 0.11's dataset code (installed without its GPU dependencies),
# and RewardBench 0.1.4, which pins transformers 4.51. It downloads torch (~3 GB) the
# first time, so CI runs only the datasets loading checks (tests/integration/formats.rs);
# this script is run by hand and its figures are in docs/trainers.md.
set -euo pipefail
cd "$(dirname "$0")/.."
WORK="${1:-target/check-trainers}"
mkdir -p "$WORK"
WORK="$(cd "$WORK" && pwd)"
MODEL="$(pwd)/tests/fixtures/qwen3_rm_chat"
TRAINERS="$WORK/venv-trl"
RB="$WORK/venv-rewardbench"
if [ ! -x "$TRAINERS/bin/python" ] || ! "$TRAINERS/bin/python" -c "import trl, openrlhf.datasets" 2>/dev/null; then
    python3 -m venv "$TRAINERS"
    "$TRAINERS/bin/pip" install -q torch transformers trl datasets accelerate pyarrow pylatexenc
    "$TRAINERS/bin/pip" install -q --no-deps "openrlhf==0.11.0"
fi
if [ ! -x "$RB/bin/python" ] || ! "$RB/bin/python" -c "import rewardbench" 2>/dev/null; then
    python3 -m venv "$RB"
    "$RB/bin/pip" install -q "rewardbench==0.1.4"
fi
cargo build -q -p synpref
SYNPREF="$(pwd)/target/debug/synpref"
"$SYNPREF" gen --pairs 3000 --out "$WORK/data" --seed 11 >/dev/null
POOL="$(ls "$WORK"/data/pairs/*.parquet | head -1)"
"$TRAINERS/bin/python" scripts/check_trainers.py forms "$POOL" "$WORK"
echo "| pool form | --format | curated | datasets | TRL RewardTrainer (3 steps) | OpenRLHF RewardDataset | RewardBench load_and_process_dataset |"
echo "|---|---|---|---|---|---|---|"
run() {
    local form="$1" format="$2" out="$WORK/out-$1-$2"
    "$SYNPREF" curate --pairs "$WORK/$form.jsonl" --gold "$WORK/data/gold.parquet" --out "$out" \
        --format "$format" --no-progress >/dev/null
    local curated
    curated=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['curated_rows'])" "$out/report.json")
    local d t o r
    d=$("$TRAINERS/bin/python" scripts/check_trainers.py datasets "$out" 2>/dev/null | tail -1)
    t=$("$TRAINERS/bin/python" scripts/check_trainers.py trl "$out" "$MODEL" 2>/dev/null | tail -1)
    o=$("$TRAINERS/bin/python" scripts/check_trainers.py openrlhf "$out" "$MODEL" 2>/dev/null | tail -1)
    r=$("$RB/bin/python" scripts/check_trainers.py rewardbench "$out" "$MODEL" 2>/dev/null | tail -1)
    echo "| $form | $format | $curated | $d | $t | $o | $r |"
}
for form in strings messages whole message_prompt system_prompt; do
    run "$form" conversational
done
run strings trl
run whole openrlhf
run system_prompt rewardbench
