//! Which pairs a retrained linear gold RM can move across the threshold.
//!
//! A linear RM scores a pair by its margin m = w·d, d = φ(y_w) − φ(y_l) (the built-in
//! hashed model and the encoder heads are both linear in their weights). When the
//! weights move from w to w', Cauchy–Schwarz bounds the move of every margin:
//! |w'·d − w·d| ≤ ‖w' − w‖·‖d‖. A pair whose margin lies farther than that from the
//! threshold t = logit(τ) keeps its side of the threshold, hence its decision, and
//! need not be scored again.
//!
//! `RescoreIndex` makes this cheap over many epochs. It keeps the running sum D of
//! the weight moves ‖Δw‖ (by the triangle inequality, ‖w_now − w_then‖ ≤ D_now −
//! D_then), and, per pair, the drift at which the pair could first reach the
//! threshold: slack = D_then + (|m − t| − ε)/‖d‖. The pairs are ordered by slack in a
//! heap, so an epoch pops exactly the pairs with slack ≤ D_now, and re-scores those.
//!
//! ε covers floating point: margins are f32 sums of a few hundred terms of weights of
//! order one, whose rounding error is below 1e-4 (n·u·Σ|w_i|·|d_i| with n ≈ 600 terms
//! and u = 2⁻²⁴); ε is 50× that, so that the bound holds for computed margins, not
//! only for exact ones. Slacks are stored as f32 rounded down, so a pair can only be
//! re-scored early, never late.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use super::features::SparseFeatures;

/// Slack for floating-point rounding of stored and fresh margins (see module docs).
pub const MARGIN_ROUNDING: f64 = 5e-3;

/// ‖φ(y_w) − φ(y_l)‖ for the built-in model's sparse features, rounded up. Indices may
/// repeat (the model sums a weight once per occurrence), so occurrences are counted.
pub fn sparse_diff_norm(winner: &SparseFeatures, loser: &SparseFeatures) -> f32 {
    let mut a = winner.indices.clone();
    let mut b = loser.indices.clone();
    a.sort_unstable();
    b.sort_unstable();
    let (va, vb) = (winner.value as f64, loser.value as f64);
    let (mut i, mut j, mut sum) = (0, 0, 0.0f64);
    while i < a.len() || j < b.len() {
        let k = match (a.get(i), b.get(j)) {
            (Some(x), Some(y)) => *x.min(y),
            (Some(x), None) => *x,
            (None, Some(y)) => *y,
            (None, None) => unreachable!(),
        };
        let (mut ca, mut cb) = (0.0f64, 0.0f64);
        while a.get(i) == Some(&k) {
            ca += 1.0;
            i += 1;
        }
        while b.get(j) == Some(&k) {
            cb += 1.0;
            j += 1;
        }
        let d = ca * va - cb * vb;
        sum += d * d;
    }
    round_up(sum.sqrt())
}

/// ‖d‖ for dense features, rounded up.
pub fn dense_norm(d: &[f32]) -> f32 {
    round_up(
        d.iter()
            .map(|x| (*x as f64) * (*x as f64))
            .sum::<f64>()
            .sqrt(),
    )
}

/// ‖w' − w‖, rounded up.
pub fn weight_drift(old: &[f32], new: &[f32]) -> f64 {
    assert_eq!(old.len(), new.len(), "weights of one model family");
    let s: f64 = old
        .iter()
        .zip(new)
        .map(|(a, b)| {
            let d = *b as f64 - *a as f64;
            d * d
        })
        .sum();
    s.sqrt() * (1.0 + 1e-9)
}

fn round_up(x: f64) -> f32 {
    let f = x as f32;
    if (f as f64) < x {
        f.next_up()
    } else {
        f
    }
}

fn round_down(x: f64) -> f32 {
    let f = x as f32;
    if (f as f64) > x {
        f.next_down()
    } else {
        f
    }
}

/// The pairs of a pool ordered by the drift at which each could cross the threshold.
#[derive(Debug, Default)]
pub struct RescoreIndex {
    heap: BinaryHeap<Reverse<(OrderedSlack, u32)>>,
    /// Running sum of the weight moves so far.
    drift: f64,
    threshold_logit: f64,
}

/// A non-negative f32 ordered by its bits (non-negative floats order as integers).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct OrderedSlack(u32);

impl RescoreIndex {
    /// An empty index for threshold τ (margins are compared with logit τ).
    pub fn new(threshold: f64) -> Self {
        RescoreIndex {
            heap: BinaryHeap::new(),
            drift: 0.0,
            threshold_logit: (threshold / (1.0 - threshold)).ln(),
        }
    }

