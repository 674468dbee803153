//! Serve's gold RM and how it is kept equal to the one `curate` would train from the
//! labels so far (issue 4: "serve and curate must get the same model from the same
//! labels").
//!
//! - The built-in model is an online AdaGrad fold over the label stream
//!   (`OnlineTrainer`): a batch of labels extends the fold, which is exactly where
//!   curate's single pass over the longer stream ends.
//! - An encoder head (`encoder:DIR`) is retrained from scratch after each batch, on the
//!   labelled pairs curate would train it on (`training::gold::complete_gold_pairs`), with
//!   curate's own `train_head`. That is deterministic and cheap: the encoder's outputs
//!   come from the score cache and only the head (2·hidden weights) is trained, so no
//!   warm start has to be proven equal.
//!
//! Both heads are linear, so a weight move Δw bounds every margin's move by ‖Δw‖·‖d‖
//! (`margin_bound`). Per scored pair serve stores the features the gold RM reads, as a
//! pool-store record: the hashed indices for the built-in model, the encoder's
//! [e(x), e(y_w), e(y_l)] f32s for an encoder head; re-scoring from the record equals
//! scoring the pair, bit for bit.

use std::sync::Arc;

use rustc_hash::FxHashMap;
use synpref_engine::hashing::pair_key;
use synpref_engine::model::{GoldLabel, PreferencePair, Verdict};
use synpref_engine::side::GoldLabels;
use synpref_engine::{Error, Result};
use synpref_operators::models::builtin::{HashedBtModel, OnlineTrainer, TrainExample};
use synpref_operators::models::encoder::{delta, DenseHead};
use synpref_operators::models::margin_bound::{dense_norm, sparse_diff_norm};
use synpref_operators::models::CachedFeatures;

use crate::curate::CurateSpec;
use synpref_operators::training::best::{borrowed, train_head};
use synpref_operators::training::gold::{
    complete_gold_pairs, gold_example, head_settings, pool_label_swap,
};

/// Where a scored pair's gold-RM features come from, for the record serve stores.
#[derive(Clone)]
pub enum GoldFeatures {
    /// The built-in model's hashed n-grams.
    Hashed { bits: u32 },
    /// An encoder's per-pair outputs, from the score cache (serve requires one).
    Encoder(Arc<CachedFeatures>),
}

impl GoldFeatures {
    /// A pair's features record and the norm ‖φ(y_w) − φ(y_l)‖ of its difference,
    /// rounded up.
    pub fn record(&self, pair: &PreferencePair) -> Result<(Vec<u8>, f32)> {
        match self {
            GoldFeatures::Hashed { bits } => {
                let e = TrainExample::from_pair(pair, *bits, false);
                Ok((encode_hashed(&e), sparse_diff_norm(&e.winner, &e.loser)))
            }
            GoldFeatures::Encoder(f) => {
                let x = f.get(&[pair]).map_err(|e| Error::other("--gold-rm", e))?;
                let norm = dense_norm(&delta(&x, false));
                Ok((x.iter().flat_map(|v| v.to_le_bytes()).collect(), norm))
            }
        }
    }
}

/// A built-in model's features record: the counts and values of the chosen and the
/// rejected reply's features, then their indices in extraction order (the order the
/// model sums them in, so re-scoring from here is bit-identical to scoring the text).
/// Indices take 3 bytes each when they all fit (the default 2²⁰ features, any
/// `--feature-bits` up to 24), else 4: the record's length says which. Re-scoring reads
/// these records for most of a shard per epoch, so their size is its I/O.
pub fn encode_hashed(e: &TrainExample) -> Vec<u8> {
    let indices = || e.winner.indices.iter().chain(&e.loser.indices);
    let width = if indices().all(|&i| i < 1 << 24) {
        3
    } else {
        4
    };
    let n = e.winner.indices.len() + e.loser.indices.len();
    let mut b = Vec::with_capacity(16 + width * n);
    b.extend_from_slice(&(e.winner.indices.len() as u32).to_le_bytes());
    b.extend_from_slice(&(e.loser.indices.len() as u32).to_le_bytes());
    b.extend_from_slice(&e.winner.value.to_le_bytes());
    b.extend_from_slice(&e.loser.value.to_le_bytes());
    for i in indices() {
        b.extend_from_slice(&i.to_le_bytes()[..width]);
    }
    b
}

