//! `synpref eval` (issue 14): a reward model's accuracy on RewardBench-layout sets, per
//! subset and overall, equals what one computes by hand from `synpref score`'s rewards
//! for the same pairs; both layouts (explicit prompt, whole conversations) are read.

use super::*;

/// Explicit layout: prompt, chosen, rejected strings, with subset and id.
fn explicit_set(path: &Path) {
    let prompts = [
        "What is 2+2?",
        "Name a colour.",
        "Say hello.",
        "Count to three.",
        "Spell cat.",
        "Is ice cold?",
    ];
    let chosen = [
        "4",
        "Blue.",
        "Hello!",
        "1, 2, 3.",
        "C-A-T.",
        "Yes, ice is cold.",
    ];
    let rejected = ["5", "", "Goodbye.", "1, 3, 2.", "K-A-T.", "No."];
    let subsets = ["math", "chat", "chat", "math", "chat", "math"];
    let ids = ["e0", "e1", "e2", "e3", "e4", "e5"];
    write_parquet(
        path,
        vec![
            ("prompt", strings(&prompts)),
            ("chosen", strings(&chosen)),
            ("rejected", strings(&rejected)),
            ("subset", strings(&subsets)),
            ("id", strings(&ids)),
        ],
    );
}

/// Implicit layout: chosen and rejected as whole conversations, as JSON lines.
fn implicit_set(path: &Path) {
    let rows = [
        ("Hi there", "Hello! How can I help?", "Go away.", "safety"),
        (
            "Tell me a joke",
            "Why did the chicken cross the road?",
            "No.",
            "chat",
        ),
        ("2*3?", "6", "5", "math"),
        ("Capital of France?", "Paris.", "Berlin.", "chat"),
        (
            "Is the sky green?",
            "No, it is usually blue.",
            "Yes.",
            "safety",
        ),
    ];
    let lines: Vec<String> = rows
        .iter()
        .enumerate()
        .map(|(i, (user, good, bad, subset))| {
            let conv = |reply: &str| {
                serde_json::json!([
                    {"role": "user", "content": user},
                    {"role": "assistant", "content": reply}
                ])
            };
            serde_json::json!({"chosen": conv(good), "rejected": conv(bad), "subset": subset, "id": format!("i{i}")})
                .to_string()
        })
        .collect();
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
}

/// (correct, pairs) per subset and overall, from `synpref score`'s parts.
fn by_hand(parts: &[Value]) -> (BTreeMap<String, (u64, u64)>, (u64, u64)) {
    let mut subsets: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    let mut all = (0, 0);
    for row in parts {
        let correct =
            u64::from(row["r_chosen"].as_f64().unwrap() > row["r_rejected"].as_f64().unwrap());
        let s = subsets
            .entry(row["subset"].as_str().unwrap().to_string())
            .or_default();
        s.0 += correct;
        s.1 += 1;
        all.0 += correct;
        all.1 += 1;
    }
    (subsets, all)
}

use std::collections::BTreeMap;

