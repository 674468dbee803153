//! `CurateSpec`: the settings of a curate run, each knob's name, default and meaning in
//! one place, and their validation (errors name the flag).

use serde::{Deserialize, Serialize};
use synpref_engine::hashing::DedupForm;
use synpref_engine::output::{OutputFileFormat, OutputFormat};
use synpref_engine::{Error, Result};
use synpref_operators::consistency_rule::RuleSettings;
use synpref_operators::decontaminate::DecontaminationSettings;
use synpref_operators::minhash::NearDupSettings;
use synpref_operators::models::builtin::TrainSettings;
use synpref_operators::models::{ModelOptions, ModelSpec};
use synpref_operators::training::best::CrossFitSettings;
use synpref_operators::validate::ValidateSettings;

use crate::job::RunSettings;

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
    /// τ of the consistency rule (paper default 0.5).
    pub threshold: f64,
    /// Ground truth (pair_id, preference) to measure label agreement before and after.
    pub truth: Option<String>,
    /// LLM-judge votes (pair_id, verdict), consulted when p_best ≤ τ.
    pub judges: Option<String>,
    /// Benchmark files for decontamination (`bench::prompts` reads them).
    pub decontaminate: Vec<String>,
    /// The form exact dedup compares (`--dedup-as-written`: the bytes as written).
    pub dedup_form: DedupForm,
    /// Near-duplicate detection (`--no-near-dup`, `--near-dup-*`; `minhash` documents
    /// each default and its source).
    pub near_dup: NearDupSettings,
    /// What decontamination checks and the n-gram length (`--decontaminate-scope`,
    /// `--decontaminate-ngram`).
    pub decontamination: DecontaminationSettings,
    /// Write RM-discarded pairs with chosen and rejected swapped.
    pub emit_flipped: bool,
    /// Largest accepted pair in bytes of text; larger rows are quarantined.
    pub max_pair_bytes: usize,
    /// The best RM (`--best-rm`): built-in, `hf:DIR` or `encoder:DIR`, parsed once.
    pub best_rm: ModelSpec,
    /// The gold RM (`--gold-rm`).
    pub gold_rm: ModelSpec,
    /// Most pool pairs the best RM trains on (a deterministic sample by pair id). With
    /// two folds each fold model learns from half of it: 200K pairs give each the 100K
    /// at which the hashed linear model's held-out accuracy levels off on generated
    /// data (0.819 with 80K, 0.820 with 100K, 0.821 with 160K per model;
    /// docs/benchmarks.md).
    pub best_rm_sample: u64,
    /// Cross-fitting of the best RM (`--folds`, `--heldout-share`).
    pub cross_fit: CrossFitSettings,
    /// Folds of the gold RM's cross-validation (`--gold-folds`): 5, the usual K
    /// (Hastie, Tibshirani & Friedman, ESL §7.10); each fold model learns 80% of the
    /// labels, so the estimates judge a model close to the one that filters. The
    /// built-in gold RM's folds are online passes, cheap next to the best RM's.
    pub gold_folds: usize,
    /// Settings of transformer models (`hf:`, `encoder:` specs).
    pub models: ModelOptions,
    /// Score-cache URL for transformer models (`None`: no cache).
    pub score_cache: Option<String>,
    /// Training of the built-in models (the gold RM makes one online pass over the
    /// label stream and ignores `epochs`).
    pub train: TrainSettings,
    /// Layout of curated and discarded rows (`--format`): `input`, `conversational`,
    /// or a consumer's preset (`trl`, `openrlhf`, `rewardbench`).
    pub format: OutputFormat,
    /// File format of the parts (`--output-file-format`; `None`: the format's default,
    /// JSON lines for `rewardbench`, Parquet otherwise).
    pub output_file_format: Option<OutputFileFormat>,
    /// How the run is executed; none of it changes the output.
    pub machine: MachineSettings,
}

/// The default of `--slice-rows`: rows of input a worker reads between two commits.
/// Each commit closes the worker's open parts, so a smaller slice means less work
/// redone after a crash and more, smaller part files. 2¹⁸ rows is 4 row groups of the
/// 65,536-row groups synpref itself writes (`output::ROW_GROUP_ROWS`).
pub const DEFAULT_SLICE_ROWS: u64 = 1 << 18;

