//! `index_bands`: the LSH band keys of every pair (`minhash`), exchanged by key to the
//! worker that owns it, which keeps (key, row) entries; once the survey has read
//! everything, `BandIndex::candidate_edges` turns each group of rows sharing a key into
//! candidate near-duplicate edges (`near_duplicates` joins them into components).
//!
//! Entries are 16 bytes (key, row) in one vector, sorted once at the end: no hash-table
//! slack and no strings, as the dedup index (`index_first`).

use std::cell::RefCell;
use std::rc::Rc;

use synpref_engine::model::RowKey;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::Operator;

use crate::Rows;

/// This worker's part of the band index.
#[derive(Default, Debug)]
pub struct BandIndex {
    entries: Vec<(u64, RowKey)>,
}

impl BandIndex {
    /// Room for `entries` entries: the index then grows in one allocation, not by
    /// copying itself as it doubles.
    pub fn reserve(&mut self, entries: usize) {
        self.entries.reserve_exact(entries);
    }

    pub fn push(&mut self, key: u64, row: RowKey) {
        self.entries.push((key, row));
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// For every key shared by two or more rows, an edge from the group's first row
    /// (input order) to each other row: (first, other), sorted and distinct. A star
    /// per group connects it as well as every pair would, with g − 1 edges, not
    /// g(g − 1)/2. Consumes the entries.
    pub fn candidate_edges(&mut self) -> Vec<(RowKey, RowKey)> {
        let mut entries = std::mem::take(&mut self.entries);
        entries.sort_unstable();
        let mut edges = Vec::new();
        for group in entries.chunk_by(|a, b| a.0 == b.0) {
            let first = group[0].1;
            edges.extend(
                group[1..]
                    .iter()
                    .filter(|e| e.1 != first)
                    .map(|e| (first, e.1)),
            );
        }
        edges.sort_unstable();
        edges.dedup();
        edges
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
    fn each_group_is_a_star_from_its_first_row() {
        let mut index = BandIndex::default();
        for (k, r) in [(7, 5), (7, 2), (7, 9), (3, 4), (3, 4), (1, 8), (3, 2)] {
            index.push(k, RowKey(r));
        }
        // Key 7: rows 2, 5, 9 → (2,5), (2,9); key 3: rows 2, 4 → (2,4); key 1 alone.
        assert_eq!(
            index.candidate_edges(),
            vec![
                (RowKey(2), RowKey(4)),
                (RowKey(2), RowKey(5)),
                (RowKey(2), RowKey(9))
            ]
        );
    }
}
