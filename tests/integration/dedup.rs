//! Exact dedup on the canonical key (issue 28): the same comparison written as text or
//! messages, in the explicit or the TRL implicit form, with other spacing or another
//! Unicode normal form, is one pair, the first in input order kept, on any number of
//! workers; `--dedup-as-written` compares bytes as written.

use super::*;

/// One comparison in five forms across two files, a swapped copy and clean pairs.
fn write_forms(dir: &Path) -> PathBuf {
    let pool = dir.join("pool");
    std::fs::create_dir_all(&pool).unwrap();
    let prompt = "Which café serves the best espresso in town?";
    let decomposed = prompt.replace('é', "e\u{301}");
    let (chosen, rejected) = ("Try the one on Main Street.", "I refuse to answer.");
    let user = |t: &str| serde_json::json!([{"role": "user", "content": t}]);
    let assistant = |t: &str| serde_json::json!([{"role": "assistant", "content": t}]);
    let whole = |reply: &str| {
        serde_json::json!([
            {"role": "user", "content": prompt},
            {"role": "assistant", "content": reply}
        ])
    };
    let mut first = vec![
        serde_json::json!({"pair_id": "text", "prompt": prompt, "chosen": chosen, "rejected": rejected}),
        serde_json::json!({"pair_id": "swapped", "prompt": prompt, "chosen": rejected, "rejected": chosen}),
    ];
    for i in 0..6 {
        first.push(serde_json::json!({
            "pair_id": format!("clean-{i}"),
            "prompt": format!("Question number {i} about rivers and lakes"),
            "chosen": format!("A helpful answer about water body {i}."),
            "rejected": "No idea.",
        }));
    }
    let second = [
        serde_json::json!({"pair_id": "messages", "prompt": user(prompt), "chosen": assistant(chosen), "rejected": assistant(rejected)}),
        serde_json::json!({"pair_id": "implicit", "chosen": whole(chosen), "rejected": whole(rejected)}),
        serde_json::json!({"pair_id": "spacing", "prompt": format!("  {}\n", prompt.replace(' ', "  ")), "chosen": format!("{chosen}\n"), "rejected": rejected}),
        serde_json::json!({"pair_id": "nfd", "prompt": decomposed, "chosen": chosen, "rejected": rejected}),
        serde_json::json!({"pair_id": "edited", "prompt": prompt, "chosen": "Try the one on Elm Street.", "rejected": rejected}),
    ];
    for (name, rows) in [("a.jsonl", &first[..]), ("b.jsonl", &second[..])] {
        let text: String = rows.iter().map(|r| format!("{r}\n")).collect();
        std::fs::write(pool.join(name), text).unwrap();
    }
    pool
}

