//! `fractions`: scaling experiments across data fractions (issue 14; the paper's
//! Figure 5). For each seed and fraction it cuts a nested subset of the curated set and
//! a subset of the same size of the raw pool (`subsets`), trains a reward model on each
//! (`trainers`: the built-in model, an encoder head, or the user's command), measures it
//! on every evaluation set (`crate::read::eval_sets`), and writes the table, the plot and the
//! report (`results`).
//!
//! The tasks, one per (set, fraction, seed), are spread over every timely worker of
//! every process (largest first, each to the least loaded worker: the same assignment
//! on every process); each worker reads the sets for its own tasks, and worker 0
//! gathers the results. Models and evaluations are cached by the subset's content, the
//! trainer's settings and the seed (`CACHE/models/`), so a rerun after a label batch
//! trains only the subsets whose contents changed; the report counts trained and
//! reused models.

pub mod job;
pub mod results;
pub mod subsets;
pub mod trainers;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use synpref_engine::collective::gather_to_leader;
use synpref_engine::extras::ExtrasCodec;
use synpref_engine::input::plan_input;
use synpref_engine::model::{Destination, PreferencePair};
use synpref_engine::output::OutputSchema;
use synpref_engine::store::resolve;
use synpref_engine::{Error, Result};
use synpref_operators::models::{ModelOptions, ModelUsage};
use timely::worker::Worker;

use crate::job::RunSettings;
use crate::read::{accuracy, input_schema, load_eval_set, read_valid_pairs, EvalSet, SetAccuracy};
use subsets::{content_key, RankKey, SmallestN};
use trainers::{LoadedTrainer, Subset, TrainerSpec};

/// The fractions of the paper's Figure 5 range and the default.
pub const DEFAULT_FRACTIONS: [f64; 7] = [0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0];
/// Seeds per fraction: enough to show the spread, few enough to train quickly.
pub const DEFAULT_SEEDS: u32 = 3;
/// Pairs read and scored per chunk.
const CHUNK_PAIRS: usize = 4096;

/// The plain-data spec of a fractions run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FractionsSpec {
    /// The raw pool (any input curate reads).
    pub pairs: String,
    /// A committed curate output of that pool (its `curated/` rows are the curated set).
    pub curated: String,
    /// Fractions in (0, 1], ascending.
    pub fractions: Vec<f64>,
    pub seeds: u32,
    pub trainer: TrainerSpec,
    /// Evaluation sets (RewardBench layouts, as `synpref eval` reads them).
    pub evals: Vec<String>,
    /// Where the table, plot and report go (a local directory).
    pub out: String,
    /// The model cache (a local directory; default OUT/cache).
    pub cache: PathBuf,
    /// How encoder and hf models run.
    pub options: ModelOptions,
    /// The score cache of encoder features (`None`: no durable cache).
    pub score_cache: Option<String>,
    /// Timely worker threads in this process and progress bars (the shared block).
    #[serde(flatten)]
    pub run: RunSettings,
}

impl FractionsSpec {
    /// Checks the settings, naming the flag at fault.
    pub fn validate(&self) -> Result<()> {
        if self.fractions.is_empty() {
            return Err(Error::setting("--fractions", "give at least one fraction"));
        }
        for f in &self.fractions {
            if !(*f > 0.0 && *f <= 1.0) {
                return Err(Error::setting(
                    "--fractions",
                    format!("{f} is not in (0, 1]"),
                ));
            }
        }
        if self.fractions.windows(2).any(|w| w[0] >= w[1]) {
            return Err(Error::setting(
                "--fractions",
                "list each fraction once, in ascending order",
            ));
        }
        if self.seeds == 0 {
            return Err(Error::setting("--seeds", "must be at least 1"));
        }
        if self.evals.is_empty() {
            return Err(Error::setting("--eval", "give at least one evaluation set"));
        }
        self.run.validate()?;
        if let TrainerSpec::Command { template, .. } = &self.trainer {
            if !template.contains("{model_dir}") {
                return Err(Error::setting(
                    "--train-command",
                    "the template must name {model_dir}, where the command leaves the trained model",
                ));
            }
        }
        Ok(())
    }
}

