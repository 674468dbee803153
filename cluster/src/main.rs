//! The `synpref` binary: parses flags, validates them into a job spec, and runs it on
//! timely workers (`runner`). Exit status (DESIGN §4): 0 success, 2 bad usage or bad
//! input files, 1 other failures.

mod http;
mod launch;
mod runner;
mod stage1_args;

/// mimalloc instead of glibc malloc: the dataflow allocates and frees millions of
/// short strings per second across worker threads, and glibc's per-thread arenas spent
/// a quarter of curate's time in malloc/free and held freed memory (docs/benchmarks.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in mimalloc v2's `mi_option_t` (mimalloc.h; libmimalloc-sys
/// exports no constant for it).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Never hand freed memory back to the OS during a run: Parquet's multi-megabyte
/// buffers are freed and allocated again for every row group, and with mimalloc's
/// default 10 ms purge delay the kernel zeroed fresh pages for each (9% of curate's
/// time). Measured at 1M pairs: 10.8 s → 9.3 s, peak RSS +60 MB (docs/benchmarks.md).
/// `MIMALLOC_PURGE_DELAY` in the environment (mimalloc's own setting, read at its
/// start) overrides this, e.g. to measure what the setting costs a job's memory.
fn tune_allocator() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
        return;
    }
    // SAFETY: sets a global option before any worker thread starts; mimalloc reads it
    // atomically.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
}

use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use synpref_engine::output::{OutputFileFormat, OutputFormat};
use synpref_jobs::curate::{default_score_cache, summary, CurateSpec, MachineSettings};
use synpref_jobs::demo::DemoSpec;
use synpref_jobs::gen::{run_gen, GenSpec, DEFAULT_SEED};
use synpref_jobs::score::{run_score, ScoreSpec};
use synpref_jobs::serve::{add_label_file, run_serve, ServeSpec};
use synpref_operators::models::{DTypeChoice, DeviceChoice, ModelOptions, ModelSpec};