/// (pair_id, reason) of every output row, sorted.
fn decisions(out: &Path) -> Vec<(String, String)> {
    let mut all: Vec<(String, String)> = ["curated", "discarded", "quarantine"]
        .iter()
        .flat_map(|d| read_rows(&out.join(d)))
        .map(|r| {
            (
                r["pair_id"].as_str().unwrap().to_string(),
                r["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    all.sort();
    all
}

#[test]
fn the_same_pair_as_text_messages_implicit_respaced_or_nfd_is_curated_once_on_any_workers() {
    let tmp = tempfile::tempdir().unwrap();
    let pool = write_forms(tmp.path());
    let gold = tmp.path().join("gold.jsonl");
    std::fs::write(&gold, "{\"pair_id\":\"clean-0\",\"verdict\":\"chosen\"}\n").unwrap();
    let mut runs = Vec::new();
    for workers in ["1", "2", "4"] {
        let out = tmp.path().join(format!("out-{workers}"));
        curate_ok(&pool, &gold, &out, &["--workers", workers]);
        runs.push(decisions(&out));
    }
    assert_eq!(runs[0], runs[1], "1 and 2 workers");
    assert_eq!(runs[0], runs[2], "1 and 4 workers");
    let reason = |id: &str| {
        runs[0]
            .iter()
            .find(|(p, _)| p == id)
            .unwrap_or_else(|| panic!("{id} missing"))
            .1
            .clone()
    };
    assert_eq!(runs[0].len(), 13, "every row accounted for");
    assert_ne!(
        reason("text"),
        "duplicate",
        "the first in input order is kept"
    );
    for id in ["messages", "implicit", "spacing", "nfd"] {
        assert_eq!(reason(id), "duplicate", "{id}");
    }
    for id in ["swapped", "edited"] {
        assert_ne!(reason(id), "duplicate", "{id} is another comparison");
    }
    // As written, only byte-identical rows are duplicates: none here.
    let out = tmp.path().join("as-written");
    curate_ok(&pool, &gold, &out, &["--dedup-as-written"]);
    assert!(decisions(&out).iter().all(|(_, r)| r != "duplicate"));
}

/// (copy, original) of every exact copy `gen` wrote whose original is no copy itself.
fn exact_copies(data: &Path) -> Vec<(String, String)> {
    let rows = string_columns(
        &data.join("truth.parquet"),
        &["pair_id", "injected", "copy_of"],
    );
    let is_copy = |r: &Vec<Option<String>>| r[1].as_deref() == Some("duplicate");
    let copies: std::collections::HashSet<&str> = rows
        .iter()
        .filter(|r| is_copy(r))
        .filter_map(|r| r[0].as_deref())
        .collect();
    rows.iter()
        .filter(|r| is_copy(r) && !copies.contains(r[2].as_deref().unwrap()))
        .map(|r| (r[0].clone().unwrap(), r[2].clone().unwrap()))
        .collect()
}

/// The reasons with a count above zero of a report's or serve's status's `reasons`.
fn nonzero_reasons(reasons: &Value) -> std::collections::BTreeMap<String, u64> {
    reasons
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, n)| (k.clone(), n.as_u64().unwrap()))
        .filter(|(_, n)| *n > 0)
        .collect()
}

/// A `--labels` directory holding `gold` as its first file.
fn labels_dir(dir: &Path, gold: &Path) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::copy(gold, dir.join("gold.parquet")).unwrap();
    dir.to_path_buf()
}

/// pair_id → reason of every row an output holds.
fn reasons(out: &Path) -> std::collections::HashMap<String, String> {
    decisions(out).into_iter().collect()
}

/// Issue 28 part 5, "labels on a pair apply to its canonical key": a human label given
/// for a duplicate copy's pair id decides the pair kept for that content (which has no
/// label of its own; its own label comes first; of two labelled copies, the first in
/// input order), in curate on 1 and 2 workers and in serve, whose snapshot and counts
/// after the labels equal a from-scratch curate with them.
#[test]
fn a_label_on_a_duplicate_copy_decides_the_kept_pair_in_curate_and_serve() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    gen_with(&data, 1500, 23, &["--duplicate-fraction", "0.05"]);
    let pairs = data.join("pairs");
    let gold = data.join("gold.parquet");
    let base = tmp.path().join("base");
    curate_ok(&pairs, &gold, &base, &[]);
    let before = reasons(&base);
    let gen_labelled: std::collections::HashSet<String> = string_columns(&gold, &["pair_id"])
        .into_iter()
        .filter_map(|r| r[0].clone())
        .collect();
    // Copies discarded as duplicates whose original the models decided (no label).
    let model_decided = [
        "both_rms_agree",
        "gold_rm_disagrees",
        "gold_rm_and_judge_agree",
        "best_rm_and_judge_disagree",
    ];
    let mut candidates: Vec<(String, String)> = exact_copies(&data)
        .into_iter()
        .filter(|(copy, original)| {
            before.get(copy).map(String::as_str) == Some("duplicate")
                && model_decided.contains(&before[original].as_str())
                && !gen_labelled.contains(copy)
        })
        .collect();
    candidates.sort();
    candidates.dedup_by(|a, b| a.1 == b.1);
    assert!(candidates.len() >= 8, "{candidates:?}");
    let label = |id: &str, verdict: &str| {
        serde_json::json!({"pair_id": id, "verdict": verdict}).to_string() + "\n"
    };
    let mut lines = String::new();
    let mut want: Vec<(String, &str)> = Vec::new();
    for (copy, original) in &candidates[..6] {
        lines += &label(copy, "rejected");
        want.push((original.clone(), "human_corrected"));
    }
    let (copy, original) = &candidates[6];
    lines += &label(copy, "undecidable");
    want.push((original.clone(), "human_undecidable"));
    // The kept pair's own label comes before its copy's.
    let (copy, original) = &candidates[7];
    lines += &label(copy, "rejected");
    lines += &label(original, "chosen");
    want.push((original.clone(), "human_agrees"));

    let labels = labels_dir(&tmp.path().join("labels"), &gold);
    std::fs::write(labels.join("on-copies.jsonl"), &lines).unwrap();
    let mut runs = Vec::new();
    for workers in ["1", "2"] {
        let out = tmp.path().join(format!("labelled-{workers}"));
        curate_ok(&pairs, &labels, &out, &["--workers", workers]);
        runs.push(reasons(&out));
    }
    assert_eq!(runs[0], runs[1], "1 and 2 workers");
    for (original, reason) in &want {
        assert_eq!(runs[0][original], *reason, "{original}");
    }
    for (copy, _) in &candidates[..8] {
        assert_eq!(
            runs[0][copy], "duplicate",
            "a labelled copy is still a duplicate"
        );
    }

    // serve: gen's labels at start, the copies' labels posted; its counts (kept by
    // its decisions, before a snapshot resets them from the snapshot's report), its
    // snapshot and changelog then equal a from-scratch curate's with its label log.
    // One worker keeps decisions per shard, two run differential's reduce.
    for (workers, engine) in [(1, "shard"), (2, "differential")] {
        let serve_labels = labels_dir(&tmp.path().join(format!("serve-labels-{workers}")), &gold);
        let out = tmp.path().join(format!("serve-{workers}"));
        let serve = Serve::start_with(
            &pairs,
            &out,
            workers,
            Some(&serve_labels),
            &["--decisions", engine],
        );
        serve.post_labels(&lines);
        let st = serve.status();
        let scratch = tmp.path().join(format!("scratch-{workers}"));
        curate_from_label_log(&pairs, &out, &scratch, 1, &[]);
        let r = report(&scratch);
        assert_eq!(
            nonzero_reasons(&st["reasons"]),
            nonzero_reasons(&r["reasons"]),
            "{engine}: serve's decisions"
        );
        serve.snapshot();
        assert!(
            super::decisions(&out.join("snapshot")) == super::decisions(&scratch),
            "{engine}: serve's snapshot differs from curate"
        );
        let served = reasons(&out.join("snapshot"));
        for (original, reason) in &want {
            assert_eq!(served[original], *reason, "{engine}: {original}");
        }
    }
}