    /// The drift at which a pair scored now with `margin` and feature-difference norm
    /// `norm` could first reach the threshold (infinite when it never can).
    pub fn slack(&self, margin: f32, norm: f32) -> f32 {
        let gap = (margin as f64 - self.threshold_logit).abs() - MARGIN_ROUNDING;
        if gap <= 0.0 {
            return round_down(self.drift).max(0.0);
        }
        if norm <= 0.0 {
            return f32::INFINITY;
        }
        round_down(self.drift + gap / norm as f64)
    }

    /// Adds pair `index`, just scored with `margin`, to the index.
    pub fn insert(&mut self, index: u32, margin: f32, norm: f32) {
        let s = self.slack(margin, norm);
        if s.is_finite() {
            self.heap.push(Reverse((OrderedSlack(s.to_bits()), index)));
        }
    }

    /// The weights moved by `delta` (‖Δw‖): returns the pairs that may now be on the
    /// other side of the threshold, removed from the index (re-insert them once
    /// re-scored), in index order.
    pub fn advance(&mut self, delta: f64) -> Vec<u32> {
        self.drift += delta;
        let mut out = Vec::new();
        while let Some(Reverse((OrderedSlack(bits), index))) = self.heap.peek().copied() {
            if f32::from_bits(bits) as f64 > self.drift {
                break;
            }
            self.heap.pop();
            out.push(index);
        }
        out.sort_unstable();
        out
    }

    /// Removes and returns every indexed pair (for an epoch that re-scores them all).
    pub fn take_all(&mut self) -> Vec<u32> {
        let mut out: Vec<u32> = self.heap.drain().map(|Reverse((_, i))| i).collect();
        out.sort_unstable();
        out
    }

    pub fn drift(&self) -> f64 {
        self.drift
    }

    /// Every indexed pair's slack (for saving; pairs not listed never need re-scoring).
    pub fn entries(&self) -> Vec<(u32, f32)> {
        self.heap
            .iter()
            .map(|Reverse((OrderedSlack(bits), i))| (*i, f32::from_bits(*bits)))
            .collect()
    }

    /// An index as saved: its running drift and its pairs' slacks.
    pub fn restore(threshold: f64, drift: f64, entries: &[(u32, f32)]) -> Self {
        let mut idx = RescoreIndex::new(threshold);
        idx.drift = drift;
        idx.heap = entries
            .iter()
            .map(|(i, s)| Reverse((OrderedSlack(s.to_bits()), *i)))
            .collect();
        idx
    }

    pub fn len(&self) -> usize {
        self.heap.len()
    }

    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    /// Bytes of heap memory held per indexed pair.
    pub const BYTES_PER_PAIR: usize = std::mem::size_of::<Reverse<(OrderedSlack, u32)>>();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::builtin::HashedBtModel;
    use crate::models::features::response_features;
    use rand::{Rng, SeedableRng};

    fn random_text(rng: &mut impl Rng, words: usize) -> String {
        (0..words)
            .map(|_| format!("w{}", rng.random_range(0..400)))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// A random pair's features: two replies of 1–299 words from 400.
    fn random_pair(rng: &mut impl Rng, bits: u32) -> (SparseFeatures, SparseFeatures) {
        let mut c = SparseFeatures::default();
        let mut r = SparseFeatures::default();
        let n1 = rng.random_range(1..300);
        let n2 = rng.random_range(1..300);
        response_features(&random_text(rng, n1), 0, bits, &mut c);
        response_features(&random_text(rng, n2), 0, bits, &mut r);
        (c, r)
    }

    /// The bound holds for computed margins under randomised weights and moves.
    #[test]
    fn margin_moves_stay_within_the_bound_for_random_weights() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let bits = 12;
        for trial in 0..200 {
            let (c, r) = random_pair(&mut rng, bits);
            let mut old = HashedBtModel::zero(bits);
            let scale = [0.01f32, 0.3, 2.0][trial % 3];
            for w in old.weights.iter_mut() {
                *w = rng.random_range(-scale..scale);
            }
            let mut new = old.clone();
            let sparse_move = trial % 2 == 0;
            for w in new.weights.iter_mut() {
                if !sparse_move || rng.random_bool(0.01) {
                    *w += rng.random_range(-scale..scale) * 0.1;
                }
            }
            let m_old = old.reward(&c) - old.reward(&r);
            let m_new = new.reward(&c) - new.reward(&r);
            let bound = weight_drift(&old.weights, &new.weights) * sparse_diff_norm(&c, &r) as f64;
            let moved = (m_new as f64 - m_old as f64).abs();
            assert!(
                moved <= bound + MARGIN_ROUNDING,
                "trial {trial}: margin moved {moved} > bound {bound}"
            );
        }
    }

