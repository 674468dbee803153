//! `stage1`: the paper's human-AI loop (DESIGN §1, Stage 1), repeated `iterations`
//! times:
//! 1. train a built-in BT RM on the silver set, keeping the epoch checkpoint with the best
//!    accuracy on the gold verdicts (the "best RM"; the figure is reported, and is
//!    optimistic by construction since gold chose the checkpoint);
//! 2. for every decisive gold pair, p under the best RM and the k = 8 / ⌈8(1 − p)⌉
//!    nearest unverified pool pairs (`retrieve`);
//! 3. label the retrieved pairs: with LLM judges (`judge`; their votes join the silver
//!    set, and are written in curate's `--judges` format), or by humans: the pairs are
//!    exported as Label Studio tasks and Argilla records (`tasks`), the run stops, and a
//!    rerun imports `OUT/annotations/iteration-<i>.json` (Label Studio's JSON export) as
//!    gold labels and goes on.
//!
//! Every step is deterministic given the inputs and seeds, so a rerun recomputes the
//! same iterations: the LLM answers and embeddings come from their caches (a rerun
//! sends no LLM request), which is also how a run stopped for annotations resumes.
//!
//! Layout under `--out`: `iterations/<i>/{retrieval.jsonl, judge_samples.jsonl,
//! judge_votes.parquet, silver.jsonl, gold.jsonl, tasks.label-studio.json,
//! records.argilla.json}`; the final `silver.jsonl`, `gold.jsonl`,
//! `judge_votes.parquet` (every vote so far: curate's `--judges`), `best_rm/` (the last
//! best RM, loadable as `saved:DIR`) and `report.json`, written last; `cache/` (LLM
//! answers and embeddings) and `annotations/` are kept between runs.

pub mod ann;
pub mod attributes;
pub mod job;
pub mod judge;
pub mod llm;
pub mod retrieve;
pub mod tasks;

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use rustc_hash::{FxHashMap, FxHashSet};
use serde::{Deserialize, Serialize};
use synpref_engine::hashing::pair_key;
use synpref_engine::model::{GoldLabel, PreferencePair, Verdict};
use synpref_engine::output::write_json_lines;
use synpref_engine::score_cache::ScoreCache;
use synpref_engine::side::{label_to_json, GoldLabels, Truth};
use synpref_engine::store::resolve;
use synpref_engine::{Error, Result};
use synpref_operators::minhash::{MinHasher, NearDupSettings};
use synpref_operators::models::builtin::{HashedBtModel, TrainExample, TrainSettings};
use synpref_operators::models::saved::{self, ToSave};
use synpref_operators::models::{sigmoid, ComputeStats, ModelOptions};

use crate::job::RunSettings;
use crate::read::load_eval_set;
use ann::{IndexKind, IndexSettings, IndexStats, PoolIndex};
use judge::{JudgeQuality, JudgeSample, JudgeSettings, JudgeTask, JudgeVote};
use llm::{LlmClient, LlmSettings, LlmUsage};
use retrieve::{Embedder, EmbedderSpec, GoldRetrieval};

/// Who labels the retrieved pairs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Labeler {
    /// LLM judges (→ silver).
    Judges,
    /// Humans through Label Studio / Argilla (→ gold).
    Humans,
}

/// The settings of a stage1 run; defaults in `Default`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Stage1Spec {
    /// The unverified pool (pairs).
    pub pool: String,
    /// Human verdicts (gold-label format).
    pub gold: String,
    /// The LLM-labelled silver set (pairs, labelled as given).
    pub silver: String,
    /// Ground truth, to measure what the loop adds (generated data only).
    pub truth: Option<String>,
    pub iterations: usize,
    /// A local directory.
    pub out: PathBuf,
    pub embedder: EmbedderSpec,
    pub labeler: Labeler,
    pub judges: JudgeSettings,
    pub llm: LlmSettings,
    /// The best RM's training. Stage 1 makes more epochs than curate's best RM (2),
    /// because here gold picks the checkpoint, so extra epochs can only help.
    pub train: TrainSettings,
    /// k for a gold pair the best RM gets wrong (the paper: 8).
    pub k_max: usize,
    /// How the nearest pool pairs are found (exact scan or HNSW shards; `ann`).
    pub index: IndexSettings,
    /// Near-duplicates of gold (and already labelled) pairs are not candidates: the
    /// same MinHash bands as curate's near-duplicate search (`minhash`), so a pair
    /// that curate would discard as a near-duplicate of a verified one is never
    /// returned as unverified. `enabled: false` (`--no-near-dup`) turns it off.
    #[serde(default)]
    pub near_dup: NearDupSettings,
    /// Where LLM answers and embeddings are cached (default OUT/cache).
    pub cache: Option<PathBuf>,
    pub model_options: ModelOptions,
    /// Timely worker threads in this process and progress bars (the shared block).
    #[serde(flatten)]
    pub run: RunSettings,
}

impl Stage1Spec {
    pub fn new(pool: String, gold: String, silver: String, out: PathBuf) -> Stage1Spec {
        Stage1Spec {
            pool,
            gold,
            silver,
            truth: None,
            iterations: 3,
            out,
            embedder: EmbedderSpec::Hashed,
            labeler: Labeler::Judges,
            judges: JudgeSettings::default(),
            llm: LlmSettings::default(),
            train: TrainSettings {
                epochs: 4,
                ..TrainSettings::default()
            },
            k_max: retrieve::K_MAX,
            index: IndexSettings::default(),
            near_dup: NearDupSettings::default(),
            cache: None,
            model_options: ModelOptions::default(),
            run: RunSettings::default(),
        }
    }

    fn cache_dir(&self) -> PathBuf {
        self.cache.clone().unwrap_or_else(|| self.out.join("cache"))
    }
}

