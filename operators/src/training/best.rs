//! The best RM, cross-fitted: one model per fold of the pool sample, each trained on
//! the other folds, so that the model that scores a pair never saw that pair's label
//! (`folds`). The out-of-fold accuracy on the sample is the best RM's held-out accuracy
//! on pool labels.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use synpref_engine::hashing::unit_interval;
use synpref_engine::model::PreferencePair;

use super::{CvAccuracy, SALT_HELDOUT};
use crate::models::builtin::{hit, HashedBtModel, TrainExample, TrainSettings};
use crate::models::encoder::{delta, DenseHead, HeadExample, HeadSettings};
use crate::models::FoldAssignment;
use crate::models::{CachedFeatures, ModelError};

/// How the best RM is fitted to the pool sample; every knob has its default here.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CrossFitSettings {
    /// Folds K (1: one model that also scores the pairs it was trained on).
    pub folds: usize,
    /// Share of each fold model's training set held out to choose its epoch.
    pub heldout_share: f64,
}

impl Default for CrossFitSettings {
    fn default() -> Self {
        CrossFitSettings {
            folds: super::folds::DEFAULT_FOLDS,
            heldout_share: 0.1,
        }
    }
}

/// The fold models and their pooled out-of-fold accuracy.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Folded<M> {
    pub assignment: FoldAssignment,
    pub models: Vec<M>,
    /// Each sample example judged by the model trained without its fold (with one
    /// fold: on the epoch-choice slice, the only examples the model did not learn).
    pub cv: CvAccuracy,
}

impl<M> Folded<M> {
    /// The out-of-fold accuracy as the report states it.
    pub fn quality(&self) -> synpref_engine::report::ModelQuality {
        synpref_engine::report::ModelQuality::from_counts(
            self.cv.hits,
            self.cv.n,
            self.models.len(),
        )
    }
}

/// Whether a pair is in the slice held out to choose a model's epoch.
pub fn is_heldout(pair_id: &str, share: f64) -> bool {
    share > 0.0 && unit_interval(pair_id, SALT_HELDOUT) < share
}

/// Trains the built-in best RM's fold models on `sample` (in parallel; each fold alone
/// is deterministic, so the result does not depend on the thread count).
pub fn train_builtin(
    sample: &[TrainExample],
    cross: &CrossFitSettings,
    settings: &TrainSettings,
) -> Folded<HashedBtModel> {
    fit_folds(
        sample,
        cross,
        |e| &e.pair_id,
        |train, heldout| HashedBtModel::train_refs(train, heldout, settings, |_, _| {}),
        |m, e| m.margin(e),
    )
}

/// One model per fold, each trained (`train(train, epoch-choice slice)`) without its
/// fold and judged (`margin`) on it, in parallel; each fold alone is deterministic, so
/// the result does not depend on the thread count. With one fold the model is judged
/// on its epoch-choice slice, the only examples it did not learn.
fn fit_folds<E: Sync, M: Send>(
    examples: &[E],
    cross: &CrossFitSettings,
    pair_id: impl Fn(&E) -> &str + Sync,
    train: impl Fn(Vec<&E>, Vec<&E>) -> M + Sync,
    margin: impl Fn(&M, &E) -> f32 + Sync,
) -> Folded<M> {
    let assignment = FoldAssignment::new(cross.folds);
    let fold_of: Vec<usize> = examples
        .iter()
        .map(|e| assignment.fold_of(pair_id(e)))
        .collect();
    let results: Vec<(M, CvAccuracy)> = (0..assignment.folds)
        .into_par_iter()
        .map(|k| {
            let (mut learn, mut heldout, mut out) = (Vec::new(), Vec::new(), Vec::new());
            for (e, &f) in examples.iter().zip(&fold_of) {
                if assignment.folds > 1 && f == k {
                    out.push(e);
                } else if is_heldout(pair_id(e), cross.heldout_share) {
                    heldout.push(e);
                } else {
                    learn.push(e);
                }
            }
            let model = train(learn, heldout.clone());
            let judged = if assignment.folds > 1 { out } else { heldout };
            let mut cv = CvAccuracy::default();
            for e in judged {
                cv.add(hit(margin(&model, e)));
            }
            (model, cv)
        })
        .collect();
    let mut cv = CvAccuracy::default();
    let mut models = Vec::new();
    for (m, c) in results {
        cv.merge(&c);
        models.push(m);
    }
    Folded {
        assignment,
        models,
        cv,
    }
}