/// r(chosen) − r(rejected) under `model` from an `encode_hashed` record, summed
/// straight from the record's bytes (no vectors are built: re-scoring calls this for
/// up to every pair of a shard per epoch) in the order and with the operations of
/// `HashedBtModel::reward`, so the margin is the one scoring the text gives, bit for
/// bit. `None` when the record is cut short or names a feature the model lacks.
pub fn hashed_margin(model: &HashedBtModel, bytes: &[u8]) -> Option<f32> {
    let u = |at: usize| {
        bytes
            .get(at..at + 4)
            .map(|s| u32::from_le_bytes(s.try_into().expect("4")))
    };
    let (nw, nl) = (u(0)? as usize, u(4)? as usize);
    let body = bytes.get(16..)?;
    let n = nw + nl;
    let width = match body.len() {
        l if l == 3 * n => 3,
        l if l == 4 * n => 4,
        _ => return None,
    };
    let weights = &model.weights;
    // The width is decided once per record, not per index: one loop per width.
    let sum = |indices: &[u8]| -> Option<f32> {
        let mut s = 0.0f32;
        if width == 3 {
            for c in indices.chunks_exact(3) {
                s += *weights.get(c[0] as usize | (c[1] as usize) << 8 | (c[2] as usize) << 16)?;
            }
        } else {
            for c in indices.chunks_exact(4) {
                s += *weights.get(u32::from_le_bytes(c.try_into().expect("4 bytes")) as usize)?;
            }
        }
        Some(s)
    };
    let (winner, loser) = body.split_at(width * nw);
    let winner = sum(winner)? * f32::from_bits(u(8)?);
    let loser = sum(loser)? * f32::from_bits(u(12)?);
    Some(winner - loser)
}

/// r(chosen) − r(rejected) under an encoder head from a record of the encoder's f32s.
pub fn head_margin(head: &DenseHead, bytes: &[u8]) -> Option<f32> {
    if !bytes.len().is_multiple_of(4) || bytes.len() / 4 != 3 * head.weights.len() / 2 {
        return None;
    }
    let (c, r) = head.rewards(&f32s(bytes));
    Some(c - r)
}

/// Little-endian f32s (features records, saved state files).
pub fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
        .collect()
}

/// The gold RM's weights as worker 0 hands them to the other workers after each batch.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub enum SharedWeights {
    Builtin { weights: Vec<f32>, examples: usize },
    Head(DenseHead),
}

/// The gold RM as serve keeps it. Worker 0 trains it (and keeps its examples for the
/// self-measurement); the other workers hold its weights (`set_weights`).
pub enum GoldModel {
    Builtin {
        trainer: OnlineTrainer,
        /// Unswapped features of the first valid row of each pair key the model has
        /// learned from.
        examples: FxHashMap<u64, TrainExample>,
    },
    Encoder {
        features: Arc<CachedFeatures>,
        head: DenseHead,
        /// Per pair key with a label that trains on a pool row: the row curate trains
        /// on (the valid row with the smallest content hash; `complete_gold_pairs`).
        rows: FxHashMap<u64, PreferencePair>,
    },
}

impl GoldModel {
    pub fn new(spec: &CurateSpec, features: &GoldFeatures) -> GoldModel {
        match features {
            GoldFeatures::Hashed { .. } => GoldModel::Builtin {
                trainer: OnlineTrainer::new(&spec.train),
                examples: FxHashMap::default(),
            },
            GoldFeatures::Encoder(f) => GoldModel::Encoder {
                features: f.clone(),
                head: DenseHead {
                    weights: vec![0.0; 2 * f.features.width() / 3],
                    info: Default::default(),
                },
                rows: FxHashMap::default(),
            },
        }
    }