#[derive(Parser)]
#[command(
    name = "synpref",
    version,
    about = "Curate preference data for reward-model training (Skywork-Reward-V2 style), on timely dataflow"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the main job end to end on an embedded synthetic dataset (gen + curate).
    Demo {
        /// Output directory (generated data under DIR/data, curated output under DIR/curated).
        #[arg(long, default_value = "synpref-demo")]
        out: String,
        /// Worker threads (default: the number of CPU cores).
        #[arg(long)]
        workers: Option<usize>,
    },
    /// Generate SynPref-like pairs with known ground truth, gold verdicts and an eval set.
    Gen {
        /// Pairs in the pool.
        #[arg(long)]
        pairs: u64,
        /// Output directory (pairs/, gold.parquet, truth.parquet, eval.parquet, ...).
        #[arg(long)]
        out: String,
        #[arg(long, default_value_t = DEFAULT_SEED)]
        seed: u64,
        /// Share of pool pairs with a human verdict in gold.parquet.
        #[arg(long, default_value_t = synpref_jobs::gen::DEFAULT_GOLD_FRACTION)]
        gold_fraction: f64,
        /// Share of pool pairs with LLM-judge votes.
        #[arg(long, default_value_t = synpref_jobs::gen::DEFAULT_JUDGE_FRACTION)]
        judge_fraction: f64,
        /// Share of rows that copy an earlier row's content.
        #[arg(long, default_value_t = synpref_jobs::gen::DEFAULT_DUPLICATE_FRACTION)]
        duplicate_fraction: f64,
        /// Share of rows with an empty rejected reply.
        #[arg(long, default_value_t = synpref_jobs::gen::DEFAULT_EMPTY_FRACTION)]
        empty_fraction: f64,
        /// Share of pool prompts leaked into the benchmark prompt file.
        #[arg(long, default_value_t = synpref_jobs::gen::DEFAULT_CONTAMINATED_FRACTION)]
        contaminated_fraction: f64,
        /// Held-out pairs in eval.parquet.
        #[arg(long)]
        eval_pairs: Option<u64>,
        /// Rows per Parquet file under pairs/.
        #[arg(long, default_value_t = synpref_jobs::gen::DEFAULT_ROWS_PER_FILE)]
        rows_per_file: u64,
    },
    /// Batch Stage 2: keep the pairs the gold RM, the best RM (or LLM judges) and human
    /// verdicts agree with.
    Curate(CurateArgs),
    /// Score pairs with one reward model: the input columns plus r_chosen, r_rejected and
    /// p = σ(r_chosen − r_rejected), and the accuracy against the input's labels.
    Score(ScoreArgs),
    /// A reward model's accuracy on preference sets in RewardBench's layouts (explicit
    /// prompt, or whole conversations; optional `subset` and `id`), per subset and
    /// overall, with 95% intervals; OUT/report.json and a printed table.
    Eval(EvalArgs),
    /// Scaling experiments across data fractions: nested subsets of the curated set
    /// (and raw subsets of the same size) by a seeded hash of pair_id, a reward model
    /// trained on each and evaluated; results.parquet/csv, accuracy.png/svg and
    /// report.json under --out. Models are cached by subset content: a rerun trains
    /// only the subsets that changed.
    Fractions(Box<FractionsArgs>),
    /// Stage 1's loop: train the best RM on the silver set (checkpoint chosen by gold
    /// accuracy), retrieve the unverified pairs nearest the gold pairs it gets wrong
    /// (k = 8 if p ≤ 0.5, else ⌈8(1 − p)⌉), label them with LLM judges (→ silver) or
    /// export them for humans (→ gold), repeat. Writes the next silver and gold sets and
    /// judge votes in curate's --judges format.
    Stage1(Box<stage1_args::Stage1Args>),
    /// Add the five LLM-written preference attributes (task category, objectivity,
    /// controversiality, desired attributes, guideline) to pairs, with an
    /// OpenAI-compatible server.
    Annotate(Box<stage1_args::AnnotateArgs>),
    /// Annotation tasks for humans: Label Studio / Argilla export, Label Studio import.
    Tasks {
        #[command(subcommand)]
        command: stage1_args::TasksCommand,
    },
    /// Keep the curated set current as gold labels arrive (HTTP and label files): a
    /// long-running job with a changelog and snapshots.
    Serve(ServeArgs),
    /// Print the dataflow graphs a job builds, by operator names and edges, without
    /// reading any data or training a model.
    Explain {
        #[command(subcommand)]
        job: ExplainJob,
    },
    /// Re-project a committed curate output (or serve snapshot) into another --format
    /// without re-running anything.
    Export {
        /// A committed output: the --out of a curate run (its manifest.json must exist).
        #[arg(long)]
        from: String,
        /// The layout to write: input, conversational, trl, openrlhf or rewardbench.
        #[arg(long)]
        format: OutputFormat,
        /// Where to write it (curated/, discarded/, quarantine/, report.json, README.md,
        /// manifest.json).
        #[arg(long)]
        out: String,
        /// parquet or jsonl [default: jsonl for rewardbench, parquet otherwise].
        #[arg(long)]
        output_file_format: Option<OutputFileFormat>,
        /// Do not draw a progress bar.
        #[arg(long)]
        no_progress: bool,
    },
    /// Run a multi-process job (curate, serve, fractions, stage1) as cooperating processes and supervise
    /// them: on this host (--local N), on the hosts of a hostfile over ssh, or as this
    /// task of a Slurm step or pod of a Kubernetes Indexed Job (docs/cluster.md).
    Launch(LaunchArgs),
    /// Manage the gold labels a serve polls.
    Label {
        #[command(subcommand)]
        command: LabelCommand,
    },
}

/// Settings of the transformer models (`hf:DIR`, `encoder:DIR`).
#[derive(Args)]
struct ModelArgs {
    /// Longest input in tokens; longer conversations lose tokens from the start of the
    /// prompt, and the report counts them (hf default 4096; encoder: its max_seq_length).
    #[arg(long)]
    max_tokens: Option<usize>,
    /// Padded tokens per model batch.
    #[arg(long, default_value_t = ModelOptions::default().token_budget)]
    token_budget: usize,
    /// auto, cpu or cuda (cuda needs a build with `--features cuda`).
    #[arg(long, default_value_t = ModelOptions::default().device)]
    device: DeviceChoice,
    /// auto (bf16 on CUDA, f32 on CPU), f32 or bf16.
    #[arg(long, default_value_t = ModelOptions::default().dtype)]
    dtype: DTypeChoice,
    /// Score cache (a directory or object-store URL) [default: $SYNPREF_CACHE, else
    /// ~/.cache/synpref/scores].
    #[arg(long)]
    score_cache: Option<String>,
    /// Do not read or write the score cache.
    #[arg(long, conflicts_with = "score_cache")]
    no_score_cache: bool,
}

