//! `score`: rewards of both replies under the best RM and the gold RM, and the
//! Bradley–Terry probabilities p = σ(r(x, y_w) − r(x, y_l)) (DESIGN §1).

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use synpref_engine::model::PreferencePair;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::Capability;

use crate::models::features::{category_hash, reply_text, response_features, SparseFeatures};
use crate::models::FoldAssignment;
use crate::models::{sigmoid, RewardModel};
use crate::Rows;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScoredPair {
    pub pair: PreferencePair,
    /// r(x, y_w) − r(x, y_l) under the best and the gold RM, as computed in f32: the
    /// margins are what `serve` keeps, and p = σ(margin) is recomputed from them
    /// exactly (`p_best`, `p_gold`).
    pub m_best: f32,
    pub m_gold: f32,
}

impl ScoredPair {
    pub fn p_best(&self) -> f64 {
        sigmoid(self.m_best as f64)
    }
    pub fn p_gold(&self) -> f64 {
        sigmoid(self.m_gold as f64)
    }
}

/// Most built-in models the interleaved fast path scores at once.
const LANES: usize = 8;

/// Rewards of one reply under each of `N` interleaved models: `w` holds the weights of
/// feature i at `w[N·i .. N·i + N]`.
#[inline]
fn dot_lanes<const N: usize>(w: &[f32], f: &SparseFeatures) -> [f32; N] {
    let mut s = [0.0f32; N];
    for &i in &f.indices {
        let i = i as usize * N;
        let x: &[f32; N] = w[i..i + N].try_into().expect("N lanes");
        for l in 0..N {
            s[l] += x[l];
        }
    }
    s.map(|v| v * f.value)
}

/// The weights of two built-in (possibly cross-fitted) models (the best RM's folds,
/// then the gold RM's) side by side per hashed feature, when both are built-in with
/// one feature space and their folds fit in [`LANES`]: each feature then costs one
/// cache miss whatever the number of models, since the weight table does not fit in
/// L2. 4 lanes (16 bytes) when they fit, else 8 (32 bytes): a power of two that
/// divides a cache line, so a feature's weights never straddle two lines, and no wider
/// than needed (measured: 8 lanes for 3 models cost 0.3 – 0.6 s more at 1M pairs).
struct Interleaved {
    weights: Vec<f32>,
    lanes: usize,
    bits: u32,
    best: FoldAssignment,
    /// The lane of the gold RM's fold 0.
    gold_lane: usize,
    gold: FoldAssignment,
}

impl Interleaved {
    fn new(best: &dyn RewardModel, gold: &dyn RewardModel) -> Option<Interleaved> {
        let (b, best_folds) = best.hashed_folds()?;
        let (g, gold_folds) = gold.hashed_folds()?;
        let bits = b.first()?.feature_bits;
        let models = b.len() + g.len();
        if models > LANES || b.iter().chain(&g).any(|m| m.feature_bits != bits) {
            return None;
        }
        let lanes = if models <= 4 { 4 } else { 8 };
        let mut weights = vec![0f32; lanes << bits];
        for (lane, m) in b.iter().chain(&g).enumerate() {
            for (slot, w) in weights.chunks_exact_mut(lanes).zip(&m.weights) {
                slot[lane] = *w;
            }
        }
        Some(Interleaved {
            weights,
            lanes,
            bits,
            best: best_folds,
            gold_lane: b.len(),
            gold: gold_folds,
        })
    }

    /// (m_best, m_gold) of one pair; `c` and `r` are scratch buffers.
    fn margins(
        &self,
        p: &PreferencePair,
        c: &mut SparseFeatures,
        r: &mut SparseFeatures,
    ) -> (f32, f32) {
        let cat = category_hash(p.attributes.task_category.as_deref());
        response_features(&reply_text(&p.chosen, p.implicit_prompt), cat, self.bits, c);
        response_features(
            &reply_text(&p.rejected, p.implicit_prompt),
            cat,
            self.bits,
            r,
        );
        let b = self.best.fold_of(&p.pair_id);
        let g = self.gold_lane + self.gold.fold_of(&p.pair_id);
        let pick = |rc: &[f32], rr: &[f32]| (rc[b] - rr[b], rc[g] - rr[g]);
        if self.lanes == 4 {
            pick(
                &dot_lanes::<4>(&self.weights, c),
                &dot_lanes::<4>(&self.weights, r),
            )
        } else {
            pick(
                &dot_lanes::<8>(&self.weights, c),
                &dot_lanes::<8>(&self.weights, r),
            )
        }
    }
}

