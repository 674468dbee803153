//! `synpref fractions` (issue 14): nested subsets, a model per (set, fraction, seed)
//! whose accuracy `synpref eval` reproduces from the saved weights, the same results
//! with any worker count, a rerun after one more gold label that retrains exactly the
//! subsets whose contents changed and equals a run from an empty cache, and a user's
//! training command fed its subset in the trl layout. Runs on one process, or on two
//! started by `synpref launch`, give the same results.

use super::*;

use std::collections::BTreeMap;

/// (set, fraction, seed) → the table's whole-set row.
fn results_by_task(out: &Path) -> BTreeMap<(String, String, u64), Value> {
    let rows = read_rows_of(&out.join("results.parquet"));
    let mut by = BTreeMap::new();
    for r in rows {
        if !r["subset"].is_null() {
            continue;
        }
        let key = (
            r["set"].as_str().unwrap().to_string(),
            r["fraction"].to_string(),
            r["seed"].as_u64().unwrap(),
        );
        assert!(by.insert(key, r).is_none(), "one whole-set row per task");
    }
    by
}

fn read_rows_of(file: &Path) -> Vec<Value> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(file, dir.path().join("x.parquet")).unwrap();
    read_rows(dir.path())
}

/// The fields of a result that must not depend on where or how it was computed.
fn comparable(r: &Value) -> (u64, String, String, u64) {
    (
        r["pairs"].as_u64().unwrap(),
        r["subset_key"].as_str().unwrap().to_string(),
        r["accuracy"].to_string(),
        r["n"].as_u64().unwrap(),
    )
}

fn fractions_args<'a>(data: &'a Path, out: &'a Path, workers: &'a str) -> Vec<&'a str> {
    vec![
        "fractions",
        "--pairs",
        s_static(data.join("pairs")),
        "--eval",
        s_static(data.join("eval.parquet")),
        "--out",
        s(out),
        "--fractions",
        "0.01,0.1,0.5,1",
        "--seeds",
        "2",
        "--workers",
        workers,
        "--no-progress",
    ]
}

/// A path as a `&'static str` (tests hold a handful).
fn s_static(p: PathBuf) -> &'static str {
    Box::leak(p.into_os_string().into_string().unwrap().into_boxed_str())
}

/// `fractions` on gen's data at fractions 0.5 and 1, one seed, curating with its gold
/// labels, on the CPU with a score cache, with `trainer` (the trainer's flags).
fn small_fractions_args<'a>(
    data: &Path,
    out: &'a Path,
    score_cache: &'a Path,
    trainer: &[&'a str],
) -> Vec<&'a str> {
    let mut args = vec![
        "fractions",
        "--pairs",
        s_static(data.join("pairs")),
        "--gold",
        s_static(data.join("gold.parquet")),
        "--eval",
        s_static(data.join("eval.parquet")),
        "--out",
        s(out),
        "--fractions",
        "0.5,1",
        "--seeds",
        "1",
    ];
    args.extend_from_slice(trainer);
    args.extend([
        "--score-cache",
        s(score_cache),
        "--device",
        "cpu",
        "--no-progress",
    ]);
    args
}

