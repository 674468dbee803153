//! Each benchmark's released row, as a typed struct of its own fields, and its
//! conversion into layout rows (`BenchRow`). Field names follow the released files;
//! docs/benchmarks-eval.md cites where each layout is defined.

use serde::{Deserialize, Serialize};
use synpref_engine::model::Message;
use synpref_engine::store::Location;
use synpref_engine::Result;

use super::released::read_rows;
use super::{BenchRow, Benchmark, Text};

/// A released row that became no comparison, and why.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Skipped {
    pub file: String,
    pub row: u64,
    pub reason: String,
}

/// Reads one released file of `benchmark`: (rows read, comparisons, skipped rows).
pub fn convert_file(
    benchmark: Benchmark,
    file: &str,
    loc: &Location,
) -> Result<(u64, Vec<BenchRow>, Vec<Skipped>)> {
    let mut out = Converted {
        file: file.to_string(),
        rows: Vec::new(),
        skipped: Vec::new(),
    };
    let read = match benchmark {
        Benchmark::Rewardbench => each(loc, &mut out, rewardbench)?,
        Benchmark::Rewardbench2 => each(loc, &mut out, rewardbench2)?,
        Benchmark::PpePreference => each(loc, &mut out, ppe_preference)?,
        Benchmark::PpeCorrectness => each(loc, &mut out, ppe_correctness)?,
        Benchmark::Rmb => each(loc, &mut out, rmb)?,
        Benchmark::RmBench => each(loc, &mut out, rm_bench)?,
        Benchmark::Judgebench => each(loc, &mut out, judgebench)?,
    };
    Ok((read, out.rows, out.skipped))
}

struct Converted {
    file: String,
    rows: Vec<BenchRow>,
    skipped: Vec<Skipped>,
}

impl Converted {
    fn skip(&mut self, row: u64, reason: impl Into<String>) {
        self.skipped.push(Skipped {
            file: self.file.clone(),
            row,
            reason: reason.into(),
        });
    }
}

fn each<T: serde::de::DeserializeOwned>(
    loc: &Location,
    out: &mut Converted,
    convert: fn(u64, T, &mut Converted),
) -> Result<u64> {
    let rows = read_rows::<T>(loc)?;
    let n = rows.len() as u64;
    for (i, row) in rows {
        convert(i, row, out);
    }
    Ok(n)
}

/// A released id: a number or a string.
#[derive(Deserialize)]
#[serde(untagged)]
enum Id {
    Number(i64),
    Text(String),
}

