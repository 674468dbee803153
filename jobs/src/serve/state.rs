//! Serve's per-pair state, one shard per worker, and the epoch step that updates it.
//!
//! Each worker keeps, for the pairs it scored (curate routes pairs to workers by pair
//! key), the key, the two margins, the norm ‖φ(y_w) − φ(y_l)‖ of its gold-RM
//! features, and where its text and features record are in the process's pool store;
//! plus the valid rows of its keys (a gold label names a pair id, and the gold RM
//! trains on the rows with that id, as in curate). The arrays are sorted by pair key.
//! `RescoreIndex` orders the shard's pairs by how far the gold RM's weights must move
//! before a pair's decision can change. The labels and the gold RM are the same on
//! every worker.

use std::sync::{Arc, Mutex};

use rayon::prelude::*;
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use synpref_engine::extras::ExtrasCodec;
use synpref_engine::hashing::{dedup_key, dedup_route, pair_key};
use synpref_engine::model::{GoldLabel, PreferencePair, RowKey, Verdict};
use synpref_engine::output::OutputSchema;
use synpref_engine::pool_store::{PoolLoc, PoolStore, PoolWriter};
use synpref_engine::side::GoldLabels;
use synpref_engine::store::Location;
use synpref_engine::{Error, Result};
use synpref_operators::decide_incrementally::PairFact;
use synpref_operators::index_first::KeyIndex;
use synpref_operators::models::builtin::{OnlineTrainer, TrainExample};
use synpref_operators::models::margin_bound::{weight_drift, RescoreIndex, MARGIN_ROUNDING};
use synpref_operators::models::{ModelError, RewardModel};
use synpref_operators::score::ScoredPair;

use super::aliases::{copies_of_scored, CopyRow, LabelAliases, ScoredCopy};
use super::conflicts::{ConflictRow, ConflictTable};
use super::gold::{f32s, GoldFeatures, GoldModel, SharedWeights};
use crate::curate::{self, CurateSpec, Graph, GraphBuilder};

/// One scored pair as the initial pass saw it.
#[derive(Clone, Copy, Debug)]
pub struct ScoredFacts {
    pub key: u64,
    pub row: RowKey,
    /// Where the pair's gold-RM features are in the pool store.
    pub features: PoolLoc,
    pub m_best: f32,
    pub m_gold: f32,
    pub norm: f32,
    /// The pool row is an earlier pass's human correction (`PreferencePair::corrected`).
    pub corrected: bool,
    /// The pool row is an earlier pass's human agreement (`PreferencePair::agreed`).
    pub agreed: bool,
    /// The pair is a copy of a conflicting comparison (`PreferencePair::conflict`):
    /// its deciding copy, or one scored on standby (`conflict_standby`).
    pub conflict: bool,
}

/// What one worker's share of the initial pass captured.
#[derive(Default)]
pub struct WorkerCapture {
    pub writer: Option<PoolWriter>,
    /// Writes scored pairs' features (`encode_features`).
    pub features: Option<PoolWriter>,
    /// (pair key, row key, store location) of every valid row this worker read.
    pub valid: Vec<(u64, RowKey, PoolLoc)>,
    pub scored: Vec<ScoredFacts>,
    /// The duplicate copies of the content keys this worker owns (`aliases`).
    pub copies: Vec<CopyRow>,
    /// The conflicting comparisons' rows among the content keys this worker owns
    /// (`conflicts`).
    pub conflict_rows: Vec<ConflictRow>,
    pub error: Option<String>,
}

/// The output schema of the run, its carried columns' codec and the input files' URLs:
/// what a changelog part needs to lay rows out as curate does.
pub type RowLayout = (OutputSchema, Arc<ExtrasCodec>, Arc<Vec<String>>);

/// The curate tap serve runs its initial pass with.
pub struct ServeTap {
    pub store: Arc<PoolStore>,
    pub gold: GoldFeatures,
    pub workers: Vec<Mutex<WorkerCapture>>,
    pub schema: Mutex<Option<RowLayout>>,
}

impl ServeTap {
    pub fn new(store: Arc<PoolStore>, gold: GoldFeatures, workers: usize) -> Result<ServeTap> {
        let mut slots = Vec::new();
        for w in 0..workers {
            slots.push(Mutex::new(WorkerCapture {
                writer: Some(store.writer(w as u16)?),
                features: Some(store.writer(FEATURE_FILES + w as u16)?),
                ..Default::default()
            }));
        }
        Ok(ServeTap {
            store,
            gold,
            workers: slots,
            schema: Mutex::new(None),
        })
    }
}

impl ServeTap {
    /// Copies a valid pool row into the pool store.
    fn valid(&self, worker: usize, pair: &PreferencePair) {
        let mut c = self.workers[worker].lock().expect("capture");
        if c.error.is_some() {
            return;
        }
        let appended = c.writer.as_mut().expect("writer").append(pair);
        match appended {
            Ok(loc) => c.valid.push((pair.pair_key, pair.key, loc)),
            Err(e) => c.error = Some(e.to_string()),
        }
    }

    /// Keeps a row that copies an earlier row's content (at the worker owning the
    /// content key, whose part of the content index names the first row).
    fn content(&self, worker: usize, index: &KeyIndex, (content, row, key): (u64, RowKey, u64)) {
        match index.first(content) {
            Some(first) if first != row => {
                let mut c = self.workers[worker].lock().expect("capture");
                c.copies.push((first, row, key));
            }
            Some(_) if index.first(content ^ 1).is_some() => {
                let mut c = self.workers[worker].lock().expect("capture");
                c.conflict_rows.push((content & !1, row, key));
            }
            _ => {}
        }
    }

    /// This worker's copies and conflicting comparisons' rows, taken once after the
    /// first pass.
    pub fn take_copies(&self, worker: usize) -> (Vec<CopyRow>, Vec<ConflictRow>) {
        let mut c = self.workers[worker].lock().expect("capture");
        (
            std::mem::take(&mut c.copies),
            std::mem::take(&mut c.conflict_rows),
        )
    }