    #[test]
    fn sparse_norm_counts_repeated_and_shared_indices() {
        let a = SparseFeatures {
            indices: vec![1, 2, 2],
            value: 0.5,
        };
        let b = SparseFeatures {
            indices: vec![2, 3],
            value: 1.0,
        };
        // d = {1: 0.5, 2: 1.0 − 1.0, 3: −1.0}
        let n = sparse_diff_norm(&a, &b) as f64;
        assert!((n - (0.25f64 + 1.0).sqrt()).abs() < 1e-6);
    }

    /// The index pops a pair no later than the drift at which its decision could
    /// change, and never a pair that is still provably safe.
    #[test]
    fn index_pops_pairs_whose_bound_reaches_the_threshold() {
        let mut idx = RescoreIndex::new(0.5);
        idx.insert(0, 1.0, 1.0); // crosses after drift ≈ 1
        idx.insert(1, -0.2, 2.0); // after ≈ 0.1
        idx.insert(2, 0.001, 1.0); // within rounding: at any drift
        idx.insert(3, 5.0, 0.0); // never
        assert_eq!(idx.len(), 3);
        assert_eq!(idx.advance(0.0), vec![2]);
        assert_eq!(idx.advance(0.09), Vec::<u32>::new());
        assert_eq!(idx.advance(0.02), vec![1]);
        // Re-scored at drift 0.11 with a new margin: slack measured from now.
        idx.insert(1, -0.5, 1.0);
        assert_eq!(idx.advance(0.4), Vec::<u32>::new());
        assert_eq!(idx.advance(0.5), vec![0, 1]);
        assert!(idx.is_empty());
    }

    /// Oracle over many epochs: the pairs the index does not return keep their side
    /// of the threshold under the current weights, computed from scratch, whatever
    /// the mix of sparse and dense, small and large moves.
    #[test]
    fn pairs_left_in_the_index_never_change_side_over_many_epochs() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
        let bits = 10;
        let pairs: Vec<_> = (0..60).map(|_| random_pair(&mut rng, bits)).collect();
        let mut model = HashedBtModel::zero(bits);
        for w in model.weights.iter_mut() {
            *w = rng.random_range(-0.05f32..0.05);
        }
        let margin = |m: &HashedBtModel, (c, r): &(SparseFeatures, SparseFeatures)| {
            m.reward(c) - m.reward(r)
        };
        let mut idx = RescoreIndex::new(0.5);
        let mut last: Vec<f32> = pairs.iter().map(|p| margin(&model, p)).collect();
        for (i, p) in pairs.iter().enumerate() {
            idx.insert(i as u32, last[i], sparse_diff_norm(&p.0, &p.1));
        }
        let (mut checked, mut popped) = (0usize, 0usize);
        for epoch in 0..80 {
            let old = model.weights.clone();
            if epoch % 2 == 0 {
                // A training step's move: along one pair's d (its winner's features up,
                // its loser's down), which carries that pair, and the pairs sharing its
                // n-grams, toward or across the threshold.
                let (c, r) = &pairs[rng.random_range(0..pairs.len())];
                let step = rng.random_range(-0.3f32..0.3);
                for i in &c.indices {
                    model.weights[*i as usize] += step * c.value;
                }
                for i in &r.indices {
                    model.weights[*i as usize] -= step * r.value;
                }
            } else {
                let (share, scale) = [(0.01, 0.05f32), (1.0, 0.002)][epoch % 4 / 2];
                for w in model.weights.iter_mut() {
                    if rng.random_bool(share) {
                        *w += rng.random_range(-scale..scale);
                    }
                }
            }
            let due = idx.advance(weight_drift(&old, &model.weights));
            popped += due.len();
            for (i, p) in pairs.iter().enumerate() {
                let now = margin(&model, p);
                if due.binary_search(&(i as u32)).is_ok() {
                    last[i] = now;
                    idx.insert(i as u32, now, sparse_diff_norm(&p.0, &p.1));
                } else if (last[i] as f64).abs() > MARGIN_ROUNDING {
                    checked += 1;
                    assert_eq!(
                        now > 0.0,
                        last[i] > 0.0,
                        "epoch {epoch}, pair {i}: left in the index but crossed ({} → {now})",
                        last[i]
                    );
                }
            }
        }
        assert!(
            checked > 500 && popped > 0,
            "checked {checked}, popped {popped}"
        );
    }
}