/// Which set a subset is cut from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SetName {
    Curated,
    Raw,
}

impl SetName {
    pub fn label(self) -> &'static str {
        match self {
            SetName::Curated => "curated",
            SetName::Raw => "raw",
        }
    }
}

/// One unit of work: a model trained on one subset and evaluated.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Task {
    pub set: SetName,
    pub fraction_index: usize,
    pub seed: u32,
}

/// Everything a process prepares before its workers start: the validated spec, the
/// trainer with what it trains from (an encoder's features, loaded once per process
/// and shared by its workers) and the trainer's fingerprint.
pub struct FractionsPlan {
    pub spec: FractionsSpec,
    /// The manifest of `--curated`, read once: which parts the workers read.
    curated_manifest: crate::curate::report::Manifest,
    trainer: LoadedTrainer,
    trainer_fingerprint: String,
    bar: indicatif::ProgressBar,
    started: Instant,
}

/// Validates the spec and loads what every worker of this process shares.
pub fn prepare(
    spec: FractionsSpec,
    total_workers: usize,
    process_workers: std::ops::Range<usize>,
) -> Result<FractionsPlan> {
    spec.validate()?;
    let mut spec = spec;
    // One version of a live serve's `snapshot` link throughout (serve::snapshots).
    spec.curated = synpref_engine::store::pin_local(&spec.curated);
    let curated_manifest = crate::curate::report::Manifest::read_committed("--curated", &spec.curated)
        .map_err(|e| match e {
            Error::Setting { setting, message } => Error::setting(
                setting,
                format!("{message}; run `synpref curate` into it, or give --gold and fractions curates --pairs itself"),
            ),
            other => other,
        })?;
    curated_manifest.check_pool("--curated", &spec.curated, "--pairs", &spec.pairs)?;
    let trainer = LoadedTrainer::load(&spec.trainer, &spec.options, spec.score_cache.as_deref())?;
    let trainer_fingerprint = spec.trainer.fingerprint(trainer.encoder_fingerprint());
    let mine = assign(&tasks(&spec), &spec.fractions, total_workers)
        .into_iter()
        .filter(|(w, _)| process_workers.contains(w))
        .count() as u64;
    let bar = synpref_engine::progress::bar("fractions", mine, "models");
    if !spec.run.progress {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    Ok(FractionsPlan {
        spec,
        curated_manifest,
        trainer,
        trainer_fingerprint,
        bar,
        started: Instant::now(),
    })
}

/// Every task, in (set, seed, fraction) order.
pub fn tasks(spec: &FractionsSpec) -> Vec<Task> {
    let mut out = Vec::new();
    for set in [SetName::Curated, SetName::Raw] {
        for seed in 0..spec.seeds {
            for fraction_index in 0..spec.fractions.len() {
                out.push(Task {
                    set,
                    fraction_index,
                    seed,
                });
            }
        }
    }
    out
}

/// Assigns tasks to workers: largest fraction first, each to the least loaded worker
/// (lowest index on ties), a task's load its fraction plus a share for reading the
/// sets. Every process computes the same assignment (the same sums in the same order).
/// Returns (worker, task) in task order.
pub fn assign(tasks: &[Task], fractions: &[f64], workers: usize) -> Vec<(usize, Task)> {
    /// Reading the sets costs about as much as training on a 5% subset.
    const READ_COST: f64 = 0.05;
    let cost = |t: &Task| fractions[t.fraction_index];
    let mut order: Vec<usize> = (0..tasks.len()).collect();
    order.sort_by(|&a, &b| cost(&tasks[b]).total_cmp(&cost(&tasks[a])).then(a.cmp(&b)));
    let mut load = vec![0.0f64; workers.max(1)];
    let mut owner = vec![0usize; tasks.len()];
    for i in order {
        let w = (0..load.len())
            .min_by(|&a, &b| load[a].total_cmp(&load[b]).then(a.cmp(&b)))
            .expect("at least one worker");
        load[w] += cost(&tasks[i]) + READ_COST;
        owner[i] = w;
    }
    tasks
        .iter()
        .enumerate()
        .map(|(i, t)| (owner[i], *t))
        .collect()
}

/// A set as read: its schema (for writing subsets for a training command) and the
/// pairs this worker's tasks need, in rank order per seed.
pub struct SetData {
    pub name: SetName,
    pub schema: OutputSchema,
    pub extras: Arc<ExtrasCodec>,
    pub file_urls: Arc<Vec<String>>,
    /// Valid pairs in the set.
    pub pairs: u64,
    /// Rows that are not valid pairs (left out of every subset).
    pub invalid_rows: u64,
    /// Per seed: the candidate pairs in rank order.
    by_seed: BTreeMap<u32, Vec<(RankKey, Arc<PreferencePair>)>>,
}

/// What one task produced.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskResult {
    pub set: SetName,
    pub fraction: f64,
    pub seed: u32,
    pub pairs: u64,
    pub subset_key: String,
    pub model: String,
    /// The model was trained in this run (false: reused from the cache).
    pub trained: bool,
    /// Seconds its training took when it was trained (in this run or the one whose
    /// cache entry it reused).
    pub train_s: f64,
    /// One per evaluation set, in --eval order.
    pub evals: Vec<EvalOutcome>,
    /// What scoring the evaluation sets cost in this run (zero when every evaluation
    /// was reused from the cache).
    #[serde(default)]
    pub scoring: ModelUsage,
}

