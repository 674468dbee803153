#!/usr/bin/env python3
"""CPU scoring benchmark, the Python half of scripts/bench-score-cpu.sh: `synpref score`
against PyTorch + transformers (sdpa attention, f32, 2 threads) on the same pairs.

  bench_score_cpu.py make DIR SHAPE PAIRS   a Qwen3-shaped sequence classifier with random
                                            weights (f32) in DIR/model, DIR/pairs.jsonl with
                                            PAIRS pairs (a 150-250-token prompt, 200-300-token
                                            replies: ~540 tokens per templated sequence),
                                            DIR/gold.jsonl (verdicts for curate) and
                                            DIR/meta.json (the token count)
  bench_score_cpu.py transformers DIR [N]   the pairs through transformers: forward passes
                                            timed (best of N passes over all pairs);
                                            DIR/transformers.json and
                                            DIR/transformers_rewards.json
  bench_score_cpu.py compare DIR [CURATE_S] synpref's run (DIR/synpref/, DIR/synpref_wall_s)
                                            against transformers': tokens/s, pairs/s, the
                                            ratio, reward agreement; DIR/summary.json

SHAPE is `small` (8 layers, hidden 512, MLP 1536, 8 query and 4 key-value heads of 64) or
`0.6b` (Qwen3-0.6B's config.json, as scripts/gpu_bench.py). Both keep Qwen3's 151,936-token
vocabulary; the tokenizer is the qwen3_rm_chat test fixture's (512-token BPE with the
Qwen3 chat template), so token ids stay inside the vocabulary, and the compute per
token does not depend on the vocabulary.

Tokens, on both sides, are the real (unpadded) lengths of both templated sequences of
every pair, as tok.apply_chat_template gives them.
"""
import glob
import json
import os
import random
import shutil
import sys
import time

FIXTURE = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "qwen3_rm_chat")
TOKEN_BUDGET = 16384  # padded tokens per batch, synpref's CPU default
THREADS = 2

COMMON = dict(
    vocab_size=151936, max_position_embeddings=40960, rms_norm_eps=1e-6,
    rope_theta=1000000.0, tie_word_embeddings=True, num_labels=1, pad_token_id=0,
    eos_token_id=2,
)
SHAPES = {
    "small": dict(hidden_size=512, intermediate_size=1536, num_hidden_layers=8,
                  num_attention_heads=8, num_key_value_heads=4, head_dim=64, **COMMON),
    "0.6b": dict(hidden_size=1024, intermediate_size=3072, num_hidden_layers=28,
                 num_attention_heads=16, num_key_value_heads=8, head_dim=128, **COMMON),
}

WORDS = ("the model answer question data reward human label pair chosen rejected "
         "because which however therefore example training value function result "
         "system user assistant explain write code python rust table number first "
         "second third quickly carefully simple complex better worse prefer").split()


def templated(tok, rows):
    """Token ids of each pair's two templated conversations: [chosen, rejected, ...]."""
    seqs = []
    for r in rows:
        for side in ("chosen", "rejected"):
            msgs = [{"role": "user", "content": r["prompt"]},
                    {"role": "assistant", "content": r[side]}]
            ids = tok.apply_chat_template(msgs, tokenize=True)
            if isinstance(ids, dict) or hasattr(ids, "input_ids"):
                ids = ids["input_ids"]
            seqs.append(list(ids))
    return seqs


def read_rows(out):
    return [json.loads(l) for l in open(os.path.join(out, "pairs.jsonl"))]