/// Where the score operator leaves the first model failure (a broken model file, a
/// template that raises, a device error): the job reads it after the dataflow and
/// fails with it, rather than a worker panicking.
pub type ModelFailure = Rc<RefCell<Option<String>>>;

pub trait Score<'scope> {
    fn score(
        self,
        best: Arc<dyn RewardModel>,
        gold: Arc<dyn RewardModel>,
        failure: ModelFailure,
    ) -> Rows<'scope, ScoredPair>;
}

/// Pairs the score operator gathers from its input before calling a transformer
/// model, across dataflow containers (which hold tens of pairs): enough for several
/// full batches at the default token budget (16,384 tokens ≈ 20 pairs of ~400-token
/// sequences), and the tokenising chunk of `batching` (512 sequences). Rows wait no
/// longer than their input time: when the frontier passes it, whatever is gathered is
/// scored.
pub const GATHER_PAIRS: usize = 1024;

impl<'scope> Score<'scope> for Rows<'scope, PreferencePair> {
    fn score(
        self,
        best: Arc<dyn RewardModel>,
        gold: Arc<dyn RewardModel>,
        failure: ModelFailure,
    ) -> Rows<'scope, ScoredPair> {
        // Both built-in with one feature space: hash each reply once (see `Lanes`).
        if let Some(interleaved) = Interleaved::new(best.as_ref(), gold.as_ref()) {
            return self.unary(Pipeline, "Score", move |_, _| {
                let mut c = SparseFeatures::default();
                let mut r = SparseFeatures::default();
                move |input, output| {
                    input.for_each(|time, data| {
                        let mut session = output.session(&time);
                        for pair in data.drain(..) {
                            let (m_best, m_gold) = interleaved.margins(&pair, &mut c, &mut r);
                            session.give(ScoredPair {
                                pair,
                                m_best,
                                m_gold,
                            });
                        }
                    });
                }
            });
        }
        // Transformer (or mixed) models: gather pairs across containers, so that each
        // model call fills its batches (`GATHER_PAIRS`).
        self.unary_frontier(Pipeline, "Score", move |_, _| {
            let mut gathered: Vec<(Capability<u64>, Vec<PreferencePair>)> = Vec::new();
            let mut count = 0usize;
            move |(input, frontier), output| {
                input.for_each(|time, data| {
                    if failure.borrow().is_some() {
                        data.clear();
                        return;
                    }
                    let cap = time.retain_least(0).expect("a message has a time");
                    count += data.len();
                    gathered.push((cap, std::mem::take(data)));
                });
                let passed = gathered
                    .iter()
                    .any(|(cap, _)| !frontier.less_equal(cap.time()));
                if count == 0 || (count < GATHER_PAIRS && !passed) {
                    return;
                }
                let batches = std::mem::take(&mut gathered);
                count = 0;
                let refs: Vec<&PreferencePair> =
                    batches.iter().flat_map(|(_, rows)| rows.iter()).collect();
                let margins = match margins(best.as_ref(), gold.as_ref(), &refs) {
                    Ok(m) => m,
                    Err(e) => {
                        *failure.borrow_mut() = Some(e);
                        return;
                    }
                };
                let mut margins = margins.into_iter();
                for (cap, rows) in batches {
                    let mut session = output.session(&cap);
                    for (pair, (m_best, m_gold)) in rows.into_iter().zip(margins.by_ref()) {
                        session.give(ScoredPair {
                            pair,
                            m_best,
                            m_gold,
                        });
                    }
                }
            }
        })
    }
}

/// (m_best, m_gold) of each pair, or the first model failure, naming the model.
fn margins(
    best: &dyn RewardModel,
    gold: &dyn RewardModel,
    pairs: &[&PreferencePair],
) -> Result<Vec<(f32, f32)>, String> {
    let b = best.score(pairs).map_err(|e| format!("best RM: {e}"))?;
    let g = gold.score(pairs).map_err(|e| format!("gold RM: {e}"))?;
    Ok(b.iter()
        .zip(&g)
        .map(|(b, g)| (b.0 - b.1, g.0 - g.1))
        .collect())
}
