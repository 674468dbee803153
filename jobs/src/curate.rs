//! `curate`: the batch Stage-2 job (DESIGN §1, §2).
//!
//! The spec (`CurateSpec`) is plain data with documented defaults; `prepare` validates
//! it and reads everything small (input plan, gold labels, judge votes, truth,
//! benchmark prompts) into a `CuratePlan` before any worker starts, so that bad input
//! fails fast with exit 2; `run_worker` builds and runs the dataflows on each timely
//! worker:
//!
//! 1. Survey: read all shards, validate, index the first row of every content hash and
//!    pair id, and send training examples to worker 0 (a deterministic sample of the
//!    pool for the best RM; the gold-labelled pairs for the gold RM).
//! 2. Barrier: file-level checks of JSONL inputs, the output schema, and the two
//!    built-in models trained on worker 0 and handed to all workers.
//! 3. Curate: read again; validate → dedup → unique pair ids → decontaminate → score →
//!    consistency rule → Parquet parts, with every routed-away row written beside.
//! 4. Barrier: counts and files from all workers; worker 0 writes report.json, then
//!    manifest.json last (its presence means the run committed).

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use arrow::datatypes::{DataType, Field};
use rustc_hash::{FxHashMap, FxHashSet};
use serde::{Deserialize, Serialize};
use synpref_engine::collective::{agree_on_errors, all_gather, compute_on_leader, PARK};
use synpref_engine::extras::ExtrasCodec;
use synpref_engine::hashing::{content_key, pair_key, unit_interval};
use synpref_engine::input::{
    plan_input, ConvForm, FileFormat, InputPlan, JsonlObservation, RawRecord, Shard, ShardReader,
};
use synpref_engine::model::{
    Attributes, Destination, GoldLabel, PreferencePair, Reason, RowKey, Verdict, ATTRIBUTE_COLUMNS,
};
use synpref_engine::output::{write_json, OutputSchema, PartWriter, WrittenFile};
use synpref_engine::side::{read_benchmark_prompts, GoldLabels, JudgeVotes, Truth};
use synpref_engine::store::{resolve, Location};
use synpref_engine::{Error, Result};
use synpref_operators::collect_examples::CollectExamples;
use synpref_operators::consistency_rule::{ConsistencyRule, RuleInputs, RuleSettings};
use synpref_operators::decontaminate::{Decontaminate, NgramIndex};
use synpref_operators::dedup::Dedup;
use synpref_operators::index_first::{FirstIndex, IndexFirst, KeyIndex};
use synpref_operators::models::builtin::{
    HashedBtModel, OnlineTrainer, TrainExample, TrainSettings,
};
use synpref_operators::models::encoder::{delta, DenseHead, HeadExample, HeadSettings};
use synpref_operators::models::{
    load_features, CachedFeatures, EncoderScorer, HfScorer, ModelOptions, ModelSpec, ModelUsage,
    RewardModel,
};
use synpref_operators::score::ModelFailure;
use synpref_operators::score::{Score, ScoredPair};
use synpref_operators::unique_pair_ids::UniquePairIds;
use synpref_operators::validate::{Validate, ValidateSettings};
use synpref_operators::write_parts::{OutputSinks, SinkStats, WriteParts};
use timely::dataflow::operators::vec::{Input, Map};
use timely::dataflow::operators::{Concatenate, Inspect, Probe};
use timely::dataflow::{InputHandleVec, ProbeHandle};
use timely::worker::Worker;

/// Batches a worker may run ahead of its slowest operator: enough to overlap reading
/// with processing, few enough that memory holds only a few batches per worker.
const PIPELINE_SLACK: u64 = 2;
/// Salts of the deterministic samples (any fixed values; changing one changes the sample).
const SALT_SAMPLE: u64 = 0x5a17_0001;
const SALT_HELDOUT: u64 = 0x5a17_0002;

/// The settings of a curate run. Every knob's name, default and meaning is here.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CurateSpec {
    /// Input pairs: a Parquet/JSONL file, a directory or a glob, local or object store.
    pub pairs: String,
    /// Gold labels (human verdicts): pair_id, verdict [, annotator, labeled_at, texts].
    pub gold: String,
    /// Output directory.
    pub out: String,
    /// Timely worker threads in this process.
    pub workers: usize,
    /// τ of the consistency rule (paper default 0.5).
    pub threshold: f64,
    /// Ground truth (pair_id, preference) to measure label agreement before and after.
    pub truth: Option<String>,
    /// LLM-judge votes (pair_id, verdict), consulted when p_best ≤ τ.
    pub judges: Option<String>,
    /// Benchmark prompt files for 13-gram decontamination.
    pub decontaminate: Vec<String>,
    /// Write RM-discarded pairs with chosen and rejected swapped.
    pub emit_flipped: bool,
    /// Largest accepted pair in bytes of text; larger rows are quarantined.
    pub max_pair_bytes: usize,
    /// The best RM: `builtin` (hashed BT model trained on a sample of the pool's labels).
    pub best_rm: String,
    /// The gold RM: `builtin` (hashed BT model trained on the gold labels).
    pub gold_rm: String,
    /// Most pool pairs the best RM trains on (a deterministic sample by pair id): 100K
    /// pairs reach the held-out accuracy plateau of the hashed linear model on
    /// generated data (docs/benchmarks.md) at a fraction of a second per epoch.
    pub best_rm_sample: u64,
    /// Settings of transformer models (`hf:`, `encoder:` specs).
    pub models: ModelOptions,
    /// Score-cache URL for transformer models (`None`: no cache).
    pub score_cache: Option<String>,
    /// Share of the sample held out to choose the best RM's checkpoint.
    pub heldout_share: f64,
    /// Training of the built-in models (the gold RM makes one online pass over the
    /// label stream, `train_builtin_gold`, and ignores `epochs`).
    pub train: TrainSettings,
    /// Rows per read batch (the unit of pipelining; the output does not depend on it).
    pub batch_rows: usize,
    /// Draw progress bars (they also hide themselves when stderr is not a terminal).
    pub progress: bool,
}

