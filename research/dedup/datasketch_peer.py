"""The near-duplicate half of issue 28's benchmark, as a Python data engineer writes it:
datasketch MinHash + MinHashLSH over each pair's word 2-shingles (prompt + both replies,
lower-cased words), signatures computed in `--jobs` processes, LSH insert and query in
one, candidates joined into components (union-find), the first row in input order kept.
Same shingles, permutations (60) and bands (20 x 3) as synpref's defaults, over the
whole pair (datasketch has no per-side bands).

    python datasketch_peer.py --pairs g/pairs --out peer.parquet --jobs 2
"""
import argparse, glob, re, time
from multiprocessing import Pool

import pyarrow as pa
import pyarrow.parquet as pq
from datasketch import LeanMinHash, MinHash, MinHashLSH

WORD = re.compile(r"[^\W_]+")
NUM_PERM = 60


def shingles(texts):
    out = set()
    for t in texts:
        w = WORD.findall(t.lower())
        if len(w) <= 2:
            out.add(" ".join(w).encode())
        else:
            out.update(f"{a} {b}".encode() for a, b in zip(w, w[1:]))
    return out


def signatures(rows):
    sets = [shingles(r) for r in rows]
    return [LeanMinHash(m) for m in MinHash.bulk(sets, num_perm=NUM_PERM, seed=1)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--jobs", type=int, default=2)
    a = ap.parse_args()
    t0 = time.time()
    ids, texts = [], []
    for f in sorted(glob.glob(f"{a.pairs}/*.parquet")):
        t = pq.read_table(f, columns=["pair_id", "prompt", "chosen", "rejected"]).to_pydict()
        ids += t["pair_id"]
        texts += list(zip(t["prompt"], t["chosen"], t["rejected"]))
    chunk = 20000
    parts = [texts[i:i + chunk] for i in range(0, len(texts), chunk)]
    with Pool(a.jobs) as pool:
        sigs = [m for part in pool.map(signatures, parts) for m in part]
    t1 = time.time()
    lsh = MinHashLSH(num_perm=NUM_PERM, params=(20, 3))
    parent = list(range(len(ids)))

    def find(x):
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for i, m in enumerate(sigs):
        for j in lsh.query(m):
            ri, rj = find(i), find(j)
            if ri != rj:
                parent[max(ri, rj)] = min(ri, rj)
        lsh.insert(i, m)
    t2 = time.time()
    roots = [find(i) for i in range(len(ids))]
    dup = [roots[i] != i for i in range(len(ids))]
    pq.write_table(
        pa.table({
            "pair_id": ids,
            "reason": ["near_duplicate" if d else "kept" for d in dup],
            "duplicate_of": [ids[r] if d else None for r, d in zip(roots, dup)],
        }),
        a.out,
    )
    print(f"rows {len(ids)} near_duplicates {sum(dup)} read+minhash {t1 - t0:.1f}s lsh {t2 - t1:.1f}s total {time.time() - t0:.1f}s")


if __name__ == "__main__":
    main()
