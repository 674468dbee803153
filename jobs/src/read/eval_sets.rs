//! Evaluation sets: preference sets in RewardBench's layouts read into memory
//! (`load_eval_set`), the trained model measured on them (`EvalModel`), and a model's
//! accuracy on a set, overall and per subset, with 95% Wilson intervals (`accuracy`).
//! Used by `eval`, `fractions` and `stage1`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use arrow::array::{Array, StringArray};
use serde::{Deserialize, Serialize};
use synpref_engine::extras::ExtrasCodec;
use synpref_engine::input::plan_input;
use synpref_engine::model::PreferencePair;
use synpref_engine::report::Estimate;
use synpref_engine::{Error, Result};
use synpref_operators::models::{
    load_hf, saved, HfScorer, ModelError, ModelOptions, ModelSpec, RewardModel,
};

use super::pairs::{input_schema, read_valid_pairs};
use crate::bench::official::BenchScore;

/// The model `eval` measures: one with weights on disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EvalModel {
    /// `hf:DIR`: a Hugging Face Qwen3 or Llama sequence-classifier directory.
    Hf(PathBuf),
    /// `saved:DIR`: a model synpref trained and saved (`synpref_model.json` and
    /// `weights.safetensors`: the built-in model or an encoder head).
    Saved(PathBuf),
}

impl std::fmt::Display for EvalModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EvalModel::Hf(d) => write!(f, "hf:{}", d.display()),
            EvalModel::Saved(d) => write!(f, "saved:{}", d.display()),
        }
    }
}

impl Serialize for EvalModel {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for EvalModel {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        if let Some(dir) = text.strip_prefix("hf:") {
            Ok(EvalModel::Hf(PathBuf::from(dir)))
        } else if let Some(dir) = text.strip_prefix("saved:") {
            Ok(EvalModel::Saved(PathBuf::from(dir)))
        } else {
            Err(serde::de::Error::custom(format!(
                "`{text}` is not an eval model (hf:DIR or saved:DIR)"
            )))
        }
    }
}

impl EvalModel {
    /// The model's directory.
    pub fn dir(&self) -> &std::path::Path {
        match self {
            EvalModel::Hf(d) | EvalModel::Saved(d) => d,
        }
    }

    /// Parses `hf:DIR` or `saved:DIR`, checking that the directory holds such a model.
    pub fn parse(spec: &str) -> std::result::Result<EvalModel, ModelError> {
        if let Some(d) = spec.strip_prefix("saved:") {
            let dir = PathBuf::from(d);
            if !saved::is_saved(&dir) {
                return Err(ModelError::Spec(format!(
                    "`{spec}`: {} has no {} (a model synpref saved, e.g. by `synpref fractions`)",
                    dir.display(),
                    saved::CARD_FILE
                )));
            }
            return Ok(EvalModel::Saved(dir));
        }
        match ModelSpec::parse(spec)? {
            ModelSpec::Hf(dir) => Ok(EvalModel::Hf(dir)),
            other => Err(ModelError::Spec(format!(
                "`{other}` names a kind of model to train, not trained weights: give hf:DIR, or saved:DIR for a model synpref trained and saved"
            ))),
        }
    }

    /// Loads the model, its features cached under `cache` when given.
    pub fn load(
        &self,
        options: &ModelOptions,
        cache: Option<&str>,
    ) -> std::result::Result<Arc<dyn RewardModel>, ModelError> {
        match self {
            EvalModel::Hf(dir) => Ok(Arc::new(HfScorer(load_hf(dir, options, cache)?))),
            EvalModel::Saved(dir) => saved::load(dir, options, cache),
        }
    }
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
    /// Pairs whose prompt or reply `--max-tokens` cut (eval fills it in; computed
    /// pairs only).
    #[serde(default)]
    pub truncations: synpref_operators::models::TruncationStats,
    /// An imported benchmark's official score (`overall` is then its headline).
    #[serde(default)]
    pub official: Option<BenchScore>,
}