/// How a run is executed: settings that never change what it writes, kept apart so
/// that fingerprints and manifests of the curation settings need not blank them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MachineSettings {
    /// Timely worker threads in this process and progress bars (the block every job
    /// shares).
    #[serde(flatten)]
    pub run: RunSettings,
    /// Rows per read batch (the unit of pipelining; the output does not depend on it).
    pub batch_rows: usize,
    /// Rows of input each worker reads between two commits of its progress
    /// (`--slice-rows`): a killed run started again redoes at most one slice per worker
    /// (`resume`). Each commit closes the worker's open parts.
    #[serde(default = "default_slice_rows")]
    pub slice_rows: u64,
    /// Where a worker keeps what it spills to local disk (`--spill-dir`; the system's
    /// temporary directory by default): the pair ids, and with `--near-dup-verify` the
    /// shingles, of the rows it reads in the survey.
    #[serde(default)]
    pub spill_dir: Option<std::path::PathBuf>,
    /// Bytes the survey's near-duplicate band index may hold in memory in this process
    /// (`--memory-budget`), shared by its workers; past it each worker spills sorted
    /// runs to `spill_dir`. `None`: `DEFAULT_MEMORY_BUDGET_SHARE` of this machine's
    /// memory, resolved where the job runs (each machine of a cluster its own).
    #[serde(default)]
    pub memory_budget: Option<u64>,
}

/// The default `--memory-budget`: a sixteenth of the machine's physical memory. The
/// band index is 14 entries of 16 bytes per pair (224 bytes), so on a 24 GB machine
/// 1.5 GB holds a 6.7M-pair pool's bands in memory (no spill at the 1M benchmark) and
/// larger pools spill, keeping curate's growth per pair to its two first-row indexes
/// (docs/benchmarks.md, "Memory that scales").
pub const DEFAULT_MEMORY_BUDGET_SHARE: f64 = 1.0 / 16.0;

/// Assumed physical memory where `/proc/meminfo` cannot be read (not Linux).
const FALLBACK_PHYSICAL_MEMORY: u64 = 8 << 30;

impl MachineSettings {
    /// `--memory-budget` in bytes, or its default on this machine.
    pub fn memory_budget_bytes(&self) -> u64 {
        self.memory_budget.unwrap_or_else(|| {
            let total = physical_memory().unwrap_or(FALLBACK_PHYSICAL_MEMORY);
            (total as f64 * DEFAULT_MEMORY_BUDGET_SHARE) as u64
        })
    }
}

/// `MemTotal` of `/proc/meminfo`, in bytes.
fn physical_memory() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn default_slice_rows() -> u64 {
    DEFAULT_SLICE_ROWS
}

/// Validation of pool rows under a spec.
pub fn validate_settings(spec: &CurateSpec) -> ValidateSettings {
    ValidateSettings {
        max_pair_bytes: spec.max_pair_bytes,
        allow_empty_replies: false,
        dedup_form: spec.dedup_form,
    }
}

impl Default for MachineSettings {
    fn default() -> Self {
        MachineSettings {
            run: RunSettings::default(),
            batch_rows: synpref_engine::input::READ_BATCH_ROWS,
            slice_rows: DEFAULT_SLICE_ROWS,
            spill_dir: None,
            memory_budget: None,
        }
    }
}

impl Default for CurateSpec {
    fn default() -> Self {
        CurateSpec {
            pairs: String::new(),
            gold: String::new(),
            out: String::new(),
            threshold: 0.5,
            truth: None,
            judges: None,
            decontaminate: Vec::new(),
            decontamination: DecontaminationSettings::default(),
            dedup_form: DedupForm::Canonical,
            near_dup: NearDupSettings::default(),
            emit_flipped: false,
            max_pair_bytes: 4 << 20,
            best_rm: ModelSpec::Builtin,
            gold_rm: ModelSpec::Builtin,
            best_rm_sample: 200_000,
            cross_fit: CrossFitSettings::default(),
            gold_folds: 5,
            models: ModelOptions::default(),
            score_cache: None,
            train: TrainSettings::default(),
            format: OutputFormat::Input,
            output_file_format: None,
            machine: MachineSettings::default(),
        }
    }
}

impl CurateSpec {
    /// The file format parts are written in.
    pub fn file_format(&self) -> OutputFileFormat {
        self.output_file_format
            .unwrap_or_else(|| self.format.default_file_format())
    }

