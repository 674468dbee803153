//! Feeding a worker's shards into a dataflow input, a few batches ahead of the slowest
//! operator, for both passes of curate (survey and curate).

use rustc_hash::FxHashMap;
use synpref_engine::collective::PARK;
use synpref_engine::extras::ExtrasCodec;
use synpref_engine::input::{FileFormat, JsonlObservation, RawRecord, Shard, ShardReader};
use synpref_engine::Result;
use timely::dataflow::{InputHandleVec, ProbeHandle};
use timely::worker::Worker;

use super::plan::CuratePlan;

/// Batches a worker may run ahead of its slowest operator: enough to overlap reading
/// with processing, few enough that memory holds only a few batches per worker.
const PIPELINE_SLACK: u64 = 2;

/// Feeds a worker's shards into an input, keeping at most `PIPELINE_SLACK` batches in
/// flight. A read error stops feeding and is returned after the input is closed.
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
) -> Result<u64> {
    let mut rows = 0u64;
    let mut result = Ok(());
    'shards: for shard in plan.input.shards_for(worker.index(), worker.peers()) {
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
                break;
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
                    break 'shards;
                }
            }
        }
        if plan.input.files[file].format == FileFormat::Jsonl {
            if let Some(o) = observations.as_deref_mut() {
                o.push(obs);
            }
        }
    }
    drop(input);
    // Until this dataflow is done, sinks included (not until every dataflow of the
    // worker is: serve keeps a long-lived one beside curate's).
    while worker.installed_dataflows().contains(&dataflow) {
        worker.step_or_park(Some(PARK));
    }
    result.map(|_| rows)
}
