#!/usr/bin/env python3
"""Truth agreement of a curate run, recomputed from the files it wrote (not its report).

    python3 scripts/truth_from_files.py OUT TRUTH.parquet     # needs pyarrow

A curated row's label matches the truth when the pool's chosen reply is truly better,
unless the row was written swapped (`human_corrected`). Prints the shares over all
input rows as read, over curated rows as written, and over curated rows the models (not
a human) kept, beside the report's own figures, so the two can be compared.
"""
import glob
import json
import sys

import pyarrow.parquet as pq

out, truth_path = sys.argv[1], sys.argv[2]
t = pq.read_table(truth_path, columns=["pair_id", "preference"]).to_pydict()
chosen_better = dict(zip(t["pair_id"], (p == "chosen" for p in t["preference"])))
counts = {"input": [0, 0], "curated": [0, 0], "model_curated": [0, 0]}
curated_rows = 0
for dest in ["curated", "discarded", "quarantine"]:
    for f in sorted(glob.glob(f"{out}/{dest}/*.parquet")):
        tb = pq.read_table(f, columns=["pair_id", "reason"]).to_pydict()
        for pid, reason in zip(tb["pair_id"], tb["reason"]):
            curated_rows += dest == "curated"
            if pid not in chosen_better:
                continue
            cb = chosen_better[pid]
            counts["input"][0] += 1
            counts["input"][1] += cb
            if dest != "curated":
                continue
            matches = cb != (reason == "human_corrected")
            counts["curated"][0] += 1
            counts["curated"][1] += matches
            if reason in ("both_rms_agree", "gold_rm_and_judge_agree"):
                counts["model_curated"][0] += 1
                counts["model_curated"][1] += matches
report = json.load(open(f"{out}/report.json"))
print(f"curated rows: files {curated_rows}, report {report['curated_rows']}")
for k, (n, hits) in counts.items():
    mine = hits / n if n else None
    print(f"truth_agreement_{k}: files {mine}, report {report.get('truth_agreement_' + k)}")