    /// Keeps a scored pair's margins and its gold-RM features record.
    fn scored(&self, worker: usize, s: &ScoredPair) {
        let record = self.gold.record(&s.pair);
        let mut c = self.workers[worker].lock().expect("capture");
        if c.error.is_some() {
            return;
        }
        let (bytes, norm) = match record {
            Ok(r) => r,
            Err(e) => {
                c.error = Some(e.to_string());
                return;
            }
        };
        match c.features.as_mut().expect("writer").append_bytes(&bytes) {
            Ok(features) => c.scored.push(ScoredFacts {
                key: s.pair.pair_key,
                row: s.pair.key,
                features,
                m_best: s.m_best,
                m_gold: s.m_gold,
                norm,
                corrected: s.pair.corrected,
                agreed: s.pair.agreed,
                conflict: s.pair.conflict,
            }),
            Err(e) => c.error = Some(e.to_string()),
        }
    }

    /// The run's output schema and carried columns, for the changelog's parts.
    fn schema(&self, schema: &OutputSchema, extras: &Arc<ExtrasCodec>, urls: &Arc<Vec<String>>) {
        let mut s = self.schema.lock().expect("schema");
        if s.is_none() {
            *s = Some((schema.clone(), extras.clone(), urls.clone()));
        }
    }
}

/// One valid pair's parts for serve's captures and its main path (`ServeGraph`).
#[derive(Clone)]
enum Tapped {
    Main(PreferencePair),
    /// A copy for the pool store.
    Pool(PreferencePair),
    /// (content key, row, pair key), for `aliases` and `conflicts`.
    Content((u64, RowKey, u64)),
    /// A conflict's copy scored on standby (`conflict_standby`).
    Standby(PreferencePair),
}

impl Tapped {
    const KINDS: u64 = 4;

    /// The stream of this kind, in the order `ServeGraph` consumes them.
    fn kind(&self) -> u64 {
        match self {
            Tapped::Main(_) => 0,
            Tapped::Pool(_) => 1,
            Tapped::Content(_) => 2,
            Tapped::Standby(_) => 3,
        }
    }
}

/// Pool-store file numbers of the features files (one per worker, after the pairs').
const FEATURE_FILES: u16 = 1024;

/// Serve's first curate pass: curate's own stages (`select`, score,
/// `decide_and_write`), composed with serve's captures: every valid row into the pool
/// store; every duplicate copy and every conflicting comparison's rows at their
/// content's owner (`aliases`, `conflicts`); and every scored pair's margins and gold
/// features record, of the main path and of the conflicts' copies that do not decide
/// at start, scored on a side branch through the same stages (`conflict_standby`).
pub struct ServeGraph {
    pub tap: Arc<ServeTap>,
}

impl GraphBuilder for ServeGraph {
    fn build(
        &self,
        worker: &mut timely::worker::Worker,
        plan: &curate::CuratePlan,
        g: Graph,
    ) -> (
        timely::dataflow::InputHandleVec<u64, synpref_engine::input::RawRecord>,
        timely::dataflow::ProbeHandle<u64>,
        usize,
    ) {
        use synpref_engine::collective::all_gather;
        use synpref_operators::conflict_standby::{standby_copy, StandbyRows};
        use synpref_operators::decontaminate::Decontaminate;
        use synpref_operators::near_duplicates::RouteNearDuplicates;
        use synpref_operators::score::Score;
        use synpref_operators::unique_pair_ids::UniquePairIds;
        use synpref_operators::validate::Validate;
        use timely::dataflow::operators::core::Exchange;
        use timely::dataflow::operators::vec::{Input, Map, Partition};
        use timely::dataflow::operators::Inspect;
        self.tap.schema(&g.schema, &g.extras, &g.file_urls);
        let settings = curate::validate_settings(&plan.spec);
        let index = worker.index() % self.tap.workers.len();
        // Every worker's standby rows, gathered on all (a few per cent of the pool).
        let local: Vec<(RowKey, Option<u64>)> = g
            .selection
            .deciders
            .standby_rows(&g.selection.content_index.borrow());
        // Before the dataflow's index is taken: the gather builds a dataflow of its own.
        let standby: StandbyRows = match all_gather(worker, &local) {
            Ok(all) => all.into_iter().flatten().collect(),
            Err(e) => {
                self.tap.workers[index].lock().expect("capture").error = Some(e.to_string());
                StandbyRows::default()
            }
        };
        let standby = std::rc::Rc::new(standby);
        let dataflow = worker.next_dataflow_index();
        let ngrams = plan.ngrams.clone();
        let (pool, scores, copies) = (self.tap.clone(), self.tap.clone(), self.tap.clone());
        let content_index = g.selection.content_index.clone();
        let standby_scores = self.tap.clone();
        let (input, probe) = worker.dataflow_named::<u64, _, _>("Curate", move |scope| {
            let (input, raw) = scope.new_input::<synpref_engine::input::RawRecord>();
            let (valid, invalid) = raw.validate(settings);
            // One pass over the valid pairs hands each capture its part, so that the
            // valid stream has one consumer (timely clones batches for every extra one).
            let tapped = valid.flat_map(move |p: PreferencePair| {
                let content = (dedup_key(p.dedup_hash), p.key, p.pair_key);
                let mut out = vec![Tapped::Content(content)];
                out.extend(standby_copy(&p, &standby).map(Tapped::Standby));
                out.push(Tapped::Pool(p.clone()));
                out.push(Tapped::Main(p));
                out
            });
            let mut parts = tapped
                .partition(Tapped::KINDS, |t: Tapped| (t.kind(), t))
                .into_iter();
            let mut next = || parts.next().expect("one stream per kind");
            let valid = next().flat_map(|t| match t {
                Tapped::Main(p) => Some(p),
                _ => None,
            });
            // Every valid row's text goes to the store of the worker that owns its pair
            // key (the worker curate routes the pair to for scoring, by the same
            // exchange), so that a pair's text, its gold-RM rows and its decision are
            // on one worker of one process; the main path is unchanged.
            next()
                .flat_map(|t| match t {
                    Tapped::Pool(p) => Some(p),
                    _ => None,
                })
                .exchange(|p: &PreferencePair| p.pair_key)
                .inspect(move |p| pool.valid(index, p));
            // Each row's content key goes to the worker owning it, as in `dedup`.
            next()
                .flat_map(|t| match t {
                    Tapped::Content(c) => Some(c),
                    _ => None,
                })
                .exchange(|c: &(u64, RowKey, u64)| dedup_route(c.0))
                .inspect(move |c| copies.content(index, &content_index.borrow(), *c));
            // The copies of conflicting comparisons that do not decide at start, through
            // the main path's later stages (their routed rows are the main path's to
            // write), scored and captured beside it.
            let sel = g.selection.clone();
            let standby = next().flat_map(|t| match t {
                Tapped::Standby(p) => Some(p),
                _ => None,
            });
            let (standby, _) = standby.near_duplicates(sel.near);
            let (standby, _) = standby.unique_pair_ids(sel.pair_index);
            let (standby, _) = standby.decontaminate(ngrams.clone());
            standby
                .score(g.scorers.0.clone(), g.scorers.1.clone(), g.failure.clone())
                .inspect(move |s| standby_scores.scored(index, s));
            let (clean, routed) = curate::select(valid, invalid, g.selection, ngrams);
            let scored = clean
                .score(g.scorers.0, g.scorers.1, g.failure)
                .inspect(move |s| scores.scored(index, s));
            let probe = curate::decide_and_write(scored, routed, g.rule, g.sinks);
            (input, probe)
        });
        (input, probe, dataflow)
    }
}

