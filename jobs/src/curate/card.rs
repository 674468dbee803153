//! `OUT/README.md`: the dataset card of a committed curate output. Its YAML header maps
//! `datasets` configs onto the parts, so that `load_dataset(OUT)` yields the curated
//! rows as the default train split and `discarded`/`quarantine` load as their own
//! configs (Hugging Face, "Manual configuration" of dataset repositories); its body
//! states what the run wrote and what it measured about itself.

use synpref_engine::model::Destination;
use synpref_engine::output::{OutputFileFormat, OutputFormat, WrittenFile};

use super::report::{summary, CurateReport, Manifest};

/// OpenRLHF's `train_rm` reads at most `--max_samples` rows, 1,000,000 unless told
/// otherwise (openrlhf/cli/train_rm.py, 0.11), and says nothing when it cuts.
pub const OPENRLHF_MAX_SAMPLES_DEFAULT: u64 = 1_000_000;

/// The `datasets` config name of a destination (curated is the default config).
fn config_name(dest: Destination) -> &'static str {
    match dest {
        Destination::Curated => "default",
        other => other.dir(),
    }
}

/// The card of a committed output.
pub fn dataset_card(report: &CurateReport, manifest: &Manifest, out: &str) -> String {
    let spec = &manifest.spec;
    let file_format: OutputFileFormat = spec.file_format();
    let mut s = String::from("---\nconfigs:\n");
    for dest in Destination::ALL {
        let has_parts = manifest
            .outputs
            .iter()
            .any(|f: &WrittenFile| f.path.starts_with(&format!("{}/", dest.dir())));
        // A config without files fails to load; curated is listed whatever happens, so
        // that an empty curated set is an error, not someone else's rows.
        if !has_parts && dest != Destination::Curated {
            continue;
        }
        let ext = file_format.extension();
        // The run id in the pattern: `datasets` caches a local dataset by these
        // patterns, so a re-written output must not match an earlier run's cache.
        s.push_str(&format!(
            "- config_name: {}\n  data_files:\n  - split: train\n    path: \"{}/part-*-{}.{ext}\"\n",
            config_name(dest),
            dest.dir(),
            manifest.run_id
        ));
        if dest == Destination::Curated {
            s.push_str("  default: true\n");
        }
    }
    s.push_str("task_categories:\n- text-classification\ntags:\n- preference\n- reward-modeling\n- synpref\n---\n\n");
    s.push_str("# Curated preference pairs\n\n");
    s.push_str(&format!(
        "Written by synpref {} `curate` (Skywork-Reward-V2 Stage 2 consistency filter, arXiv 2507.01352): \
         {} of {} input pairs kept, {} discarded, {} quarantined. `manifest.json` lists every file, \
         input, setting and model fingerprint; `report.json` holds every figure below.\n\n",
        manifest.synpref_version,
        report.curated_rows,
        report.input_rows,
        report.discarded_rows,
        report.quarantined_rows
    ));
    s.push_str("## Load it\n\n```python\nfrom datasets import load_dataset\n");
    s.push_str(&format!(
        "train = load_dataset(\"{out}\", split=\"train\")                 # the curated rows\n\
         discarded = load_dataset(\"{out}\", \"discarded\", split=\"train\")  # with their reasons\n```\n\n"
    ));
    s.push_str(&format!(
        "Layout: `--format {}`, {} parts. {}\n\n",
        spec.format,
        file_format.extension(),
        layout_text(spec.format)
    ));
    if !spec.decontaminate.is_empty()
        && matches!(
            spec.format,
            OutputFormat::Input | OutputFormat::Conversational
        )
    {
        s.push_str(
            "Decontaminated against evaluation benchmarks: a `contaminated` row of `discarded` names in \
             `matched_ngram` the benchmark n-gram it holds, as the row writes it.\n\n",
        );
    }
    if spec.near_dup.enabled
        && matches!(
            spec.format,
            OutputFormat::Input | OutputFormat::Conversational
        )
    {
        s.push_str(
            "Near-duplicates removed: a `near_duplicate` row of `discarded` (its prompt and both replies \
             alike, by MinHash bands over word shingles) names in `duplicate_of` the pair kept instead. \
             A `conflicting_labels` row is a comparison that also occurs with chosen and rejected swapped \
             and that no human verdict or judge vote decided.\n\n",
        );
    }
    if report.curated_rows > OPENRLHF_MAX_SAMPLES_DEFAULT {
        s.push_str(&format!(
            "**OpenRLHF:** `train_rm` reads at most `--max_samples` rows, {OPENRLHF_MAX_SAMPLES_DEFAULT} by default, \
             and cuts larger sets silently: pass `--max_samples {}` to train on all {} curated rows.\n\n",
            report.curated_rows, report.curated_rows
        ));
    } else {
        s.push_str(&format!(
            "**OpenRLHF:** `train_rm` reads at most `--max_samples` rows ({OPENRLHF_MAX_SAMPLES_DEFAULT} by default) \
             and cuts larger sets silently; this set has {} curated rows.\n\n",
            report.curated_rows
        ));
    }
    s.push_str("## Rows per reason\n\n| reason | set | rows |\n|---|---|---|\n");
    for (code, n) in &report.reasons {
        if *n > 0 {
            let set = synpref_engine::model::Reason::from_code(code)
                .map(|r| r.destination().dir())
                .unwrap_or("?");
            s.push_str(&format!("| `{code}` | {set} | {n} |\n"));
        }
    }
    if report.gold_labels_unmatched > 0 || report.judge_votes_unmatched > 0 {
        s.push_str(&format!(
            "\n**Unmatched labels:** {} gold-labelled pair ids and {} pair ids with judge votes match no valid \
             pair of the pool, so they decided nothing (first ids: {}). Check the `pair_id` column of the labels.\n",
            report.gold_labels_unmatched,
            report.judge_votes_unmatched,
            report.gold_labels_unmatched_ids.join(", ")
        ));
    }
    s.push_str(&by_source_table(report));
    s.push_str("\n## Models\n\n| role | spec | fingerprint |\n|---|---|---|\n");
    for (role, m) in [
        ("best RM", &manifest.models.best_rm),
        ("gold RM", &manifest.models.gold_rm),
    ] {
        s.push_str(&format!(
            "| {role} | `{}` | `{}` |\n",
            m.spec, m.fingerprint
        ));
    }
    s.push_str("\n## What the run measured about itself\n\n");
    s.push_str(
        "Agreement with held-out human verdicts (95% Wilson intervals; humans err too), \
         as printed at the end of the run:\n\n```text\n",
    );
    s.push_str(&summary(report, out));
    s.push_str("```\n");
    s
}

