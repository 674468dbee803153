#!/usr/bin/env python3
"""Token lengths of imported benchmark layouts (synpref `bench import` output).

For every layout row and each side (chosen, rejected), the input a reward model reads is
prompt messages + the reply as an assistant turn (as synpref's hf models build it).

Counts computed:
  approx-bpe : fixture byte-level BPE (vocab 512) token count of each message's content,
               summed, + 10 tokens per message (chat-template allowance)
  approx-wp  : the same with all-MiniLM-L6-v2's WordPiece (vocab 30522, uncased), with
               its tokenizer.json truncation/padding (128) disabled
  exact-fixture : the conversation rendered with qwen3_rm_chat's chat template (jinja2,
               HF apply_chat_template settings) and tokenized with the fixture BPE with
               add_special_tokens=True: what synpref's hf:qwen3_rm_chat compares against
               --max-tokens.
  truncation emulation (exact-fixture): synpref's policy for an input over N (cut len-N
               tokens from the start; "prompt only" if the cut stays within the tokens that
               end before the reply starts, else "into a reply"), counted per distinct input
               and over the sequences `synpref eval` sends (distinct (prompt, reply) per prompt,
               scored in twos, an odd count padded with the prompt's first reply).
Percentiles are nearest-rank. "over" counts are inputs with count > threshold.

Usage: measure.py OUT.json LAYOUT.jsonl [LAYOUT.jsonl ...]  (bench name = file stem)
"""
import json
import sys
import os
import time

import jinja2
import jinja2.ext
import jinja2.sandbox
from tokenizers import Tokenizer

SHARED = os.path.normpath(os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared"))
BPE = os.path.join(SHARED, "fixtures/tokenizer/bpe/tokenizer.json")
WP = os.path.join(SHARED, "models/all-MiniLM-L6-v2/tokenizer.json")
CHAT_DIR = os.path.join(SHARED, "fixtures/qwen3_rm_chat")
PER_MSG = 10
THRESHOLDS = [2048, 4096, 8192, 16384, 32768]


def load_tok(path):
    t = Tokenizer.from_file(path)
    t.no_truncation()
    t.no_padding()
    return t


def chat_template():
    cfg = json.load(open(os.path.join(CHAT_DIR, "tokenizer_config.json")))
    env = jinja2.sandbox.ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols]
    )

    def raise_exception(msg):
        raise jinja2.exceptions.TemplateError(msg)

    env.filters["tojson"] = lambda x, ensure_ascii=False, indent=None, separators=None, sort_keys=False: json.dumps(
        x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
    )
    env.globals["raise_exception"] = raise_exception
    return env.from_string(cfg["chat_template"])


def messages(conv, role):
    if isinstance(conv, str):
        return [{"role": role, "content": conv}]
    return [{"role": m["role"], "content": m["content"]} for m in conv]


