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
use synpref_operators::models::{ModelOptions, ModelUsage};

use crate::read::eval_sets::{accuracy, load_eval_set};
pub use crate::read::eval_sets::{EvalModel, SetAccuracy};

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

/// `OUT/report.json` of an eval run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EvalReport {
    pub model: String,
    pub fingerprint: String,
    pub sets: Vec<SetAccuracy>,
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
    let model = spec
        .model
        .load(&spec.options, spec.cache.as_deref())
        .map_err(|e| e.for_setting("--model"))?;
    let out = resolve(&spec.out)?;
    let mut sets = Vec::new();
    for url in &spec.evals {
        let set = load_eval_set(url, spec.chunk_pairs)?;
        sets.push(accuracy(&set, model.as_ref(), spec.chunk_pairs)?);
    }
    model.flush().map_err(|e| e.for_setting("--model"))?;
    let report = EvalReport {
        model: spec.model.to_string(),
        fingerprint: model.fingerprint(),
        sets,
        scoring: model.usage(),
        elapsed_s: started.elapsed().as_secs_f64(),
    };
    synpref_engine::output::write_json(&out.child("report.json"), &report)?;
    Ok(report)
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

    fn run(&self) -> Result<EvalReport> {
        run_eval(self)
    }

    fn summarise(&self, report: &EvalReport) -> String {
        table(report)
    }
}
