//! `eval`: a reward model's accuracy on preference sets in RewardBench's layouts, per
//! subset and overall, each with a 95% Wilson interval (issue 14).
//!
//! A set is any input curate reads: the explicit layout (`prompt`, `chosen`, `rejected`
//! strings) or the implicit one (`chosen` and `rejected` as whole conversations), as
//! RewardBench's own loader takes them, with optional `subset` and `id` columns. A pair
//! counts as correct when the model rewards its chosen reply strictly above its rejected
//! one, as RewardBench scores it (a tie is wrong, and counted). Invalid rows are counted
//! apart, not scored. The report goes to `OUT/report.json`. The model is an `hf:`
//! directory or a model synpref trained and saved (`saved:DIR`, see
//! `synpref_operators::models::saved`).

use std::time::Instant;

use serde::{Deserialize, Serialize};
use synpref_engine::report::Estimate;
use synpref_engine::store::resolve;
use synpref_engine::{Error, Result};
use synpref_operators::models::{ModelOptions, ModelUsage, TruncationStats};

use crate::bench::official::BenchScore;
use crate::bench::rewards::ReplyCount;

use crate::read::eval_sets::{accuracy, load_eval_set};
pub use crate::read::eval_sets::{EvalModel, SetAccuracy};

/// eval's default `--max-tokens` for `hf:` models: 16,384, what RewardBench 2's
/// authors ran at, and what the released benchmark files need. Measured on RM-Bench,
/// RMB and JudgeBench as released (research/token-lengths/RESULTS.md, the fixture BPE
/// tokenizer with the chat template, which counts 2.6-3.0 times the tokens of a 30k
/// WordPiece vocabulary, so an upper bound): at 4,096 tokens 12.75% of RMB's inputs
/// were cut (0.02% of RM-Bench's, 0.08% of JudgeBench's), at 16,384 0.10% of RMB's and
/// none of the others'. The packed CPU and flash paths hold no T×T scores, so the
/// longer limit costs only the long inputs' own compute; a model's own
/// `max_position_embeddings` still caps it. Other jobs keep the model's default
/// (`hf::DEFAULT_MAX_TOKENS`), sized for training data.
pub const EVAL_MAX_TOKENS: usize = 16_384;

/// The plain-data spec of an eval run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EvalSpec {
    pub model: EvalModel,
    /// The preference sets, each a file, directory or glob.
    pub evals: Vec<String>,
    pub out: String,
    pub options: ModelOptions,
    /// Score-cache URL; `None` disables the cache.
    pub cache: Option<String>,
    /// Pairs scored per call of the model.
    pub chunk_pairs: usize,
}

/// An imported benchmark set's official score (`synpref bench import`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BenchmarkResult {
    pub eval: String,
    pub score: BenchScore,
    /// Comparisons, distinct replies and the sequences the model computed for them.
    pub replies: ReplyCount,
    /// Scoring pairs whose prompt or reply `--max-tokens` cut (pairs computed in this
    /// run; cached ones were counted when computed).
    pub truncations: TruncationStats,
    pub warnings: Vec<String>,
}

/// `OUT/report.json` of an eval run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EvalReport {
    pub model: String,
    pub fingerprint: String,
    /// Plain preference sets: pairwise accuracy.
    pub sets: Vec<SetAccuracy>,
    /// Imported benchmark sets: official scores, in `--eval` order.
    #[serde(default)]
    pub benchmarks: Vec<BenchmarkResult>,
    /// The mean of the benchmarks' headlines (as the paper's "Avg." column), when any.
    #[serde(default)]
    pub benchmark_mean: Option<f64>,
    /// What scoring cost: pairs computed and from the cache, truncations, and the
    /// model's time stage by stage (`compute`).
    pub scoring: ModelUsage,
    pub elapsed_s: f64,
}