/// What serve knows about a labelled pool key, gathered from the workers that hold it
/// when the key is first labelled: every worker keeps it (the self-measurement reads
/// it on worker 0).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LabelledKey {
    /// Some valid pool row has the key.
    pub in_pool: bool,
    /// The scored pair's best-RM margin and whether it is a recorded correction.
    pub scored: Option<(f32, bool)>,
}

/// One worker's share of what learning a label batch needs: its valid rows of the
/// batch's keys that the gold RM has no row of yet, and what it knows of keys labelled
/// for the first time.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct BatchRows {
    pub rows: Vec<(u64, RowKey, PreferencePair)>,
    pub keys: Vec<(u64, LabelledKey)>,
}

/// One worker's shard of serve's state between epochs: the pairs this worker scored
/// (curate routes pairs to workers by pair key, so the shards are disjoint and every
/// later epoch finds a pair on the same worker), plus the labels and the gold RM, the
/// same on every worker.
pub struct PoolState {
    pub store: Arc<PoolStore>,
    /// The valid rows this worker read: (pair key, row key, location), sorted. The
    /// gold RM learns a label from the pool's rows of its key, wherever they were read.
    pub valid: Vec<(u64, RowKey, PoolLoc)>,
    /// Scored pairs of this shard, sorted by key.
    pub keys: Vec<u64>,
    pub m_best: Vec<f32>,
    pub m_gold: Vec<f32>,
    pub norm: Vec<f32>,
    /// Where each scored pair's text is.
    pub loc: Vec<PoolLoc>,
    /// Where each scored pair's gold-RM features record is (`GoldFeatures::record`).
    pub features: Vec<PoolLoc>,
    /// Keys of the scored pairs that are an earlier pass's recorded human corrections,
    /// sorted.
    pub corrected: Vec<u64>,
    /// Keys of the scored pairs that are an earlier pass's recorded human agreements,
    /// sorted.
    pub agreed: Vec<u64>,
    /// (key, row) of the scored pairs that are copies of a conflicting comparison (the
    /// rule skips their best-RM margin, as curate's, and the table says which decides),
    /// sorted. Not saved with the state: the pass that rebuilds the pool store on
    /// restart marks them again.
    pub conflict: Vec<(u64, RowKey)>,
    /// Every conflicting comparison's rows, the same on every worker (`conflicts`).
    pub conflicts: ConflictTable,
    pub index: RescoreIndex,
    /// All labels applied so far.
    pub labels: GoldLabels,
    /// Every scored pair's duplicate copies, whose labels it takes (`aliases`); the
    /// same on every worker. Not saved: the first pass finds them again on restart.
    pub aliases: LabelAliases,
    /// Every labelled key's pool facts (`LabelledKey`).
    pub labelled: FxHashMap<u64, LabelledKey>,
    /// The gold RM, kept equal to curate's for the labels so far.
    gold: GoldModel,
    /// The largest floating-point error bound of a margin computed so far
    /// (`GoldModel::margin_error_bound`); while twice it is within the index's ε, the
    /// margin bound is sound for computed margins.
    margin_error: f64,
    pub spec: CurateSpec,
    /// The best RM's fingerprint, for snapshot manifests.
    pub best_fingerprint: String,
}

/// An epoch's starting point (`PoolState::start_epoch`).
pub struct EpochStart {
    old_weights: Vec<f32>,
    /// The verdict in force before the batch, per pair its labels may decide.
    before: FxHashMap<u64, Option<Verdict>>,
    /// Whether each of this shard's conflict copies whose comparison the batch touches
    /// was outvoted before it.
    outvoted_before: Vec<(u64, bool)>,
    started: std::time::Instant,
}

/// What an epoch changed on one worker.
#[derive(Debug, Default)]
pub struct EpochChange {
    pub updates: Vec<((u64, PairFact), isize)>,
    pub rescored: usize,
    pub drift: f64,
    pub train_s: f64,
    pub rescore_s: f64,
}

