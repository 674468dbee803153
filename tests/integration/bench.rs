//! `synpref bench import` and eval's official scores (issue 27): each of the seven
//! benchmarks imports from a fixture in its released layout (tests/fixtures/benchmarks,
//! made by scripts/make_bench_fixtures.py), and eval's headline for a real model equals
//! an independent computation (tests/bench_reference.py: its own reading of the released
//! files, rewards from `synpref score`, a port of each benchmark's own code), ties
//! included.

use super::*;

/// (name, source under tests/fixtures/benchmarks, comparisons, groups, skipped rows).
const IMPORTS: [(&str, &str, u64, u64, usize); 7] = [
    ("rewardbench", "rewardbench", 10, 10, 0),
    // 6 best-of-4 prompts (3 comparisons each) and 4 Ties prompts: 2 + 6 + 1 + 3.
    ("rewardbench2", "rewardbench2", 30, 10, 0),
    // The `tie` row names no winner.
    ("ppe-preference", "ppe-preference", 5, 5, 1),
    ("ppe-correctness", "ppe-correctness", 12, 6, 0),
    // 6 pairwise pairs, 4 best-of-N sets of 3 losers.
    ("rmb", "rmb", 18, 10, 0),
    ("rm-bench", "rm-bench/total_dataset.json", 54, 6, 0),
    ("judgebench", "judgebench", 6, 6, 0),
];

fn import_all(dir: &Path) -> Vec<PathBuf> {
    IMPORTS
        .iter()
        .map(|(name, src, comparisons, groups, skipped)| {
            let out = dir.join(format!("{name}.jsonl"));
            let src = fixture(&format!("benchmarks/{src}"));
            let printed = ok(&["bench", "import", name, s(&src), s(&out)]);
            let printed = String::from_utf8_lossy(&printed.stdout).into_owned();
            assert!(
                printed.contains(&format!(
                    "{comparisons} comparisons in {groups} groups, {skipped} rows skipped"
                )),
                "{name}: {printed}"
            );
            let rows: Vec<Value> = std::fs::read_to_string(&out)
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
            assert_eq!(rows.len() as u64, *comparisons, "{name}");
            assert!(rows.iter().all(|r| r["benchmark"] == *name), "{name}");
            out
        })
        .collect()
}

#[test]
fn every_benchmark_imports_from_its_released_layout_and_eval_headlines_equal_an_independent_computation(
) {
    let tmp = tempfile::tempdir().unwrap();
    let sets = import_all(tmp.path());
    let out = tmp.path().join("eval");
    let model = fixture("qwen3_rm_chat");
    let model_arg = format!("hf:{}", s(&model));
    let mut argv = vec![
        "eval",
        "--model",
        &model_arg,
        "--out",
        s(&out),
        "--no-score-cache",
        "--eval",
    ];
    argv.extend(sets.iter().map(|p| s(p)));
    let printed = String::from_utf8_lossy(&ok(&argv).stdout).into_owned();
    // One table row with seven scores and their mean.
    let header = printed
        .lines()
        .find(|l| l.starts_with("official scores"))
        .expect(&printed);
    for title in [
        "RewardBench",
        "RB 2",
        "PPE Pref",
        "PPE Corr",
        "RMB",
        "RM-Bench",
        "JudgeBench",
        "Avg.",
    ] {
        assert!(header.contains(title), "{header}");
    }
    let report = json_file(&out.join("report.json"));
    let benchmarks = report["benchmarks"].as_array().unwrap();
    assert_eq!(benchmarks.len(), 7);
    let ours: std::collections::BTreeMap<String, f64> = benchmarks
        .iter()
        .map(|b| {
            (
                b["score"]["benchmark"].as_str().unwrap().to_string(),
                b["score"]["headline"].as_f64().unwrap(),
            )
        })
        .collect();
    let row = printed.lines().nth(1).unwrap();
    let cells: Vec<f64> = row
        .split_whitespace()
        .skip(1)
        .map(|c| c.parse().unwrap())
        .collect();
    assert_eq!(cells.len(), 8, "{row}");
    let mean = ours.values().sum::<f64>() / 7.0;
    assert!((report["benchmark_mean"].as_f64().unwrap() - mean).abs() < 1e-12);
    assert!((cells[7] - 100.0 * mean).abs() <= 0.05 + 1e-9, "{row}");

    // Independently: the released files read again, each reply scored by `synpref
    // score`, each benchmark's own rules in Python.
    let reference = Command::new("python3")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/bench_reference.py"))
        .args([
            s(&fixture("benchmarks")),
            s(&tmp.path().join("reference")),
            env!("CARGO_BIN_EXE_synpref"),
            s(&model),
        ])
        .output()
        .expect("python3");
    assert!(
        reference.status.success(),
        "bench_reference.py: {}",
        String::from_utf8_lossy(&reference.stderr)
    );
    let theirs: std::collections::BTreeMap<String, f64> =
        serde_json::from_slice(&reference.stdout).unwrap();
    assert_eq!(
        ours.keys().collect::<Vec<_>>(),
        theirs.keys().collect::<Vec<_>>()
    );
    for (name, value) in &ours {
        assert!(
            (value - theirs[name]).abs() < 1e-9,
            "{name}: eval {value}, independent {}",
            theirs[name]
        );
    }
    // The fixtures hold reward ties where the rules treat them specially.
    let ties = |name: &str| {
        benchmarks
            .iter()
            .find(|b| b["score"]["benchmark"] == name)
            .unwrap()["score"]["ties"]
            .as_u64()
            .unwrap()
    };
    for name in ["rewardbench", "rewardbench2", "rm-bench", "judgebench"] {
        assert!(ties(name) >= 1, "{name} has no tie to exercise its rule");
    }
    // Each distinct (prompt, reply) is computed once (one extra per odd prompt).
    for b in benchmarks {
        let r = &b["replies"];
        assert!(
            r["sequences_scored"].as_u64()
                <= Some(
                    r["distinct_replies"].as_u64().unwrap()
                        + b["score"]["pairwise"]["n"].as_u64().unwrap()
                )
        );
    }
    let rb2 = benchmarks
        .iter()
        .find(|b| b["score"]["benchmark"] == "rewardbench2")
        .unwrap();
    assert_eq!(rb2["replies"]["distinct_replies"], 37);
}

