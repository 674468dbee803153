//! `collect_deciders`: the rows that can decide a conflicting comparison (DESIGN §4
//! `conflicting_labels`), collected on the worker that owns their dedup key, and the
//! table built from them once the survey has indexed every key.
//!
//! A comparison has conflicting labels when it occurs with chosen and rejected swapped
//! (dedup keys `k` and `k ^ 1`, `hashing::dedup_key`). Both copies leave the
//! model-decided path: a human verdict on either decides (the first such row in input
//! order), else LLM-judge votes on either (the first such row), else both are
//! discarded. This module records which rows have a verdict or votes and picks, per
//! conflicting comparison, the row that decides it.
//!
//! Labels on a pair apply to its canonical key (issue 28 part 5): a human label given
//! for a duplicate copy's pair id, which dedup discards, is taken by the row kept for
//! that content (the first in input order) when the kept row has no label of its own;
//! of several labelled copies, the first in input order. The kept row then counts as a
//! human-decided row here too. `serve` keeps the same rule (`serve::aliases`).

use std::cell::RefCell;
use std::rc::Rc;

use rustc_hash::FxHashMap;
use synpref_engine::hashing::dedup_route;
use synpref_engine::model::RowKey;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::Operator;

use crate::index_first::KeyIndex;
use crate::Rows;

/// What can decide a row of a conflicting comparison, in order of precedence.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum Decider {
    /// A human verdict (any, undecidable included: the human has spoken).
    Human = 0,
    /// LLM-judge votes.
    Judges = 1,
}

/// (dedup key, row, what can decide it, pair key) of one row with a verdict or votes.
pub type DeciderRow = (u64, RowKey, Decider, u64);

/// Per conflicting comparison on this worker, the row that decides it; and the kept
/// rows that take a duplicate copy's human label.
#[derive(Default, Debug)]
pub struct ConflictDeciders {
    by_comparison: FxHashMap<u64, RowKey>,
    /// Kept row → pair key of the copy whose label it takes (it has none of its own).
    adopted: FxHashMap<RowKey, u64>,
}

impl ConflictDeciders {
    /// The deciding row of each conflicting comparison in `index` (this worker's part of
    /// the dedup index, sealed) among `rows`, and the kept rows that take a copy's human
    /// label. Only the first row of its orientation can decide: a later copy is
    /// discarded as a duplicate before conflicts are looked at, but its human label
    /// passes to the first row, which then decides as a human-labelled row.
    pub fn build(index: &KeyIndex, rows: &[DeciderRow]) -> ConflictDeciders {
        // Kept rows with a label of their own, and the first labelled copy of the rest.
        let mut own: rustc_hash::FxHashSet<RowKey> = Default::default();
        // Kept row → (copy row, copy's pair key, the content's dedup key).
        let mut first_copy: FxHashMap<RowKey, (RowKey, u64, u64)> = FxHashMap::default();
        for &(key, row, decider, pair_key) in rows {
            let Some(first) = index.first(key) else {
                continue;
            };
            if decider != Decider::Human {
                continue;
            }
            if first == row {
                own.insert(row);
            } else {
                let entry = first_copy.entry(first).or_insert((row, pair_key, key));
                *entry = (*entry).min((row, pair_key, key));
            }
        }
        first_copy.retain(|kept, _| !own.contains(kept));
        let mut by_comparison: FxHashMap<u64, (Decider, RowKey)> = FxHashMap::default();
        let mut consider = |key: u64, row: RowKey, decider: Decider| {
            let entry = by_comparison.entry(key & !1).or_insert((decider, row));
            *entry = (*entry).min((decider, row));
        };
        for &(key, row, decider, _) in rows {
            let first_of_its_orientation = index.first(key) == Some(row);
            let conflicting = index.first(key ^ 1).is_some();
            if first_of_its_orientation && conflicting {
                consider(key, row, decider);
            }
        }
        for (&kept, &(_, _, key)) in &first_copy {
            if index.first(key ^ 1).is_some() {
                consider(key, kept, Decider::Human);
            }
        }
        ConflictDeciders {
            by_comparison: by_comparison
                .into_iter()
                .map(|(k, (_, row))| (k, row))
                .collect(),
            adopted: first_copy
                .into_iter()
                .map(|(kept, (_, pair_key, _))| (kept, pair_key))
                .collect(),
        }
    }

    /// The pair key of the duplicate copy whose human label the kept row `row` takes,
    /// if it takes one.
    pub fn adopted_label(&self, row: RowKey) -> Option<u64> {
        self.adopted.get(&row).copied()
    }

    /// The rows of this worker's part of the dedup index (`index`, sealed) that `dedup`
    /// discards as `conflicting_labels`: the first row of an orientation whose swapped
    /// copy occurs, when it does not decide the comparison; each with the pair key of
    /// the label it takes, if any (`conflict_standby`, for serve).
    pub fn standby_rows(&self, index: &KeyIndex) -> Vec<(RowKey, Option<u64>)> {
        index
            .entries()
            .iter()
            .filter(|(key, row)| index.first(key ^ 1).is_some() && self.decider(*key) != Some(*row))
            .map(|(_, row)| (*row, self.adopted_label(*row)))
            .collect()
    }

