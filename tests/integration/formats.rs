//! What trainers load (issue 11): `--format` layouts read by Hugging Face `datasets`
//! exactly as the curated rows, for pools in all four input forms; the dataset card's
//! configs; re-curating curate's own output.

use super::*;

/// A Python interpreter with `datasets` (and pyarrow): the machine's `python3` when it
/// has them (`scripts/test.sh` installs them), else a virtual environment under the target
/// directory, made once.
fn python_with_datasets() -> PathBuf {
    static PYTHON: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    PYTHON
        .get_or_init(|| {
            let has = |py: &Path| {
                Command::new(py)
                    .args(["-c", "import datasets, pyarrow"])
                    .output()
                    .is_ok_and(|o| o.status.success())
            };
            let system = PathBuf::from("python3");
            if has(&system) {
                return system;
            }
            let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("python-datasets");
            let py = venv.join("bin/python");
            if !has(&py) {
                eprintln!("installing datasets into {} (once)", venv.display());
                let made = Command::new("python3")
                    .args(["-m", "venv", s(&venv)])
                    .status()
                    .expect("python3 is needed for the datasets loading checks");
                assert!(made.success(), "python3 -m venv failed");
                let pip = Command::new(&py)
                    .args(["-m", "pip", "install", "-q", "datasets", "pyarrow"])
                    .status()
                    .unwrap();
                assert!(pip.success(), "pip install datasets failed");
            }
            py
        })
        .clone()
}

/// What `datasets.load_dataset(OUT)` (and a config of it) yields, summarised by Python.
const LOAD_CHECK: &str = r#"
import json, sys
from datasets import load_dataset
out, config = sys.argv[1], sys.argv[2]
ds = load_dataset(out, None if config == "default" else config, split="train")
res = {"rows": len(ds), "columns": ds.column_names, "pair_ids": sorted(ds["pair_id"]), "bad": 0, "system_turns": 0}
for r in ds:
    for k in ("chosen", "rejected"):
        c = r[k]
        ok = isinstance(c, list) and len(c) > 0 and all(isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str) for m in c) and c[-1]["role"] == "assistant"
        res["bad"] += 0 if ok else 1
        res["system_turns"] += sum(1 for m in c if isinstance(m, dict) and m.get("role") == "system")
if "margin" in ds.column_names:
    res["min_margin"] = min(ds["margin"])
print(json.dumps(res))
"#;

fn load_with_datasets(out: &Path, config: &str) -> Value {
    let o = Command::new(python_with_datasets())
        .args(["-c", LOAD_CHECK, s(out), config])
        .env("HF_DATASETS_OFFLINE", "1")
        .env("HF_HUB_OFFLINE", "1")
        .env("HF_DATASETS_CACHE", s(&out.with_extension("hf-cache")))
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "load_dataset({}) failed: {}",
        out.display(),
        String::from_utf8_lossy(&o.stderr)
    );
    let stdout = String::from_utf8_lossy(&o.stdout);
    serde_json::from_str(stdout.lines().last().unwrap()).unwrap()
}

/// Pair ids of every part (Parquet or JSON lines) under `dir`, sorted.
fn part_pair_ids(dir: &Path) -> Vec<String> {
    let mut ids: Vec<String> = read_rows(dir)
        .iter()
        .map(|r| r["pair_id"].as_str().unwrap().to_string())
        .collect();
    for e in std::fs::read_dir(dir).into_iter().flatten() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|e| e == "jsonl") {
            for line in std::fs::read_to_string(&p).unwrap().lines() {
                let v: Value = serde_json::from_str(line).unwrap();
                ids.push(v["pair_id"].as_str().unwrap().to_string());
            }
        }
    }
    ids.sort();
    ids
}

