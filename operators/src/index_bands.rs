//! `index_bands`: the LSH band keys of every pair (`minhash`), exchanged by key to the
//! worker that owns it, which keeps (key, row) entries; once the survey has read
//! everything, `BandIndex::candidate_edges` turns each group of rows sharing a key into
//! candidate near-duplicate edges (`near_duplicates` joins them into components).
//!
//! Entries are 16 bytes (key, row), with no hash-table slack and no strings, as the
//! dedup index (`index_first`). They are held in `sorted_runs::SortedRuns`: under the
//! memory budget (`--memory-budget`) the index spills sorted runs to local disk and
//! reads them back merged, so its memory stays bounded whatever the pool's size, and
//! the edges it finds do not depend on how much was spilled.

use std::cell::RefCell;
use std::path::Path;
use std::rc::Rc;

use synpref_engine::model::RowKey;
use synpref_engine::Result;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::Operator;

use crate::sorted_runs::SortedRuns;
use crate::Rows;

/// This worker's part of the band index.
#[derive(Debug)]
pub struct BandIndex {
    entries: SortedRuns,
}

impl Default for BandIndex {
    /// An index that never spills (tests and printed graphs).
    fn default() -> Self {
        BandIndex::new(usize::MAX, None)
    }
}

impl BandIndex {
    /// An index holding at most `capacity` entries in memory, spilling to `dir`.
    pub fn new(capacity: usize, dir: Option<&Path>) -> BandIndex {
        BandIndex {
            entries: SortedRuns::new(capacity, dir),
        }
    }

    /// Room for `entries` entries (up to the memory cap): the index then grows in one
    /// allocation, not by copying itself as it doubles.
    pub fn reserve(&mut self, entries: usize) {
        self.entries.reserve(entries);
    }

    pub fn push(&mut self, key: u64, row: RowKey) {
        self.entries.push(key, row);
    }

    pub fn len(&self) -> u64 {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Sorted runs spilled to disk, and their bytes.
    pub fn spilled(&self) -> (usize, u64) {
        (self.entries.run_count(), self.entries.spilled_bytes())
    }

    /// For every key shared by two or more rows, an edge from the group's first row
    /// (input order) to each other row: (first, other), sorted and distinct. A star
    /// per group connects it as well as every pair would, with g − 1 edges, not
    /// g(g − 1)/2. Consumes the entries, reading back what was spilled.
    pub fn candidate_edges(self) -> Result<Vec<(RowKey, RowKey)>> {
        let mut edges = Vec::new();
        // The merged stream is in (key, row) order: a group's first entry has its
        // least row.
        let mut group: Option<(u64, RowKey)> = None;
        self.entries.merge(|(key, row)| match group {
            Some((k, first)) if k == key => {
                if row != first {
                    edges.push((first, row));
                }
            }
            _ => group = Some((key, row)),
        })?;
        edges.sort_unstable();
        edges.dedup();
        Ok(edges)
    }
}

pub trait IndexBands {
    /// Exchanges (band key, row) entries by key and keeps them in `index`.
    fn index_bands(self, index: Rc<RefCell<BandIndex>>);
}

impl IndexBands for Rows<'_, (u64, RowKey)> {
    fn index_bands(self, index: Rc<RefCell<BandIndex>>) {
        self.sink(
            Exchange::new(|e: &(u64, RowKey)| e.0),
            "IndexBands",
            move |(input, _frontier)| {
                let mut index = index.borrow_mut();
                input.for_each(|_time, data| {
                    for (key, row) in data.drain(..) {
                        index.push(key, row);
                    }
                });
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_group_is_a_star_from_its_first_row_spilled_or_not() {
        // Capacity 1 and 2 spill runs to disk; the answer must not change.
        for capacity in [1, 2, 3, usize::MAX] {
            let mut index = BandIndex::new(capacity, None);
            for (k, r) in [(7, 5), (7, 2), (7, 9), (3, 4), (3, 4), (1, 8), (3, 2)] {
                index.push(k, RowKey(r));
            }
            // Key 7: rows 2, 5, 9 → (2,5), (2,9); key 3: rows 2, 4 → (2,4); key 1 alone.
            assert_eq!(
                index.candidate_edges().unwrap(),
                vec![
                    (RowKey(2), RowKey(4)),
                    (RowKey(2), RowKey(5)),
                    (RowKey(2), RowKey(9))
                ],
                "capacity {capacity}"
            );
        }
    }
}
