//! The resume state: what a curate run commits as it goes, so that a run killed at
//! any point and started again with the same arguments (by hand, `launch --restarts`,
//! Slurm or a Kubernetes Job) redoes only what was not committed, and writes the same
//! bytes. This module reads and writes that state; the `resume` step decides from it.
//!
//! Everything lives in the output's staging area, `OUT/_staging/resume/`:
//! - after the survey and the training, each worker saves its survey indexes
//!   (`survey-wWWWWW.bin`), then worker 0 `checkpoint.json`: the settings'
//!   fingerprint, the run id, the trained models and the JSONL observations the output
//!   schema is inferred from. Its presence means the survey and training are done.
//! - the curate pass reads each worker's shards in slices of about `--slice-rows` rows
//!   (`slices_for`); the timestamps of slice s are `s << SLICE_SHIFT | batch`. Once
//!   every row of a slice is written on a worker, its sink closes its parts and writes
//!   `slice-wWWWWW-sSSSSSS.json` (every part so far, the counts so far, the rows read).
//!
//! A restarted run with the same fingerprint (the `resume` step) loads the checkpoint
//! instead of surveying and training, takes S = the least number of slices every
//! worker committed, and each worker reads only its slices from S on, continuing its
//! part numbering with the same run id: the parts are the bytes an uninterrupted run
//! writes (the rows of each timestamp are written in row-key order, `write_parts`).
//! Nothing holds a set of finished pair ids: a worker's progress is one slice number.
//! A changed setting, input listing or gold label changes the fingerprint, and the run
//! starts afresh.

use serde::{Deserialize, Serialize};
use synpref_engine::input::{JsonlObservation, Shard};
use synpref_engine::model::RowKey;
use synpref_engine::output::{write_json, WrittenFile, RESUME_DIR, STAGING_DIR};
use synpref_engine::store::Location;
use synpref_engine::{Error, Result};
use synpref_operators::near_duplicates::NearDuplicates;
use synpref_operators::write_parts::SinkStats;

use super::plan::CuratePlan;
use super::train::Models;

/// Where a run's resume state lives.
pub fn resume_dir(out: &Location) -> Location {
    out.child(STAGING_DIR).child(RESUME_DIR)
}

/// The checkpoint after the survey and the training (worker 0 writes it last).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Checkpoint {
    pub fingerprint: String,
    pub run_id: String,
    pub models: Models,
    /// Every worker's JSONL observations (the output schema and the first line of
    /// each JSONL byte range are computed from them again).
    pub observations: Vec<JsonlObservation>,
    pub survey_rows: u64,
}

/// One worker's survey indexes.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SurveyPart {
    pub content_index: Vec<(u64, RowKey)>,
    pub pair_index: Vec<(u64, RowKey)>,
    /// (comparison key, deciding row) of each conflicting comparison this worker owns.
    pub deciders: Vec<(u64, RowKey)>,
    /// (kept row, pair key of the duplicate copy whose human label it takes).
    #[serde(default)]
    pub adopted_labels: Vec<(RowKey, u64)>,
    /// The near-duplicate components (the same on every worker).
    #[serde(default)]
    pub near: NearDuplicates,
}

/// A worker's commit of a slice: everything it has written and counted so far.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SliceMarker {
    pub worker: usize,
    pub slice: u64,
    pub files: Vec<WrittenFile>,
    pub stats: SinkStats,
    /// Input rows this worker read in slices up to this one.
    pub rows_read: u64,
}

/// What a run resumed, for the report (`resume` in report.json).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ResumeFigures {
    /// Survey and training taken from the checkpoint instead of being run again.
    pub survey_resumed: bool,
    /// Slices every worker had committed; the run read from there.
    pub slices_resumed: u64,
    /// Slices of the largest worker's input.
    pub slices: u64,
    /// Input rows not read again (the committed slices').
    pub rows_resumed: u64,
    /// Input rows this run read in its curate pass.
    pub rows_read: u64,
    /// Input rows this run read in its survey (0 when the survey was resumed).
    pub survey_rows_read: u64,
}

/// A worker's shards grouped into slices of about `slice_rows` rows each (Parquet row
/// groups count their rows, JSONL byte ranges their bytes / 512, as the input plan
/// estimates them); a slice holds at least one shard.
pub fn slices_for(plan: &CuratePlan, worker: usize, peers: usize) -> Vec<Vec<Shard>> {
    let limit = plan.spec.machine.slice_rows.max(1);
    let mut slices: Vec<Vec<Shard>> = Vec::new();
    let mut rows = 0u64;
    for shard in plan.input.shards_for(worker, peers) {
        let n = match &shard {
            Shard::RowGroup { rows, .. } => *rows,
            Shard::ByteRange { start, end, .. } => (end - start) / 512,
        };
        match slices.last_mut() {
            Some(last) if rows + n <= limit => {
                last.push(shard);
                rows += n;
            }
            _ => {
                slices.push(vec![shard]);
                rows = n;
            }
        }
    }
    slices
}