#[test]
fn bench_import_of_a_file_in_another_layout_exits_2_naming_the_file_and_row() {
    let tmp = tempfile::tempdir().unwrap();
    let src = fixture("benchmarks/judgebench");
    let err = fails_with(
        &[
            "bench",
            "import",
            "rm-bench",
            s(&src),
            s(&tmp.path().join("x.jsonl")),
        ],
        2,
    );
    assert!(err.contains("judgebench") && err.contains("row 1"), "{err}");
    let err = fails_with(
        &[
            "bench",
            "import",
            "nobench",
            s(&src),
            s(&tmp.path().join("x.jsonl")),
        ],
        2,
    );
    assert!(err.contains("rewardbench2"), "{err}");
    assert!(!tmp.path().join("x.jsonl").exists());
}

/// The first row of the JudgeBench fixture, as released.
fn first_judgebench_row() -> Value {
    let text = std::fs::read_to_string(fixture(
        "benchmarks/judgebench/dataset=judgebench,response_model=gpt-4o-2024-05-13.jsonl",
    ))
    .unwrap();
    serde_json::from_str(text.lines().next().unwrap()).unwrap()
}

#[test]
fn curate_decontaminates_against_judgebench_rmb_and_rm_bench_files_as_released() {
    let tmp = tempfile::tempdir().unwrap();
    let first_line = first_judgebench_row();
    let judge_question = first_line["question"].as_str().unwrap().to_string();
    let rmb = json_file(&fixture(
        "benchmarks/rmb/RMB_dataset/BoN_set/Harmlessness/S1.json",
    ));
    let rmb_turn = rmb[1]["conversation_input"][0]["content"]
        .as_str()
        .unwrap()
        .to_string();
    let rm_bench = json_file(&fixture("benchmarks/rm-bench/total_dataset.json"));
    let rm_prompt = rm_bench[2]["prompt"].as_str().unwrap().to_string();
    let rows = [
        (
            "leak-judgebench",
            format!("Before you start: {judge_question} Thanks."),
        ),
        ("leak-rmb", format!("{rmb_turn} Please be brief.")),
        ("leak-rm-bench", rm_prompt),
        (
            "clean-1",
            "What is the boiling point of water at sea level in degrees Celsius and why".into(),
        ),
        (
            "clean-2",
            "Write a haiku about autumn leaves falling on a quiet river in the early morning"
                .into(),
        ),
        (
            "clean-3",
            "Explain how a hash map resolves collisions with open addressing and linear probing"
                .into(),
        ),
    ];
    let pairs = tmp.path().join("pairs.jsonl");
    let mut text = String::new();
    for (id, prompt) in &rows {
        text.push_str(
            &serde_json::json!({"pair_id": id, "prompt": prompt, "chosen": "A careful answer.", "rejected": "No."})
                .to_string(),
        );
        text.push('\n');
    }
    std::fs::write(&pairs, text).unwrap();
    let gold = tmp.path().join("gold.jsonl");
    std::fs::write(&gold, "{\"pair_id\":\"clean-1\",\"verdict\":\"chosen\"}\n").unwrap();
    let out = tmp.path().join("out");
    curate_ok(
        &pairs,
        &gold,
        &out,
        &[
            // Every row here has the same two replies, so rows with alike prompts are
            // near-duplicates; this test is about decontamination alone.
            "--no-near-dup",
            "--decontaminate",
            s(&fixture("benchmarks/judgebench")),
            s(&fixture("benchmarks/rmb")),
            s(&fixture("benchmarks/rm-bench/total_dataset.json")),
        ],
    );
    let mut all = Vec::new();
    for dir in ["curated", "discarded", "quarantine"] {
        all.extend(read_rows(&out.join(dir)));
    }
    assert_eq!(all.len(), rows.len(), "every row accounted for");
    for r in &all {
        let id = r["pair_id"].as_str().unwrap();
        let contaminated = r["reason"] == "contaminated";
        assert_eq!(
            contaminated,
            id.starts_with("leak-"),
            "{id}: {}",
            r["reason"]
        );
    }
}

