//! synpref's one integration-test binary (ripgrep style): every test runs the real
//! `synpref` binary on real files and checks what it wrote. Tests are named after what
//! they guard.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

use arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use serde_json::Value;

fn synpref(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_synpref"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run synpref")
}

fn ok(args: &[&str]) -> Output {
    let out = synpref(args);
    assert!(
        out.status.success(),
        "synpref {args:?} failed: {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn fails_with(args: &[&str], code: i32) -> String {
    let out = synpref(args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(code),
        "synpref {args:?}: expected exit {code}; stderr: {stderr}"
    );
    stderr
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// Rows of every Parquet part under `dir`, as JSON objects sorted by pair_id (then by
/// the whole row), so that outputs can be compared whatever the worker count.
fn read_rows(dir: &Path) -> Vec<Value> {
    let mut rows = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return rows;
    };
    let mut paths: Vec<PathBuf> = entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
        .collect();
    paths.sort();
    for p in paths {
        let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(&p).unwrap())
            .unwrap()
            .build()
            .unwrap();
        for batch in reader {
            let batch = batch.unwrap();
            let mut buf = Vec::new();
            {
                let mut w = arrow::json::writer::LineDelimitedWriter::new(&mut buf);
                w.write(&batch).unwrap();
                w.finish().unwrap();
            }
            for line in buf.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                rows.push(serde_json::from_slice::<Value>(line).unwrap());
            }
        }
    }
    rows.sort_by_key(|r| {
        (
            r["pair_id"].as_str().unwrap_or("").to_string(),
            r.to_string(),
        )
    });
    rows
}

/// Every part's bytes under curated/, discarded/ and quarantine/, by name without the
/// run id (`part-WWWWW-NNNNN-<run id>.parquet`).
fn part_bytes(out: &Path) -> Vec<(String, Vec<u8>)> {
    let mut parts = Vec::new();
    for dest in ["curated", "discarded", "quarantine"] {
        let Ok(entries) = std::fs::read_dir(out.join(dest)) else {
            continue;
        };
        for e in entries {
            let path = e.unwrap().path();
            let name = path.file_name().unwrap().to_str().unwrap().to_string();
            let stem = name
                .rsplit_once('-')
                .map_or(name.clone(), |(s, _)| s.to_string());
            parts.push((format!("{dest}/{stem}"), std::fs::read(&path).unwrap()));
        }
    }
    parts.sort();
    parts
}

/// The same part files with the same bytes (the rows of each read batch are written in
/// row-key order, whatever order they reached their worker in).
fn assert_same_part_bytes(a: &Path, b: &Path) {
    let (pa, pb) = (part_bytes(a), part_bytes(b));
    assert_eq!(
        pa.iter().map(|p| &p.0).collect::<Vec<_>>(),
        pb.iter().map(|p| &p.0).collect::<Vec<_>>(),
        "the part files differ between {} and {}",
        a.display(),
        b.display()
    );
    for ((name, x), (_, y)) in pa.iter().zip(&pb) {
        assert!(
            x == y,
            "{name} differs in its bytes between {} and {}",
            a.display(),
            b.display()
        );
    }
}

fn report(out: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(out.join("report.json")).expect("report.json")).unwrap()
}

/// DESIGN §4: input_rows = curated_rows + discarded_rows + quarantined_rows, the reason
/// counts add up, and the files hold exactly the counted rows.
fn assert_accounting(out: &Path) -> Value {
    let r = report(out);
    let n = |k: &str| {
        r[k].as_u64()
            .unwrap_or_else(|| panic!("report lacks {k}: {r}"))
    };
    assert_eq!(
        n("input_rows"),
        n("curated_rows") + n("discarded_rows") + n("quarantined_rows"),
        "{r}"
    );
    let by_reason: u64 = r["reasons"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(by_reason, n("input_rows"));
    assert_eq!(
        read_rows(&out.join("curated")).len() as u64,
        n("curated_rows")
    );
    assert_eq!(
        read_rows(&out.join("discarded")).len() as u64,
        n("discarded_rows")
    );
    assert_eq!(
        read_rows(&out.join("quarantine")).len() as u64,
        n("quarantined_rows")
    );
    assert!(
        out.join("manifest.json").exists(),
        "manifest.json is the commit marker"
    );
    assert!(r["elapsed_s"].as_f64().is_some() && r["workers"].as_u64().is_some());
    r
}

fn gen(dir: &Path, pairs: u64, seed: u64) {
    gen_with(dir, pairs, seed, &[]);
}

/// `synpref gen --pairs N --out DIR --seed S EXTRA…`.
fn gen_with(dir: &Path, pairs: u64, seed: u64, extra: &[&str]) {
    let (pairs, seed) = (pairs.to_string(), seed.to_string());
    let args = ["gen", "--pairs", &pairs, "--out", s(dir), "--seed", &seed];
    ok(&[&args[..], extra].concat());
}

fn write_parquet(path: &Path, columns: Vec<(&str, ArrayRef)>) {
    let schema = Arc::new(Schema::new(
        columns
            .iter()
            .map(|(n, a)| Field::new(*n, a.data_type().clone(), true))
            .collect::<Vec<_>>(),
    ));
    let batch = RecordBatch::try_new(
        schema.clone(),
        columns.into_iter().map(|(_, a)| a).collect(),
    )
    .unwrap();
    let mut w = ArrowWriter::try_new(File::create(path).unwrap(), schema, None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
}

/// A pool directory holding `gen`'s pairs and the crafted JSONL rows side by side.
fn pool_with_crafted_rows(tmp: &Path, data: &Path) -> PathBuf {
    let pool = tmp.join("pool");
    std::fs::create_dir_all(&pool).unwrap();
    for e in std::fs::read_dir(data.join("pairs")).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, pool.join(p.file_name().unwrap())).unwrap();
    }
    write_crafted_jsonl(&pool.join("crafted.jsonl"));
    pool
}

/// `curate --pairs P --gold G --out O`: the arguments every curate test starts from.
fn curate_argv<'a>(pairs: &'a Path, gold: &'a Path, out: &'a Path) -> Vec<&'a str> {
    vec![
        "curate",
        "--pairs",
        s(pairs),
        "--gold",
        s(gold),
        "--out",
        s(out),
    ]
}

/// `synpref curate --pairs P --gold G --out O --no-progress EXTRA…`, expecting success.
fn curate_ok(pairs: &Path, gold: &Path, out: &Path, extra: &[&str]) -> Output {
    let mut args = curate_argv(pairs, gold, out);
    args.push("--no-progress");
    ok(&[&args[..], extra].concat())
}

/// Every file under `dir`, relative to it, sorted (empty when `dir` does not exist).
fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p.strip_prefix(dir).unwrap().to_string_lossy().into_owned());
            }
        }
    }
    out.sort();
    out
}

/// Runs curate on `pairs` and `gold` expecting exit 2; returns stderr.
fn curate_fails(pairs: &Path, gold: &Path, out: &Path) -> String {
    fails_with(
        &[
            "curate",
            "--pairs",
            s(pairs),
            "--gold",
            s(gold),
            "--out",
            s(out),
        ],
        2,
    )
}

fn strings(v: &[&str]) -> ArrayRef {
    Arc::new(StringArray::from(v.to_vec()))
}

#[test]
fn curated_rows_are_identical_with_1_2_and_4_workers_and_curation_beats_the_input() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("g");
    gen(&data, 20_000, 7);
    let mut outputs = Vec::new();
    for workers in [1, 2, 4] {
        let out = tmp.path().join(format!("o{workers}"));
        ok(&[
            "curate",
            "--pairs",
            s(&data.join("pairs")),
            "--gold",
            s(&data.join("gold.parquet")),
            "--truth",
            s(&data.join("truth.parquet")),
            "--out",
            s(&out),
            "--workers",
            &workers.to_string(),
        ]);
        let r = assert_accounting(&out);
        assert_eq!(r["workers"], workers);
        assert_eq!(r["input_rows"], 20_000);
        let (a, b) = (
            r["truth_agreement_input"].as_f64().unwrap(),
            r["truth_agreement_curated"].as_f64().unwrap(),
        );
        assert!(
            b >= a + 0.05,
            "curation must help: input {a:.3}, curated {b:.3}"
        );
        assert_truth_agreement_matches_the_files(&out, &data.join("truth.parquet"), &r);
        assert_quality_estimate_predicts_the_truth(&r, GEN_GOLD_ERROR);
        outputs.push(out);
    }
    // The self-measurement is computed on one worker from inputs in a total order.
    let quality: Vec<Value> = outputs
        .iter()
        .map(|o| report(o)["quality"].clone())
        .collect();
    assert!(quality.iter().all(|q| *q == quality[0]), "{quality:?}");
    for dest in ["curated", "discarded", "quarantine"] {
        let one = read_rows(&outputs[0].join(dest));
        assert!(!one.is_empty() || dest == "quarantine");
        for other in &outputs[1..] {
            assert!(
                one == read_rows(&other.join(dest)),
                "{dest} differs between worker counts"
            );
        }
    }
}

/// A JSONL file with one row of each kind of bad input, plus valid rows in the TRL
/// implicit-prompt form and with an extra column.
/// `gen`'s annotator error (jobs/src/gen.rs `GOLD_ERROR`): a gold verdict is wrong with
/// this probability.
const GEN_GOLD_ERROR: f64 = 0.03;

/// The named string columns of a Parquet file, row by row (`None` for a null).
fn string_columns(path: &Path, names: &[&str]) -> Vec<Vec<Option<String>>> {
    use arrow::array::Array;
    let file = File::open(path).unwrap();
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .build()
        .unwrap();
    let mut rows = Vec::new();
    for batch in reader {
        let batch = batch.unwrap();
        let cols: Vec<StringArray> = names
            .iter()
            .map(|name| {
                batch
                    .column_by_name(name)
                    .unwrap()
                    .as_any()
                    .downcast_ref::<StringArray>()
                    .unwrap()
                    .clone()
            })
            .collect();
        for i in 0..batch.num_rows() {
            rows.push(
                cols.iter()
                    .map(|c| c.is_valid(i).then(|| c.value(i).to_string()))
                    .collect(),
            );
        }
    }
    rows
}

/// pair_id → whether the pool's chosen reply is truly better, from truth.parquet.
fn truth_map(path: &Path) -> std::collections::HashMap<String, bool> {
    string_columns(path, &["pair_id", "preference"])
        .into_iter()
        .map(|r| (r[0].clone().unwrap(), r[1].as_deref() == Some("chosen")))
        .collect()
}