impl ModelArgs {
    fn options(&self) -> Result<ModelOptions, synpref_engine::Error> {
        use synpref_engine::Error;
        if self.token_budget == 0 {
            return Err(Error::setting("--token-budget", "must be at least 1"));
        }
        if self.max_tokens == Some(0) {
            return Err(Error::setting("--max-tokens", "must be at least 1"));
        }
        Ok(ModelOptions {
            max_tokens: self.max_tokens,
            token_budget: self.token_budget,
            device: self.device,
            dtype: self.dtype,
        })
    }

    fn cache(&self) -> Option<String> {
        if self.no_score_cache {
            None
        } else {
            self.score_cache.clone().or_else(default_score_cache)
        }
    }
}

#[derive(Args)]
struct ScoreArgs {
    /// The reward model: `hf:DIR` (a Qwen3 or Llama sequence-classifier directory).
    #[arg(long)]
    model: String,
    /// Input pairs: a Parquet or JSONL file, a directory or a glob (local path or URL).
    #[arg(long)]
    pairs: String,
    /// Output directory (part-*.parquet, quarantine/, report.json).
    #[arg(long)]
    out: String,
    #[command(flatten)]
    models: ModelArgs,
    /// Do not draw progress bars.
    #[arg(long)]
    no_progress: bool,
}

/// The Stage-2 settings `curate` and `serve` share.
#[derive(Args)]
struct StageArgs {
    /// Timely worker threads in this process [default: the number of CPU cores].
    #[arg(long)]
    workers: Option<usize>,
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
    /// Benchmark prompt files (column `prompt`); pairs sharing a 13-gram are dropped.
    #[arg(long, num_args = 1..)]
    decontaminate: Vec<String>,
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
    /// Do not draw progress bars.
    #[arg(long)]
    no_progress: bool,
}