/// Runs `eval`.
pub fn run_eval(spec: &EvalSpec) -> Result<EvalReport> {
    let started = Instant::now();
    if spec.evals.is_empty() {
        return Err(Error::setting("--eval", "give at least one preference set"));
    }
    let mut options = spec.options.clone();
    if matches!(spec.model, EvalModel::Hf(_)) {
        options.max_tokens = options.max_tokens.or(Some(EVAL_MAX_TOKENS));
    }
    let model = spec
        .model
        .load(&options, spec.cache.as_deref())
        .map_err(|e| e.for_setting("--model"))?;
    let out = resolve(&spec.out)?;
    let mut sets = Vec::new();
    let mut benchmarks = Vec::new();
    for url in &spec.evals {
        let before = model.usage().truncations;
        let set = load_eval_set(url, spec.chunk_pairs)?;
        if let Some(rows) = &set.imported {
            let (score, replies) =
                crate::bench::score_imported(rows, model.as_ref(), spec.chunk_pairs)?;
            let truncations = truncated_since(&before, &model.usage().truncations);
            benchmarks.push(BenchmarkResult {
                eval: url.clone(),
                score,
                warnings: truncation_warnings(&truncations, options.max_tokens),
                replies,
                truncations,
            });
        } else {
            let mut acc = accuracy(&set, model.as_ref(), spec.chunk_pairs)?;
            acc.truncations = truncated_since(&before, &model.usage().truncations);
            acc.warnings
                .extend(truncation_warnings(&acc.truncations, options.max_tokens));
            sets.push(acc);
        }
    }
    model.flush().map_err(|e| e.for_setting("--model"))?;
    let benchmark_mean = (!benchmarks.is_empty()).then(|| {
        benchmarks.iter().map(|b| b.score.headline).sum::<f64>() / benchmarks.len() as f64
    });
    let report = EvalReport {
        model: spec.model.to_string(),
        fingerprint: model.fingerprint(),
        sets,
        benchmarks,
        benchmark_mean,
        scoring: model.usage(),
        elapsed_s: started.elapsed().as_secs_f64(),
    };
    synpref_engine::output::write_json(&out.child("report.json"), &report)?;
    Ok(report)
}

fn truncated_since(before: &TruncationStats, now: &TruncationStats) -> TruncationStats {
    TruncationStats {
        prompt_truncated: now.prompt_truncated - before.prompt_truncated,
        response_truncated: now.response_truncated - before.response_truncated,
        max_tokens: now.max_tokens,
    }
}

/// A warning when the token limit cut anything (a cut reply is scored on part of
/// itself), naming the limit in effect and what set it.
fn truncation_warnings(t: &TruncationStats, max_tokens: Option<usize>) -> Vec<String> {
    if t.prompt_truncated + t.response_truncated == 0 {
        return Vec::new();
    }
    let raise = "raise --max-tokens to score them whole";
    let (limit, remedy) = match max_tokens {
        Some(m) if t.max_tokens > 0 && t.max_tokens < m => (
            format!(
                "the model's own limit of {} tokens (below --max-tokens {m})",
                t.max_tokens
            ),
            "the model cannot read them whole",
        ),
        Some(m) => (format!("--max-tokens {m}"), raise),
        None => (
            format!("the model's limit of {} tokens", t.max_tokens),
            raise,
        ),
    };
    vec![format!(
        "{limit} cut {} scoring pairs: {} in the prompt only, {} into a reply (scored on part of it); {remedy}",
        t.prompt_truncated + t.response_truncated,
        t.prompt_truncated,
        t.response_truncated
    )]
}