def pct(sorted_vals, p):
    # nearest-rank percentile
    if not sorted_vals:
        return None
    k = max(0, min(len(sorted_vals) - 1, -(-p * len(sorted_vals) // 100) - 1))
    return sorted_vals[int(k)]


def stats(vals):
    v = sorted(vals)
    n = len(v)
    return {
        "n": n,
        "p50": pct(v, 50),
        "p90": pct(v, 90),
        "p99": pct(v, 99),
        "max": v[-1] if v else None,
        "mean": sum(v) / n if n else None,
        "over": {str(t): sum(1 for x in v if x > t) for t in THRESHOLDS},
    }


def main():
    out_path, layouts = sys.argv[1], sys.argv[2:]
    bpe, wp = load_tok(BPE), load_tok(WP)
    tmpl = chat_template()
    result = {}
    for layout in layouts:
        t0 = time.time()
        bench = os.path.splitext(os.path.basename(layout))[0]
        rows = [json.loads(l) for l in open(layout)]
        # distinct inputs (prompt, reply); sides reference them
        key_of = {}
        convs = []
        n_reply = []
        sides = []  # (row index, side, input index, subset)
        for i, r in enumerate(rows):
            if "prompt" not in r:
                raise SystemExit(f"{layout}: implicit-prompt rows not handled")
            for side in ("chosen", "rejected"):
                key = json.dumps([r["prompt"], r[side]], ensure_ascii=False)
                if key not in key_of:
                    key_of[key] = len(convs)
                    convs.append(messages(r["prompt"], "user") + messages(r[side], "assistant"))
                    n_reply.append(len(messages(r[side], "assistant")))
                sides.append((i, side, key_of[key], r.get("subset", "")))
        # per-message content counts, deduplicated
        contents = {}
        for c in convs:
            for m in c:
                contents.setdefault(m["content"], None)
        texts = list(contents)
        for name, tok in (("bpe", bpe), ("wp", wp)):
            encs = tok.encode_batch(texts, add_special_tokens=False)
            for t, e in zip(texts, encs):
                contents[t] = (contents[t] or {}) | {name: len(e.ids)}
        approx = {"bpe": [], "wp": []}
        for c in convs:
            for name in approx:
                approx[name].append(sum(contents[m["content"]][name] for m in c) + PER_MSG * len(c))
        rendered = [tmpl.render(messages=c, add_generation_prompt=False) for c in convs]
        exact = [len(e.ids) for e in bpe.encode_batch(rendered, add_special_tokens=True)]
        counts = {"approx-bpe": approx["bpe"], "approx-wp": approx["wp"], "exact-fixture": exact}
        # synpref's truncation policy, emulated: an input over N loses len-N tokens from
        # its start; the cut is "prompt only" if it stays within the tokens that end at or
        # before the reply's start (common prefix of the full text and the prompt rendered
        # with the generation prompt), else it reaches "into a reply".
        trunc = {str(n): {"prompt_truncated": 0, "response_truncated": 0} for n in THRESHOLDS}
        cls = {}
        seen_inputs = set()
        for k, c in enumerate(convs):
            if exact[k] <= THRESHOLDS[0]:
                continue
            # the prompt is every message before the reply's (appended assistant) messages
            plen = len(c) - n_reply[k]
            pre = tmpl.render(messages=c[:plen], add_generation_prompt=True)
            full = rendered[k]
            start = 0
            for a, b in zip(full, pre):
                if a != b:
                    break
                start += 1
            offs = bpe.encode(full, add_special_tokens=True).offsets
            ptok = 0
            for (_, end) in offs:
                if end <= start:
                    ptok += 1
                else:
                    break
            for n in THRESHOLDS:
                if exact[k] > n:
                    key = "prompt_truncated" if exact[k] - n <= ptok else "response_truncated"
                    trunc[str(n)][key] += 1
                    cls[(k, n)] = key
        # the sequences synpref's `eval` sends for a layout (jobs/src/bench/rewards.rs):
        # distinct (prompt, reply) per prompt in first-seen order, scored two at a time,
        # an odd count padded with the prompt's first reply again.
        by_prompt = {}
        for i, r in enumerate(rows):
            pk = json.dumps(r["prompt"], ensure_ascii=False)
            lst = by_prompt.setdefault(pk, [])
            for side in ("chosen", "rejected"):
                k = key_of[json.dumps([r["prompt"], r[side]], ensure_ascii=False)]
                if k not in seen_inputs:
                    seen_inputs.add(k)
                    lst.append(k)
        seqs = []
        for lst in by_prompt.values():
            seqs.extend(lst)
            if len(lst) % 2:
                seqs.append(lst[0])
        trunc_seq = {str(n): {"prompt_truncated": 0, "response_truncated": 0} for n in THRESHOLDS}
        for k in seqs:
            for n in THRESHOLDS:
                if (k, n) in cls:
                    trunc_seq[str(n)][cls[(k, n)]] += 1
        res = {"rows": len(rows), "sides": len(sides), "distinct_inputs": len(convs), "chars": {}}
        for name, per_input in counts.items():
            per_side = [per_input[s[2]] for s in sides]
            # a comparison is affected if either side exceeds a threshold
            per_pair = [max(per_input[sides[2 * k][2]], per_input[sides[2 * k + 1][2]]) for k in range(len(rows))]
            by_subset = {}
            for s in sides:
                by_subset.setdefault(s[3], []).append(per_input[s[2]])
            res[name] = {
                "per_side": stats(per_side),
                "per_distinct_input": stats(per_input),
                "per_comparison_max_side": stats(per_pair),
                "by_subset_per_side": {k: stats(v) for k, v in sorted(by_subset.items())},
            }
        chars = [sum(len(m["content"]) for m in c) for c in convs]
        res["chars"] = stats(chars)
        res["exact-fixture-truncation-per-distinct-input"] = trunc
        res["exact-fixture-truncation-per-synpref-sequence"] = trunc_seq
        res["synpref_sequences"] = len(seqs)
        res["seconds"] = round(time.time() - t0, 1)
        result[bench] = res
        print(bench, json.dumps({k: res[k] for k in ("rows", "sides", "distinct_inputs", "seconds")}), flush=True)
    json.dump(result, open(out_path, "w"), indent=1)


if __name__ == "__main__":
    main()