    /// The model holds the pool row it learns `key`'s labels from (no row need be
    /// read for it again).
    pub fn knows(&self, key: u64) -> bool {
        match self {
            GoldModel::Builtin { examples, .. } => examples.contains_key(&key),
            GoldModel::Encoder { rows, .. } => rows.contains_key(&key),
        }
    }

    /// Keeps the pool row the model learns a label record's pair from (before the
    /// record is added to `labels`). `rows(key)` reads the valid pool rows with a pair
    /// key, in row-key order. The built-in model keeps the row for the self-measurement's
    /// folds too.
    pub fn remember_rows(
        &mut self,
        spec: &CurateSpec,
        label: &GoldLabel,
        rows: &dyn Fn(u64) -> Result<Vec<PreferencePair>>,
    ) -> Result<()> {
        let key = pair_key(&label.pair_id);
        let trains_on_pool = label.text.is_none() && label.verdict != Verdict::Undecidable;
        match self {
            GoldModel::Builtin { examples, .. } => {
                if trains_on_pool && !examples.contains_key(&key) {
                    if let Some(first) = rows(key)?.first() {
                        examples.insert(
                            key,
                            TrainExample::from_pair(first, spec.train.feature_bits, false),
                        );
                    }
                }
            }
            GoldModel::Encoder { rows: memo, .. } => {
                if trains_on_pool && !memo.contains_key(&key) {
                    let found = rows(key)?.into_iter().min_by_key(|p| p.content_hash);
                    if let Some(p) = found {
                        memo.insert(key, p);
                    }
                }
            }
        }
        Ok(())
    }

    /// Steps the built-in trainer over the records in force from stream position
    /// `from` on, or, with `None` (a record it had learned was superseded), trains it
    /// again from scratch over every record in force: either way it ends where
    /// curate's one pass over the records in force ends (`train_builtin_gold`). An
    /// encoder head is retrained by `refit`.
    pub fn learn_in_force(&mut self, spec: &CurateSpec, labels: &GoldLabels, from: Option<usize>) {
        if let GoldModel::Builtin { trainer, examples } = self {
            let bits = spec.train.feature_bits;
            if from.is_none() {
                *trainer = OnlineTrainer::new(&spec.train);
            }
            for label in labels.in_force(from.unwrap_or(0)) {
                if let Some(e) = gold_example(label, examples, bits) {
                    trainer.step(&e);
                }
            }
        }
    }

    /// Brings the model up to `labels` once a batch has been learned: the built-in
    /// model is current already; an encoder head is trained again from scratch.
    pub fn refit(&mut self, spec: &CurateSpec, labels: &GoldLabels) -> Result<()> {
        if let GoldModel::Encoder {
            features,
            head,
            rows,
        } = self
        {
            let pool: Vec<(PreferencePair, bool)> = rows
                .iter()
                .filter_map(|(key, p)| Some((p.clone(), pool_label_swap(labels, *key)?)))
                .collect();
            let pairs = complete_gold_pairs(labels, pool);
            *head = train_head(
                features,
                &borrowed(&pairs),
                0.0,
                &head_settings(spec.train.seed),
            )
            .map_err(|e| e.for_setting("--gold-rm"))?;
        }
        Ok(())
    }

    pub fn weights(&self) -> &[f32] {
        match self {
            GoldModel::Builtin { trainer, .. } => &trainer.model().weights,
            GoldModel::Encoder { head, .. } => &head.weights,
        }
    }

    /// As curate's manifest names the gold RM.
    pub fn fingerprint(&self) -> String {
        match self {
            GoldModel::Builtin { trainer, .. } => trainer.model().fingerprint(),
            GoldModel::Encoder { features, head, .. } => format!(
                "{}+head-{}",
                features.features.fingerprint(),
                head.fingerprint()
            ),
        }
    }