/// A model's accuracy on one evaluation set.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EvalOutcome {
    pub accuracy: SetAccuracy,
    /// Computed in this run (false: reused from the cache).
    pub computed: bool,
}

/// What a worker hands to worker 0.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct WorkerOutcome {
    results: Vec<TaskResult>,
    /// (curated pairs, raw pairs, raw invalid rows) when this worker read the sets.
    sizes: Option<(u64, u64, u64)>,
}

/// One timely worker of a fractions run: its tasks, then the gather; worker 0 writes
/// the outputs and returns the report.
pub fn run_worker(
    worker: &mut Worker,
    plan: &FractionsPlan,
) -> Result<Option<results::FractionsReport>> {
    let outcome =
        work(worker.index(), worker.peers(), plan).map_err(|e| (e.exit_code(), e.to_string()));
    let gathered = gather_to_leader(worker, &outcome)?;
    let Some(all) = gathered else {
        return Ok(None);
    };
    let mut results = Vec::new();
    let mut sizes = None;
    for (w, o) in all.into_iter().enumerate() {
        match o {
            Ok(o) => {
                results.extend(o.results);
                sizes = sizes.or(o.sizes);
            }
            Err((exit_code, message)) => {
                return Err(Error::PeerFailed {
                    worker: w,
                    exit_code,
                    message,
                })
            }
        }
    }
    plan.bar.finish_and_clear();
    let sizes = sizes.ok_or_else(|| Error::Worker("no worker read the sets".into()))?;
    results::write_outputs(&plan.spec, results, sizes, plan.started).map(Some)
}

