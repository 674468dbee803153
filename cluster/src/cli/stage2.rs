//! `curate`, `serve` and `explain curate`: the Stage-2 flags they share (`StageArgs`,
//! each curate knob once, with its default from `CurateSpec`), turned into specs.

use clap::{Args, Subcommand};
use synpref_engine::hashing::DedupForm;
use synpref_engine::output::{OutputFileFormat, OutputFormat};
use synpref_engine::Error;
use synpref_jobs::curate::{CurateSpec, MachineSettings};
use synpref_jobs::serve::ServeSpec;
use synpref_operators::decontaminate::{
    DecontaminationScope, DecontaminationSettings, NGRAM_WORDS,
};
use synpref_operators::minhash::NearDupSettings;
use synpref_operators::models::ModelSpec;

use super::common::{ClusterArgs, ModelArgs, RunArgs};

/// The Stage-2 settings `curate` and `serve` share.
#[derive(Args)]
pub struct StageArgs {
    #[command(flatten)]
    run: RunArgs,
    /// Layout of curated and discarded rows: `input` (rows as read plus reason, p_best,
    /// p_gold), `conversational` (no prompt; chosen/rejected as whole message lists),
    /// or a consumer's preset: `trl`, `openrlhf` (whole conversations and a `margin`
    /// from the gold RM), `rewardbench` (whole conversations, JSON lines).
    #[arg(long, default_value = "input")]
    format: OutputFormat,
    /// File format of the parts: `parquet` or `jsonl` [default: jsonl for
    /// `--format rewardbench`, parquet otherwise].
    #[arg(long)]
    output_file_format: Option<OutputFileFormat>,
    /// τ of the consistency rule: keep iff p_gold > τ and (p_best > τ or judges agree).
    #[arg(long, default_value_t = CurateSpec::default().threshold)]
    threshold: f64,
    /// LLM-judge votes (pair_id, verdict), consulted when p_best ≤ τ.
    #[arg(long)]
    judges: Option<String>,
    /// Benchmark files: any of the seven benchmarks' released files (or a directory of
    /// them), a `bench import` layout, or any file with a `prompt` column; pairs whose
    /// prompt shares a 13-gram with a user turn of a benchmark prompt are dropped
    /// (`contaminated`, the n-gram in `error`).
    #[arg(long, num_args = 1..)]
    decontaminate: Vec<String>,
    /// Exact dedup compares pairs as written (byte for byte) instead of in canonical
    /// form (text or messages, explicit or implicit prompt, NFC, whitespace collapsed).
    #[arg(long)]
    dedup_as_written: bool,
    /// Do not look for near-duplicates (MinHash over word shingles of the prompt and
    /// both replies; discarded as `near_duplicate` with `duplicate_of` naming the kept
    /// pair).
    #[arg(long)]
    no_near_dup: bool,
    /// Words per near-duplicate shingle.
    #[arg(long, default_value_t = NearDupSettings::default().shingle_words)]
    near_dup_shingle: usize,
    /// Near-duplicate LSH bands (14, as datatrove).
    #[arg(long, default_value_t = NearDupSettings::default().bands)]
    near_dup_bands: usize,
    /// Permutations per near-duplicate LSH band.
    #[arg(long, default_value_t = NearDupSettings::default().rows)]
    near_dup_rows: usize,
    /// Check each near-duplicate candidate's exact similarity (the product of the
    /// prompt's and both replies' Jaccard similarities) against --near-dup-threshold.
    #[arg(long)]
    near_dup_verify: bool,
    /// Least exact similarity of a near-duplicate under --near-dup-verify.
    #[arg(long, default_value_t = NearDupSettings::default().threshold)]
    near_dup_threshold: f64,
    /// Directory for what workers spill to local disk (default: the system's
    /// temporary directory).
    #[arg(long)]
    spill_dir: Option<std::path::PathBuf>,
    /// Memory the near-duplicate band index may hold in this process before its
    /// workers spill sorted runs to --spill-dir: bytes, or with a K, M, G or T suffix
    /// (powers of 1024). Default: a sixteenth of this machine's memory. The output does
    /// not depend on it.
    #[arg(long, value_parser = super::common::parse_bytes)]
    memory_budget: Option<u64>,
    /// What --decontaminate checks: `prompt` (the pair's prompt against benchmark user
    /// turns) or `pair` (the paper's whole-pair check: prompt, chosen and rejected
    /// against benchmark prompts and every benchmark reply).
    #[arg(long, value_enum, default_value_t = DecontaminationScope::Prompt)]
    decontaminate_scope: DecontaminationScope,
    /// Words per n-gram of --decontaminate, 5 to 13 (13: GPT-3's contamination
    /// analysis; the paper's whole-pair check goes down to 5).
    #[arg(long, default_value_t = NGRAM_WORDS)]
    decontaminate_ngram: usize,
    /// Write RM-discarded pairs with chosen and rejected swapped.
    #[arg(long)]
    emit_flipped: bool,
    /// Largest accepted pair in bytes of text; larger rows are quarantined.
    #[arg(long, default_value_t = CurateSpec::default().max_pair_bytes)]
    max_pair_bytes: usize,
    /// The best RM: `builtin`, `hf:DIR` or `encoder:DIR` (a head trained on the pool's labels).
    #[arg(long, default_value = "builtin")]
    best_rm: String,
    /// The gold RM: `builtin`, `hf:DIR` or `encoder:DIR` (a head trained on the gold labels).
    #[arg(long, default_value = "builtin")]
    gold_rm: String,
    /// Folds of the best RM's cross-fitting (1: none; the best RM then also scores
    /// the pairs it was trained on).
    #[arg(long, default_value_t = CurateSpec::default().cross_fit.folds)]
    folds: usize,
    /// Folds of the gold RM's cross-validation (the report's `quality`).
    #[arg(long, default_value_t = CurateSpec::default().gold_folds)]
    gold_folds: usize,
    /// Most pool pairs the best RM trains on (a deterministic sample by pair id).
    #[arg(long, default_value_t = CurateSpec::default().best_rm_sample)]
    best_rm_sample: u64,
    /// Share of each best-RM fold's training set held out to choose its epoch.
    #[arg(long, default_value_t = CurateSpec::default().cross_fit.heldout_share)]
    heldout_share: f64,
    /// Built-in models: log2 of the number of hashed n-gram features.
    #[arg(long, default_value_t = CurateSpec::default().train.feature_bits)]
    feature_bits: u32,
    /// Built-in best RM: passes over its training sample.
    #[arg(long, default_value_t = CurateSpec::default().train.epochs)]
    epochs: usize,
    /// Built-in best RM: AdaGrad base step size.
    #[arg(long, default_value_t = CurateSpec::default().train.learning_rate)]
    learning_rate: f32,
    /// Built-in gold RM: AdaGrad base step size of its online pass over the labels.
    #[arg(long, default_value_t = CurateSpec::default().train.online_learning_rate)]
    gold_learning_rate: f32,
    /// Built-in models: L2 penalty on the weights a step touches.
    #[arg(long, default_value_t = CurateSpec::default().train.l2)]
    l2: f32,
    /// Built-in best RM: make each epoch's checkpoint the average of all iterates so
    /// far instead of the last iterate (off by default; docs/benchmarks.md).
    #[arg(long)]
    average: bool,
    #[command(flatten)]
    models: ModelArgs,
    /// Seed of the built-in models' training.
    #[arg(long, default_value_t = CurateSpec::default().train.seed)]
    seed: u64,
    /// Rows per read batch: the unit of pipelining between reading and the dataflow.
    #[arg(long, default_value_t = MachineSettings::default().batch_rows)]
    batch_rows: usize,
    /// Rows each worker reads between two commits of its progress: a curate killed and
    /// started again with the same arguments redoes at most one slice per worker
    /// (docs/cluster.md). Each commit closes the worker's open parts.
    #[arg(long, default_value_t = MachineSettings::default().slice_rows)]
    slice_rows: u64,
}