impl PoolState {
    /// Builds one worker's shard from its capture of the initial pass (sorted, so the
    /// same input gives the same state whatever the order rows arrived in).
    pub fn from_capture(tap: &ServeTap, local: usize, spec: CurateSpec) -> Result<PoolState> {
        let (mut valid, mut scored) = {
            let mut c = tap.workers[local].lock().expect("capture");
            if let Some(e) = c.error.take() {
                return Err(Error::other("pool store", e));
            }
            if let Some(w) = c.writer.take() {
                tap.store.finish(w)?;
            }
            if let Some(w) = c.features.take() {
                tap.store.finish(w)?;
            }
            (std::mem::take(&mut c.valid), std::mem::take(&mut c.scored))
        };
        valid.sort_unstable_by_key(|v| (v.0, v.1));
        scored.sort_unstable_by_key(|s| s.key);
        let mut loc = Vec::with_capacity(scored.len());
        for s in &scored {
            let at = valid.partition_point(|v| (v.0, v.1) < (s.key, s.row));
            match valid.get(at) {
                Some(v) if v.0 == s.key && v.1 == s.row => loc.push(v.2),
                _ => {
                    return Err(Error::other(
                        "serve",
                        "a scored pair is missing from its worker's pool store",
                    ))
                }
            }
        }
        // The (sorted) keys of the scored pairs with a flag set.
        let keys_where = |flag: fn(&ScoredFacts) -> bool| -> Vec<u64> {
            scored.iter().filter(|s| flag(s)).map(|s| s.key).collect()
        };
        let mut index = RescoreIndex::new(spec.threshold);
        for (i, s) in scored.iter().enumerate() {
            index.insert(i as u32, s.m_gold, s.norm);
        }
        Ok(PoolState {
            store: tap.store.clone(),
            valid,
            keys: scored.iter().map(|s| s.key).collect(),
            m_best: scored.iter().map(|s| s.m_best).collect(),
            m_gold: scored.iter().map(|s| s.m_gold).collect(),
            norm: scored.iter().map(|s| s.norm).collect(),
            loc,
            features: scored.iter().map(|s| s.features).collect(),
            corrected: keys_where(|s| s.corrected),
            agreed: keys_where(|s| s.agreed),
            conflict: scored
                .iter()
                .filter(|s| s.conflict)
                .map(|s| (s.key, s.row))
                .collect(),
            conflicts: ConflictTable::default(),
            index,
            labels: GoldLabels::default(),
            aliases: LabelAliases::default(),
            labelled: FxHashMap::default(),
            gold: GoldModel::new(&spec, &tap.gold),
            margin_error: 0.0,
            spec,
            best_fingerprint: String::new(),
        })
    }

    /// The copies (gathered from every worker's `ServeTap::take_copies`) of the pairs
    /// this shard scored and of the conflicting comparisons' rows (set `conflicts`
    /// first), named by pair key; gather them from every worker for
    /// `LabelAliases::new`.
    pub fn copies_of_scored(&self, copies: Vec<CopyRow>) -> Vec<ScoredCopy> {
        // A scored pair's row: its key's valid row at the scored pair's location.
        let row = |i: usize| {
            let key = self.keys[i];
            let at = self.valid.partition_point(|v| v.0 < key);
            self.valid[at..]
                .iter()
                .take_while(|v| v.0 == key)
                .find(|v| v.2 == self.loc[i])
                .map(|v| (key, v.1))
        };
        // The conflicting comparisons' rows take their copies' labels too, scored or
        // not: a label on one may let its comparison be decided (`conflicts`).
        let rows = (0..self.keys.len())
            .filter_map(row)
            .chain(self.conflicts.rows());
        copies_of_scored(copies, rows)
    }

    /// The verdict in force for the scored pair `key` (`LabelAliases::verdict`).
    pub fn verdict_of(&self, key: u64) -> Option<Verdict> {
        self.aliases.verdict(key, &self.labels)
    }

    /// Whether the scored pair `key` is a conflict's copy that does not decide it.
    pub fn outvoted(&self, key: u64) -> bool {
        let at = self.conflict.partition_point(|c| c.0 < key);
        self.conflict[at..]
            .iter()
            .take_while(|c| c.0 == key)
            .any(|c| {
                self.conflicts
                    .outvoted(key, c.1, |k| self.verdict_of(k).is_some())
            })
    }

    /// Whether the scored pair `key` is a copy of a conflicting comparison.
    pub fn is_conflict(&self, key: u64) -> bool {
        let at = self.conflict.partition_point(|c| c.0 < key);
        self.conflict.get(at).is_some_and(|c| c.0 == key)
    }

    /// The gold RM's fingerprint, as curate's manifest gives it.
    pub fn gold_fingerprint(&self) -> String {
        self.gold.fingerprint()
    }

    /// This worker's share of what learning `batch` needs (gather it from every
    /// worker, then `learn_batch`). Every worker decides the same keys, since each
    /// holds the same labels and gold RM.
    pub fn batch_rows(&self, batch: &[GoldLabel]) -> Result<BatchRows> {
        let mut keys: Vec<u64> = batch.iter().map(|l| pair_key(&l.pair_id)).collect();
        keys.sort_unstable();
        keys.dedup();
        let mut out = BatchRows::default();
        for key in keys {
            let at = self.valid.partition_point(|v| v.0 < key);
            let mine = self.valid[at..].iter().take_while(|v| v.0 == key);
            if !self.gold.knows(key) {
                for v in mine.clone() {
                    out.rows.push((key, v.1, self.store.read(v.2)?));
                }
            }
            if !self.labelled.contains_key(&key) {
                let scored = self
                    .find(key)
                    .map(|i| (self.m_best[i], self.corrected.binary_search(&key).is_ok()));
                let in_pool = mine.count() > 0 || scored.is_some();
                if in_pool {
                    out.keys.push((key, LabelledKey { in_pool, scored }));
                }
            }
        }
        Ok(out)
    }

