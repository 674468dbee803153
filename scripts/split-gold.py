#!/usr/bin/env python3
"""Splits a gold-label file into a part for training and a held-out evaluation set.

    scripts/split-gold.py GOLD.parquet HELDOUT_SHARE TRAIN_OUT.parquet EVAL_OUT.parquet

A row goes to the held-out set when the (salted) SHA-256 of its prompt, read as a number in
[0, 1), is below HELDOUT_SHARE: rows with one conversation never straddle the two
parts (as ../shared/data split HH-RLHF into gold and hold-out). Both parts keep every
column, so the held-out part is a RewardBench explicit-layout set (`prompt`, `chosen`,
`rejected`, `subset`) that `synpref eval` and `synpref fractions --eval` read.
Used by the shared-data experiment of docs/experiments.md.
"""
import hashlib
import sys

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

# Salted: ../shared/data chose its HH gold rows as the prompts with the smallest
# unsalted SHA-256, so an unsalted split of that file would not be the share asked.
SALT = b"synpref-heldout:"
gold, share, train_out, eval_out = sys.argv[1], float(sys.argv[2]), sys.argv[3], sys.argv[4]
table = pq.read_table(gold)
held = [
    int.from_bytes(hashlib.sha256(SALT + p.encode()).digest()[:8], "big") / 2**64 < share
    for p in table.column("prompt").to_pylist()
]
mask = pa.array(held)
pq.write_table(table.filter(pc.invert(mask)), train_out)
pq.write_table(table.filter(mask), eval_out)
print(f"{gold}: {len(held) - sum(held)} rows to {train_out}, {sum(held)} held out to {eval_out}")
