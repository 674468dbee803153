//! Feeding a worker's shards into a dataflow input, a few batches ahead of the slowest
//! operator, for both passes of curate (survey and curate).

use rustc_hash::FxHashMap;
use std::cell::RefCell;
use std::rc::Rc;
use synpref_engine::collective::PARK;
use synpref_engine::extras::ExtrasCodec;
use synpref_engine::input::{FileFormat, JsonlObservation, RawRecord, Shard, ShardReader};
use synpref_engine::Result;

use synpref_operators::write_parts::SLICE_SHIFT;
use timely::dataflow::{InputHandleVec, ProbeHandle};
use timely::worker::Worker;

use super::plan::CuratePlan;

/// Batches a worker may run ahead of its slowest operator: enough to overlap reading
/// with processing, few enough that memory holds only a few batches per worker.
const PIPELINE_SLACK: u64 = 2;

/// Which of a worker's shards a pass reads, in slices, and from which slice on. Slice
/// s's read batches are timestamps `s << SLICE_SHIFT | batch` (`resume`).
pub struct Slices {
    pub shards: Vec<Vec<Shard>>,
    /// The first slice to read (the ones before were committed by an earlier run).
    pub from: u64,
    /// Rows this worker read in the slices before `from`.
    pub rows_before: u64,
    /// Rows this worker has read through each slice (cumulative, `rows_before`
    /// included), for the sink's slice markers.
    pub rows_through: Rc<RefCell<Vec<u64>>>,
}

impl Slices {
    /// All of a worker's shards as one slice, read from the start.
    pub fn whole(plan: &CuratePlan, worker: &Worker) -> Slices {
        Slices {
            shards: vec![plan.input.shards_for(worker.index(), worker.peers())],
            from: 0,
            rows_before: 0,
            rows_through: Rc::default(),
        }
    }
}

/// Feeds a worker's shards into an input, keeping at most `PIPELINE_SLACK` batches in
/// flight. A read error stops feeding and is returned after the input is closed.
/// Returns the rows read.
#[allow(clippy::too_many_arguments)]
pub fn feed(
    worker: &mut Worker,
    dataflow: usize,
    plan: &CuratePlan,
    mut input: InputHandleVec<u64, RawRecord>,
    probe: &ProbeHandle<u64>,
    extras: Option<&ExtrasCodec>,
    mut observations: Option<&mut Vec<JsonlObservation>>,
    first_lines: &FxHashMap<(usize, u64), u64>,
    bar: &indicatif::ProgressBar,
    slices: &Slices,
) -> Result<u64> {
    let mut rows = 0u64;
    let mut result = Ok(());
    {
        let mut through = slices.rows_through.borrow_mut();
        through.clear();
        through.resize(slices.from as usize, slices.rows_before);
    }
    // What earlier runs read counts as done.
    bar.inc(slices.rows_before);
    'slices: for (s, shards) in slices.shards.iter().enumerate().skip(slices.from as usize) {
        let start_of_slice = (s as u64) << SLICE_SHIFT;
        if *input.time() < start_of_slice {
            input.advance_to(start_of_slice);
        }
        for shard in shards.iter().cloned() {
            let file = shard.file();
            let start = match &shard {
                Shard::ByteRange { start, .. } => *start,
                Shard::RowGroup { .. } => 0,
            };
            let mut obs = JsonlObservation {
                file,
                start,
                ..Default::default()
            };
            let first_line = first_lines.get(&(file, start)).copied();
            let mut reader = match ShardReader::open(
                &plan.input,
                shard,
                extras,
                observations.is_some(),
                first_line,
            ) {
                Ok(r) => r,
                Err(e) => {
                    result = Err(e);
                    break 'slices;
                }
            };
            loop {
                match reader.next_batch(Some(&mut obs)) {
                    Ok(None) => break,
                    Ok(Some(batch)) => {
                        rows += batch.len() as u64;
                        bar.inc(batch.len() as u64);
                        for r in batch {
                            input.send(r);
                        }
                        let next = *input.time() + 1;
                        input.advance_to(next);
                        while probe.less_than(&next.saturating_sub(PIPELINE_SLACK)) {
                            worker.step_or_park(Some(PARK));
                        }
                    }
                    Err(e) => {
                        result = Err(e);
                        break 'slices;
                    }
                }
            }
            if plan.input.files[file].format == FileFormat::Jsonl {
                if let Some(o) = observations.as_deref_mut() {
                    o.push(obs);
                }
            }
        }
        slices
            .rows_through
            .borrow_mut()
            .push(slices.rows_before + rows);
    }
    drop(input);
    // Until this dataflow is done, sinks included (not until every dataflow of the
    // worker is: serve keeps a long-lived one beside curate's).
    while worker.installed_dataflows().contains(&dataflow) {
        worker.step_or_park(Some(PARK));
    }
    result.map(|_| rows)
}
