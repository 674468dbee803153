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

pub mod attributes;
pub mod judge;
pub mod llm;
pub mod retrieve;
pub mod tasks;

use std::path::{Path, PathBuf};
use std::time::Instant;

use rustc_hash::{FxHashMap, FxHashSet};
use serde::{Deserialize, Serialize};
use synpref_engine::hashing::pair_key;
use synpref_engine::model::{GoldLabel, PreferencePair, Verdict};
use synpref_engine::score_cache::ScoreCache;
use synpref_engine::side::{label_to_json, GoldLabels, Truth};
use synpref_engine::store::resolve;
use synpref_engine::{Error, Result};
use synpref_operators::models::builtin::{HashedBtModel, TrainExample, TrainSettings};
use synpref_operators::models::saved::{self, ToSave};
use synpref_operators::models::{sigmoid, ModelOptions};

use crate::eval::load_eval_set;
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
    /// Where LLM answers and embeddings are cached (default OUT/cache).
    pub cache: Option<PathBuf>,
    pub model_options: ModelOptions,
    pub progress: bool,
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
            cache: None,
            model_options: ModelOptions::default(),
            progress: true,
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

fn write_jsonl<T: Serialize>(path: &Path, rows: impl IntoIterator<Item = T>) -> Result<()> {
    let mut out = Vec::new();
    for r in rows {
        serde_json::to_writer(&mut out, &r).map_err(|e| io(path, e))?;
        out.push(b'\n');
    }
    std::fs::write(path, out).map_err(|e| io(path, e))
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
    q
}

/// The decisive gold pairs: (pair, verdict), from the pool or the label's own text,
/// sorted by pair id.
fn gold_pairs(gold: &GoldLabels, pool_by_key: &FxHashMap<u64, usize>, pool: &[PreferencePair]) -> Vec<(PreferencePair, Verdict)> {
    let mut out: Vec<(PreferencePair, Verdict)> = gold
        .labels
        .values()
        .filter(|l| l.verdict != Verdict::Undecidable)
        .filter_map(|l| {
            if let Some((p, _)) = synpref_operators::training::gold::label_pair(l) {
                return Some((p, l.verdict));
            }
            pool_by_key
                .get(&pair_key(&l.pair_id))
                .map(|&i| (pool[i].clone(), l.verdict))
        })
        .collect();
    out.sort_by(|a, b| a.0.pair_id.cmp(&b.0.pair_id));
    out
}