    /// The consistency rule's settings.
    pub fn rule(&self) -> RuleSettings {
        RuleSettings {
            threshold: self.threshold,
            emit_flipped: self.emit_flipped,
        }
    }

    /// Checks every setting; errors name the flag that sets it.
    /// Refuses an `--out` that is, lies inside or contains any input, before anything
    /// is read or deleted (`store::check_output_apart`).
    fn check_out_apart(&self) -> Result<()> {
        let mut inputs: Vec<(&str, &str)> = vec![("--pairs", self.pairs.as_str())];
        inputs.push(("--gold", self.gold.as_str()));
        inputs.extend(self.truth.as_deref().map(|t| ("--truth", t)));
        inputs.extend(self.judges.as_deref().map(|j| ("--judges", j)));
        inputs.extend(
            self.decontaminate
                .iter()
                .map(|d| ("--decontaminate", d.as_str())),
        );
        synpref_engine::store::check_output_apart("--out", &self.out, &inputs)
    }

    pub fn validate(&self) -> Result<()> {
        self.decontamination.validate()?;
        self.near_dup.validate()?;
        if self.pairs.is_empty() {
            return Err(Error::setting("--pairs", "is required"));
        }
        if self.gold.is_empty() {
            return Err(Error::setting("--gold", "is required"));
        }
        if self.out.is_empty() {
            return Err(Error::setting("--out", "is required"));
        }
        self.check_out_apart()?;
        let m = &self.machine;
        m.run.validate()?;
        if m.batch_rows == 0 || m.batch_rows > 1 << 20 {
            return Err(Error::setting(
                "--batch-rows",
                format!("{} is not between 1 and 1048576", m.batch_rows),
            ));
        }
        if m.slice_rows == 0 {
            return Err(Error::setting("--slice-rows", "must be at least 1"));
        }
        // Checked before anything is read: a spill dir that is not there would
        // otherwise fail the run at its first spill, after minutes of survey.
        if let Some(dir) = &m.spill_dir {
            if !dir.is_dir() {
                return Err(Error::setting(
                    "--spill-dir",
                    format!("{} is not an existing directory", dir.display()),
                ));
            }
        }
        if !(self.threshold > 0.0 && self.threshold < 1.0) {
            return Err(Error::setting(
                "--threshold",
                format!("{} is not strictly between 0 and 1", self.threshold),
            ));
        }
        if !(0.0..0.9).contains(&self.cross_fit.heldout_share) {
            return Err(Error::setting(
                "--heldout-share",
                format!("{} is not in [0, 0.9)", self.cross_fit.heldout_share),
            ));
        }
        if self.cross_fit.folds == 0 || self.cross_fit.folds > 7 {
            return Err(Error::setting(
                "--folds",
                format!(
                    "{} is not between 1 and 7 (1: no cross-fitting)",
                    self.cross_fit.folds
                ),
            ));
        }
        if self.gold_folds < 2 || self.gold_folds > 20 {
            return Err(Error::setting(
                "--gold-folds",
                format!("{} is not between 2 and 20", self.gold_folds),
            ));
        }
        if self.max_pair_bytes == 0 {
            return Err(Error::setting("--max-pair-bytes", "must be positive"));
        }
        if self.best_rm_sample == 0 {
            return Err(Error::setting("--best-rm-sample", "must be positive"));
        }
        let t = &self.train;
        if t.feature_bits < 10 || t.feature_bits > 28 {
            return Err(Error::setting(
                "--feature-bits",
                format!("{} is not between 10 and 28", t.feature_bits),
            ));
        }
        if t.epochs == 0 || t.epochs > 100 {
            return Err(Error::setting(
                "--epochs",
                format!("{} is not between 1 and 100", t.epochs),
            ));
        }
        if !(t.learning_rate > 0.0 && t.learning_rate.is_finite()) {
            return Err(Error::setting("--learning-rate", "must be positive"));
        }
        if !(t.online_learning_rate > 0.0 && t.online_learning_rate.is_finite()) {
            return Err(Error::setting("--gold-learning-rate", "must be positive"));
        }
        if !(t.l2 >= 0.0 && t.l2.is_finite()) {
            return Err(Error::setting("--l2", "must be zero or positive"));
        }
        Ok(())
    }
}