#[test]
fn fractions_trains_nested_subsets_that_eval_reproduces_whatever_the_worker_count() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    gen(&data, 6000, 11);
    let out = tmp.path().join("out");
    let mut args = fractions_args(&data, &out, "3");
    let gold = data.join("gold.parquet");
    let judges = data.join("judge_votes.parquet");
    args.extend(["--gold", s(&gold), "--judges", s(&judges)]);
    let printed = String::from_utf8(ok(&args).stdout).unwrap();
    assert!(
        printed.contains("curated") && printed.contains("raw"),
        "{printed}"
    );

    let report = json_file(&out.join("report.json"));
    assert_eq!(report["tasks"], 16);
    assert_eq!(report["models_trained"], 16);
    assert_eq!(report["models_reused"], 0);
    let curated_rows = read_rows(&out.join("curate/curated")).len() as u64;
    assert_eq!(report["curated_pairs"], curated_rows);

    let by = results_by_task(&out);
    assert_eq!(by.len(), 16);
    for seed in 0..2u64 {
        let pairs = |set: &str, f: &str| {
            by[&(set.to_string(), f.to_string(), seed)]["pairs"]
                .as_u64()
                .unwrap()
        };
        // Nested and growing with the fraction; the whole curated set at 1; the raw
        // subset as large as the curated one.
        let curated: Vec<u64> = ["0.01", "0.1", "0.5", "1.0"]
            .iter()
            .map(|f| pairs("curated", f))
            .collect();
        assert!(curated.windows(2).all(|w| w[0] < w[1]), "{curated:?}");
        assert_eq!(curated[3], curated_rows);
        assert!((curated[1] as f64 - 0.1 * curated_rows as f64).abs() < 0.03 * curated_rows as f64);
        for f in ["0.01", "0.1", "0.5", "1.0"] {
            assert_eq!(pairs("raw", f), pairs("curated", f), "raw {f} seed {seed}");
        }
    }
    // The two seeds draw different subsets.
    assert_ne!(
        by[&("curated".into(), "0.1".into(), 0)]["subset_key"],
        by[&("curated".into(), "0.1".into(), 1)]["subset_key"]
    );
    // The report's curve is the mean of the table's rows.
    for p in report["curves"].as_array().unwrap() {
        let set = p["set"].as_str().unwrap();
        let f = format!("{:?}", p["fraction"].as_f64().unwrap());
        let accs: Vec<f64> = (0..2)
            .map(|seed| {
                by[&(set.to_string(), f.clone(), seed)]["accuracy"]
                    .as_f64()
                    .unwrap()
            })
            .collect();
        let mean = (accs[0] + accs[1]) / 2.0;
        assert!(
            (p["accuracy_mean"].as_f64().unwrap() - mean).abs() < 1e-12,
            "{p}"
        );
    }

    // `synpref eval` on a saved model gives the table's accuracy (its own code path
    // from the weights on disk).
    for key in [
        ("curated".to_string(), "0.1".to_string(), 1),
        ("raw".to_string(), "1.0".to_string(), 0),
    ] {
        let row = &by[&key];
        let model = row["model"].as_str().unwrap();
        assert!(model.starts_with("saved:"), "{model}");
        let eval_out = tmp.path().join(format!("eval-{}-{}", key.0, key.1));
        let eval_file = data.join("eval.parquet");
        ok(&[
            "eval",
            "--model",
            model,
            "--eval",
            s(&eval_file),
            "--out",
            s(&eval_out),
        ]);
        let e = json_file(&eval_out.join("report.json"));
        assert_eq!(e["sets"][0]["overall"]["value"], row["accuracy"], "{key:?}");
        assert_eq!(e["sets"][0]["overall"]["n"], row["n"]);
    }

    // The CSV holds the same rows; the plots are real PNG and SVG files.
    let csv = std::fs::read_to_string(out.join("results.csv")).unwrap();
    assert_eq!(csv.lines().count(), 1 + 16, "{csv}");
    assert!(csv.starts_with("set,fraction,seed,pairs,eval,subset,accuracy"));
    let png = std::fs::read(out.join("accuracy.png")).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    let (w, h) = (
        u32::from_be_bytes(png[16..20].try_into().unwrap()),
        u32::from_be_bytes(png[20..24].try_into().unwrap()),
    );
    assert_eq!((w, h), (800, 480));
    let svg = std::fs::read_to_string(out.join("accuracy.svg")).unwrap();
    assert!(
        svg.starts_with("<svg") && svg.contains("raw (same size)"),
        "{}",
        &svg[..200.min(svg.len())]
    );

    // One worker, the curate output given as it is, another cache: the same subsets
    // and accuracies.
    let out1 = tmp.path().join("out1");
    let mut args = fractions_args(&data, &out1, "1");
    let curated = out.join("curate");
    args.extend(["--curated", s(&curated)]);
    ok(&args);
    let one = results_by_task(&out1);
    for (k, r) in &by {
        assert_eq!(comparable(r), comparable(&one[k]), "{k:?}");
    }
    // Two timely processes of two workers each, started by `synpref launch`.
    let out2 = tmp.path().join("out2");
    let mut args = vec!["launch", "--local", "2", "--"];
    args.extend(fractions_args(&data, &out2, "2"));
    args.extend(["--curated", s(&curated)]);
    ok(&args);
    let two = results_by_task(&out2);
    for (k, r) in &by {
        assert_eq!(comparable(r), comparable(&two[k]), "{k:?}");
    }
}

