//! Serve's per-pair state and the epoch step that updates it.
//!
//! Per scored pool pair serve keeps its key, its two margins, the norm ‖φ(y_w) − φ(y_l)‖
//! of its gold-RM features and where its text is in the pool store; plus, for every
//! valid row, its pair key and store location (a gold label names a pair id, and the
//! gold RM trains on every valid row with that id, as in curate). The arrays are sorted
//! by pair key. `RescoreIndex` orders the scored pairs by how far the gold RM's weights
//! must move before a pair's decision can change.

use std::sync::{Arc, Mutex};

use rayon::prelude::*;
use rustc_hash::FxHashMap;
use synpref_engine::extras::ExtrasCodec;
use synpref_engine::hashing::pair_key;
use synpref_engine::model::{GoldLabel, PreferencePair, RowKey, Verdict};
use synpref_engine::output::OutputSchema;
use synpref_engine::pool_store::{PoolLoc, PoolStore, PoolWriter};
use synpref_engine::side::GoldLabels;
use synpref_engine::store::Location;
use synpref_engine::{Error, Result};
use synpref_operators::decide_incrementally::PairFact;
use synpref_operators::models::builtin::{OnlineTrainer, TrainExample};
use synpref_operators::models::margin_bound::{weight_drift, RescoreIndex, MARGIN_ROUNDING};
use synpref_operators::models::{ModelError, RewardModel};
use synpref_operators::score::ScoredPair;

use super::gold::{f32s, GoldFeatures, GoldModel};
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
    pub error: Option<String>,
}

/// The curate tap serve runs its initial pass with.
pub struct ServeTap {
    pub store: Arc<PoolStore>,
    pub gold: GoldFeatures,
    pub workers: Vec<Mutex<WorkerCapture>>,
    pub schema: Mutex<Option<(OutputSchema, Arc<ExtrasCodec>, Arc<Vec<String>>)>>,
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

/// Pool-store file numbers of the features files (one per worker, after the pairs').
const FEATURE_FILES: u16 = 1024;

/// Serve's first curate pass: curate's own stages (`select`, score,
/// `decide_and_write`), composed with serve's two captures: every valid row into the
/// pool store, and every scored pair's margins and gold features record.
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
        use synpref_operators::score::Score;
        use synpref_operators::validate::Validate;
        use timely::dataflow::operators::vec::Input;
        use timely::dataflow::operators::Inspect;
        self.tap.schema(&g.schema, &g.extras, &g.file_urls);
        let settings = curate::validate_settings(&plan.spec);
        let dataflow = worker.next_dataflow_index();
        let ngrams = plan.ngrams.clone();
        let index = worker.index();
        let (pool, scores) = (self.tap.clone(), self.tap.clone());
        let (input, probe) = worker.dataflow_named::<u64, _, _>("Curate", move |scope| {
            let (input, raw) = scope.new_input::<synpref_engine::input::RawRecord>();
            let (valid, invalid) = raw.validate(settings);
            let valid = valid.inspect(move |p| pool.valid(index, p));
            let (clean, routed) =
                curate::select(valid, invalid, g.content_index, g.pair_index, ngrams);
            let scored = clean
                .score(g.scorers.0, g.scorers.1, g.failure)
                .inspect(move |s| scores.scored(index, s));
            let probe = curate::decide_and_write(scored, routed, g.rule, g.sinks);
            (input, probe)
        });
        (input, probe, dataflow)
    }
}