/// An imported benchmark's official score as a set's accuracy.
fn official_accuracy(
    set: &EvalSet,
    rows: &[crate::bench::BenchRow],
    model: &dyn RewardModel,
    chunk_pairs: usize,
) -> Result<SetAccuracy> {
    let (score, _) = crate::bench::score_imported(rows, model, chunk_pairs)?;
    let overall = Estimate {
        value: Some(score.headline),
        ci95: score.headline_ci95,
        n: score.pairwise.n,
    };
    Ok(SetAccuracy {
        eval: set.eval.clone(),
        input_rows: set.input_rows,
        invalid_rows: 0,
        ties: score.ties,
        warnings: if score.headline_ci95.is_some() {
            warnings(&overall)
        } else {
            Vec::new()
        },
        overall,
        subsets: score
            .parts
            .iter()
            .map(|p| {
                (
                    p.name.clone(),
                    Estimate {
                        value: Some(p.score),
                        ci95: p.ci95,
                        n: p.n,
                    },
                )
            })
            .collect(),
        truncations: Default::default(),
        official: Some(score),
    })
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

/// A preference set read into memory (evaluation sets are small: RewardBench has 3K
/// pairs), so that several models can be measured on one read.
#[derive(Clone, Debug)]
pub struct EvalSet {
    pub eval: String,
    pub input_rows: u64,
    pub invalid_rows: u64,
    pub pairs: Vec<PreferencePair>,
    /// Each pair's `subset` value (`None`: the set has no such column; a null is "").
    pub subsets: Option<Vec<String>>,
    /// A hash of the pairs' contents and subsets, in order: identifies the set's
    /// contents whatever its URL (fractions caches evaluations by it).
    pub content_key: u128,
    /// A benchmark imported by `synpref bench import` (then `pairs` is empty): scored by
    /// its official rules.
    pub imported: Option<Vec<crate::bench::BenchRow>>,
}

/// Reads a preference set, or a benchmark `synpref bench import` wrote.
pub fn load_eval_set(url: &str, chunk_pairs: usize) -> Result<EvalSet> {
    if let Some(rows) = crate::bench::read_layout(url)? {
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        for r in &rows {
            h.update(&serde_json::to_vec(r).expect("a layout row serializes"));
            h.update(b"\n");
        }
        return Ok(EvalSet {
            eval: url.to_string(),
            input_rows: rows.len() as u64,
            invalid_rows: 0,
            pairs: Vec::new(),
            subsets: None,
            content_key: h.digest128(),
            imported: Some(rows),
        });
    }
    let input = plan_input(url)?;
    let (_, extras_fields) = input_schema(&input)?;
    let subset_column = extras_fields.iter().position(|f| f.name() == "subset");
    let extras = Arc::new(ExtrasCodec::new(extras_fields)?);
    let mut invalid = 0u64;
    // Why rows were invalid: (count, first message) per reason, for the error when none
    // is valid.
    let mut why: BTreeMap<String, (u64, String)> = BTreeMap::new();
    let mut all = Vec::new();
    let mut names: Vec<String> = Vec::new();
    let input_rows = read_valid_pairs(
        &input,
        &extras,
        chunk_pairs,
        &mut |row| {
            invalid += 1;
            let e = why
                .entry(row.reason.code().to_string())
                .or_insert_with(|| (0, row.error.clone().unwrap_or_default()));
            e.0 += 1;
            Ok(())
        },
        &mut |pairs| {
            if let Some(c) = subset_column {
                let columns = extras.decode(pairs.iter().map(|p| p.extras.as_slice()))?;
                let column = columns[c]
                    .as_any()
                    .downcast_ref::<StringArray>()
                    .ok_or_else(|| {
                        Error::bad_file(url, "column `subset` is not a string column")
                    })?;
                names.extend((0..column.len()).map(|i| {
                    if column.is_null(i) {
                        String::new()
                    } else {
                        column.value(i).to_string()
                    }
                }));
            }
            all.extend(pairs);
            Ok(())
        },
    )?;
    if all.is_empty() {
        // Nothing to score: an accuracy over no pair would be a number that means
        // nothing, so the set is refused, saying why its rows were not pairs.
        let reasons: Vec<String> = why
            .iter()
            .map(|(reason, (n, first))| format!("{n} {reason} (first: {first})"))
            .collect();
        return Err(Error::bad_file(
            url,
            if input_rows == 0 {
                "no rows".to_string()
            } else {
                format!(
                    "no valid row: {input_rows} rows read, none a valid pair: {}",
                    reasons.join("; ")
                )
            },
        ));
    }
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    for (i, p) in all.iter().enumerate() {
        h.update(&p.content_hash.to_le_bytes());
        if let Some(n) = subset_column.map(|_| &names[i]) {
            h.update(&(n.len() as u64).to_le_bytes());
            h.update(n.as_bytes());
        }
    }
    Ok(EvalSet {
        eval: url.to_string(),
        input_rows,
        invalid_rows: invalid,
        pairs: all,
        subsets: subset_column.map(|_| names),
        content_key: h.digest128(),
        imported: None,
    })
}

/// A model's accuracy on a set, overall and per subset. A pair counts as correct when
/// its chosen reply is rewarded strictly above the rejected one (RewardBench's rule: a
/// tie is wrong).
///
/// An imported benchmark is scored by its official rules instead: `overall` is its
/// headline (with an interval only where the headline is a proportion), `subsets` its
/// parts, `official` the whole score.
pub fn accuracy(set: &EvalSet, model: &dyn RewardModel, chunk_pairs: usize) -> Result<SetAccuracy> {
    if let Some(rows) = &set.imported {
        return official_accuracy(set, rows, model, chunk_pairs);
    }
    let mut ties = 0u64;
    // (correct, pairs) overall and per subset.
    let mut overall = (0u64, 0u64);
    let mut subsets: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for (c, chunk) in set.pairs.chunks(chunk_pairs.max(1)).enumerate() {
        let refs: Vec<_> = chunk.iter().collect();
        let rewards = model.score(&refs).map_err(|e| e.for_setting("--model"))?;
        for (i, (chosen, rejected)) in rewards.iter().enumerate() {
            let correct = chosen > rejected;
            ties += u64::from(chosen == rejected);
            overall.0 += u64::from(correct);
            overall.1 += 1;
            if let Some(names) = &set.subsets {
                let s = subsets
                    .entry(names[c * chunk_pairs.max(1) + i].clone())
                    .or_default();
                s.0 += u64::from(correct);
                s.1 += 1;
            }
        }
    }
    let overall = Estimate::from_counts(overall.0 as f64, overall.1);
    Ok(SetAccuracy {
        eval: set.eval.clone(),
        input_rows: set.input_rows,
        invalid_rows: set.invalid_rows,
        ties,
        warnings: warnings(&overall),
        truncations: Default::default(),
        official: None,
        overall,
        subsets: subsets
            .into_iter()
            .map(|(k, (c, n))| (k, Estimate::from_counts(c as f64, n)))
            .collect(),
    })
}