    /// Learns `batch` from every worker's `batch_rows`, as curate learns the labels
    /// (DESIGN §4: a later label supersedes; the gold RM's stream is extended). With
    /// `record_only` the built-in trainer is not stepped (a restored trainer has
    /// learned the labels); their rows are still kept.
    pub fn learn_batch(
        &mut self,
        batch: Vec<GoldLabel>,
        gathered: Vec<BatchRows>,
        record_only: bool,
    ) -> Result<()> {
        let mut rows: FxHashMap<u64, Vec<(RowKey, PreferencePair)>> = FxHashMap::default();
        for g in gathered {
            for (key, row, pair) in g.rows {
                rows.entry(key).or_default().push((row, pair));
            }
            for (key, info) in g.keys {
                let e = self.labelled.entry(key).or_default();
                e.in_pool |= info.in_pool;
                if info.scored.is_some() {
                    e.scored = info.scored;
                }
            }
        }
        for r in rows.values_mut() {
            r.sort_by_key(|(row, _)| *row);
        }
        let rows_of = |key: u64| -> Result<Vec<PreferencePair>> {
            Ok(rows
                .get(&key)
                .map(|r| r.iter().map(|(_, p)| p.clone()).collect())
                .unwrap_or_default())
        };
        let from = self.labels.stream.len();
        // A record in force before this batch and superseded by it had trained the
        // model: it learns again from the records in force (curate's one pass over
        // them); otherwise it goes on with the batch's.
        let mut superseded = false;
        for label in batch {
            self.gold.remember_rows(&self.spec, &label, &rows_of)?;
            superseded |= self.labels.insert(label).is_some_and(|at| at < from);
        }
        if !record_only {
            self.gold
                .learn_in_force(&self.spec, &self.labels, (!superseded).then_some(from));
        }
        self.gold.refit(&self.spec, &self.labels)?;
        self.margin_error = self.margin_error.max(self.gold.margin_error_bound());
        Ok(())
    }

    /// Position of a scored pair by key.
    pub fn find(&self, key: u64) -> Option<usize> {
        self.keys.binary_search(&key).ok()
    }

    /// What an epoch needs to know from before its labels are learned.
    pub fn start_epoch(&self, batch: &[GoldLabel]) -> EpochStart {
        let keys = batch.iter().map(|l| pair_key(&l.pair_id));
        let before = self.aliases.before(keys, &self.labels);
        let mut partners: Vec<u64> = before
            .keys()
            .flat_map(|k| self.conflicts.partners(*k))
            .filter(|k| self.is_conflict(*k))
            .collect();
        partners.sort_unstable();
        partners.dedup();
        let outvoted_before = partners
            .into_iter()
            .map(|k| (k, self.outvoted(k)))
            .collect();
        EpochStart {
            outvoted_before,
            old_weights: self.gold.weights().to_vec(),
            before,
            started: std::time::Instant::now(),
        }
    }

    /// On a worker that does not train: records the batch's labels (for the verdicts
    /// and snapshots) and takes worker 0's weights.
    pub fn take_batch(&mut self, batch: Vec<GoldLabel>, weights: SharedWeights) -> Result<()> {
        for label in batch {
            self.labels.insert(label);
        }
        self.gold.set_weights(&self.spec, weights)?;
        self.margin_error = self.margin_error.max(self.gold.margin_error_bound());
        Ok(())
    }

    /// The gold RM's weights for the other workers.
    pub fn shared_weights(&self) -> SharedWeights {
        self.gold.shared_weights()
    }

    /// Ends an epoch whose labels this worker has learned (`learn_batch`) or taken
    /// (`take_batch`): the verdicts it changes (only where `verdicts` is set: the
    /// worker states them for all keys, or for its own), and the re-scored pairs of
    /// this shard the weight move may have carried across the threshold.
    pub fn finish_epoch(&mut self, start: EpochStart, verdicts: bool) -> Result<EpochChange> {
        let mut change = EpochChange {
            train_s: start.started.elapsed().as_secs_f64(),
            ..Default::default()
        };
        let old_weights = start.old_weights;
        let mut touched: Vec<(u64, Option<Verdict>)> = start.before.into_iter().collect();
        touched.sort_unstable();
        for (key, old) in touched.into_iter().filter(|_| verdicts) {
            let new = self.verdict_of(key);
            if old != new {
                if let Some(v) = old {
                    change.updates.push(((key, PairFact::Verdict(v)), -1));
                }
                if let Some(v) = new {
                    change.updates.push(((key, PairFact::Verdict(v)), 1));
                }
            }
        }
        // Each worker states its own conflict copies' changes.
        for (key, old) in start.outvoted_before {
            let new = self.outvoted(key);
            if old != new {
                let diff = if new { 1 } else { -1 };
                change.updates.push(((key, PairFact::Outvoted), diff));
            }
        }
        let t = std::time::Instant::now();
        let gold = &self.gold;
        change.drift = weight_drift(&old_weights, gold.weights());
        let mut due = self.index.advance(change.drift);
        if 2.0 * self.margin_error > MARGIN_ROUNDING {
            // Rounding could exceed the index's ε: re-score every pair (sound, slow).
            tracing::warn!(
                bound = self.margin_error,
                "the gold RM's weights are large enough that rounding may exceed the margin bound's ε; re-scoring every pair"
            );
            due.extend(self.index.take_all());
            due.sort_unstable();
        }
        change.rescored = due.len();
        let fresh = rescore(&self.store, &self.features, gold, &due)?;
        for (i, m) in due.into_iter().zip(fresh) {
            let i = i as usize;
            let old = self.m_gold[i];
            if m.to_bits() != old.to_bits() {
                let best = self.m_best[i].to_bits();
                change.updates.push((
                    (
                        self.keys[i],
                        PairFact::Margins {
                            best,
                            gold: old.to_bits(),
                        },
                    ),
                    -1,
                ));
                change.updates.push((
                    (
                        self.keys[i],
                        PairFact::Margins {
                            best,
                            gold: m.to_bits(),
                        },
                    ),
                    1,
                ));
                self.m_gold[i] = m;
            }
            self.index.insert(i as u32, m, self.norm[i]);
        }
        change.rescore_s = t.elapsed().as_secs_f64();
        Ok(change)
    }