#[test]
fn a_rerun_after_one_more_gold_label_retrains_only_changed_subsets_and_equals_a_fresh_run() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    gen(&data, 6000, 12);
    let out = tmp.path().join("out");
    let gold_dir = tmp.path().join("gold");
    std::fs::create_dir_all(&gold_dir).unwrap();
    std::fs::copy(data.join("gold.parquet"), gold_dir.join("gold.parquet")).unwrap();
    let run = |out: &Path| {
        let mut args = fractions_args(&data, out, "2");
        args.extend(["--gold", s_static(gold_dir.clone())]);
        ok(&args);
        (json_file(&out.join("report.json")), results_by_task(out))
    };
    let (_, before) = run(&out);
    // One more human verdict, against the pool's label of a pair no human labelled:
    // curate now keeps that pair corrected.
    let labelled: std::collections::HashSet<String> = read_rows_of(&data.join("gold.parquet"))
        .iter()
        .map(|r| r["pair_id"].as_str().unwrap().to_string())
        .collect();
    let truth = read_rows_of(&data.join("truth.parquet"));
    let target = truth
        .iter()
        .find(|r| {
            r["preference"] == "rejected" && !labelled.contains(r["pair_id"].as_str().unwrap())
        })
        .unwrap()["pair_id"]
        .as_str()
        .unwrap()
        .to_string();
    std::fs::write(
        gold_dir.join("more.jsonl"),
        format!("{{\"pair_id\": \"{target}\", \"verdict\": \"rejected\"}}\n"),
    )
    .unwrap();
    let (report, after) = run(&out);
    let corrected: Vec<Value> = read_rows(&out.join("curate/curated"))
        .into_iter()
        .filter(|r| r["pair_id"] == target.as_str())
        .collect();
    assert_eq!(corrected.len(), 1);
    assert_eq!(corrected[0]["reason"], "human_corrected");

    // Exactly the tasks whose subset changed were trained again.
    let mut trained = 0;
    for (k, r) in &after {
        let changed = r["subset_key"] != before[k]["subset_key"];
        assert_eq!(r["trained"].as_bool().unwrap(), changed, "{k:?}");
        trained += usize::from(changed);
    }
    assert_eq!(report["models_trained"], trained);
    assert_eq!(report["models_reused"], 16 - trained);
    // The corrected pair is in the whole curated set: that subset changed. The 1%
    // subsets of this pool hold ~40 pairs: some stayed as they were.
    assert!(after[&("curated".into(), "1.0".into(), 0)]["trained"]
        .as_bool()
        .unwrap());
    assert!(trained < 16, "some subsets are unchanged and reused");

    // The incremental rerun equals a run from an empty cache on the same inputs.
    let fresh = tmp.path().join("fresh");
    let (fresh_report, from_scratch) = run(&fresh);
    assert_eq!(fresh_report["models_trained"], 16);
    for (k, r) in &after {
        assert_eq!(comparable(r), comparable(&from_scratch[k]), "{k:?}");
    }
}

