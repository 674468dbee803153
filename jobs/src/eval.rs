//! `eval`: a reward model's accuracy on preference sets in RewardBench's layouts, per
//! subset and overall, each with a 95% Wilson interval (issue 14).
//!
//! A set is any input curate reads: the explicit layout (`prompt`, `chosen`, `rejected`
//! strings) or the implicit one (`chosen` and `rejected` as whole conversations), as
//! RewardBench's own loader takes them, with optional `subset` and `id` columns. A pair
//! counts as correct when the model rewards its chosen reply strictly above its rejected
//! one, as RewardBench scores it (a tie is wrong, and counted). Invalid rows are counted
//! apart, not scored. The report goes to `OUT/report.json`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{Array, StringArray};
use serde::{Deserialize, Serialize};
use synpref_engine::extras::ExtrasCodec;
use synpref_engine::input::plan_input;
use synpref_engine::report::Estimate;
use synpref_engine::store::resolve;
use synpref_engine::{Error, Result};
use synpref_operators::models::{load_features, HfScorer, ModelOptions, ModelSpec, RewardModel};

use crate::score::{input_schema, read_valid_pairs};

/// The plain-data spec of an eval run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EvalSpec {
    /// The reward model: `hf:DIR` (models synpref trains get saved weights with the
    /// fractions job; until then they cannot be evaluated here).
    pub model: ModelSpec,
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
    pub elapsed_s: f64,
}

/// One preference set's accuracy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SetAccuracy {
    pub eval: String,
    pub input_rows: u64,
    /// Rows that are not a valid pair (not scored).
    pub invalid_rows: u64,
    /// Pairs whose two rewards are equal (counted as wrong).
    pub ties: u64,
    pub overall: Estimate,
    /// Per value of the `subset` column (absent: no such column).
    pub subsets: BTreeMap<String, Estimate>,
    /// Plain sentences, e.g. that the model is no better than chance on this set.
    pub warnings: Vec<String>,
}

/// The warnings an accuracy calls for: a 95% interval that holds 50% means the model
/// cannot be told apart from a coin on this set.
fn warnings(overall: &Estimate) -> Vec<String> {
    match overall.ci95 {
        None => vec!["no valid pair was scored".to_string()],
        Some([lo, hi]) if lo <= 0.5 && 0.5 <= hi => vec![format!(
            "the model is no better than chance on this set: its 95% interval ({:.1}%–{:.1}%, {} pairs) holds 50%",
            100.0 * lo,
            100.0 * hi,
            overall.n
        )],
        _ => Vec::new(),
    }
}

/// Runs `eval`.
pub fn run_eval(spec: &EvalSpec) -> Result<EvalReport> {
    let started = Instant::now();
    if !matches!(spec.model, ModelSpec::Hf(_)) {
        return Err(Error::setting(
            "--model",
            format!(
                "`{}`: eval needs a model with weights, `hf:DIR` (builtin and encoder: models are trained inside curate and not saved yet)",
                spec.model
            ),
        ));
    }
    if spec.evals.is_empty() {
        return Err(Error::setting("--eval", "give at least one preference set"));
    }
    let features = load_features(&spec.model, &spec.options, spec.cache.as_deref())
        .map_err(|e| e.for_setting("--model"))?
        .expect("hf spec has features");
    let model = HfScorer(features);
    let out = resolve(&spec.out)?;
    let mut sets = Vec::new();
    for url in &spec.evals {
        sets.push(eval_set(url, &model, spec.chunk_pairs)?);
    }
    model.0.flush().map_err(|e| e.for_setting("--model"))?;
    let report = EvalReport {
        model: spec.model.to_string(),
        fingerprint: model.fingerprint(),
        sets,
        elapsed_s: started.elapsed().as_secs_f64(),
    };
    synpref_engine::output::write_json(&out.child("report.json"), &report)?;
    Ok(report)
}

fn eval_set(url: &str, model: &dyn RewardModel, chunk_pairs: usize) -> Result<SetAccuracy> {
    let input = plan_input(url)?;
    let (_, extras_fields) = input_schema(&input)?;
    let subset_column = extras_fields.iter().position(|f| f.name() == "subset");
    let extras = Arc::new(ExtrasCodec::new(extras_fields)?);
    let (mut invalid, mut ties) = (0u64, 0u64);
    // (correct, pairs) overall and per subset.
    let mut overall = (0u64, 0u64);
    let mut subsets: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    let input_rows = read_valid_pairs(
        &input,
        &extras,
        chunk_pairs,
        &mut |_| {
            invalid += 1;
            Ok(())
        },
        &mut |pairs| {
            let refs: Vec<_> = pairs.iter().collect();
            let rewards = model.score(&refs).map_err(|e| e.for_setting("--model"))?;
            let names: Option<Vec<String>> = match subset_column {
                None => None,
                Some(c) => {
                    let columns = extras.decode(pairs.iter().map(|p| p.extras.as_slice()))?;
                    let column = columns[c]
                        .as_any()
                        .downcast_ref::<StringArray>()
                        .ok_or_else(|| {
                            Error::bad_file(url, "column `subset` is not a string column")
                        })?;
                    Some(
                        (0..column.len())
                            .map(|i| {
                                if column.is_null(i) {
                                    String::new()
                                } else {
                                    column.value(i).to_string()
                                }
                            })
                            .collect(),
                    )
                }
            };
            for (i, (chosen, rejected)) in rewards.iter().enumerate() {
                let correct = chosen > rejected;
                ties += u64::from(chosen == rejected);
                overall.0 += u64::from(correct);
                overall.1 += 1;
                if let Some(names) = &names {
                    let s = subsets.entry(names[i].clone()).or_default();
                    s.0 += u64::from(correct);
                    s.1 += 1;
                }
            }
            Ok(())
        },
    )?;
    let overall = Estimate::from_counts(overall.0 as f64, overall.1);
    Ok(SetAccuracy {
        eval: url.to_string(),
        input_rows,
        invalid_rows: invalid,
        ties,
        warnings: warnings(&overall),
        overall,
        subsets: subsets
            .into_iter()
            .map(|(k, (c, n))| (k, Estimate::from_counts(c as f64, n)))
            .collect(),
    })
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
