//! `score` and `eval`: one reward model over pairs, or over evaluation sets.

use clap::Args;
use synpref_engine::Error;
use synpref_jobs::eval::{EvalModel, EvalSpec};
use synpref_jobs::score::ScoreSpec;
use synpref_operators::models::ModelSpec;

use super::common::{ModelArgs, ProgressArg};

/// Pairs read and scored per chunk by score and eval.
const CHUNK_PAIRS: usize = 4096;

#[derive(Args)]
pub struct ScoreArgs {
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
    #[command(flatten)]
    progress: ProgressArg,
}

#[derive(Args)]
pub struct EvalArgs {
    /// The reward model: `hf:DIR` (a Qwen3 or Llama sequence-classifier directory) or
    /// `saved:DIR` (a built-in model or encoder head synpref trained and saved, e.g. by
    /// `synpref fractions` under OUT/cache/models/).
    #[arg(long)]
    model: String,
    /// Preference sets: Parquet or JSONL files, directories or globs, or layouts that
    /// `synpref bench import` wrote (scored by their benchmark's official rules).
    /// Several may follow one `--eval`, and the flag may be repeated.
    #[arg(long = "eval", required = true, num_args = 1..)]
    evals: Vec<String>,
    /// Output directory (report.json).
    #[arg(long)]
    out: String,
    #[command(flatten)]
    models: ModelArgs,
}

impl ScoreArgs {
    pub fn into_spec(self) -> Result<ScoreSpec, Error> {
        Ok(ScoreSpec {
            model: ModelSpec::parse(&self.model).map_err(|e| e.for_setting("--model"))?,
            pairs: self.pairs,
            out: self.out,
            options: self.models.options()?,
            cache: self.models.cache(),
            chunk_pairs: CHUNK_PAIRS,
            progress: self.progress.progress(),
        })
    }
}

impl EvalArgs {
    pub fn into_spec(self) -> Result<EvalSpec, Error> {
        Ok(EvalSpec {
            model: EvalModel::parse(&self.model).map_err(|e| e.for_setting("--model"))?,
            evals: self.evals,
            out: self.out,
            options: self.models.options()?,
            cache: self.models.cache(),
            chunk_pairs: CHUNK_PAIRS,
        })
    }
}
