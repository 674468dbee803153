//! `write_parts`: the sink of a curate dataflow. Each worker writes its rows to its own
//! Parquet parts under curated/, discarded/ and quarantine/, counts rows per reason
//! (and per `source` and reason, with the length bias of each), and, with ground
//! truth, how many labels match it.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use synpref_engine::hashing::pair_key;
use synpref_engine::model::{Conversation, Destination};
use synpref_engine::output::{OutputRow, PartWriter, WrittenFile};
use synpref_engine::side::Truth;
use synpref_engine::Error;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;

use crate::Rows;

/// Counts of one worker, summed over workers for the report.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SinkStats {
    pub rows: BTreeMap<String, u64>,
    /// (rows with a truth entry, of which the label matches), over all input rows as read.
    pub truth_input: (u64, u64),
    /// The same over curated rows as written (chosen/rejected swapped where a human
    /// corrected the pair).
    pub truth_curated: (u64, u64),
    /// The same over curated rows that the models, not a human, decided.
    pub truth_model_curated: (u64, u64),
    /// Per `source` value ("" for rows without one), per reason code: rows written.
    #[serde(default)]
    pub by_source: BTreeMap<String, BTreeMap<String, LengthCounts>>,
}

/// Rows of one (source, reason), and how many of those with both replies have a
/// chosen reply longer than the rejected one, as written: the length bias that can
/// make a preference set degenerate (a model learns "longer wins"; RewardBench issue
/// #267 shows it in a benchmark).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LengthCounts {
    pub rows: u64,
    /// Rows with both replies (quarantined rows may lack one).
    pub compared: u64,
    pub chosen_longer: u64,
}

impl LengthCounts {
    pub fn merge(&mut self, o: &LengthCounts) {
        self.rows += o.rows;
        self.compared += o.compared;
        self.chosen_longer += o.chosen_longer;
    }

    /// The share of compared rows whose chosen reply is longer (`None`: none compared).
    pub fn chosen_longer_share(&self) -> Option<f64> {
        (self.compared > 0).then(|| self.chosen_longer as f64 / self.compared as f64)
    }
}

/// A reply's length in characters (Unicode scalar values): its final message where the
/// reply is a conversation (the implicit-prompt form holds the whole conversation).
fn reply_chars(reply: &Conversation) -> usize {
    match reply {
        Conversation::Text(t) => t.chars().count(),
        Conversation::Messages(ms) => ms.last().map_or(0, |m| m.content.chars().count()),
    }
}

impl SinkStats {
    pub fn merge(&mut self, other: &SinkStats) {
        for (k, v) in &other.rows {
            *self.rows.entry(k.clone()).or_default() += v;
        }
        self.truth_input.0 += other.truth_input.0;
        self.truth_input.1 += other.truth_input.1;
        self.truth_curated.0 += other.truth_curated.0;
        self.truth_curated.1 += other.truth_curated.1;
        self.truth_model_curated.0 += other.truth_model_curated.0;
        self.truth_model_curated.1 += other.truth_model_curated.1;
        for (source, reasons) in &other.by_source {
            let mine = self.by_source.entry(source.clone()).or_default();
            for (reason, counts) in reasons {
                mine.entry(reason.clone()).or_default().merge(counts);
            }
        }
    }

    fn count_source(&mut self, row: &OutputRow) {
        let source = row.attributes.source.as_deref().unwrap_or("");
        if !self.by_source.contains_key(source) {
            self.by_source.insert(source.to_string(), BTreeMap::new());
        }
        let reasons = self.by_source.get_mut(source).expect("inserted above");
        let code = row.reason.code();
        if !reasons.contains_key(code) {
            reasons.insert(code.to_string(), LengthCounts::default());
        }
        let counts = reasons.get_mut(code).expect("inserted above");
        counts.rows += 1;
        if let (Some(c), Some(r)) = (&row.chosen, &row.rejected) {
            counts.compared += 1;
            counts.chosen_longer += (reply_chars(c) > reply_chars(r)) as u64;
        }
    }
}

/// A worker's three part writers and its counts. The first write error is kept and
/// later rows are only counted, so that the dataflow still completes on every worker
/// and the error is reported at the next barrier.
pub struct OutputSinks {
    pub writers: Vec<(Destination, Option<PartWriter>)>,
    pub stats: SinkStats,
    pub truth: Option<Arc<Truth>>,
    pub error: Option<Error>,
    /// Commit points of a resumable run (`None`: the run commits only at its end).
    pub slices: Option<SliceCommits>,
}

/// Where a resumable run commits its progress: timestamps are `slice << SLICE_SHIFT |
/// batch`, and once every row of slice `next` is written (the sink's frontier has
/// passed the slice), the writers close their parts and `commit` records them.
pub struct SliceCommits {
    pub next: u64,
    pub commit: CommitSlice,
}

