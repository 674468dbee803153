//! The flags of Stage 1's commands (`stage1`, `annotate`, `tasks`), validated into the
//! typed specs of `synpref_jobs::stage1`.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use synpref_engine::cluster::ClusterSpec;
use synpref_engine::Error;
use synpref_jobs::stage1::ann::{IndexKind, IndexSettings};
use synpref_jobs::stage1::attributes::AnnotateSpec;
use synpref_jobs::stage1::job::{TaskFormat, TasksConfig, TasksExport, TasksImport};
use synpref_jobs::stage1::judge::JudgeSettings;
use synpref_jobs::stage1::llm::LlmSettings;
use synpref_jobs::stage1::retrieve::EmbedderSpec;
use synpref_jobs::stage1::{Labeler, Stage1Spec};

use super::common::{ClusterArgs, ProgressArg, RunArgs};
use crate::runner;

/// The OpenAI-compatible server and how to talk to it.
#[derive(Args)]
pub struct LlmArgs {
    /// API base of an OpenAI-compatible server (vLLM, SGLang, llama.cpp's llama-server,
    /// a hosted API); the client posts to {URL}/chat/completions.
    #[arg(long, default_value_t = LlmSettings::default().base_url)]
    llm_url: String,
    /// Environment variable holding the API key (sent as a bearer token if set).
    #[arg(long, default_value_t = LlmSettings::default().api_key_env)]
    llm_api_key_env: String,
    /// Requests in flight at once.
    #[arg(long, default_value_t = LlmSettings::default().concurrency)]
    llm_concurrency: usize,
    /// Request starts per minute at most [default: unlimited].
    #[arg(long)]
    llm_rpm: Option<f64>,
    /// Retries of a request after 429, 5xx, a timeout or a refused connection.
    #[arg(long, default_value_t = LlmSettings::default().max_retries)]
    llm_max_retries: u32,
    /// Backoff before the first retry, doubled per retry.
    #[arg(long, default_value_t = LlmSettings::default().initial_backoff_s)]
    llm_backoff_s: f64,
    /// Timeout of one request in seconds.
    #[arg(long, default_value_t = LlmSettings::default().timeout_s)]
    llm_timeout_s: f64,
    /// Answers asked for before an invalid one is recorded as invalid.
    #[arg(long, default_value_t = LlmSettings::default().max_invalid_answers)]
    llm_max_invalid: u32,
    /// Do not send response_format json_schema (for servers without structured output).
    #[arg(long)]
    no_structured_output: bool,
    /// USD per million prompt tokens, for the report's cost.
    #[arg(long, default_value_t = 0.0)]
    llm_prompt_usd_per_mtok: f64,
    /// USD per million completion tokens.
    #[arg(long, default_value_t = 0.0)]
    llm_completion_usd_per_mtok: f64,
}

impl LlmArgs {
    fn settings(&self) -> Result<LlmSettings, Error> {
        for (flag, v) in [
            ("--llm-timeout-s", self.llm_timeout_s),
            ("--llm-backoff-s", self.llm_backoff_s),
        ] {
            if !(v > 0.0 && v.is_finite()) {
                return Err(Error::setting(flag, "must be a positive number of seconds"));
            }
        }
        Ok(LlmSettings {
            base_url: self.llm_url.clone(),
            api_key_env: self.llm_api_key_env.clone(),
            concurrency: self.llm_concurrency,
            requests_per_minute: self.llm_rpm,
            max_retries: self.llm_max_retries,
            initial_backoff_s: self.llm_backoff_s,
            timeout_s: self.llm_timeout_s,
            max_invalid_answers: self.llm_max_invalid,
            structured_output: !self.no_structured_output,
            prompt_usd_per_mtok: self.llm_prompt_usd_per_mtok,
            completion_usd_per_mtok: self.llm_completion_usd_per_mtok,
            ..LlmSettings::default()
        })
    }
}

