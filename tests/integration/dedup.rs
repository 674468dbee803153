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