/// One iteration's figures.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IterationReport {
    pub iteration: usize,
    pub silver_pairs: usize,
    pub gold_verdicts: usize,
    /// The best RM's accuracy on the decisive gold verdicts (its chosen checkpoint's;
    /// gold chose the checkpoint, so this is optimistic).
    pub best_rm_gold_accuracy: f64,
    /// Gold accuracy after each epoch; the best one is kept.
    pub best_rm_epoch_accuracy: Vec<f64>,
    pub best_rm_epoch: usize,
    pub best_rm_fingerprint: String,
    /// Gold pairs with p ≤ 0.5 (the RM gets them wrong or cannot tell).
    pub gold_pairs_missed: usize,
    /// Σ k over gold pairs, and the distinct pairs retrieved (duplicates merged).
    pub retrieval_requested: usize,
    pub retrieved: usize,
    pub pool_candidates: usize,
    /// Pool pairs left out as near-duplicates of a gold or labelled pair (same
    /// MinHash bands as curate's near-duplicate search; 0 with near-dup off).
    #[serde(default)]
    pub near_duplicates_of_gold_excluded: usize,
    /// Share of the exact k nearest neighbours the approximate index returned, over
    /// `index_recall_queries` gold pairs also searched exactly (`None` in exact mode).
    pub index_recall: Option<f64>,
    pub index_recall_queries: usize,
    /// The slowest worker's time searching its part of the pool for every gold pair
    /// (without the recall measurement's exact scans).
    pub search_s: f64,
    /// Retrieved pairs the judges (or humans) labelled decisively / undecidable.
    pub labelled_chosen: usize,
    pub labelled_rejected: usize,
    pub labelled_undecidable: usize,
    /// The judges measured on gold pairs (judges mode).
    pub judge_quality: Option<JudgeQuality>,
    /// Share of this iteration's new silver labels that match the truth (with --truth).
    pub new_labels_truth_agreement: Option<f64>,
    pub llm: LlmUsage,
    /// `waiting_for_annotations` when humans label and their export is not there yet.
    pub status: String,
    pub elapsed_s: f64,
}

/// The report of a run (`report.json`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Stage1Report {
    pub spec: Stage1Spec,
    pub pool_rows: u64,
    pub pool_invalid_rows: u64,
    pub silver_rows_in: usize,
    pub gold_labels_in: usize,
    /// The retrieval index built over the pool (all workers).
    pub index: Option<IndexStats>,
    /// What the retrieval encoder's forward passes cost, stage by stage (stage1's one
    /// transformer model; all zero for the hashed embedder or when every embedding came
    /// from the cache): every worker's pool partition and the leader's gold and
    /// retrieved pairs.
    pub scoring: ComputeStats,
    pub iterations: Vec<IterationReport>,
    /// Every iteration's LLM usage together.
    pub llm: LlmUsage,
    /// `complete`, or `waiting_for_annotations` (see `next_step`).
    pub status: String,
    pub next_step: Option<String>,
    pub warnings: Vec<String>,
    pub elapsed_s: f64,
}

fn io(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::other(path.display().to_string(), e)
}

/// Writes one of the run's JSONL files through the store (whole or not at all).
fn write_jsonl<T: Serialize>(path: &Path, rows: impl IntoIterator<Item = T>) -> Result<()> {
    write_json_lines(&resolve(&path.display().to_string())?, rows)
}

/// A labelled pair as a JSON object in the input format (the silver set).
pub fn pair_json(p: &PreferencePair) -> serde_json::Value {
    synpref_engine::side::pair_to_json(p)
}

/// A pair with chosen and rejected swapped (the judges preferred the rejected reply).
fn swapped(p: &PreferencePair) -> PreferencePair {
    let mut q = p.clone();
    std::mem::swap(&mut q.chosen, &mut q.rejected);
    q.content_hash = synpref_engine::hashing::content_hash(&q.prompt, &q.chosen, &q.rejected);
    q.dedup_hash = synpref_engine::hashing::canonical_pair_hash(
        &q.prompt,
        &q.chosen,
        &q.rejected,
        q.implicit_prompt,
    );
    q
}

/// The decisive gold pairs: (pair, verdict), from the pairs the leader knows or the
/// label's own text, sorted by pair id.
fn gold_pairs(
    gold: &GoldLabels,
    known: &FxHashMap<u64, PreferencePair>,
) -> Vec<(PreferencePair, Verdict)> {
    let mut out: Vec<(PreferencePair, Verdict)> = gold
        .labels
        .values()
        .filter(|l| l.verdict != Verdict::Undecidable)
        .filter_map(|l| {
            if let Some((p, _)) = synpref_operators::training::gold::label_pair(l) {
                return Some((p, l.verdict));
            }
            known
                .get(&pair_key(&l.pair_id))
                .map(|p| (p.clone(), l.verdict))
        })
        .collect();
    out.sort_by(|a, b| a.0.pair_id.cmp(&b.0.pair_id));
    out
}

/// What every worker of a run shares: the spec, the embedder (loaded once per
/// process), the gold labels as read (every worker keeps the pool rows they name, so
/// the leader holds every gold pair whatever the partition) and the embedding cache.
pub struct Stage1Plan {
    pub spec: Stage1Spec,
    embedder: Embedder,
    emb_cache: ScoreCache,
    gold: GoldLabels,
    started: Instant,
}

/// Validates the spec, reads the gold labels and loads the embedder. On the leader
/// process (`leader`) it also clears the previous run's outputs: report.json, the
/// commit mark, goes first, so a crash leaves no report beside partial files.
pub fn prepare(spec: Stage1Spec, leader: bool) -> Result<Stage1Plan> {
    if spec.iterations == 0 {
        return Err(Error::setting("--iterations", "must be at least 1"));
    }
    if spec.labeler == Labeler::Judges && spec.judges.models.is_empty() {
        return Err(Error::setting(
            "--judge-model",
            "name at least one model at the LLM server (or label with --labeler humans)",
        ));
    }
    if spec.judges.samples == 0 {
        return Err(Error::setting("--judge-samples", "must be at least 1"));
    }
    if spec.labeler == Labeler::Judges {
        spec.llm.validate()?;
    }
    spec.index.validate()?;
    if leader {
        std::fs::create_dir_all(&spec.out).map_err(|e| io(&spec.out, e))?;
        for stale in [
            "report.json",
            "silver.jsonl",
            "gold.jsonl",
            "judge_votes.parquet",
        ] {
            let _ = std::fs::remove_file(spec.out.join(stale));
        }
        let _ = std::fs::remove_dir_all(spec.out.join("iterations"));
        let _ = std::fs::remove_dir_all(spec.out.join("best_rm"));
    }
    let gold = GoldLabels::read(&spec.gold)?;
    let embedder = Embedder::load(&spec.embedder, &spec.model_options)?;
    let emb_cache = ScoreCache::open(
        &spec.cache_dir().join("embeddings").display().to_string(),
        &embedder.fingerprint(),
        embedder.dims(),
    )?;
    Ok(Stage1Plan {
        spec,
        embedder,
        emb_cache,
        gold,
        started: Instant::now(),
    })
}