/// Records slice `slice` as done: every file written so far and the counts so far.
pub type CommitSlice = Box<dyn FnMut(u64, Vec<WrittenFile>, &SinkStats) -> Result<(), Error>>;

/// Bits of a timestamp below its slice number (a slice's read batches).
pub const SLICE_SHIFT: u32 = 32;

impl OutputSinks {
    pub fn new(writers: Vec<(Destination, PartWriter)>, truth: Option<Arc<Truth>>) -> Self {
        OutputSinks {
            writers: writers.into_iter().map(|(d, w)| (d, Some(w))).collect(),
            stats: SinkStats::default(),
            truth,
            error: None,
            slices: None,
        }
    }

    /// Commits every slice that lies wholly before `frontier` (a time no row still to
    /// be written precedes; `None`: none). The last slice is committed by the run's
    /// own commit.
    fn commit_slices(&mut self, frontier: Option<u64>) {
        let Some(frontier) = frontier else { return };
        loop {
            let Some(slices) = self.slices.as_mut() else {
                return;
            };
            if self.error.is_some() || frontier < (slices.next + 1) << SLICE_SHIFT {
                return;
            }
            let slice = slices.next;
            slices.next += 1;
            let mut files = Vec::new();
            for (_, w) in self.writers.iter_mut() {
                if let Some(w) = w.as_mut() {
                    if let Err(e) = w.close_current() {
                        self.error = Some(e);
                        return;
                    }
                    files.extend(w.written().iter().cloned());
                }
            }
            let slices = self.slices.as_mut().expect("checked above");
            if let Err(e) = (slices.commit)(slice, files, &self.stats) {
                self.error = Some(e);
            }
        }
    }

    pub fn push(&mut self, row: OutputRow) {
        let dest = row.reason.destination();
        *self
            .stats
            .rows
            .entry(row.reason.code().to_string())
            .or_default() += 1;
        self.stats.count_source(&row);
        if let (Some(truth), Some(id)) = (&self.truth, &row.pair_id) {
            // `chosen_better` is about the pair as read; a row written swapped has the
            // truly better reply as its chosen one exactly when the input did not.
            if let Some(&chosen_better) = truth.chosen_is_better.get(&pair_key(id)) {
                let as_written = chosen_better != row.swapped;
                self.stats.truth_input.0 += 1;
                self.stats.truth_input.1 += chosen_better as u64;
                if dest == Destination::Curated {
                    self.stats.truth_curated.0 += 1;
                    self.stats.truth_curated.1 += as_written as u64;
                    if row.reason.model_decided() {
                        self.stats.truth_model_curated.0 += 1;
                        self.stats.truth_model_curated.1 += as_written as u64;
                    }
                }
            }
        }
        if self.error.is_some() {
            return;
        }
        if let Some((_, Some(w))) = self.writers.iter_mut().find(|(d, _)| *d == dest) {
            if let Err(e) = w.push(row) {
                self.error = Some(e);
            }
        }
    }

    /// Closes the writers; returns the files written and the counts.
    pub fn finish(&mut self) -> Result<(Vec<WrittenFile>, SinkStats), Error> {
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        let mut files = Vec::new();
        for (_, w) in self.writers.iter_mut() {
            if let Some(w) = w.take() {
                files.extend(w.finish()?);
            }
        }
        Ok((files, std::mem::take(&mut self.stats)))
    }
}

pub trait WriteParts {
    /// Writes every row into the sinks. Rows are held until their timestamp (one read
    /// batch of every worker) is complete, then written in row-key order (input file,
    /// then position): the order in which rows reach a worker from its peers varies
    /// from run to run, the set of rows of one timestamp does not, so each part's
    /// bytes are the same in every run with the same workers. Holds at most the few
    /// batches the feed keeps in flight.
    fn write_parts(self, sinks: Rc<RefCell<OutputSinks>>);
}

impl WriteParts for Rows<'_, OutputRow> {
    fn write_parts(self, sinks: Rc<RefCell<OutputSinks>>) {
        let mut pending: BTreeMap<u64, Vec<OutputRow>> = BTreeMap::new();
        self.sink(Pipeline, "WriteParts", move |(input, frontier)| {
            input.for_each(|time, data| {
                // A message of this graph carries one timestamp (one capability per session).
                let time = time.least().copied().unwrap_or_default();
                pending.entry(time).or_default().append(data);
            });
            let mut s = sinks.borrow_mut();
            while let Some(entry) = pending.first_entry() {
                if frontier.less_equal(entry.key()) {
                    break;
                }
                // A slice ends before its successor's first row is written, whenever
                // the sink happens to run.
                s.commit_slices(Some(*entry.key()));
                let mut rows = entry.remove();
                rows.sort_unstable_by_key(|r| r.key);
                for row in rows {
                    s.push(row);
                }
            }
            s.commit_slices(frontier.frontier().iter().min().copied());
        });
    }
}