    /// The run's self-measurement for the labels so far (DESIGN §4 `quality`), as curate
    /// computes it: the built-in gold RM's cross-validation folds retrained from the
    /// label stream, each decisive verdict judged by the fold that did not learn it,
    /// the best RM's margins as scored. `None` with an encoder gold RM, or when a
    /// restart left the labelled pool rows unread (the last figures then stand).
    pub fn quality(
        &self,
        judges: Option<&synpref_engine::side::JudgeVotes>,
        best_rm: &synpref_engine::report::ModelQuality,
    ) -> Option<synpref_engine::report::Quality> {
        use synpref_operators::models::FoldAssignment;
        use synpref_operators::training::gold::{builtin_gold_folds, label_pair};
        use synpref_operators::training::quality::{assess, builtin_outcome, VerdictOutcome};
        let GoldModel::Builtin { examples, .. } = &self.gold else {
            return None;
        };
        let info = |key: u64| self.labelled.get(&key).copied().unwrap_or_default();
        let mut labels: Vec<&GoldLabel> = self.labels.labels.values().collect();
        labels.sort_by(|a, b| a.pair_id.cmp(&b.pair_id));
        // Every decisive pool label the gold RM learns from a pool row must have its row.
        let unread = labels.iter().any(|l| {
            let key = pair_key(&l.pair_id);
            l.text.is_none()
                && l.verdict != Verdict::Undecidable
                && info(key).in_pool
                && !examples.contains_key(&key)
        });
        if unread {
            return None;
        }
        let assignment = FoldAssignment::new(self.spec.gold_folds);
        let folds = builtin_gold_folds(&self.spec.train, &self.labels, examples, assignment);
        let bits = self.spec.train.feature_bits;
        let outcomes: Vec<VerdictOutcome> = labels
            .iter()
            .filter_map(|l| {
                let key = pair_key(&l.pair_id);
                let facts = info(key);
                let (example, pool, m_best, corrected) = match examples.get(&key) {
                    // A pool pair the rule never sees (a duplicate, contaminated) is not
                    // measured, as in curate.
                    Some(e) if facts.in_pool => {
                        let (m_best, corrected) = facts.scored?;
                        if self
                            .conflicts
                            .outvoted_key(key, |k| self.verdict_of(k).is_some())
                        {
                            return None;
                        }
                        (e.clone(), true, m_best, corrected)
                    }
                    _ => (
                        TrainExample::from_pair(&label_pair(l)?.0, bits, false),
                        false,
                        0.0,
                        false,
                    ),
                };
                builtin_outcome(l, &example, pool, m_best, &folds, assignment, judges).map(|o| {
                    VerdictOutcome {
                        recorded_correction: pool && corrected,
                        ..o
                    }
                })
            })
            .collect();
        Some(assess(
            &outcomes,
            &self.spec.rule(),
            assignment.folds,
            best_rm.clone(),
        ))
    }

    /// Bytes of memory held by this shard's per-pair arrays and index, and by its
    /// index of valid rows.
    pub fn bytes(&self) -> usize {
        let per = 8 + 4 + 4 + 4 + 8 + 8;
        self.keys.capacity() * per
            + self.valid.capacity() * std::mem::size_of::<(u64, RowKey, PoolLoc)>()
            + self.index.len() * RescoreIndex::BYTES_PER_PAIR
    }
}

/// Rewards (margin, 0) of `pairs` from margins stored by sorted pair key: σ(r_c − r_r)
/// is then the stored p exactly.
/// Pairs re-scored per task: a few megabytes of features records, read in windows.
const RESCORE_CHUNK: usize = 8192;

/// The gold RM's margins of the pairs `due` (indices into the shard's arrays), in
/// `due`'s order. Reading each pair's features record is the expensive part of an
/// epoch: the records are read in store order, in windows (`PoolStore::read_each`),
/// chunks spread over the process's cores.
fn rescore(store: &PoolStore, locs: &[PoolLoc], gold: &GoldModel, due: &[u32]) -> Result<Vec<f32>> {
    let mut by_store: Vec<(PoolLoc, u32)> = due
        .iter()
        .enumerate()
        .map(|(at, &i)| (locs[i as usize], at as u32))
        .collect();
    by_store.par_sort_unstable();
    let chunks: Vec<Vec<(u32, f32)>> = by_store
        .par_chunks(RESCORE_CHUNK)
        .map(|chunk| {
            let chunk_locs: Vec<PoolLoc> = chunk.iter().map(|(loc, _)| *loc).collect();
            let mut out = Vec::with_capacity(chunk.len());
            store.read_each(&chunk_locs, |k, bytes| {
                let m = gold.margin(bytes).ok_or_else(|| {
                    Error::other("pool store", "a features record does not fit the gold RM")
                })?;
                out.push((chunk[k].1, m));
                Ok(())
            })?;
            Ok(out)
        })
        .collect::<Result<_>>()?;
    let mut fresh = vec![0.0f32; due.len()];
    for (at, m) in chunks.into_iter().flatten() {
        fresh[at as usize] = m;
    }
    Ok(fresh)
}

fn lookup_margins(
    keys: &[u64],
    margins: &[f32],
    pairs: &[&PreferencePair],
) -> std::result::Result<Vec<(f32, f32)>, ModelError> {
    pairs
        .iter()
        .map(|p| match keys.binary_search(&p.pair_key) {
            Ok(i) => Ok((margins[i], 0.0)),
            Err(_) => Err(ModelError::Cache(format!(
                "pair `{}` is not in serve's state (did the input change since it was saved?)",
                p.pair_id
            ))),
        })
        .collect()
}

/// Serve's models as scorers for a snapshot: margins looked up from this process's
/// shards (the reward of the chosen reply is the margin and of the rejected one zero,
/// so that σ(r_c − r_r) is the stored p exactly). A snapshot pass routes every pair to
/// the worker that scored it first, so its shard is among this process's.
pub struct StateScorer {
    pub states: Vec<Arc<std::sync::RwLock<PoolState>>>,
    pub gold: bool,
    pub fingerprint: String,
}

impl RewardModel for StateScorer {
    fn fingerprint(&self) -> String {
        self.fingerprint.clone()
    }