/// Recomputes the report's truth agreement from the files curate wrote: a curated row's
/// label matches the truth when the pool's chosen reply is truly better, unless the row
/// was written swapped (`human_corrected`).
fn assert_truth_agreement_matches_the_files(out: &Path, truth: &Path, r: &Value) {
    let truth = truth_map(truth);
    let (mut n, mut hits, mut model_n, mut model_hits) = (0u64, 0u64, 0u64, 0u64);
    for row in read_rows(&out.join("curated")) {
        let Some(&chosen_better) = truth.get(row["pair_id"].as_str().unwrap()) else {
            continue;
        };
        let reason = row["reason"].as_str().unwrap();
        let matches = chosen_better != (reason == "human_corrected");
        n += 1;
        hits += matches as u64;
        if reason == "both_rms_agree" || reason == "gold_rm_and_judge_agree" {
            model_n += 1;
            model_hits += matches as u64;
        }
    }
    let close = |k: &str, v: f64| {
        let got = r[k].as_f64().unwrap_or_else(|| panic!("report lacks {k}"));
        assert!((got - v).abs() < 1e-9, "{k}: report {got}, files {v}");
    };
    close("truth_agreement_curated", hits as f64 / n as f64);
    close(
        "truth_agreement_model_curated",
        model_hits as f64 / model_n as f64,
    );
    assert_eq!(r["truth_rows_model_curated"], model_n);
}

/// DESIGN §4 `quality`: every field is there, and the estimated accuracy of the labels
/// the models keep agrees with what the truth predicts for annotators who err with
/// probability `e`: t(1 − e) + (1 − t)e, t the measured truth agreement.
fn assert_quality_estimate_predicts_the_truth(r: &Value, e: f64) {
    let q = &r["quality"];
    for k in ["cv_accuracy", "ci95", "n"] {
        assert!(
            !q["gold_rm"][k].is_null(),
            "quality.gold_rm.{k} missing: {q}"
        );
    }
    for which in ["input", "model_curated"] {
        for k in ["value", "ci95", "n"] {
            assert!(
                !q["estimated_label_accuracy"][which][k].is_null(),
                "quality.estimated_label_accuracy.{which}.{k} missing: {q}"
            );
        }
    }
    assert!(q["warnings"].is_array());
    let t = r["truth_agreement_model_curated"].as_f64().unwrap();
    let predicted = t * (1.0 - e) + (1.0 - t) * e;
    let mc = &q["estimated_label_accuracy"]["model_curated"];
    let (low, high) = (
        mc["ci95"][0].as_f64().unwrap(),
        mc["ci95"][1].as_f64().unwrap(),
    );
    assert!(
        low <= predicted && predicted <= high,
        "estimate {mc} does not contain {predicted:.4} (truth agreement {t:.4}, annotator error {e})"
    );
    let gold = &q["gold_rm"];
    assert!(
        gold["ci95"][0].as_f64().unwrap() > 0.5,
        "the gold RM must beat chance on generated data: {gold}"
    );
}

fn write_crafted_jsonl(path: &Path) {
    let long = "x".repeat(3000);
    let lines = vec![
        "this line is not json".to_string(),
        r#"{"pair_id":"wrong-type","prompt":"p","chosen":5,"rejected":"r"}"#.to_string(),
        r#"{"pair_id":"no-prompt","chosen":"a","rejected":"b"}"#.to_string(),
        r#"{"pair_id":"no-rejected","prompt":"p","chosen":"a"}"#.to_string(),
        r#"{"pair_id":"empty","prompt":"p","chosen":"   ","rejected":"b"}"#.to_string(),
        format!(r#"{{"pair_id":"too-large","prompt":"p","chosen":"{long}","rejected":"b"}}"#),
        r#"{"pair_id":"implicit-bad","chosen":[{"role":"user","content":"hi"},{"role":"assistant","content":"a"}],"rejected":[{"role":"user","content":"other"},{"role":"assistant","content":"b"}]}"#.to_string(),
        r#"{"pair_id":"reused","prompt":"first","chosen":"a","rejected":"b","note":"kept"}"#.to_string(),
        r#"{"pair_id":"reused","prompt":"second","chosen":"a","rejected":"b"}"#.to_string(),
        r#"{"pair_id":"implicit-ok","chosen":[{"role":"user","content":"hello there"},{"role":"assistant","content":"kind reply"}],"rejected":[{"role":"user","content":"hello there"},{"role":"assistant","content":"rude reply"}],"note":"carried"}"#.to_string(),
        r#"{"pair_id":"copy-1","prompt":"same","chosen":"c","rejected":"d"}"#.to_string(),
        r#"{"pair_id":"copy-2","prompt":"same","chosen":"c","rejected":"d"}"#.to_string(),
        r#"{"pair_id":"undecided","prompt":"q","chosen":"c1","rejected":"d1"}"#.to_string(),
        r#"{"pair_id":"leaked","prompt":"please answer the following benchmark question about the capital city of the republic of nowhere today","chosen":"c2","rejected":"d2"}"#.to_string(),
    ];
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
}

#[test]
fn every_reason_code_is_reached_and_bad_rows_are_quarantined_with_their_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("g");
    gen(&data, 4_000, 11);
    let pool = pool_with_crafted_rows(tmp.path(), &data);
    let gold = tmp.path().join("gold");
    std::fs::create_dir_all(&gold).unwrap();
    std::fs::copy(data.join("gold.parquet"), gold.join("a.parquet")).unwrap();
    std::fs::write(
        gold.join("b.jsonl"),
        "{\"pair_id\":\"undecided\",\"verdict\":\"undecidable\"}\n",
    )
    .unwrap();
    let bench = tmp.path().join("bench.jsonl");
    std::fs::write(
        &bench,
        "{\"prompt\":\"Please answer the following benchmark question about the capital city of the Republic of Nowhere\"}\n",
    )
    .unwrap();
    let out = tmp.path().join("out");
    ok(&[
        "curate",
        "--pairs",
        s(&pool),
        "--gold",
        s(&gold),
        "--judges",
        s(&data.join("judge_votes.parquet")),
        "--decontaminate",
        s(&bench),
        "--max-pair-bytes",
        "2000",
        "--out",
        s(&out),
        "--workers",
        "2",
    ]);
    let r = assert_accounting(&out);
    for code in [
        "human_agrees",
        "human_corrected",
        "both_rms_agree",
        "gold_rm_and_judge_agree",
        "human_undecidable",
        "gold_rm_disagrees",
        "best_rm_and_judge_disagree",
        "duplicate",
        "contaminated",
        "invalid_unparsable",
        "invalid_wrong_type",
        "invalid_missing_prompt",
        "invalid_missing_response",
        "invalid_empty_response",
        "invalid_too_large",
        "invalid_implicit_prompt",
        "invalid_duplicate_pair_id",
    ] {
        assert!(
            r["reasons"][code].as_u64().unwrap_or(0) > 0,
            "reason {code} never reached: {}",
            r["reasons"]
        );
        assert_eq!(r[code], r["reasons"][code]);
    }
    let quarantine = read_rows(&out.join("quarantine"));
    let reason_of = |id: &str| -> String {
        let row = quarantine
            .iter()
            .find(|r| r["pair_id"] == id)
            .unwrap_or_else(|| panic!("{id} not quarantined"));
        assert!(row["source_file"]
            .as_str()
            .unwrap()
            .ends_with("crafted.jsonl"));
        assert!(row["error"].as_str().is_some_and(|e| !e.is_empty()));
        row["reason"].as_str().unwrap().to_string()
    };
    assert_eq!(reason_of("wrong-type"), "invalid_wrong_type");
    assert_eq!(reason_of("no-prompt"), "invalid_missing_prompt");
    assert_eq!(reason_of("no-rejected"), "invalid_missing_response");
    assert_eq!(reason_of("empty"), "invalid_empty_response");
    assert_eq!(reason_of("too-large"), "invalid_too_large");
    assert_eq!(reason_of("implicit-bad"), "invalid_implicit_prompt");
    assert_eq!(reason_of("reused"), "invalid_duplicate_pair_id");
    let reused = quarantine
        .iter()
        .find(|r| r["pair_id"] == "reused")
        .unwrap();
    assert_eq!(
        reused["source_row"], 9,
        "rows routed after validation keep their line number"
    );
    let unparsable = quarantine
        .iter()
        .find(|r| r["reason"] == "invalid_unparsable")
        .expect("unparsable row");
    assert_eq!(unparsable["raw"], "this line is not json");
    assert_eq!(
        unparsable["source_row"], 1,
        "JSONL rows are named by line number"
    );
    // Valid rows of every form made it through with their extra columns.
    let all: Vec<Value> = ["curated", "discarded"]
        .iter()
        .flat_map(|d| read_rows(&out.join(d)))
        .collect();
    let implicit = all
        .iter()
        .find(|r| r["pair_id"] == "implicit-ok")
        .expect("implicit-prompt pair kept as data");
    assert_eq!(implicit["note"], "carried");
    assert_eq!(
        all.iter().find(|r| r["pair_id"] == "reused").unwrap()["note"],
        "kept"
    );
    assert!(
        all.iter().filter(|r| r["gen_index"].is_i64()).count() >= 3_900,
        "gen_index carried through"
    );
    let dup = all.iter().find(|r| r["pair_id"] == "copy-2").unwrap();
    assert_eq!(dup["reason"], "duplicate");
    assert_ne!(
        all.iter().find(|r| r["pair_id"] == "copy-1").unwrap()["reason"],
        "duplicate",
        "the first copy is kept"
    );
    assert_eq!(
        all.iter().find(|r| r["pair_id"] == "leaked").unwrap()["reason"],
        "contaminated"
    );
    assert_eq!(
        all.iter().find(|r| r["pair_id"] == "undecided").unwrap()["reason"],
        "human_undecidable"
    );
    // Human corrections are written swapped, with p for the row as written.
    let corrected: Vec<&Value> = all
        .iter()
        .filter(|r| r["reason"] == "human_corrected")
        .collect();
    assert!(!corrected.is_empty());
}