/// `synpref stage1`.
#[derive(Args)]
pub struct Stage1Args {
    /// The unverified pool: Parquet or JSONL file, directory or glob.
    #[arg(long)]
    pool: String,
    /// Human verdicts (pair_id, verdict[, annotator, labeled_at, text]).
    #[arg(long)]
    gold: String,
    /// The LLM-labelled silver set the best RM trains on (pairs, labelled as given).
    #[arg(long)]
    silver: String,
    /// Ground truth (pair_id, preference), to measure the labels the loop adds.
    #[arg(long)]
    truth: Option<String>,
    /// Iterations of the loop.
    #[arg(long, default_value_t = 3)]
    iterations: usize,
    /// Output directory (iterations/, silver.jsonl, gold.jsonl, judge_votes.parquet,
    /// best_rm/, report.json; cache/ and annotations/ are kept between runs).
    #[arg(long)]
    out: String,
    /// What retrieval embeds (conversation, attributes) with: encoder:DIR (a
    /// sentence-transformers BERT such as all-MiniLM-L6-v2) or hashed (word n-grams,
    /// no model).
    #[arg(long)]
    embedder: String,
    /// Who labels the retrieved pairs: judges (LLM judges → silver) or humans (Label
    /// Studio / Argilla tasks → gold; the run stops until their export is in
    /// OUT/annotations/iteration-<i>.json).
    #[arg(long, default_value = "judges")]
    labeler: String,
    /// A judge model at the LLM server (repeatable: votes are aggregated across models).
    #[arg(long = "judge-model")]
    judge_models: Vec<String>,
    /// Samples per judge model and pair (self-consistency).
    #[arg(long, default_value_t = JudgeSettings::default().samples)]
    judge_samples: usize,
    /// Judge sampling temperature.
    #[arg(long, default_value_t = JudgeSettings::default().temperature)]
    judge_temperature: f32,
    /// Similar gold pairs shown as few-shot examples (the paper: up to 8).
    #[arg(long, default_value_t = JudgeSettings::default().few_shot)]
    judge_few_shot: usize,
    /// Characters kept of each text in a judge prompt.
    #[arg(long, default_value_t = JudgeSettings::default().max_text_chars)]
    judge_max_chars: usize,
    /// Gold pairs the judges are measured on each iteration (asked in both orders).
    #[arg(long, default_value_t = JudgeSettings::default().gold_eval_pairs)]
    judge_gold_eval: usize,
    /// Seed of the judges' Candidate 1/2 coins and sampling seeds.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// k for a gold pair the best RM gets wrong (the paper's 8).
    #[arg(long, default_value_t = synpref_jobs::stage1::retrieve::K_MAX)]
    k_max: usize,
    /// Retrieve near-duplicates of gold and labelled pairs too (by default they are
    /// not candidates: curate's MinHash bands find them).
    #[arg(long)]
    no_near_dup: bool,
    /// Epochs of the best RM (the checkpoint with the best gold accuracy is kept).
    #[arg(long, default_value_t = 4)]
    epochs: usize,
    /// Nearest-neighbour search: `exact` (scan every candidate), `hnsw` (an HNSW graph
    /// per shard) or `auto` (a graph for shards above --index-auto-exact-max-rows
    /// rows, a scan below). See docs/stage1.md.
    #[arg(long, default_value = "auto")]
    index: String,
    /// Shards of the pool for hnsw/auto: the most workers such a run can use.
    #[arg(long, default_value_t = IndexSettings::default().shards)]
    index_shards: usize,
    /// Under `--index auto`, shards with at most this many rows are scanned exactly.
    #[arg(long, default_value_t = IndexSettings::default().auto_exact_max_rows)]
    index_auto_exact_max_rows: usize,
    /// Gold pairs per iteration also searched exactly, to measure the index's recall.
    #[arg(long, default_value_t = IndexSettings::default().recall_queries)]
    index_recall_queries: usize,
    /// HNSW links per node.
    #[arg(long, default_value_t = IndexSettings::default().m)]
    hnsw_m: usize,
    /// HNSW candidate list while building.
    #[arg(long, default_value_t = IndexSettings::default().ef_construction)]
    hnsw_ef_construction: usize,
    /// HNSW candidate list while searching (raised to k when smaller).
    #[arg(long, default_value_t = IndexSettings::default().ef_search)]
    hnsw_ef_search: usize,
    /// Where LLM answers and embeddings are cached [default: OUT/cache].
    #[arg(long)]
    cache: Option<String>,
    #[command(flatten)]
    run: RunArgs,
    #[command(flatten)]
    llm: LlmArgs,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

impl Stage1Args {
    pub fn into_spec(self) -> Result<Stage1Spec, Error> {
        let labeler = match self.labeler.as_str() {
            "judges" => Labeler::Judges,
            "humans" => Labeler::Humans,
            other => {
                return Err(Error::setting(
                    "--labeler",
                    format!("`{other}` is not judges or humans"),
                ))
            }
        };
        let mut spec = Stage1Spec::new(self.pool, self.gold, self.silver, PathBuf::from(self.out));
        spec.truth = self.truth;
        spec.iterations = self.iterations;
        spec.embedder =
            EmbedderSpec::parse(&self.embedder).map_err(|e| e.for_setting("--embedder"))?;
        spec.labeler = labeler;
        spec.judges = JudgeSettings {
            models: self.judge_models,
            samples: self.judge_samples,
            temperature: self.judge_temperature,
            few_shot: self.judge_few_shot,
            max_text_chars: self.judge_max_chars,
            gold_eval_pairs: self.judge_gold_eval,
            seed: self.seed,
            ..JudgeSettings::default()
        };
        spec.llm = self.llm.settings()?;
        spec.train.epochs = self.epochs;
        spec.k_max = self.k_max;
        spec.near_dup.enabled = !self.no_near_dup;
        spec.index = IndexSettings {
            kind: IndexKind::parse(&self.index).ok_or_else(|| {
                Error::setting(
                    "--index",
                    format!("`{}` is not exact, auto or hnsw", self.index),
                )
            })?,
            shards: self.index_shards,
            auto_exact_max_rows: self.index_auto_exact_max_rows,
            recall_queries: self.index_recall_queries,
            m: self.hnsw_m,
            ef_construction: self.hnsw_ef_construction,
            ef_search: self.hnsw_ef_search,
        };
        spec.cache = self.cache.as_deref().map(PathBuf::from);
        spec.run = self.run.settings();
        Ok(spec)
    }
}

/// `synpref annotate`.
#[derive(Args)]
pub struct AnnotateArgs {
    /// Input pairs: Parquet or JSONL file, directory or glob.
    #[arg(long)]
    pairs: String,
    /// Output directory (pairs.jsonl, report.json; cache/ kept between runs).
    #[arg(long)]
    out: String,
    /// The model at the LLM server.
    #[arg(long)]
    model: String,
    /// Characters kept of each text in the prompt.
    #[arg(long, default_value_t = 1500)]
    max_chars: usize,
    /// Re-annotate pairs that already have all five attributes.
    #[arg(long)]
    overwrite: bool,
    /// Where LLM answers are cached [default: OUT/cache].
    #[arg(long)]
    cache: Option<String>,
    #[command(flatten)]
    progress: ProgressArg,
    #[command(flatten)]
    llm: LlmArgs,
}

impl AnnotateArgs {
    pub fn into_spec(self) -> Result<AnnotateSpec, Error> {
        Ok(AnnotateSpec {
            pairs: self.pairs,
            out: PathBuf::from(self.out),
            model: self.model,
            llm: self.llm.settings()?,
            max_text_chars: self.max_chars,
            // Five short fields; a guideline of two sentences fits in ~120 tokens.
            max_tokens: 256,
            overwrite: self.overwrite,
            cache: self.cache.as_deref().map(PathBuf::from),
            progress: self.progress.progress(),
        })
    }
}

/// `synpref tasks`: annotation tasks out, annotations in.
#[derive(Subcommand)]
pub enum TasksCommand {
    /// Print Label Studio's labelling config for synpref's tasks.
    Config,
    /// Write pairs as Label Studio tasks (JSON import) or an Argilla dataset.
    Export {
        /// Pairs: Parquet or JSONL file, directory or glob.
        #[arg(long)]
        pairs: String,
        /// label-studio or argilla.
        #[arg(long, default_value = "label-studio")]
        format: String,
        /// The JSON file to write.
        #[arg(long)]
        out: String,
        /// Seed of the Response A/B order.
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
    /// Read Label Studio's JSON export of synpref tasks as gold labels (JSONL).
    Import {
        /// Label Studio's JSON export.
        #[arg(long)]
        label_studio: String,
        /// The gold-label file to write (JSONL: pair_id, verdict, annotator, labeled_at).
        #[arg(long)]
        out: String,
    },
}

impl TasksCommand {
    /// Runs the subcommand's job.
    pub fn run(self, cluster: &ClusterSpec) -> Result<(), Error> {
        match self {
            TasksCommand::Config => runner::run(TasksConfig, cluster),
            TasksCommand::Export {
                pairs,
                format,
                out,
                seed,
            } => runner::run(
                TasksExport {
                    pairs,
                    format: TaskFormat::parse(&format)?,
                    out,
                    seed,
                },
                cluster,
            ),
            TasksCommand::Import { label_studio, out } => {
                runner::run(TasksImport { label_studio, out }, cluster)
            }
        }
    }
}
