//! `score`: rewards of both replies under the best RM and the gold RM, and the
//! Bradley–Terry probabilities p = σ(r(x, y_w) − r(x, y_l)) (DESIGN §1).

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use synpref_engine::model::PreferencePair;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;

use crate::models::features::{category_hash, reply_text, response_features, SparseFeatures};
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

/// Rewards of one reply under two models whose weights are interleaved.
#[inline]
fn dot2(w: &[[f32; 2]], f: &SparseFeatures) -> [f32; 2] {
    let mut s = [0.0f32; 2];
    for &i in &f.indices {
        let x = w[i as usize];
        s[0] += x[0];
        s[1] += x[1];
    }
    [s[0] * f.value, s[1] * f.value]
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

impl<'scope> Score<'scope> for Rows<'scope, PreferencePair> {
    fn score(
        self,
        best: Arc<dyn RewardModel>,
        gold: Arc<dyn RewardModel>,
        failure: ModelFailure,
    ) -> Rows<'scope, ScoredPair> {
        // Both built-in with one feature space: hash each reply once, and read both
        // models' weights from one interleaved array, so that each feature costs one
        // cache miss instead of two (the weights do not fit in L2).
        let paired: Option<Vec<[f32; 2]>> = match (best.as_hashed(), gold.as_hashed()) {
            (Some(b), Some(g)) if b.feature_bits == g.feature_bits => Some(
                b.weights
                    .iter()
                    .zip(&g.weights)
                    .map(|(x, y)| [*x, *y])
                    .collect(),
            ),
            _ => None,
        };
        let bits = best.as_hashed().map(|b| b.feature_bits).unwrap_or(0);
        self.unary(Pipeline, "Score", move |_, _| {
            let mut c = SparseFeatures::default();
            let mut r = SparseFeatures::default();
            move |input, output| {
                input.for_each(|time, data| {
                    let mut session = output.session(&time);
                    let scores: Vec<(f32, f32)> = match &paired {
                        Some(w) => data
                            .iter()
                            .map(|p| {
                                let cat = category_hash(p.attributes.task_category.as_deref());
                                response_features(
                                    &reply_text(&p.chosen, p.implicit_prompt),
                                    cat,
                                    bits,
                                    &mut c,
                                );
                                response_features(
                                    &reply_text(&p.rejected, p.implicit_prompt),
                                    cat,
                                    bits,
                                    &mut r,
                                );
                                let rc = dot2(w, &c);
                                let rr = dot2(w, &r);
                                (rc[0] - rr[0], rc[1] - rr[1])
                            })
                            .collect(),
                        None => {
                            if failure.borrow().is_some() {
                                data.clear();
                                return;
                            }
                            let refs: Vec<&PreferencePair> = data.iter().collect();
                            let both = best
                                .score(&refs)
                                .map_err(|e| format!("best RM: {e}"))
                                .and_then(|b| {
                                    gold.score(&refs)
                                        .map(|g| (b, g))
                                        .map_err(|e| format!("gold RM: {e}"))
                                });
                            let (sb, sg) = match both {
                                Ok(v) => v,
                                Err(e) => {
                                    *failure.borrow_mut() = Some(e);
                                    data.clear();
                                    return;
                                }
                            };
                            sb.iter()
                                .zip(&sg)
                                .map(|(b, g)| (b.0 - b.1, g.0 - g.1))
                                .collect()
                        }
                    };
                    for (pair, (m_best, m_gold)) in data.drain(..).zip(scores) {
                        session.give(ScoredPair {
                            pair,
                            m_best,
                            m_gold,
                        });
                    }
                });
            }
        })
    }
}