#[test]
fn human_corrected_pairs_are_swapped_and_emit_flipped_swaps_rm_discards() {
    let tmp = tempfile::tempdir().unwrap();
    let pool = tmp.path().join("pool.jsonl");
    std::fs::write(
        &pool,
        [
            r#"{"pair_id":"a","prompt":"p","chosen":"good answer","rejected":"bad answer"}"#,
            // Other prompts: with p, b would be a's swapped copy (`conflicting_labels`)
            // and c a near-duplicate candidate.
            r#"{"pair_id":"b","prompt":"q","chosen":"bad answer","rejected":"good answer"}"#,
            r#"{"pair_id":"c","prompt":"r","chosen":"bad answer here","rejected":"good answer here"}"#,
        ]
        .join("\n"),
    )
    .unwrap();
    let gold = tmp.path().join("gold.jsonl");
    std::fs::write(
        &gold,
        [
            r#"{"pair_id":"a","verdict":"chosen"}"#,
            r#"{"pair_id":"b","verdict":"chosen","labeled_at":"2025-01-01"}"#,
            r#"{"pair_id":"b","verdict":"rejected","labeled_at":"2025-02-01"}"#,
            r#"{"pair_id":"g1","verdict":"chosen","prompt":"p","chosen":"good reply","rejected":"bad reply"}"#,
        ]
        .join("\n"),
    )
    .unwrap();
    let out = tmp.path().join("out");
    ok(&[
        "curate",
        "--pairs",
        s(&pool),
        "--gold",
        s(&gold),
        "--out",
        s(&out),
        "--emit-flipped",
    ]);
    assert_accounting(&out);
    let curated = read_rows(&out.join("curated"));
    let b = curated
        .iter()
        .find(|r| r["pair_id"] == "b")
        .expect("b curated");
    assert_eq!(b["reason"], "human_corrected", "the later label supersedes");
    assert_eq!(b["chosen"], "good answer");
    assert_eq!(b["rejected"], "bad answer");
    let discarded = read_rows(&out.join("discarded"));
    let c = discarded
        .iter()
        .find(|r| r["pair_id"] == "c")
        .expect("c discarded by the gold RM");
    assert_eq!(c["reason"], "gold_rm_disagrees");
    assert_eq!(
        c["chosen"], "good answer here",
        "--emit-flipped writes RM discards swapped"
    );
    assert!(
        c["p_gold"].as_f64().unwrap() > 0.5,
        "p refers to the row as written"
    );
}

#[test]
fn parquet_without_rejected_column_exits_2_naming_file_and_column() {
    let tmp = tempfile::tempdir().unwrap();
    let bad = tmp.path().join("no_rejected.parquet");
    write_parquet(
        &bad,
        vec![("prompt", strings(&["p"])), ("chosen", strings(&["c"]))],
    );
    let gold = tmp.path().join("gold.jsonl");
    std::fs::write(&gold, "{\"pair_id\":\"x\",\"verdict\":\"chosen\"}\n").unwrap();
    let err = fails_with(
        &[
            "curate",
            "--pairs",
            s(&bad),
            "--gold",
            s(&gold),
            "--out",
            s(&tmp.path().join("o")),
        ],
        2,
    );
    assert!(
        err.contains("no_rejected.parquet") && err.contains("rejected"),
        "{err}"
    );
}

#[test]
fn bad_input_files_exit_2_naming_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let gold = tmp.path().join("gold.jsonl");
    std::fs::write(&gold, "{\"pair_id\":\"x\",\"verdict\":\"chosen\"}\n").unwrap();
    let out = tmp.path().join("o");
    let garbage = tmp.path().join("garbage.parquet");
    std::fs::write(&garbage, b"PAR1 definitely not parquet").unwrap();
    let err = curate_fails(&garbage, &gold, &out);
    assert!(err.contains("garbage.parquet"), "{err}");

    let not_jsonl = tmp.path().join("notes.jsonl");
    std::fs::write(&not_jsonl, "hello\nworld\n").unwrap();
    let err = curate_fails(&not_jsonl, &gold, &out);
    assert!(
        err.contains("notes.jsonl") && err.contains("not a JSONL"),
        "{err}"
    );

    let no_rejected = tmp.path().join("no_rejected.jsonl");
    std::fs::write(&no_rejected, "{\"prompt\":\"p\",\"chosen\":\"c\"}\n").unwrap();
    let err = curate_fails(&no_rejected, &gold, &out);
    assert!(
        err.contains("no_rejected.jsonl") && err.contains("`rejected`"),
        "{err}"
    );

    let wrong_type = tmp.path().join("wrong_type.parquet");
    write_parquet(
        &wrong_type,
        vec![
            ("prompt", strings(&["p"])),
            ("chosen", strings(&["c"])),
            ("rejected", Arc::new(Int64Array::from(vec![1])) as ArrayRef),
        ],
    );
    let err = curate_fails(&wrong_type, &gold, &out);
    assert!(
        err.contains("wrong_type.parquet") && err.contains("rejected") && err.contains("Int64"),
        "{err}"
    );

    let pool = tmp.path().join("pool.jsonl");
    std::fs::write(
        &pool,
        "{\"prompt\":\"p\",\"chosen\":\"c\",\"rejected\":\"r\"}\n",
    )
    .unwrap();
    let bad_gold = tmp.path().join("bad_gold.jsonl");
    std::fs::write(
        &bad_gold,
        "{\"pair_id\":\"x\",\"verdict\":\"chosen\"}\n{\"pair_id\":\"y\",\"verdict\":\"maybe\"}\n",
    )
    .unwrap();
    let err = curate_fails(&pool, &bad_gold, &out);
    assert!(
        err.contains("bad_gold.jsonl") && err.contains("row 2") && err.contains("verdict"),
        "{err}"
    );

    let err = fails_with(
        &[
            "curate",
            "--pairs",
            s(&tmp.path().join("missing")),
            "--gold",
            s(&gold),
            "--out",
            s(&out),
        ],
        2,
    );
    assert!(err.contains("missing"), "{err}");
    assert!(
        !out.join("manifest.json").exists(),
        "a failed run commits nothing"
    );
}

#[test]
fn bad_settings_exit_2_naming_the_setting() {
    let tmp = tempfile::tempdir().unwrap();
    let pool = tmp.path().join("pool.jsonl");
    std::fs::write(
        &pool,
        "{\"prompt\":\"p\",\"chosen\":\"c\",\"rejected\":\"r\"}\n",
    )
    .unwrap();
    let base = [
        "curate",
        "--pairs",
        s(&pool),
        "--gold",
        s(&pool),
        "--out",
        "o",
    ];
    let err = fails_with(&[&base[..], &["--threshold", "1.5"]].concat(), 2);
    assert!(err.contains("--threshold"), "{err}");
    let err = fails_with(&[&base[..], &["--workers", "0"]].concat(), 2);
    assert!(err.contains("--workers"), "{err}");
    let err = fails_with(&[&base[..], &["--best-rm", "nonsense"]].concat(), 2);
    assert!(err.contains("--best-rm"), "{err}");
    let err = fails_with(&["curate", "--pairs", s(&pool)], 2);
    assert!(err.contains("--gold"), "{err}");
    let missing = tmp.path().join("no-such-dir");
    let err = fails_with(&[&base[..], &["--spill-dir", s(&missing)]].concat(), 2);
    assert!(
        err.contains("--spill-dir") && err.contains("no-such-dir"),
        "{err}"
    );
    let err = fails_with(&[&base[..], &["--memory-budget", "1.5G"]].concat(), 2);
    assert!(err.contains("--memory-budget"), "{err}");
}

#[test]
fn every_subcommand_has_help() {
    for sub in [
        vec!["--help"],
        vec!["demo", "--help"],
        vec!["gen", "--help"],
        vec!["curate", "--help"],
        vec!["score", "--help"],
        vec!["serve", "--help"],
        vec!["label", "add", "--help"],
        vec!["stage1", "--help"],
        vec!["annotate", "--help"],
        vec!["tasks", "export", "--help"],
        vec!["tasks", "import", "--help"],
    ] {
        let out = ok(&sub);
        assert!(String::from_utf8_lossy(&out.stdout).contains("Usage"));
    }
}

#[test]
fn demo_runs_end_to_end_and_summarises() {
    let tmp = tempfile::tempdir().unwrap();
    let out = ok(&["demo", "--out", s(&tmp.path().join("d")), "--workers", "2"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("labels matching the ground truth")
            && text.contains("rows per reason")
            && text.contains("quality, measured on held-out gold verdicts")
            && text.contains("gold RM accuracy"),
        "{text}"
    );
    let r = assert_accounting(&tmp.path().join("d/curated"));
    assert!(
        r["truth_agreement_curated"].as_f64().unwrap()
            > r["truth_agreement_input"].as_f64().unwrap() + 0.05
    );
}

/// The real data of DESIGN §5: CI always has ../shared, where a missing file fails the
/// test; elsewhere the test is skipped with a notice.
fn shared_data() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data");
    if dir.join("alpaca_eval_gpt4t_dev.parquet").exists()
        && dir.join("hh_rlhf_harmless_gold.parquet").exists()
    {
        return Some(dir);
    }
    if std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false") {
        panic!("../shared/data is missing on CI: {}", dir.display());
    }
    eprintln!(
        "NOTICE: skipping the real-data test: {} not found",
        dir.display()
    );
    None
}