/// This worker's partition of the pool (its shards, or pair key mod peers), plus every row a gold label
/// names; in pair-id order, so that ties in similarity break by pair id on every
/// worker count. With the input's row and invalid-row counts.
fn read_pool_partition(
    url: &str,
    owns: impl Fn(u64) -> bool,
    gold: &GoldLabels,
) -> Result<(Vec<PreferencePair>, u64, u64)> {
    use synpref_engine::extras::ExtrasCodec;
    let input = synpref_engine::input::plan_input(url)?;
    let (_, extras_fields) = crate::read::input_schema(&input)?;
    let extras = std::sync::Arc::new(ExtrasCodec::new(extras_fields)?);
    let mut invalid = 0u64;
    let mut mine = Vec::new();
    let rows = crate::read::read_valid_pairs(
        &input,
        &extras,
        8192,
        &mut |_| {
            invalid += 1;
            Ok(())
        },
        &mut |pairs| {
            mine.extend(
                pairs
                    .into_iter()
                    .filter(|p| owns(p.pair_key) || gold.labels.contains_key(&p.pair_key)),
            );
            Ok(())
        },
    )?;
    mine.sort_by(|a, b| {
        a.pair_id
            .cmp(&b.pair_id)
            .then(a.content_hash.cmp(&b.content_hash))
    });
    // The first row of a pair id is the pair (as curate's duplicate_pair_id rule).
    mine.dedup_by(|a, b| a.pair_id == b.pair_id);
    Ok((mine, rows, invalid))
}

/// Adds to `excluded` the pool pairs (`keys`, with `bands` band keys each in
/// `pool_bands`) that share a band key with a gold or labelled pair
/// (`near_gold_bands`, sorted): their near-duplicates, which are not unverified data.
/// Returns how many it added.
fn exclude_near_gold(
    keys: &[u64],
    pool_bands: &[u64],
    bands: usize,
    near_gold_bands: &[u64],
    excluded: &mut FxHashSet<u64>,
) -> usize {
    if near_gold_bands.is_empty() || pool_bands.is_empty() {
        return 0;
    }
    let mut added = 0;
    for (key, own) in keys.iter().zip(pool_bands.chunks_exact(bands)) {
        if !excluded.contains(key) && own.iter().any(|b| near_gold_bands.binary_search(b).is_ok()) {
            excluded.insert(*key);
            added += 1;
        }
    }
    added
}

/// What the leader asks every worker in an iteration: the gold pairs' embeddings and
/// k, and the pairs no longer unverified.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct RetrievalQuery {
    /// (embedding, k) per decisive gold pair, in gold order.
    gold: Vec<(Vec<f32>, usize)>,
    /// Pair keys that are gold or labelled.
    excluded: Vec<u64>,
    /// The MinHash band keys of the gold and labelled pairs, sorted: a pool pair with
    /// one of them is their near-duplicate and no candidate (empty with near-dup off).
    near_gold_bands: Vec<u64>,
    /// Gold pairs (indices into `gold`) also searched exactly, to measure the index's
    /// recall (none in exact mode).
    recall_sample: Vec<usize>,
}

/// A worker's answer to a query (or its error: exit code and message).
type LocalNeighbours = std::result::Result<LocalAnswer, (i32, String)>;

#[derive(Clone, Debug, Serialize, Deserialize)]
struct LocalAnswer {
    /// Candidates this worker holds (owned, not excluded).
    candidates: usize,
    /// Owned pool pairs left out as near-duplicates of a gold or labelled pair.
    near_gold: usize,
    /// Per gold pair, the index's k most similar candidates (similarity, pair).
    found: Vec<Vec<(f32, PreferencePair)>>,
    /// Per gold pair of the recall sample, the similarities of the exact k nearest.
    exact: Vec<Vec<f32>>,
    /// What this worker's index holds.
    index: IndexStats,
    /// What embedding this worker's part of the pool cost.
    embedding: ComputeStats,
    /// Seconds this worker spent searching (the recall sample's exact scans apart).
    search_s: f64,
}

/// The gold pairs also searched exactly to measure the index: up to
/// `recall_queries` of them, drawn by a hash of their pair id (the same ones on every
/// run), in gold order. None in exact mode, where recall is 1 by construction.
fn recall_sample(golds: &[(PreferencePair, Verdict)], index: &IndexSettings) -> Vec<usize> {
    if index.kind == IndexKind::Exact {
        return Vec::new();
    }
    let mut sample: Vec<usize> = (0..golds.len()).collect();
    sample.sort_by_key(|&g| xxhash_rust::xxh3::xxh3_64(golds[g].0.pair_id.as_bytes()));
    sample.truncate(index.recall_queries);
    sample.sort_unstable();
    sample
}

/// The leader's state across iterations.
struct Leader {
    silver: Vec<PreferencePair>,
    gold: GoldLabels,
    truth: Option<Truth>,
    labelled: FxHashSet<u64>,
    client: Option<LlmClient>,
    /// Pairs the leader has seen whole: its partition, gold pairs, retrieved pairs.
    known: FxHashMap<u64, PreferencePair>,
    all_votes: Vec<JudgeVote>,
    iterations: Vec<IterationReport>,
    total_llm: LlmUsage,
    warnings: Vec<String>,
    best_model: Option<HashedBtModel>,
    silver_rows_in: usize,
    gold_labels_in: usize,
    pool_rows: u64,
    pool_invalid_rows: u64,
    /// The retrieval index, as the workers reported it at the first iteration.
    index: Option<IndexStats>,
    /// What the retrieval encoder computed: every worker's pool partition (reported at
    /// the first iteration) and the leader's gold and retrieved pairs.
    embedding: Mutex<ComputeStats>,
    /// The iteration being built (between the query and the neighbours).
    pending: Option<PendingIteration>,
    waiting: bool,
}

