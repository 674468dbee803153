//! `index_first`: records, for each key, the first row (least `RowKey`) that has it, on
//! the worker that owns the key. The survey pass builds two such indexes (content hash
//! and pair id); the curate pass looks them up in `dedup` and `unique_pair_ids`, so the
//! row kept among duplicates is the first in input order whatever the worker count.

use std::cell::RefCell;
use std::rc::Rc;

use synpref_engine::model::RowKey;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::Operator;

use crate::Rows;

/// Key → first row, for the keys this worker owns: a vector sorted by key, 16 bytes
/// per pair and index with no hash-table slack (a hash map measured 68 bytes per pair
/// for the two indexes; DESIGN targets ≤ 100 bytes of state per pair in all).
#[derive(Default, Debug)]
pub struct KeyIndex {
    entries: Vec<(u64, RowKey)>,
    sorted: bool,
}

impl KeyIndex {
    /// Room for `entries` more entries, in one allocation.
    pub fn reserve(&mut self, entries: usize) {
        self.entries.reserve_exact(entries);
    }

    pub fn push(&mut self, key: u64, row: RowKey) {
        self.entries.push((key, row));
        self.sorted = false;
    }

    /// Sorts and keeps the least row per key; call once all keys are in.
    pub fn seal(&mut self) {
        self.entries.sort_unstable();
        self.entries.dedup_by_key(|e| e.0);
        self.entries.shrink_to_fit();
        self.sorted = true;
    }

    /// The keys whose swapped copy (`key ^ 1`, `hashing::swapped_dedup_key`) is also
    /// in the index, bit 0 cleared, each once: the comparisons with conflicting labels.
    /// Both orientations sort next to each other, so one scan finds them.
    pub fn both_orientations(&self) -> Vec<u64> {
        debug_assert!(self.sorted, "KeyIndex::both_orientations before seal");
        self.entries
            .windows(2)
            .filter(|w| w[0].0 ^ 1 == w[1].0 && w[0].0 & 1 == 0)
            .map(|w| w[0].0)
            .collect()
    }

    /// The first row with `key`.
    pub fn first(&self, key: u64) -> Option<RowKey> {
        debug_assert!(self.sorted, "KeyIndex::first before seal");
        self.entries
            .binary_search_by_key(&key, |e| e.0)
            .ok()
            .map(|i| self.entries[i].1)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// The sealed entries, sorted by key (what a resumable run saves).
    pub fn entries(&self) -> &[(u64, RowKey)] {
        debug_assert!(self.sorted, "KeyIndex::entries before seal");
        &self.entries
    }

    /// An index from entries `entries()` gave.
    pub fn from_sealed(entries: Vec<(u64, RowKey)>) -> KeyIndex {
        debug_assert!(entries.windows(2).all(|w| w[0].0 < w[1].0));
        KeyIndex {
            entries,
            sorted: true,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

pub type FirstIndex = Rc<RefCell<KeyIndex>>;

/// Which worker owns a key: `route(key)` is the exchange value. The pair-id index routes
/// by the key itself; the dedup index by `hashing::dedup_route`, so that both
/// orientations of a comparison meet on one worker.
pub type Route = fn(u64) -> u64;

/// Routes a key to the worker its own value picks.
pub fn by_key(key: u64) -> u64 {
    key
}

pub trait IndexFirst {
    /// Exchanges (key, row) by `route(key)` and records the least row per key into
    /// `index`.
    fn index_first(self, name: &str, index: FirstIndex, route: Route);
}

impl IndexFirst for Rows<'_, (u64, RowKey)> {
    fn index_first(self, name: &str, index: FirstIndex, route: Route) {
        self.sink(
            Exchange::new(move |x: &(u64, RowKey)| route(x.0)),
            name,
            move |(input, _frontier)| {
                let mut index = index.borrow_mut();
                input.for_each(|_time, data| {
                    for (k, row) in data.drain(..) {
                        index.push(k, row);
                    }
                });
            },
        );
    }
}

/// The lookup half shared by `dedup` and `unique_pair_ids`: exchanges pairs by `key`
/// to the worker owning that part of `index`, passes on each pair that is the first row
/// with its key, and turns the others into output rows with `route`.
pub(crate) fn keep_first<'scope>(
    pairs: Rows<'scope, synpref_engine::model::PreferencePair>,
    name: &str,
    index: FirstIndex,
    key: fn(&synpref_engine::model::PreferencePair) -> u64,
    route: impl Fn(synpref_engine::model::PreferencePair, RowKey) -> synpref_engine::output::OutputRow
        + 'static,
) -> (
    Rows<'scope, synpref_engine::model::PreferencePair>,
    Rows<'scope, synpref_engine::output::OutputRow>,
) {
    use timely::dataflow::operators::core::OkErr;
    type Checked = Result<synpref_engine::model::PreferencePair, synpref_engine::output::OutputRow>;
    let checked: Rows<'scope, Checked> = pairs.unary(Exchange::new(key), name, move |_, _| {
        move |input, output| {
            let index = index.borrow();
            input.for_each(|time, data| {
                let mut session = output.session(&time);
                for pair in data.drain(..) {
                    match index.first(key(&pair)) {
                        Some(first) if first != pair.key => session.give(Err(route(pair, first))),
                        _ => session.give(Ok(pair)),
                    }
                }
            });
        }
    });
    checked.ok_err(|r| r)
}