def make(out, shape, pairs):
    import torch
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer, Qwen3Config, Qwen3ForSequenceClassification
    model_dir = os.path.join(out, "model")
    os.makedirs(model_dir, exist_ok=True)
    torch.manual_seed(0)
    config = Qwen3Config(**SHAPES[shape])
    model = Qwen3ForSequenceClassification(config).to(torch.float32)
    model.save_pretrained(model_dir, safe_serialization=True)
    shutil.copy(os.path.join(FIXTURE, "tokenizer.json"), model_dir)
    tok_config = json.load(open(os.path.join(FIXTURE, "tokenizer_config.json")))
    tok_config["model_max_length"] = 40960
    json.dump(tok_config, open(os.path.join(model_dir, "tokenizer_config.json"), "w"))
    tokenizer = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
    rng = random.Random(0)

    def text(tokens):
        words = []
        while True:
            words.extend(rng.choice(WORDS) for _ in range(8))
            s = " ".join(words)
            if len(tokenizer.encode(s).ids) >= tokens:
                return s

    rows = []
    with open(os.path.join(out, "pairs.jsonl"), "w") as f:
        for i in range(pairs):
            row = dict(pair_id=f"cpu-bench-{i}", prompt=text(rng.randint(150, 250)),
                       chosen=text(rng.randint(200, 300)), rejected=text(rng.randint(200, 300)))
            rows.append(row)
            f.write(json.dumps(row) + "\n")
    # Gold verdicts for `synpref curate` (its built-in gold RM): every other pair.
    with open(os.path.join(out, "gold.jsonl"), "w") as f:
        for i, r in enumerate(rows[::2]):
            f.write(json.dumps(dict(pair_id=r["pair_id"], verdict=rng.choice(["chosen", "rejected"]))) + "\n")
    lengths = [len(s) for s in templated(AutoTokenizer.from_pretrained(model_dir), rows)]
    n = sum(p.numel() for name, p in model.named_parameters() if "embed_tokens" not in name)
    meta = dict(shape=shape, pairs=pairs, tokens=sum(lengths), sequences=len(lengths),
                min_len=min(lengths), max_len=max(lengths), non_embedding_params=n)
    json.dump(meta, open(os.path.join(out, "meta.json"), "w"), indent=1)
    print(f"made {model_dir} ({shape}): {n / 1e6:.1f}M non-embedding parameters; {pairs} pairs, "
          f"{meta['tokens']:,} tokens in {len(lengths)} templated sequences "
          f"({meta['tokens'] / len(lengths):.0f} mean, {meta['min_len']}-{meta['max_len']})")


def bench_transformers(out, repeats=1):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging
    hf_logging.disable_progress_bar()
    torch.set_num_threads(THREADS)
    model_dir = os.path.join(out, "model")
    tok = AutoTokenizer.from_pretrained(model_dir)
    rows = read_rows(out)
    seqs = templated(tok, rows)
    lengths = [len(s) for s in seqs]
    meta = json.load(open(os.path.join(out, "meta.json")))
    assert sum(lengths) == meta["tokens"], (sum(lengths), meta["tokens"])
    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            model_dir, dtype=torch.float32, attn_implementation="sdpa")
    except TypeError:
        model = AutoModelForSequenceClassification.from_pretrained(
            model_dir, torch_dtype=torch.float32, attn_implementation="sdpa")
    model = model.eval()
    model.config.pad_token_id = 0
    order = sorted(range(len(seqs)), key=lambda i: lengths[i])
    batches, cur = [], []
    for i in order:  # ascending lengths: the padded size of a batch is len(batch) * its last length
        if cur and (len(cur) + 1) * lengths[i] > TOKEN_BUDGET:
            batches.append(cur)
            cur = []
        cur.append(i)
    batches.append(cur)
    padded = sum(len(b) * max(lengths[i] for i in b) for b in batches)
    tensors = []
    for b in batches:  # built before the clock starts: only the forward passes are timed
        width = max(lengths[i] for i in b)
        ids = torch.zeros((len(b), width), dtype=torch.long)
        mask = torch.zeros((len(b), width), dtype=torch.long)
        for j, i in enumerate(b):
            ids[j, :lengths[i]] = torch.tensor(seqs[i])
            mask[j, :lengths[i]] = 1
        tensors.append((ids, mask))
    rewards = [0.0] * len(seqs)
    with torch.inference_mode():
        model(input_ids=tensors[-1][0], attention_mask=tensors[-1][1])  # warm-up batch
        runs = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            for b, (ids, mask) in zip(batches, tensors):
                logits = model(input_ids=ids, attention_mask=mask).logits
                for j, i in enumerate(b):
                    rewards[i] = float(logits[j, 0])
            runs.append(time.perf_counter() - t0)
    s = min(runs)
    tokens = sum(lengths)
    result = dict(seconds=s, runs_s=runs, tokens=tokens, padded_tokens=padded, batches=len(batches),
                  pairs=len(rows), tokens_per_s=tokens / s, pairs_per_s=len(rows) / s,
                  threads=torch.get_num_threads(), torch=torch.__version__)
    json.dump(result, open(os.path.join(out, "transformers.json"), "w"), indent=1)
    json.dump({r["pair_id"]: dict(r_chosen=rewards[2 * k], r_rejected=rewards[2 * k + 1])
               for k, r in enumerate(rows)},
              open(os.path.join(out, "transformers_rewards.json"), "w"))
    print(f"transformers sdpa f32, {torch.get_num_threads()} threads, token budget {TOKEN_BUDGET} "
          f"({len(batches)} batches, {padded:,} padded tokens): forward passes {s:.2f} s "
          f"(best of {' '.join(f'{x:.2f}' for x in runs)}), "
          f"{tokens / s:,.0f} tokens/s, {len(rows) / s:,.2f} pairs/s")