struct PendingIteration {
    golds: Vec<(PreferencePair, Verdict)>,
    gold_p: Vec<f64>,
    gold_rows: Vec<f32>,
    model: HashedBtModel,
    started: Instant,
}

/// One timely worker of a stage1 run. Every worker embeds its partition of the pool and
/// scans it for each gold pair's nearest candidates; worker 0 trains, merges the
/// neighbours, labels and writes, and returns the report.
pub fn run_worker(
    worker: &mut timely::worker::Worker,
    plan: &Stage1Plan,
) -> Result<Option<Stage1Report>> {
    use synpref_engine::collective::{agree_on_errors, compute_on_leader, gather_to_leader};
    let spec = &plan.spec;
    let (index, peers) = (worker.index(), worker.peers());
    // Setup: read and embed this worker's partition; worker 0 also reads the silver
    // set and opens the LLM client. Every worker learns whether all of them succeeded
    // before the loop's collectives, so that no worker waits for one that stopped.
    type Setup = (
        Vec<PreferencePair>,
        Vec<u64>,
        Vec<f32>,
        PoolIndex,
        Option<Leader>,
    );
    // This worker's own embedding cost (the embedder is shared by the process's
    // workers, so its figures are kept per call, not read off the model).
    let setup_embedding = Mutex::new(ComputeStats::default());
    let setup = (|| -> Result<Setup> {
        spec.index.check_workers(peers)?;
        let owns = |key: u64| spec.index.owns(key, index, peers);
        let (pool, rows, invalid) = read_pool_partition(&spec.pool, owns, &plan.gold)?;
        let refs: Vec<&PreferencePair> = pool.iter().collect();
        let emb = retrieve::embed(
            &plan.embedder,
            Some(&plan.emb_cache),
            &refs,
            &setup_embedding,
        )?;
        let keys: Vec<u64> = pool.iter().map(|p| p.pair_key).collect();
        // Gold rows kept for the leader are not candidates, so not indexed.
        let pool_index = PoolIndex::build(&spec.index, &emb, plan.embedder.dims(), &keys, |i| {
            owns(keys[i])
        });
        tracing::info!(
            worker = index,
            graph_shards = pool_index.stats.graph_shards,
            scanned_shards = pool_index.stats.scanned_shards,
            build_s = pool_index.stats.build_s,
            "retrieval index"
        );
        let leader = if index == 0 {
            Some(Leader::new(plan, &pool, rows, invalid)?)
        } else {
            None
        };
        Ok((pool, keys, emb, pool_index, leader))
    })();
    let (pool, keys, pool_rows, pool_index, mut leader) = match setup {
        Ok(x) => {
            agree_on_errors(worker, Ok(()))?;
            x
        }
        Err(e) => {
            let copy = Error::PeerFailed {
                worker: index,
                exit_code: e.exit_code(),
                message: e.to_string(),
            };
            let _ = agree_on_errors(worker, Err(copy));
            return Err(e);
        }
    };
    // The band keys of this worker's candidates, `bands` per pair (near-dup on).
    let hasher = spec.near_dup.enabled.then(|| MinHasher::new(spec.near_dup));
    let pool_bands: Vec<u64> = match &hasher {
        Some(h) => {
            let mut keys = Vec::new();
            let mut all = Vec::with_capacity(pool.len() * spec.near_dup.bands);
            for p in &pool {
                h.pair_band_keys(p, &mut keys);
                all.extend_from_slice(&keys);
            }
            all
        }
        None => Vec::new(),
    };
    // An error of the leader between collectives reaches every worker at the next one.
    let mut leader_error: Option<Error> = None;
    for iteration in 1..=spec.iterations {
        let query: Option<RetrievalQuery> =
            compute_on_leader(worker, || match (&mut leader, leader_error.take()) {
                (_, Some(e)) => Err(e),
                (Some(l), None) if !l.waiting => l.start_iteration(plan, iteration).map(Some),
                _ => Ok(None),
            })?;
        let Some(query) = query else { break };
        let mut excluded: FxHashSet<u64> = query.excluded.iter().copied().collect();
        let near_gold = exclude_near_gold(
            &keys,
            &pool_bands,
            spec.near_dup.bands,
            &query.near_gold_bands,
            &mut excluded,
        );
        // This worker's candidates: its own partition only (gold rows kept for the
        // leader are not candidates anyway), not gold, not labelled.
        let search_started = Instant::now();
        let candidates = pool_index.candidates(&keys, &excluded);
        let found: Vec<Vec<(f32, PreferencePair)>> = query
            .gold
            .iter()
            .map(|(q, k)| {
                pool_index
                    .search(&pool_rows, q, *k, &candidates)
                    .into_iter()
                    .map(|(i, sim)| (sim, pool[i].clone()))
                    .collect()
            })
            .collect();
        let search_s = search_started.elapsed().as_secs_f64();
        // The exact k nearest of the recall sample; a worker without graphs scanned
        // everything already.
        let exact = query
            .recall_sample
            .iter()
            .map(|&g| {
                if pool_index.stats.graph_shards == 0 {
                    return found[g].iter().map(|(sim, _)| *sim).collect();
                }
                let (q, k) = &query.gold[g];
                pool_index
                    .exact(&pool_rows, q, *k, &candidates)
                    .into_iter()
                    .map(|(_, sim)| sim)
                    .collect()
            })
            .collect();
        let found: LocalNeighbours = Ok(LocalAnswer {
            candidates: candidates.len(),
            near_gold,
            found,
            exact,
            index: pool_index.stats.clone(),
            embedding: setup_embedding.lock().expect("stats lock").clone(),
            search_s,
        });
        let gathered = gather_to_leader(worker, &found)?;
        if let (Some(l), Some(all)) = (&mut leader, gathered) {
            let mut per_worker = Vec::with_capacity(all.len());
            for (w, r) in all.into_iter().enumerate() {
                match r {
                    Ok(answer) => per_worker.push(answer),
                    Err((exit_code, message)) => {
                        return Err(Error::PeerFailed {
                            worker: w,
                            exit_code,
                            message,
                        })
                    }
                }
            }
            if let Err(e) = l.finish_iteration(plan, iteration, &query, per_worker) {
                if iteration == spec.iterations {
                    return Err(e);
                }
                leader_error = Some(e);
            }
        }
    }
    match leader {
        Some(l) => l.finish(plan).map(Some),
        None => Ok(None),
    }
}