    fn score(&self, pairs: &[&PreferencePair]) -> std::result::Result<Vec<(f32, f32)>, ModelError> {
        let states: Vec<_> = self
            .states
            .iter()
            .map(|s| s.read().expect("state"))
            .collect();
        pairs
            .iter()
            .map(|p| {
                states
                    .iter()
                    .find_map(|s| {
                        let i = s.find(p.pair_key)?;
                        Some((if self.gold { s.m_gold[i] } else { s.m_best[i] }, 0.0))
                    })
                    .ok_or_else(|| {
                        ModelError::Cache(format!(
                            "pair `{}` is not in serve's state (did the input change since it was loaded?)",
                            p.pair_id
                        ))
                    })
            })
            .collect()
    }
}

/// One worker's shard as saved beside a snapshot (`OUT/state/pairs-E-wIIIII.bin`):
/// per scored pair its key, margins, norm and slack, and the index's running drift.
pub struct SavedPart {
    pub keys: Vec<u64>,
    pub m_best: Vec<f32>,
    pub m_gold: Vec<f32>,
    pub norm: Vec<f32>,
    pub slack: Vec<f32>,
    pub drift: f64,
}

/// Bytes per pair in a part: key u64, then m_best, m_gold, norm, slack as f32; after
/// an 8-byte header (the drift, f64).
const SAVED_PAIR_BYTES: usize = 24;

/// `state.json`: which epoch a saved serve state is of, how many workers made it,
/// which settings; written by worker 0 once every worker's part is written, so that
/// its presence means the whole state is there.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SavedStateMeta {
    pub epoch: u64,
    /// Workers of all processes that saved a part each (a restart with another
    /// number merges the parts and takes its own shards from them).
    pub workers: u64,
    pub pairs: u64,
    pub margin_error: f64,
    /// Examples the saved built-in gold trainer has seen.
    pub examples: u64,
    /// `spec_fingerprint` of the settings that made the state.
    pub spec: String,
    pub best_fingerprint: String,
    pub gold_fingerprint: String,
    /// The trainer file, if the gold RM is the built-in one.
    pub trainer: Option<String>,
}

/// What must match for a saved state to apply: everything in the curate spec that
/// shapes scores or decisions (not where output goes, nor how many workers).
pub fn spec_fingerprint(spec: &CurateSpec) -> String {
    let mut s = spec.clone();
    s.out.clear();
    s.gold.clear();
    // How the run is executed never changes the state.
    s.machine = crate::curate::MachineSettings::default();
    let mut json = serde_json::to_vec(&s).expect("spec serialises");
    json.extend_from_slice(STATE_RULES.as_bytes());
    format!("{:016x}", xxhash_rust::xxh3::xxh3_64(&json))
}

/// What a saved state was computed under beyond the spec. Changed when the rules that
/// shape a saved state change, so that a serve never resumes from a state the old rules
/// made: "in-force" since the built-in gold RM stopped learning from superseded labels
/// (issue 30 item 6).
const STATE_RULES: &str = "in-force";

fn part_name(epoch: u64, worker: usize) -> String {
    format!("pairs-{epoch:010}-w{worker:05}.bin")
}

impl PoolState {
    /// Writes this worker's part of the state of `epoch` under `dir`.
    pub fn save_part(&self, dir: &Location, epoch: u64, worker: usize) -> Result<()> {
        let mut slack = vec![f32::INFINITY; self.keys.len()];
        for (i, s) in self.index.entries() {
            slack[i as usize] = s;
        }
        let mut bytes = Vec::with_capacity(8 + self.keys.len() * SAVED_PAIR_BYTES);
        bytes.extend_from_slice(&self.index.drift().to_le_bytes());
        for (i, (key, s)) in self.keys.iter().zip(&slack).enumerate() {
            bytes.extend_from_slice(&key.to_le_bytes());
            for v in [self.m_best[i], self.m_gold[i], self.norm[i], *s] {
                bytes.extend_from_slice(&v.to_le_bytes());
            }
        }
        dir.child(&part_name(epoch, worker)).put(bytes)
    }

    /// Worker 0's half of saving, once every worker's part is written: the trainer
    /// and `state.json` (last), then the files of older states are deleted.
    pub fn save_meta(&self, dir: &Location, epoch: u64, workers: usize, pairs: u64) -> Result<()> {
        let trainer_name = format!("trainer-{epoch:010}.bin");
        let mut trainer_file = None;
        let mut examples = 0;
        if let Some(t) = self.gold.trainer() {
            let (weights, g2, n) = t.parts();
            let mut trainer = Vec::with_capacity(8 * weights.len());
            for v in weights.iter().chain(g2) {
                trainer.extend_from_slice(&v.to_le_bytes());
            }
            dir.child(&trainer_name).put(trainer)?;
            trainer_file = Some(trainer_name);
            examples = n;
        }
        let meta = SavedStateMeta {
            epoch,
            workers: workers as u64,
            pairs,
            margin_error: self.margin_error,
            examples: examples as u64,
            spec: spec_fingerprint(&self.spec),
            best_fingerprint: self.best_fingerprint.clone(),
            gold_fingerprint: self.gold_fingerprint(),
            trainer: trainer_file,
        };
        synpref_engine::output::write_json(&dir.child("state.json"), &meta)?;
        let current = format!("-{epoch:010}");
        for name in dir.list_names()? {
            if name.ends_with(".bin") && !name.contains(&current) {
                dir.child(&name).delete()?;
            }
        }
        Ok(())
    }