/// `gen`'s pool rewritten as JSONL in one of the four input forms trainers meet.
fn pool_in_form(rows: &[Value], form: &str, path: &Path) {
    let user = |t: &Value| serde_json::json!([{"role": "user", "content": t}]);
    let assistant = |t: &Value| serde_json::json!([{"role": "assistant", "content": t}]);
    let whole = |p: &Value, r: &Value| serde_json::json!([{"role": "user", "content": p}, {"role": "assistant", "content": r}]);
    let mut text = String::new();
    for r in rows {
        let (p, c, j) = (&r["prompt"], &r["chosen"], &r["rejected"]);
        let row = match form {
            "strings" => {
                serde_json::json!({"pair_id": r["pair_id"], "prompt": p, "chosen": c, "rejected": j})
            }
            "messages" => {
                serde_json::json!({"pair_id": r["pair_id"], "prompt": user(p), "chosen": assistant(c), "rejected": assistant(j)})
            }
            "whole" => {
                serde_json::json!({"pair_id": r["pair_id"], "chosen": whole(p, c), "rejected": whole(p, j)})
            }
            "message_prompt" => {
                serde_json::json!({"pair_id": r["pair_id"], "prompt": [{"role": "system", "content": "Be helpful."}, {"role": "user", "content": p}], "chosen": c, "rejected": j})
            }
            other => panic!("unknown form {other}"),
        };
        text.push_str(&format!("{row}\n"));
    }
    std::fs::write(path, text).unwrap();
}