fn layout_text(format: OutputFormat) -> &'static str {
    match format {
        OutputFormat::Input => {
            "Each row is an input row as read (chosen and rejected swapped where a human corrected the label) \
             plus `reason`, `p_best` and `p_gold` (σ of the reward difference, for the row as written)."
        }
        OutputFormat::Conversational => {
            "No `prompt` column: `chosen` and `rejected` are whole conversations (prompt turns, then the reply), \
             the form TRL's `RewardTrainer`, OpenRLHF's `train_rm --apply_chat_template` and RewardBench read \
             unchanged; then the input's other columns and `reason`, `p_best`, `p_gold`."
        }
        OutputFormat::Trl | OutputFormat::Openrlhf => {
            "Columns `pair_id`, `chosen`, `rejected` (whole conversations) and `margin`: the gold RM's reward \
             difference for the row as written, ln(p_gold / (1 − p_gold)), floored at 0 (TRL's `RewardTrainer` \
             adds it to its loss when the column is present; OpenRLHF reads it with `--margin_loss`)."
        }
        OutputFormat::Rewardbench => {
            "Columns `pair_id`, `chosen` and `rejected` (whole conversations, system turns folded into the \
             next user turn, since RewardBench 0.1.4 relabels turns by position), for `rewardbench --dataset DIR` \
             or `rewardbench --dataset 'DIR/curated/*.jsonl' --load_json`."
        }
    }
}

/// Sources shown in the card's table (the largest; report.json holds them all).
const CARD_SOURCES: usize = 20;

/// Rows per reason per `source` and where each leans: the share of rows whose chosen
/// reply is longer than the rejected one, over all its rows and over its curated rows.
fn by_source_table(report: &CurateReport) -> String {
    let share = |x: Option<f64>| x.map_or("–".to_string(), |v| format!("{:.1}%", 100.0 * v));
    let reasons: Vec<&String> = report
        .reasons
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(code, _)| code)
        .collect();
    let mut sources: Vec<(&String, &super::report::SourceSummary)> =
        report.by_source.iter().collect();
    sources.sort_by(|a, b| b.1.rows.cmp(&a.1.rows).then(a.0.cmp(b.0)));
    let mut s = String::from(
        "\n## Rows per source\n\nChosen longer: the share of rows whose chosen reply has more characters \
         than the rejected one, as written (a set where the longer reply nearly always wins teaches \
         length, not quality).\n\n| source | rows |",
    );
    for code in &reasons {
        s.push_str(&format!(" `{code}` |"));
    }
    s.push_str(" chosen longer | chosen longer, curated |\n|---|---|");
    s.push_str(&"---|".repeat(reasons.len() + 2));
    s.push('\n');
    for (name, summary) in sources.iter().take(CARD_SOURCES) {
        s.push_str(&format!("| {name} | {} |", summary.rows));
        for code in &reasons {
            let n = summary.reasons.get(*code).map_or(0, |r| r.rows);
            s.push_str(&format!(" {n} |"));
        }
        s.push_str(&format!(
            " {} | {} |\n",
            share(summary.chosen_longer_share),
            share(summary.curated_chosen_longer_share)
        ));
    }
    if sources.len() > CARD_SOURCES {
        s.push_str(&format!(
            "\n{} more sources in report.json (`by_source`).\n",
            sources.len() - CARD_SOURCES
        ));
    }
    s
}
