//! The built-in reward model (DESIGN §3): a linear Bradley–Terry model over hashed word
//! n-gram features, r(x, y) = w·φ(y), trained in-process by logistic regression on
//! preference pairs (minimising −log σ(r(x, y_w) − r(x, y_l))), with AdaGrad steps
//! (Duchi et al. 2011) so that rare n-grams learn as fast as common ones.
//!
//! Deterministic: for a given seed and input the same weights come out on any machine
//! (single-threaded f32 arithmetic in a fixed order; the examples are sorted by pair id
//! before training and shuffled by a seeded ChaCha generator).

use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use super::features::{category_hash, reply_text, response_features, SparseFeatures};
use synpref_engine::model::PreferencePair;

/// Training settings of a built-in model; every knob has its default here.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TrainSettings {
    /// log2 of the number of hashed features.
    pub feature_bits: u32,
    /// Passes over the training examples of the best RM. On noisy pool labels held-out
    /// accuracy peaks after one or two passes and then falls as the model fits the
    /// noise (measured on generated data, docs/benchmarks.md), so it makes two. The
    /// gold RM makes one online pass over the label stream (`OnlineTrainer`).
    pub epochs: usize,
    /// AdaGrad base step size of the best RM. Chosen by held-out accuracy on pool
    /// labels (docs/benchmarks.md, 1M generated pairs, out-of-fold accuracy): 0.5
    /// (Vowpal Wabbit's default, and ours before) 0.766, 0.1 0.809, 0.05 0.814, 0.02
    /// 0.818, 0.01 0.820. With 13% wrong labels a large step chases them: held-out
    /// accuracy peaked in the first epoch at 0.5 and in the second at 0.01.
    pub learning_rate: f32,
    /// AdaGrad base step size of the gold RM's online pass (`OnlineTrainer`): one pass
    /// over clean human labels, where a large step learns fast; 0.5 as Vowpal Wabbit.
    pub online_learning_rate: f32,
    /// L2 penalty applied to touched weights (keeps rare n-grams from dominating).
    pub l2: f32,
    pub seed: u64,
    /// AdaGrad's initial squared-gradient sum in the gold RM's online pass
    /// (`OnlineTrainer`). It caps every step at `learning_rate / √(it)` times the
    /// gradient, so one new label cannot move the weights far, at a cost in what few
    /// labels teach. Measured (docs/benchmarks.md): with 1e-6 (the batch trainer's
    /// value) a label's fresh n-grams each jump by the full learning rate and serve
    /// re-scores 65% of a 1M-pair pool after one label; with 1 it re-scores 13%, with
    /// 100 8 – 11%. Curated labels matching the truth, 1M pairs (50K gold labels) /
    /// the demo's 50K pairs (2.5K gold labels): 1e-6 98.28% / 96.7%, 0.1 98.40% /
    /// 97.1%, 1 98.44% / 96.5%, 10 — / 95.4%, 100 98.43% / 94.4%. 1 keeps what small
    /// label sets teach and costs serve little at one label (more at 100).
    pub online_initial_accumulator: f32,
    /// Make the best RM's checkpoints the average of all iterates so far (averaged
    /// SGD, Polyak & Juditsky 1992) instead of the last iterate. Off: measured at 1M
    /// generated pairs it helps a large step (0.5: 0.766 → 0.768 held-out) and hurts
    /// the small one we use (0.01, two epochs: 0.820 → 0.816), whose early iterates
    /// are still far from the optimum (docs/benchmarks.md). The gold RM's online pass
    /// never averages.
    pub average: bool,
}

impl Default for TrainSettings {
    fn default() -> Self {
        TrainSettings {
            feature_bits: super::features::DEFAULT_FEATURE_BITS,
            epochs: 2,
            learning_rate: 0.01,
            online_learning_rate: 0.5,
            l2: 1e-6,
            seed: 17,
            online_initial_accumulator: 1.0,
            average: false,
        }
    }
}

/// One training example: features of the preferred and of the other reply.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainExample {
    pub pair_id: String,
    pub winner: SparseFeatures,
    pub loser: SparseFeatures,
}

impl TrainExample {
    /// Pair id first, then the features: a total order, whatever order examples came in.
    pub fn total_order(a: &TrainExample, b: &TrainExample) -> std::cmp::Ordering {
        a.pair_id
            .cmp(&b.pair_id)
            .then_with(|| a.winner.indices.cmp(&b.winner.indices))
            .then_with(|| a.loser.indices.cmp(&b.loser.indices))
    }