/// Serve's state between epochs.
pub struct PoolState {
    pub store: Arc<PoolStore>,
    /// Every valid row: (pair key, location), sorted.
    pub valid: Vec<(u64, PoolLoc)>,
    /// Scored pairs, sorted by key.
    pub keys: Vec<u64>,
    pub m_best: Vec<f32>,
    pub m_gold: Vec<f32>,
    pub norm: Vec<f32>,
    pub loc: Vec<PoolLoc>,
    /// Where each scored pair's gold-RM features record is (`GoldFeatures::record`).
    pub features: Vec<PoolLoc>,
    /// Keys of the scored pairs that are an earlier pass's recorded human corrections,
    /// sorted (the self-measurement counts them as curate does).
    pub corrected: Vec<u64>,
    pub index: RescoreIndex,
    /// All labels applied so far.
    pub labels: GoldLabels,
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

/// What an epoch changed.
#[derive(Debug, Default)]
pub struct EpochChange {
    pub updates: Vec<((u64, PairFact), isize)>,
    pub rescored: usize,
    pub drift: f64,
    pub train_s: f64,
    pub rescore_s: f64,
}

impl PoolState {
    /// Builds the state from the initial pass's captures (sorted, so the same input
    /// gives the same state with any number of workers).
    pub fn from_captures(
        tap: &ServeTap,
        labels: GoldLabels,
        spec: CurateSpec,
        saved: Option<Saved>,
    ) -> Result<PoolState> {
        let mut valid3 = Vec::new();
        let mut scored = Vec::new();
        for slot in &tap.workers {
            let mut c = slot.lock().expect("capture");
            if let Some(e) = c.error.take() {
                return Err(Error::other("pool store", e));
            }
            if let Some(w) = c.writer.take() {
                tap.store.finish(w)?;
            }
            if let Some(w) = c.features.take() {
                tap.store.finish(w)?;
            }
            valid3.append(&mut c.valid);
            scored.append(&mut c.scored);
        }
        valid3.sort_unstable_by_key(|v| (v.0, v.1));
        scored.sort_unstable_by_key(|s| s.key);
        let mut loc = Vec::with_capacity(scored.len());
        for s in &scored {
            let at = valid3.partition_point(|v| (v.0, v.1) < (s.key, s.row));
            match valid3.get(at) {
                Some(v) if v.0 == s.key && v.1 == s.row => loc.push(v.2),
                _ => {
                    return Err(Error::other(
                        "serve",
                        "a scored pair is missing from the pool store",
                    ))
                }
            }
        }
        let valid = valid3.into_iter().map(|(k, _, l)| (k, l)).collect();
        let mut index = RescoreIndex::new(spec.threshold);
        for (i, s) in scored.iter().enumerate() {
            index.insert(i as u32, s.m_gold, s.norm);
        }
        let mut state = PoolState {
            store: tap.store.clone(),
            valid,
            keys: scored.iter().map(|s| s.key).collect(),
            m_best: scored.iter().map(|s| s.m_best).collect(),
            m_gold: scored.iter().map(|s| s.m_gold).collect(),
            norm: scored.iter().map(|s| s.norm).collect(),
            features: scored.iter().map(|s| s.features).collect(),
            corrected: scored
                .iter()
                .filter(|s| s.corrected)
                .map(|s| s.key)
                .collect(),
            loc,
            index,
            labels: GoldLabels::default(),
            gold: GoldModel::new(&spec, &tap.gold),
            margin_error: 0.0,
            spec,
            best_fingerprint: String::new(),
        };
        // The initial labels, learned exactly as curate learns them; a saved built-in
        // trainer is that fold already, so its labels are only recorded.
        let trainer_saved = saved.as_ref().is_some_and(|s| s.trainer.is_some());
        for label in labels.stream {
            if trainer_saved {
                state.labels.insert(label);
            } else {
                state.learn(label)?;
            }
        }
        state.gold.refit(&state.spec, &state.labels)?;
        state.margin_error = state.gold.margin_error_bound();
        if let Some(saved) = saved {
            state.restore(saved)?;
        }
        Ok(state)
    }

    /// The gold RM's fingerprint, as curate's manifest gives it.
    pub fn gold_fingerprint(&self) -> String {
        self.gold.fingerprint()
    }

    /// Takes one label record: it supersedes per DESIGN §4 and extends the gold RM's
    /// training set (call `GoldModel::refit` after a batch).
    fn learn(&mut self, label: GoldLabel) -> Result<()> {
        let (store, valid) = (&self.store, &self.valid);
        let rows = |key: u64| -> Result<Vec<PreferencePair>> {
            let at = valid.partition_point(|v| v.0 < key);
            valid[at..]
                .iter()
                .take_while(|v| v.0 == key)
                .map(|v| store.read(v.1))
                .collect()
        };
        self.gold.learn(&self.spec, &label, &rows)?;
        self.labels.insert(label);
        Ok(())
    }

    /// Position of a scored pair by key.
    pub fn find(&self, key: u64) -> Option<usize> {
        self.keys.binary_search(&key).ok()
    }

