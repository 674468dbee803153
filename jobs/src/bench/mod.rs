//! The field's seven reward-model benchmarks (issue 27): their released files read as
//! they are distributed (`released`), converted into one evaluation layout (`import`,
//! `BenchRow`), scored with each distinct (conversation, reply) computed once
//! (`rewards`), and their official headline scores computed as each benchmark's own
//! code defines them (`official`). docs/benchmarks-eval.md gives the source of every
//! rule.
//!
//! The layout is JSON Lines, one row per scored comparison: a chosen and a rejected
//! reply to one prompt, with the benchmark's name, its `subset`, the `group` the row
//! belongs to (a best-of-N set or an RM-Bench matrix: one prompt) and a `cell` where the
//! official score needs one (RM-Bench's chosen and rejected style, a best-of-N's
//! completion indices). It is also an ordinary preference set in RewardBench's explicit
//! layout, so every reader of preference sets (eval, fractions, curate's
//! `--decontaminate`) takes it.

pub mod import;
pub mod layouts;
pub mod official;
pub mod prompts;
pub mod released;
pub mod rewards;

use serde::{Deserialize, Serialize};
use synpref_engine::model::{Conversation, Message};

/// One of the seven benchmarks the Skywork-Reward-V2 paper reports (its Table 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Benchmark {
    /// RewardBench (Lambert et al. 2024), allenai/reward-bench.
    Rewardbench,
    /// RewardBench 2 (Malik et al. 2025), allenai/reward-bench-2: best-of-4.
    Rewardbench2,
    /// PPE's human-preference set (Frick et al. 2024), lmarena-ai/PPE-Human-Preference-V1.
    PpePreference,
    /// PPE's five best-of-K correctness sets (MMLU-Pro, MATH, GPQA, MBPP-Plus, IFEval).
    PpeCorrectness,
    /// RMB (Zhou et al. 2024): pairwise and best-of-N sets, helpfulness and harmlessness.
    Rmb,
    /// RM-Bench (Liu et al. 2024): three styles of chosen and rejected reply per prompt.
    RmBench,
    /// JudgeBench (Tan et al. 2024): GPT-4o response pairs with objective labels.
    Judgebench,
}

impl Benchmark {
    /// Every benchmark, in the paper's column order.
    pub const ALL: [Benchmark; 7] = [
        Benchmark::Rewardbench,
        Benchmark::Rewardbench2,
        Benchmark::PpePreference,
        Benchmark::PpeCorrectness,
        Benchmark::Rmb,
        Benchmark::RmBench,
        Benchmark::Judgebench,
    ];

    /// The name on the command line and in the layout's `benchmark` column.
    pub fn name(self) -> &'static str {
        match self {
            Benchmark::Rewardbench => "rewardbench",
            Benchmark::Rewardbench2 => "rewardbench2",
            Benchmark::PpePreference => "ppe-preference",
            Benchmark::PpeCorrectness => "ppe-correctness",
            Benchmark::Rmb => "rmb",
            Benchmark::RmBench => "rm-bench",
            Benchmark::Judgebench => "judgebench",
        }
    }

    /// The column title of the printed table, as the paper's tables name them.
    pub fn title(self) -> &'static str {
        match self {
            Benchmark::Rewardbench => "RewardBench",
            Benchmark::Rewardbench2 => "RB 2",
            Benchmark::PpePreference => "PPE Pref",
            Benchmark::PpeCorrectness => "PPE Corr",
            Benchmark::Rmb => "RMB",
            Benchmark::RmBench => "RM-Bench",
            Benchmark::Judgebench => "JudgeBench",
        }
    }

    pub fn parse(name: &str) -> Option<Benchmark> {
        Benchmark::ALL.into_iter().find(|b| b.name() == name)
    }
}