    /// The margin from a pair's features record (`None`: the record does not fit).
    pub fn margin(&self, record: &[u8]) -> Option<f32> {
        match self {
            GoldModel::Builtin { trainer, .. } => hashed_margin(trainer.model(), record),
            GoldModel::Encoder { head, .. } => head_margin(head, record),
        }
    }

    /// A bound on the floating-point error of one margin computed with the current
    /// weights, where the model's features allow one (`margin_bound` covers the
    /// built-in model with its fixed ε; see there).
    ///
    /// An encoder head's margin is fl(fl(w·φ_w) − fl(w·φ_l)) over n = 2·hidden terms;
    /// each sequential f32 dot product errs by at most γ_n·Σ|w_i·φ_i| ≤ γ_n·‖w‖·‖φ‖
    /// (Higham, *Accuracy and Stability of Numerical Algorithms*, §3.1), γ_n =
    /// n·u/(1 − n·u), u = 2⁻²⁴; ‖φ‖ ≤ √2 because e(x), e(y) are unit vectors; the
    /// subtraction adds u·|m| ≤ u·2√2·‖w‖. 1.5 > √2 absorbs the embeddings' own
    /// rounding.
    pub fn margin_error_bound(&self) -> f64 {
        match self {
            GoldModel::Builtin { .. } => 0.0,
            GoldModel::Encoder { head, .. } => {
                let u = f32::EPSILON as f64 / 2.0;
                let n = head.weights.len() as f64;
                let gamma = n * u / (1.0 - n * u);
                let norm = head
                    .weights
                    .iter()
                    .map(|w| (*w as f64) * (*w as f64))
                    .sum::<f64>()
                    .sqrt();
                (2.0 * gamma + 2.0 * u) * 1.5 * norm
            }
        }
    }

    /// What the other workers need of the model worker 0 trained: its weights (the
    /// examples and the trainer's sums stay on worker 0).
    pub fn shared_weights(&self) -> SharedWeights {
        match self {
            GoldModel::Builtin { trainer, .. } => SharedWeights::Builtin {
                weights: trainer.model().weights.clone(),
                examples: trainer.parts().2,
            },
            GoldModel::Encoder { head, .. } => SharedWeights::Head(head.clone()),
        }
    }

    /// Takes the weights worker 0 trained (a worker that does not train).
    pub fn set_weights(&mut self, spec: &CurateSpec, shared: SharedWeights) -> Result<()> {
        match (self, shared) {
            (GoldModel::Builtin { trainer, .. }, SharedWeights::Builtin { weights, examples }) => {
                let g2 = vec![0.0; weights.len()];
                *trainer = OnlineTrainer::from_parts(&spec.train, weights, g2, examples)
                    .ok_or_else(|| {
                        Error::other("gold RM", "worker 0's weights do not fit the feature bits")
                    })?;
            }
            (GoldModel::Encoder { head, .. }, SharedWeights::Head(h)) => *head = h,
            _ => {
                return Err(Error::other(
                    "gold RM",
                    "worker 0 trained another kind of model",
                ))
            }
        }
        Ok(())
    }

    /// The built-in model's trainer, for saving.
    pub fn trainer(&self) -> Option<&OnlineTrainer> {
        match self {
            GoldModel::Builtin { trainer, .. } => Some(trainer),
            GoldModel::Encoder { .. } => None,
        }
    }