/// The run's fingerprint: its settings (worker count and read batch size included:
/// both decide which rows share a part), the input files with their sizes, the gold
/// label stream and the side inputs' locations. Output progress of another fingerprint
/// is never reused.
pub fn fingerprint(plan: &CuratePlan, total_workers: usize) -> String {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    let mut settings = plan.spec.clone();
    settings.machine.run.progress = true;
    settings.machine.run.workers = total_workers;
    h.update(&serde_json::to_vec(&settings).expect("a spec serialises"));
    for f in &plan.input.files {
        h.update(f.location.url.as_bytes());
        h.update(&f.size.to_le_bytes());
    }
    for label in &plan.gold.stream {
        h.update(&serde_json::to_vec(label).expect("a label serialises"));
    }
    format!("{:016x}", h.digest())
}

fn read_json<T: for<'de> Deserialize<'de>>(loc: &Location) -> Result<Option<T>> {
    match loc.get_if_exists()? {
        None => Ok(None),
        Some(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| Error::other(&loc.url, format!("unreadable resume state: {e}"))),
    }
}

/// The checkpoint of an interrupted run with this fingerprint, if there is one.
pub fn load_checkpoint(out: &Location, fingerprint: &str) -> Result<Option<Checkpoint>> {
    let loc = resume_dir(out).child("checkpoint.json");
    // A checkpoint another version of synpref wrote, or a torn one, is not ours.
    let found: Option<Checkpoint> = read_json(&loc).unwrap_or(None);
    Ok(found.filter(|c| c.fingerprint == fingerprint))
}

pub fn save_checkpoint(out: &Location, checkpoint: &Checkpoint) -> Result<()> {
    write_json(&resume_dir(out).child("checkpoint.json"), checkpoint)
}

fn survey_location(out: &Location, worker: usize) -> Location {
    resume_dir(out).child(&format!("survey-w{worker:05}.bin"))
}

pub fn save_survey(out: &Location, worker: usize, part: &SurveyPart) -> Result<()> {
    let loc = survey_location(out, worker);
    let bytes = bincode::serialize(part).map_err(|e| Error::other(&loc.url, e))?;
    loc.put(bytes)
}

pub fn load_survey(out: &Location, worker: usize) -> Result<Option<SurveyPart>> {
    let loc = survey_location(out, worker);
    match loc.get_if_exists()? {
        None => Ok(None),
        Some(b) => bincode::deserialize(&b)
            .map(Some)
            .map_err(|e| Error::other(&loc.url, format!("unreadable resume state: {e}"))),
    }
}

fn marker_location(out: &Location, worker: usize, slice: u64) -> Location {
    resume_dir(out).child(&format!("slice-w{worker:05}-s{slice:06}.json"))
}

pub fn save_marker(out: &Location, marker: &SliceMarker) -> Result<()> {
    write_json(&marker_location(out, marker.worker, marker.slice), marker)
}

/// `worker`'s marker of `slice`.
pub fn load_marker(out: &Location, worker: usize, slice: u64) -> Result<SliceMarker> {
    let loc = marker_location(out, worker, slice);
    read_json(&loc)?.ok_or_else(|| Error::other(&loc.url, "a committed slice's marker is gone"))
}

/// Whether every part `marker` lists is still in the staging area.
pub fn parts_staged(out: &Location, marker: &SliceMarker) -> Result<bool> {
    let staging = out.child(STAGING_DIR);
    for f in &marker.files {
        if !staging.child(&f.path).exists()? {
            return Ok(false);
        }
    }
    Ok(true)
}

/// How many slices `worker` committed in a row from the first.
pub fn committed_slices(out: &Location, worker: usize) -> u64 {
    let mut n = 0;
    // A marker that does not read back (a store that lost it half-written) ends the
    // committed run: that slice is simply read again.
    while let Ok(Some(m)) = read_json::<SliceMarker>(&marker_location(out, worker, n)) {
        if m.worker != worker || m.slice != n {
            break;
        }
        n += 1;
    }
    n
}

/// Removes every resume file (a run that starts afresh).
pub fn clear(out: &Location) -> Result<()> {
    resume_dir(out).delete_tree()
}