impl StageArgs {
    pub fn into_spec(self, pairs: String, gold: String, out: String) -> Result<CurateSpec, Error> {
        let mut spec = CurateSpec {
            models: self.models.options()?,
            score_cache: self.models.cache(),
            pairs,
            gold,
            out,
            threshold: self.threshold,
            judges: self.judges,
            decontaminate: self.decontaminate,
            dedup_form: if self.dedup_as_written {
                DedupForm::AsWritten
            } else {
                DedupForm::Canonical
            },
            decontamination: DecontaminationSettings {
                scope: self.decontaminate_scope,
                ngram_words: self.decontaminate_ngram,
            },
            emit_flipped: self.emit_flipped,
            max_pair_bytes: self.max_pair_bytes,
            best_rm: ModelSpec::parse(&self.best_rm).map_err(|e| e.for_setting("--best-rm"))?,
            gold_rm: ModelSpec::parse(&self.gold_rm).map_err(|e| e.for_setting("--gold-rm"))?,
            best_rm_sample: self.best_rm_sample,
            format: self.format,
            output_file_format: self.output_file_format,
            machine: MachineSettings {
                run: self.run.settings(),
                batch_rows: self.batch_rows,
                slice_rows: self.slice_rows,
                spill_dir: self.spill_dir,
                memory_budget: self.memory_budget,
            },
            near_dup: NearDupSettings {
                enabled: !self.no_near_dup,
                shingle_words: self.near_dup_shingle,
                bands: self.near_dup_bands,
                rows: self.near_dup_rows,
                threshold: self.near_dup_threshold,
                verify: self.near_dup_verify,
            },
            ..CurateSpec::default()
        };
        spec.cross_fit.folds = self.folds;
        spec.gold_folds = self.gold_folds;
        spec.cross_fit.heldout_share = self.heldout_share;
        spec.train.seed = self.seed;
        spec.train.feature_bits = self.feature_bits;
        spec.train.epochs = self.epochs;
        spec.train.learning_rate = self.learning_rate;
        spec.train.online_learning_rate = self.gold_learning_rate;
        spec.train.l2 = self.l2;
        spec.train.average = self.average;
        Ok(spec)
    }
}

