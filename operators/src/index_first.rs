//! `index_first`: records, for each key, the first row (least `RowKey`) that has it, on
//! the worker that owns the key. The survey pass builds two such indexes (content hash
//! and pair id); the curate pass looks them up in `dedup` and `unique_pair_ids`, so the
//! row kept among duplicates is the first in input order whatever the worker count.

use std::cell::RefCell;
use std::rc::Rc;

use rustc_hash::FxHashMap;
use synpref_engine::model::RowKey;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::Operator;

use crate::Rows;

/// Key → first row, for the keys this worker owns. 8-byte keys and values keep the
/// per-pair state near 20 bytes per index (DESIGN: ≤ 100 bytes per pair).
pub type FirstIndex = Rc<RefCell<FxHashMap<u64, RowKey>>>;

pub trait IndexFirst {
    /// Exchanges (key, row) by key and records the least row per key into `index`.
    fn index_first(self, name: &str, index: FirstIndex);
}

impl IndexFirst for Rows<'_, (u64, RowKey)> {
    fn index_first(self, name: &str, index: FirstIndex) {
        self.sink(Exchange::new(|x: &(u64, RowKey)| x.0), name, move |(input, _frontier)| {
            let mut map = index.borrow_mut();
            input.for_each(|_time, data| {
                for (k, row) in data.drain(..) {
                    map.entry(k).and_modify(|r| *r = (*r).min(row)).or_insert(row);
                }
            });
        });
    }
}