#[test]
fn fractions_runs_a_training_command_per_subset_on_its_data_in_the_trl_layout() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    gen(&data, 1500, 13);
    let out = tmp.path().join("out");
    let model = fixture("qwen3_rm_chat");
    // The "trainer": keeps what it was given beside a (fixed) reward model, which
    // stands in for TRL's RewardTrainer output.
    let command = format!(
        "mkdir -p {{model_dir}} && cp {}/config.json {}/model.safetensors {}/tokenizer.json {}/tokenizer_config.json {{model_dir}}/ && cp -r {{data}} {{model_dir}}/seen && test \"$SYNPREF_DATA\" = {{data}}",
        s(&model), s(&model), s(&model), s(&model)
    );
    let score_cache = tmp.path().join("scores");
    let args = small_fractions_args(
        &data,
        &out,
        &score_cache,
        &["--trainer", "command", "--train-command", &command],
    );
    ok(&args);
    let report = json_file(&out.join("report.json"));
    assert_eq!(report["models_trained"], 4);
    // A random-weight model is no better than chance, and the report says so.
    let warnings = report["warnings"].to_string();
    assert!(warnings.contains("no better than chance"), "{warnings}");
    for r in results_by_task(&out).values() {
        let model = r["model"].as_str().unwrap();
        let dir = PathBuf::from(model.strip_prefix("hf:").expect("an hf model"));
        let seen = read_rows(&dir.join("seen"));
        assert_eq!(seen.len() as u64, r["pairs"].as_u64().unwrap());
        // The trl layout: pair id, whole conversations, a margin; nothing else.
        let mut columns: Vec<&String> = seen[0].as_object().unwrap().keys().collect();
        columns.sort();
        assert_eq!(columns, ["chosen", "margin", "pair_id", "rejected"]);
        assert!(seen[0]["chosen"].is_array(), "{}", seen[0]);
    }
    // A failing command fails the run (exit 1), naming the subset and its output.
    let failing = tmp.path().join("failing");
    let mut args = args.clone();
    let out_pos = args.iter().position(|a| *a == s(&out)).unwrap();
    args[out_pos] = s(&failing);
    let cmd_pos = args.iter().position(|a| *a == command).unwrap();
    args[cmd_pos] = "echo no gpu here >&2; exit 3 # {model_dir}";
    let e = fails_with(&args, 1);
    assert!(
        e.contains("the training command for") && e.contains("no gpu here"),
        "{e}"
    );
    assert!(!failing.join("report.json").exists());
    // A template without {model_dir} is a usage error.
    args[cmd_pos] = "true";
    let e = fails_with(&args, 2);
    assert!(e.contains("--train-command"), "{e}");
}

#[test]
fn fractions_trains_encoder_heads_that_eval_reloads_and_a_rerun_reuses_every_model() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    gen(&data, 1500, 14);
    let out = tmp.path().join("out");
    let trainer = format!("encoder:{}", s(&fixture("bert_minilm")));
    let score_cache = tmp.path().join("scores");
    let args = small_fractions_args(&data, &out, &score_cache, &["--trainer", &trainer]);
    ok(&args);
    let first = results_by_task(&out);
    assert_eq!(json_file(&out.join("report.json"))["models_trained"], 4);
    // A saved head names its encoder; eval reloads both and gives the table's figure.
    let row = &first[&("curated".to_string(), "1.0".to_string(), 0)];
    let model = row["model"].as_str().unwrap();
    let card =
        json_file(&PathBuf::from(model.strip_prefix("saved:").unwrap()).join("synpref_model.json"));
    assert_eq!(card["kind"]["type"], "encoder_head");
    let eval_out = tmp.path().join("eval");
    let eval_file = data.join("eval.parquet");
    ok(&[
        "eval",
        "--model",
        model,
        "--eval",
        s(&eval_file),
        "--out",
        s(&eval_out),
        "--score-cache",
        s(&score_cache),
        "--device",
        "cpu",
    ]);
    assert_eq!(
        json_file(&eval_out.join("report.json"))["sets"][0]["overall"]["value"],
        row["accuracy"]
    );
    // Nothing changed: every model and evaluation comes from the cache.
    ok(&args);
    let report = json_file(&out.join("report.json"));
    assert_eq!(report["models_trained"], 0);
    assert_eq!(report["models_reused"], 4);
    assert_eq!(report["evaluations_reused"], 4);
    let again = results_by_task(&out);
    for (k, r) in &first {
        assert_eq!(comparable(r), comparable(&again[k]), "{k:?}");
    }
}
