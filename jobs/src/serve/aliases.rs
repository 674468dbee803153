//! Labels on a pair apply to its canonical key (issue 28 part 5), in serve as in
//! curate (`conflict_deciders`, `PreferencePair::adopted_label`): a human label posted
//! for a duplicate copy's pair id, a row dedup discards, decides the pair kept for that
//! content when the kept pair has no label of its own; of several labelled copies, the
//! first in input order. The verdict in force is then a function of the label set and
//! the pool alone, whatever order the labels arrived in, so serve's decisions stay
//! those of a from-scratch curate with the same labels.
//!
//! The copies are found once, in the first pass: every valid row's (content key, row,
//! pair key) goes to the worker owning its content key, where the survey's content
//! index names the content's first row; a row that is not the first is a copy of it
//! (`ServeTap`). Only copies are kept (a few per cent of a pool). After the pass, each
//! worker names the kept rows it scored by their pair keys, and every worker holds the
//! whole table (`LabelAliases`).

use rustc_hash::FxHashMap;
use synpref_engine::model::{RowKey, Verdict};
use synpref_engine::side::GoldLabels;

/// (kept row, copy row, copy's pair key) of one duplicate copy, found at the worker
/// owning its content key.
pub type CopyRow = (RowKey, RowKey, u64);

/// (kept pair key, copy row, copy's pair key) of one copy of a scored pair.
pub type ScoredCopy = (u64, RowKey, u64);

/// The copies of this worker's scored pairs among every worker's copies: `scored` is
/// (pair key, row) of the shard's scored pairs.
pub fn copies_of_scored(
    mut copies: Vec<CopyRow>,
    scored: impl Iterator<Item = (u64, RowKey)>,
) -> Vec<ScoredCopy> {
    copies.sort_unstable();
    let mut out = Vec::new();
    for (key, row) in scored {
        let at = copies.partition_point(|c| c.0 < row);
        out.extend(
            copies[at..]
                .iter()
                .take_while(|c| c.0 == row)
                // A copy with the kept pair's own id: its label is the kept pair's own.
                .filter(|c| c.2 != key)
                .map(|c| (key, c.1, c.2)),
        );
    }
    out
}

/// Every scored pair's duplicate copies, the same on every worker.
#[derive(Debug, Default)]
pub struct LabelAliases {
    /// (kept pair key, copy row, copy's pair key), sorted: each scored pair's copies
    /// in input order.
    copies: Vec<ScoredCopy>,
    /// (copy's pair key, kept pair key), sorted: the pairs a label on a copy may decide.
    kept: Vec<(u64, u64)>,
}

impl LabelAliases {
    pub fn new(mut copies: Vec<ScoredCopy>) -> LabelAliases {
        copies.sort_unstable();
        copies.dedup();
        let mut kept: Vec<(u64, u64)> = copies.iter().map(|c| (c.2, c.0)).collect();
        kept.sort_unstable();
        kept.dedup();
        LabelAliases { copies, kept }
    }

    /// The pairs whose verdict a label on `key` may change: `key` itself and the pairs
    /// kept for the contents `key` is a copy of.
    pub fn targets(&self, key: u64) -> impl Iterator<Item = u64> + '_ {
        let at = self.kept.partition_point(|k| k.0 < key);
        std::iter::once(key).chain(
            self.kept[at..]
                .iter()
                .take_while(move |k| k.0 == key)
                .map(|k| k.1),
        )
    }

    /// The verdict in force for the pair `key`: its own label, else the first of its
    /// copies' labels in input order.
    pub fn verdict(&self, key: u64, labels: &GoldLabels) -> Option<Verdict> {
        let own = labels.labels.get(&key);
        let at = self.copies.partition_point(|c| c.0 < key);
        own.or_else(|| {
            self.copies[at..]
                .iter()
                .take_while(|c| c.0 == key)
                .find_map(|c| labels.labels.get(&c.2))
        })
        .map(|l| l.verdict)
    }

    /// The verdict in force for every pair a label in `labels` decides, sorted by key.
    pub fn verdicts(&self, labels: &GoldLabels) -> Vec<(u64, Verdict)> {
        let mut keys: Vec<u64> = labels
            .labels
            .keys()
            .flat_map(|k| self.targets(*k))
            .collect();
        keys.sort_unstable();
        keys.dedup();
        keys.into_iter()
            .filter_map(|k| self.verdict(k, labels).map(|v| (k, v)))
            .collect()
    }

    /// The verdict in force before a batch, for every pair its labels may decide (call
    /// it before the batch is learned; `EpochStart`).
    pub fn before(
        &self,
        batch_keys: impl Iterator<Item = u64>,
        labels: &GoldLabels,
    ) -> FxHashMap<u64, Option<Verdict>> {
        let mut before = FxHashMap::default();
        for key in batch_keys {
            for target in self.targets(key) {
                before
                    .entry(target)
                    .or_insert_with(|| self.verdict(target, labels));
            }
        }
        before
    }

    pub fn len(&self) -> usize {
        self.copies.len()
    }

    pub fn is_empty(&self) -> bool {
        self.copies.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use synpref_engine::hashing::pair_key;
    use synpref_engine::model::GoldLabel;

    fn label(id: &str, verdict: Verdict) -> GoldLabel {
        GoldLabel {
            pair_id: id.to_string(),
            verdict,
            annotator: None,
            labeled_at: None,
            text: None,
        }
    }

    #[test]
    fn a_copys_label_decides_its_kept_pair_unless_the_pair_has_its_own() {
        let (kept, a, b) = (pair_key("kept"), pair_key("copy-a"), pair_key("copy-b"));
        // Copies found at content owners: rows 7 and 5 copy row 1 (scored as "kept").
        let copies = copies_of_scored(
            vec![(RowKey(1), RowKey(7), a), (RowKey(1), RowKey(5), b)],
            [(kept, RowKey(1)), (pair_key("other"), RowKey(2))].into_iter(),
        );
        let aliases = LabelAliases::new(copies);
        assert_eq!(aliases.len(), 2);
        assert_eq!(aliases.targets(a).collect::<Vec<_>>(), vec![a, kept]);
        assert_eq!(aliases.targets(kept).collect::<Vec<_>>(), vec![kept]);
        let mut labels = GoldLabels::default();
        assert_eq!(aliases.verdict(kept, &labels), None);
        labels.insert(label("copy-a", Verdict::Rejected));
        assert_eq!(aliases.verdict(kept, &labels), Some(Verdict::Rejected));
        // Row 5 comes before row 7 in input order: its label is taken first.
        labels.insert(label("copy-b", Verdict::Undecidable));
        assert_eq!(aliases.verdict(kept, &labels), Some(Verdict::Undecidable));
        let before = aliases.before([pair_key("kept")].into_iter(), &labels);
        assert_eq!(before[&kept], Some(Verdict::Undecidable));
        labels.insert(label("kept", Verdict::Chosen));
        assert_eq!(aliases.verdict(kept, &labels), Some(Verdict::Chosen));
        let verdicts = aliases.verdicts(&labels);
        assert!(verdicts.contains(&(kept, Verdict::Chosen)));
        assert!(verdicts.contains(&(a, Verdict::Rejected)));
    }
}