#[test]
fn real_alpaca_eval_pool_with_hh_rlhf_gold_labels() {
    let Some(data) = shared_data() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    ok(&[
        "curate",
        "--pairs",
        s(&data.join("alpaca_eval_gpt4t_dev.parquet")),
        "--gold",
        s(&data.join("hh_rlhf_harmless_gold.parquet")),
        "--out",
        s(&out),
        "--workers",
        "2",
    ]);
    let r = assert_accounting(&out);
    assert_eq!(r["input_rows"], 33_478);
    // The data's README: 15 pairs with an empty output, 1,134 exact duplicate pairs
    // from the nested vicuna re-runs (plus repeated reference outputs elsewhere).
    assert!(
        r["reasons"]["invalid_empty_response"].as_u64().unwrap() >= 15,
        "{r}"
    );
    assert!(r["reasons"]["duplicate"].as_u64().unwrap() >= 1_134, "{r}");
    assert_eq!(
        r["gold_rm"]["training"]["examples"], 1_200,
        "every HH gold label carries its text"
    );
    // The gold RM is measured on the HH verdicts by cross-validation, and a warning
    // says it is no better than chance exactly when its interval reaches 50%.
    let g = &r["quality"]["gold_rm"];
    assert_eq!(g["n"], 1_200, "{g}");
    let reaches_chance = g["ci95"][0].as_f64().unwrap() <= 0.5;
    let warnings: Vec<&str> = r["quality"]["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w.as_str().unwrap())
        .collect();
    let warned = warnings
        .iter()
        .any(|w| w.contains("gold RM is no better than chance"));
    assert_eq!(warned, reaches_chance, "{g} {warnings:?}");
    // No HH verdict is about an AlpacaEval pair: the label accuracy cannot be estimated,
    // and the report says so.
    assert_eq!(r["quality"]["estimated_label_accuracy"]["input"]["n"], 0);
    assert!(warnings
        .iter()
        .any(|w| w.contains("No gold verdict falls on a pool pair")));
    // Every other column of the input is carried through.
    let curated = read_rows(&out.join("curated"));
    assert!(!curated.is_empty());
    for col in [
        "split",
        "subset",
        "label_source",
        "chosen_generator",
        "prefix_mismatch",
    ] {
        assert!(
            curated[0].get(col).is_some() || col.ends_with("generator"),
            "column {col} lost"
        );
    }
}

fn messages(rows: &[&[(&str, &str)]]) -> ArrayRef {
    use arrow::array::{ListBuilder, StringBuilder, StructBuilder};
    use arrow::datatypes::Fields;
    let fields = Fields::from(vec![
        Field::new("role", DataType::Utf8, true),
        Field::new("content", DataType::Utf8, true),
    ]);
    let mut b = ListBuilder::new(StructBuilder::from_fields(fields, 0));
    for row in rows {
        for (role, content) in row.iter() {
            let s = b.values();
            s.field_builder::<StringBuilder>(0)
                .unwrap()
                .append_value(role);
            s.field_builder::<StringBuilder>(1)
                .unwrap()
                .append_value(content);
            s.append(true);
        }
        b.append(true);
    }
    Arc::new(b.finish())
}

#[test]
fn parquet_message_lists_implicit_prompts_and_typed_extra_columns_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    let pool = tmp.path().join("pool");
    std::fs::create_dir_all(&pool).unwrap();
    // Explicit prompt as a message list, with typed extra columns.
    write_parquet(
        &pool.join("a.parquet"),
        vec![
            ("pair_id", strings(&["m1", "m2"])),
            (
                "prompt",
                messages(&[
                    &[("system", "be kind"), ("user", "hi")],
                    &[("user", "hello")],
                ]),
            ),
            (
                "chosen",
                messages(&[
                    &[("assistant", "good reply")],
                    &[("assistant", "good answer")],
                ]),
            ),
            (
                "rejected",
                messages(&[
                    &[("assistant", "bad reply")],
                    &[("assistant", "bad answer")],
                ]),
            ),
            (
                "score",
                Arc::new(arrow::array::Float64Array::from(vec![Some(0.25), None])) as ArrayRef,
            ),
            ("turns", Arc::new(Int64Array::from(vec![2, 1])) as ArrayRef),
        ],
    );
    let out = tmp.path().join("out");
    let gold = tmp.path().join("gold.jsonl");
    std::fs::write(&gold, "{\"pair_id\":\"g\",\"verdict\":\"chosen\",\"prompt\":\"p\",\"chosen\":\"good\",\"rejected\":\"bad\"}\n").unwrap();
    ok(&[
        "curate",
        "--pairs",
        s(&pool),
        "--gold",
        s(&gold),
        "--out",
        s(&out),
    ]);
    assert_accounting(&out);
    let rows: Vec<Value> = ["curated", "discarded"]
        .iter()
        .flat_map(|d| read_rows(&out.join(d)))
        .collect();
    let m1 = rows.iter().find(|r| r["pair_id"] == "m1").unwrap();
    assert_eq!(
        m1["prompt"],
        serde_json::json!([{"role": "system", "content": "be kind"}, {"role": "user", "content": "hi"}])
    );
    assert_eq!(m1["score"], 0.25);
    assert_eq!(m1["turns"], 2);
    let m2 = rows.iter().find(|r| r["pair_id"] == "m2").unwrap();
    assert!(
        m2.get("score").is_none() || m2["score"].is_null(),
        "nulls stay null"
    );

    // TRL implicit-prompt form: no prompt column; the output has none either.
    let implicit = tmp.path().join("implicit.parquet");
    write_parquet(
        &implicit,
        vec![
            (
                "chosen",
                messages(&[
                    &[("user", "q"), ("assistant", "fine")],
                    &[("user", "x"), ("assistant", "y")],
                ]),
            ),
            (
                "rejected",
                messages(&[
                    &[("user", "q"), ("assistant", "poor")],
                    &[("user", "other"), ("assistant", "z")],
                ]),
            ),
        ],
    );
    let out2 = tmp.path().join("out2");
    ok(&[
        "curate",
        "--pairs",
        s(&implicit),
        "--gold",
        s(&gold),
        "--out",
        s(&out2),
    ]);
    let r = assert_accounting(&out2);
    assert_eq!(
        r["reasons"]["invalid_implicit_prompt"], 1,
        "conversations that differ before the reply"
    );
    let rows: Vec<Value> = ["curated", "discarded"]
        .iter()
        .flat_map(|d| read_rows(&out2.join(d)))
        .collect();
    assert_eq!(rows.len(), 1);
    assert!(rows[0].get("prompt").is_none());
    assert!(
        rows[0]["pair_id"].as_str().unwrap().starts_with('h'),
        "pair ids are derived from content"
    );
    assert_eq!(rows[0]["chosen"][1]["content"], "fine");
}

#[test]
fn rerun_replaces_previous_output_and_manifest_lists_the_parts() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("g");
    gen(&data, 3_000, 5);
    let out = tmp.path().join("o");
    let (pairs, gold) = (data.join("pairs"), data.join("gold.parquet"));
    let args = [
        "curate",
        "--pairs",
        s(&pairs),
        "--gold",
        s(&gold),
        "--out",
        s(&out),
    ];
    ok(&[&args[..], &["--workers", "4"]].concat());
    ok(&[&args[..], &["--workers", "1"]].concat());
    // Parts of the 4-worker run are gone; the manifest names exactly what is there.
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(out.join("manifest.json")).unwrap()).unwrap();
    let mut listed: Vec<String> = manifest["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap().to_string())
        .collect();
    listed.sort();
    let mut present = Vec::new();
    for d in ["curated", "discarded", "quarantine"] {
        for e in std::fs::read_dir(out.join(d)).into_iter().flatten() {
            present.push(format!("{d}/{}", e.unwrap().file_name().to_string_lossy()));
        }
    }
    present.sort();
    assert_eq!(listed, present);
    assert!(
        present.iter().all(|p| p.contains("part-00000-")),
        "{present:?}"
    );
    assert_eq!(manifest["spec"]["machine"]["workers"], 1);
    assert!(manifest["models"]["best_rm"]["fingerprint"]
        .as_str()
        .unwrap()
        .starts_with("builtin-"));
    assert_accounting(&out);
}

#[test]
fn two_timely_processes_curate_the_same_rows_as_one() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("g");
    gen(&data, 6_000, 3);
    let (pairs, gold) = (data.join("pairs"), data.join("gold.parquet"));
    let single = tmp.path().join("single");
    ok(&[
        "curate",
        "--pairs",
        s(&pairs),
        "--gold",
        s(&gold),
        "--out",
        s(&single),
        "--workers",
        "2",
    ]);

    // Two processes of one worker each, on loopback.
    let ports: Vec<u16> = (0..2)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect::<Vec<_>>()
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect();
    let hostfile = tmp.path().join("hosts");
    std::fs::write(
        &hostfile,
        ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}\n"))
            .collect::<String>(),
    )
    .unwrap();
    let multi = tmp.path().join("multi");
    let mut children: Vec<_> = (0..2)
        .map(|i| {
            Command::new(env!("CARGO_BIN_EXE_synpref"))
                .args([
                    "curate",
                    "--pairs",
                    s(&pairs),
                    "--gold",
                    s(&gold),
                    "--out",
                    s(&multi),
                    "--workers",
                    "1",
                ])
                .args(["--hostfile", s(&hostfile), "--process", &i.to_string()])
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
    for child in children.iter_mut() {
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                assert!(status.success(), "a curate process failed: {status}");
                break;
            }
            if std::time::Instant::now() > deadline {
                for c in children.iter_mut() {
                    let _ = c.kill();
                }
                panic!("two-process curate did not finish in time");
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
    let r = assert_accounting(&multi);
    assert_eq!(r["workers"], 2);
    for dest in ["curated", "discarded", "quarantine"] {
        assert!(
            read_rows(&single.join(dest)) == read_rows(&multi.join(dest)),
            "{dest} differs between 1 and 2 processes"
        );
    }
}

#[test]
fn globs_and_directories_select_input_files() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("in");
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    let row = |id: &str| {
        format!("{{\"pair_id\":\"{id}\",\"prompt\":\"p {id}\",\"chosen\":\"good\",\"rejected\":\"bad\"}}\n")
    };
    std::fs::write(dir.join("a.jsonl"), row("a")).unwrap();
    std::fs::write(dir.join("b.jsonl"), row("b")).unwrap();
    std::fs::write(dir.join("sub/c.jsonl"), row("c")).unwrap();
    std::fs::write(dir.join("_skipped.jsonl"), row("x")).unwrap();
    std::fs::write(dir.join(".hidden.jsonl"), row("y")).unwrap();
    std::fs::write(dir.join("notes.txt"), "not an input").unwrap();
    let gold = tmp.path().join("gold.jsonl");
    std::fs::write(&gold, "{\"pair_id\":\"a\",\"verdict\":\"chosen\"}\n").unwrap();
    for (pairs, rows) in [
        (dir.clone(), 3),
        (dir.join("*.jsonl"), 2),
        (dir.join("a*"), 1),
        (dir.join("**/*.jsonl"), 3),
    ] {
        let out = tmp.path().join("out");
        ok(&[
            "curate",
            "--pairs",
            s(&pairs),
            "--gold",
            s(&gold),
            "--out",
            s(&out),
        ]);
        assert_eq!(
            assert_accounting(&out)["input_rows"],
            rows,
            "{}",
            pairs.display()
        );
    }
    let err = fails_with(
        &[
            "curate",
            "--pairs",
            s(&dir.join("*.parquet")),
            "--gold",
            s(&gold),
            "--out",
            s(&tmp.path().join("o")),
        ],
        2,
    );
    assert!(err.contains("no input files"), "{err}");
}

/// DataFusion-style: the same run under many read batch sizes (the unit of pipelining
/// and of exchange between workers) gives the same rows.
#[test]
fn output_does_not_depend_on_read_batch_size() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("g");
    gen(&data, 2_500, 13);
    let pool = pool_with_crafted_rows(tmp.path(), &data);
    let (gold, judges) = (data.join("gold.parquet"), data.join("judge_votes.parquet"));
    let mut first: Option<Vec<Vec<Value>>> = None;
    for (batch, workers) in [(8192, 1), (1, 2), (7, 3), (100, 2), (333, 4)] {
        let out = tmp.path().join(format!("o{batch}"));
        ok(&[
            "curate",
            "--pairs",
            s(&pool),
            "--gold",
            s(&gold),
            "--judges",
            s(&judges),
            "--out",
            s(&out),
            "--batch-rows",
            &batch.to_string(),
            "--workers",
            &workers.to_string(),
            "--max-pair-bytes",
            "2000",
        ]);
        assert_accounting(&out);
        let rows: Vec<Vec<Value>> = ["curated", "discarded", "quarantine"]
            .iter()
            .map(|d| read_rows(&out.join(d)))
            .collect();
        match &first {
            None => first = Some(rows),
            Some(f) => assert!(
                f == &rows,
                "batch size {batch} with {workers} workers changed the output"
            ),
        }
    }
}