/// The words of `text` as the decontaminator splits them (runs of ASCII alphanumerics
/// and non-ASCII characters), `n` of them from word `from`, joined by spaces.
fn words_of(text: &str, from: usize, n: usize) -> String {
    let words: Vec<&str> = text
        .split(|c: char| c.is_ascii() && !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .collect();
    assert!(words.len() >= from + n, "{text}");
    words[from..from + n].join(" ")
}

#[test]
fn whole_pair_decontamination_discards_replies_that_share_an_ngram_with_benchmark_replies_and_names_it(
) {
    let tmp = tempfile::tempdir().unwrap();
    let judgebench = first_judgebench_row();
    let rmb = json_file(&fixture(
        "benchmarks/rmb/RMB_dataset/BoN_set/Harmlessness/S1.json",
    ));
    let rm_bench = json_file(&fixture("benchmarks/rm-bench/total_dataset.json"));
    // Eight words of a JudgeBench response (a string), of an RMB best-of-N loser (an
    // object in a list) and of an RM-Bench chosen style (a string in a list); seven
    // words, one short of the n-gram, of the same JudgeBench response.
    let judge_8 = words_of(judgebench["response_A"].as_str().unwrap(), 1, 8);
    let rmb_8 = words_of(rmb[1]["loser_list"][0]["answer"].as_str().unwrap(), 2, 8);
    let rm_bench_8 = words_of(rm_bench[0]["chosen"][1].as_str().unwrap(), 0, 8);
    let judge_7 = words_of(judgebench["response_A"].as_str().unwrap(), 1, 7);
    let clean_prompt = "Explain how a hash map resolves collisions with open addressing";
    // (pair_id, chosen, rejected, the n-gram its `matched_ngram` must hold)
    let rows: [(&str, String, String, Option<&str>); 5] = [
        (
            "leak-judgebench-chosen",
            format!("Zebra quantum: {judge_8}, zebra."),
            "No.".into(),
            Some(&judge_8),
        ),
        (
            "leak-rmb-rejected",
            "A careful answer.".into(),
            format!("Quantum {rmb_8} zebra."),
            Some(&rmb_8),
        ),
        (
            "leak-rm-bench-chosen",
            format!("{rm_bench_8}!"),
            "No.".into(),
            Some(&rm_bench_8),
        ),
        (
            "seven-words-only",
            format!("Zebra quantum {judge_7} zebra."),
            "No.".into(),
            None,
        ),
        ("clean", "A careful answer.".into(), "No.".into(), None),
    ];
    let pairs = tmp.path().join("pairs.jsonl");
    let mut text = String::new();
    for (id, chosen, rejected, _) in &rows {
        text.push_str(
            &serde_json::json!({"pair_id": id, "prompt": clean_prompt, "chosen": chosen, "rejected": rejected})
                .to_string(),
        );
        text.push('\n');
    }
    std::fs::write(&pairs, text).unwrap();
    let gold = tmp.path().join("gold.jsonl");
    std::fs::write(&gold, "{\"pair_id\":\"clean\",\"verdict\":\"chosen\"}\n").unwrap();
    let benchmarks = [
        s(&fixture("benchmarks/judgebench")).to_string(),
        s(&fixture("benchmarks/rmb")).to_string(),
        s(&fixture("benchmarks/rm-bench/total_dataset.json")).to_string(),
    ];
    let run = |name: &str, extra: &[&str]| -> Vec<Value> {
        let out = tmp.path().join(name);
        let mut args: Vec<&str> = vec!["--decontaminate"];
        args.extend(benchmarks.iter().map(String::as_str));
        args.extend(extra);
        curate_ok(&pairs, &gold, &out, &args);
        let mut all = Vec::new();
        for dir in ["curated", "discarded", "quarantine"] {
            all.extend(read_rows(&out.join(dir)));
        }
        assert_eq!(all.len(), rows.len(), "{name}: every row accounted for");
        all
    };
    let whole_pair = run(
        "pair",
        &[
            "--decontaminate-scope",
            "pair",
            "--decontaminate-ngram",
            "8",
        ],
    );
    for (id, _, _, expected) in &rows {
        let r = whole_pair.iter().find(|r| r["pair_id"] == *id).unwrap();
        match expected {
            Some(ngram) => {
                assert_eq!(r["reason"], "contaminated", "{id}");
                assert_eq!(r["matched_ngram"], **ngram, "{id}");
            }
            None => {
                assert_ne!(r["reason"], "contaminated", "{id}");
                assert!(r["matched_ngram"].is_null(), "{id}: {r}");
            }
        }
    }
    // The default scope looks at prompts only: none of these prompts leaks.
    let prompt_only = run("prompt", &[]);
    assert!(prompt_only.iter().all(|r| r["reason"] != "contaminated"));
    // An n-gram length outside 5 to 13 is a bad setting that names its flag.
    let bad = tmp.path().join("bad");
    let mut argv = curate_argv(&pairs, &gold, &bad);
    argv.extend(["--decontaminate-ngram", "4"]);
    let err = fails_with(&argv, 2);
    assert!(err.contains("--decontaminate-ngram"), "{err}");
}

#[test]
fn fractions_on_an_imported_set_reports_its_official_score_per_fraction_as_eval_does() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    gen(&data, 2000, 5);
    let layout = tmp.path().join("rm-bench.jsonl");
    ok(&[
        "bench",
        "import",
        "rm-bench",
        s(&fixture("benchmarks/rm-bench/total_dataset.json")),
        s(&layout),
    ]);
    let out = tmp.path().join("out");
    ok(&[
        "fractions",
        "--pairs",
        s(&data.join("pairs")),
        "--gold",
        s(&data.join("gold.parquet")),
        "--eval",
        s(&layout),
        "--out",
        s(&out),
        "--fractions",
        "0.5,1",
        "--seeds",
        "1",
        "--no-progress",
    ]);
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(out.join("results.parquet"), dir.path().join("x.parquet")).unwrap();
    let rows = read_rows(dir.path());
    let whole: Vec<&Value> = rows.iter().filter(|r| r["subset"].is_null()).collect();
    assert_eq!(whole.len(), 4, "curated and raw at two fractions");
    // The domains are the parts.
    assert!(rows.iter().any(|r| r["subset"] == "safety"));
    for row in whole {
        let model = row["model"].as_str().unwrap();
        let eval_out = tmp.path().join(format!(
            "eval-{}-{}",
            row["set"].as_str().unwrap(),
            row["fraction"]
        ));
        ok(&[
            "eval",
            "--model",
            model,
            "--eval",
            s(&layout),
            "--out",
            s(&eval_out),
        ]);
        let e = json_file(&eval_out.join("report.json"));
        let headline = e["benchmarks"][0]["score"]["headline"].as_f64().unwrap();
        assert_eq!(row["accuracy"].as_f64().unwrap(), headline, "{row}");
    }
}
