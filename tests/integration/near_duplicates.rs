//! Conflicting labels and near-duplicates (issue 28), measured against what `gen`
//! injected: recall and precision computed here from `truth.parquet` and the written
//! parts, the same decisions on 1, 2 and 4 workers, on two processes and under a 64 KiB
//! `--memory-budget` (the band index spilled in sorted runs), and the
//! precedence of a conflict's deciders (human verdict, then judges, then neither).

use std::collections::HashMap;

use super::*;

/// (pair_id → (reason, duplicate_of)) of every output row.
fn decided(out: &Path) -> HashMap<String, (String, Option<String>)> {
    ["curated", "discarded", "quarantine"]
        .iter()
        .flat_map(|d| read_rows(&out.join(d)))
        .map(|r| {
            (
                r["pair_id"].as_str().unwrap().to_string(),
                (
                    r["reason"].as_str().unwrap().to_string(),
                    r["duplicate_of"].as_str().map(str::to_string),
                ),
            )
        })
        .collect()
}

/// What gen injected: pair_id → (kind, the pair id it copies).
pub(super) fn injected(data: &Path) -> HashMap<String, (String, String)> {
    string_columns(
        &data.join("truth.parquet"),
        &["pair_id", "injected", "copy_of"],
    )
    .into_iter()
    .filter_map(|r| match &r[..] {
        [Some(id), Some(kind), Some(of)] => Some((id.clone(), (kind.clone(), of.clone()))),
        _ => None,
    })
    .collect()
}

/// The family of a row (`injected`): the original that it, or what it copies, copies.
pub(super) fn family(injected: &HashMap<String, (String, String)>, id: &str) -> String {
    let mut id = id.to_string();
    while let Some((_, of)) = injected.get(&id) {
        id = of.clone();
    }
    id
}

#[test]
fn injected_near_duplicates_and_conflicts_are_caught_the_same_on_1_2_4_workers_2_processes_and_a_small_memory_budget(
) {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    gen_with(
        &data,
        20000,
        28,
        &["--near-duplicates", "0.05", "--conflicts", "0.01"],
    );
    let pool = data.join("pairs");
    let gold = data.join("gold.parquet");
    let judges = data.join("judge_votes.parquet");
    let mut runs = Vec::new();
    for workers in ["1", "2", "4"] {
        let out = tmp.path().join(format!("out-{workers}"));
        let mut flags = vec!["--workers", workers, "--judges", s(&judges)];
        // Four workers under a 64 KiB budget: 1,024 band entries each in memory, so
        // each spills about 68 sorted runs to disk and merges them back.
        if workers == "4" {
            flags.extend(["--memory-budget", "64K"]);
        }
        curate_ok(&pool, &gold, &out, &flags);
        runs.push(decided(&out));
    }
    let figures = |workers: &str| {
        json_file(
            &tmp.path()
                .join(format!("out-{workers}"))
                .join("report.json"),
        )["near_duplicates"]
            .clone()
    };
    let (roomy, tight) = (figures("1"), figures("4"));
    assert_eq!(roomy["band_index"]["spilled_runs"], 0);
    assert!(
        tight["band_index"]["spilled_runs"].as_u64().unwrap() > 100,
        "{tight}"
    );
    assert_eq!(tight["memory_budget_bytes"], 64 << 10);
    // The bands and what they found do not depend on the budget.
    for field in ["candidate_edges", "components", "members"] {
        assert_eq!(roomy[field], tight[field], "{field}");
    }
    assert_eq!(
        roomy["band_index"]["entries"],
        tight["band_index"]["entries"]
    );
    // Independently: one entry per band of every row that passed validation (the
    // written parts say which rows did), and a spill of 16 bytes per entry at most.
    let bands = synpref_operators::minhash::NearDupSettings::default().bands as u64;
    let valid = runs[0]
        .values()
        .filter(|(reason, _)| !reason.starts_with("invalid"))
        .count() as u64;
    assert_eq!(roomy["band_index"]["entries"], bands * valid);
    let spilled = tight["band_index"]["spilled_bytes"].as_u64().unwrap();
    assert!(spilled > 0 && spilled <= 16 * bands * valid, "{tight}");
    let out = tmp.path().join("out-2x2");
    let mut args = vec!["launch", "--local", "2", "--"];
    let argv = curate_argv(&pool, &gold, &out);
    args.extend(argv.iter().copied());
    args.extend(["--no-progress", "--workers", "2", "--judges", s(&judges)]);
    ok(&args);
    runs.push(decided(&out));
    for (i, name) in ["2 workers", "4 workers", "2 processes"].iter().enumerate() {
        assert!(
            runs[0] == runs[i + 1],
            "1 worker and {name} decide differently"
        );
    }
    let rows = &runs[0];
    assert_eq!(rows.len(), 20000, "every row accounted for");
    let truth = injected(&data);
    let reason = |id: &str| rows[id].0.as_str();
    let family = |id: &str| family(&truth, id);
    // Near-duplicates: recall over the injected, precision over what curate flagged.
    let near: Vec<&String> = truth
        .iter()
        .filter(|(_, (k, _))| k == "near_duplicate")
        .map(|(id, _)| id)
        .collect();
    assert!(near.len() > 800, "{} injected", near.len());
    let caught = near
        .iter()
        .filter(|id| matches!(reason(id), "near_duplicate" | "duplicate"))
        .count();
    let recall = caught as f64 / near.len() as f64;
    assert!(recall >= 0.95, "near-duplicate recall {recall}");
    let flagged: Vec<(&String, &Option<String>)> = rows
        .iter()
        .filter(|(_, (r, _))| r == "near_duplicate")
        .map(|(id, (_, of))| (id, of))
        .collect();
    let right = flagged
        .iter()
        .filter(|(id, of)| {
            let of = of
                .as_deref()
                .expect("a near_duplicate row names the kept pair");
            // The kept pair is a row of the same family, and it is kept where this is not.
            family(id) == family(of) && reason(of) != "near_duplicate"
        })
        .count();
    let precision = right as f64 / flagged.len() as f64;
    assert!(precision >= 0.99, "near-duplicate precision {precision}");
    // Conflicts: every injected swapped copy leaves the models' path, and never do both
    // it and its original reach the curated set.
    let model_curated = ["both_rms_agree", "gold_rm_and_judge_agree"];
    let mut conflicts = 0;
    for (id, (kind, of)) in &truth {
        if kind != "conflict" {
            continue;
        }
        conflicts += 1;
        let (copy, original) = (reason(id), reason(of));
        assert!(
            copy == "conflicting_labels" || original == "conflicting_labels" || copy == "duplicate",
            "{id} ({copy}) and its original {of} ({original})"
        );
        assert!(
            !(model_curated.contains(&copy) && model_curated.contains(&original)),
            "{id} and {of} both kept by the models"
        );
    }
    assert!(conflicts > 150, "{conflicts} conflicts injected");
    // Near-duplicate detection off: none flagged; the exact check on: the same recall.
    let off = tmp.path().join("off");
    curate_ok(&pool, &gold, &off, &["--no-near-dup"]);
    assert!(decided(&off).values().all(|(r, _)| r != "near_duplicate"));
    let verified = tmp.path().join("verified");
    curate_ok(&pool, &gold, &verified, &["--near-dup-verify"]);
    let v = decided(&verified);
    let caught = near
        .iter()
        .filter(|id| matches!(v[id.as_str()].0.as_str(), "near_duplicate" | "duplicate"))
        .count();
    assert!(caught as f64 / near.len() as f64 >= 0.95, "verified recall");
    let report = json_file(&tmp.path().join("out-1").join("report.json"));
    let counted = report["reasons"]["near_duplicate"].as_u64().unwrap() as usize;
    assert_eq!(counted, flagged.len(), "report counts what the parts hold");
    // Every member of a component was routed away: as a near-duplicate, or earlier as
    // a duplicate, conflict or invalid row.
    assert!(roomy["members"].as_u64().unwrap() as usize >= flagged.len());
}