impl std::fmt::Display for Id {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Id::Number(n) => write!(f, "{n}"),
            Id::Text(s) => f.write_str(s),
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn push(
    out: &mut Converted,
    benchmark: Benchmark,
    subset: &str,
    group: &str,
    cell: &str,
    prompt: Text,
    chosen: &str,
    rejected: &str,
) {
    let id = if cell.is_empty() {
        group.to_string()
    } else {
        format!("{group}/{cell}")
    };
    out.rows.push(BenchRow {
        id,
        benchmark,
        subset: subset.to_string(),
        group: group.to_string(),
        cell: cell.to_string(),
        prompt,
        chosen: Text::Plain(chosen.to_string()),
        rejected: Text::Plain(rejected.to_string()),
    });
}

// ---------------------------------------------------------------- RewardBench ----

/// allenai/reward-bench, split `filtered`.
#[derive(Deserialize)]
struct RewardbenchRow {
    prompt: String,
    chosen: String,
    rejected: String,
    subset: String,
    id: Id,
}

fn rewardbench(_: u64, r: RewardbenchRow, out: &mut Converted) {
    let group = format!("{}", r.id);
    push(
        out,
        Benchmark::Rewardbench,
        &r.subset,
        &group,
        "",
        Text::Plain(r.prompt),
        &r.chosen,
        &r.rejected,
    );
}

// -------------------------------------------------------------- RewardBench 2 ----

/// allenai/reward-bench-2, split `test`: `chosen` and `rejected` are lists of
/// completions (one chosen and three rejected, except in Ties).
#[derive(Deserialize)]
struct Rewardbench2Row {
    id: Id,
    prompt: String,
    chosen: Vec<String>,
    rejected: Vec<String>,
    subset: String,
}

fn rewardbench2(i: u64, r: Rewardbench2Row, out: &mut Converted) {
    if r.chosen.is_empty() || r.rejected.is_empty() {
        out.skip(i, "no chosen or no rejected completion");
        return;
    }
    let group = format!("{}", r.id);
    for (c, chosen) in r.chosen.iter().enumerate() {
        for (j, rejected) in r.rejected.iter().enumerate() {
            let cell = format!("{c},{j}");
            push(
                out,
                Benchmark::Rewardbench2,
                &r.subset,
                &group,
                &cell,
                Text::Plain(r.prompt.clone()),
                chosen,
                rejected,
            );
        }
    }
}

// ----------------------------------------------------------- PPE Preference ----

/// lmarena-ai/PPE-Human-Preference-V1.
#[derive(Deserialize)]
struct PpePreferenceRow {
    question_id: Id,
    prompt: String,
    response_1: String,
    response_2: String,
    winner: String,
    #[serde(default)]
    language: Option<String>,
}

fn ppe_preference(i: u64, r: PpePreferenceRow, out: &mut Converted) {
    let (chosen, rejected) = match r.winner.as_str() {
        "model_a" => (&r.response_1, &r.response_2),
        "model_b" => (&r.response_2, &r.response_1),
        w => {
            out.skip(
                i,
                format!("winner `{w}` names no single response (PPE scores decided pairs only)"),
            );
            return;
        }
    };
    let group = format!("{}", r.question_id);
    let subset = r.language.as_deref().unwrap_or("");
    push(
        out,
        Benchmark::PpePreference,
        subset,
        &group,
        "",
        Text::Plain(r.prompt.clone()),
        chosen,
        rejected,
    );
}

// ---------------------------------------------------------- PPE Correctness ----

/// lmarena-ai/PPE-{MMLU-Pro,MATH,GPQA,MBPP-Plus,IFEval}-Best-of-K: K responses per
/// question with their correctness, and the conflict pairs PPE samples.
#[derive(Deserialize)]
struct PpeCorrectnessRow {
    question_id: Id,
    prompt: String,
    /// Each response's correctness.
    scores: Vec<bool>,
    #[serde(default)]
    sampled_conflict_pairs: Vec<[usize; 2]>,
    #[serde(flatten)]
    rest: std::collections::BTreeMap<String, serde_json::Value>,
}

fn ppe_correctness(i: u64, r: PpeCorrectnessRow, out: &mut Converted) {
    let subset = correctness_set(&out.file);
    let response = |k: usize| {
        r.rest
            .get(&format!("response_{}", k + 1))
            .and_then(|v| v.as_str())
            .map(str::to_string)
    };
    let group = format!("{subset}:{}", r.question_id);
    for &[a, b] in &r.sampled_conflict_pairs {
        let (Some(&sa), Some(&sb)) = (r.scores.get(a), r.scores.get(b)) else {
            out.skip(
                i,
                format!(
                    "conflict pair ({a}, {b}) is out of the {} scores",
                    r.scores.len()
                ),
            );
            continue;
        };
        if sa == sb {
            out.skip(i, format!("conflict pair ({a}, {b}) has equal correctness"));
            continue;
        }
        let (c, j) = if sa { (a, b) } else { (b, a) };
        match (response(c), response(j)) {
            (Some(chosen), Some(rejected)) => push(
                out,
                Benchmark::PpeCorrectness,
                &subset,
                &group,
                &format!("{c},{j}"),
                Text::Plain(r.prompt.clone()),
                &chosen,
                &rejected,
            ),
            _ => out.skip(
                i,
                format!("response_{} or response_{} is missing", c + 1, j + 1),
            ),
        }
    }
}

/// The PPE correctness set a file belongs to, from its name or its directory's (the
/// five sets are released as separate datasets, e.g. `PPE-MATH-Best-of-K/`); only
/// those two path components are read, so a parent directory's name cannot decide it.
fn correctness_set(file: &str) -> String {
    let path = std::path::Path::new(file);
    let named: Vec<String> = [path.file_stem(), path.parent().and_then(|p| p.file_name())]
        .into_iter()
        .flatten()
        .map(|s| s.to_string_lossy().to_ascii_lowercase())
        .collect();
    for name in &named {
        for (needle, set) in [
            ("mmlu", "mmlu-pro"),
            ("math", "math"),
            ("gpqa", "gpqa"),
            ("mbpp", "mbpp-plus"),
            ("ifeval", "ifeval"),
        ] {
            if name.contains(needle) {
                return set.to_string();
            }
        }
    }
    named.first().cloned().unwrap_or_else(|| file.to_string())
}

// ------------------------------------------------------------------------ RMB ----

/// One turn of RMB's `conversation_input`.
#[derive(Deserialize)]
struct RmbTurn {
    role: String,
    content: String,
}

/// A reply object of RMB.
#[derive(Deserialize)]
struct RmbAnswer {
    answer: String,
}

/// RMB's pairwise (`chosen`, `reject`) and best-of-N (`bon_best`, `loser_list`) rows.
#[derive(Deserialize)]
struct RmbRow {
    #[serde(default)]
    pair_uid: Option<String>,
    #[serde(default)]
    bon_uid: Option<String>,
    conversation_input: Vec<RmbTurn>,
    #[serde(default)]
    chosen: Option<RmbAnswer>,
    #[serde(default)]
    reject: Option<RmbAnswer>,
    #[serde(default)]
    bon_best: Option<RmbAnswer>,
    #[serde(default)]
    loser_list: Option<Vec<RmbAnswer>>,
    /// E.g. "Pairwise_set/Helpfulness/Chat/Discussion".
    #[serde(default)]
    category_path: Option<String>,
}

fn rmb(i: u64, r: RmbRow, out: &mut Converted) {
    let goal = rmb_goal(r.category_path.as_deref().unwrap_or(&out.file));
    let prompt = Text::Messages(
        r.conversation_input
            .into_iter()
            .map(|t| Message {
                role: t.role,
                content: t.content,
            })
            .collect(),
    );
    match (r.chosen, r.reject, r.bon_best, r.loser_list) {
        (Some(c), Some(j), _, _) => {
            let group = r.pair_uid.unwrap_or_else(|| format!("{}:{i}", out.file));
            push(
                out,
                Benchmark::Rmb,
                &format!("{goal} pairwise"),
                &group,
                "",
                prompt,
                &c.answer,
                &j.answer,
            );
        }
        (_, _, Some(best), Some(losers)) if !losers.is_empty() => {
            let group = r.bon_uid.unwrap_or_else(|| format!("{}:{i}", out.file));
            for (k, loser) in losers.iter().enumerate() {
                push(
                    out,
                    Benchmark::Rmb,
                    &format!("{goal} best-of-n"),
                    &group,
                    &format!("0,{k}"),
                    prompt.clone(),
                    &best.answer,
                    &loser.answer,
                );
            }
        }
        _ => out.skip(
            i,
            "neither `chosen` and `reject` nor `bon_best` and a non-empty `loser_list`",
        ),
    }
}

/// Helpfulness or Harmlessness, from the row's `category_path` (else the file's path
/// in RMB's tree).
fn rmb_goal(file: &str) -> &'static str {
    if file.to_ascii_lowercase().contains("harmless") {
        "harmlessness"
    } else {
        "helpfulness"
    }
}