def compare(out, curate_s=None):
    import pyarrow.parquet as pq
    meta = json.load(open(os.path.join(out, "meta.json")))
    tf = json.load(open(os.path.join(out, "transformers.json")))
    ref = json.load(open(os.path.join(out, "transformers_rewards.json")))
    report = json.load(open(os.path.join(out, "synpref", "report.json")))
    wall = float(open(os.path.join(out, "synpref_wall_s")).read())
    table = pq.read_table(sorted(glob.glob(os.path.join(out, "synpref", "part-*.parquet"))))
    got = {p: (c, r) for p, c, r in zip(table.column("pair_id").to_pylist(),
                                        table.column("r_chosen").to_pylist(),
                                        table.column("r_rejected").to_pylist())}
    assert len(got) == len(ref), f"synpref scored {len(got)} pairs, transformers {len(ref)}"
    dc = [abs(got[p][0] - v["r_chosen"]) for p, v in ref.items()]
    dr = [abs(got[p][1] - v["r_rejected"]) for p, v in ref.items()]
    spread = max(abs(v[k]) for v in ref.values() for k in ("r_chosen", "r_rejected"))
    tokens, pairs = meta["tokens"], meta["pairs"]
    compute = report["usage"].get("compute", {})
    fwd = compute.get("forward_s") or None
    summary = dict(
        shape=meta["shape"], pairs=pairs, tokens=tokens,
        transformers_s=tf["seconds"], transformers_tokens_per_s=tf["tokens_per_s"],
        synpref_wall_s=wall, synpref_tokens_per_s=tokens / wall,
        synpref_report_elapsed_s=report["elapsed_s"], synpref_forward_s=fwd,
        synpref_vs_transformers=(tokens / wall) / tf["tokens_per_s"],
        synpref_forward_vs_transformers=(tf["seconds"] / fwd) if fwd else None,
        synpref_sequence_tokens=compute.get("sequence_tokens"),
        synpref_computed_tokens=compute.get("computed_tokens"),
        synpref_batches=compute.get("batches"),
        r_chosen_max_abs_diff=max(dc), r_rejected_max_abs_diff=max(dr),
        reward_max_abs=spread,
    )
    print(f"pairs {pairs}, tokens {tokens:,} ({meta['shape']} shape)")
    print(f"transformers (forward passes only): {tf['seconds']:.2f} s, "
          f"{tf['tokens_per_s']:,.0f} tokens/s, {tf['pairs_per_s']:.2f} pairs/s")
    print(f"synpref score (process wall time, model load included): {wall:.2f} s, "
          f"{tokens / wall:,.0f} tokens/s, {pairs / wall:.2f} pairs/s"
          + (f"; forward passes {fwd:.2f} s ({tokens / fwd:,.0f} tokens/s)" if fwd else ""))
    if compute:
        print(f"synpref computed {compute.get('computed_tokens', 0):,} tokens for "
              f"{compute.get('sequence_tokens', 0):,} sequence tokens in {compute.get('batches')} batches "
              f"(tokenize {compute.get('tokenize_s', 0):.2f} s, pack {compute.get('pack_s', 0):.2f} s, "
              f"wait {compute.get('wait_s', 0):.2f} s)")
    if compute.get("sequence_tokens") not in (None, tokens):
        print(f"NOTE: synpref counts {compute['sequence_tokens']:,} sequence tokens, transformers {tokens:,}")
    print(f"synpref tokens/s / transformers tokens/s: {summary['synpref_vs_transformers']:.2f}x (wall)"
          + (f", {summary['synpref_forward_vs_transformers']:.2f}x (forward passes only)" if fwd else ""))
    print(f"rewards, synpref vs transformers over {len(dc)} pairs: max |diff| r_chosen {max(dc):.3g}, "
          f"r_rejected {max(dr):.3g} (largest |reward| {spread:.3g})")
    if curate_s:
        c = float(curate_s)
        summary.update(curate_wall_s=c, curate_tokens_per_s=tokens / c)
        print(f"synpref curate --best-rm hf: (process wall time): {c:.2f} s, {tokens / c:,.0f} tokens/s")
    json.dump(summary, open(os.path.join(out, "summary.json"), "w"), indent=1)


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "make":
        make(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    elif cmd == "transformers":
        bench_transformers(sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 1)
    elif cmd == "compare":
        compare(sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else None)
    else:
        sys.exit(__doc__)