impl Leader {
    fn new(
        plan: &Stage1Plan,
        pool: &[PreferencePair],
        pool_rows: u64,
        pool_invalid_rows: u64,
    ) -> Result<Leader> {
        let spec = &plan.spec;
        let silver_set = load_eval_set(&spec.silver, 8192)?;
        let truth = spec.truth.as_deref().map(Truth::read).transpose()?;
        let silver = silver_set.pairs;
        let mut settings = spec.llm.clone();
        settings.cache_dir = Some(spec.cache_dir().join("llm"));
        settings.progress = spec.run.progress;
        let client = match spec.labeler {
            Labeler::Judges => Some(LlmClient::new(settings)?),
            Labeler::Humans => None,
        };
        Ok(Leader {
            labelled: silver.iter().map(|p| p.pair_key).collect(),
            silver_rows_in: silver.len(),
            silver,
            gold_labels_in: plan.gold.labels.len(),
            gold: plan.gold.clone(),
            truth,
            client,
            known: pool.iter().map(|p| (p.pair_key, p.clone())).collect(),
            all_votes: Vec::new(),
            iterations: Vec::new(),
            total_llm: LlmUsage::default(),
            warnings: Vec::new(),
            best_model: None,
            pool_rows,
            pool_invalid_rows,
            index: None,
            embedding: Mutex::default(),
            pending: None,
            waiting: false,
        })
    }

    /// The band keys of every gold and labelled pair the leader has whole, sorted and
    /// distinct (none with near-dup off).
    fn near_gold_bands(&self, spec: &Stage1Spec) -> Vec<u64> {
        if !spec.near_dup.enabled {
            return Vec::new();
        }
        let hasher = MinHasher::new(spec.near_dup);
        let mut keys = Vec::new();
        let mut bands = Vec::new();
        let verified = self.gold.labels.keys().chain(self.labelled.iter());
        for p in verified.filter_map(|k| self.known.get(k)) {
            hasher.pair_band_keys(p, &mut keys);
            bands.extend_from_slice(&keys);
        }
        bands.sort_unstable();
        bands.dedup();
        bands
    }

    /// Step 1 and the query of step 2: the best RM, p and k per gold pair.
    fn start_iteration(&mut self, plan: &Stage1Plan, iteration: usize) -> Result<RetrievalQuery> {
        let spec = &plan.spec;
        let golds = gold_pairs(&self.gold, &self.known);
        if golds.is_empty() {
            return Err(Error::setting(
                "--gold",
                format!("`{}` has no decisive verdict for a pair in the pool or with its own text: the best RM cannot be chosen", spec.gold),
            ));
        }
        if self.silver.is_empty() {
            return Err(Error::setting(
                "--silver",
                format!("`{}` holds no valid pair to train on", spec.silver),
            ));
        }
        let bits = spec.train.feature_bits;
        let train: Vec<TrainExample> = self
            .silver
            .iter()
            .map(|p| TrainExample::from_pair(p, bits, false))
            .collect();
        let heldout: Vec<TrainExample> = golds
            .iter()
            .map(|(p, v)| TrainExample::from_pair(p, bits, *v == Verdict::Rejected))
            .collect();
        let model = HashedBtModel::train(train, heldout.clone(), &spec.train, |_, _| {});
        tracing::info!(
            iteration,
            gold_accuracy = model.accuracy(&heldout),
            epoch = model.info.chosen_epoch,
            "best RM"
        );
        let gold_p: Vec<f64> = heldout
            .iter()
            .map(|e| sigmoid(model.margin(e) as f64))
            .collect();
        let gold_refs: Vec<&PreferencePair> = golds.iter().map(|(p, _)| p).collect();
        let gold_rows = retrieve::embed(
            &plan.embedder,
            Some(&plan.emb_cache),
            &gold_refs,
            &self.embedding,
        )?;
        let d = plan.embedder.dims();
        let query = RetrievalQuery {
            gold: gold_p
                .iter()
                .enumerate()
                .map(|(g, p)| {
                    (
                        gold_rows[g * d..(g + 1) * d].to_vec(),
                        retrieve::k_for(*p, spec.k_max),
                    )
                })
                .collect(),
            excluded: self
                .gold
                .labels
                .keys()
                .chain(self.labelled.iter())
                .copied()
                .collect(),
            recall_sample: recall_sample(&golds, &spec.index),
            near_gold_bands: self.near_gold_bands(spec),
        };
        self.pending = Some(PendingIteration {
            golds,
            gold_p,
            gold_rows,
            model,
            started: Instant::now(),
        });
        Ok(query)
    }