    /// Features of a pool pair; `swap` makes the rejected reply the winner.
    pub fn from_pair(pair: &PreferencePair, bits: u32, swap: bool) -> TrainExample {
        let cat = category_hash(pair.attributes.task_category.as_deref());
        let mut c = SparseFeatures::default();
        let mut r = SparseFeatures::default();
        response_features(
            &reply_text(&pair.chosen, pair.implicit_prompt),
            cat,
            bits,
            &mut c,
        );
        response_features(
            &reply_text(&pair.rejected, pair.implicit_prompt),
            cat,
            bits,
            &mut r,
        );
        if swap {
            std::mem::swap(&mut c, &mut r);
        }
        TrainExample {
            pair_id: pair.pair_id.clone(),
            winner: c,
            loser: r,
        }
    }
}

/// The trained model: weights over the hashed features.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HashedBtModel {
    pub feature_bits: u32,
    pub weights: Vec<f32>,
    /// What was trained on and how it did, for reports and manifests.
    pub info: TrainInfo,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TrainInfo {
    pub examples: usize,
    pub heldout_examples: usize,
    /// Accuracy of each epoch's checkpoint on the held-out slice (empty without one).
    pub heldout_accuracy: Vec<f64>,
    /// Epoch (from 1) of the chosen checkpoint.
    pub chosen_epoch: usize,
    pub train_accuracy: f64,
}

#[inline]
fn dot(w: &[f32], f: &SparseFeatures) -> f32 {
    let mut s = 0.0f32;
    for &i in &f.indices {
        s += w[i as usize];
    }
    s * f.value
}

impl HashedBtModel {
    /// A model with all weights zero (p = 0.5 everywhere).
    pub fn zero(feature_bits: u32) -> Self {
        HashedBtModel {
            feature_bits,
            weights: vec![0.0; 1 << feature_bits],
            info: TrainInfo::default(),
        }
    }

    pub fn reward(&self, f: &SparseFeatures) -> f32 {
        dot(&self.weights, f)
    }

    /// r(winner) − r(loser).
    pub fn margin(&self, e: &TrainExample) -> f32 {
        dot(&self.weights, &e.winner) - dot(&self.weights, &e.loser)
    }

    /// Share of examples whose winner gets the higher reward (ties count half).
    pub fn accuracy(&self, examples: &[TrainExample]) -> f64 {
        self.accuracy_refs(&examples.iter().collect::<Vec<_>>())
    }

    /// A fingerprint of the weights (for manifests and the score cache).
    pub fn fingerprint(&self) -> String {
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        h.update(&self.feature_bits.to_le_bytes());
        for w in &self.weights {
            h.update(&w.to_le_bytes());
        }
        format!("builtin-{:016x}", h.digest())
    }

    /// Trains on `train`; when `heldout` is non-empty, keeps the epoch checkpoint with
    /// the best held-out accuracy (DESIGN §1, Stage 1 step 1), else the last one.
    pub fn train(
        train: Vec<TrainExample>,
        heldout: Vec<TrainExample>,
        settings: &TrainSettings,
        on_epoch: impl FnMut(usize, f64),
    ) -> HashedBtModel {
        HashedBtModel::train_refs(
            train.iter().collect(),
            heldout.iter().collect(),
            settings,
            on_epoch,
        )
    }