impl Default for CurateSpec {
    fn default() -> Self {
        CurateSpec {
            pairs: String::new(),
            gold: String::new(),
            out: String::new(),
            workers: 1,
            threshold: 0.5,
            truth: None,
            judges: None,
            decontaminate: Vec::new(),
            emit_flipped: false,
            max_pair_bytes: 4 << 20,
            best_rm: "builtin".into(),
            gold_rm: "builtin".into(),
            best_rm_sample: 100_000,
            models: ModelOptions::default(),
            score_cache: None,
            heldout_share: 0.1,
            train: TrainSettings::default(),
            batch_rows: synpref_engine::input::READ_BATCH_ROWS,
            progress: true,
        }
    }
}

impl CurateSpec {
    pub fn validate(&self) -> Result<()> {
        if self.pairs.is_empty() {
            return Err(Error::setting("--pairs", "is required"));
        }
        if self.gold.is_empty() {
            return Err(Error::setting("--gold", "is required"));
        }
        if self.out.is_empty() {
            return Err(Error::setting("--out", "is required"));
        }
        if self.workers == 0 || self.workers > 1024 {
            return Err(Error::setting(
                "--workers",
                format!("{} is not between 1 and 1024", self.workers),
            ));
        }
        if !(self.threshold > 0.0 && self.threshold < 1.0) {
            return Err(Error::setting(
                "--threshold",
                format!("{} is not strictly between 0 and 1", self.threshold),
            ));
        }
        if !(0.0..0.9).contains(&self.heldout_share) {
            return Err(Error::setting("heldout_share", "must be in [0, 0.9)"));
        }
        if self.batch_rows == 0 || self.batch_rows > 1 << 20 {
            return Err(Error::setting(
                "--batch-rows",
                format!("{} is not between 1 and 1048576", self.batch_rows),
            ));
        }
        if self.max_pair_bytes == 0 {
            return Err(Error::setting("--max-pair-bytes", "must be positive"));
        }
        if self.train.feature_bits < 10 || self.train.feature_bits > 28 {
            return Err(Error::setting(
                "--feature-bits",
                "must be between 10 and 28",
            ));
        }
        for (flag, spec) in [("--best-rm", &self.best_rm), ("--gold-rm", &self.gold_rm)] {
            ModelSpec::parse(spec).map_err(|e| Error::setting(flag, e))?;
        }
        Ok(())
    }
}

/// What `serve` adds to a curate run: it sees every valid and every scored pair (to
/// build its state), and for snapshots it supplies the scorers instead of training.
#[derive(Clone, Default)]
pub struct CurateHooks {
    pub tap: Option<Arc<dyn CurateTap>>,
    /// (best, gold) scorers to use as they are: no model is trained.
    pub scorers: Option<(Arc<dyn RewardModel>, Arc<dyn RewardModel>)>,
}

/// Observes a curate pass on each worker.
pub trait CurateTap: Send + Sync {
    /// Every valid row, before dedup (the pool the gold RM's examples come from).
    fn valid(&self, worker: usize, pair: &PreferencePair);
    /// Every scored pair (valid, unique, clean), with its margins.
    fn scored(&self, worker: usize, scored: &ScoredPair);
    /// The run's output schema and carried columns, once the survey has found them.
    fn schema(
        &self,
        _schema: &OutputSchema,
        _extras: &Arc<ExtrasCodec>,
        _file_urls: &Arc<Vec<String>>,
    ) {
    }
}

/// Everything a worker needs, prepared once per process.
pub struct CuratePlan {
    pub spec: CurateSpec,
    pub input: InputPlan,
    pub gold: Arc<GoldLabels>,
    pub judges: Option<Arc<JudgeVotes>>,
    pub truth: Option<Arc<Truth>>,
    pub ngrams: Arc<NgramIndex>,
    pub out: Location,
    pub started: Instant,
    pub bars: Bars,
    pub hooks: CurateHooks,
}

/// Progress bars shared by the workers of a process.
pub struct Bars {
    pub survey: indicatif::ProgressBar,
    pub curate: indicatif::ProgressBar,
}

/// Validates the spec and reads the small inputs. The `leader` process (the first of a
/// cluster, or the only one) also clears a previous run's output; the others connect
/// only after every process has prepared, so no part is written before the clearing.
pub fn prepare(spec: CurateSpec, leader: bool) -> Result<CuratePlan> {
    spec.validate()?;
    let gold = GoldLabels::read(&spec.gold)?;
    prepare_with_gold(spec, gold, leader, CurateHooks::default())
}

/// `prepare` with the gold labels given (serve holds them) and serve's hooks.
pub fn prepare_with_gold(
    spec: CurateSpec,
    gold: GoldLabels,
    leader: bool,
    hooks: CurateHooks,
) -> Result<CuratePlan> {
    let started = Instant::now();
    spec.validate()?;
    let mut input = plan_input(&spec.pairs)?;
    input.batch_rows = spec.batch_rows;
    tracing::info!(
        files = input.files.len(),
        shards = input.shards.len(),
        rows = input.estimated_rows,
        "planned input"
    );
    tracing::info!(
        labels = gold.labels.len(),
        records = gold.records,
        "read gold labels"
    );
    let judges = spec
        .judges
        .as_deref()
        .map(JudgeVotes::read)
        .transpose()?
        .map(Arc::new);
    let truth = spec
        .truth
        .as_deref()
        .map(Truth::read)
        .transpose()?
        .map(Arc::new);
    let prompts = read_benchmark_prompts(&spec.decontaminate)?;
    let ngrams = NgramIndex::build(prompts.iter().map(|s| s.as_str()));
    let out = resolve(&spec.out)?;
    if leader {
        // Uncommit first (the manifest goes first), then clear old parts.
        out.child("manifest.json").delete()?;
        for d in Destination::ALL {
            out.child(d.dir()).delete_prefix()?;
        }
        out.child("report.json").delete()?;
    }
    let hidden = !spec.progress;
    let mk = |m: &str, n: u64| {
        let b = synpref_engine::progress::bar(m, n, "pairs");
        if hidden {
            b.set_draw_target(indicatif::ProgressDrawTarget::hidden());
        }
        b
    };
    let bars = Bars {
        survey: mk("survey", input.estimated_rows),
        curate: mk("curate", input.estimated_rows),
    };
    Ok(CuratePlan {
        spec,
        input,
        gold: Arc::new(gold),
        judges,
        truth,
        ngrams: Arc::new(ngrams),
        out,
        started,
        bars,
        hooks,
    })
}