// ---- Parity with Hugging Face (fixtures: tests/fixtures/PROVENANCE.md) ----

fn fixture(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures")
        .join(path)
}

fn json_file(path: &Path) -> Value {
    serde_json::from_slice(
        &std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    )
    .unwrap()
}

fn f32s(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

fn u32s(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

#[test]
fn parity_tokenizers_match_hugging_face_exactly() {
    for kind in ["bpe", "wordpiece"] {
        let tok =
            tokenizers::Tokenizer::from_file(fixture(&format!("tokenizer/{kind}/tokenizer.json")))
                .unwrap();
        let expected = json_file(&fixture(&format!("tokenizer/{kind}/expected.json")));
        for sample in expected["samples"].as_array().unwrap() {
            let text = sample["text"].as_str().unwrap();
            let enc = tok.encode(text, true).unwrap();
            assert_eq!(
                enc.get_ids(),
                u32s(&sample["ids"]).as_slice(),
                "{kind}: ids of {text:?}"
            );
            let tokens: Vec<&str> = sample["tokens"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t.as_str().unwrap())
                .collect();
            assert_eq!(
                enc.get_tokens(),
                tokens.as_slice(),
                "{kind}: tokens of {text:?}"
            );
            let offsets: Vec<(usize, usize)> = sample["offsets"]
                .as_array()
                .unwrap()
                .iter()
                .map(|o| {
                    (
                        o[0].as_u64().unwrap() as usize,
                        o[1].as_u64().unwrap() as usize,
                    )
                })
                .collect();
            // transformers reports offsets in characters (Python string indices), the
            // Rust crate in bytes.
            let chars = |byte: usize| text[..byte].chars().count();
            let ours: Vec<(usize, usize)> = enc
                .get_offsets()
                .iter()
                .map(|&(a, b)| (chars(a), chars(b)))
                .collect();
            assert_eq!(ours, offsets, "{kind}: offsets of {text:?}");
            let plain = tok.encode(text, false).unwrap();
            assert_eq!(
                plain.get_ids(),
                u32s(&sample["ids_no_special"]).as_slice(),
                "{kind}: ids without specials"
            );
            let decoded = tok.decode(enc.get_ids(), true).unwrap();
            assert_eq!(
                decoded,
                sample["decoded_skip_special"].as_str().unwrap(),
                "{kind}: decode of {text:?}"
            );
        }
    }
}

#[test]
fn parity_bert_fixture_hidden_states_and_sentence_embeddings() {
    use synpref_operators::models::bert::BertEncoder;
    let expected = json_file(&fixture("bert_minilm/expected.json"));
    let tol = expected["recommended_tolerance"]["f32_atol"]
        .as_f64()
        .unwrap() as f32;
    let enc = BertEncoder::load(&fixture("bert_minilm"), 512).unwrap();
    let texts: Vec<&str> = expected["texts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    let lengths: Vec<usize> = expected["lengths"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_u64().unwrap() as usize)
        .collect();
    // Tokenisation: our ids are transformers' ids.
    let ids: Vec<Vec<u32>> = texts.iter().map(|t| enc.tokenize(t).unwrap()).collect();
    for (i, row) in expected["input_ids"].as_array().unwrap().iter().enumerate() {
        assert_eq!(ids[i], u32s(row)[..lengths[i]].to_vec(), "ids of text {i}");
    }
    // Hidden states of the padded batch, on the real tokens.
    let t = lengths.iter().copied().max().unwrap();
    let mut flat = Vec::new();
    let mut mask = Vec::new();
    for row in &ids {
        flat.extend(
            row.iter()
                .copied()
                .chain(std::iter::repeat(0).take(t - row.len())),
        );
        mask.extend((0..t).map(|i| u32::from(i < row.len())));
    }
    let dev = candle_core::Device::Cpu;
    let hidden = enc
        .forward(
            &candle_core::Tensor::from_vec(flat, (ids.len(), t), &dev).unwrap(),
            &candle_core::Tensor::from_vec(mask, (ids.len(), t), &dev).unwrap(),
        )
        .unwrap()
        .to_vec3::<f32>()
        .unwrap();
    for seq in [0usize, 3] {
        let rows = expected["last_hidden_state"][format!("sequence_{seq}")]
            .as_array()
            .unwrap();
        for (pos, row) in rows.iter().enumerate().take(lengths[seq]) {
            for (a, b) in hidden[seq][pos].iter().zip(f32s(row)) {
                assert!(
                    (a - b).abs() <= tol,
                    "hidden state seq {seq} pos {pos}: {a} vs {b}"
                );
            }
        }
    }
    let got = enc.embed(&texts).unwrap();
    for (i, row) in expected["sentence_embeddings"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
    {
        for (a, b) in got[i].iter().zip(f32s(row)) {
            assert!((a - b).abs() <= tol, "embedding {i}: {a} vs {b}");
        }
    }
}

#[test]
fn parity_real_all_minilm_l6_v2_against_sentence_transformers() {
    use synpref_operators::models::bert::BertEncoder;
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/models/all-MiniLM-L6-v2");
    if !dir.join("model.safetensors").exists() {
        if std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false") {
            panic!(
                "../shared/models/all-MiniLM-L6-v2 is missing on CI: {}",
                dir.display()
            );
        }
        eprintln!(
            "NOTICE: skipping the MiniLM parity test: {} not found",
            dir.display()
        );
        return;
    }
    let expected = json_file(&dir.join("expected_embeddings.json"));
    let enc =
        BertEncoder::load(&dir, expected["max_seq_length"].as_u64().unwrap() as usize).unwrap();
    let texts: Vec<&str> = expected["texts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    for (i, t) in texts.iter().enumerate() {
        assert_eq!(
            enc.tokenize(t).unwrap(),
            u32s(&expected["input_ids"][i]),
            "ids of text {i} (truncation included)"
        );
    }
    let got = enc.embed(&texts).unwrap();
    for (i, row) in expected["embeddings"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
    {
        let want = f32s(row);
        let dot: f32 = got[i].iter().zip(&want).map(|(a, b)| a * b).sum();
        let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
        let cos = dot / (norm(&got[i]) * norm(&want));
        assert!(cos >= 0.9999, "text {i}: cosine {cos}");
    }
}

/// Rows of a JSON matrix of integers.
fn u32_rows(v: &Value) -> Vec<Vec<u32>> {
    v.as_array().unwrap().iter().map(u32s).collect()
}

fn assert_close(got: &[f32], want: &[f32], tol: f32, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (i, (a, b)) in got.iter().zip(want).enumerate() {
        assert!(
            (a - b).abs() <= tol,
            "{what} row {i}: got {a}, transformers gives {b} (|diff| {} > {tol})",
            (a - b).abs()
        );
    }
}

/// The device of the decoder parity tests: the CPU, or the GPU with
/// `SYNPREF_TEST_DEVICE=cuda` in a `--features cuda` build (docs/gpu.md).
fn parity_device() -> candle_core::Device {
    match std::env::var("SYNPREF_TEST_DEVICE").as_deref() {
        Ok("cuda") => candle_core::Device::new_cuda(0)
            .expect("SYNPREF_TEST_DEVICE=cuda needs a GPU and a cuda build"),
        _ => candle_core::Device::Cpu,
    }
}

/// Runs one decoder fixture (qwen3_rm or llama_rm) with both config forms, in f32
/// against `rewards_f32` and in bf16 against `rewards_bf16`.
fn decoder_fixture_parity(name: &str, f32_tol: f32, bf16_tol: f32) {
    use candle_core::DType;
    let device = parity_device();
    use synpref_operators::models::batching::PaddedBatch;
    use synpref_operators::models::decoder::{DecoderConfig, DecoderRm};
    let dir = fixture(name);
    let expected = json_file(&dir.join("expected.json"));
    let hub =
        DecoderConfig::parse(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    let v5 = DecoderConfig::parse(
        &std::fs::read_to_string(dir.join("config.transformers-v5.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        hub, v5,
        "{name}: hub and transformers-v5 configs parse alike"
    );
    let batch_of = |section: &Value| {
        let ids = u32_rows(&section["input_ids"]);
        let mask = u32_rows(&section["attention_mask"]);
        PaddedBatch {
            rows: ids.len(),
            width: ids[0].len(),
            ids: ids.concat(),
            mask: mask.concat().into_iter().map(|m| m as u8).collect(),
        }
    };
    for (form, config) in [("hub", hub), ("v5", v5)] {
        let what = |s: &str| format!("{name} ({form} config) {s}");
        let model = DecoderRm::load(
            config.clone(),
            &[dir.join("model.safetensors")],
            DType::F32,
            &device,
        )
        .unwrap();
        for section in ["right_padded", "left_padded", "edge_cases"] {
            let batch = batch_of(&expected[section]);
            let got = model.rewards(&batch).unwrap();
            assert_close(
                &got,
                &f32s(&expected[section]["rewards_f32"]),
                f32_tol,
                &what(section),
            );
        }
        // Edge cases: the pad id inside content, as the last real token, and length 1.
        let edge = batch_of(&expected["edge_cases"]);
        for (r, want) in u32s(&expected["edge_cases"]["pooled_index_transformers"])
            .into_iter()
            .enumerate()
        {
            let row = &edge.ids[r * edge.width..(r + 1) * edge.width];
            assert_eq!(
                model.pooled_index(row, edge.width) as u32,
                want,
                "{}",
                what("pooled index")
            );
        }
        // Each sequence alone, unpadded.
        let right = &expected["right_padded"];
        let lengths = u32s(&right["lengths"]);
        let singles: Vec<f32> = u32_rows(&right["input_ids"])
            .iter()
            .zip(&lengths)
            .map(|(ids, &n)| {
                let seq = &ids[..n as usize];
                model.rewards(&PaddedBatch::right(&[seq], 0, 0)).unwrap()[0]
            })
            .collect();
        assert_close(
            &singles,
            &f32s(&expected["unpadded_single"]["rewards_f32"]),
            f32_tol,
            &what("unpadded"),
        );
        let bf16 = DecoderRm::load(
            config,
            &[dir.join("model.safetensors")],
            DType::BF16,
            &device,
        )
        .unwrap();
        for section in ["right_padded", "left_padded"] {
            let got = bf16.rewards(&batch_of(&expected[section])).unwrap();
            assert_close(
                &got,
                &f32s(&expected[section]["rewards_bf16"]),
                bf16_tol,
                &what("bf16"),
            );
        }
    }
}

#[test]
fn parity_qwen3_rm_fixture_rewards_padding_and_edge_cases() {
    decoder_fixture_parity("qwen3_rm", 1.3e-5, 0.084);
}

#[test]
fn parity_llama_rm_fixture_rewards_padding_and_edge_cases() {
    use synpref_operators::models::decoder::DecoderConfig;
    let config =
        DecoderConfig::parse(&std::fs::read_to_string(fixture("llama_rm/config.json")).unwrap())
            .unwrap();
    // fixtures/README.md: all three llama3 regimes occur among the 8 frequencies.
    let want = [
        1.0,
        0.07940301,
        0.004700754,
        9.115831e-4,
        1.7677668e-4,
        3.428102e-5,
        6.64787e-6,
        1.2891732e-6,
    ];
    for (a, b) in config.inv_freq().iter().zip(want) {
        assert!((a - b).abs() <= 1e-6 * b, "llama3 inv_freq {a} vs {b}");
    }
    decoder_fixture_parity("llama_rm", 3.5e-5, 0.18);
}

/// Reads every `part-*.parquet` directly under `dir` as JSON rows.
fn read_parts(dir: &Path) -> Vec<Value> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with("part-")
        })
        .collect();
    paths.sort();
    let mut rows = Vec::new();
    for p in paths {
        let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(&p).unwrap())
            .unwrap()
            .build()
            .unwrap();
        for batch in reader {
            let batch = batch.unwrap();
            let mut buf = Vec::new();
            let mut w = arrow::json::ArrayWriter::new(&mut buf);
            w.write(&batch).unwrap();
            w.finish().unwrap();
            rows.extend(serde_json::from_slice::<Vec<Value>>(&buf).unwrap());
        }
    }
    rows
}

#[test]
fn parity_qwen3_rm_chat_end_to_end_template_tokenizer_and_rewards() {
    use synpref_operators::models::hf::HfRewardModel;
    use synpref_operators::models::ModelOptions;
    let dir = fixture("qwen3_rm_chat");
    let expected = json_file(&dir.join("expected.json"));
    let tol = expected["recommended_tolerance_f32"].as_f64().unwrap() as f32;
    // Rendered text and token ids, exactly.
    let model = HfRewardModel::load(&dir, &ModelOptions::default()).unwrap();
    let pairs: Vec<Value> = std::fs::read_to_string(dir.join("pairs.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for (p, e) in pairs.iter().zip(expected["pairs"].as_array().unwrap()) {
        use synpref_engine::model::{Conversation, Message, PreferencePair};
        let text = |side: &str| Conversation::Text(p[side].as_str().unwrap().into());
        let pair = PreferencePair::outside_pool(
            p["pair_id"].as_str().unwrap(),
            serde_json::from_value::<Vec<Message>>(p["prompt"].clone())
                .map(Conversation::Messages)
                .unwrap(),
            text("chosen"),
            text("rejected"),
        );
        for side in ["chosen", "rejected"] {
            let reply = if side == "chosen" {
                &pair.chosen
            } else {
                &pair.rejected
            };
            let (text, _) = model.render(&pair, reply).unwrap();
            assert_eq!(
                text,
                e[format!("text_{side}")].as_str().unwrap(),
                "{} {side}: rendered text",
                pair.pair_id
            );
            assert_eq!(
                model.tokenize(&pair, reply).unwrap(),
                u32s(&e[format!("input_ids_{side}")]),
                "{} {side}: ids",
                pair.pair_id
            );
        }
    }
    // The command, twice: the second run takes every pair from the score cache.
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("scored");
    let cache = tmp.path().join("cache");
    let model_spec = format!("hf:{}", dir.display());
    let pairs_file = dir.join("pairs.jsonl");
    // In f32 on the parity device: `--device auto` would take a GPU in bf16, which the
    // f32 tolerance does not cover (seen on an H200, docs/gpu.md).
    let device = match std::env::var("SYNPREF_TEST_DEVICE").as_deref() {
        Ok("cuda") => "cuda",
        _ => "cpu",
    };
    let args = [
        "score",
        "--model",
        &model_spec,
        "--pairs",
        s(&pairs_file),
        "--out",
        s(&out),
        "--score-cache",
        s(&cache),
        "--device",
        device,
        "--dtype",
        "f32",
        "--no-progress",
    ];
    for run in 0..2 {
        ok(&args);
        let rows = read_parts(&out);
        assert_eq!(
            rows.len(),
            5,
            "every pair scored (the empty reply included)"
        );
        for (r, e) in rows.iter().zip(expected["pairs"].as_array().unwrap()) {
            assert_eq!(r["pair_id"], e["pair_id"]);
            for side in ["chosen", "rejected"] {
                let got = r[format!("r_{side}")].as_f64().unwrap() as f32;
                let want = e[format!("reward_{side}")].as_f64().unwrap() as f32;
                assert!(
                    (got - want).abs() <= tol,
                    "{} {side}: {got} vs {want}",
                    e["pair_id"]
                );
            }
            let (c, j) = (
                r["r_chosen"].as_f64().unwrap(),
                r["r_rejected"].as_f64().unwrap(),
            );
            assert!((r["p"].as_f64().unwrap() - 1.0 / (1.0 + (j - c).exp())).abs() < 1e-6);
        }
        let report = json_file(&out.join("report.json"));
        let (scored, cached) = (
            report["usage"]["scored"].as_u64().unwrap(),
            report["usage"]["cached"].as_u64().unwrap(),
        );
        assert_eq!(
            (scored, cached),
            if run == 0 { (5, 0) } else { (0, 5) },
            "run {run}"
        );
    }
}

#[test]
fn rewards_do_not_depend_on_batch_mates_or_batch_size() {
    use synpref_operators::models::batching::{
        bucket_width, run_sequences, BatchModel, PaddedBatch,
    };
    use synpref_operators::models::hf::HfRewardModel;
    use synpref_operators::models::ModelOptions;
    // The real MiniLM has widths where k-blocking matters; the fixture checks the logic.
    let model = HfRewardModel::load(&fixture("qwen3_rm_chat"), &ModelOptions::default()).unwrap();
    let seqs: Vec<Vec<u32>> = (0..40u32)
        .map(|i| {
            (0..(3 + (i * 7) % 60))
                .map(|t| 3 + (t * 31 + i * 17) % 500)
                .collect()
        })
        .collect();
    let alone: Vec<f32> = seqs
        .iter()
        .map(|s| {
            let w = bucket_width(s.len(), model.max_tokens());
            model
                .forward_rows(&PaddedBatch::right(&[s.as_slice()], w, model.pad_id()))
                .unwrap()[0]
        })
        .collect();
    for budget in [16, 100, 1000, 100_000] {
        let got = run_sequences(&model, seqs.len(), |i| Ok(seqs[i].clone()), budget).unwrap();
        for (i, (a, b)) in got.iter().zip(&alone).enumerate() {
            assert_eq!(
                a.to_bits(),
                b.to_bits(),
                "sequence {i}, token budget {budget}"
            );
        }
    }
}

#[test]
fn curate_with_encoder_rms_takes_every_score_from_the_cache_on_a_second_run() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    gen(&data, 300, 5);
    let cache = tmp.path().join("cache");
    let spec = format!("encoder:{}", fixture("bert_minilm").display());
    let mut outputs = Vec::new();
    for (run, workers) in [(0, "1"), (1, "2")] {
        let out = tmp.path().join(format!("out{run}"));
        ok(&[
            "curate",
            "--pairs",
            s(&data.join("pairs")),
            "--gold",
            s(&data.join("gold.parquet")),
            "--out",
            s(&out),
            "--best-rm",
            &spec,
            "--gold-rm",
            &spec,
            "--score-cache",
            s(&cache),
            "--workers",
            workers,
            "--no-progress",
        ]);
        let r = assert_accounting(&out);
        let scored = |m: &str| r[m]["scoring"]["scored"].as_u64().unwrap();
        let cached = |m: &str| r[m]["scoring"]["cached"].as_u64().unwrap();
        if run == 0 {
            assert!(scored("best_rm") > 0, "{r}");
        } else {
            assert_eq!(
                (scored("best_rm"), scored("gold_rm")),
                (0, 0),
                "second run computes nothing: {r}"
            );
            assert!(cached("best_rm") > 0 && cached("gold_rm") > 0, "{r}");
        }
        assert!(r["best_rm"]["fingerprint"]
            .as_str()
            .unwrap()
            .starts_with("encoder-"));
        outputs.push(read_rows(&out.join("curated")));
    }
    assert_eq!(
        outputs[0], outputs[1],
        "cached scores and 2 workers give the same curated rows"
    );
}

// ---- serve ----

/// A running `synpref serve` on a loopback port, killed (SIGKILL) when dropped.
struct Serve {
    child: std::process::Child,
    addr: String,
    token: String,
}

const TOKEN: &str = "test-token-7f3a";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One HTTP/1.1 request; returns (status, body).
fn http(addr: &str, method: &str, path: &str, token: Option<&str>, body: &[u8]) -> (u16, String) {
    let auth = token.map(|t| format!("Bearer {t}"));
    http_authorized(addr, method, path, auth.as_deref(), body)
}

/// `http` with the `Authorization` header's whole value (`None`: no header).
fn http_authorized(
    addr: &str,
    method: &str,
    path: &str,
    authorization: Option<&str>,
    body: &[u8],
) -> (u16, String) {
    let (status, _, body) = http_response(addr, method, path, authorization, body);
    (status, body)
}

/// One HTTP/1.1 request: (status, the head's lines, body).
fn http_response(
    addr: &str,
    method: &str,
    path: &str,
    authorization: Option<&str>,
    body: &[u8],
) -> (u16, String, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).expect("connect to serve");
    let auth = authorization
        .map(|a| format!("Authorization: {a}\r\n"))
        .unwrap_or_default();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body).unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    let text = String::from_utf8_lossy(&response).into_owned();
    let status: u16 = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {text}"));
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (status, head.to_string(), body.to_string())
}

/// A `synpref serve` command on `pairs`/`out` with `workers` workers, listening on
/// `listen`, with the tests' token, no automatic snapshots and fast label polling.
fn serve_command(pairs: &Path, out: &Path, workers: usize, listen: &str) -> Command {
    serve_command_polling(pairs, out, workers, listen, "0.2")
}

/// `serve_command` listing `--labels` every `poll_s` seconds.
fn serve_command_polling(
    pairs: &Path,
    out: &Path,
    workers: usize,
    listen: &str,
    poll_s: &str,
) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_synpref"));
    c.args([
        "serve",
        "--pairs",
        s(pairs),
        "--out",
        s(out),
        "--listen",
        listen,
        "--workers",
        &workers.to_string(),
        "--snapshot-every",
        "0",
        "--poll-interval",
        poll_s,
        "--no-progress",
    ])
    .env("RUST_LOG", "warn")
    .env("SYNPREF_TOKEN", TOKEN);
    c
}