/// The head examples of labelled pairs (sorted by pair id by the caller), features from
/// the cache: `(pair, swap)` with `swap` when the rejected reply won.
pub fn head_examples(
    features: &CachedFeatures,
    pairs: &[(&PreferencePair, bool)],
) -> Result<Vec<HeadExample>, ModelError> {
    let refs: Vec<&PreferencePair> = pairs.iter().map(|(p, _)| *p).collect();
    let f = features.get(&refs)?;
    let w = features.features.width();
    Ok(pairs
        .iter()
        .zip(f.chunks_exact(w))
        .map(|((p, swap), x)| HeadExample {
            pair_id: p.pair_id.clone(),
            delta: delta(x, *swap),
        })
        .collect())
}

/// Labelled pairs as the head trainers take them, borrowed.
pub fn borrowed(pairs: &[(PreferencePair, bool)]) -> Vec<(&PreferencePair, bool)> {
    pairs.iter().map(|(p, swap)| (p, *swap)).collect()
}

/// The input width of a head over an encoder's features `[e(x), e(y_w), e(y_l)]`.
pub fn head_dims(features: &CachedFeatures) -> usize {
    2 * features.features.width() / 3
}

/// Trains one head on labelled pairs, `heldout_share` of them choosing the epoch.
pub fn train_head(
    features: &CachedFeatures,
    pairs: &[(&PreferencePair, bool)],
    heldout_share: f64,
    settings: &HeadSettings,
) -> Result<DenseHead, ModelError> {
    let examples = head_examples(features, pairs)?;
    let (heldout, train): (Vec<&HeadExample>, Vec<&HeadExample>) = examples
        .iter()
        .partition(|e| is_heldout(&e.pair_id, heldout_share));
    Ok(DenseHead::train_refs(
        head_dims(features),
        train,
        heldout,
        settings,
    ))
}

/// Trains cross-fitted heads on labelled pairs (sorted by pair id by the caller).
pub fn train_heads(
    features: &CachedFeatures,
    pairs: &[(PreferencePair, bool)],
    cross: &CrossFitSettings,
    settings: &HeadSettings,
) -> Result<Folded<DenseHead>, ModelError> {
    let examples = head_examples(features, &borrowed(pairs))?;
    let dims = head_dims(features);
    Ok(fit_folds(
        &examples,
        cross,
        |e| &e.pair_id,
        |train, heldout| DenseHead::train_refs(dims, train, heldout, settings),
        |h, e| h.margin(&e.delta),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::features::response_features;
    use crate::models::features::SparseFeatures;

    /// Pairs whose replies share no word with any other pair: a model can only
    /// memorise their labels, never generalise.
    fn memorisable(n: usize) -> Vec<TrainExample> {
        (0..n)
            .map(|i| {
                let (mut w, mut l) = (SparseFeatures::default(), SparseFeatures::default());
                response_features(&format!("win{i}x"), 0, 18, &mut w);
                response_features(&format!("lose{i}y"), 0, 18, &mut l);
                TrainExample {
                    pair_id: format!("p{i:05}"),
                    winner: w,
                    loser: l,
                }
            })
            .collect()
    }

    #[test]
    fn no_fold_model_judges_a_pair_it_learned() {
        let sample = memorisable(400);
        let settings = TrainSettings {
            feature_bits: 18,
            learning_rate: 0.5,
            ..TrainSettings::default()
        };
        let folded = train_builtin(
            &sample,
            &CrossFitSettings {
                folds: 2,
                heldout_share: 0.0,
            },
            &settings,
        );
        // The model of a pair's fold never saw its words: its margins tie (but for a
        // few hashing collisions), so the out-of-fold accuracy is chance, not the
        // labels reproduced.
        assert_eq!(folded.cv.n, 400);
        let cv = folded.cv.value().unwrap();
        assert!((cv - 0.5).abs() < 0.02, "{cv}");
        let ties = sample
            .iter()
            .filter(|e| folded.models[folded.assignment.fold_of(&e.pair_id)].margin(e) == 0.0)
            .count();
        assert!(ties >= 390, "{ties} of 400 tie");
        // Whereas a model trained on every pair reproduces every label.
        let all = HashedBtModel::train(sample.clone(), Vec::new(), &settings, |_, _| {});
        assert_eq!(all.accuracy(&sample), 1.0);
    }
}