#[test]
fn every_pool_form_and_format_loads_in_datasets_as_exactly_the_curated_rows() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("g");
    gen(&data, 3_000, 21);
    let rows = read_rows(&data.join("pairs"));
    let gold = data.join("gold.parquet");
    let mut runs: Vec<(&str, &str)> = ["strings", "messages", "whole", "message_prompt"]
        .iter()
        .map(|f| (*f, "conversational"))
        .collect();
    runs.extend([
        ("strings", "trl"),
        ("whole", "openrlhf"),
        ("message_prompt", "rewardbench"),
    ]);
    for (form, format) in runs {
        let pool = tmp.path().join(format!("{form}.jsonl"));
        if !pool.exists() {
            pool_in_form(&rows, form, &pool);
        }
        let out = tmp.path().join(format!("out-{form}-{format}"));
        curate_ok(&pool, &gold, &out, &["--format", format]);
        let r = report(&out);
        let curated = part_pair_ids(&out.join("curated"));
        assert_eq!(curated.len() as u64, r["curated_rows"].as_u64().unwrap());
        assert!(
            curated.len() > 100,
            "{form}/{format}: too few curated rows to check"
        );
        let loaded = load_with_datasets(&out, "default");
        let what = format!("{form} pool, --format {format}");
        assert_eq!(
            loaded["rows"].as_u64().unwrap(),
            curated.len() as u64,
            "{what}"
        );
        let loaded_ids: Vec<String> = loaded["pair_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect();
        assert_eq!(
            loaded_ids, curated,
            "{what}: load_dataset(OUT) is not the curated rows"
        );
        assert_eq!(
            loaded["bad"], 0,
            "{what}: a reply is not a whole conversation"
        );
        let columns: Vec<&str> = loaded["columns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap())
            .collect();
        assert!(!columns.contains(&"prompt"), "{what}: {columns:?}");
        match format {
            "trl" | "openrlhf" => {
                assert_eq!(
                    columns,
                    ["pair_id", "chosen", "rejected", "margin"],
                    "{what}"
                );
                assert!(loaded["min_margin"].as_f64().unwrap() >= 0.0);
            }
            "rewardbench" => {
                assert_eq!(columns, ["pair_id", "chosen", "rejected"], "{what}");
                assert_eq!(loaded["system_turns"], 0, "{what}: system turns are folded");
                assert!(std::fs::read_dir(out.join("curated")).unwrap().all(|e| e
                    .unwrap()
                    .path()
                    .extension()
                    .unwrap()
                    == "jsonl"));
            }
            _ => assert!(
                columns.contains(&"reason") && columns.contains(&"p_gold"),
                "{what}"
            ),
        }
        // The discarded config loads on its own, with its reasons.
        let discarded = load_with_datasets(&out, "discarded");
        assert_eq!(
            discarded["rows"].as_u64().unwrap(),
            r["discarded_rows"].as_u64().unwrap(),
            "{what}"
        );
        let card = std::fs::read_to_string(out.join("README.md")).unwrap();
        assert!(card.starts_with("---\nconfigs:\n"), "{card}");
        assert!(
            card.contains("max_samples"),
            "the card warns about OpenRLHF's cut"
        );
        assert!(card.contains(&format!(
            "{} of {} input pairs kept",
            r["curated_rows"], r["input_rows"]
        )));
    }
}

#[test]
fn recurating_curated_output_replaces_own_columns_and_never_swaps_a_correction_back() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("g");
    gen(&data, 4_000, 23);
    let gold = data.join("gold.parquet");
    let first = tmp.path().join("first");
    let second = tmp.path().join("second");
    let third = tmp.path().join("third");
    let curate = |pairs: &Path, out: &Path, format: &str| {
        curate_ok(pairs, &gold, out, &["--format", format]);
    };
    curate(&data.join("pairs"), &first, "input");
    curate(&first.join("curated"), &second, "input");
    curate(&second.join("curated"), &third, "conversational");
    let a = read_rows(&first.join("curated"));
    let b = read_rows(&second.join("curated"));
    let r1 = report(&first);
    assert!(
        r1["human_corrected"].as_u64().unwrap() > 0,
        "nothing to swap back"
    );
    let by_id = |rows: &[Value]| -> std::collections::HashMap<String, Value> {
        rows.iter()
            .map(|r| (r["pair_id"].as_str().unwrap().to_string(), r.clone()))
            .collect()
    };
    let (a_by, b_by) = (by_id(&a), by_id(&b));
    // No duplicated column: the second pass's parts have the first's columns exactly.
    let columns = |dir: &Path| -> Vec<String> {
        let p = std::fs::read_dir(dir)
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        ParquetRecordBatchReaderBuilder::try_new(File::open(p).unwrap())
            .unwrap()
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect()
    };
    assert_eq!(
        columns(&first.join("curated")),
        columns(&second.join("curated"))
    );
    // Every row the second pass keeps is the first pass's row in the same orientation;
    // every human-decided row is kept with the same reason.
    for (id, row) in &b_by {
        let before = a_by.get(id).expect("a row the first pass did not curate");
        assert_eq!(
            (&row["prompt"], &row["chosen"], &row["rejected"]),
            (&before["prompt"], &before["chosen"], &before["rejected"]),
            "{id} changed orientation"
        );
    }
    for (id, row) in &a_by {
        let reason = row["reason"].as_str().unwrap();
        if reason.starts_with("human_") {
            assert_eq!(b_by[id]["reason"], reason, "{id}");
        }
    }
    let r2 = report(&second);
    assert_eq!(r2["human_corrected"], r1["human_corrected"]);
    // Every verdict pair of a curated pool is human-decided and, as the pool gives it
    // (corrections swapped), agrees with its verdict.
    assert_eq!(
        r2["quality"]["estimated_label_accuracy"]["input"]["value"], 1.0,
        "{}",
        r2["quality"]
    );
    assert_eq!(r2["human_agrees"], r1["human_agrees"]);
    // The models are retrained on the curated pool, so a few rows they decided may
    // fall out; the report says how many, and it must stay a small share.
    let kept = b.len() as f64 / a.len() as f64;
    eprintln!(
        "re-curation kept {} of {} rows ({:.2}%)",
        b.len(),
        a.len(),
        100.0 * kept
    );
    assert!(
        kept > 0.9,
        "re-curation dropped {:.1}% of the rows",
        100.0 * (1.0 - kept)
    );
    // A pass over the conversational layout (whole conversations, no prompt column)
    // keeps the corrections too.
    let fourth = tmp.path().join("fourth");
    curate(&third.join("curated"), &fourth, "input");
    assert_eq!(report(&third)["human_corrected"], r1["human_corrected"]);
    assert_eq!(report(&fourth)["human_corrected"], r1["human_corrected"]);
}