/// (copy, original) of every swapped copy `gen --conflicts` wrote.
fn swapped_copies(data: &Path) -> Vec<(String, String)> {
    string_columns(
        &data.join("truth.parquet"),
        &["pair_id", "injected", "copy_of"],
    )
    .into_iter()
    .filter(|r| r[1].as_deref() == Some("conflict"))
    .map(|r| (r[0].clone().unwrap(), r[2].clone().unwrap()))
    .collect()
}

/// Issue 28 part 5 for conflicting labels: serve scores every copy of a comparison that
/// also occurs swapped, so a label arriving later on either copy (or on a duplicate of
/// one) lets that copy decide, and a label on the earlier copy takes the decision over,
/// exactly as curate decides from scratch with the same labels: after every epoch
/// serve's counts (from its decisions, per shard and in differential's reduce, with and
/// without judge votes) and then its snapshot equal a from-scratch curate's.
#[test]
fn serve_lets_a_later_label_decide_a_conflicting_comparison_as_curate_does() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let flags = ["--conflicts", "0.05", "--duplicate-fraction", "0.03"];
    gen_with(&data, 1500, 29, &flags);
    let pairs = data.join("pairs");
    let gold = data.join("gold.parquet");
    let judges = data.join("judge_votes.parquet");
    let mut conflicts = swapped_copies(&data);
    conflicts.sort();
    conflicts.dedup_by(|a, b| a.1 == b.1);
    assert!(conflicts.len() >= 20, "{}", conflicts.len());
    // Labels on copies of any kind of duplicate, too: the original's exact copies.
    let exact: Vec<(String, String)> = exact_copies(&data);
    let label = |id: &str, verdict: &str| {
        serde_json::json!({"pair_id": id, "verdict": verdict}).to_string() + "\n"
    };
    let verdicts = ["chosen", "rejected", "undecidable"];
    // Epoch 1: the later (swapped) copies; epoch 2: the originals of some of them, and
    // of comparisons no label touched yet; epoch 3: an exact copy of an original.
    let mut epochs: Vec<String> = vec![String::new(); 3];
    for (i, (copy, _)) in conflicts[..8].iter().enumerate() {
        epochs[0] += &label(copy, verdicts[i % 3]);
    }
    for (i, (_, original)) in conflicts[4..12].iter().enumerate() {
        epochs[1] += &label(original, verdicts[(i + 1) % 3]);
    }
    let originals: std::collections::HashSet<&str> =
        conflicts[12..].iter().map(|c| c.1.as_str()).collect();
    let copy_of_an_original = exact
        .iter()
        .find(|(_, original)| originals.contains(original.as_str()));
    if let Some((copy, _)) = copy_of_an_original {
        epochs[2] += &label(copy, "rejected");
    }
    epochs[2] += &label(&conflicts[12].0, "chosen");
    for (workers, engine, with_judges) in [(1, "shard", false), (2, "differential", true)] {
        let tag = format!("{engine}, judges {with_judges}");
        let labels = labels_dir(&tmp.path().join(format!("labels-{workers}")), &gold);
        let out = tmp.path().join(format!("serve-{workers}"));
        let mut extra: Vec<&str> = Vec::new();
        if with_judges {
            extra.extend(["--judges", s(&judges)]);
        }
        let mut serve_extra = extra.clone();
        serve_extra.extend(["--decisions", engine]);
        let serve = Serve::start_with(&pairs, &out, workers, Some(&labels), &serve_extra);
        let conflicting = |r: &std::collections::BTreeMap<String, u64>| {
            r.get("conflicting_labels").copied().unwrap_or(0)
        };
        let mut undecided = conflicting(&nonzero_reasons(&serve.status()["reasons"]));
        for (epoch, lines) in epochs.iter().enumerate() {
            serve.post_labels(lines);
            let st = serve.status();
            let scratch = tmp.path().join(format!("scratch-{workers}-{epoch}"));
            curate_from_label_log(&pairs, &out, &scratch, workers, &extra);
            let got = nonzero_reasons(&st["reasons"]);
            assert_eq!(
                got,
                nonzero_reasons(&report(&scratch)["reasons"]),
                "{tag}, epoch {epoch}: serve's decisions"
            );
            if epoch == 0 && !with_judges {
                // Comparisons no row could decide now have a deciding copy (eight were
                // labelled; gen's own labels may have decided a few already).
                assert!(conflicting(&got) + 4 <= undecided, "{tag}: {got:?}");
            }
            undecided = conflicting(&got);
            serve.snapshot();
            assert!(
                super::decisions(&out.join("snapshot")) == super::decisions(&scratch),
                "{tag}, epoch {epoch}: serve's snapshot differs from curate"
            );
        }
    }
}
