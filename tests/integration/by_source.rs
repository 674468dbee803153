//! The report's `by_source` (DESIGN §4, issue 28): rows per reason per `source` and
//! the share whose chosen reply is longer than the rejected one, checked against an
//! independent count over the files curate wrote, on two workers; and the card's table.

use super::*;
use std::collections::BTreeMap;

#[test]
fn by_source_counts_and_length_bias_equal_a_count_over_the_written_files() {
    let tmp = tempfile::tempdir().unwrap();
    let pool = tmp.path().join("pool.jsonl");
    let mut text = String::new();
    for i in 0..90 {
        let source = ["forum", "synthetic", "", "forum-ü"][i % 4];
        let long = "a thoughtful, detailed answer that explains the reasoning step by step";
        let short = "no";
        // Sources lean differently: forum's chosen reply is usually the long one.
        let (chosen, rejected) = if i % 3 == 0 {
            (short, long)
        } else {
            (long, short)
        };
        let mut row = serde_json::json!({
            "pair_id": format!("p{i}"),
            "prompt": format!("Question {i}: how do rivers form deltas over {} years?", i * 7),
            "chosen": format!("{chosen} ({i})"),
            "rejected": if i == 10 { String::new() } else { format!("{rejected} [{i}]") },
        });
        if !source.is_empty() {
            row["source"] = source.into();
        }
        if i % 9 == 4 {
            // Messages form: the reply's length is its final message's.
            row["prompt"] = serde_json::json!([{"role": "user", "content": format!("Q{i}")}]);
            row["chosen"] = serde_json::json!([{"role": "assistant", "content": chosen}]);
            row["rejected"] = serde_json::json!([{"role": "assistant", "content": rejected}]);
        }
        text.push_str(&format!("{row}\n"));
    }
    std::fs::write(&pool, text).unwrap();
    let gold = tmp.path().join("gold.jsonl");
    // p1 corrected by a human: written swapped, and counted as written.
    std::fs::write(
        &gold,
        "{\"pair_id\":\"p1\",\"verdict\":\"rejected\"}\n{\"pair_id\":\"p2\",\"verdict\":\"chosen\"}\n",
    )
    .unwrap();
    let out = tmp.path().join("out");
    let report = {
        curate_ok(&pool, &gold, &out, &["--workers", "2"]);
        json_file(&out.join("report.json"))
    };
    // The independent count: every written row, its source, reason and replies.
    let chars = |v: &Value| -> Option<usize> {
        match v {
            Value::String(s) => Some(s.chars().count()),
            Value::Array(ms) => Some(ms.last()?["content"].as_str()?.chars().count()),
            _ => None,
        }
    };
    // source -> reason -> (rows, compared, chosen longer)
    let mut expected: BTreeMap<String, BTreeMap<String, (u64, u64, u64)>> = BTreeMap::new();
    let mut total = 0;
    for dir in ["curated", "discarded", "quarantine"] {
        for r in read_rows(&out.join(dir)) {
            total += 1;
            let source = r["source"].as_str().unwrap_or("(none)").to_string();
            let reason = r["reason"].as_str().unwrap().to_string();
            let e = expected
                .entry(source)
                .or_default()
                .entry(reason)
                .or_default();
            e.0 += 1;
            if let (Some(c), Some(rj)) = (chars(&r["chosen"]), chars(&r["rejected"])) {
                e.1 += 1;
                e.2 += (c > rj) as u64;
            }
        }
    }
    assert_eq!(total, 90, "every row accounted for");
    assert!(
        expected.values().any(|r| r.contains_key("human_corrected")),
        "a corrected row is among them"
    );
    let by_source = report["by_source"].as_object().unwrap();
    assert_eq!(
        by_source.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>()
    );
    let share = |n: u64, d: u64| (d > 0).then(|| n as f64 / d as f64);
    for (source, reasons) in &expected {
        let got = &by_source[source];
        let (mut rows, mut compared, mut longer) = (0, 0, 0);
        let (mut c_compared, mut c_longer) = (0, 0);
        for (reason, &(n, c, l)) in reasons {
            let g = &got["reasons"][reason];
            assert_eq!(g["rows"], n, "{source} {reason}");
            assert_eq!(
                g["chosen_longer_share"].as_f64(),
                share(l, c),
                "{source} {reason}"
            );
            rows += n;
            compared += c;
            longer += l;
            if [
                "human_agrees",
                "human_corrected",
                "both_rms_agree",
                "gold_rm_and_judge_agree",
            ]
            .contains(&reason.as_str())
            {
                c_compared += c;
                c_longer += l;
            }
        }
        assert_eq!(got["rows"], rows, "{source}");
        assert_eq!(
            got["chosen_longer_share"].as_f64(),
            share(longer, compared),
            "{source}"
        );
        assert_eq!(
            got["curated_chosen_longer_share"].as_f64(),
            share(c_longer, c_compared),
            "{source}"
        );
    }
    let card = std::fs::read_to_string(out.join("README.md")).unwrap();
    assert!(card.contains("## Rows per source"), "{card}");
    assert!(card.contains("| forum-ü |"), "{card}");
}