/// What worker 0 returns: the report as written.
pub type Report = serde_json::Value;

/// Feeds a worker's shards into an input, keeping at most `PIPELINE_SLACK` batches in
/// flight. A read error stops feeding and is returned after the input is closed.
fn feed(
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

/// What the survey keeps of one valid pair.
#[derive(Clone, Debug)]
struct SurveyFacts {
    content: (u64, RowKey),
    pair: (u64, RowKey),
    best: Option<TrainExample>,
    /// (pair key, row key, unswapped features) of rows the built-in gold RM learns from.
    gold: Option<(u64, RowKey, TrainExample)>,
    /// Encoder heads train on whole pairs (the flag: the rejected reply won).
    best_pair: Option<(PreferencePair, bool)>,
    gold_pair: Option<(PreferencePair, bool)>,
}

/// What the survey learns on one worker.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct SurveyResult {
    rows: u64,
    observations: Vec<JsonlObservation>,
}

/// A model as trained on worker 0 and handed to every worker.
#[derive(Clone, Debug, Serialize, Deserialize)]
enum Trained {
    Builtin(HashedBtModel),
    /// A ready reward model (`hf:`): nothing to train.
    Hf,
    Encoder(DenseHead),
    /// Given by the caller (`CurateHooks::scorers`): serve's current models.
    Given,
}

impl Trained {
    fn info(&self) -> serde_json::Value {
        match self {
            Trained::Builtin(m) => serde_json::json!(m.info),
            Trained::Hf | Trained::Given => serde_json::Value::Null,
            Trained::Encoder(h) => serde_json::json!(h.info),
        }
    }
}

/// The two trained models and what they were trained on.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Models {
    best: Trained,
    gold: Trained,
    train_s: f64,
}

/// Transformer feature sources, loaded once per process and shared by its workers
/// (weights are large; the score cache is one per model), keyed by everything that
/// shapes them.
pub fn shared_features(
    flag: &str,
    spec: &ModelSpec,
    options: &ModelOptions,
    score_cache: Option<&str>,
) -> Result<Option<Arc<CachedFeatures>>> {
    use std::sync::{Mutex, OnceLock};
    type Key = (ModelSpec, ModelOptions, Option<String>);
    static LOADED: OnceLock<Mutex<Vec<(Key, Arc<CachedFeatures>)>>> = OnceLock::new();
    if *spec == ModelSpec::Builtin {
        return Ok(None);
    }
    let key = (
        spec.clone(),
        options.clone(),
        score_cache.map(str::to_string),
    );
    let mut loaded = LOADED
        .get_or_init(Default::default)
        .lock()
        .expect("model registry");
    if let Some((_, f)) = loaded.iter().find(|(k, _)| *k == key) {
        return Ok(Some(f.clone()));
    }
    let f = load_features(spec, options, score_cache)
        .map_err(|e| model_error(flag, e))?
        .expect("not builtin");
    loaded.push((key, f.clone()));
    Ok(Some(f))
}

/// Labelled pairs in a total order: pair id, then content.
fn sort_labelled(pairs: &mut [(PreferencePair, bool)]) {
    pairs.sort_by(|a, b| {
        a.0.pair_id
            .cmp(&b.0.pair_id)
            .then(a.0.content_hash.cmp(&b.0.content_hash))
    });
}

/// Whether a pool row with this pair key trains the gold RM, and oriented how: it does
/// when its label carries no text of its own and is decisive (`Some(true)`: the human
/// preferred the rejected reply, so the example is swapped).
pub fn pool_label_swap(gold: &GoldLabels, pair_key: u64) -> Option<bool> {
    match gold.labels.get(&pair_key) {
        Some(l) if l.text.is_none() && l.verdict != Verdict::Undecidable => {
            Some(l.verdict == Verdict::Rejected)
        }
        _ => None,
    }
}

/// The encoder gold head's training set: the labelled pool pairs plus every decisive
/// label that carries its own text, one per pair id, in a total order.
pub fn complete_gold_pairs(
    gold: &GoldLabels,
    mut gold_pair_set: Vec<(PreferencePair, bool)>,
) -> Vec<(PreferencePair, bool)> {
    gold_pair_set.extend(gold.labels.values().filter_map(label_pair));
    sort_labelled(&mut gold_pair_set);
    gold_pair_set.dedup_by(|a, b| a.0.pair_id == b.0.pair_id);
    gold_pair_set
}

/// Pair keys whose pool rows the built-in gold RM learns from: those with a decisive
/// label record that carries no text of its own.
pub fn pool_trained_keys(gold: &GoldLabels) -> FxHashSet<u64> {
    gold.stream
        .iter()
        .filter(|l| l.text.is_none() && l.verdict != Verdict::Undecidable)
        .map(|l| pair_key(&l.pair_id))
        .collect()
}