/// This worker's tasks.
fn work(index: usize, peers: usize, plan: &FractionsPlan) -> Result<WorkerOutcome> {
    let spec = &plan.spec;
    let all = tasks(spec);
    // Worker 0 reads the sets even without tasks of its own: the report gives their sizes.
    let mine: Vec<Task> = assign(&all, &spec.fractions, peers)
        .into_iter()
        .filter(|(w, _)| *w == index)
        .map(|(_, t)| t)
        .collect();
    if mine.is_empty() && index != 0 {
        return Ok(WorkerOutcome {
            results: Vec::new(),
            sizes: None,
        });
    }
    let fraction = |t: &Task| spec.fractions[t.fraction_index];
    // Curated: keep, per seed, the pairs below the largest curated fraction of this
    // worker's tasks; count every (seed, fraction) subset (the raw subsets' sizes).
    let mut keep_below: BTreeMap<u32, f64> = BTreeMap::new();
    for t in mine.iter().filter(|t| t.set == SetName::Curated) {
        let e = keep_below.entry(t.seed).or_insert(0.0);
        *e = e.max(fraction(t));
    }
    let mut counts = vec![vec![0u64; spec.fractions.len()]; spec.seeds as usize];
    // The parts the manifest lists (a live serve's snapshot on object storage holds the
    // replaced run's parts beside them for a minute: `Manifest::plan_parts`).
    let curated_parts = plan
        .curated_manifest
        .plan_parts(Destination::Curated, &resolve(&spec.curated)?)?;
    let curated = read_set(SetName::Curated, curated_parts, |pair, by_seed| {
        let pair = Arc::new(pair);
        for seed in 0..spec.seeds {
            let key = RankKey::of(&pair, seed);
            for (i, f) in spec.fractions.iter().enumerate() {
                counts[seed as usize][i] += u64::from(key.within(*f));
            }
            if keep_below.get(&seed).is_some_and(|f| key.within(*f)) {
                by_seed.entry(seed).or_default().push((key, pair.clone()));
            }
        }
    })?;
    // Raw: the n smallest rank keys per seed, n the largest curated size among this
    // worker's raw tasks of that seed.
    let mut limits: BTreeMap<u32, usize> = BTreeMap::new();
    for t in mine.iter().filter(|t| t.set == SetName::Raw) {
        let n = counts[t.seed as usize][t.fraction_index] as usize;
        let e = limits.entry(t.seed).or_insert(0);
        *e = (*e).max(n);
    }
    let mut heaps: BTreeMap<u32, SmallestN<Arc<PreferencePair>>> = limits
        .iter()
        .map(|(s, n)| (*s, SmallestN::new(*n)))
        .collect();
    let mut raw = read_set(SetName::Raw, plan_input(&spec.pairs)?, |pair, _| {
        let pair = Arc::new(pair);
        for (seed, heap) in heaps.iter_mut() {
            heap.offer(RankKey::of(&pair, *seed), || pair.clone());
        }
    })?;
    for (seed, heap) in heaps {
        raw.by_seed.insert(seed, heap.into_sorted());
    }
    let sizes = Some((curated.pairs, raw.pairs, raw.invalid_rows));
    tracing::info!(
        worker = index,
        tasks = mine.len(),
        elapsed_s = plan.started.elapsed().as_secs_f64(),
        "read the sets"
    );
    if mine.is_empty() {
        return Ok(WorkerOutcome {
            results: Vec::new(),
            sizes,
        });
    }
    let evals: Vec<EvalSet> = spec
        .evals
        .iter()
        .map(|url| load_eval_set(url, CHUNK_PAIRS))
        .collect::<Result<_>>()?;
    let mut results = Vec::new();
    for t in &mine {
        let set = match t.set {
            SetName::Curated => &curated,
            SetName::Raw => &raw,
        };
        let candidates = set.by_seed.get(&t.seed).map(Vec::as_slice).unwrap_or(&[]);
        let f = fraction(t);
        let pairs: Vec<&PreferencePair> = match t.set {
            SetName::Curated => candidates
                .iter()
                .take_while(|(k, _)| k.within(f))
                .map(|(_, p)| p.as_ref())
                .collect(),
            SetName::Raw => candidates
                .iter()
                .take(counts[t.seed as usize][t.fraction_index] as usize)
                .map(|(_, p)| p.as_ref())
                .collect(),
        };
        let subset = Subset {
            set,
            subset_key: content_key(pairs.iter().copied()),
            pairs,
            fraction: f,
            seed: t.seed,
        };
        results.push(run_task(plan, &subset, &evals, index)?);
        plan.bar.inc(1);
        tracing::info!(
            worker = index,
            set = t.set.label(),
            fraction = f,
            seed = t.seed,
            elapsed_s = plan.started.elapsed().as_secs_f64(),
            "task done"
        );
    }
    Ok(WorkerOutcome { results, sizes })
}

