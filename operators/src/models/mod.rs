//! The model boundary: what the score operator needs of a reward model, and the
//! built-in hashed Bradley–Terry model behind it. Transformer RMs and encoders (candle)
//! plug in behind the same trait.

pub mod bert;
pub mod builtin;
pub mod decoder;
pub mod features;

/// What can go wrong loading or running a model (the operators crate's one error type
/// for models; jobs map it to exit codes).
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A model file or directory is missing or malformed; `path` names it.
    #[error("{path}: {message}")]
    Load { path: String, message: String },
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("chat template: {0}")]
    Template(String),
    #[error("candle: {0}")]
    Candle(#[from] candle_core::Error),
}

use synpref_engine::model::PreferencePair;

/// A reward model: r(x, y) for the chosen and the rejected reply of each pair.
pub trait RewardModel: Send + Sync {
    /// Identifies weights and settings; part of the score cache key and the manifest.
    fn fingerprint(&self) -> String;
    /// (r(x, y_w), r(x, y_l)) per pair, in order.
    fn score(&self, pairs: &[&PreferencePair]) -> Vec<(f32, f32)>;
    /// The built-in model behind this one, if it is one (lets the score operator hash
    /// each reply once for two built-in models).
    fn as_hashed(&self) -> Option<&builtin::HashedBtModel> {
        None
    }
}

/// σ(x) in f64.
#[inline]
pub fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

impl RewardModel for builtin::HashedBtModel {
    fn as_hashed(&self) -> Option<&builtin::HashedBtModel> {
        Some(self)
    }
    fn fingerprint(&self) -> String {
        builtin::HashedBtModel::fingerprint(self)
    }
    fn score(&self, pairs: &[&PreferencePair]) -> Vec<(f32, f32)> {
        let mut c = features::SparseFeatures::default();
        let mut r = features::SparseFeatures::default();
        pairs
            .iter()
            .map(|p| {
                let cat = features::category_hash(p.attributes.task_category.as_deref());
                features::response_features(
                    &features::reply_text(&p.chosen, p.implicit_prompt),
                    cat,
                    self.feature_bits,
                    &mut c,
                );
                features::response_features(
                    &features::reply_text(&p.rejected, p.implicit_prompt),
                    cat,
                    self.feature_bits,
                    &mut r,
                );
                (self.reward(&c), self.reward(&r))
            })
            .collect()
    }
}
