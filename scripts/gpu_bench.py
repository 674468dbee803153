#!/usr/bin/env python3
"""GPU scoring benchmark of docs/gpu.md, the Python half (runs on the GPU machine).

  gpu_bench.py make DIR PAIRS      a Qwen3-0.6B-shaped sequence classifier with random
                                   weights (bf16) in DIR/model, and DIR/pairs.jsonl with
                                   PAIRS pairs of about 1,000 tokens per side
  gpu_bench.py transformers DIR    the same pairs through transformers on the same GPU
                                   (sdpa; eager on the first GPU_BENCH_EAGER_PAIRS=256):
                                   tokens/s, pairs/s and MFU, and the rewards of synpref's
                                   outputs in DIR/synpref/ (packed flash path) and
                                   DIR/synpref-eager/ (eager path) against sdpa's

The shape is Qwen3-0.6B's config.json (hidden 1024, 28 layers, 16 query and 8 key-value
heads of 128, MLP 3072, vocabulary 151,936, tied embeddings). The tokenizer is the
qwen3_rm_chat test fixture's (512-token BPE with the Qwen3 chat template): token ids stay
inside the large vocabulary, and the compute per token does not depend on the vocabulary.
"""
import glob
import json
import math
import os
import random
import shutil
import sys
import time

# NVIDIA H200 SXM dense bf16 peak (H100/H200 datasheets: 989 TFLOP/s without sparsity).
PEAK_BF16_FLOPS = 989.4e12
FIXTURE = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "qwen3_rm_chat")

QWEN3_0_6B = dict(
    hidden_size=1024, intermediate_size=3072, num_hidden_layers=28,
    num_attention_heads=16, num_key_value_heads=8, head_dim=128, vocab_size=151936,
    max_position_embeddings=40960, rms_norm_eps=1e-6, rope_theta=1000000.0,
    tie_word_embeddings=True, num_labels=1, pad_token_id=0, eos_token_id=2,
)

WORDS = ("the model answer question data reward human label pair chosen rejected "
         "because which however therefore example training value function result "
         "system user assistant explain write code python rust table number first "
         "second third quickly carefully simple complex better worse prefer").split()


def make(out, pairs):
    import torch
    from tokenizers import Tokenizer
    from transformers import Qwen3Config, Qwen3ForSequenceClassification
    model_dir = os.path.join(out, "model")
    os.makedirs(model_dir, exist_ok=True)
    torch.manual_seed(0)
    config = Qwen3Config(**QWEN3_0_6B)
    model = Qwen3ForSequenceClassification(config).to(torch.bfloat16)
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
            words.extend(rng.choice(WORDS) for _ in range(32))
            s = " ".join(words)
            if len(tokenizer.encode(s).ids) >= tokens:
                return s

    with open(os.path.join(out, "pairs.jsonl"), "w") as f:
        for i in range(pairs):
            prompt = text(rng.randint(350, 550))
            row = dict(pair_id=f"gpu-bench-{i}", prompt=prompt,
                       chosen=text(rng.randint(400, 600)), rejected=text(rng.randint(400, 600)))
            f.write(json.dumps(row) + "\n")
    n = sum(p.numel() for name, p in model.named_parameters() if "embed_tokens" not in name)
    print(f"made {model_dir}: {n / 1e6:.1f}M non-embedding parameters; {pairs} pairs")


def flops(lengths, params, layers, attn_width):
    """Useful forward FLOPs: 2·N per token for the weights, plus 4·T·width per token per
    layer for QKᵀ and AV (Kaplan et al. 2020, eq. 2.2, forward only, unpadded)."""
    return sum(2 * params * t + 4 * layers * t * t * attn_width for t in lengths)


