"""Recall and precision of near-duplicate and conflict detection against gen's truth.parquet
(`injected`, `copy_of`), from the files a run wrote: a synpref curate --out directory, or
one Parquet file with pair_id, reason, duplicate_of (datasketch_peer.py).

    python score.py g/truth.parquet OUT

Near-duplicates: recall = injected near-duplicates discarded as near_duplicate or
duplicate; precision = near_duplicate rows whose duplicate_of is in the same family (the
original that both copy) and is not itself a near_duplicate. Conflicts: an injected
swapped copy is caught when it or its original is conflicting_labels, or it repeats an
earlier copy exactly (duplicate); and never are both it and its original kept by the models.
"""
import glob, os, sys
import pyarrow.parquet as pq

truth_path, out = sys.argv[1], sys.argv[2]
t = pq.read_table(truth_path, columns=["pair_id", "injected", "copy_of"]).to_pydict()
inj = {p: (k, c) for p, k, c in zip(t["pair_id"], t["injected"], t["copy_of"]) if k}
files = [out] if out.endswith(".parquet") else [
    f for d in ("curated", "discarded", "quarantine") for f in glob.glob(f"{out}/{d}/*.parquet")]
rows = {}
for f in files:
    tb = pq.read_table(f)
    cols = [c for c in ("pair_id", "reason", "duplicate_of") if c in tb.column_names]
    d = tb.select(cols).to_pydict()
    dup = d.get("duplicate_of", [None] * len(d["pair_id"]))
    for p, r, o in zip(d["pair_id"], d["reason"], dup):
        rows[p] = (r, o)


def family(p):
    while p in inj:
        p = inj[p][1]
    return p


near = [p for p, (k, _) in inj.items() if k == "near_duplicate"]
caught = sum(rows[p][0] in ("near_duplicate", "duplicate") for p in near)
flagged = [(p, o) for p, (r, o) in rows.items() if r == "near_duplicate"]
right = sum(1 for p, o in flagged if o is not None and family(p) == family(o) and rows[o][0] != "near_duplicate")
print(f"near_duplicate: injected {len(near)}, caught {caught}, recall {caught / max(1, len(near)):.4f}; "
      f"flagged {len(flagged)}, right {right}, precision {right / max(1, len(flagged)):.4f}")
if any(r == "conflicting_labels" for r, _ in rows.values()):
    model = {"both_rms_agree", "gold_rm_and_judge_agree"}
    conf = [(p, c) for p, (k, c) in inj.items() if k == "conflict"]
    ok = sum(rows[p][0] == "conflicting_labels" or rows[c][0] == "conflicting_labels" or rows[p][0] == "duplicate" for p, c in conf)
    both = sum(rows[p][0] in model and rows[c][0] in model for p, c in conf)
    cl = sum(r == "conflicting_labels" for r, _ in rows.values())
    print(f"conflicts: injected {len(conf)}, caught {ok} ({ok / max(1, len(conf)):.4f}); both copies kept by the models: {both}; rows discarded as conflicting_labels {cl}")
