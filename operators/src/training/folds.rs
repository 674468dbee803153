//! Cross-fitting: K folds by a seeded hash of `pair_id`, and a reward model made of one
//! model per fold that scores each pair with the model trained without that pair's fold.
//!
//! Why: a model that judges the very pairs it was trained on reproduces their labels,
//! wrong ones included (on a small pool the built-in best RM agreed with the truth
//! exactly as often as the labels did). Cross-fitting (Chernozhukov et al. 2018, "Double/
//! debiased machine learning", §3) removes that: no pair is scored by a model that saw
//! its label, whatever the pair. The assignment depends on the pair id only, so it is
//! the same for any number of workers or processes.
//! The assignment itself (`FoldAssignment`) lives beside `RewardModel` in `models`,
//! whose trait names it.

use std::sync::Arc;

use synpref_engine::model::PreferencePair;

use crate::models::builtin::HashedBtModel;
use crate::models::{FoldAssignment, ModelError, ModelUsage, RewardModel};

/// Default folds of the best RM's cross-fitting: 2, the split of double/debiased
/// machine learning's original cross-fitting (Chernozhukov et al. 2018). Each fold
/// model trains on half the sample, so K = 2 with a 200K sample costs the built-in
/// model's training what one model on 200K costs, where K = 5 on 100K costs twice
/// that for the same held-out accuracy (0.820 and 0.819 at 1M generated pairs;
/// docs/benchmarks.md).
pub const DEFAULT_FOLDS: usize = 2;

/// One model per fold; pair ids of fold k are scored by model k, which was trained
/// without them.
pub struct CrossFitted {
    pub assignment: FoldAssignment,
    pub models: Vec<Arc<dyn RewardModel>>,
}

impl CrossFitted {
    pub fn new(assignment: FoldAssignment, models: Vec<Arc<dyn RewardModel>>) -> Self {
        assert_eq!(assignment.folds, models.len(), "one model per fold");
        CrossFitted { assignment, models }
    }
}

impl RewardModel for CrossFitted {
    /// `KIND-crossfitK-HASH`: the folds' model kind (`builtin`, `encoder`, …), their
    /// count, and a hash of every fold's fingerprint.
    fn fingerprint(&self) -> String {
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        let mut kind = String::new();
        for m in &self.models {
            let f = m.fingerprint();
            if kind.is_empty() {
                kind = f.split('-').next().unwrap_or("model").to_string();
            }
            h.update(f.as_bytes());
            h.update(&[0]);
        }
        format!("{kind}-crossfit{}-{:016x}", self.models.len(), h.digest())
    }

    fn score(&self, pairs: &[&PreferencePair]) -> Result<Vec<(f32, f32)>, ModelError> {
        let mut by_fold: Vec<Vec<usize>> = vec![Vec::new(); self.models.len()];
        for (i, p) in pairs.iter().enumerate() {
            by_fold[self.assignment.fold_of(&p.pair_id)].push(i);
        }
        let mut out = vec![(0.0f32, 0.0f32); pairs.len()];
        for (model, idx) in self.models.iter().zip(&by_fold) {
            if idx.is_empty() {
                continue;
            }
            let group: Vec<&PreferencePair> = idx.iter().map(|&i| pairs[i]).collect();
            for (&i, r) in idx.iter().zip(model.score(&group)?) {
                out[i] = r;
            }
        }
        Ok(out)
    }

    fn hashed_folds(&self) -> Option<(Vec<&HashedBtModel>, FoldAssignment)> {
        let models: Option<Vec<&HashedBtModel>> = self
            .models
            .iter()
            .map(|m| {
                m.hashed_folds()
                    .filter(|(v, _)| v.len() == 1)
                    .map(|(v, _)| v[0])
            })
            .collect();
        Some((models?, self.assignment))
    }

    fn usage(&self) -> ModelUsage {
        // The folds of an encoder share one feature source: count it once.
        self.models.first().map(|m| m.usage()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_are_balanced_and_depend_on_the_pair_id_only() {
        let a = FoldAssignment::new(5);
        let mut counts = [0usize; 5];
        for i in 0..10_000 {
            counts[a.fold_of(&format!("pair-{i}"))] += 1;
        }
        for c in counts {
            assert!((1800..2200).contains(&c), "unbalanced folds: {counts:?}");
        }
        assert_eq!(a.fold_of("x"), FoldAssignment::new(5).fold_of("x"));
        assert_eq!(FoldAssignment::new(1).fold_of("x"), 0);
    }
}