def bench_transformers(out):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    model_dir = os.path.join(out, "model")
    tok = AutoTokenizer.from_pretrained(model_dir)
    rows = [json.loads(l) for l in open(os.path.join(out, "pairs.jsonl"))]
    seqs = []
    for r in rows:
        for side in ("chosen", "rejected"):
            msgs = [{"role": "user", "content": r["prompt"]},
                    {"role": "assistant", "content": r[side]}]
            ids = tok.apply_chat_template(msgs, tokenize=True)
            if isinstance(ids, dict) or hasattr(ids, "input_ids"):
                ids = ids["input_ids"]
            seqs.append(list(ids))
    def load(attn):
        try:
            m = AutoModelForSequenceClassification.from_pretrained(
                model_dir, dtype=torch.bfloat16, attn_implementation=attn)
        except TypeError:
            m = AutoModelForSequenceClassification.from_pretrained(
                model_dir, torch_dtype=torch.bfloat16, attn_implementation=attn)
        m = m.cuda().eval()
        m.config.pad_token_id = 0
        return m

    model = load("sdpa")
    params = sum(p.numel() for n, p in model.named_parameters() if "embed_tokens" not in n)
    cfg = model.config
    lengths = [len(s) for s in seqs]
    def useful_of(seq_ids):
        return flops([lengths[i] for i in seq_ids], params, cfg.num_hidden_layers,
                     cfg.num_attention_heads * cfg.head_dim)

    useful = useful_of(range(len(seqs)))
    rewards = [0.0] * len(seqs)

    def run(m, budget, n_seqs, into):
        """Seconds for the first n_seqs sequences in length-sorted batches of at most
        `budget` padded tokens (transformers' usual recipe), rewards into `into`."""
        order = sorted(range(n_seqs), key=lambda i: lengths[i])
        batches, cur = [], []
        for i in order:
            if cur and (len(cur) + 1) * lengths[i] > budget:
                batches.append(cur)
                cur = []
            cur.append(i)
        batches.append(cur)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.inference_mode():
            for b in batches:
                width = max(lengths[i] for i in b)
                ids = torch.zeros((len(b), width), dtype=torch.long)
                mask = torch.zeros((len(b), width), dtype=torch.long)
                for j, i in enumerate(b):
                    ids[j, :lengths[i]] = torch.tensor(seqs[i])
                    mask[j, :lengths[i]] = 1
                logits = m(input_ids=ids.cuda(), attention_mask=mask.cuda()).logits
                for j, i in enumerate(b):
                    into[i] = float(logits[j, 0])
        torch.cuda.synchronize()
        return time.perf_counter() - t0

    def line(what, s, n_seqs):
        tokens = sum(lengths[:n_seqs])
        return (f"{what}: {s:.2f} s, {tokens / s:,.0f} tokens/s, {n_seqs / 2 / s:,.1f} pairs/s, "
                f"MFU {useful_of(range(n_seqs)) / s / PEAK_BF16_FLOPS:.1%}")

    run(model, 16384, len(seqs), rewards)  # warm-up: kernels, allocator
    results = {}
    for budget in map(int, os.environ.get("GPU_BENCH_BUDGETS", "32768,131072").split(",")):
        s = run(model, budget, len(seqs), rewards)
        results[budget] = s
        print(line(f"transformers sdpa bf16, token budget {budget}", s, len(seqs)))
    best = min(results.values())
    best_tokens_per_s = sum(lengths) / best
    summary = dict(pairs=len(rows), tokens=sum(lengths), useful_flops=useful,
                   transformers_best_s=best, transformers_tokens_per_s=best_tokens_per_s,
                   non_embedding_params=params)
    # transformers' eager attention on the first pairs: its speed, and how far its bf16
    # rewards lie from sdpa's (the spread two correct bf16 implementations show).
    eager_seqs = 2 * min(len(rows), int(os.environ.get("GPU_BENCH_EAGER_PAIRS", "256")))
    if eager_seqs:
        del model
        torch.cuda.empty_cache()
        eager_rewards = [0.0] * len(seqs)
        m = load("eager")
        run(m, 16384, min(eager_seqs, 64), eager_rewards)  # warm-up
        s = run(m, 32768, eager_seqs, eager_rewards)
        print(line("transformers eager bf16, token budget 32768", s, eager_seqs))
        spread = [abs(eager_rewards[i] - rewards[i]) for i in range(eager_seqs)]
        print(f"transformers eager vs sdpa rewards over {eager_seqs} sequences: max |diff| "
              f"{max(spread):.4f}, mean {sum(spread) / len(spread):.4f}")
        summary.update(transformers_eager_tokens_per_s=sum(lengths[:eager_seqs]) / s,
                       transformers_eager_vs_sdpa_max_abs_diff=max(spread))
    # synpref's runs (the packed flash path and the eager path), from the files they
    # wrote; the shell timed each whole process (model load included) into DIR/wall_s.
    import pyarrow.parquet as pq
    index = {r["pair_id"]: k for k, r in enumerate(rows)}
    for name in ("synpref", "synpref-eager"):
        d = os.path.join(out, name)
        if not os.path.exists(os.path.join(d, "report.json")):
            continue
        table = pq.read_table(sorted(glob.glob(os.path.join(d, "part-*.parquet"))))
        got = dict(zip(table.column("pair_id").to_pylist(),
                       zip(table.column("r_chosen").to_pylist(), table.column("r_rejected").to_pylist())))
        ks = [index[p] for p in got]
        diffs = [abs(got[rows[k]["pair_id"]][side] - rewards[2 * k + side]) for k in ks for side in (0, 1)]
        tokens = sum(lengths[2 * k] + lengths[2 * k + 1] for k in ks)
        wall = os.path.join(d, "wall_s")
        s = float(open(wall).read()) if os.path.exists(wall) else json.load(open(os.path.join(d, "report.json")))["elapsed_s"]
        summary[name.replace("-", "_")] = dict(
            pairs=len(ks), seconds=s, tokens_per_s=tokens / s,
            vs_transformers_sdpa=tokens / s / best_tokens_per_s,
            reward_max_abs_diff=max(diffs), reward_mean_abs_diff=sum(diffs) / len(diffs))
        print(f"{name} score (bf16, {len(ks)} pairs): {s:.2f} s wall, {tokens / s:,.0f} tokens/s, "
              f"{len(ks) / s:,.1f} pairs/s, "
              f"MFU {useful_of([2 * k + side for k in ks for side in (0, 1)]) / s / PEAK_BF16_FLOPS:.1%}; "
              f"{tokens / s / best_tokens_per_s:.2f}x transformers sdpa's tokens/s")
        print(f"  rewards vs transformers sdpa over {len(diffs)} sequences: max |diff| "
              f"{max(diffs):.4f}, mean {sum(diffs) / len(diffs):.4f}")
    json.dump(summary, open(os.path.join(out, "summary.json"), "w"), indent=1)
    print(json.dumps(summary))


if __name__ == "__main__":
    if sys.argv[1] == "make":
        make(sys.argv[2], int(sys.argv[3]))
    else:
        bench_transformers(sys.argv[2])