/// Runs stage1.
pub fn run_stage1(spec: &Stage1Spec) -> Result<Stage1Report> {
    let started = Instant::now();
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
    std::fs::create_dir_all(&spec.out).map_err(|e| io(&spec.out, e))?;
    // A previous run's outputs go before anything new is written: report.json is the
    // commit mark and goes first, so a crash leaves no report next to partial files.
    for stale in ["report.json", "silver.jsonl", "gold.jsonl", "judge_votes.parquet"] {
        let _ = std::fs::remove_file(spec.out.join(stale));
    }
    let _ = std::fs::remove_dir_all(spec.out.join("iterations"));
    let _ = std::fs::remove_dir_all(spec.out.join("best_rm"));

    let pool_set = load_eval_set(&spec.pool, 8192)?;
    let silver_set = load_eval_set(&spec.silver, 8192)?;
    let mut gold = GoldLabels::read(&spec.gold)?;
    let truth = spec.truth.as_deref().map(Truth::read).transpose()?;
    let pool = pool_set.pairs;
    let mut pool_by_key: FxHashMap<u64, usize> = FxHashMap::default();
    for (i, p) in pool.iter().enumerate() {
        pool_by_key.entry(p.pair_key).or_insert(i);
    }
    let gold_labels_in = gold.labels.len();
    let mut silver: Vec<PreferencePair> = silver_set.pairs;
    let silver_rows_in = silver.len();
    // Pairs that are labelled (silver or judged) are no longer "unverified".
    let mut labelled: FxHashSet<u64> = silver.iter().map(|p| p.pair_key).collect();

    let cache_dir = spec.cache_dir();
    let mut llm_settings = spec.llm.clone();
    llm_settings.cache_dir = Some(cache_dir.join("llm"));
    llm_settings.progress = spec.progress;
    let client = match spec.labeler {
        Labeler::Judges => Some(LlmClient::new(llm_settings)?),
        Labeler::Humans => None,
    };
    let embedder = Embedder::load(&spec.embedder, &spec.model_options)?;
    let emb_cache = ScoreCache::open(
        &cache_dir.join("embeddings").display().to_string(),
        &embedder.fingerprint(),
        embedder.dims(),
    )?;
    let d = embedder.dims();
    let pool_refs: Vec<&PreferencePair> = pool.iter().collect();
    let pool_rows = retrieve::embed(&embedder, Some(&emb_cache), &pool_refs)?;

    let mut all_votes: Vec<JudgeVote> = Vec::new();
    let mut iterations = Vec::new();
    let mut total_llm = LlmUsage::default();
    let mut warnings = Vec::new();
    let mut status = "complete".to_string();
    let mut next_step = None;
    let mut best_model: Option<HashedBtModel> = None;
    for iteration in 1..=spec.iterations {
        let t0 = Instant::now();
        let dir = spec.out.join("iterations").join(iteration.to_string());
        std::fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
        let golds = gold_pairs(&gold, &pool_by_key, &pool);
        if golds.is_empty() {
            return Err(Error::setting(
                "--gold",
                format!("`{}` has no decisive verdict for a pair in the pool or with its own text: the best RM cannot be chosen", spec.gold),
            ));
        }
        if silver.is_empty() {
            return Err(Error::setting("--silver", format!("`{}` holds no valid pair to train on", spec.silver)));
        }

        // 1. The best RM: trained on silver, the checkpoint chosen by gold accuracy.
        let bits = spec.train.feature_bits;
        let train: Vec<TrainExample> = silver.iter().map(|p| TrainExample::from_pair(p, bits, false)).collect();
        let heldout: Vec<TrainExample> = golds
            .iter()
            .map(|(p, v)| TrainExample::from_pair(p, bits, *v == Verdict::Rejected))
            .collect();
        let model = HashedBtModel::train(train, heldout.clone(), &spec.train, |_, _| {});
        let best_acc = model.accuracy(&heldout);
        tracing::info!(iteration, gold_accuracy = best_acc, epoch = model.info.chosen_epoch, "best RM");

        // 2. p per gold pair, and retrieval among the unverified pool.
        let gold_p: Vec<(&PreferencePair, f64)> = golds
            .iter()
            .zip(&heldout)
            .map(|((p, _), e)| (p, sigmoid(model.margin(e) as f64)))
            .collect();
        let gold_keys: FxHashSet<u64> = gold.labels.keys().copied().collect();
        let candidates: Vec<usize> = (0..pool.len())
            .filter(|&i| {
                let k = pool[i].pair_key;
                !gold_keys.contains(&k) && !labelled.contains(&k) && pool_by_key.get(&k) == Some(&i)
            })
            .collect();
        let gold_refs: Vec<&PreferencePair> = golds.iter().map(|(p, _)| p).collect();
        let gold_rows = retrieve::embed(&embedder, Some(&emb_cache), &gold_refs)?;
        let found = retrieve::retrieve(&gold_p, &gold_rows, &pool, &pool_rows, &candidates, spec.k_max);
        write_jsonl(&dir.join("retrieval.jsonl"), &found.per_gold)?;
        let retrieved: Vec<&PreferencePair> = found.unique.iter().map(|&i| &pool[i]).collect();

        let mut report = IterationReport {
            iteration,
            silver_pairs: silver.len(),
            gold_verdicts: golds.len(),
            best_rm_gold_accuracy: best_acc,
            best_rm_epoch_accuracy: model.info.heldout_accuracy.clone(),
            best_rm_epoch: model.info.chosen_epoch,
            best_rm_fingerprint: model.fingerprint(),
            gold_pairs_missed: gold_p.iter().filter(|(_, p)| *p <= 0.5).count(),
            retrieval_requested: found.per_gold.iter().map(|g: &GoldRetrieval| g.neighbours.len()).sum(),
            retrieved: retrieved.len(),
            pool_candidates: candidates.len(),
            labelled_chosen: 0,
            labelled_rejected: 0,
            labelled_undecidable: 0,
            judge_quality: None,
            new_labels_truth_agreement: None,
            llm: LlmUsage::default(),
            status: "complete".into(),
            elapsed_s: 0.0,
        };
        best_model = Some(model);

        // 3. Labelling.
        let few_shot = |pair_index_rows: &[f32], exclude: Option<&str>| -> Vec<(&PreferencePair, Verdict)> {
            let cand: Vec<usize> = (0..golds.len())
                .filter(|&g| Some(golds[g].0.pair_id.as_str()) != exclude)
                .collect();
            retrieve::nearest(pair_index_rows, &gold_rows, &cand, spec.judges.few_shot)
                .into_iter()
                .map(|(g, _)| (&golds[g].0, golds[g].1))
                .collect()
        };
        match (spec.labeler, &client) {
            (Labeler::Judges, Some(client)) => {
                let js = &spec.judges;
                // The judges on the retrieved pairs: a seeded coin per (pair, model, sample).
                let mut tasks = Vec::new();
                for (n, &i) in found.unique.iter().enumerate() {
                    let _ = n;
                    let examples = few_shot(&pool_rows[i * d..(i + 1) * d], None);
                    for model_name in &js.models {
                        for sample in 0..js.samples {
                            tasks.push(JudgeTask {
                                pair: &pool[i],
                                examples: examples.clone(),
                                model: model_name.clone(),
                                sample,
                                chosen_first: judge::chosen_first(js.seed, &pool[i].pair_id, model_name, sample),
                            });
                        }
                    }
                }
                // And on gold pairs they are not shown, in both orders.
                let mut eval_idx: Vec<usize> = (0..golds.len()).collect();
                eval_idx.sort_by_key(|&g| xxhash_rust::xxh3::xxh3_64_with_seed(golds[g].0.pair_id.as_bytes(), js.seed));
                eval_idx.truncate(js.gold_eval_pairs);
                let mut eval_tasks = Vec::new();
                for &g in &eval_idx {
                    let examples = few_shot(&gold_rows[g * d..(g + 1) * d], Some(&golds[g].0.pair_id));
                    for model_name in &js.models {
                        for sample in 0..js.samples {
                            for order in [true, false] {
                                eval_tasks.push(JudgeTask {
                                    pair: &golds[g].0,
                                    examples: examples.clone(),
                                    model: model_name.clone(),
                                    sample,
                                    chosen_first: order,
                                });
                            }
                        }
                    }
                }
                let (eval_samples, eval_usage) =
                    judge::judge(client, &format!("iteration {iteration}: judges on gold"), &eval_tasks, js)?;
                let gold_verdicts: FxHashMap<String, Verdict> =
                    golds.iter().map(|(p, v)| (p.pair_id.clone(), *v)).collect();
                let quality = judge::quality(&eval_samples, &gold_verdicts);
                let (samples, usage) =
                    judge::judge(client, &format!("iteration {iteration}: judges"), &tasks, js)?;
                write_jsonl(
                    &dir.join("judge_samples.jsonl"),
                    samples.iter().chain(&eval_samples).collect::<Vec<&JudgeSample>>(),
                )?;
                let votes = judge::aggregate(&samples);
                judge::write_votes(&resolve(&dir.join("judge_votes.parquet").display().to_string())?, &votes)?;
                let by_id: FxHashMap<&str, &PreferencePair> = retrieved.iter().map(|p| (p.pair_id.as_str(), *p)).collect();
                let (mut truth_hits, mut truth_n) = (0usize, 0usize);
                for v in &votes {
                    let p = by_id[v.pair_id.as_str()];
                    match v.verdict {
                        Verdict::Chosen => {
                            report.labelled_chosen += 1;
                            silver.push(p.clone());
                        }
                        Verdict::Rejected => {
                            report.labelled_rejected += 1;
                            silver.push(swapped(p));
                        }
                        Verdict::Undecidable => report.labelled_undecidable += 1,
                    }
                    if let (Some(t), true) = (&truth, v.verdict != Verdict::Undecidable) {
                        if let Some(&better) = t.chosen_is_better.get(&p.pair_key) {
                            truth_n += 1;
                            truth_hits += (better == (v.verdict == Verdict::Chosen)) as usize;
                        }
                    }
                }
                // Pairs asked about but given no vote (every answer invalid) count too.
                report.labelled_undecidable += retrieved.len() - votes.len();
                report.new_labels_truth_agreement = (truth_n > 0).then(|| truth_hits as f64 / truth_n as f64);
                for p in &retrieved {
                    labelled.insert(p.pair_key);
                }
                all_votes.extend(votes);
                let mut u = eval_usage;
                u.merge(&usage);
                if let Some(w) = &quality.warning {
                    let line = format!("iteration {iteration}: {w}");
                    if !warnings.iter().any(|x: &String| x.ends_with(w.as_str())) {
                        warnings.push(line);
                    }
                }
                report.judge_quality = Some(quality);
                total_llm.merge(&u);
                report.llm = u;
            }
            _ => {
                // Humans: the retrieved pairs as tasks; their export, once there, is gold.
                let suggestions: Vec<tasks::Suggestion> = retrieved
                    .iter()
                    .map(|p| tasks::Suggestion {
                        best_rm_p: Some(sigmoid(best_model.as_ref().unwrap().margin(&TrainExample::from_pair(p, bits, false)) as f64)),
                        judges: None,
                    })
                    .collect();
                tasks::write_label_studio(&dir.join("tasks.label-studio.json"), &retrieved, &suggestions, iteration as u64)?;
                tasks::write_argilla(&dir.join("records.argilla.json"), &retrieved, &suggestions, iteration as u64)?;
                let annotations = spec.out.join("annotations").join(format!("iteration-{iteration}.json"));
                if annotations.is_file() {
                    let imported = tasks::import_label_studio(&annotations)?;
                    for l in &imported.labels {
                        match l.verdict {
                            Verdict::Chosen => report.labelled_chosen += 1,
                            Verdict::Rejected => report.labelled_rejected += 1,
                            Verdict::Undecidable => report.labelled_undecidable += 1,
                        }
                    }
                    for l in imported.labels {
                        gold.insert(l);
                    }
                } else {
                    report.status = "waiting_for_annotations".into();
                    status = report.status.clone();
                    next_step = Some(format!(
                        "import {} into Label Studio (labelling config: `synpref tasks config`), annotate, export the project as JSON to {}, and rerun this command",
                        dir.join("tasks.label-studio.json").display(),
                        annotations.display()
                    ));
                }
            }
        }

        let gold_out: Vec<serde_json::Value> = {
            let mut ls: Vec<&GoldLabel> = gold.labels.values().collect();
            ls.sort_by(|a, b| a.pair_id.cmp(&b.pair_id));
            ls.into_iter().map(label_to_json).collect()
        };
        write_jsonl(&dir.join("gold.jsonl"), &gold_out)?;
        write_jsonl(&dir.join("silver.jsonl"), silver.iter().map(pair_json))?;
        report.elapsed_s = t0.elapsed().as_secs_f64();
        tracing::info!(iteration, retrieved = report.retrieved, "stage1 iteration done");
        let waiting = report.status != "complete";
        iterations.push(report);
        if waiting {
            break;
        }
    }

    // The final sets, then the report (the commit mark) last.
    let last = spec.out.join("iterations").join(iterations.len().to_string());
    for f in ["silver.jsonl", "gold.jsonl"] {
        std::fs::copy(last.join(f), spec.out.join(f)).map_err(|e| io(&spec.out.join(f), e))?;
    }
    all_votes.sort_by(|a, b| a.pair_id.cmp(&b.pair_id));
    judge::write_votes(&resolve(&spec.out.join("judge_votes.parquet").display().to_string())?, &all_votes)?;
    if let Some(m) = &best_model {
        saved::save(&spec.out.join("best_rm"), ToSave::Builtin(m)).map_err(|e| e.for_setting("--out"))?;
    }
    if iterations.len() >= 2 {
        let first = iterations[0].best_rm_gold_accuracy;
        let lastacc = iterations[iterations.len() - 1].best_rm_gold_accuracy;
        if lastacc + 1e-9 < first {
            warnings.push(format!(
                "the best RM's gold accuracy fell from {:.1}% to {:.1}% over the iterations: the labels added did not help",
                first * 100.0,
                lastacc * 100.0
            ));
        }
    }
    let report = Stage1Report {
        spec: spec.clone(),
        pool_rows: pool_set.input_rows,
        pool_invalid_rows: pool_set.invalid_rows,
        silver_rows_in,
        gold_labels_in,
        iterations,
        llm: total_llm,
        status,
        next_step,
        warnings,
        elapsed_s: started.elapsed().as_secs_f64(),
    };
    synpref_engine::output::write_json(&resolve(&spec.out.join("report.json").display().to_string())?, &report)?;
    Ok(report)
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
        let pct = |x: Option<f64>| x.map(|v| format!("{:.1}%", v * 100.0)).unwrap_or_else(|| "—".into());
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
    s.push_str(&format!(
        "LLM: {} HTTP requests ({} retries), {} prompt + {} completion tokens, ${:.4}\n",
        r.llm.http_requests, r.llm.retries, r.llm.prompt_tokens, r.llm.completion_tokens, r.llm.cost_usd
    ));
    for w in &r.warnings {
        s.push_str(&format!("warning: {w}\n"));
    }
    if let Some(n) = &r.next_step {
        s.push_str(&format!("waiting for annotations: {n}\n"));
    }
    s
}