/// Trains (or reuses) one subset's model and evaluates (or reuses its evaluations).
fn run_task(
    plan: &FractionsPlan,
    subset: &Subset<'_>,
    evals: &[EvalSet],
    worker: usize,
) -> Result<TaskResult> {
    let spec = &plan.spec;
    let model_key = {
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        h.update(&subset.subset_key.to_le_bytes());
        h.update(plan.trainer_fingerprint.as_bytes());
        h.update(&subset.seed.to_le_bytes());
        h.digest128()
    };
    let trained = match trainers::cached(&spec.trainer, &spec.cache, model_key)? {
        Some(t) => t,
        None => trainers::train(
            &spec.trainer,
            &plan.trainer,
            &spec.cache,
            model_key,
            subset,
            worker,
        )?,
    };
    let mut loaded = None;
    let mut outcomes = Vec::new();
    for set in evals {
        let path = trained
            .dir
            .join("evals")
            .join(format!("{:032x}.json", set.content_key));
        if let Some(mut accuracy) = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice::<SetAccuracy>(&b).ok())
        {
            accuracy.eval = set.eval.clone();
            outcomes.push(EvalOutcome {
                accuracy,
                computed: false,
            });
            continue;
        }
        if loaded.is_none() {
            loaded = Some(
                trained
                    .model
                    .load(&spec.options, spec.score_cache.as_deref())
                    .map_err(|e| e.for_setting("--trainer"))?,
            );
        }
        let model = loaded.as_ref().expect("loaded above");
        let measured = accuracy(set, model.as_ref(), CHUNK_PAIRS)?;
        write_atomically(
            &path,
            &serde_json::to_vec_pretty(&measured).expect("serializes"),
        )?;
        outcomes.push(EvalOutcome {
            accuracy: measured,
            computed: true,
        });
    }
    if let Some(m) = &loaded {
        m.flush().map_err(|e| e.for_setting("--trainer"))?;
    }
    Ok(TaskResult {
        set: subset.set.name,
        fraction: subset.fraction,
        seed: subset.seed,
        pairs: subset.pairs.len() as u64,
        subset_key: format!("{:032x}", subset.subset_key),
        model: trained.model.to_string(),
        trained: !trained.reused,
        train_s: trained.record.train_s,
        evals: outcomes,
        scoring: loaded.as_ref().map(|m| m.usage()).unwrap_or_default(),
    })
}

/// One put through the store: a reader sees the whole file or none of it.
fn write_atomically(path: &std::path::Path, bytes: &[u8]) -> Result<()> {
    synpref_engine::store::resolve(&path.display().to_string())?.put(bytes.to_vec())
}

/// Reads a set's valid pairs through `keep` (which files them per seed), counting the
/// rows that are not valid pairs.
fn read_set(
    name: SetName,
    input: synpref_engine::input::InputPlan,
    mut keep: impl FnMut(PreferencePair, &mut BTreeMap<u32, Vec<(RankKey, Arc<PreferencePair>)>>),
) -> Result<SetData> {
    let (schema, extras_fields) = input_schema(&input)?;
    let extras = Arc::new(ExtrasCodec::new(extras_fields)?);
    let mut by_seed = BTreeMap::new();
    let (mut pairs, mut invalid) = (0u64, 0u64);
    read_valid_pairs(
        &input,
        &extras,
        CHUNK_PAIRS,
        &mut |_| {
            invalid += 1;
            Ok(())
        },
        &mut |chunk| {
            pairs += chunk.len() as u64;
            for p in chunk {
                keep(p, &mut by_seed);
            }
            Ok(())
        },
    )?;
    for v in by_seed.values_mut() {
        v.sort_by_key(|(k, _)| *k);
    }
    Ok(SetData {
        name,
        schema,
        extras,
        file_urls: Arc::new(input.files.iter().map(|f| f.location.url.clone()).collect()),
        pairs,
        invalid_rows: invalid,
        by_seed,
    })
}