impl Serve {
    fn start(pairs: &Path, out: &Path, workers: usize, labels: Option<&Path>) -> Serve {
        Serve::start_with(pairs, out, workers, labels, &[])
    }

    fn start_with(
        pairs: &Path,
        out: &Path,
        workers: usize,
        labels: Option<&Path>,
        extra: &[&str],
    ) -> Serve {
        let addr = format!("127.0.0.1:{}", free_port());
        let mut c = serve_command(pairs, out, workers, &addr);
        if let Some(l) = labels {
            c.args(["--labels", s(l)]);
        }
        Serve::spawn(c.args(extra), addr)
    }

    /// Starts a prepared serve command listening on `addr` and waits until it is ready.
    fn spawn(c: &mut Command, addr: String) -> Serve {
        let child = c
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("start serve");
        let serve = Serve {
            child,
            addr,
            token: TOKEN.into(),
        };
        serve.wait_until_ready();
        serve
    }

    /// Waits until serve listens and has applied every epoch logged before it started
    /// (`state` `ready`); the figures it shows meanwhile never go backwards.
    fn wait_until_ready(&self) {
        let started = std::time::Instant::now();
        let mut last: Option<(u64, u64)> = None;
        loop {
            if std::net::TcpStream::connect(&self.addr).is_ok() {
                let st = self.status();
                let shown = (
                    st["epoch"].as_u64().unwrap(),
                    st["labels_total"].as_u64().unwrap(),
                );
                if let Some(l) = last {
                    assert!(shown.0 >= l.0 && shown.1 >= l.1, "went backwards: {st}");
                }
                last = Some(shown);
                if st["state"] == "ready" {
                    return;
                }
            }
            assert!(
                started.elapsed().as_secs() < 600,
                "serve did not become ready"
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }

    fn call(&self, method: &str, path: &str, body: &[u8]) -> (u16, String) {
        http(&self.addr, method, path, Some(&self.token), body)
    }

    fn status(&self) -> Value {
        let (code, body) = self.call("GET", "/v1/status", b"");
        assert_eq!(code, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    }

    /// Posts labels and waits until serve has applied them.
    fn post_labels(&self, body: &str) -> Value {
        let (code, reply) = self.call("POST", "/v1/labels", body.as_bytes());
        assert_eq!(code, 200, "{reply}");
        let reply: Value = serde_json::from_str(&reply).unwrap();
        let epoch = reply["epoch"].as_u64().unwrap();
        self.wait_for_epoch(epoch);
        reply
    }

    fn wait_for_epoch(&self, epoch: u64) -> Value {
        let started = std::time::Instant::now();
        loop {
            let st = self.status();
            if st["epoch"].as_u64().unwrap() >= epoch {
                return st;
            }
            assert!(
                started.elapsed().as_secs() < 300,
                "epoch {epoch} not applied: {st}"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    fn snapshot(&self) -> Value {
        let (code, body) = self.call("POST", "/v1/snapshot", b"");
        assert_eq!(code, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    }
}

/// Waits at most `limit_s` for `child` to exit; its exit code.
fn exit_within(child: &mut std::process::Child, limit_s: u64) -> Option<i32> {
    let started = std::time::Instant::now();
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st.code();
        }
        assert!(
            started.elapsed().as_secs() < limit_s,
            "still running after {limit_s} s"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The pair ids of a pool, in file order.
fn pool_ids(pairs: &Path) -> Vec<String> {
    read_rows(pairs)
        .iter()
        .filter_map(|r| r["pair_id"].as_str().map(str::to_string))
        .collect()
}

/// A small deterministic generator for the tests' random label batches.
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Rows of a curate-shaped output as (set, pair_id, reason, prompt, chosen, rejected):
/// what serve's snapshot must share with a from-scratch curate, row for row.
fn decisions(out: &Path) -> Vec<(String, String, String, String, String, String)> {
    let mut all = Vec::new();
    for set in ["curated", "discarded", "quarantine"] {
        for r in read_rows(&out.join(set)) {
            let f = |k: &str| r[k].to_string();
            all.push((
                set.to_string(),
                f("pair_id"),
                f("reason"),
                f("prompt"),
                f("chosen"),
                f("rejected"),
            ));
        }
    }
    all.sort();
    all
}

/// The from-scratch recomputation of what a serve with output `serve_out` holds:
/// curate with its label log as the gold labels.
fn curate_from_label_log(
    pairs: &Path,
    serve_out: &Path,
    out: &Path,
    workers: usize,
    extra: &[&str],
) {
    let workers = workers.to_string();
    let log = serve_out.join("labels-log");
    let mut args = vec![
        "curate",
        "--pairs",
        s(pairs),
        "--gold",
        s(&log),
        "--out",
        s(out),
        "--workers",
        &workers,
        "--no-progress",
    ];
    args.extend_from_slice(extra);
    ok(&args);
}

/// One random label line: new labels, relabels, undecidable verdicts, unknown ids.
fn random_label(rng: &mut Lcg, ids: &[String], labelled: &mut Vec<String>) -> String {
    let verdicts = ["chosen", "rejected", "undecidable"];
    let verdict = verdicts[[0, 0, 1, 1, 2][rng.below(5)]];
    let id = match rng.below(10) {
        0 => format!("no-such-pair-{}", rng.next()),
        1 | 2 if !labelled.is_empty() => labelled[rng.below(labelled.len())].clone(),
        _ => ids[rng.below(ids.len())].clone(),
    };
    labelled.push(id.clone());
    serde_json::json!({"pair_id": id, "verdict": verdict}).to_string()
}

#[test]
fn serve_snapshot_equals_curate_from_scratch_after_every_epoch_with_1_and_2_workers() {
    let tmp = tempfile::tempdir().unwrap();
    serve_oracle(tmp.path(), 1500, &[1, 7, 40, 150, 3], &[]);
}

/// The same oracle with an encoder gold RM (the BERT fixture), whose head serve trains
/// again from scratch at every epoch from the score cache.
#[test]
fn serve_with_an_encoder_gold_rm_equals_curate_from_scratch_after_every_epoch() {
    let tmp = tempfile::tempdir().unwrap();
    let gold_rm = format!("encoder:{}", fixture("bert_minilm").display());
    let cache = tmp.path().join("cache");
    serve_oracle(
        tmp.path(),
        600,
        &[1, 20, 60, 2],
        &["--gold-rm", &gold_rm, "--score-cache", s(&cache)],
    );
}

/// differential-dataflow's reduce_reference style: serve takes random label batches
/// (new labels, relabels, undecidable verdicts, unknown ids, a duplicate line each),
/// and after every epoch its snapshot equals a from-scratch curate with the labels so
/// far, row for row, with 1 and 2 workers (the second with `--decisions
/// differential`); `extra` goes to both.
fn serve_oracle(tmp: &Path, pool: u64, batches: &[usize], extra: &[&str]) {
    let data = tmp.join("data");
    gen(&data, pool, 23);
    let pairs = data.join("pairs");
    let ids: Vec<String> = pool_ids(&pairs);
    assert!(ids.len() as u64 > pool * 2 / 3);
    for workers in [1usize, 2] {
        let labels = tmp.join(format!("labels-{workers}"));
        std::fs::create_dir_all(&labels).unwrap();
        // gen's gold labels are there before serve starts: taken as epoch 1.
        std::fs::copy(data.join("gold.parquet"), labels.join("gold.parquet")).unwrap();
        let out = tmp.join(format!("serve-{workers}"));
        // One worker keeps its decisions per shard (the default); two run
        // differential's reduce over the facts: both must equal curate.
        let mut serve_extra = extra.to_vec();
        if workers == 2 {
            serve_extra.extend(["--decisions", "differential"]);
        }
        let serve = Serve::start_with(&pairs, &out, workers, Some(&labels), &serve_extra);
        let mut rng = Lcg(97 + workers as u64);
        let mut labelled = Vec::new();
        let mut posted = serve.status()["labels_total"].as_u64().unwrap();
        // Pairs the margin bound proved safe, over all epochs: without any, this test
        // would not check that stale margins still decide correctly.
        let mut spared = 0;
        assert!(posted > 0, "gen's gold labels are taken at start");
        for (epoch, &n) in batches.iter().enumerate() {
            let mut lines: Vec<String> = (0..n)
                .map(|_| random_label(&mut rng, &ids, &mut labelled))
                .collect();
            // A duplicate line in the same batch.
            lines.push(lines[rng.below(lines.len())].clone());
            posted += lines.len() as u64;
            serve.post_labels(&(lines.join("\n") + "\n"));
            serve.snapshot();
            let scratch = tmp.join(format!("scratch-{workers}-{epoch}"));
            curate_from_label_log(&pairs, &out, &scratch, workers, extra);
            let (got, want) = (decisions(&out.join("snapshot")), decisions(&scratch));
            assert_eq!(got.len(), want.len(), "workers {workers}, epoch {epoch}");
            for (g, w) in got.iter().zip(&want) {
                assert_eq!(
                    g, w,
                    "workers {workers}, epoch {epoch}: serve's snapshot differs from curate"
                );
            }
            let st = serve.status();
            eprintln!("workers {workers} epoch {epoch}: {}", st["last_update"]);
            let u = &st["last_update"];
            spared += st["pool_pairs"].as_u64().unwrap() - u["rescored_pairs"].as_u64().unwrap();
            assert_eq!(st["labels_total"].as_u64().unwrap(), posted, "{st}");
            assert_eq!(st["labels_pending"].as_u64().unwrap(), 0, "{st}");
            let r = report(&scratch);
            for k in ["curated_rows", "discarded_rows", "quarantined_rows"] {
                assert_eq!(st[k], r[k], "status {k} after epoch {epoch}: {st}");
            }
            assert_eq!(
                report(&out.join("snapshot"))["gold_rm"]["fingerprint"],
                r["gold_rm"]["fingerprint"],
                "serve's gold RM is curate's"
            );
            if extra.is_empty() {
                // The self-measurement kept per epoch equals curate's from scratch.
                for k in ["gold_rm", "estimated_label_accuracy", "warnings"] {
                    assert_eq!(
                        st["quality"][k], r["quality"][k],
                        "status quality.{k} after epoch {epoch}"
                    );
                }
            }
        }
        assert!(spared > 0, "every pair was re-scored at every epoch");
        let changelog = out.join("changelog");
        assert!(changelog.exists(), "changelog/ is written");
        // Killed and started again: the state saved with the last snapshot is loaded
        // (no model runs) and gives the same decisions.
        drop(serve);
        let serve = Serve::start_with(&pairs, &out, workers, Some(&labels), &serve_extra);
        let st = serve.status();
        assert_eq!(st["recovered_from_saved_state"], true, "{st}");
        assert_eq!(st["labels_total"].as_u64().unwrap(), posted, "{st}");
        serve.snapshot();
        let last = tmp.join(format!("scratch-{workers}-{}", batches.len() - 1));
        assert!(
            decisions(&out.join("snapshot")) == decisions(&last),
            "workers {workers}: the restarted serve's snapshot differs from curate"
        );
    }
}

#[test]
fn serve_requires_its_token_and_keeps_acknowledged_labels_across_sigkill() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    gen(&data, 600, 5);
    let pairs = data.join("pairs");
    let out = tmp.path().join("serve");
    // No token: refuses to start, exit 2, naming the settings.
    let refused = Command::new(env!("CARGO_BIN_EXE_synpref"))
        .args(["serve", "--pairs", s(&pairs), "--out", s(&out)])
        .env_remove("SYNPREF_TOKEN")
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("SYNPREF_TOKEN"));

    let ids: Vec<String> = pool_ids(&pairs);
    let labels = tmp.path().join("labels");
    std::fs::create_dir_all(&labels).unwrap();
    let serve = Serve::start_with(
        &pairs,
        &out,
        1,
        Some(&labels),
        &["--max-body-bytes", "65536"],
    );
    let body = format!(
        "{{\"pair_id\": \"{}\", \"verdict\": \"rejected\"}}\n",
        ids[3]
    );
    // Without the token, or with a wrong one: 401, and nothing is taken.
    for token in [None, Some("wrong"), Some("")] {
        let (code, _) = http(&serve.addr, "POST", "/v1/labels", token, body.as_bytes());
        assert_eq!(code, 401);
        let (code, _) = http(&serve.addr, "GET", "/v1/status", token, b"");
        assert_eq!(code, 401);
    }
    // The scheme is case-insensitive (RFC 9110 §11.1); another scheme is refused.
    for scheme in ["bearer", "BEARER", "BeArEr"] {
        let auth = format!("{scheme} {}", serve.token);
        let (code, reply) = http_authorized(&serve.addr, "GET", "/v1/status", Some(&auth), b"");
        assert_eq!(code, 200, "{scheme}: {reply}");
    }
    let auth = format!("Basic {}", serve.token);
    let (code, _) = http_authorized(&serve.addr, "GET", "/v1/status", Some(&auth), b"");
    assert_eq!(code, 401);
    // A malformed line: 400 naming it, and none of the request is taken.
    let bad = format!("{body}{{\"pair_id\": \"x\", \"verdict\": \"maybe\"}}\n");
    let (code, reply) = serve.call("POST", "/v1/labels", bad.as_bytes());
    assert_eq!(code, 400);
    assert!(
        reply.contains("line 2") && reply.contains("maybe"),
        "{reply}"
    );
    let (code, reply) = serve.call("POST", "/v1/labels", b"not json\n");
    assert_eq!(code, 400, "{reply}");
    assert_eq!(serve.status()["labels_total"], 0);
    // Too large a body: 413 (this serve allows 64 KiB), and nothing is taken.
    let mut huge = String::new();
    while huge.len() <= 64 << 10 {
        huge.push_str(&body);
    }
    let (code, _) = serve.call("POST", "/v1/labels", huge.as_bytes());
    assert_eq!(code, 413);
    assert_eq!(serve.status()["labels_total"], 0);

    // Acknowledged, then SIGKILL at once.
    let (code, reply) = serve.call("POST", "/v1/labels", body.as_bytes());
    assert_eq!(code, 200, "{reply}");
    let second = format!(
        "{{\"pair_id\": \"{}\", \"verdict\": \"undecidable\"}}\n{{\"pair_id\": \"{}\", \"verdict\": \"chosen\"}}\n",
        ids[5], ids[7]
    );
    let (code, _) = serve.call("POST", "/v1/labels", second.as_bytes());
    assert_eq!(code, 200);
    drop(serve);

    let serve = Serve::start(&pairs, &out, 1, Some(&labels));
    let st = serve.wait_for_epoch(2);
    assert_eq!(st["labels_total"], 3, "{st}");
    assert_eq!(st["recovered_from_saved_state"], true, "{st}");
    serve.snapshot();
    let rows = decisions(&out.join("snapshot"));
    let reason_of = |id: &str| {
        rows.iter()
            .find(|r| r.1 == format!("\"{id}\""))
            .map(|r| r.2.clone())
            .unwrap_or_default()
    };
    assert_eq!(reason_of(&ids[3]), "\"human_corrected\"");
    assert_eq!(reason_of(&ids[5]), "\"human_undecidable\"");
    assert_eq!(reason_of(&ids[7]), "\"human_agrees\"");

    // `synpref label add` puts a file under --labels; serve takes it as the next epoch.
    let file = tmp.path().join("more.jsonl");
    std::fs::write(
        &file,
        format!("{{\"pair_id\": \"{}\", \"verdict\": \"chosen\"}}\n", ids[9]),
    )
    .unwrap();
    ok(&["label", "add", "--labels", s(&labels), s(&file)]);
    let st = serve.wait_for_epoch(3);
    assert_eq!(st["labels_total"], 4, "{st}");
    assert_eq!(st["label_files_taken"], 1, "{st}");
    let (code, metrics) = serve.call("GET", "/metrics", b"");
    assert_eq!(code, 200);
    assert!(metrics.contains("synpref_serve_epoch 3"), "{metrics}");
    assert!(metrics.contains("synpref_serve_rows{reason=\"human_agrees\"}"));
    // Killed again after a snapshot: the restart takes the state saved with it (no
    // model runs for epochs up to 2), replays epoch 3, and equals curate from scratch.
    drop(serve);
    let serve = Serve::start(&pairs, &out, 2, Some(&labels));
    let st = serve.wait_for_epoch(3);
    assert_eq!(st["labels_total"], 4, "{st}");
    assert_eq!(st["recovered_from_saved_state"], true, "{st}");
    serve.snapshot();
    let scratch = tmp.path().join("scratch");
    curate_from_label_log(&pairs, &out, &scratch, 1, &[]);
    assert_eq!(decisions(&out.join("snapshot")), decisions(&scratch));
    drop(serve);
    // A bad label file is refused by `label add`, exit 2 naming the row.
    std::fs::write(&file, "{\"pair_id\": \"a\", \"verdict\": \"perhaps\"}\n").unwrap();
    let err = fails_with(&["label", "add", "--labels", s(&labels), s(&file)], 2);
    assert!(
        err.contains("more.jsonl") && err.contains("perhaps"),
        "{err}"
    );
}

/// The golden file of `synpref explain curate`: the survey and curate dataflows by
/// operator names and edges. A change to the graph must be looked at and blessed:
/// `SYNPREF_BLESS=1 cargo test -p synpref --test integration explain` rewrites it.
#[test]
fn explain_curate_prints_the_dataflow_graphs_as_blessed() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("g");
    gen(&data, 200, 7);
    let out = ok(&[
        "explain",
        "curate",
        "--pairs",
        s(&data.join("pairs")),
        "--gold",
        s(&data.join("gold.parquet")),
        "--out",
        s(&tmp.path().join("never-written")),
    ]);
    assert!(
        !tmp.path().join("never-written").exists(),
        "explain writes nothing"
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/golden/explain_curate.txt");
    if std::env::var("SYNPREF_BLESS").is_ok_and(|v| v == "1") {
        std::fs::create_dir_all(golden.parent().unwrap()).unwrap();
        std::fs::write(&golden, &text).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&golden).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; run with SYNPREF_BLESS=1 to write it",
            golden.display()
        )
    });
    assert!(
        text == want,
        "the dataflow graph changed; if that is intended, bless it (SYNPREF_BLESS=1):\n--- got\n{text}\n--- want\n{want}"
    );
    for name in [
        "Survey",
        "Curate",
        "Validate",
        "Dedup",
        "UniquePairIds",
        "Decontaminate",
        "Score",
        "ConsistencyRule",
        "WriteParts",
    ] {
        assert!(text.contains(name), "{name} missing from:\n{text}");
    }
}

#[path = "integration/robustness.rs"]
mod robustness;

#[path = "integration/dedup.rs"]
mod dedup;

#[path = "integration/near_duplicates.rs"]
mod near_duplicates;

#[path = "integration/by_source.rs"]
mod by_source;

#[path = "integration/formats.rs"]
mod formats;

#[path = "integration/object_storage.rs"]
mod object_storage;

#[path = "integration/serve_faults.rs"]
mod serve_faults;

#[path = "integration/serve_load.rs"]
mod serve_load;

#[path = "integration/serve_cluster.rs"]
mod serve_cluster;

#[path = "integration/launch.rs"]
mod launch;

#[path = "integration/deploy.rs"]
mod deploy;

#[path = "integration/resume.rs"]
mod resume;

#[path = "integration/eval.rs"]
mod eval;

#[path = "integration/fractions.rs"]
mod fractions;

#[path = "integration/packed_scoring.rs"]
mod packed_scoring;

#[path = "integration/stage1.rs"]
mod stage1;

#[path = "integration/bench.rs"]
mod bench;

#[path = "integration/fuzz_replay.rs"]
mod fuzz_replay;
