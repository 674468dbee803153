//! Which copy decides each conflicting comparison, kept current as labels arrive
//! (DESIGN §4 `conflicting_labels`; issue 28 part 5), as curate's `conflict_deciders`
//! decides it from scratch: among the first rows of the comparison's two orientations,
//! a row with a human verdict (its own, or one it takes from a duplicate copy,
//! `aliases`) before a row with judge votes, the first in input order among equals;
//! every other copy is `conflicting_labels`, and all are when no row can decide.
//!
//! The rows are found in the first pass beside the copies (`ServeTap`): the first row
//! of a content whose swapped content also occurs. They do not depend on the labels,
//! so the table is built once and is the same on every worker. Serve scores the
//! copies that do not decide at start as well (`conflict_standby`), so that a later
//! label can let one decide.

use serde::{Deserialize, Serialize};
use synpref_engine::model::RowKey;
use synpref_engine::side::JudgeVotes;

/// (comparison key, row, pair key) of the first row of one orientation of a
/// conflicting comparison, found at the worker owning its content key.
pub type ConflictRow = (u64, RowKey, u64);

/// One row of the table: the capture's row and whether judge votes could decide it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
struct Entry {
    comparison: u64,
    row: RowKey,
    pair_key: u64,
    judged: bool,
}

/// Every conflicting comparison's deciding candidates.
#[derive(Debug, Default)]
pub struct ConflictTable {
    /// Sorted by comparison, then row (input order).
    entries: Vec<Entry>,
    /// (pair key, comparison), sorted.
    by_key: Vec<(u64, u64)>,
}

impl ConflictTable {
    /// The table from every worker's rows; `judges` says which rows judge votes could
    /// decide (`JudgeVotes::agree_key`, as curate's survey asks).
    pub fn new(rows: Vec<ConflictRow>, judges: Option<&JudgeVotes>) -> ConflictTable {
        let mut entries: Vec<Entry> = rows
            .into_iter()
            .map(|(comparison, row, pair_key)| Entry {
                comparison,
                row,
                pair_key,
                judged: judges.is_some_and(|j| j.agree_key(pair_key).is_some()),
            })
            .collect();
        entries.sort_unstable();
        entries.dedup();
        let mut by_key: Vec<(u64, u64)> =
            entries.iter().map(|e| (e.pair_key, e.comparison)).collect();
        by_key.sort_unstable();
        by_key.dedup();
        ConflictTable { entries, by_key }
    }

    /// (pair key, row) of every row in the table: the rows whose duplicate copies'
    /// labels count too (`aliases`).
    pub fn rows(&self) -> impl Iterator<Item = (u64, RowKey)> + '_ {
        self.entries.iter().map(|e| (e.pair_key, e.row))
    }

    fn of(&self, comparison: u64) -> &[Entry] {
        let at = self.entries.partition_point(|e| e.comparison < comparison);
        let end = at + self.entries[at..].partition_point(|e| e.comparison == comparison);
        &self.entries[at..end]
    }

    fn comparisons(&self, key: u64) -> impl Iterator<Item = u64> + '_ {
        let at = self.by_key.partition_point(|k| k.0 < key);
        self.by_key[at..]
            .iter()
            .take_while(move |k| k.0 == key)
            .map(|k| k.1)
    }

    /// The row deciding `comparison`, given which pair keys have a human verdict.
    fn decider(&self, comparison: u64, labelled: &impl Fn(u64) -> bool) -> Option<RowKey> {
        self.of(comparison)
            .iter()
            .filter_map(|e| {
                if labelled(e.pair_key) {
                    Some((0, e.row))
                } else if e.judged {
                    Some((1, e.row))
                } else {
                    None
                }
            })
            .min()
            .map(|(_, row)| row)
    }

    /// Whether the row `row` with pair key `key` is a copy of a conflicting comparison
    /// that does not decide it.
    pub fn outvoted(&self, key: u64, row: RowKey, labelled: impl Fn(u64) -> bool) -> bool {
        self.comparisons(key).any(|c| {
            self.of(c).iter().any(|e| e.row == row) && self.decider(c, &labelled) != Some(row)
        })
    }

    /// Whether some row with pair key `key` is an outvoted copy (for keys whose row is
    /// not at hand: the self-measurement).
    pub fn outvoted_key(&self, key: u64, labelled: impl Fn(u64) -> bool) -> bool {
        self.comparisons(key).any(|c| {
            let decider = self.decider(c, &labelled);
            self.of(c)
                .iter()
                .any(|e| e.pair_key == key && decider != Some(e.row))
        })
    }

    /// The pair keys of every row of the comparisons `key` is in: those whose decision
    /// a label on `key` may change.
    pub fn partners(&self, key: u64) -> impl Iterator<Item = u64> + '_ {
        self.comparisons(key)
            .flat_map(move |c| self.of(c).iter().map(|e| e.pair_key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_human_verdict_decides_before_judges_and_the_first_row_before_later_ones() {
        // Comparison 8: rows 1 (pair key 11) and 2 (pair key 12).
        let table = ConflictTable::new(vec![(8, RowKey(2), 12), (8, RowKey(1), 11)], None);
        let none = |_: u64| false;
        assert!(table.outvoted(11, RowKey(1), none), "no row can decide");
        assert!(table.outvoted(12, RowKey(2), none));
        let second = |k: u64| k == 12;
        assert!(table.outvoted(11, RowKey(1), second));
        assert!(!table.outvoted(12, RowKey(2), second));
        assert!(table.outvoted_key(11, second));
        let both = |k: u64| k == 11 || k == 12;
        assert!(
            !table.outvoted(11, RowKey(1), both),
            "the first in input order"
        );
        assert!(table.outvoted(12, RowKey(2), both));
        let mut partners: Vec<u64> = table.partners(12).collect();
        partners.sort();
        assert_eq!(partners, vec![11, 12]);
        assert_eq!(table.partners(99).count(), 0);
        assert!(!table.outvoted(99, RowKey(9), none), "no conflict");
    }
}