impl StageArgs {
    fn into_spec(
        self,
        pairs: String,
        gold: String,
        out: String,
    ) -> Result<CurateSpec, synpref_engine::Error> {
        let mut spec = CurateSpec {
            models: self.models.options()?,
            score_cache: self.models.cache(),
            pairs,
            gold,
            out,
            threshold: self.threshold,
            judges: self.judges,
            decontaminate: self.decontaminate,
            emit_flipped: self.emit_flipped,
            max_pair_bytes: self.max_pair_bytes,
            best_rm: ModelSpec::parse(&self.best_rm).map_err(|e| e.for_setting("--best-rm"))?,
            gold_rm: ModelSpec::parse(&self.gold_rm).map_err(|e| e.for_setting("--gold-rm"))?,
            best_rm_sample: self.best_rm_sample,
            format: self.format,
            output_file_format: self.output_file_format,
            machine: MachineSettings {
                workers: self.workers.unwrap_or_else(default_workers),
                batch_rows: self.batch_rows,
                progress: !self.no_progress,
                slice_rows: self.slice_rows,
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
struct CurateArgs {
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
    cluster: ClusterArgs,
}

/// Which timely processes a multi-process job runs on (curate, serve, fractions).
#[derive(Args)]
pub(crate) struct ClusterArgs {
    /// Run as one of several timely processes: a file with one host:port per process.
    /// Start the same command once per line, each with its own --process (or let
    /// `synpref launch` start them).
    #[arg(long, requires = "process", conflicts_with = "peers")]
    hostfile: Option<String>,
    /// Run as one of several timely processes: every process's host:port,
    /// comma-separated, in process order (what `synpref launch` gives each process).
    #[arg(long, requires = "process")]
    peers: Option<String>,
    /// This process's index in --hostfile or --peers (from 0).
    #[arg(long)]
    process: Option<usize>,
    /// Seconds to wait for every process of --hostfile to connect before giving up
    /// (exit 1, naming the processes that are not reachable).
    #[arg(long, default_value_t = synpref_engine::cluster::DEFAULT_CONNECT_TIMEOUT_S)]
    connect_timeout: f64,
}

impl ClusterArgs {
    pub(crate) fn cluster(
        &self,
    ) -> Result<synpref_engine::cluster::ClusterSpec, synpref_engine::Error> {
        if !(self.connect_timeout > 0.0 && self.connect_timeout.is_finite()) {
            return Err(synpref_engine::Error::setting(
                "--connect-timeout",
                format!(
                    "{} is not a positive number of seconds",
                    self.connect_timeout
                ),
            ));
        }
        use synpref_engine::cluster::ClusterSpec;
        let mut cluster = match (&self.hostfile, &self.peers, self.process) {
            (Some(h), _, Some(p)) => ClusterSpec::from_hostfile(h, p)?,
            (_, Some(peers), Some(p)) => ClusterSpec::from_peers(peers, p)?,
            (None, None, Some(_)) => {
                return Err(synpref_engine::Error::setting(
                    "--process",
                    "needs --hostfile or --peers",
                ))
            }
            _ => ClusterSpec::default(),
        };
        cluster.connect_timeout_s = self.connect_timeout;
        Ok(cluster)
    }
}

impl CurateArgs {
    fn into_spec(self) -> Result<CurateSpec, synpref_engine::Error> {
        let mut spec = self.stage.into_spec(self.pairs, self.gold, self.out)?;
        spec.truth = self.truth;
        Ok(spec)
    }
}

#[derive(Args)]
struct ServeArgs {
    /// Input pairs (the pool): a Parquet or JSONL file, a directory or a glob.
    #[arg(long)]
    pairs: String,
    /// Prefix polled for new gold-label files (Parquet or JSONL; each file taken once).
    #[arg(long)]
    labels: Option<String>,
    /// Output directory: snapshot/ (laid out like curate's output), changelog/, labels-log/.
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
    cluster: ClusterArgs,
}

impl ServeArgs {
    /// The token, from --token-file or SYNPREF_TOKEN; serve refuses to start without.
    fn token(&self) -> Result<String, synpref_engine::Error> {
        use synpref_engine::Error;
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

    fn into_spec(self) -> Result<ServeSpec, synpref_engine::Error> {
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
            pool_dir: self.pool_dir,
            decisions: self.decisions,
        })
    }
}

#[derive(Args)]
struct FractionsArgs {
    /// The raw pool: Parquet or JSONL file, directory or glob.
    #[arg(long)]
    pairs: String,
    /// Gold labels: fractions first curates --pairs with them (built-in RMs, curate's
    /// defaults) into --curated. Without --gold, --curated must be a committed curate
    /// output of --pairs, used as it is (curate it yourself for other settings).
    #[arg(long)]
    gold: Option<String>,
    /// The curate output the curated subsets are cut from [default: OUT/curate].
    #[arg(long)]
    curated: Option<String>,
    /// With --gold: LLM-judge votes for that curate run (pair_id, verdict), consulted
    /// where the best RM disagrees with a label, as `curate --judges`.
    #[arg(long, requires = "gold")]
    judges: Option<String>,
    /// With --gold: τ of that curate run's consistency rule.
    #[arg(long, requires = "gold", default_value_t = CurateSpec::default().threshold)]
    threshold: f64,
    /// Fractions of the curated set, ascending, in (0, 1].
    #[arg(long, value_delimiter = ',', default_values_t = synpref_jobs::fractions::DEFAULT_FRACTIONS)]
    fractions: Vec<f64>,
    /// Seeds per fraction (each draws other subsets and trains from another seed).
    #[arg(long, default_value_t = synpref_jobs::fractions::DEFAULT_SEEDS)]
    seeds: u32,
    /// `builtin` (the hashed BT model), `encoder:DIR` (a BT head on a frozen BERT-family
    /// encoder's features) or `command` (--train-command per subset).
    #[arg(long, default_value = "builtin")]
    trainer: String,
    /// With --trainer command: a shell command template run per subset; `{data}` is
    /// replaced by a directory of the subset's parts (in --format) and `{model_dir}` by
    /// where the command must leave a Hugging Face reward-model directory (also in the
    /// environment: SYNPREF_DATA, SYNPREF_MODEL_DIR, SYNPREF_SEED).
    #[arg(long)]
    train_command: Option<String>,
    /// Layout of the subsets a training command reads: trl, openrlhf or rewardbench.
    #[arg(long, default_value = "trl")]
    format: OutputFormat,
    /// File format of those subsets [default: the format's own].
    #[arg(long)]
    output_file_format: Option<OutputFileFormat>,
    /// An evaluation set (RewardBench layouts, as `synpref eval` reads; repeatable).
    #[arg(long = "eval", required = true)]
    evals: Vec<String>,
    /// Output directory (results.parquet, results.csv, accuracy.png, accuracy.svg,
    /// report.json).
    #[arg(long)]
    out: String,
    /// Model cache: trained models and their evaluations by subset content
    /// [default: OUT/cache].
    #[arg(long)]
    cache: Option<String>,
    /// Timely worker threads in this process [default: the number of CPU cores].
    #[arg(long)]
    workers: Option<usize>,
    /// Do not draw progress bars.
    #[arg(long)]
    no_progress: bool,
    #[command(flatten)]
    models: ModelArgs,
    #[command(flatten)]
    cluster: ClusterArgs,
}

impl FractionsArgs {
    /// The curate run to make first (with --gold), and the fractions spec.
    fn into_specs(
        self,
    ) -> Result<(Option<CurateSpec>, synpref_jobs::fractions::FractionsSpec), synpref_engine::Error>
    {
        use synpref_engine::Error;
        use synpref_jobs::fractions::{trainers::TrainerSpec, FractionsSpec};
        let local = |flag: &str, dir: &str| -> Result<std::path::PathBuf, Error> {
            if dir.contains("://") {
                return Err(Error::setting(
                    flag,
                    format!("`{dir}`: fractions writes models and plots to a local directory"),
                ));
            }
            Ok(std::path::PathBuf::from(dir))
        };
        let out = local("--out", &self.out)?;
        let curated = self
            .curated
            .clone()
            .unwrap_or_else(|| out.join("curate").display().to_string());
        let trainer = match (self.trainer.as_str(), &self.train_command) {
            ("command", Some(template)) => {
                if !matches!(self.format, OutputFormat::Trl | OutputFormat::Openrlhf | OutputFormat::Rewardbench) {
                    return Err(Error::setting(
                        "--format",
                        format!("`{}`: a training command reads trl, openrlhf or rewardbench (input and conversational carry curate's decision columns, which raw subsets have none of)", self.format),
                    ));
                }
                TrainerSpec::Command {
                    template: template.clone(),
                    format: self.format,
                    file_format: self
                        .output_file_format
                        .unwrap_or_else(|| self.format.default_file_format()),
                }
            }
            ("command", None) => {
                return Err(Error::setting("--train-command", "--trainer command needs --train-command TEMPLATE"))
            }
            (_, Some(_)) => {
                return Err(Error::setting("--train-command", "is only read with --trainer command"))
            }
            (spec, None) => match ModelSpec::parse(spec).map_err(|e| e.for_setting("--trainer"))? {
                ModelSpec::Builtin => TrainerSpec::Builtin {
                    settings: Default::default(),
                },
                ModelSpec::Encoder(dir) => TrainerSpec::Encoder {
                    dir,
                    head: Default::default(),
                },
                ModelSpec::Hf(_) => {
                    return Err(Error::setting(
                        "--trainer",
                        "`hf:` models are not trained in-process; use --trainer command with your training script",
                    ))
                }
            },
        };
        let workers = self.workers.unwrap_or_else(default_workers);
        let curate = match &self.gold {
            Some(gold) => Some(CurateSpec {
                pairs: self.pairs.clone(),
                gold: gold.clone(),
                out: curated.clone(),
                judges: self.judges.clone(),
                threshold: self.threshold,
                machine: MachineSettings {
                    workers,
                    progress: !self.no_progress,
                    ..MachineSettings::default()
                },
                ..CurateSpec::default()
            }),
            None => None,
        };
        let spec = FractionsSpec {
            pairs: self.pairs,
            curated,
            fractions: self.fractions,
            seeds: self.seeds,
            trainer,
            evals: self.evals,
            cache: match &self.cache {
                Some(c) => local("--cache", c)?,
                None => out.join("cache"),
            },
            out: self.out,
            options: self.models.options()?,
            score_cache: self.models.cache(),
            workers,
            progress: !self.no_progress,
        };
        spec.validate()?;
        Ok((curate, spec))
    }
}

#[derive(Args)]
struct EvalArgs {
    /// The reward model: `hf:DIR` (a Qwen3 or Llama sequence-classifier directory) or
    /// `saved:DIR` (a built-in model or encoder head synpref trained and saved, e.g. by
    /// `synpref fractions` under OUT/cache/models/).
    #[arg(long)]
    model: String,
    /// A preference set: a Parquet or JSONL file, a directory or a glob (repeatable).
    #[arg(long = "eval", required = true)]
    evals: Vec<String>,
    /// Output directory (report.json).
    #[arg(long)]
    out: String,
    #[command(flatten)]
    models: ModelArgs,
}

#[derive(Args)]
#[command(group(clap::ArgGroup::new("placement").required(true).args(["local", "hostfile", "slurm", "kubernetes"])))]
struct LaunchArgs {
    /// Start N processes on this host, on free loopback ports.
    #[arg(long, value_name = "N")]
    local: Option<usize>,
    /// Start one process per line of FILE (host:port) over ssh; each host needs the
    /// synpref binary (--remote-binary) and the job's files at the same paths.
    #[arg(long, value_name = "FILE")]
    hostfile: Option<String>,
    /// Run as this task of a Slurm step (`srun synpref launch --slurm -- ...`): the
    /// index from SLURM_PROCID, the peers from SLURM_JOB_NODELIST.
    #[arg(long)]
    slurm: bool,
    /// Run as this pod of a Kubernetes Indexed Job (index from JOB_COMPLETION_INDEX,
    /// peers `<job>-<i>.<service>`); see deploy/kubernetes/.
    #[arg(long)]
    kubernetes: bool,
    /// --kubernetes: the number of pods (the Job's completions and parallelism).
    #[arg(long, env = "SYNPREF_PROCESSES", required_if_eq("kubernetes", "true"))]
    processes: Option<usize>,
    /// --kubernetes: the headless Service the pods' template names as subdomain.
    #[arg(long, env = "SYNPREF_SERVICE", default_value = "synpref")]
    service: String,
    /// --slurm and --kubernetes: the port of each process (plus its index among the
    /// tasks of its node).
    #[arg(long, default_value_t = synpref_engine::launch::DEFAULT_PORT)]
    port: u16,
    /// --hostfile: the command that runs a command line on a host.
    #[arg(long, default_value = "ssh -o BatchMode=yes")]
    ssh: String,
    /// --hostfile: the synpref binary's path on the hosts [default: this binary's path].
    #[arg(long)]
    remote_binary: Option<String>,
    /// Start the whole job again up to K times when a process fails (not after exit
    /// status 2, bad usage).
    #[arg(long, default_value_t = 0, value_name = "K")]
    restarts: u32,
    /// Seconds to let the other processes end on their own after one fails, before
    /// they are killed.
    #[arg(long, default_value_t = synpref_engine::launch::DEFAULT_GRACE_S)]
    grace: f64,
    /// The job and its arguments, after `--`: e.g. `-- curate --pairs P --gold G --out O`.
    #[arg(last = true, required = true, value_name = "JOB ARGS")]
    job: Vec<String>,
}

impl LaunchArgs {
    fn into_spec(self) -> Result<synpref_engine::launch::LaunchSpec, synpref_engine::Error> {
        use synpref_engine::launch::{LaunchSpec, Placement};
        let placement = if let Some(n) = self.local {
            Placement::Local { processes: n }
        } else if let Some(path) = self.hostfile {
            let ssh: Vec<String> = self.ssh.split_whitespace().map(str::to_string).collect();
            if ssh.is_empty() {
                return Err(synpref_engine::Error::setting("--ssh", "is empty"));
            }
            Placement::Hostfile {
                path,
                ssh,
                remote_binary: self.remote_binary,
            }
        } else if self.slurm {
            Placement::Slurm { port: self.port }
        } else {
            Placement::Kubernetes {
                processes: self.processes.unwrap_or(0),
                service: self.service,
                port: self.port,
            }
        };
        LaunchSpec::new(placement, self.restarts, self.grace, self.job)
    }
}

#[derive(Subcommand)]
enum ExplainJob {
    /// The survey and curate dataflows of `synpref curate` with these arguments.
    Curate(CurateArgs),
}

#[derive(Subcommand)]
enum LabelCommand {
    /// Validate a gold-label file and add it under the --labels prefix a serve polls.
    Add {
        /// The prefix `synpref serve --labels` polls.
        #[arg(long)]
        labels: String,
        /// A Parquet or JSONL gold-label file.
        file: String,
    },
}

fn main() -> ExitCode {
    // serve holds its state for days after one curate pass: its freed pages go back
    // to the OS (mimalloc's default purge), or its resident memory would stay at the
    // pass's peak (docs/benchmarks.md, issue 12).
    if std::env::args().nth(1).as_deref() != Some("serve") {
        tune_allocator();
    }
    runner::install_abort_on_panic();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("synpref: error: {e}");
            ExitCode::from(e.exit_code() as u8)
        }
    }
}

fn default_workers() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

fn run(command: Command) -> Result<(), synpref_engine::Error> {
    match command {
        Command::Demo { out, workers } => {
            let demo = DemoSpec::new(out.clone(), workers.unwrap_or_else(default_workers));
            eprintln!(
                "synpref demo: generating {} pairs under {}/data",
                demo.pairs, out
            );
            let g = run_gen(&demo.gen_spec())?;
            eprintln!(
                "synpref demo: {} pairs, {} gold labels, {:.1}% of pool labels wrong; curating with {} worker(s)",
                g.pairs,
                g.gold_labels,
                100.0 * g.label_noise,
                demo.workers
            );
            let spec = demo.curate_spec();
            let out_dir = spec.out.clone();
            if let Some(report) =
                runner::run_curate(spec, &synpref_engine::cluster::ClusterSpec::default())?
            {
                print!("{}", summary(&report, &out_dir));
            }
            Ok(())
        }
        Command::Gen {
            pairs,
            out,
            seed,
            gold_fraction,
            judge_fraction,
            duplicate_fraction,
            empty_fraction,
            contaminated_fraction,
            eval_pairs,
            rows_per_file,
        } => {
            let mut spec = GenSpec::new(pairs, out.clone(), seed);
            spec.gold_fraction = gold_fraction;
            spec.judge_fraction = judge_fraction;
            spec.duplicate_fraction = duplicate_fraction;
            spec.empty_fraction = empty_fraction;
            spec.contaminated_fraction = contaminated_fraction;
            spec.rows_per_file = rows_per_file;
            if let Some(n) = eval_pairs {
                spec.eval_pairs = n;
            }
            let s = run_gen(&spec)?;
            println!(
                "wrote {} pairs ({} files), {} gold labels, {} eval pairs, {} judge votes, {} benchmark prompts under {out} (label noise {:.1}%)",
                s.pairs,
                s.pair_files.len(),
                s.gold_labels,
                s.eval_pairs,
                s.judge_votes,
                s.benchmark_prompts,
                100.0 * s.label_noise
            );
            Ok(())
        }
        Command::Curate(args) => {
            let cluster = args.cluster.cluster()?;
            let spec = args.into_spec()?;
            let out = spec.out.clone();
            if let Some(report) = runner::run_curate(spec, &cluster)? {
                print!("{}", summary(&report, &out));
            }
            Ok(())
        }
        Command::Serve(args) => {
            let token = args.token()?;
            let cluster = args.cluster.cluster()?;
            let spec = args.into_spec()?;
            let start_workers = |workers: usize, f: synpref_jobs::serve::WorkerFn| {
                runner::start_workers(&cluster, workers, f)
            };
            run_serve(
                spec,
                token,
                synpref_jobs::serve::ServeRuntime {
                    start_api: &http::start,
                    start_workers: &start_workers,
                    process: cluster.process,
                    processes: cluster.addresses.len().max(1),
                },
            )
        }
        Command::Explain {
            job: ExplainJob::Curate(args),
        } => {
            print!("{}", runner::explain_curate(args.into_spec()?)?);
            Ok(())
        }
        Command::Export {
            from,
            format,
            out,
            output_file_format,
            no_progress,
        } => {
            let spec = synpref_jobs::export::ExportSpec {
                from,
                out: out.clone(),
                format,
                output_file_format,
                progress: !no_progress,
            };
            let summary = synpref_jobs::export::run_export(&spec)?;
            println!(
                "exported {} rows in {} files as --format {format} under {out}",
                summary.rows,
                summary.files.len()
            );
            Ok(())
        }
        Command::Launch(args) => launch::run_launch(&args.into_spec()?),
        Command::Eval(args) => {
            let spec = synpref_jobs::eval::EvalSpec {
                model: synpref_jobs::eval::EvalModel::parse(&args.model)
                    .map_err(|e| e.for_setting("--model"))?,
                evals: args.evals,
                out: args.out,
                options: args.models.options()?,
                cache: args.models.cache(),
                chunk_pairs: 4096,
            };
            print!(
                "{}",
                synpref_jobs::eval::table(&synpref_jobs::eval::run_eval(&spec)?)
            );
            Ok(())
        }
        Command::Fractions(args) => {
            let cluster = args.cluster.cluster()?;
            let (curate, spec) = args.into_specs()?;
            if let Some(curate) = curate {
                let out = curate.out.clone();
                if let Some(report) = runner::run_curate(curate, &cluster)? {
                    eprintln!(
                        "synpref fractions: curated {} of {} rows into {out}",
                        report.curated_rows, report.input_rows
                    );
                }
            }
            let out = spec.out.clone();
            if let Some(report) = runner::run_fractions(spec, &cluster)? {
                print!(
                    "{}",
                    synpref_jobs::fractions::results::summary(&report, &out)
                );
            }
            Ok(())
        }
        Command::Stage1(args) => {
            let cluster = args.cluster.cluster()?;
            let spec = args.into_spec()?;
            if let Some(report) = runner::run_stage1(spec, &cluster)? {
                print!("{}", synpref_jobs::stage1::summary(&report));
            }
            Ok(())
        }
        Command::Annotate(args) => {
            let spec = args.into_spec()?;
            let r = synpref_jobs::stage1::attributes::run_annotate(&spec)?;
            println!(
                "annotated {} pairs ({} failed validation, {} already annotated; {} of {} input rows invalid) into {}; LLM: {} requests ({} from the cache), {} retries, {} prompt + {} completion tokens, ${:.4}",
                r.annotated,
                r.failed,
                r.already_annotated,
                r.invalid_rows,
                r.input_rows,
                spec.out.join("pairs.jsonl").display(),
                r.llm.requests,
                r.llm.cached,
                r.llm.retries,
                r.llm.prompt_tokens,
                r.llm.completion_tokens,
                r.llm.cost_usd
            );
            Ok(())
        }
        Command::Tasks { command } => stage1_args::run_tasks(command),
        Command::Label {
            command: LabelCommand::Add { labels, file },
        } => {
            let (n, url) = add_label_file(&labels, &file)?;
            println!("added {n} labels as {url}");
            Ok(())
        }
        Command::Score(args) => {
            let spec = ScoreSpec {
                model: ModelSpec::parse(&args.model)
                    .map_err(|e| e.for_setting("--model"))?,
                pairs: args.pairs,
                out: args.out.clone(),
                options: args.models.options()?,
                cache: args.models.cache(),
                chunk_pairs: 4096,
                progress: !args.no_progress,
            };
            let r = run_score(&spec)?;
            println!(
                "scored {} pairs ({} computed, {} from the cache; {} quarantined) in {:.1} s ({:.1} pairs/s); accuracy (r_chosen > r_rejected) {:.2}%; truncated: {} prompts, {} responses; output under {}",
                r.scored_rows,
                r.usage.scored,
                r.usage.cached,
                r.quarantined_rows,
                r.elapsed_s,
                r.pairs_per_s,
                100.0 * r.accuracy,
                r.usage.truncations.prompt_truncated,
                r.usage.truncations.response_truncated,
                args.out
            );
            Ok(())
        }
    }
}