#[test]
fn jsonl_extra_columns_keep_their_json_types_for_margin_losses() {
    let tmp = tempfile::tempdir().unwrap();
    let pool = tmp.path().join("pool");
    std::fs::create_dir_all(&pool).unwrap();
    // Two files: `margin` is an integer in one and a float in the other (a float column),
    // `meta` nested, `mixed` a number here and text there (JSON text).
    std::fs::write(
        pool.join("a.jsonl"),
        "{\"pair_id\": \"a1\", \"prompt\": \"q1\", \"chosen\": \"good one\", \"rejected\": \"bad one\", \"margin\": 1, \"ok\": true, \"meta\": {\"turns\": 2, \"tags\": [\"x\", \"y\"]}, \"mixed\": 3}\n\
         {\"pair_id\": \"a2\", \"prompt\": \"q2\", \"chosen\": \"good two\", \"rejected\": \"bad two\", \"margin\": null, \"ok\": false, \"meta\": null, \"mixed\": \"three\"}\n",
    )
    .unwrap();
    std::fs::write(
        pool.join("b.jsonl"),
        "{\"pair_id\": \"b1\", \"prompt\": \"q3\", \"chosen\": \"good three\", \"rejected\": \"bad three\", \"margin\": 0.72, \"meta\": {\"turns\": 1.5}}\n",
    )
    .unwrap();
    let gold = tmp.path().join("gold.jsonl");
    std::fs::write(
        &gold,
        "{\"pair_id\": \"a1\", \"verdict\": \"chosen\"}\n{\"pair_id\": \"a2\", \"verdict\": \"chosen\"}\n{\"pair_id\": \"b1\", \"verdict\": \"chosen\"}\n",
    )
    .unwrap();
    let out = tmp.path().join("o");
    curate_ok(&pool, &gold, &out, &[]);
    assert_accounting(&out);
    let part = std::fs::read_dir(out.join("curated"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let schema = ParquetRecordBatchReaderBuilder::try_new(File::open(part).unwrap())
        .unwrap()
        .schema()
        .clone();
    let ty = |n: &str| schema.field_with_name(n).unwrap().data_type().clone();
    assert_eq!(ty("margin"), DataType::Float64);
    assert_eq!(ty("ok"), DataType::Boolean);
    assert_eq!(ty("mixed"), DataType::Utf8);
    let DataType::Struct(meta) = ty("meta") else {
        panic!("meta is {:?}", ty("meta"))
    };
    assert_eq!(
        meta.find("turns").unwrap().1.data_type(),
        &DataType::Float64
    );
    assert!(matches!(
        meta.find("tags").unwrap().1.data_type(),
        DataType::List(_)
    ));
    let rows = read_rows(&out.join("curated"));
    let row = |id: &str| rows.iter().find(|r| r["pair_id"] == id).unwrap().clone();
    assert_eq!(row("b1")["margin"], 0.72);
    assert_eq!(row("a1")["margin"], 1.0);
    assert_eq!(row("a1")["meta"]["tags"], serde_json::json!(["x", "y"]));
    assert_eq!(row("a1")["mixed"], "3");
    assert_eq!(row("a2")["mixed"], "three");
    assert_eq!(row("a2")["ok"], false);
}

#[test]
fn export_reprojects_a_committed_output_as_curate_would_have_written_it() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("g");
    gen(&data, 3_000, 29);
    let args = |out: &Path, format: &str| {
        curate_ok(
            &data.join("pairs"),
            &data.join("gold.parquet"),
            out,
            &["--format", format, "--workers", "2"],
        );
    };
    let input = tmp.path().join("input");
    let direct = tmp.path().join("direct");
    args(&input, "input");
    args(&direct, "conversational");
    let exported = tmp.path().join("exported");
    ok(&[
        "export",
        "--from",
        s(&input),
        "--format",
        "conversational",
        "--out",
        s(&exported),
        "--no-progress",
    ]);
    for set in ["curated", "discarded", "quarantine"] {
        assert_eq!(
            read_rows(&exported.join(set)),
            read_rows(&direct.join(set)),
            "{set}: export differs from curate --format conversational"
        );
    }
    assert_accounting(&exported);
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(exported.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["job"], "export");
    assert_eq!(manifest["spec"]["format"], "conversational");
    assert_eq!(load_with_datasets(&exported, "default")["bad"], 0);
    // A preset keeps no decision columns: exporting from one is refused, naming why.
    let trl = tmp.path().join("trl");
    ok(&[
        "export",
        "--from",
        s(&input),
        "--format",
        "trl",
        "--out",
        s(&trl),
        "--no-progress",
    ]);
    let err = fails_with(
        &[
            "export",
            "--from",
            s(&trl),
            "--format",
            "input",
            "--out",
            s(&tmp.path().join("x")),
        ],
        2,
    );
    assert!(err.contains("--format trl"), "{err}");
    let err = fails_with(
        &[
            "export",
            "--from",
            s(&tmp.path().join("none")),
            "--format",
            "trl",
            "--out",
            s(&tmp.path().join("y")),
        ],
        2,
    );
    assert!(err.contains("manifest.json"), "{err}");
}

#[test]
fn serve_over_curated_output_keeps_corrections_as_curate_does() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("g");
    gen(&data, 2_000, 37);
    let first = tmp.path().join("first");
    curate_ok(&data.join("pairs"), &data.join("gold.parquet"), &first, &[]);
    assert!(report(&first)["human_corrected"].as_u64().unwrap() > 0);
    let pool = first.join("curated");
    // Serve the curated output with labels on a few pairs, then on half the corrected
    // ones: for the other half the recorded corrections stand in for their verdicts.
    let corrected: Vec<String> = read_rows(&pool)
        .iter()
        .filter(|r| r["reason"] == "human_corrected")
        .map(|r| r["pair_id"].as_str().unwrap().to_string())
        .collect();
    let others: Vec<String> = read_rows(&pool)
        .iter()
        .filter(|r| r["reason"] == "both_rms_agree")
        .take(10)
        .map(|r| r["pair_id"].as_str().unwrap().to_string())
        .collect();
    let out = tmp.path().join("serve");
    let serve = Serve::start(&pool, &out, 2, None);
    let body: String = others
        .iter()
        .map(|id| format!("{{\"pair_id\": \"{id}\", \"verdict\": \"chosen\"}}\n"))
        .collect();
    serve.post_labels(&body);
    // Then the original verdicts of half the corrected pairs: given for the unswapped
    // orientation, they agree with the recorded corrections.
    let body: String = corrected[..corrected.len() / 2]
        .iter()
        .map(|id| format!("{{\"pair_id\": \"{id}\", \"verdict\": \"rejected\"}}\n"))
        .collect();
    serve.post_labels(&body);
    serve.snapshot();
    let scratch = tmp.path().join("scratch");
    curate_from_label_log(&pool, &out, &scratch, 2, &[]);
    assert!(
        decisions(&out.join("snapshot")) == decisions(&scratch),
        "serve differs from curate"
    );
    // serve's self-measurement counts the recorded corrections as curate's does.
    let (st, r) = (serve.status(), report(&scratch));
    assert_eq!(
        st["quality"]["estimated_label_accuracy"],
        r["quality"]["estimated_label_accuracy"]
    );
    assert_eq!(
        r["quality"]["estimated_label_accuracy"]["input"]["value"],
        1.0
    );
    let snapshot = read_rows(&out.join("snapshot/curated"));
    for id in &corrected {
        let row = snapshot
            .iter()
            .find(|r| r["pair_id"] == id.as_str())
            .unwrap();
        assert_eq!(row["reason"], "human_corrected", "{id}");
    }
}

#[test]
fn rerunning_into_the_same_out_never_loads_stale_rows_from_the_datasets_cache() {
    // `datasets` caches a local dataset by its card's patterns: the run id in them is
    // what makes a re-written output load afresh.
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("g");
    gen(&data, 2_000, 43);
    let out = tmp.path().join("o");
    let gold = data.join("gold.parquet");
    curate_ok(&data.join("pairs"), &gold, &out, &[]);
    let first = load_with_datasets(&out, "default");
    assert_eq!(first["rows"], report(&out)["curated_rows"]);
    curate_ok(
        &data.join("pairs"),
        &gold,
        &out,
        &["--threshold", "0.8", "--format", "conversational"],
    );
    let second = load_with_datasets(&out, "default");
    assert_eq!(second["rows"], report(&out)["curated_rows"]);
    assert_ne!(
        first["rows"], second["rows"],
        "the two runs should keep different rows"
    );
    assert!(!second["columns"]
        .as_array()
        .unwrap()
        .contains(&Value::from("prompt")));
}