    /// `train` over borrowed examples (the folds of cross-fitting share one sample).
    pub fn train_refs(
        mut train: Vec<&TrainExample>,
        mut heldout: Vec<&TrainExample>,
        settings: &TrainSettings,
        mut on_epoch: impl FnMut(usize, f64),
    ) -> HashedBtModel {
        // A total order, so that examples gathered from workers in any order (even two
        // with one pair id) train the same model.
        train.sort_by(|a, b| TrainExample::total_order(a, b));
        heldout.sort_by(|a, b| TrainExample::total_order(a, b));
        let dim = 1usize << settings.feature_bits;
        let mut model = HashedBtModel::zero(settings.feature_bits);
        let mut g2 = vec![ADAGRAD_INITIAL; dim];
        let mut best: Option<(f64, usize, Vec<f32>)> = None;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(settings.seed);
        let mut order: Vec<u32> = (0..train.len() as u32).collect();
        let mut history = Vec::new();
        let mut sum = if settings.average {
            vec![0f64; dim]
        } else {
            Vec::new()
        };
        let mut steps = 0u64;
        let mut last = Vec::new();
        for epoch in 1..=settings.epochs {
            order.shuffle(&mut rng);
            for &k in &order {
                let average = settings.average.then(|| IterateSum {
                    sum: &mut sum,
                    before: steps as f64,
                });
                adagrad_step_averaged(
                    &mut model.weights,
                    &mut g2,
                    average,
                    train[k as usize],
                    settings,
                );
                steps += 1;
            }
            // The checkpoint of an epoch: the average of every iterate so far, or the
            // last iterate.
            let checkpoint = HashedBtModel {
                feature_bits: settings.feature_bits,
                weights: if settings.average {
                    averaged(&model.weights, &sum, steps)
                } else {
                    model.weights.clone()
                },
                info: TrainInfo::default(),
            };
            if !heldout.is_empty() {
                let acc = checkpoint.accuracy_refs(&heldout);
                history.push(acc);
                on_epoch(epoch, acc);
                if best.as_ref().is_none_or(|(b, _, _)| acc > *b) {
                    best = Some((acc, epoch, checkpoint.weights.clone()));
                }
            } else {
                on_epoch(epoch, f64::NAN);
            }
            last = checkpoint.weights;
        }
        let chosen_epoch = match best {
            Some((_, epoch, weights)) => {
                model.weights = weights;
                epoch
            }
            None => {
                if !last.is_empty() {
                    model.weights = last;
                }
                settings.epochs
            }
        };
        model.info = TrainInfo {
            examples: train.len(),
            heldout_examples: heldout.len(),
            heldout_accuracy: history,
            chosen_epoch,
            train_accuracy: model.accuracy_refs(&train),
        };
        model
    }

    /// `accuracy` over borrowed examples.
    pub fn accuracy_refs(&self, examples: &[&TrainExample]) -> f64 {
        if examples.is_empty() {
            return 0.0;
        }
        let hits: f64 = examples.iter().map(|e| hit(self.margin(e))).sum();
        hits / examples.len() as f64
    }
}

/// 1 when a margin ranks the winner first, ½ on a tie, 0 else.
#[inline]
pub fn hit(margin: f32) -> f64 {
    if margin > 0.0 {
        1.0
    } else if margin == 0.0 {
        0.5
    } else {
        0.0
    }
}

/// AdaGrad's initial squared-gradient sum: keeps the first step finite.
const ADAGRAD_INITIAL: f32 = 1e-6;

/// One AdaGrad step of logistic regression on the BT loss −log σ(r(y_w) − r(y_l)).
fn adagrad_step(weights: &mut [f32], g2: &mut [f32], e: &TrainExample, settings: &TrainSettings) {
    adagrad_step_averaged(weights, g2, None, e, settings)
}

/// The running sum behind iterate averaging: with steps Δ_s, Σ_{t≤T} w_t =
/// T·w_T − Σ_s (s − 1)·Δ_s, so keeping `sum[i] += (s − 1)·Δ_s[i]` on the weights a
/// step touches gives the average of all iterates in O(1) per update (the sparse
/// form of averaged SGD, Bottou 2012, "Stochastic gradient descent tricks", §5).
struct IterateSum<'a> {
    sum: &'a mut [f64],
    /// s − 1 for the step being taken.
    before: f64,
}

fn adagrad_step_averaged(
    weights: &mut [f32],
    g2: &mut [f32],
    mut average: Option<IterateSum<'_>>,
    e: &TrainExample,
    settings: &TrainSettings,
) {
    let m = dot(weights, &e.winner) - dot(weights, &e.loser);
    // d/dm of −log σ(m) is −σ(−m).
    let g = -1.0 / (1.0 + m.exp());
    if g.abs() < 1e-7 {
        return;
    }
    for (f, sign) in [(&e.winner, 1.0f32), (&e.loser, -1.0f32)] {
        let gv = g * sign * f.value;
        for &i in &f.indices {
            let i = i as usize;
            let grad = gv + settings.l2 * weights[i];
            g2[i] += grad * grad;
            let step = settings.learning_rate * grad / g2[i].sqrt();
            weights[i] -= step;
            if let Some(a) = average.as_mut() {
                a.sum[i] -= a.before * step as f64;
            }
        }
    }
}

/// The average of the iterates after `steps` steps, from the last iterate and the sum.
fn averaged(weights: &[f32], sum: &[f64], steps: u64) -> Vec<f32> {
    let t = steps.max(1) as f64;
    weights
        .iter()
        .zip(sum)
        .map(|(w, s)| (*w as f64 - s / t) as f32)
        .collect()
}