    /// (kept row, adopted label's pair key) sorted by row: what a resumable run saves.
    pub fn adopted_rows(&self) -> Vec<(RowKey, u64)> {
        let mut rows: Vec<(RowKey, u64)> = self.adopted.iter().map(|(r, k)| (*r, *k)).collect();
        rows.sort_unstable();
        rows
    }

    /// The row that decides the comparison of dedup key `key`, if any row can.
    pub fn decider(&self, key: u64) -> Option<RowKey> {
        self.by_comparison.get(&(key & !1)).copied()
    }

    /// (comparison key, deciding row) sorted by key: what a resumable run saves.
    pub fn rows(&self) -> Vec<(u64, RowKey)> {
        let mut rows: Vec<(u64, RowKey)> =
            self.by_comparison.iter().map(|(k, r)| (*k, *r)).collect();
        rows.sort_unstable();
        rows
    }

    /// The tables `rows()` and `adopted_rows()` gave.
    pub fn from_rows(rows: Vec<(u64, RowKey)>, adopted: Vec<(RowKey, u64)>) -> ConflictDeciders {
        ConflictDeciders {
            by_comparison: rows.into_iter().collect(),
            adopted: adopted.into_iter().collect(),
        }
    }

    pub fn len(&self) -> usize {
        self.by_comparison.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_comparison.is_empty()
    }
}

pub trait CollectDeciders {
    /// Exchanges each row with a verdict or votes to the worker owning its dedup key
    /// and keeps it there in `into`.
    fn collect_deciders(self, into: Rc<RefCell<Vec<DeciderRow>>>);
}

impl CollectDeciders for Rows<'_, DeciderRow> {
    fn collect_deciders(self, into: Rc<RefCell<Vec<DeciderRow>>>) {
        self.sink(
            Exchange::new(|d: &DeciderRow| dedup_route(d.0)),
            "CollectConflictDeciders",
            move |(input, _)| {
                let mut v = into.borrow_mut();
                input.for_each(|_, data| v.append(data));
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Comparison 8: rows 1 (key 8) and 2 (key 9, swapped), row 3 a duplicate of 1.
    /// Comparison 16: rows 4 and 5, no deciders. Key 32: rows 6 and 7 (a duplicate),
    /// no swapped copy. Pair keys are 100 + the row.
    fn index() -> KeyIndex {
        let mut index = KeyIndex::default();
        for (k, r) in [(8, 1), (9, 2), (8, 3), (16, 4), (17, 5), (32, 6), (32, 7)] {
            index.push(k, RowKey(r));
        }
        index.seal();
        index
    }

    fn row(key: u64, row: u64, decider: Decider) -> DeciderRow {
        (key, RowKey(row), decider, 100 + row)
    }

    #[test]
    fn a_human_verdict_decides_before_judges_and_the_first_row_before_later_ones() {
        let index = index();
        assert_eq!(index.both_orientations(), vec![8, 16]);
        let d = ConflictDeciders::build(
            &index,
            &[
                row(8, 1, Decider::Judges),
                row(9, 2, Decider::Human),
                row(32, 6, Decider::Human), // no conflict
            ],
        );
        assert_eq!(d.decider(8), Some(RowKey(2)));
        assert_eq!(d.decider(9), Some(RowKey(2)));
        assert_eq!(d.decider(16), None);
        assert_eq!(d.decider(32), None);
        assert_eq!(d.len(), 1);
        // Two judge-voted copies: the first in input order decides.
        let d = ConflictDeciders::build(
            &index,
            &[row(9, 2, Decider::Judges), row(8, 1, Decider::Judges)],
        );
        assert_eq!(d.decider(9), Some(RowKey(1)));
        // Judge votes on a duplicate copy stay with it: it never decides.
        let d = ConflictDeciders::build(&index, &[row(8, 3, Decider::Judges)]);
        assert_eq!(d.decider(8), None);
    }

    #[test]
    fn a_kept_row_takes_its_first_labelled_copys_label_unless_it_has_its_own() {
        let index = index();
        // Row 7 copies row 6, which has no label: row 6 takes row 7's.
        let d = ConflictDeciders::build(&index, &[row(32, 7, Decider::Human)]);
        assert_eq!(d.adopted_label(RowKey(6)), Some(107));
        assert_eq!(d.adopted_label(RowKey(7)), None);
        // Row 6's own label comes first.
        let d = ConflictDeciders::build(
            &index,
            &[row(32, 7, Decider::Human), row(32, 6, Decider::Human)],
        );
        assert_eq!(d.adopted_label(RowKey(6)), None);
        // Row 3's human label passes to row 1, which now decides comparison 8 as a
        // human-labelled row, before row 2's (later in input order).
        let d = ConflictDeciders::build(
            &index,
            &[
                row(8, 1, Decider::Judges),
                row(9, 2, Decider::Human),
                row(8, 3, Decider::Human),
            ],
        );
        assert_eq!(d.adopted_label(RowKey(1)), Some(103));
        assert_eq!(d.decider(8), Some(RowKey(1)));
        let saved = ConflictDeciders::from_rows(d.rows(), d.adopted_rows());
        assert_eq!(saved.adopted_label(RowKey(1)), Some(103));
        assert_eq!(saved.decider(9), Some(RowKey(1)));
    }
}