impl std::fmt::Display for Benchmark {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One row of the evaluation layout: one comparison the official score uses.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BenchRow {
    /// Unique within the file: `{group}` for a pairwise benchmark, `{group}/{cell}`
    /// where a group holds several comparisons.
    pub id: String,
    pub benchmark: Benchmark,
    pub subset: String,
    /// The comparisons that share one prompt and are scored together.
    pub group: String,
    /// The comparison's place in its group where the score needs it ("" otherwise):
    /// RM-Bench `i,j` (chosen style i against rejected style j), best-of-N `c,r`
    /// (chosen completion c against rejected completion r).
    pub cell: String,
    pub prompt: Text,
    pub chosen: Text,
    pub rejected: Text,
}

/// A prompt or a reply as the layout writes it and every pair reader takes it: a
/// string, or a list of `{role, content}` messages.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Text {
    Plain(String),
    Messages(Vec<Message>),
}

impl Text {
    /// The same text as the data model holds it.
    pub fn conversation(&self) -> Conversation {
        match self {
            Text::Plain(s) => Conversation::Text(s.clone()),
            Text::Messages(m) => Conversation::Messages(m.clone()),
        }
    }
}

/// An imported set's official score for `model`, and what scoring it took.
pub fn score_imported(
    rows: &[BenchRow],
    model: &dyn synpref_operators::models::RewardModel,
    chunk_pairs: usize,
) -> synpref_engine::Result<(official::BenchScore, rewards::ReplyCount)> {
    let (rewards, count) = rewards::row_rewards(rows, model, chunk_pairs)?;
    let scored: Vec<official::Scored> = rows
        .iter()
        .zip(&rewards)
        .map(|(row, &(chosen, rejected))| official::Scored {
            row,
            chosen,
            rejected,
        })
        .collect();
    let benchmark = rows.first().map_or(Benchmark::Rewardbench, |r| r.benchmark);
    Ok((official::score(benchmark, &scored), count))
}

/// The rows of `url` when it is an imported layout (JSON Lines whose first row names
/// one of the seven benchmarks in a `benchmark` field); `None` for any other file,
/// which eval reads as a plain preference set. Every row must name the same benchmark.
pub fn read_layout(url: &str) -> synpref_engine::Result<Option<Vec<BenchRow>>> {
    #[derive(Deserialize)]
    struct Probe {
        benchmark: Option<String>,
    }
    if !url.ends_with(".jsonl") {
        return Ok(None);
    }
    let loc = synpref_engine::store::resolve(url)?;
    let bytes = loc.get()?;
    let first = bytes
        .split(|&b| b == b'\n')
        .find(|l| !l.iter().all(u8::is_ascii_whitespace));
    let named = first
        .and_then(|l| serde_json::from_slice::<Probe>(l).ok())
        .and_then(|p| p.benchmark)
        .is_some_and(|b| Benchmark::parse(&b).is_some());
    if !named {
        return Ok(None);
    }
    let rows: Vec<BenchRow> = released::rows_of(url, bytes)?
        .into_iter()
        .map(|(_, r)| r)
        .collect();
    if let Some(other) = rows.iter().find(|r| r.benchmark != rows[0].benchmark) {
        return Err(synpref_engine::Error::bad_file(
            url,
            format!(
                "an imported set holds one benchmark; row `{}` is {}, the first row {}",
                other.id, other.benchmark, rows[0].benchmark
            ),
        ));
    }
    check_unique_ids(url, &rows)?;
    Ok(Some(rows))
}

/// A layout's ids are unique: the official scores group comparisons by them, and two
/// rows with one id (two imports concatenated) would merge two prompts' groups.
pub fn check_unique_ids(url: &str, rows: &[BenchRow]) -> synpref_engine::Result<()> {
    let mut seen = std::collections::HashMap::new();
    for (i, r) in rows.iter().enumerate() {
        if let Some(first) = seen.insert(r.id.as_str(), i) {
            return Err(synpref_engine::Error::bad_file(
                url,
                format!(
                    "comparisons {} and {} have the same id `{}`; a set's comparisons need distinct ids (import the files of one benchmark together, not one by one)",
                    first + 1,
                    i + 1,
                    r.id
                ),
            ));
        }
    }
    Ok(())
}