/// Online AdaGrad over a stream of examples, one pass, in stream order: the gold RM.
///
/// Training is a left fold over the stream, so the trainer's state after a prefix of
/// the stream, stepped through the rest, reaches bit for bit the weights of a fold over
/// the whole stream from scratch. That is what lets `serve` warm-start: each label
/// batch only extends the stream, and serve and curate get the same model from the same
/// labels. One pass over clean human labels in the order they were given is also how
/// online learners such as Vowpal Wabbit train by default.
#[derive(Clone, Debug)]
pub struct OnlineTrainer {
    model: HashedBtModel,
    g2: Vec<f32>,
    settings: TrainSettings,
}

impl OnlineTrainer {
    pub fn new(settings: &TrainSettings) -> Self {
        OnlineTrainer {
            model: HashedBtModel::zero(settings.feature_bits),
            g2: vec![settings.online_initial_accumulator; 1 << settings.feature_bits],
            settings: TrainSettings {
                learning_rate: settings.online_learning_rate,
                ..settings.clone()
            },
        }
    }

    /// Learns from the next example of the stream.
    pub fn step(&mut self, e: &TrainExample) {
        adagrad_step(&mut self.model.weights, &mut self.g2, e, &self.settings);
        self.model.info.examples += 1;
    }

    /// The model after the examples so far.
    pub fn model(&self) -> &HashedBtModel {
        &self.model
    }

    /// The trainer's whole state: weights, squared-gradient sums, examples seen.
    pub fn parts(&self) -> (&[f32], &[f32], usize) {
        (&self.model.weights, &self.g2, self.model.info.examples)
    }

    /// A trainer restored from `parts` (None if they do not fit the settings).
    pub fn from_parts(
        settings: &TrainSettings,
        weights: Vec<f32>,
        g2: Vec<f32>,
        examples: usize,
    ) -> Option<Self> {
        let dim = 1usize << settings.feature_bits;
        if weights.len() != dim || g2.len() != dim {
            return None;
        }
        let mut t = OnlineTrainer::new(settings);
        t.model.weights = weights;
        t.model.info.examples = examples;
        t.g2 = g2;
        Some(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::features::response_features;

    fn ex(id: usize, good: &str, bad: &str) -> TrainExample {
        let mut w = SparseFeatures::default();
        let mut l = SparseFeatures::default();
        response_features(good, 0, 16, &mut w);
        response_features(bad, 0, 16, &mut l);
        TrainExample {
            pair_id: format!("{id:04}"),
            winner: w,
            loser: l,
        }
    }

    #[test]
    fn learns_a_separable_preference_and_is_deterministic() {
        let goods = [
            "clear helpful answer",
            "helpful and correct",
            "correct clear steps",
        ];
        let bads = ["rude wrong reply", "wrong and rude", "useless rude text"];
        let examples: Vec<_> = (0..60)
            .map(|i| ex(i, goods[i % 3], bads[(i / 3) % 3]))
            .collect();
        let s = TrainSettings {
            feature_bits: 16,
            ..Default::default()
        };
        let a = HashedBtModel::train(examples.clone(), examples[..10].to_vec(), &s, |_, _| {});
        let b = HashedBtModel::train(examples.clone(), examples[..10].to_vec(), &s, |_, _| {});
        assert_eq!(a.weights, b.weights);
        assert_eq!(a.accuracy(&examples), 1.0);
        let unseen = ex(999, "a clear and correct answer", "a rude and wrong answer");
        assert!(a.margin(&unseen) > 0.0);
    }

    #[test]
    fn an_online_fold_continued_equals_the_fold_from_scratch() {
        let examples: Vec<_> = (0..300)
            .map(|i| {
                ex(
                    i,
                    ["good clear", "correct"][i % 2],
                    ["rude", "wrong bad"][(i / 2) % 2],
                )
            })
            .collect();
        let s = TrainSettings {
            feature_bits: 16,
            ..Default::default()
        };
        let mut whole = OnlineTrainer::new(&s);
        examples.iter().for_each(|e| whole.step(e));
        let mut prefix = OnlineTrainer::new(&s);
        examples[..123].iter().for_each(|e| prefix.step(e));
        let mut resumed = prefix.clone();
        examples[123..].iter().for_each(|e| resumed.step(e));
        assert_eq!(whole.model().weights, resumed.model().weights);
        assert_ne!(prefix.model().weights, resumed.model().weights);
    }
}