/// The example one label record gives the built-in gold RM, if any: from the record's
/// own text, else from the pool row with its pair id (`pool`: unswapped features of the
/// first valid row per key), oriented by the verdict. Undecidable records and records
/// for pairs neither in the pool nor carrying text give none.
pub fn gold_example(
    label: &GoldLabel,
    pool: &FxHashMap<u64, TrainExample>,
    bits: u32,
) -> Option<TrainExample> {
    if label.verdict == Verdict::Undecidable {
        return None;
    }
    if let Some((pair, swap)) = label_pair(label) {
        return Some(TrainExample::from_pair(&pair, bits, swap));
    }
    let mut e = pool.get(&pair_key(&label.pair_id))?.clone();
    if label.verdict == Verdict::Rejected {
        std::mem::swap(&mut e.winner, &mut e.loser);
    }
    Some(e)
}

/// The unswapped example of the first valid row (by row key) of each pair key.
pub fn first_pool_examples(
    mut rows: Vec<(u64, RowKey, TrainExample)>,
) -> FxHashMap<u64, TrainExample> {
    rows.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
    let mut out = FxHashMap::default();
    for (key, _, e) in rows {
        out.entry(key).or_insert(e);
    }
    out
}

/// A decisive label with its own text as a pair (and whether the example is swapped).
fn label_pair(label: &GoldLabel) -> Option<(PreferencePair, bool)> {
    let (p, c, r) = label.text.as_ref()?;
    if label.verdict == Verdict::Undecidable {
        return None;
    }
    let pair = PreferencePair {
        key: RowKey(0),
        row: 0,
        pair_id: label.pair_id.clone(),
        prompt: p.clone(),
        chosen: c.clone(),
        rejected: r.clone(),
        implicit_prompt: false,
        attributes: Attributes::default(),
        extras: Vec::new(),
        content_hash: synpref_engine::hashing::content_hash(p, c, r),
        pair_key: 0,
    };
    Some((pair, label.verdict == Verdict::Rejected))
}

/// Trains the built-in gold RM: one online pass over the label stream
/// (`OnlineTrainer`), so that serve, extending the stream, reaches the same weights.
pub fn train_builtin_gold(
    spec: &CurateSpec,
    gold: &GoldLabels,
    pool: &FxHashMap<u64, TrainExample>,
) -> HashedBtModel {
    let bits = spec.train.feature_bits;
    let mut trainer = OnlineTrainer::new(&spec.train);
    let mut examples = Vec::new();
    for label in &gold.stream {
        if let Some(e) = gold_example(label, pool, bits) {
            trainer.step(&e);
            examples.push(e);
        }
    }
    let mut model = trainer.model().clone();
    model.info.chosen_epoch = 1;
    model.info.train_accuracy = model.accuracy(&examples);
    model
}

/// The encoder heads' training settings under `spec` (its seed, the defaults else).
pub fn head_settings(spec: &CurateSpec) -> HeadSettings {
    HeadSettings {
        seed: spec.train.seed,
        ..HeadSettings::default()
    }
}

/// Trains an encoder head on labelled pairs (sorted by pair id), features from the cache.
pub fn train_head(
    features: &CachedFeatures,
    pairs: Vec<(PreferencePair, bool)>,
    heldout_share: f64,
    settings: &HeadSettings,
) -> Result<DenseHead> {
    let refs: Vec<&PreferencePair> = pairs.iter().map(|(p, _)| p).collect();
    let f = features.get(&refs).map_err(|e| model_error("encoder", e))?;
    let w = features.features.width();
    let (mut train, mut heldout) = (Vec::new(), Vec::new());
    for ((p, swap), x) in pairs.iter().zip(f.chunks_exact(w)) {
        let e = HeadExample {
            pair_id: p.pair_id.clone(),
            delta: delta(x, *swap),
        };
        if heldout_share > 0.0 && unit_interval(&p.pair_id, SALT_HELDOUT) < heldout_share {
            heldout.push(e);
        } else {
            train.push(e);
        }
    }
    Ok(DenseHead::train(2 * w / 3, train, heldout, settings))
}

