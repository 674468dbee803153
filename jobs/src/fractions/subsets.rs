//! Nested subsets by a seeded hash of pair_id (issue 14): every pair gets, per seed, a
//! rank key (xxh3 of its pair id under the seed's salt, then its content hash to order
//! pairs sharing an id). The curated subset at fraction f holds the curated pairs whose
//! rank key, read as a number in [0, 1), is below f; the raw subset of the same
//! (fraction, seed) holds the first as many raw pairs in rank-key order. So fraction f
//! is inside fraction f' for f < f', the same pairs are chosen on any machine and with
//! any number of workers, and one pair's change touches only the subsets that hold it
//! (and the raw subsets whose size follows a curated one that changed size).

use synpref_engine::model::PreferencePair;
use xxhash_rust::xxh3::{xxh3_64_with_seed, Xxh3};

/// Salt of the subset hash for seed 0 (any fixed value; seed s uses SALT + s).
const SUBSET_SALT: u64 = 0x5a17_f4ac_0000_0000;

/// A pair's place in seed `seed`'s order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RankKey {
    pub hash: u64,
    pub content: u128,
}

impl RankKey {
    pub fn of(pair: &PreferencePair, seed: u32) -> RankKey {
        RankKey {
            hash: xxh3_64_with_seed(
                pair.pair_id.as_bytes(),
                SUBSET_SALT.wrapping_add(seed as u64),
            ),
            content: pair.content_hash,
        }
    }

    /// The key as a number in [0, 1): the pair is in every curated subset of a larger
    /// fraction.
    pub fn unit(self) -> f64 {
        (self.hash >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Whether the pair belongs to the curated subset at `fraction` (every pair at 1:
    /// `unit` is below 1).
    pub fn within(self, fraction: f64) -> bool {
        self.unit() < fraction
    }
}

/// A subset's content key: the pairs in rank order, each as its content hash and
/// whether it is held swapped (a `human_corrected` row of a curate output: its training
/// example is the verdict's orientation). Two subsets with the same key train the same
/// model.
pub fn content_key<'a>(pairs: impl Iterator<Item = &'a PreferencePair>) -> u128 {
    let mut h = Xxh3::new();
    let mut n = 0u64;
    for p in pairs {
        h.update(&p.content_hash.to_le_bytes());
        h.update(&[u8::from(p.corrected)]);
        n += 1;
    }
    h.update(&n.to_le_bytes());
    h.digest128()
}

/// The n smallest rank keys seen, with their pairs: the raw pool streams through it
/// once and only the candidates for the largest raw subset stay in memory.
pub struct SmallestN<T> {
    limit: usize,
    heap: std::collections::BinaryHeap<(RankKey, Ordered<T>)>,
}

/// A payload that takes no part in the heap's order (rank keys are unique up to
/// identical content, where either copy will do).
pub struct Ordered<T>(pub T);

impl<T> PartialEq for Ordered<T> {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}
impl<T> Eq for Ordered<T> {}
impl<T> PartialOrd for Ordered<T> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl<T> Ord for Ordered<T> {
    fn cmp(&self, _: &Self) -> std::cmp::Ordering {
        std::cmp::Ordering::Equal
    }
}

impl<T> SmallestN<T> {
    pub fn new(limit: usize) -> Self {
        SmallestN {
            limit,
            heap: std::collections::BinaryHeap::with_capacity(limit.min(1 << 20) + 1),
        }
    }

    pub fn offer(&mut self, key: RankKey, item: impl FnOnce() -> T) {
        if self.limit == 0 {
            return;
        }
        if self.heap.len() < self.limit {
            self.heap.push((key, Ordered(item())));
        } else if self.heap.peek().is_some_and(|(top, _)| key < *top) {
            self.heap.pop();
            self.heap.push((key, Ordered(item())));
        }
    }

    /// The kept items in rank order.
    pub fn into_sorted(self) -> Vec<(RankKey, T)> {
        let mut v: Vec<(RankKey, T)> = self.heap.into_iter().map(|(k, o)| (k, o.0)).collect();
        v.sort_by_key(|(k, _)| *k);
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: u64) -> RankKey {
        RankKey {
            hash: i.wrapping_mul(0x9E37_79B9_7F4A_7C15),
            content: i as u128,
        }
    }

    #[test]
    fn smallest_n_keeps_the_n_smallest_in_order() {
        let mut s = SmallestN::new(10);
        for i in 0..1000u64 {
            s.offer(key(i), || i);
        }
        let got: Vec<RankKey> = s.into_sorted().into_iter().map(|(k, _)| k).collect();
        let mut all: Vec<RankKey> = (0..1000).map(key).collect();
        all.sort();
        assert_eq!(got, all[..10]);
    }

    #[test]
    fn curated_subsets_are_nested() {
        let keys: Vec<RankKey> = (0..10_000).map(key).collect();
        let fractions = [0.01, 0.05, 0.2, 0.5, 1.0];
        for w in fractions.windows(2) {
            for k in &keys {
                if k.within(w[0]) {
                    assert!(k.within(w[1]));
                }
            }
        }
        let at_5 = keys.iter().filter(|k| k.within(0.05)).count();
        assert!((400..600).contains(&at_5), "{at_5}");
    }
}
