//! The small commands' flags: `demo`, `gen`, `export` and `label add`, turned into
//! their jobs.

use clap::{Args, Subcommand};
use synpref_engine::output::{OutputFileFormat, OutputFormat};
use synpref_jobs::demo::DemoSpec;
use synpref_jobs::export::ExportSpec;
use synpref_jobs::gen::{GenSpec, DEFAULT_SEED};
use synpref_jobs::serve::job::AddLabels;

use super::common::{ProgressArg, WorkersArg};

/// `synpref demo`.
#[derive(Args)]
pub struct DemoArgs {
    /// Output directory (generated data under DIR/data, curated output under DIR/curated).
    #[arg(long, default_value = "synpref-demo")]
    out: String,
    #[command(flatten)]
    workers: WorkersArg,
}

impl DemoArgs {
    pub fn into_spec(self) -> DemoSpec {
        DemoSpec::new(self.out, self.workers.workers())
    }
}

/// `synpref gen`.
#[derive(Args)]
pub struct GenArgs {
    /// Pairs in the pool.
    #[arg(long)]
    pub pairs: u64,
    /// Output directory (pairs/, gold.parquet, truth.parquet, eval.parquet, ...).
    #[arg(long)]
    pub out: String,
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
    /// Share of rows that are near-duplicates of an earlier row (a few words edited,
    /// or re-cased and re-punctuated), named in truth.parquet (`injected`, `copy_of`).
    #[arg(long = "near-duplicates", value_name = "RATE", default_value_t = 0.0)]
    near_duplicates: f64,
    /// Share of rows that copy an earlier row with chosen and rejected swapped (the
    /// same comparison, the opposite label), named in truth.parquet.
    #[arg(long = "conflicts", value_name = "RATE", default_value_t = 0.0)]
    conflicts: f64,
}

impl GenArgs {
    pub fn into_spec(self) -> GenSpec {
        let mut spec = GenSpec::new(self.pairs, self.out, self.seed);
        spec.gold_fraction = self.gold_fraction;
        spec.judge_fraction = self.judge_fraction;
        spec.duplicate_fraction = self.duplicate_fraction;
        spec.empty_fraction = self.empty_fraction;
        spec.contaminated_fraction = self.contaminated_fraction;
        spec.rows_per_file = self.rows_per_file;
        spec.near_duplicate_fraction = self.near_duplicates;
        spec.conflict_fraction = self.conflicts;
        if let Some(n) = self.eval_pairs {
            spec.eval_pairs = n;
        }
        spec
    }
}

/// `synpref export`.
#[derive(Args)]
pub struct ExportArgs {
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
    #[command(flatten)]
    progress: ProgressArg,
}

impl ExportArgs {
    pub fn into_spec(self) -> ExportSpec {
        ExportSpec {
            from: self.from,
            out: self.out,
            format: self.format,
            output_file_format: self.output_file_format,
            progress: self.progress.progress(),
        }
    }
}

#[derive(Subcommand)]
pub enum LabelCommand {
    /// Validate a gold-label file and add it under the --labels prefix a serve polls.
    Add {
        /// The prefix `synpref serve --labels` polls.
        #[arg(long)]
        labels: String,
        /// A Parquet or JSONL gold-label file.
        file: String,
        /// The pool serve runs on: refuse (exit 2, naming them) labels whose pair ids
        /// no row of it has, instead of adding labels that would decide nothing.
        #[arg(long)]
        pairs: Option<String>,
    },
}

impl LabelCommand {
    pub fn into_job(self) -> AddLabels {
        match self {
            LabelCommand::Add {
                labels,
                file,
                pairs,
            } => AddLabels {
                labels,
                file,
                pairs,
            },
        }
    }
}