// ------------------------------------------------------------------- RM-Bench ----

/// THU-KEG/RM-Bench: three chosen and three rejected styles per prompt.
#[derive(Deserialize)]
struct RmBenchRow {
    id: Id,
    prompt: String,
    chosen: Vec<String>,
    rejected: Vec<String>,
    /// total_dataset.json's field; the per-domain files (`chat_filtered.json`, ...)
    /// carry none, and the domain comes from the file name.
    #[serde(default)]
    domain: Option<String>,
}

fn rm_bench(i: u64, r: RmBenchRow, out: &mut Converted) {
    if r.chosen.len() != 3 || r.rejected.len() != 3 {
        out.skip(
            i,
            format!(
                "{} chosen and {} rejected styles; RM-Bench has 3 of each",
                r.chosen.len(),
                r.rejected.len()
            ),
        );
        return;
    }
    let domain = r.domain.clone().unwrap_or_else(|| {
        let stem = std::path::Path::new(&out.file)
            .file_stem()
            .map_or(String::new(), |s| s.to_string_lossy().into_owned());
        stem.trim_end_matches("_filtered").to_string()
    });
    // The per-domain files reuse ids (chat and code share 23), so a prompt is named
    // by its domain and id.
    let group = format!("{domain}/{}", r.id);
    for (c, chosen) in r.chosen.iter().enumerate() {
        for (j, rejected) in r.rejected.iter().enumerate() {
            push(
                out,
                Benchmark::RmBench,
                &domain,
                &group,
                &format!("{c},{j}"),
                Text::Plain(r.prompt.clone()),
                chosen,
                rejected,
            );
        }
    }
}

// ----------------------------------------------------------------- JudgeBench ----

/// ScalerLab/JudgeBench: GPT-4o response pairs with an objective label.
#[derive(Deserialize)]
struct JudgebenchRow {
    pair_id: String,
    source: String,
    question: String,
    #[serde(rename = "response_A")]
    response_a: String,
    #[serde(rename = "response_B")]
    response_b: String,
    label: String,
}

fn judgebench(i: u64, r: JudgebenchRow, out: &mut Converted) {
    let category = judgebench_category(&r.source);
    let (chosen, rejected, cell) = match r.label.as_str() {
        "A>B" => (&r.response_a, &r.response_b, "A"),
        "B>A" => (&r.response_b, &r.response_a, "B"),
        l => {
            out.skip(i, format!("label `{l}` is neither A>B nor B>A"));
            return;
        }
    };
    // The cell records where the chosen reply stood: the tie rule depends on it.
    out.rows.push(BenchRow {
        id: r.pair_id.clone(),
        benchmark: Benchmark::Judgebench,
        subset: category.to_string(),
        group: r.pair_id.clone(),
        cell: cell.to_string(),
        prompt: Text::Plain(r.question.clone()),
        chosen: Text::Plain(chosen.clone()),
        rejected: Text::Plain(rejected.clone()),
    });
}

/// JudgeBench's four categories from its `source` field (mmlu-pro-* → knowledge,
/// livebench-reasoning → reasoning, livebench-math → math, livecodebench → coding).
fn judgebench_category(source: &str) -> &'static str {
    if source.starts_with("mmlu-pro") {
        "knowledge"
    } else if source.contains("reasoning") {
        "reasoning"
    } else if source.contains("math") {
        "math"
    } else if source.contains("code") {
        "coding"
    } else {
        "other"
    }
}