    /// Applies one batch of labels: the verdicts it changes, the gold RM's stream
    /// extended by it, and the re-scored pairs its weight move may have carried across
    /// the threshold.
    pub fn apply(&mut self, batch: Vec<GoldLabel>) -> Result<EpochChange> {
        let mut change = EpochChange::default();
        let mut before: FxHashMap<u64, Option<Verdict>> = FxHashMap::default();
        let t = std::time::Instant::now();
        let old_weights = self.gold.weights().to_vec();
        for label in batch {
            let key = pair_key(&label.pair_id);
            let old = self.labels.labels.get(&key).map(|l| l.verdict);
            before.entry(key).or_insert(old);
            self.learn(label)?;
        }
        self.gold.refit(&self.spec, &self.labels)?;
        change.train_s = t.elapsed().as_secs_f64();
        let mut touched: Vec<(u64, Option<Verdict>)> = before.into_iter().collect();
        touched.sort_unstable();
        for (key, old) in touched {
            let new = self.labels.labels.get(&key).map(|l| l.verdict);
            if old != new {
                if let Some(v) = old {
                    change.updates.push(((key, PairFact::Verdict(v)), -1));
                }
                if let Some(v) = new {
                    change.updates.push(((key, PairFact::Verdict(v)), 1));
                }
            }
        }
        let t = std::time::Instant::now();
        let gold = &self.gold;
        change.drift = weight_drift(&old_weights, gold.weights());
        self.margin_error = self.margin_error.max(gold.margin_error_bound());
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
        // Re-scoring reads each pair's features from the pool store: the expensive part
        // of an epoch, spread over all cores.
        let (store, locs) = (&self.store, &self.features);
        let fresh: Vec<Result<f32>> = due
            .par_iter()
            .map(|&i| {
                let bytes = store.read_bytes(locs[i as usize])?;
                gold.margin(&bytes).ok_or_else(|| {
                    Error::other("pool store", "a features record does not fit the gold RM")
                })
            })
            .collect();
        for (i, m) in due.into_iter().zip(fresh) {
            let (i, m) = (i as usize, m?);
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

    /// Bytes of memory per scored pair held by these arrays and the index (the valid
    /// rows' index counted over the scored pairs).
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
        use synpref_operators::training::folds::FoldAssignment;
        use synpref_operators::training::gold::{builtin_gold_folds, label_pair};
        use synpref_operators::training::quality::{assess, builtin_outcome, VerdictOutcome};
        let GoldModel::Builtin { examples, .. } = &self.gold else {
            return None;
        };
        let in_pool = |key: u64| self.valid.binary_search_by_key(&key, |v| v.0).is_ok();
        let mut labels: Vec<&GoldLabel> = self.labels.labels.values().collect();
        labels.sort_by(|a, b| a.pair_id.cmp(&b.pair_id));
        // Every decisive pool label the gold RM learns from a pool row must have its row.
        let unread = labels.iter().any(|l| {
            let key = pair_key(&l.pair_id);
            l.text.is_none()
                && l.verdict != Verdict::Undecidable
                && in_pool(key)
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
                let (example, pool, m_best) = match examples.get(&key) {
                    // A pool pair the rule never sees (a duplicate, contaminated) is not
                    // measured, as in curate.
                    Some(e) if in_pool(key) => (e.clone(), true, self.m_best[self.find(key)?]),
                    _ => (
                        TrainExample::from_pair(&label_pair(l)?.0, bits, false),
                        false,
                        0.0,
                    ),
                };
                builtin_outcome(l, &example, pool, m_best, &folds, assignment, judges).map(|o| {
                    VerdictOutcome {
                        recorded_correction: pool && self.corrected.binary_search(&key).is_ok(),
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

    pub fn bytes_per_pair(&self) -> f64 {
        let n = self.keys.len().max(1) as f64;
        let per = 8 + 4 + 4 + 4 + 8 + 8;
        (self.keys.capacity() * per
            + self.valid.capacity() * 16
            + self.index.len() * RescoreIndex::BYTES_PER_PAIR) as f64
            / n
    }
}

/// Rewards (margin, 0) of `pairs` from margins stored by sorted pair key: σ(r_c − r_r)
/// is then the stored p exactly.
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

/// Serve's models as scorers for a snapshot: margins looked up from the state (the
/// reward of the chosen reply is the margin and of the rejected one zero, so that
/// σ(r_c − r_r) is the stored p exactly).
pub struct StateScorer {
    pub state: Arc<std::sync::RwLock<PoolState>>,
    pub gold: bool,
    pub fingerprint: String,
}

impl RewardModel for StateScorer {
    fn fingerprint(&self) -> String {
        self.fingerprint.clone()
    }

    fn score(&self, pairs: &[&PreferencePair]) -> std::result::Result<Vec<(f32, f32)>, ModelError> {
        let s = self.state.read().expect("state");
        let margins = if self.gold { &s.m_gold } else { &s.m_best };
        lookup_margins(&s.keys, margins, pairs)
    }
}

/// Serve's state as saved beside a snapshot (`OUT/state/`), so that a restart needs no
/// model: per scored pair its key, margins, norm and slack; the built-in gold RM's
/// trainer (an encoder head is retrained from the labels, its features coming from the
/// score cache); the running drift. `state.json` is written last and names the epoch.
pub struct Saved {
    pub epoch: u64,
    pub best_fingerprint: String,
    pub gold_fingerprint: String,
    pub margin_error: f64,
    pub keys: Vec<u64>,
    pub m_best: Vec<f32>,
    pub m_gold: Vec<f32>,
    pub norm: Vec<f32>,
    pub slack: Vec<f32>,
    pub drift: f64,
    pub trainer: Option<OnlineTrainer>,
}

/// Bytes per pair in `pairs-E.bin`: key u64, then m_best, m_gold, norm, slack as f32.
const SAVED_PAIR_BYTES: usize = 24;

/// What must match for a saved state to apply: everything in the curate spec that
/// shapes scores or decisions (not where output goes, nor how many workers).
/// `state.json`: what a saved serve state holds and which settings made it.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SavedStateMeta {
    pub epoch: u64,
    pub pairs: u64,
    pub drift: f64,
    pub margin_error: f64,
    /// Examples the saved built-in gold trainer has seen.
    pub examples: u64,
    /// `spec_fingerprint` of the settings that made the state.
    pub spec: String,
    pub best_fingerprint: String,
    pub gold_fingerprint: String,
    /// The pairs file, then the trainer file if there is one.
    pub files: Vec<String>,
}

pub fn spec_fingerprint(spec: &CurateSpec) -> String {
    let mut s = spec.clone();
    s.out.clear();
    s.gold.clear();
    // How the run is executed never changes the state.
    s.machine = crate::curate::MachineSettings::default();
    let json = serde_json::to_vec(&s).expect("spec serialises");
    format!("{:016x}", xxhash_rust::xxh3::xxh3_64(&json))
}

impl PoolState {
    /// Writes the state of `epoch` under `dir`; `state.json` last.
    pub fn save(&self, dir: &Location, epoch: u64) -> Result<()> {
        let mut slack = vec![f32::INFINITY; self.keys.len()];
        for (i, s) in self.index.entries() {
            slack[i as usize] = s;
        }
        let mut pairs = Vec::with_capacity(self.keys.len() * SAVED_PAIR_BYTES);
        for i in 0..self.keys.len() {
            pairs.extend_from_slice(&self.keys[i].to_le_bytes());
            for v in [self.m_best[i], self.m_gold[i], self.norm[i], slack[i]] {
                pairs.extend_from_slice(&v.to_le_bytes());
            }
        }
        let pairs_name = format!("pairs-{epoch:010}.bin");
        let trainer_name = format!("trainer-{epoch:010}.bin");
        dir.child(&pairs_name).put(pairs)?;
        let mut files = vec![pairs_name.clone()];
        let mut examples = 0;
        if let Some(t) = self.gold.trainer() {
            let (weights, g2, n) = t.parts();
            let mut trainer = Vec::with_capacity(8 * weights.len());
            for v in weights.iter().chain(g2) {
                trainer.extend_from_slice(&v.to_le_bytes());
            }
            dir.child(&trainer_name).put(trainer)?;
            files.push(trainer_name.clone());
            examples = n;
        }
        let meta = SavedStateMeta {
            epoch,
            pairs: self.keys.len() as u64,
            drift: self.index.drift(),
            margin_error: self.margin_error,
            examples: examples as u64,
            spec: spec_fingerprint(&self.spec),
            best_fingerprint: self.best_fingerprint.clone(),
            gold_fingerprint: self.gold_fingerprint(),
            files,
        };
        synpref_engine::output::write_json(&dir.child("state.json"), &meta)?;
        // Older states are no longer needed.
        for name in dir.list_names()? {
            if name.ends_with(".bin") && name != pairs_name && name != trainer_name {
                dir.child(&name).delete()?;
            }
        }
        Ok(())
    }

    /// The saved state under `dir`, if there is one that fits `spec`.
    pub fn load(dir: &Location, spec: &CurateSpec) -> Result<Option<Saved>> {
        let meta_loc = dir.child("state.json");
        let meta: SavedStateMeta = match meta_loc.get() {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| Error::other(&meta_loc.url, e))?,
            Err(_) => return Ok(None),
        };
        if meta.spec != spec_fingerprint(spec) {
            tracing::warn!("the saved serve state was made with other settings; recomputing");
            return Ok(None);
        }
        let bad = |m: &str| Error::bad_file(&meta_loc.url, m.to_string());
        let (epoch, n) = (meta.epoch, meta.pairs as usize);
        let name = |i: usize| {
            meta.files
                .get(i)
                .map(String::as_str)
                .ok_or_else(|| bad("no files"))
        };
        let pairs = dir.child(name(0)?).get()?;
        if pairs.len() != n * SAVED_PAIR_BYTES {
            return Err(bad("pairs file has the wrong size"));
        }
        let mut saved = Saved {
            epoch,
            best_fingerprint: meta.best_fingerprint.clone(),
            gold_fingerprint: meta.gold_fingerprint.clone(),
            margin_error: meta.margin_error,
            keys: Vec::with_capacity(n),
            m_best: Vec::with_capacity(n),
            m_gold: Vec::with_capacity(n),
            norm: Vec::with_capacity(n),
            slack: Vec::with_capacity(n),
            drift: meta.drift,
            trainer: None,
        };
        for rec in pairs.chunks_exact(SAVED_PAIR_BYTES) {
            saved
                .keys
                .push(u64::from_le_bytes(rec[..8].try_into().expect("8 bytes")));
            let v = f32s(&rec[8..]);
            saved.m_best.push(v[0]);
            saved.m_gold.push(v[1]);
            saved.norm.push(v[2]);
            saved.slack.push(v[3]);
        }
        if meta.files.len() > 1 {
            let t = f32s(&dir.child(name(1)?).get()?);
            let half = t.len() / 2;
            let examples = meta.examples as usize;
            saved.trainer = Some(
                OnlineTrainer::from_parts(
                    &spec.train,
                    t[..half].to_vec(),
                    t[half..].to_vec(),
                    examples,
                )
                .ok_or_else(|| bad("trainer file does not fit the feature bits"))?,
            );
        }
        Ok(Some(saved))
    }

    /// Takes the saved margins, norms, index and gold RM, after a pass that rebuilt the
    /// pool store and found the same scored pairs.
    fn restore(&mut self, saved: Saved) -> Result<()> {
        if saved.keys != self.keys {
            return Err(Error::other(
                "serve state",
                "the saved state holds other pairs than the input (did the input change?)",
            ));
        }
        self.m_best = saved.m_best;
        self.m_gold = saved.m_gold;
        self.norm = saved.norm;
        let entries: Vec<(u32, f32)> = saved
            .slack
            .iter()
            .enumerate()
            .filter(|(_, s)| s.is_finite())
            .map(|(i, s)| (i as u32, *s))
            .collect();
        self.index = RescoreIndex::restore(self.spec.threshold, saved.drift, &entries);
        self.gold.restore(saved.trainer);
        self.margin_error = self.margin_error.max(saved.margin_error);
        self.best_fingerprint = saved.best_fingerprint;
        Ok(())
    }
}

/// Margins looked up from a saved state, for the pass that rebuilds the pool store on
/// restart: no model runs.
pub struct SavedScorer {
    pub keys: Arc<Vec<u64>>,
    pub margins: Arc<Vec<f32>>,
    pub fingerprint: String,
}

impl RewardModel for SavedScorer {
    fn fingerprint(&self) -> String {
        self.fingerprint.clone()
    }

    fn score(&self, pairs: &[&PreferencePair]) -> std::result::Result<Vec<(f32, f32)>, ModelError> {
        lookup_margins(&self.keys, &self.margins, pairs)
    }
}
