#!/usr/bin/env python3
"""Writes tests/fixtures/benchmarks/: for each of the seven benchmarks of issue 27 a
small file (or tree) in its exact released layout, field for field, with short texts
(docs/benchmarks-eval.md cites each layout's source). Replies are repeated on purpose
where a test needs a reward tie (the same prompt and reply score the same).

    python3 scripts/make_bench_fixtures.py   # needs pyarrow
"""
import json
import os

import pyarrow as pa
import pyarrow.parquet as pq

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "benchmarks")
WORDS = ("the answer is correct because the data shows a clear result and the model "
         "explains each step with care while the other reply skips the reasoning and "
         "gives a wrong number so the reader learns nothing useful from it").split()


def text(seed, n=12):
    return " ".join(WORDS[(seed * 7 + i * 3) % len(WORDS)] for i in range(n)) + "."


def write_parquet(path, rows, schema):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)


def rewardbench():
    subsets = ["alpacaeval-easy", "alpacaeval-easy", "mt-bench-hard", "llmbar-natural",
               "refusals-dangerous", "xstest-should-respond", "math-prm", "math-prm",
               "hep-python", "hep-rust"]
    rows = []
    for i, s in enumerate(subsets):
        chosen = text(100 + i)
        # Row 1 has identical replies: a reward tie, which RewardBench counts wrong.
        rejected = chosen if i == 1 else text(200 + i)
        rows.append(dict(prompt=f"Question {i}: " + text(i, 16), chosen=chosen,
                         chosen_model="GPT4-Turbo", rejected=rejected,
                         rejected_model="alpaca-7b", subset=s, id=30 + i))
    schema = pa.schema([("prompt", pa.string()), ("chosen", pa.string()),
                        ("chosen_model", pa.string()), ("rejected", pa.string()),
                        ("rejected_model", pa.string()), ("subset", pa.string()),
                        ("id", pa.int64())])
    write_parquet(os.path.join(OUT, "rewardbench", "filtered-00000-of-00001.parquet"), rows, schema)


def rewardbench2():
    meta = pa.struct([("category", pa.string()), ("correct", pa.string()),
                      ("index", pa.float64()), ("instruction_id_list", pa.list_(pa.string())),
                      ("label", pa.string()), ("method", pa.string()),
                      ("models", pa.list_(pa.string())), ("prompt_norm", pa.string()),
                      ("subcategory", pa.string()), ("valid", pa.float64())])
    rows = []

    def add(id_, subset, chosen, rejected):
        rows.append(dict(id=id_, prompt=f"Prompt {id_}: " + text(len(rows), 16),
                         chosen=chosen, rejected=rejected, num_correct=len(chosen),
                         num_incorrect=len(rejected),
                         total_completions=len(chosen) + len(rejected),
                         models=["m"] * (len(chosen) + len(rejected)), subset=subset,
                         additional_metadata=dict(category=subset, correct=None, index=None,
                                                  instruction_id_list=[], label=None,
                                                  method=None, models=[], prompt_norm=None,
                                                  subcategory=None, valid=None)))

    add("0", "Factuality", [text(1)], [text(2), text(3), text(4)])
    add("1", "Factuality", [text(5)], [text(6), text(7), text(8)])
    # A rejected completion identical to the chosen one: a tie at the top.
    add("2", "Math", [text(9)], [text(9), text(10), text(11)])
    add("3", "Precise IF", [text(12)], [text(13), text(14), text(15)])
    add("4", "Safety", [text(16)], [text(17), text(18), text(19)])
    add("5", "Focus", [text(20)], [text(21), text(22), text(23)])
    add("ref:1", "Ties", [text(24)], [text(25), text(26)])
    add("tied:1", "Ties", [text(24), text(27)], [text(25), text(26), text(28)])
    add("ref:2", "Ties", [text(29)], [text(30)])
    add("tied:2", "Ties", [text(29), text(31), text(32)], [text(30)])
    schema = pa.schema([("id", pa.string()), ("prompt", pa.string()),
                        ("chosen", pa.list_(pa.string())), ("rejected", pa.list_(pa.string())),
                        ("num_correct", pa.int64()), ("num_incorrect", pa.int64()),
                        ("total_completions", pa.int64()), ("models", pa.list_(pa.string())),
                        ("subset", pa.string()), ("additional_metadata", meta)])
    write_parquet(os.path.join(OUT, "rewardbench2", "test-00000-of-00001.parquet"), rows, schema)


def ppe_preference():
    rows = []
    for i, winner in enumerate(["model_a", "model_b", "model_a", "model_b", "model_a", "tie"]):
        rows.append(dict(question_id=f"q{i:04x}", model_a="gpt-4o", model_b="llama-3-70b",
                         winner=winner, prompt=f"Ask {i}: " + text(40 + i, 16),
                         response_1=text(50 + i), response_2=text(60 + i),
                         language="English" if i % 2 == 0 else "German",
                         conv_metadata=dict(context_a_tokens=10, context_b_tokens=11,
                                            sum_assistant_a_tokens=20, sum_assistant_b_tokens=21,
                                            sum_user_tokens=8, turns=1),
                         is_code=False, is_refusal=False, sim=0.5, length_a=20,
                         length_b=21, token_diff=0.05, longer_won="yes", hard_prompt=False,
                         easy_prompt=True, if_prompt=False, math_prompt=False))
    write_parquet(os.path.join(OUT, "ppe-preference", "test-00000-of-00001.parquet"), rows, None)


