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

/// (dedup key, row, what can decide it) of one row with a verdict or votes.
pub type DeciderRow = (u64, RowKey, Decider);

/// Per conflicting comparison on this worker, the row that decides it.
#[derive(Default, Debug)]
pub struct ConflictDeciders {
    by_comparison: FxHashMap<u64, RowKey>,
}

impl ConflictDeciders {
    /// The deciding row of each conflicting comparison in `index` (this worker's part of
    /// the dedup index, sealed) among `rows`. Only the first row of its orientation can
    /// decide: a later copy is discarded as a duplicate before conflicts are looked at.
    pub fn build(index: &KeyIndex, rows: &[DeciderRow]) -> ConflictDeciders {
        let mut by_comparison: FxHashMap<u64, (Decider, RowKey)> = FxHashMap::default();
        for &(key, row, decider) in rows {
            let first_of_its_orientation = index.first(key) == Some(row);
            let conflicting = index.first(key ^ 1).is_some();
            if !(first_of_its_orientation && conflicting) {
                continue;
            }
            let entry = by_comparison.entry(key & !1).or_insert((decider, row));
            *entry = (*entry).min((decider, row));
        }
        ConflictDeciders {
            by_comparison: by_comparison
                .into_iter()
                .map(|(k, (_, row))| (k, row))
                .collect(),
        }
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

    /// The table `rows()` gave.
    pub fn from_rows(rows: Vec<(u64, RowKey)>) -> ConflictDeciders {
        ConflictDeciders {
            by_comparison: rows.into_iter().collect(),
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

    #[test]
    fn a_human_verdict_decides_before_judges_and_the_first_row_before_later_ones() {
        let mut index = KeyIndex::default();
        // Comparison 8: rows 1 (key 8) and 2 (key 9, swapped), row 3 a duplicate of 1.
        // Comparison 16: rows 4 and 5, no deciders. Key 32: row 6, no swapped copy.
        for (k, r) in [(8, 1), (9, 2), (8, 3), (16, 4), (17, 5), (32, 6)] {
            index.push(k, RowKey(r));
        }
        index.seal();
        assert_eq!(index.both_orientations(), vec![8, 16]);
        let rows = [
            (8, RowKey(1), Decider::Judges),
            (9, RowKey(2), Decider::Human),
            (8, RowKey(3), Decider::Human), // a duplicate never decides
            (32, RowKey(6), Decider::Human), // no conflict
        ];
        let d = ConflictDeciders::build(&index, &rows);
        assert_eq!(d.decider(8), Some(RowKey(2)));
        assert_eq!(d.decider(9), Some(RowKey(2)));
        assert_eq!(d.decider(16), None);
        assert_eq!(d.decider(32), None);
        assert_eq!(d.len(), 1);
        // Two judge-voted copies: the first in input order decides.
        let d = ConflictDeciders::build(
            &index,
            &[
                (9, RowKey(2), Decider::Judges),
                (8, RowKey(1), Decider::Judges),
            ],
        );
        assert_eq!(d.decider(9), Some(RowKey(1)));
    }
}
