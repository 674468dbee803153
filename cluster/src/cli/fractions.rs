//! `fractions`: its flags, turned into the fractions job (and, with `--gold`, the
//! curate run it makes first).

use std::path::PathBuf;

use clap::Args;
use synpref_engine::output::{OutputFileFormat, OutputFormat};
use synpref_engine::Error;
use synpref_jobs::curate::CurateSpec;
use synpref_jobs::fractions::job::{curate_first, FractionsJob};
use synpref_jobs::fractions::trainers::TrainerSpec;
use synpref_jobs::fractions::FractionsSpec;

use super::common::{ClusterArgs, ModelArgs, RunArgs};

#[derive(Args)]
pub struct FractionsArgs {
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
    /// An evaluation set (RewardBench layouts, as `synpref eval` reads, or a benchmark
    /// `synpref bench import` wrote: scored by its official rules; repeatable).
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
    #[command(flatten)]
    run: RunArgs,
    #[command(flatten)]
    models: ModelArgs,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

impl FractionsArgs {
    /// The fractions job: with --gold, the curate run it makes first.
    pub fn into_job(self) -> Result<FractionsJob, Error> {
        let local = |flag: &str, dir: &str| -> Result<PathBuf, Error> {
            if dir.contains("://") {
                return Err(Error::setting(
                    flag,
                    format!("`{dir}`: fractions writes models and plots to a local directory"),
                ));
            }
            Ok(PathBuf::from(dir))
        };
        let out = PathBuf::from(&self.out);
        let trainer = TrainerSpec::from_flags(
            &self.trainer,
            self.train_command,
            self.format,
            self.output_file_format,
        )?;
        let run = self.run.settings();
        let fractions = FractionsSpec {
            pairs: self.pairs,
            curated: self
                .curated
                .unwrap_or_else(|| out.join("curate").display().to_string()),
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
            run,
        };
        let curate = self
            .gold
            .map(|gold| curate_first(&fractions, gold, self.judges, self.threshold));
        Ok(FractionsJob { curate, fractions })
    }
}