#[derive(Args)]
pub struct CurateArgs {
    /// Input pairs: a Parquet or JSONL file, a directory or a glob (local path or URL).
    #[arg(long)]
    pairs: String,
    /// Gold labels: pair_id, verdict ∈ {chosen, rejected, undecidable}.
    #[arg(long)]
    gold: String,
    /// Output directory (curated/, discarded/, quarantine/, report.json, manifest.json).
    #[arg(long)]
    out: String,
    /// Ground truth (pair_id, preference) for truth_agreement_* in the report.
    #[arg(long)]
    truth: Option<String>,
    #[command(flatten)]
    stage: StageArgs,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

impl CurateArgs {
    pub fn into_spec(self) -> Result<CurateSpec, Error> {
        let mut spec = self.stage.into_spec(self.pairs, self.gold, self.out)?;
        spec.truth = self.truth;
        Ok(spec)
    }
}

#[derive(Args)]
pub struct ServeArgs {
    /// Input pairs (the pool): a Parquet or JSONL file, a directory or a glob.
    #[arg(long)]
    pairs: String,
    /// Prefix listed for gold-label files (JSONL taken line by line as it grows, Parquet
    /// whole; names starting with _ or . skipped).
    #[arg(long)]
    labels: Option<String>,
    /// Output directory: snapshot/ (laid out like curate's output; on a local disk a link
    /// to a version under snapshots/, replaced atomically), changelog/, labels-log/.
    #[arg(long)]
    out: String,
    /// The label log [default: OUT/labels-log].
    #[arg(long)]
    label_log: Option<String>,
    /// Address of the HTTP API.
    #[arg(long, default_value_t = ServeSpec::default().listen)]
    listen: String,
    /// File holding the API's bearer token [or set SYNPREF_TOKEN].
    #[arg(long)]
    token_file: Option<String>,
    /// Seconds between listings of --labels.
    #[arg(long, default_value_t = ServeSpec::default().poll_interval_s)]
    poll_interval: f64,
    /// Epochs between automatic snapshots (0: only on POST /v1/snapshot).
    #[arg(long, default_value_t = ServeSpec::default().snapshot_every)]
    snapshot_every: u64,
    /// Largest accepted request body in bytes.
    #[arg(long, default_value_t = ServeSpec::default().max_body_bytes)]
    max_body_bytes: usize,
    /// Labels logged but not yet applied beyond which POST /v1/labels answers 503 with
    /// Retry-After instead of acknowledging work that would be minutes stale.
    #[arg(long, default_value_t = ServeSpec::default().max_pending_labels)]
    max_pending_labels: u64,
    /// Local directory for the pool store [default: the system temporary directory].
    #[arg(long)]
    pool_dir: Option<String>,
    /// How decisions are kept: `shard` (one per pair in each worker's shard) or
    /// `differential` (differential dataflow's reduce over the facts).
    #[arg(long, default_value_t = ServeSpec::default().decisions)]
    decisions: synpref_jobs::serve::decisions::DecisionEngine,
    #[command(flatten)]
    stage: StageArgs,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

impl ServeArgs {
    /// The token, from --token-file or SYNPREF_TOKEN; serve refuses to start without.
    pub fn token(&self) -> Result<String, Error> {
        let token = match &self.token_file {
            Some(f) => std::fs::read_to_string(f)
                .map_err(|e| Error::setting("--token-file", format!("{f}: {e}")))?
                .trim()
                .to_string(),
            None => std::env::var("SYNPREF_TOKEN")
                .unwrap_or_default()
                .trim()
                .to_string(),
        };
        if token.is_empty() {
            return Err(Error::setting(
                "--token-file",
                "serve needs a bearer token: give --token-file FILE or set SYNPREF_TOKEN",
            ));
        }
        Ok(token)
    }

    pub fn into_spec(self) -> Result<ServeSpec, Error> {
        let curate = self
            .stage
            .into_spec(self.pairs, String::new(), String::new())?;
        Ok(ServeSpec {
            curate,
            labels: self.labels,
            out: self.out,
            label_log: self.label_log,
            listen: self.listen,
            poll_interval_s: self.poll_interval,
            snapshot_every: self.snapshot_every,
            max_body_bytes: self.max_body_bytes,
            max_pending_labels: self.max_pending_labels,
            pool_dir: self.pool_dir,
            decisions: self.decisions,
        })
    }
}

#[derive(Subcommand)]
pub enum ExplainJob {
    /// The survey and curate dataflows of `synpref curate` with these arguments.
    Curate(CurateArgs),
}