def ppe_correctness():
    for name, base in [("PPE-MATH-Best-of-K", 70), ("PPE-GPQA-Best-of-K", 90)]:
        rows = []
        for q in range(3):
            scores = [True, False, q % 2 == 0, False]
            row = dict(question_id=f"{name}-{q}", model_name="gemma-2-9b-it",
                       parsed_outputs=["A", "B", "C", "D"], scores=scores,
                       mean_score=sum(scores) / 4, prompt=f"Solve {q}: " + text(base + q, 16))
            for k in range(4):
                row[f"response_{k + 1}"] = text(base + 10 * q + k)
            row["conflict_pairs"] = [[i, j] for i in range(4) for j in range(i + 1, 4)
                                     if scores[i] != scores[j]]
            row["sampled_conflict_pairs"] = row["conflict_pairs"][:2]
            rows.append(row)
        write_parquet(os.path.join(OUT, "ppe-correctness", name, "train-00000-of-00001.parquet"),
                      rows, None)


def rmb():
    def conv(i):
        return [{"content": f"Chat {i}: " + text(300 + i, 16), "language": "English", "role": "user"}]

    def answer(seed):
        return {"llm_name": "gemini-1.5-pro-exp-0801", "answer": text(seed)}

    for goal, path in [("Helpfulness", "Helpfulness/Chat/Discussion"), ("Harmlessness", "Harmlessness/S1")]:
        base = 400 if goal == "Helpfulness" else 500
        pairs = [{"pair_uid": str(base + i), "conversation_input": conv(base + i),
                  "chosen": answer(base + 10 + i), "reject": answer(base + 20 + i),
                  "category_path": f"Pairwise_set/{path}"} for i in range(3)]
        bons = [{"conversation_input": conv(base + 50 + i), "bon_best": answer(base + 60 + i),
                 "loser_list": [answer(base + 70 + i), answer(base + 80 + i), answer(base + 90 + i)],
                 "bon_uid": str(base + 50 + i), "category_path": f"BoN_set/{path}"} for i in range(2)]
        for kind, data in [("Pairwise_set", pairs), ("BoN_set", bons)]:
            f = os.path.join(OUT, "rmb", "RMB_dataset", kind, path + ".json")
            os.makedirs(os.path.dirname(f), exist_ok=True)
            json.dump(data, open(f, "w"), indent=4, ensure_ascii=False)


def rm_bench():
    rows = []
    for i, domain in enumerate(["chat", "math", "code", "safety-refuse", "safety-response", "chat"]):
        chosen = [text(600 + 10 * i + k) for k in range(3)]
        rejected = [text(700 + 10 * i + k) for k in range(3)]
        if i == 5:
            rejected[0] = chosen[0]  # a tie on the diagonal: wrong in RM-Bench
        rows.append(dict(id=3100 + i, prompt=f"Task {i}: " + text(650 + i, 16),
                         chosen=chosen, rejected=rejected, domain=domain))
    f = os.path.join(OUT, "rm-bench", "total_dataset.json")
    os.makedirs(os.path.dirname(f), exist_ok=True)
    json.dump(rows, open(f, "w"), indent=4, ensure_ascii=False)


def judgebench():
    sources = ["mmlu-pro-law", "mmlu-pro-biology", "livebench-reasoning", "livebench-math",
               "livecodebench", "livebench-reasoning"]
    f = os.path.join(OUT, "judgebench", "dataset=judgebench,response_model=gpt-4o-2024-05-13.jsonl")
    os.makedirs(os.path.dirname(f), exist_ok=True)
    with open(f, "w") as out:
        for i, source in enumerate(sources):
            a, b = text(800 + i), text(850 + i)
            if i == 5:
                b = a  # identical responses: a reward tie, counted as B>A
            row = {"pair_id": f"e302b0a0-28d5-5a3c-b1af-fedcf55430{i:02d}",
                   "original_id": 1420 + i if source.startswith("mmlu") else None,
                   "source": source, "question": f"Q{i}: " + text(820 + i, 16),
                   "response_model": "gpt-4o-2024-05-13", "response_A": a, "response_B": b,
                   "label": "A>B" if i % 2 == 0 else "B>A"}
            out.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    rewardbench(); rewardbench2(); ppe_preference(); ppe_correctness(); rmb(); rm_bench(); judgebench()
    for root, _, files in sorted(os.walk(OUT)):
        for f in sorted(files):
            print(os.path.relpath(os.path.join(root, f), OUT))