    /// The saved state's description under `dir`, if there is one that fits `spec`.
    pub fn load_meta(dir: &Location, spec: &CurateSpec) -> Result<Option<SavedStateMeta>> {
        let meta_loc = dir.child("state.json");
        let meta: SavedStateMeta = match meta_loc.get() {
            Ok(b) => match serde_json::from_slice(&b) {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(file = %meta_loc.url, error = %e, "unreadable saved serve state; recomputing");
                    return Ok(None);
                }
            },
            Err(_) => return Ok(None),
        };
        if meta.spec != spec_fingerprint(spec) {
            tracing::warn!("the saved serve state was made with other settings; recomputing");
            return Ok(None);
        }
        Ok(Some(meta))
    }

    /// One worker's saved part.
    pub fn load_part(dir: &Location, meta: &SavedStateMeta, worker: usize) -> Result<SavedPart> {
        let loc = dir.child(&part_name(meta.epoch, worker));
        let bytes = loc.get()?;
        if bytes.len() < 8 || (bytes.len() - 8) % SAVED_PAIR_BYTES != 0 {
            return Err(Error::bad_file(
                &loc.url,
                "a saved state part has the wrong size",
            ));
        }
        let n = (bytes.len() - 8) / SAVED_PAIR_BYTES;
        let mut part = SavedPart {
            keys: Vec::with_capacity(n),
            m_best: Vec::with_capacity(n),
            m_gold: Vec::with_capacity(n),
            norm: Vec::with_capacity(n),
            slack: Vec::with_capacity(n),
            drift: f64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")),
        };
        for rec in bytes[8..].chunks_exact(SAVED_PAIR_BYTES) {
            part.keys
                .push(u64::from_le_bytes(rec[..8].try_into().expect("8 bytes")));
            let v = f32s(&rec[8..]);
            part.m_best.push(v[0]);
            part.m_gold.push(v[1]);
            part.norm.push(v[2]);
            part.slack.push(v[3]);
        }
        Ok(part)
    }

    /// The saved built-in trainer, if the state has one.
    pub fn load_trainer(
        dir: &Location,
        meta: &SavedStateMeta,
        spec: &CurateSpec,
    ) -> Result<Option<OnlineTrainer>> {
        let Some(name) = &meta.trainer else {
            return Ok(None);
        };
        let loc = dir.child(name);
        let t = f32s(&loc.get()?);
        let half = t.len() / 2;
        OnlineTrainer::from_parts(
            &spec.train,
            t[..half].to_vec(),
            t[half..].to_vec(),
            meta.examples as usize,
        )
        .map(Some)
        .ok_or_else(|| Error::bad_file(&loc.url, "the trainer file does not fit the feature bits"))
    }

    /// Every saved part, merged into one sorted by key (a restart may shard the pool
    /// over another number of workers than saved it).
    pub fn load_all_parts(dir: &Location, meta: &SavedStateMeta) -> Result<SavedPart> {
        let parts = (0..meta.workers as usize)
            .map(|w| PoolState::load_part(dir, meta, w))
            .collect::<Result<Vec<_>>>()?;
        let drift = parts.first().map(|p| p.drift).unwrap_or(0.0);
        if parts.iter().any(|p| p.drift.to_bits() != drift.to_bits()) {
            return Err(Error::other(
                "serve state",
                "the saved parts disagree on the gold RM's drift",
            ));
        }
        let mut all: Vec<(u64, [f32; 4])> = parts
            .iter()
            .flat_map(|p| {
                (0..p.keys.len())
                    .map(move |i| (p.keys[i], [p.m_best[i], p.m_gold[i], p.norm[i], p.slack[i]]))
            })
            .collect();
        all.sort_unstable_by_key(|x| x.0);
        Ok(SavedPart {
            keys: all.iter().map(|x| x.0).collect(),
            m_best: all.iter().map(|x| x.1[0]).collect(),
            m_gold: all.iter().map(|x| x.1[1]).collect(),
            norm: all.iter().map(|x| x.1[2]).collect(),
            slack: all.iter().map(|x| x.1[3]).collect(),
            drift,
        })
    }

    /// Takes this shard's saved margins, norms and index from the merged saved state,
    /// and the saved gold RM, after the pass that rebuilt the pool store.
    pub fn restore(
        &mut self,
        saved: &SavedPart,
        trainer: Option<OnlineTrainer>,
        meta: &SavedStateMeta,
    ) -> Result<()> {
        let n = self.keys.len();
        let mut entries = Vec::new();
        for i in 0..n {
            let j = saved.keys.binary_search(&self.keys[i]).map_err(|_| {
                Error::other(
                    "serve state",
                    "the saved state holds other pairs than the input (did the input change?)",
                )
            })?;
            self.m_best[i] = saved.m_best[j];
            self.m_gold[i] = saved.m_gold[j];
            self.norm[i] = saved.norm[j];
            if saved.slack[j].is_finite() {
                entries.push((i as u32, saved.slack[j]));
            }
        }
        self.index = RescoreIndex::restore(self.spec.threshold, saved.drift, &entries);
        self.gold.restore(trainer);
        self.margin_error = self.margin_error.max(meta.margin_error);
        self.best_fingerprint = meta.best_fingerprint.clone();
        Ok(())
    }
}

/// Margins looked up from saved parts, for the pass that rebuilds the pool store on
/// restart: no model runs. Keys sorted.
pub struct SavedScorer {
    pub keys: Arc<Vec<u64>>,
    pub margins: Arc<Vec<f32>>,
    pub fingerprint: String,
}

impl SavedScorer {
    /// The best and gold scorers over a merged saved state.
    pub fn pair(saved: &SavedPart, meta: &SavedStateMeta) -> (SavedScorer, SavedScorer) {
        let keys = Arc::new(saved.keys.clone());
        (
            SavedScorer {
                keys: keys.clone(),
                margins: Arc::new(saved.m_best.clone()),
                fingerprint: meta.best_fingerprint.clone(),
            },
            SavedScorer {
                keys,
                margins: Arc::new(saved.m_gold.clone()),
                fingerprint: meta.gold_fingerprint.clone(),
            },
        )
    }
}

impl RewardModel for SavedScorer {
    fn fingerprint(&self) -> String {
        self.fingerprint.clone()
    }

    fn score(&self, pairs: &[&PreferencePair]) -> std::result::Result<Vec<(f32, f32)>, ModelError> {
        lookup_margins(&self.keys, &self.margins, pairs)
    }
}