    /// Steps 2 (merge) and 3: the global nearest neighbours, their labels, the files.
    fn finish_iteration(
        &mut self,
        plan: &Stage1Plan,
        iteration: usize,
        query: &RetrievalQuery,
        per_worker: Vec<LocalAnswer>,
    ) -> Result<()> {
        let spec = &plan.spec;
        let PendingIteration {
            golds,
            gold_p,
            gold_rows,
            model,
            started,
        } = self.pending.take().expect("an iteration was started");
        let dir = spec.out.join("iterations").join(iteration.to_string());
        std::fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
        // The global k nearest of each gold pair: the best of every worker's k nearest,
        // ties by pair id (as a one-worker scan over a pool in pair-id order).
        let mut per_gold = Vec::with_capacity(golds.len());
        let mut retrieved: Vec<PreferencePair> = Vec::new();
        let mut seen = FxHashSet::default();
        for (g, (pair, _)) in golds.iter().enumerate() {
            let mut all: Vec<&(f32, PreferencePair)> =
                per_worker.iter().flat_map(|w| w.found[g].iter()).collect();
            all.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.pair_id.cmp(&b.1.pair_id)));
            all.truncate(query.gold[g].1);
            for (_, p) in &all {
                if seen.insert(p.pair_key) {
                    retrieved.push(p.clone());
                }
            }
            per_gold.push(GoldRetrieval {
                gold_pair_id: pair.pair_id.clone(),
                p: gold_p[g],
                k: query.gold[g].1,
                neighbours: all.iter().map(|(s, p)| (p.pair_id.clone(), *s)).collect(),
            });
        }
        write_jsonl(&dir.join("retrieval.jsonl"), &per_gold)?;
        let candidates: usize = per_worker.iter().map(|w| w.candidates).sum();
        // The index's recall on the sampled gold pairs: the global exact k nearest
        // (merged as above) against what the index returned.
        let exact: Vec<Vec<f32>> = (0..query.recall_sample.len())
            .map(|s| {
                let mut all: Vec<f32> = per_worker
                    .iter()
                    .flat_map(|w| w.exact[s].iter().copied())
                    .collect();
                all.sort_by(|a, b| b.total_cmp(a));
                all.truncate(query.gold[query.recall_sample[s]].1);
                all
            })
            .collect();
        let approximate: Vec<Vec<f32>> = query
            .recall_sample
            .iter()
            .map(|&g| per_gold[g].neighbours.iter().map(|(_, sim)| *sim).collect())
            .collect();
        let index_recall = ann::recall(&approximate, &exact);
        if self.index.is_none() {
            let mut stats = IndexStats::default();
            for w in &per_worker {
                stats.merge(&w.index);
                self.embedding
                    .get_mut()
                    .expect("stats lock")
                    .merge(&w.embedding);
            }
            self.index = Some(stats);
        }
        if let Some(r) = index_recall.filter(|&r| r < 0.9) {
            self.warnings.push(format!(
                "iteration {iteration}: the approximate index found {:.0}% of the exact nearest neighbours; raise --hnsw-ef-search or use --index exact",
                r * 100.0
            ));
        }
        for p in &retrieved {
            self.known.entry(p.pair_key).or_insert_with(|| p.clone());
        }
        let heldout_acc = model.info.heldout_accuracy.clone();
        let mut report = IterationReport {
            iteration,
            silver_pairs: self.silver.len(),
            gold_verdicts: golds.len(),
            best_rm_gold_accuracy: heldout_acc
                .get(model.info.chosen_epoch.saturating_sub(1))
                .copied()
                .unwrap_or(f64::NAN),
            best_rm_epoch_accuracy: heldout_acc,
            best_rm_epoch: model.info.chosen_epoch,
            best_rm_fingerprint: model.fingerprint(),
            gold_pairs_missed: gold_p.iter().filter(|p| **p <= 0.5).count(),
            retrieval_requested: per_gold.iter().map(|g| g.neighbours.len()).sum(),
            retrieved: retrieved.len(),
            pool_candidates: candidates,
            near_duplicates_of_gold_excluded: per_worker.iter().map(|w| w.near_gold).sum(),
            index_recall,
            index_recall_queries: query.recall_sample.len(),
            search_s: per_worker.iter().map(|w| w.search_s).fold(0.0, f64::max),
            labelled_chosen: 0,
            labelled_rejected: 0,
            labelled_undecidable: 0,
            judge_quality: None,
            new_labels_truth_agreement: None,
            llm: LlmUsage::default(),
            status: "complete".into(),
            elapsed_s: 0.0,
        };
        let labelling = Labelling {
            plan,
            iteration,
            dir: &dir,
            golds: &golds,
            gold_rows: &gold_rows,
            retrieved: &retrieved,
        };
        match (spec.labeler, self.client.take()) {
            (Labeler::Judges, Some(client)) => {
                let labelled = self.label_with_judges(&labelling, &client, &mut report);
                self.client = Some(client);
                labelled?;
            }
            (_, client) => {
                self.client = client;
                self.label_with_humans(&labelling, &model, &mut report)?;
            }
        }
        let gold_out: Vec<serde_json::Value> = {
            let mut ls: Vec<&GoldLabel> = self.gold.labels.values().collect();
            ls.sort_by(|a, b| a.pair_id.cmp(&b.pair_id));
            ls.into_iter().map(label_to_json).collect()
        };
        write_jsonl(&dir.join("gold.jsonl"), &gold_out)?;
        write_jsonl(&dir.join("silver.jsonl"), self.silver.iter().map(pair_json))?;
        report.elapsed_s = started.elapsed().as_secs_f64();
        tracing::info!(
            iteration,
            retrieved = report.retrieved,
            "stage1 iteration done"
        );
        self.iterations.push(report);
        self.best_model = Some(model);
        Ok(())
    }

    /// Step 3 with LLM judges: the retrieved pairs judged (few-shot with the nearest
    /// gold pairs), the judges measured on gold pairs they are not shown, the votes
    /// aggregated into silver labels.
    fn label_with_judges(
        &mut self,
        l: &Labelling<'_>,
        client: &LlmClient,
        report: &mut IterationReport,
    ) -> Result<()> {
        let (spec, iteration, dir, golds, gold_rows, retrieved) = (
            &l.plan.spec,
            l.iteration,
            l.dir,
            l.golds,
            l.gold_rows,
            l.retrieved,
        );
        let d = l.plan.embedder.dims();
        let retrieved_refs: Vec<&PreferencePair> = retrieved.iter().collect();
        let rows_of = |pairs: &[&PreferencePair]| {
            retrieve::embed(
                &l.plan.embedder,
                Some(&l.plan.emb_cache),
                pairs,
                &self.embedding,
            )
        };
        let few_shot = |row: &[f32], exclude: Option<&str>| -> Vec<(&PreferencePair, Verdict)> {
            let cand: Vec<usize> = (0..golds.len())
                .filter(|&g| Some(golds[g].0.pair_id.as_str()) != exclude)
                .collect();
            retrieve::nearest(row, gold_rows, &cand, spec.judges.few_shot)
                .into_iter()
                .map(|(g, _)| (&golds[g].0, golds[g].1))
                .collect()
        };
        let js = &spec.judges;
        let retrieved_rows = rows_of(&retrieved_refs)?;
        // The judges on the retrieved pairs: a seeded coin per (pair, model, sample).
        let examples: Vec<Vec<(&PreferencePair, Verdict)>> = (0..retrieved.len())
            .map(|n| few_shot(&retrieved_rows[n * d..(n + 1) * d], None))
            .collect();
        let mut tasks = Vec::new();
        for (p, examples) in retrieved.iter().zip(&examples) {
            for model_name in &js.models {
                for sample in 0..js.samples {
                    tasks.push(JudgeTask {
                        pair: p,
                        examples,
                        model: model_name,
                        sample,
                        chosen_first: judge::chosen_first(js.seed, &p.pair_id, model_name, sample),
                    });
                }
            }
        }
        // And on gold pairs they are not shown, in both orders.
        let mut eval_idx: Vec<usize> = (0..golds.len()).collect();
        eval_idx.sort_by_key(|&g| {
            xxhash_rust::xxh3::xxh3_64_with_seed(golds[g].0.pair_id.as_bytes(), js.seed)
        });
        eval_idx.truncate(js.gold_eval_pairs);
        let eval_examples: Vec<Vec<(&PreferencePair, Verdict)>> = eval_idx
            .iter()
            .map(|&g| few_shot(&gold_rows[g * d..(g + 1) * d], Some(&golds[g].0.pair_id)))
            .collect();
        let mut eval_tasks = Vec::new();
        for (&g, examples) in eval_idx.iter().zip(&eval_examples) {
            for model_name in &js.models {
                for sample in 0..js.samples {
                    for order in [true, false] {
                        eval_tasks.push(JudgeTask {
                            pair: &golds[g].0,
                            examples,
                            model: model_name,
                            sample,
                            chosen_first: order,
                        });
                    }
                }
            }
        }
        let (eval_samples, eval_usage) = judge::judge(
            client,
            &format!("iteration {iteration}: judges on gold"),
            &eval_tasks,
            js,
        )?;
        let gold_verdicts: FxHashMap<String, Verdict> =
            golds.iter().map(|(p, v)| (p.pair_id.clone(), *v)).collect();
        let quality = judge::quality(&eval_samples, &gold_verdicts);
        let (samples, usage) = judge::judge(
            client,
            &format!("iteration {iteration}: judges"),
            &tasks,
            js,
        )?;
        write_jsonl(
            &dir.join("judge_samples.jsonl"),
            samples
                .iter()
                .chain(&eval_samples)
                .collect::<Vec<&JudgeSample>>(),
        )?;
        let votes = judge::aggregate(&samples);
        judge::write_votes(
            &resolve(&dir.join("judge_votes.parquet").display().to_string())?,
            &votes,
        )?;
        let by_id: FxHashMap<&str, &PreferencePair> =
            retrieved.iter().map(|p| (p.pair_id.as_str(), p)).collect();
        let (mut truth_hits, mut truth_n) = (0usize, 0usize);
        for v in &votes {
            let p = by_id[v.pair_id.as_str()];
            match v.verdict {
                Verdict::Chosen => {
                    report.labelled_chosen += 1;
                    self.silver.push(p.clone());
                }
                Verdict::Rejected => {
                    report.labelled_rejected += 1;
                    self.silver.push(swapped(p));
                }
                Verdict::Undecidable => report.labelled_undecidable += 1,
            }
            if let (Some(t), true) = (&self.truth, v.verdict != Verdict::Undecidable) {
                if let Some(&better) = t.chosen_is_better.get(&p.pair_key) {
                    truth_n += 1;
                    truth_hits += (better == (v.verdict == Verdict::Chosen)) as usize;
                }
            }
        }
        // Every retrieved pair was asked (an invalid answer is a sample too), so
        // each has a vote, undecidable when no sample was valid.
        debug_assert_eq!(votes.len(), retrieved.len());
        report.new_labels_truth_agreement =
            (truth_n > 0).then(|| truth_hits as f64 / truth_n as f64);
        for p in retrieved {
            self.labelled.insert(p.pair_key);
        }
        self.all_votes.extend(votes);
        let mut u = eval_usage;
        u.merge(&usage);
        if let Some(w) = &quality.warning {
            if !self
                .warnings
                .iter()
                .any(|x: &String| x.ends_with(w.as_str()))
            {
                self.warnings.push(format!("iteration {iteration}: {w}"));
            }
        }
        report.judge_quality = Some(quality);
        self.total_llm.merge(&u);
        report.llm = u;
        Ok(())
    }

    /// Step 3 with humans: the retrieved pairs as annotation tasks; the annotations,
    /// once exported to OUT/annotations/, become gold.
    fn label_with_humans(
        &mut self,
        l: &Labelling<'_>,
        model: &HashedBtModel,
        report: &mut IterationReport,
    ) -> Result<()> {
        let (spec, iteration, dir, retrieved) = (&l.plan.spec, l.iteration, l.dir, l.retrieved);
        let bits = spec.train.feature_bits;
        let retrieved_refs: Vec<&PreferencePair> = retrieved.iter().collect();
        // Humans: the retrieved pairs as tasks; their export, once there, is gold.
        let suggestions: Vec<tasks::Suggestion> = retrieved
            .iter()
            .map(|p| tasks::Suggestion {
                best_rm_p: Some(sigmoid(
                    model.margin(&TrainExample::from_pair(p, bits, false)) as f64,
                )),
                judges: None,
            })
            .collect();
        tasks::write_label_studio(
            &resolve(&dir.join("tasks.label-studio.json").display().to_string())?,
            &retrieved_refs,
            &suggestions,
            iteration as u64,
        )?;
        tasks::write_argilla(
            &resolve(&dir.join("records.argilla.json").display().to_string())?,
            &retrieved_refs,
            &suggestions,
            iteration as u64,
        )?;
        let annotations = spec
            .out
            .join("annotations")
            .join(format!("iteration-{iteration}.json"));
        if annotations.is_file() {
            let imported =
                tasks::import_label_studio(&resolve(&annotations.display().to_string())?)?;
            for l in &imported.labels {
                match l.verdict {
                    Verdict::Chosen => report.labelled_chosen += 1,
                    Verdict::Rejected => report.labelled_rejected += 1,
                    Verdict::Undecidable => report.labelled_undecidable += 1,
                }
            }
            for l in imported.labels {
                self.gold.insert(l);
            }
            // Tasks nobody annotated stay unverified (they may be retrieved again).
        } else {
            report.status = "waiting_for_annotations".into();
            self.waiting = true;
        }
        Ok(())
    }

    /// The final sets, then the report (the commit mark) last.
    fn finish(mut self, plan: &Stage1Plan) -> Result<Stage1Report> {
        let spec = &plan.spec;
        let last = spec
            .out
            .join("iterations")
            .join(self.iterations.len().to_string());
        for f in ["silver.jsonl", "gold.jsonl"] {
            std::fs::copy(last.join(f), spec.out.join(f)).map_err(|e| io(&spec.out.join(f), e))?;
        }
        self.all_votes.sort_by(|a, b| a.pair_id.cmp(&b.pair_id));
        judge::write_votes(
            &resolve(&spec.out.join("judge_votes.parquet").display().to_string())?,
            &self.all_votes,
        )?;
        if let Some(m) = &self.best_model {
            saved::save(&spec.out.join("best_rm"), ToSave::Builtin(m))
                .map_err(|e| e.for_setting("--out"))?;
        }
        let accs: Vec<f64> = self
            .iterations
            .iter()
            .map(|i| i.best_rm_gold_accuracy)
            .collect();
        if let (Some(first), Some(last)) = (accs.first(), accs.last()) {
            if accs.len() >= 2 && last + 1e-9 < *first {
                self.warnings.push(format!(
                    "the best RM's gold accuracy fell from {:.1}% to {:.1}% over the iterations: the labels added did not help",
                    first * 100.0,
                    last * 100.0
                ));
            }
        }
        let waiting = self.waiting;
        let next_step = waiting.then(|| {
            let i = self.iterations.len();
            format!(
                "import {} into Label Studio (labelling config: `synpref tasks config`), annotate, export the project as JSON to {}, and rerun this command",
                spec.out.join("iterations").join(i.to_string()).join("tasks.label-studio.json").display(),
                spec.out.join("annotations").join(format!("iteration-{i}.json")).display()
            )
        });
        let report = Stage1Report {
            spec: spec.clone(),
            pool_rows: self.pool_rows,
            pool_invalid_rows: self.pool_invalid_rows,
            silver_rows_in: self.silver_rows_in,
            gold_labels_in: self.gold_labels_in,
            index: self.index,
            scoring: self.embedding.into_inner().expect("stats lock"),
            iterations: self.iterations,
            llm: self.total_llm,
            status: if waiting {
                "waiting_for_annotations".into()
            } else {
                "complete".into()
            },
            next_step,
            warnings: self.warnings,
            elapsed_s: plan.started.elapsed().as_secs_f64(),
        };
        synpref_engine::output::write_json(
            &resolve(&spec.out.join("report.json").display().to_string())?,
            &report,
        )?;
        Ok(report)
    }
}