#[test]
fn eval_accuracy_per_subset_equals_the_accuracy_computed_from_score_output() {
    let tmp = tempfile::tempdir().unwrap();
    let (explicit, implicit) = (
        tmp.path().join("explicit.parquet"),
        tmp.path().join("implicit.jsonl"),
    );
    explicit_set(&explicit);
    implicit_set(&implicit);
    let model = format!("hf:{}", s(&fixture("qwen3_rm_chat")));
    let cache = tmp.path().join("cache");
    let common = [
        "--score-cache",
        s(&cache),
        "--device",
        "cpu",
        "--dtype",
        "f32",
    ];
    let out = tmp.path().join("eval");
    let mut args = vec![
        "eval",
        "--model",
        &model,
        "--eval",
        s(&explicit),
        "--eval",
        s(&implicit),
        "--out",
        s(&out),
    ];
    args.extend(common);
    let printed = String::from_utf8(ok(&args).stdout).unwrap();
    let report = json_file(&out.join("report.json"));
    let sets = report["sets"].as_array().unwrap();
    assert_eq!(sets.len(), 2);
    for (set, file, n) in [(&sets[0], &explicit, 6), (&sets[1], &implicit, 5)] {
        assert_eq!(set["input_rows"], n);
        let scored = tmp.path().join(format!("score-{n}"));
        let mut args = vec![
            "score",
            "--model",
            &model,
            "--pairs",
            s(file),
            "--out",
            s(&scored),
            "--no-progress",
        ];
        args.extend(common);
        ok(&args);
        let (subsets, all) = by_hand(&read_parts(&scored));
        assert_eq!(set["overall"]["n"], all.1, "{set}");
        let value = |e: &Value| e["value"].as_f64().unwrap();
        assert!(
            (value(&set["overall"]) - all.0 as f64 / all.1 as f64).abs() < 1e-12,
            "{set}"
        );
        assert_eq!(
            set["subsets"].as_object().unwrap().len(),
            subsets.len(),
            "{set}"
        );
        for (name, (c, n)) in &subsets {
            let e = &set["subsets"][name];
            assert_eq!(e["n"], *n, "{name}");
            assert!(
                (value(e) - *c as f64 / *n as f64).abs() < 1e-12,
                "{name}: {e}"
            );
            let [lo, hi] = [
                e["ci95"][0].as_f64().unwrap(),
                e["ci95"][1].as_f64().unwrap(),
            ];
            assert!(lo <= value(e) && value(e) <= hi, "{name}: {e}");
        }
        assert!(printed.contains(s(file)), "{printed}");
        // With a handful of pairs the interval holds 50%: said in plain words.
        let [lo, hi] = [
            set["overall"]["ci95"][0].as_f64().unwrap(),
            set["overall"]["ci95"][1].as_f64().unwrap(),
        ];
        let chance = lo <= 0.5 && 0.5 <= hi;
        assert_eq!(
            !set["warnings"].as_array().unwrap().is_empty(),
            chance,
            "{set}"
        );
        if chance {
            assert!(printed.contains("no better than chance"), "{printed}");
        }
    }
    // A model without saved weights is refused, naming the flag.
    let e = fails_with(
        &[
            "eval",
            "--model",
            "builtin",
            "--eval",
            s(&explicit),
            "--out",
            s(&out),
        ],
        2,
    );
    assert!(e.contains("--model"), "{e}");
}

#[test]
fn eval_truncation_warning_names_the_limit_in_effect_the_models_own_when_lower() {
    let tmp = tempfile::tempdir().unwrap();
    let set = tmp.path().join("set.jsonl");
    let long = "the river flows past the old mill and on to the sea ".repeat(120);
    let rows = [
        serde_json::json!({"pair_id": "long", "prompt": long, "chosen": "Yes.", "rejected": "No."}),
        serde_json::json!({"pair_id": "short", "prompt": "Hi?", "chosen": "Hello.", "rejected": "Go."}),
    ];
    std::fs::write(
        &set,
        rows.iter().map(|r| format!("{r}\n")).collect::<String>(),
    )
    .unwrap();
    let dir = fixture("qwen3_rm_chat");
    let positions = json_file(&dir.join("config.json"))["max_position_embeddings"]
        .as_u64()
        .unwrap();
    assert!(
        positions < 16_384,
        "the fixture's own limit is below eval's default"
    );
    let model = format!("hf:{}", s(&dir));
    let run = |name: &str, extra: &[&str]| -> Value {
        let out = tmp.path().join(name);
        let mut args = vec![
            "eval",
            "--model",
            &model,
            "--eval",
            s(&set),
            "--out",
            s(&out),
        ];
        args.extend(["--no-score-cache", "--device", "cpu", "--dtype", "f32"]);
        args.extend(extra);
        ok(&args);
        json_file(&out.join("report.json"))["sets"][0].clone()
    };
    // eval's default (16,384) is capped by the model's max_position_embeddings: the
    // report and the warning say so, and the long prompt was cut for both replies.
    let capped = run("default", &[]);
    assert_eq!(capped["truncations"]["max_tokens"], positions, "{capped}");
    assert_eq!(capped["truncations"]["prompt_truncated"], 2, "{capped}");
    let warning = capped["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w.as_str().unwrap())
        .find(|w| w.contains(" cut "))
        .unwrap_or_else(|| panic!("no truncation warning: {capped}"));
    assert!(
        warning.starts_with(&format!(
            "the model's own limit of {positions} tokens (below --max-tokens 16384) cut 2 scoring pairs"
        )),
        "{warning}"
    );
    // A limit below the model's is the one in effect and named as given.
    let given = run("given", &["--max-tokens", "64"]);
    assert_eq!(given["truncations"]["max_tokens"], 64, "{given}");
    assert!(
        given["warnings"].as_array().unwrap().iter().any(|w| w
            .as_str()
            .unwrap()
            .starts_with("--max-tokens 64 cut 2 scoring pairs")),
        "{given}"
    );
}