/// Runs curate on one timely worker. Worker 0 returns the report.
pub fn run_worker(worker: &mut Worker, plan: &CuratePlan) -> Result<Option<Report>> {
    let spec = &plan.spec;
    let validate_settings = ValidateSettings {
        max_pair_bytes: spec.max_pair_bytes,
        allow_empty_replies: false,
    };
    let bits = spec.train.feature_bits;
    let best_spec = ModelSpec::parse(&spec.best_rm).map_err(|e| Error::setting("--best-rm", e))?;
    let gold_spec = ModelSpec::parse(&spec.gold_rm).map_err(|e| Error::setting("--gold-rm", e))?;
    let (options, cache) = (&spec.models, spec.score_cache.as_deref());
    let loaded = shared_features("--best-rm", &best_spec, options, cache)
        .and_then(|b| Ok((b, shared_features("--gold-rm", &gold_spec, options, cache)?)));
    agree_on_errors(
        worker,
        loaded
            .as_ref()
            .map(|_| ())
            .map_err(|e| Error::other("models", e)),
    )?;
    let (best_features, gold_features) = loaded?;
    let (best_kind, gold_kind) = (best_spec.clone(), gold_spec.clone());

    // ---- 1. Survey ----
    let t_survey = Instant::now();
    let content_index: FirstIndex = Rc::new(RefCell::new(KeyIndex::default()));
    let pair_index: FirstIndex = Rc::new(RefCell::new(KeyIndex::default()));
    let best_examples = Rc::new(RefCell::new(Vec::<TrainExample>::new()));
    let gold_examples = Rc::new(RefCell::new(Vec::<(u64, RowKey, TrainExample)>::new()));
    let best_pairs = Rc::new(RefCell::new(Vec::<(PreferencePair, bool)>::new()));
    let gold_pairs = Rc::new(RefCell::new(Vec::<(PreferencePair, bool)>::new()));
    let sample_rate = (spec.best_rm_sample as f64
        / (1.0 - spec.heldout_share)
        / plan.input.estimated_rows.max(1) as f64)
        .min(1.0);
    let mut dataflow;
    let (input, probe) = {
        let (ci, pi) = (content_index.clone(), pair_index.clone());
        let (be, ge) = (best_examples.clone(), gold_examples.clone());
        let (bp, gp) = (best_pairs.clone(), gold_pairs.clone());
        let ngrams = plan.ngrams.clone();
        let gold = plan.gold.clone();
        let gold_keys = Arc::new(pool_trained_keys(&plan.gold));
        dataflow = worker.next_dataflow_index();
        worker.dataflow_named::<u64, _, _>("Survey", move |scope| {
            let (input, raw) = scope.new_input::<RawRecord>();
            let (valid, _quarantined) = raw.validate(validate_settings);
            // One pass over each pair reduces it to the few facts the survey keeps, so
            // that the full pairs are never cloned for several consumers.
            let facts = valid.map(move |p: PreferencePair| {
                let sampled = unit_interval(&p.pair_id, SALT_SAMPLE) < sample_rate
                    && !ngrams.contaminates(&p);
                let gold_swap = pool_label_swap(&gold, p.pair_key);
                let sparse = |take: bool, kind: &ModelSpec, swap: bool| {
                    (take && *kind == ModelSpec::Builtin)
                        .then(|| TrainExample::from_pair(&p, bits, swap))
                };
                let whole = |take: bool, kind: &ModelSpec, swap: bool| {
                    (take && matches!(kind, ModelSpec::Encoder(_))).then(|| (p.clone(), swap))
                };
                SurveyFacts {
                    content: (content_key(p.content_hash), p.key),
                    pair: (p.pair_key, p.key),
                    best: sparse(sampled, &best_kind, false),
                    gold: (gold_kind == ModelSpec::Builtin && gold_keys.contains(&p.pair_key))
                        .then(|| (p.pair_key, p.key, TrainExample::from_pair(&p, bits, false))),
                    best_pair: whole(sampled, &best_kind, false),
                    gold_pair: whole(gold_swap.is_some(), &gold_kind, gold_swap.unwrap_or(false)),
                }
            });
            let (probe, facts) = facts.probe();
            facts
                .clone()
                .map(|f: SurveyFacts| f.content)
                .index_first("IndexContent", ci);
            facts
                .clone()
                .map(|f: SurveyFacts| f.pair)
                .index_first("IndexPairId", pi);
            facts
                .clone()
                .flat_map(|f: SurveyFacts| f.best)
                .collect_examples("CollectBestRmExamples", be);
            facts
                .clone()
                .flat_map(|f: SurveyFacts| f.gold)
                .collect_examples("CollectGoldRmExamples", ge);
            facts
                .clone()
                .flat_map(|f: SurveyFacts| f.best_pair)
                .collect_examples("CollectBestRmPairs", bp);
            facts
                .flat_map(|f: SurveyFacts| f.gold_pair)
                .collect_examples("CollectGoldRmPairs", gp);
            (input, probe)
        })
    };
    let mut observations = Vec::new();
    let fed = feed(
        worker,
        dataflow,
        plan,
        input,
        &probe,
        None,
        Some(&mut observations),
        &FxHashMap::default(),
        &plan.bars.survey,
    );
    let rows = match &fed {
        Ok(n) => *n,
        Err(_) => 0,
    };
    agree_on_errors(worker, fed.map(|_| ()))?;
    content_index.borrow_mut().seal();
    pair_index.borrow_mut().seal();
    if worker.index() == 0 {
        plan.bars.survey.finish_and_clear();
    }
    let surveys = all_gather(worker, &SurveyResult { rows, observations })?;
    let survey_rows: u64 = surveys.iter().map(|s| s.rows).sum();
    let observations: Vec<JsonlObservation> =
        surveys.into_iter().flat_map(|s| s.observations).collect();
    let (schema, extras_fields) = output_schema(&plan.input, &observations)?;
    // Line numbers where each JSONL byte range starts, for quarantine rows.
    let mut ranges: Vec<(usize, u64, u64)> = observations
        .iter()
        .map(|o| (o.file, o.start, o.line_count))
        .collect();
    ranges.sort();
    let mut first_lines: FxHashMap<(usize, u64), u64> = FxHashMap::default();
    let mut running = (usize::MAX, 0u64);
    for (file, start, count) in ranges {
        if running.0 != file {
            running = (file, 0);
        }
        first_lines.insert((file, start), running.1);
        running.1 += count;
    }
    let survey_s = t_survey.elapsed().as_secs_f64();
    tracing::info!(rows = survey_rows, seconds = survey_s, "survey done");

    // ---- 2. Train the built-in models on worker 0 ----
    let models = if plan.hooks.scorers.is_some() {
        Models {
            best: Trained::Given,
            gold: Trained::Given,
            train_s: 0.0,
        }
    } else {
        compute_on_leader(worker, || {
            let t = Instant::now();
            let mut sample = best_examples.borrow_mut().split_off(0);
            sample.sort_by(|a, b| a.pair_id.cmp(&b.pair_id));
            let (heldout, train): (Vec<_>, Vec<_>) = sample
                .into_iter()
                .partition(|e| unit_interval(&e.pair_id, SALT_HELDOUT) < spec.heldout_share);
            let bar =
                synpref_engine::progress::bar("train", spec.train.epochs as u64 + 1, "epochs");
            if !spec.progress {
                bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
            }
            let gold_pool = first_pool_examples(gold_examples.borrow_mut().split_off(0));
            let gold_pair_set =
                complete_gold_pairs(&plan.gold, gold_pairs.borrow_mut().split_off(0));
            let gold_stream = plan
                .gold
                .stream
                .iter()
                .filter(|l| {
                    l.verdict != Verdict::Undecidable
                        && (l.text.is_some() || gold_pool.contains_key(&pair_key(&l.pair_id)))
                })
                .count();
            if gold_stream == 0
                && gold_pair_set.is_empty()
                && !matches!(gold_spec, ModelSpec::Hf(_))
            {
                tracing::warn!("no gold label matches a pool pair or carries its text: the gold RM is untrained (p_gold = 0.5), so no pair passes the gold check");
            }
            tracing::info!(
                best_sample = train.len() + heldout.len() + best_pairs.borrow().len(),
                gold = match gold_spec {
                    ModelSpec::Builtin => gold_stream,
                    _ => gold_pair_set.len(),
                },
                "training the best RM (pool labels) and the gold RM (gold labels)"
            );
            let mut best_pair_set = best_pairs.borrow_mut().split_off(0);
            sort_labelled(&mut best_pair_set);
            let head_settings = head_settings(spec);
            // The two models train at once on two threads; each alone is deterministic.
            let (best, gold) = std::thread::scope(|scope| -> Result<(Trained, Trained)> {
                let gold = scope.spawn(|| -> Result<Trained> {
                    Ok(match &gold_spec {
                        ModelSpec::Builtin => {
                            let m = train_builtin_gold(spec, &plan.gold, &gold_pool);
                            bar.inc(1);
                            Trained::Builtin(m)
                        }
                        ModelSpec::Hf(_) => Trained::Hf,
                        ModelSpec::Encoder(_) => Trained::Encoder(train_head(
                            gold_features.as_deref().expect("encoder features"),
                            gold_pair_set,
                            0.0,
                            &head_settings,
                        )?),
                    })
                });
                let best = match &best_spec {
                    ModelSpec::Builtin => Trained::Builtin(HashedBtModel::train(
                        train,
                        heldout,
                        &spec.train,
                        |epoch, acc| {
                            bar.inc(1);
                            tracing::debug!(epoch, heldout_accuracy = acc, "best RM epoch");
                        },
                    )),
                    ModelSpec::Hf(_) => Trained::Hf,
                    ModelSpec::Encoder(_) => Trained::Encoder(train_head(
                        best_features.as_deref().expect("encoder features"),
                        best_pair_set,
                        spec.heldout_share,
                        &head_settings,
                    )?),
                };
                Ok((best, gold.join().expect("gold RM training thread")?))
            })?;
            bar.finish_and_clear();
            Ok(Models {
                best,
                gold,
                train_s: t.elapsed().as_secs_f64(),
            })
        })?
    };
    tracing::info!(best = %models.best.info(), gold = %models.gold.info(), "models trained");

    // ---- 3. Curate ----
    let t_curate = Instant::now();
    let extras = Arc::new(ExtrasCodec::new(extras_fields)?);
    let file_urls: Arc<Vec<String>> = Arc::new(
        plan.input
            .files
            .iter()
            .map(|f| f.location.url.clone())
            .collect(),
    );
    let writers = Destination::ALL
        .iter()
        .map(|d| {
            (
                *d,
                PartWriter::new(
                    &plan.out,
                    *d,
                    worker.index(),
                    schema.clone(),
                    extras.clone(),
                    file_urls.clone(),
                ),
            )
        })
        .collect();
    if let Some(tap) = &plan.hooks.tap {
        tap.schema(&schema, &extras, &file_urls);
    }
    let sinks = Rc::new(RefCell::new(OutputSinks::new(writers, plan.truth.clone())));
    let given = plan.hooks.scorers.clone();
    let scorer =
        |t: &Trained, f: &Option<Arc<CachedFeatures>>, best: bool| -> Arc<dyn RewardModel> {
            match t {
                Trained::Given => {
                    let (b, g) = given.clone().expect("given scorers");
                    if best {
                        b
                    } else {
                        g
                    }
                }
                Trained::Builtin(m) => Arc::new(m.clone()),
                Trained::Hf => Arc::new(HfScorer(f.clone().expect("hf features"))),
                Trained::Encoder(h) => Arc::new(EncoderScorer {
                    features: f.clone().expect("encoder features"),
                    head: h.clone(),
                }),
            }
        };
    let best = scorer(&models.best, &best_features, true);
    let gold = scorer(&models.gold, &gold_features, false);
    let fingerprints = (best.fingerprint(), gold.fingerprint());
    let failure: ModelFailure = Rc::new(RefCell::new(None));
    let rule = Arc::new(RuleInputs {
        settings: RuleSettings {
            threshold: spec.threshold,
            emit_flipped: spec.emit_flipped,
        },
        gold: plan.gold.clone(),
        judges: plan.judges.clone(),
    });
    let (input, probe) = {
        let sinks = sinks.clone();
        let ngrams = plan.ngrams.clone();
        let (ci, pi) = (content_index.clone(), pair_index.clone());
        let failure = failure.clone();
        let tap = plan.hooks.tap.clone();
        let index = worker.index();
        dataflow = worker.next_dataflow_index();
        worker.dataflow_named::<u64, _, _>("Curate", move |scope| {
            let (input, raw) = scope.new_input::<RawRecord>();
            let (mut valid, invalid) = raw.validate(validate_settings);
            if let Some(tap) = tap.clone() {
                valid = valid.inspect(move |p| tap.valid(index, p));
            }
            let (unique, duplicates) = valid.dedup(ci);
            let (unique, reused_ids) = unique.unique_pair_ids(pi);
            let (clean, contaminated) = unique.decontaminate(ngrams);
            let mut scored = clean.score(best, gold, failure);
            if let Some(tap) = tap {
                scored = scored.inspect(move |s| tap.scored(index, s));
            }
            let decided = scored.consistency_rule(rule);
            let all =
                scope.concatenate(vec![invalid, duplicates, reused_ids, contaminated, decided]);
            let (probe, all) = all.probe();
            all.write_parts(sinks);
            (input, probe)
        })
    };
    let extras_ref = extras.clone();
    let fed = feed(
        worker,
        dataflow,
        plan,
        input,
        &probe,
        Some(&extras_ref),
        None,
        &first_lines,
        &plan.bars.curate,
    );
    let model_failed = failure.borrow_mut().take();
    let flushed = [&best_features, &gold_features]
        .into_iter()
        .flatten()
        .try_for_each(|f| f.flush())
        .map_err(|e| model_error("--score-cache", e));
    let finished = fed
        .and_then(|_| match model_failed {
            Some(e) => Err(Error::other("scoring", e)),
            None => Ok(()),
        })
        .and_then(|_| flushed)
        .and_then(|_| sinks.borrow_mut().finish());
    let (files, stats) = match finished {
        Ok(v) => (v.0, v.1),
        Err(e) => {
            agree_on_errors(worker, Err(e))?;
            unreachable!("agree_on_errors returns the local error")
        }
    };
    agree_on_errors(worker, Ok(()))?;
    if worker.index() == 0 {
        plan.bars.curate.finish_and_clear();
    }
    let curate_s = t_curate.elapsed().as_secs_f64();
    drop(content_index);
    drop(pair_index);

    // ---- 4. Report and commit ----
    // Model usage: the feature sources are shared by a process's workers, so each
    // process reports once (its first worker).
    let usage = |f: &Option<Arc<CachedFeatures>>| {
        f.as_ref()
            .filter(|_| worker.index() % spec.workers == 0)
            .map(|f| f.usage())
            .unwrap_or_default()
    };
    let gathered = all_gather(
        worker,
        &(files, stats, usage(&best_features), usage(&gold_features)),
    )?;
    if worker.index() != 0 {
        return Ok(None);
    }
    let mut all_files: Vec<WrittenFile> = Vec::new();
    let mut total = SinkStats::default();
    let (mut best_usage, mut gold_usage) = (ModelUsage::default(), ModelUsage::default());
    for (f, s, b, g) in gathered {
        all_files.extend(f);
        total.merge(&s);
        best_usage.merge(&b);
        gold_usage.merge(&g);
    }
    let models = ModelSummary {
        trained: &models,
        fingerprints,
        usage: (best_usage, gold_usage),
    };
    all_files.sort();
    let timings = Timings {
        survey_s,
        train_s: models.trained.train_s,
        curate_s,
        total_s: plan.started.elapsed().as_secs_f64(),
    };
    let report = build_report(plan, &total, &models, &timings, worker.peers());
    write_json(&plan.out.child("report.json"), &report)?;
    let manifest = build_manifest(plan, &models, &all_files, &report);
    write_json(&plan.out.child("manifest.json"), &manifest)?;
    Ok(Some(report))
}