/// The summary printed after a run.
pub fn summary(r: &Stage1Report) -> String {
    let mut s = format!(
        "stage1: {} iteration(s) over {} pool pairs ({} silver, {} gold labels in), {:.1} s\n",
        r.iterations.len(),
        r.pool_rows,
        r.silver_rows_in,
        r.gold_labels_in,
        r.elapsed_s
    );
    s.push_str("iter  silver  gold  best-RM gold acc  missed  retrieved  +chosen  +rejected  undecided  judge agreement  position bias  LLM requests (cached)\n");
    for it in &r.iterations {
        let q = it.judge_quality.as_ref();
        let pct = |x: Option<f64>| {
            x.map(|v| format!("{:.1}%", v * 100.0))
                .unwrap_or_else(|| "—".into())
        };
        s.push_str(&format!(
            "{:>4}  {:>6}  {:>4}  {:>15.1}%  {:>6}  {:>9}  {:>7}  {:>9}  {:>9}  {:>15}  {:>13}  {} ({})\n",
            it.iteration,
            it.silver_pairs,
            it.gold_verdicts,
            it.best_rm_gold_accuracy * 100.0,
            it.gold_pairs_missed,
            it.retrieved,
            it.labelled_chosen,
            it.labelled_rejected,
            it.labelled_undecidable,
            pct(q.and_then(|q| q.agreement_with_gold)),
            pct(q.and_then(|q| q.position_bias_rate)),
            it.llm.requests,
            it.llm.cached,
        ));
    }
    if let Some(ix) = &r.index {
        let recalls: Vec<String> = r
            .iterations
            .iter()
            .filter_map(|it| {
                it.index_recall
                    .map(|x| format!("{:.1}% ({} queries)", x * 100.0, it.index_recall_queries))
            })
            .collect();
        s.push_str(&format!(
            "index: {} — {} HNSW shard(s) over {} rows, {} scanned shard(s), built in {:.1} s{}\n",
            r.spec.index.kind.as_str(),
            ix.graph_shards,
            ix.graph_rows,
            ix.scanned_shards,
            ix.build_s,
            if recalls.is_empty() {
                String::new()
            } else {
                format!(
                    "; recall against exact per iteration: {}",
                    recalls.join(", ")
                )
            }
        ));
    }
    s.push_str(&format!(
        "LLM: {} HTTP requests ({} retries), {} prompt + {} completion tokens, ${:.4}\n",
        r.llm.http_requests,
        r.llm.retries,
        r.llm.prompt_tokens,
        r.llm.completion_tokens,
        r.llm.cost_usd
    ));
    for w in &r.warnings {
        s.push_str(&format!("warning: {w}\n"));
    }
    if let Some(n) = &r.next_step {
        s.push_str(&format!("waiting for annotations: {n}\n"));
    }
    s
}

/// What labelling one iteration's retrieved pairs reads: the plan, the iteration's
/// directory, the gold pairs with their embeddings, the retrieved pairs.
struct Labelling<'a> {
    plan: &'a Stage1Plan,
    iteration: usize,
    dir: &'a std::path::Path,
    golds: &'a [(PreferencePair, Verdict)],
    gold_rows: &'a [f32],
    retrieved: &'a [PreferencePair],
}
