"""Loads curate's output with the real trainers' own loaders (issue 11).

    check_trainers.py forms POOL.parquet OUTDIR   write the pool in four input forms
    check_trainers.py datasets OUT                datasets.load_dataset(OUT): rows, columns
    check_trainers.py trl OUT MODEL               TRL RewardTrainer, 3 steps on OUT
    check_trainers.py openrlhf OUT MODEL          OpenRLHF blending_datasets + RewardDataset
    check_trainers.py rewardbench OUT MODEL       RewardBench load_and_process_dataset

Each check prints one JSON line; scripts/check-trainers.sh runs them all. Nothing here
changes the loaders: they get the output directory, as a user would give it.
"""

import json
import sys
import tempfile
import types


def forms(pool, outdir):
    import pyarrow.parquet as pq

    rows = pq.read_table(pool).to_pylist()

    def user(t):
        return [{"role": "user", "content": t}]

    def assistant(t):
        return [{"role": "assistant", "content": t}]

    makers = {
        "strings": lambda r: {"prompt": r["prompt"], "chosen": r["chosen"], "rejected": r["rejected"]},
        "messages": lambda r: {"prompt": user(r["prompt"]), "chosen": assistant(r["chosen"]), "rejected": assistant(r["rejected"])},
        "whole": lambda r: {"chosen": user(r["prompt"]) + assistant(r["chosen"]), "rejected": user(r["prompt"]) + assistant(r["rejected"])},
        # A multi-turn message-list prompt with string replies.
        "message_prompt": lambda r: {"prompt": user("Hello.") + assistant("Hello! How can I help?") + user(r["prompt"]), "chosen": r["chosen"], "rejected": r["rejected"]},
        # The same with a system turn, which RewardBench 0.1.4 cannot read as it is.
        "system_prompt": lambda r: {"prompt": [{"role": "system", "content": "Be helpful."}] + user(r["prompt"]), "chosen": r["chosen"], "rejected": r["rejected"]},
    }
    for name, make in makers.items():
        with open(f"{outdir}/{name}.jsonl", "w") as f:
            for r in rows:
                f.write(json.dumps({"pair_id": r["pair_id"], **make(r)}) + "\n")


def check_datasets(out):
    from datasets import load_dataset

    ds = load_dataset(out, split="train")
    return {"rows": len(ds), "columns": ds.column_names}


def check_trl(out, model_dir):
    import trl
    from datasets import load_dataset
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from trl import RewardConfig, RewardTrainer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=1)
    ds = load_dataset(out, split="train")
    cfg = RewardConfig(
        output_dir=tempfile.mkdtemp(),
        max_steps=3,
        per_device_train_batch_size=4,
        max_length=256,  # the fixture's context is 512 positions
        report_to=[],
        logging_steps=1,
        use_cpu=True,
        save_strategy="no",
    )
    trainer = RewardTrainer(model=model, args=cfg, train_dataset=ds, processing_class=tok)
    result = trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return {"trl": trl.__version__, "steps": result.global_step, "losses": losses, "margin_column": "margin" in ds.column_names}


def check_openrlhf(out, model_dir):
    import openrlhf
    from openrlhf.datasets import RewardDataset
    from openrlhf.datasets.utils import blending_datasets
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    # What train_rm's flags set: --apply_chat_template, default keys, --margin_loss.
    data_args = types.SimpleNamespace(apply_chat_template=True, chosen_key="chosen", rejected_key="rejected", prompt_key=None, margin_loss=True)
    strategy = types.SimpleNamespace(args=types.SimpleNamespace(data=data_args), print=lambda *a: None, is_rank_0=lambda: True)
    data = blending_datasets(out, None, strategy, 42, max_count=1_000_000)
    ds = RewardDataset(data, tok, 256, strategy, num_processors=1)
    margins = list(ds.extras)
    return {"openrlhf": openrlhf.__version__ if hasattr(openrlhf, "__version__") else "0.11", "rows": len(ds), "nonzero_margins": sum(1 for m in margins if m)}


def check_rewardbench(out, model_dir):
    from importlib.metadata import version

    from rewardbench.utils import load_and_process_dataset
    from transformers import AutoTokenizer

    import glob

    tok = AutoTokenizer.from_pretrained(model_dir)
    # `rewardbench --dataset OUT`: the dataset card's default config.
    ds = load_and_process_dataset(out, split="train", json=False, tokenizer=tok)
    res = {"rewardbench": version("rewardbench"), "rows": len(ds), "columns": ds.column_names}
    # `rewardbench --dataset 'OUT/curated/*.jsonl' --load_json` (datasets' JSON builder
    # takes files or globs, not a directory).
    if glob.glob(f"{out}/curated/*.jsonl"):
        js = load_and_process_dataset(f"{out}/curated/*.jsonl", split="train", json=True, tokenizer=tok)
        res["load_json_rows"] = len(js)
    return res


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "forms":
        forms(sys.argv[2], sys.argv[3])
        sys.exit(0)
    checks = {"datasets": check_datasets, "trl": check_trl, "openrlhf": check_openrlhf, "rewardbench": check_rewardbench}
    args = sys.argv[2:]
    try:
        print(json.dumps({"ok": True, **checks[mode](*args)}))
    except Exception as e:  # the script reports, the shell script tabulates
        print(json.dumps({"ok": False, "error": f"{type(e).__name__}: {e}"[:400]}))