/// A model failure as an engine error: a missing or malformed model file is bad input
/// (exit 2, naming the flag and the file); anything else is a runtime failure.
pub fn model_error(flag: &str, e: synpref_operators::models::ModelError) -> Error {
    use synpref_operators::models::ModelError;
    match e {
        ModelError::Load { .. } | ModelError::Template(_) => Error::setting(flag, e.to_string()),
        other => Error::other(flag, other),
    }
}

/// The default score-cache location: `$SYNPREF_CACHE`, else
/// `$XDG_CACHE_HOME/synpref/scores`, else `~/.cache/synpref/scores`.
pub fn default_score_cache() -> Option<String> {
    if let Ok(c) = std::env::var("SYNPREF_CACHE") {
        return Some(c);
    }
    let base = std::env::var("XDG_CACHE_HOME")
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOME").ok().map(|h| format!("{h}/.cache")))?;
    Some(format!("{base}/synpref/scores"))
}

/// The models as the report and the manifest describe them.
struct ModelSummary<'a> {
    trained: &'a Models,
    fingerprints: (String, String),
    usage: (ModelUsage, ModelUsage),
}

struct Timings {
    survey_s: f64,
    train_s: f64,
    curate_s: f64,
    total_s: f64,
}

fn build_report(
    plan: &CuratePlan,
    total: &SinkStats,
    models: &ModelSummary,
    t: &Timings,
    workers: usize,
) -> serde_json::Value {
    let count = |d: Destination| -> u64 {
        total
            .rows
            .iter()
            .filter(|(k, _)| Reason::from_code(k).map(|r| r.destination()) == Some(d))
            .map(|(_, v)| v)
            .sum()
    };
    let (curated, discarded, quarantined) = (
        count(Destination::Curated),
        count(Destination::Discarded),
        count(Destination::Quarantine),
    );
    let input_rows = curated + discarded + quarantined;
    let mut reasons = serde_json::Map::new();
    for r in Reason::all() {
        reasons.insert(
            r.code().to_string(),
            total.rows.get(r.code()).copied().unwrap_or(0).into(),
        );
    }
    let mut report = serde_json::json!({
        "job": "curate",
        "input_rows": input_rows,
        "curated_rows": curated,
        "discarded_rows": discarded,
        "quarantined_rows": quarantined,
        "reasons": reasons.clone(),
        "workers": workers,
        "threshold": plan.spec.threshold,
        "elapsed_s": t.total_s,
        "pairs_per_s": input_rows as f64 / t.total_s.max(1e-9),
        "stages_s": { "survey": t.survey_s, "train": t.train_s, "curate": t.curate_s },
        "best_rm": { "spec": plan.spec.best_rm, "fingerprint": models.fingerprints.0, "training": models.trained.best.info(), "scoring": models.usage.0 },
        "gold_rm": { "spec": plan.spec.gold_rm, "fingerprint": models.fingerprints.1, "training": models.trained.gold.info(), "scoring": models.usage.1 },
        "gold_labels": plan.gold.labels.len(),
        "benchmark_ngrams": plan.ngrams.len(),
    });
    let obj = report.as_object_mut().expect("object");
    for (k, v) in reasons {
        obj.insert(k, v);
    }
    if plan.truth.is_some() {
        let share = |(n, hits): (u64, u64)| {
            if n == 0 {
                serde_json::Value::Null
            } else {
                (hits as f64 / n as f64).into()
            }
        };
        obj.insert("truth_agreement_input".into(), share(total.truth_input));
        obj.insert("truth_agreement_curated".into(), share(total.truth_curated));
        obj.insert("truth_rows_input".into(), total.truth_input.0.into());
        obj.insert("truth_rows_curated".into(), total.truth_curated.0.into());
    }
    report
}