/// The printed table of imported benchmarks: one column per benchmark and their mean
/// (as the paper's tables), then each benchmark's parts.
pub fn benchmark_table(report: &EvalReport) -> String {
    if report.benchmarks.is_empty() {
        return String::new();
    }
    let mut head = format!("{:<28}", "official scores (%)");
    let mut line = format!("{:<28}", short_model(&report.model));
    for b in &report.benchmarks {
        let title = b.score.benchmark.title();
        let w = title.len().max(7);
        head.push_str(&format!(" {title:>w$}"));
        line.push_str(&format!(" {:>w$.1}", 100.0 * b.score.headline));
    }
    if let Some(m) = report.benchmark_mean {
        head.push_str(&format!(" {:>7}", "Avg."));
        line.push_str(&format!(" {:>7.1}", 100.0 * m));
    }
    let mut s = format!("{head}\n{line}\n");
    for b in &report.benchmarks {
        let sc = &b.score;
        let ci = sc.headline_ci95.map_or(String::new(), |[lo, hi]| {
            format!(" (95% CI {:.1}%–{:.1}%)", 100.0 * lo, 100.0 * hi)
        });
        s.push_str(&format!(
            "{} {:.1}%{ci}: {}; pairwise accuracy {:.1}% over {} comparisons ({} ties); {} distinct replies, {} sequences computed\n",
            sc.benchmark.title(),
            100.0 * sc.headline,
            sc.rule,
            100.0 * sc.pairwise.value.unwrap_or(0.0),
            sc.pairwise.n,
            sc.ties,
            b.replies.distinct_replies,
            b.replies.sequences_scored
        ));
        for p in &sc.parts {
            let ci = p.ci95.map_or("no interval".to_string(), |[lo, hi]| {
                format!("{:.1}%–{:.1}%", 100.0 * lo, 100.0 * hi)
            });
            s.push_str(&format!(
                "  {:<36} {:>6.1}%  {:>13} {:>6} {}\n",
                p.name,
                100.0 * p.score,
                ci,
                p.n,
                p.unit
            ));
        }
        for w in &b.warnings {
            s.push_str(&format!("  warning: {w}\n"));
        }
    }
    s
}

fn short_model(model: &str) -> String {
    let name = model
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or(model);
    name.chars().take(28).collect()
}

/// The printed table: one line per set and per subset.
pub fn table(report: &EvalReport) -> String {
    let pct = |e: &Estimate| match (e.value, e.ci95) {
        (Some(v), Some([lo, hi])) => format!(
            "{:>6.1}%  {:>5.1}%–{:>5.1}%",
            100.0 * v,
            100.0 * lo,
            100.0 * hi
        ),
        _ => format!("{:>6}  {:>13}", "–", "–"),
    };
    let mut s = format!(
        "accuracy of {} (chosen rewarded above rejected), 95% Wilson intervals:\n{:<40} {:>7}  {:>13} {:>8}\n",
        report.model, "set / subset", "acc", "95% CI", "pairs"
    );
    for set in &report.sets {
        s.push_str(&format!(
            "{:<40} {} {:>8}\n",
            set.eval,
            pct(&set.overall),
            set.overall.n
        ));
        for (name, e) in &set.subsets {
            s.push_str(&format!("  {:<38} {} {:>8}\n", name, pct(e), e.n));
        }
        for w in &set.warnings {
            s.push_str(&format!("  warning: {w}\n"));
        }
        if set.invalid_rows > 0 || set.ties > 0 {
            s.push_str(&format!(
                "  ({} invalid rows not scored, {} ties counted as wrong)\n",
                set.invalid_rows, set.ties
            ));
        }
    }
    s
}

impl crate::job::SerialJob for EvalSpec {
    const NAME: &'static str = "eval";
    type Report = EvalReport;

    /// `--out` (and the score cache, which eval writes) apart from every preference set
    /// and the model directory it reads.
    fn check(&self) -> Result<()> {
        let model = self.model.dir().display().to_string();
        let mut inputs: Vec<(&str, &str)> =
            self.evals.iter().map(|e| ("--eval", e.as_str())).collect();
        inputs.push(("--model", model.as_str()));
        let mut outputs = vec![("--out", self.out.as_str())];
        outputs.extend(self.cache.as_deref().map(|c| ("--score-cache", c)));
        synpref_engine::store::check_outputs_apart(&outputs, &inputs)
    }

    fn run(&self) -> Result<EvalReport> {
        run_eval(self)
    }

    fn summarise(&self, report: &EvalReport) -> String {
        let plain = if report.sets.is_empty() {
            String::new()
        } else {
            table(report)
        };
        format!("{plain}{}", benchmark_table(report))
    }
}