    /// Takes a saved trainer (built-in model only; a head is retrained from the labels).
    pub fn restore(&mut self, saved: Option<OnlineTrainer>) {
        if let (GoldModel::Builtin { trainer, .. }, Some(t)) = (self, saved) {
            *trainer = t;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use synpref_engine::model::{Attributes, Conversation, RowKey};
    use synpref_operators::models::builtin::TrainSettings;
    use synpref_operators::models::RewardModel;

    /// Re-scoring from the stored features gives the margin scoring the text gives, bit
    /// for bit (the oracle tests rely on it for re-scored pairs).
    #[test]
    fn margins_from_stored_features_equal_margins_from_text() {
        let settings = TrainSettings {
            feature_bits: 16,
            ..Default::default()
        };
        let mut model = HashedBtModel::zero(16);
        for (i, w) in model.weights.iter_mut().enumerate() {
            *w = ((i * 7919) % 1000) as f32 / 997.0 - 0.5;
        }
        let text = |t: &str| Conversation::Text(t.into());
        let pair = PreferencePair {
            key: RowKey(1),
            row: 1,
            attributes: Attributes {
                task_category: Some("information seeking".into()),
                ..Default::default()
            },
            content_hash: 1,
            dedup_hash: 1,
            pair_key: 1,
            ..PreferencePair::outside_pool(
                "p",
                text("Explain the tides"),
                text("The moon's gravity pulls the oceans; the tides follow it."),
                text("Tides are caused by wind, mostly."),
            )
        };
        let scored = model.score(&[&pair]).unwrap()[0];
        let e = TrainExample::from_pair(&pair, settings.feature_bits, false);
        let m = hashed_margin(&model, &encode_hashed(&e)).unwrap();
        assert_eq!(m.to_bits(), (scored.0 - scored.1).to_bits());
        assert!(hashed_margin(&HashedBtModel::zero(10), &encode_hashed(&e)).is_none());
        // 3-byte indices at 16 bits; a record cut short is refused.
        let record = encode_hashed(&e);
        assert_eq!(
            record.len(),
            16 + 3 * (e.winner.indices.len() + e.loser.indices.len())
        );
        assert!(hashed_margin(&model, &record[..record.len() - 1]).is_none());
    }

    /// Features past 2²⁴ (`--feature-bits` 25 and up) are stored in 4 bytes, and
    /// re-scored bit for bit too.
    #[test]
    fn wide_feature_indices_take_four_bytes_and_rescore_exactly() {
        let mut model = HashedBtModel::zero(25);
        let (a, b, c) = (7usize, (1 << 24) + 3, (1 << 25) - 1);
        model.weights[a] = 0.25;
        model.weights[b] = -1.5;
        model.weights[c] = 3.0e-3;
        let mut e = TrainExample::from_pair(&pair_for_wide_test(), 25, false);
        e.winner.indices = vec![a as u32, b as u32, c as u32];
        e.loser.indices = vec![b as u32, a as u32];
        let record = encode_hashed(&e);
        assert_eq!(record.len(), 16 + 4 * 5);
        let want = (model.weights[a] + model.weights[b] + model.weights[c]) * e.winner.value
            - (model.weights[b] + model.weights[a]) * e.loser.value;
        assert_eq!(
            hashed_margin(&model, &record).unwrap().to_bits(),
            want.to_bits()
        );
    }

    fn pair_for_wide_test() -> PreferencePair {
        let text = |t: &str| Conversation::Text(t.into());
        PreferencePair {
            key: RowKey(2),
            row: 2,
            content_hash: 2,
            dedup_hash: 2,
            pair_key: 2,
            ..PreferencePair::outside_pool("q", text("a"), text("b c"), text("d"))
        }
    }

    /// An encoder head's margin from the stored record is the one scoring gives, bit
    /// for bit; a record of another width does not fit.
    #[test]
    fn head_margins_from_stored_records_equal_margins_from_features() {
        let h = 8;
        let head = DenseHead {
            weights: (0..2 * h).map(|i| (i as f32 * 0.37).sin()).collect(),
            info: Default::default(),
        };
        let x: Vec<f32> = (0..3 * h).map(|i| (i as f32 * 0.11).cos() / 3.0).collect();
        let record: Vec<u8> = x.iter().flat_map(|v| v.to_le_bytes()).collect();
        let (c, r) = head.rewards(&x);
        assert_eq!(
            head_margin(&head, &record).unwrap().to_bits(),
            (c - r).to_bits()
        );
        assert!(head_margin(&head, &record[4..]).is_none());
        assert!(head_margin(&head, &record[..record.len() - 4]).is_none());
    }
}