fn build_manifest(
    plan: &CuratePlan,
    models: &ModelSummary,
    files: &[WrittenFile],
    report: &serde_json::Value,
) -> serde_json::Value {
    let committed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    serde_json::json!({
        "synpref_version": env!("CARGO_PKG_VERSION"),
        "job": "curate",
        "spec": plan.spec,
        "inputs": {
            "pairs": plan.input.files.iter().map(|f| serde_json::json!({"url": f.location.url, "bytes": f.size})).collect::<Vec<_>>(),
            "gold": plan.gold.files,
            "gold_label_records": plan.gold.records,
            "judges": plan.spec.judges,
            "truth": plan.spec.truth,
            "decontaminate": plan.spec.decontaminate,
        },
        "models": {
            "best_rm": { "spec": plan.spec.best_rm, "fingerprint": models.fingerprints.0 },
            "gold_rm": { "spec": plan.spec.gold_rm, "fingerprint": models.fingerprints.1 },
        },
        "outputs": files,
        "report": "report.json",
        "rows": {
            "input": report["input_rows"], "curated": report["curated_rows"],
            "discarded": report["discarded_rows"], "quarantined": report["quarantined_rows"],
        },
        "committed_unix_s": committed,
    })
}

/// The output schema of a run: from Parquet footers and what the survey saw in JSONL
/// files. Also where whole JSONL files are judged unusable.
pub(crate) fn output_schema(
    input: &InputPlan,
    observations: &[JsonlObservation],
) -> Result<(OutputSchema, Vec<Field>)> {
    let mut per_file: FxHashMap<usize, JsonlObservation> = FxHashMap::default();
    // In file order, so that a file's first error is the one nearest its start.
    let mut ordered: Vec<&JsonlObservation> = observations.iter().collect();
    ordered.sort_by_key(|o| (o.file, o.start));
    for o in ordered {
        let e = per_file.entry(o.file).or_insert_with(|| JsonlObservation {
            file: o.file,
            ..Default::default()
        });
        e.lines += o.lines;
        e.unparsable += o.unparsable;
        if e.first_error.is_none() {
            e.first_error = o.first_error.clone();
        }
        e.keys.extend(o.keys.iter().cloned());
        e.message_columns.extend(o.message_columns.iter().cloned());
        e.has_prompt |= o.has_prompt;
    }
    let mut schema = OutputSchema {
        has_prompt: false,
        prompt: ConvForm::Text,
        chosen: ConvForm::Text,
        rejected: ConvForm::Text,
        attributes: [false; 6],
    };
    let mut extras: Vec<(Field, String)> = Vec::new();
    let mut add_extra = |f: Field, file: &str| -> Result<()> {
        match extras.iter().find(|(e, _)| e.name() == f.name()) {
            Some((e, first)) if e.data_type() != f.data_type() => Err(Error::bad_column(
                file,
                f.name(),
                format!(
                    "has type {} here but {} in {first}; files of one run must agree",
                    f.data_type(),
                    e.data_type()
                ),
            )),
            Some(_) => Ok(()),
            None => {
                extras.push((f, file.to_string()));
                Ok(())
            }
        }
    };
    for f in &input.files {
        let url = &f.location.url;
        match (&f.parquet, per_file.get(&f.index)) {
            (Some((_, cols)), _) => {
                if let Some(p) = cols.prompt {
                    schema.has_prompt = true;
                    if p == ConvForm::Messages {
                        schema.prompt = ConvForm::Messages;
                    }
                }
                if cols.chosen == ConvForm::Messages {
                    schema.chosen = ConvForm::Messages;
                }
                if cols.rejected == ConvForm::Messages {
                    schema.rejected = ConvForm::Messages;
                }
                for i in 0..6 {
                    schema.attributes[i] |= cols.attributes[i];
                }
                for e in &cols.extras {
                    add_extra(e.clone(), url)?;
                }
            }
            (None, Some(o)) => {
                if o.lines > 0 && o.unparsable == o.lines {
                    let (line, message) = o.first_error.clone().unwrap_or((1, "unparsable".into()));
                    return Err(Error::bad_row(
                        url,
                        line,
                        None,
                        format!("not a JSONL file (no line is a JSON object): {message}"),
                    ));
                }
                if o.lines > o.unparsable {
                    for required in ["chosen", "rejected"] {
                        if !o.keys.contains(required) {
                            return Err(Error::bad_column(
                                url,
                                required,
                                format!("required column `{required}` is missing from every row (keys seen: {})", o.keys.iter().cloned().collect::<Vec<_>>().join(", ")),
                            ));
                        }
                    }
                }
                schema.has_prompt |= o.has_prompt;
                for (col, slot) in [
                    ("prompt", &mut schema.prompt),
                    ("chosen", &mut schema.chosen),
                    ("rejected", &mut schema.rejected),
                ] {
                    if o.message_columns.contains(col) {
                        *slot = ConvForm::Messages;
                    }
                }
                for (i, name) in ATTRIBUTE_COLUMNS.iter().enumerate() {
                    schema.attributes[i] |= o.keys.contains(*name);
                }
                for k in &o.keys {
                    if ["pair_id", "prompt", "chosen", "rejected"].contains(&k.as_str())
                        || ATTRIBUTE_COLUMNS.contains(&k.as_str())
                    {
                        continue;
                    }
                    add_extra(Field::new(k, DataType::Utf8, true), url)?;
                }
            }
            (None, None) => {}
        }
    }
    Ok((schema, extras.into_iter().map(|(f, _)| f).collect()))
}