#[test]
fn a_conflict_follows_a_human_verdict_on_either_copy_else_judges_else_both_are_discarded() {
    let tmp = tempfile::tempdir().unwrap();
    let pool = tmp.path().join("pool.jsonl");
    let mut lines = String::new();
    let mut row = |id: &str, prompt: &str, chosen: &str, rejected: &str| {
        lines.push_str(
            &serde_json::json!({"pair_id": id, "prompt": prompt, "chosen": chosen, "rejected": rejected})
                .to_string(),
        );
        lines.push('\n');
    };
    let good = |i: usize| format!("A careful, correct and complete answer number {i} with steps.");
    let bad = |i: usize| format!("Wrong answer {i}.");
    for (c, name) in ["human", "judges", "none"].iter().enumerate() {
        let prompt = format!("Question {c} about {name} and their decisions?");
        row(&format!("{name}-a"), &prompt, &good(c), &bad(c));
        row(&format!("{name}-b"), &prompt, &bad(c), &good(c));
    }
    for i in 0..40 {
        row(
            &format!("clean-{i}"),
            &format!("Unrelated question {i} on topic {i}?"),
            &good(100 + i),
            &bad(100 + i),
        );
    }
    std::fs::write(&pool, lines).unwrap();
    let gold = tmp.path().join("gold.jsonl");
    let mut g = String::new();
    // The human verdict is on the second copy; it prefers that copy's rejected reply.
    g.push_str("{\"pair_id\":\"human-b\",\"verdict\":\"rejected\"}\n");
    for i in 0..20 {
        g.push_str(&format!(
            "{{\"pair_id\":\"clean-{i}\",\"verdict\":\"chosen\"}}\n"
        ));
    }
    std::fs::write(&gold, g).unwrap();
    let judges = tmp.path().join("judges.jsonl");
    let mut j = String::new();
    for judge in ["a", "b", "c"] {
        // Judge votes on both copies of the human-decided comparison (the human wins)
        // and on the first copy of the judged one.
        for id in ["human-a", "judges-a"] {
            j.push_str(&format!(
                "{{\"pair_id\":\"{id}\",\"judge\":\"{judge}\",\"verdict\":\"chosen\"}}\n"
            ));
        }
    }
    std::fs::write(&judges, j).unwrap();
    let out = tmp.path().join("out");
    curate_ok(&pool, &gold, &out, &["--judges", s(&judges)]);
    let rows = decided(&out);
    let reason = |id: &str| rows[id].0.clone();
    assert_eq!(reason("human-b"), "human_corrected");
    assert_eq!(reason("human-a"), "conflicting_labels");
    assert_eq!(reason("judges-b"), "conflicting_labels");
    assert!(
        [
            "gold_rm_and_judge_agree",
            "gold_rm_disagrees",
            "best_rm_and_judge_disagree"
        ]
        .contains(&reason("judges-a").as_str()),
        "the judges decide judges-a, not the best RM: {}",
        reason("judges-a")
    );
    assert_eq!(reason("none-a"), "conflicting_labels");
    assert_eq!(reason("none-b"), "conflicting_labels");
    let report = json_file(&out.join("report.json"));
    assert_eq!(report["reasons"]["conflicting_labels"], 4);
    assert_eq!(
        report["by_source"]["(none)"]["reasons"]["conflicting_labels"]["rows"],
        4
    );
}
