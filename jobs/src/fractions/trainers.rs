//! The trainers of the fractions job and their model cache. A trained model lives in
//! `CACHE/models/<model key>/` (the key: the subset's content key, the trainer's
//! fingerprint and the seed), with its evaluations in `evals/<eval set key>.json` and a
//! `task.json` written last (its presence means the entry is complete). A rerun whose
//! subset, trainer and seed are unchanged reuses the model and its evaluations.
//!
//! Trainers: the built-in hashed BT model and a BT head on frozen encoder features
//! (both trained in-process and saved with `models::saved`), or a user's command per
//! subset (`--train-command`, a template with `{data}` and `{model_dir}`: e.g. a TRL
//! or OpenRLHF script), whose model directory must be a Hugging Face reward model.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use synpref_engine::model::{PreferencePair, Reason};
use synpref_engine::output::{OutputFileFormat, OutputFormat, PartWriter, STAGING_DIR};
use synpref_engine::store::resolve;
use synpref_engine::{Error, Result};
use synpref_operators::models::builtin::{HashedBtModel, TrainExample, TrainInfo, TrainSettings};
use synpref_operators::models::encoder::HeadSettings;
use synpref_operators::models::{load_encoder, saved, CachedFeatures, ModelOptions};
use synpref_operators::training::best::{is_heldout, train_head};

use super::SetData;
use crate::read::EvalModel;

/// How each subset's reward model is trained; every knob has its default here.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum TrainerSpec {
    /// The built-in hashed BT model (DESIGN §3), its epoch chosen on a held-out slice.
    Builtin { settings: TrainSettings },
    /// A BT head on the frozen features of a BERT-family encoder directory.
    Encoder { dir: PathBuf, head: HeadSettings },
    /// A user's training command, run once per subset through `sh -c`.
    Command {
        /// `{data}`: a directory of the subset's parts in `format`; `{model_dir}`: where
        /// the command must leave a Hugging Face reward-model directory. Both are also
        /// in the environment as SYNPREF_DATA and SYNPREF_MODEL_DIR, with SYNPREF_SEED.
        template: String,
        format: OutputFormat,
        file_format: OutputFileFormat,
    },
}

/// Share of a subset held out to choose the in-process trainers' epoch (the best RM's
/// share, `CrossFitSettings::default().heldout_share`).
pub const HELDOUT_SHARE: f64 = 0.1;

impl TrainerSpec {
    /// The trainer of `--trainer` (`builtin`, `encoder:DIR` or `command`) with
    /// `--train-command`, `--format` and `--output-file-format`, checked together.
    pub fn from_flags(
        trainer: &str,
        train_command: Option<String>,
        format: OutputFormat,
        output_file_format: Option<OutputFileFormat>,
    ) -> Result<TrainerSpec> {
        use synpref_operators::models::ModelSpec;
        match (trainer, train_command) {
            ("command", Some(template)) => {
                if !matches!(
                    format,
                    OutputFormat::Trl | OutputFormat::Openrlhf | OutputFormat::Rewardbench
                ) {
                    return Err(Error::setting(
                        "--format",
                        format!("`{format}`: a training command reads trl, openrlhf or rewardbench (input and conversational carry curate's decision columns, which raw subsets have none of)"),
                    ));
                }
                Ok(TrainerSpec::Command {
                    template,
                    format,
                    file_format: output_file_format.unwrap_or_else(|| format.default_file_format()),
                })
            }
            ("command", None) => Err(Error::setting(
                "--train-command",
                "--trainer command needs --train-command TEMPLATE",
            )),
            (_, Some(_)) => Err(Error::setting(
                "--train-command",
                "is only read with --trainer command",
            )),
            (spec, None) => match ModelSpec::parse(spec).map_err(|e| e.for_setting("--trainer"))? {
                ModelSpec::Builtin => Ok(TrainerSpec::Builtin {
                    settings: Default::default(),
                }),
                ModelSpec::Encoder(dir) => Ok(TrainerSpec::Encoder {
                    dir,
                    head: Default::default(),
                }),
                ModelSpec::Hf(_) => Err(Error::setting(
                    "--trainer",
                    "`hf:` models are not trained in-process; use --trainer command with your training script",
                )),
            },
        }
    }

    /// The `--trainer` value as the report writes it.
    pub fn label(&self) -> String {
        match self {
            TrainerSpec::Builtin { .. } => "builtin".into(),
            TrainerSpec::Encoder { dir, .. } => format!("encoder:{}", dir.display()),
            TrainerSpec::Command { .. } => "command".into(),
        }
    }

    /// Covers everything that changes what the trainer makes of a subset. The encoder's
    /// weights enter through its feature fingerprint; a command's script is named by its
    /// template only: change the template (or clear the cache) when the script changes.
    pub fn fingerprint(&self, encoder_fingerprint: Option<&str>) -> String {
        let spec = serde_json::to_string(self).expect("a trainer spec serializes");
        format!("{spec}|{}", encoder_fingerprint.unwrap_or(""))
    }
}

/// A trainer with what it trains from loaded once per process, before its workers
/// start (an encoder head's encoder features): made by the one match on the spec in
/// `load`, so `train` never asks again whether the spec and the features agree.
pub enum LoadedTrainer {
    Builtin {
        settings: TrainSettings,
    },
    Encoder {
        dir: PathBuf,
        head: HeadSettings,
        features: Arc<CachedFeatures>,
    },
    Command {
        template: String,
        format: OutputFormat,
        file_format: OutputFileFormat,
    },
}

impl LoadedTrainer {
    /// Loads what `spec` trains from, the features' score cache under `score_cache`.
    pub fn load(
        spec: &TrainerSpec,
        options: &ModelOptions,
        score_cache: Option<&str>,
    ) -> Result<LoadedTrainer> {
        Ok(match spec {
            TrainerSpec::Builtin { settings } => LoadedTrainer::Builtin {
                settings: settings.clone(),
            },
            TrainerSpec::Encoder { dir, head } => LoadedTrainer::Encoder {
                dir: dir.clone(),
                head: head.clone(),
                features: load_encoder(dir, options, score_cache)
                    .map_err(|e| e.for_setting("--trainer"))?,
            },
            TrainerSpec::Command {
                template,
                format,
                file_format,
            } => LoadedTrainer::Command {
                template: template.clone(),
                format: *format,
                file_format: *file_format,
            },
        })
    }

    /// The encoder's feature fingerprint (`TrainerSpec::fingerprint`).
    pub fn encoder_fingerprint(&self) -> Option<&str> {
        match self {
            LoadedTrainer::Encoder { features, .. } => Some(features.features.fingerprint()),
            _ => None,
        }
    }
}

/// The record of a cache entry, written last.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskRecord {
    pub set: String,
    pub fraction: f64,
    pub seed: u32,
    pub pairs: u64,
    pub subset_key: String,
    pub trainer: String,
    /// What the trainer reported (in-process trainers only).
    pub info: Option<TrainInfo>,
    pub train_s: f64,
}

/// A trained (or reused) model of one task.
pub struct Trained {
    pub dir: PathBuf,
    pub model: EvalModel,
    pub reused: bool,
    pub record: TaskRecord,
}

/// The cache directory of a model key.
pub fn entry_dir(cache: &Path, model_key: u128) -> PathBuf {
    cache.join("models").join(format!("{model_key:032x}"))
}

fn model_of(spec: &TrainerSpec, dir: &Path) -> EvalModel {
    match spec {
        TrainerSpec::Command { .. } => EvalModel::Hf(dir.join("model")),
        _ => EvalModel::Saved(dir.join("model")),
    }
}

fn io(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Worker(format!("{}: {e}", path.display()))
}

/// The cached model of `model_key`, if its entry is complete.
pub fn cached(spec: &TrainerSpec, cache: &Path, model_key: u128) -> Result<Option<Trained>> {
    let dir = entry_dir(cache, model_key);
    let record_path = dir.join("task.json");
    let Ok(bytes) = std::fs::read(&record_path) else {
        return Ok(None);
    };
    let record: TaskRecord = serde_json::from_slice(&bytes)
        .map_err(|e| Error::bad_file(record_path.display().to_string(), e.to_string()))?;
    Ok(Some(Trained {
        model: model_of(spec, &dir),
        dir,
        reused: true,
        record,
    }))
}

/// What a task trains on.
pub struct Subset<'a> {
    pub set: &'a SetData,
    pub pairs: Vec<&'a PreferencePair>,
    pub fraction: f64,
    pub seed: u32,
    pub subset_key: u128,
}

/// Trains a subset's model into a fresh cache entry (written aside, then renamed into
/// place, so that a crash leaves no entry a rerun could mistake for complete).
pub fn train(
    spec: &TrainerSpec,
    trainer: &LoadedTrainer,
    cache: &Path,
    model_key: u128,
    subset: &Subset<'_>,
    worker: usize,
) -> Result<Trained> {
    let started = Instant::now();
    let tmp = cache
        .join("tmp")
        .join(format!("{model_key:032x}-{}-{worker}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| io(&tmp, e))?;
    let model_dir = tmp.join("model");
    let info = match trainer {
        LoadedTrainer::Builtin { settings } => {
            let settings = TrainSettings {
                seed: settings.seed.wrapping_add(subset.seed as u64),
                ..settings.clone()
            };
            let (mut learn, mut heldout) = (Vec::new(), Vec::new());
            for p in &subset.pairs {
                let e = TrainExample::from_pair(p, settings.feature_bits, p.corrected);
                if is_heldout(&p.pair_id, HELDOUT_SHARE) {
                    heldout.push(e);
                } else {
                    learn.push(e);
                }
            }
            let model = HashedBtModel::train(learn, heldout, &settings, |_, _| {});
            saved::save(&model_dir, saved::ToSave::Builtin(&model))
                .map_err(|e| e.for_setting("--trainer"))?;
            Some(model.info)
        }
        LoadedTrainer::Encoder {
            dir,
            head,
            features,
        } => {
            let labelled: Vec<(&PreferencePair, bool)> =
                subset.pairs.iter().map(|p| (*p, p.corrected)).collect();
            let settings = HeadSettings {
                seed: head.seed.wrapping_add(subset.seed as u64),
                ..head.clone()
            };
            let trained = train_head(features, &labelled, HELDOUT_SHARE, &settings)
                .map_err(|e| e.for_setting("--trainer"))?;
            saved::save(
                &model_dir,
                saved::ToSave::EncoderHead {
                    head: &trained,
                    encoder: dir,
                    encoder_fingerprint: features.features.fingerprint(),
                },
            )
            .map_err(|e| e.for_setting("--trainer"))?;
            Some(trained.info)
        }
        LoadedTrainer::Command {
            template,
            format,
            file_format,
        } => {
            let data = tmp.join("data");
            write_subset(subset, &tmp, &data, *format, *file_format)?;
            run_command(template, &data, &model_dir, subset, &tmp)?;
            // The subset can be cut again from its set; only the model is kept.
            let _ = std::fs::remove_dir_all(&data);
            None
        }
    };
    let record = TaskRecord {
        set: subset.set.name.label().to_string(),
        fraction: subset.fraction,
        seed: subset.seed,
        pairs: subset.pairs.len() as u64,
        subset_key: format!("{:032x}", subset.subset_key),
        trainer: spec.label(),
        info,
        train_s: started.elapsed().as_secs_f64(),
    };
    let record_path = tmp.join("task.json");
    std::fs::write(
        &record_path,
        serde_json::to_vec_pretty(&record).expect("a record serializes"),
    )
    .map_err(|e| io(&record_path, e))?;
    let dir = entry_dir(cache, model_key);
    std::fs::create_dir_all(dir.parent().expect("entries have a parent"))
        .map_err(|e| io(&dir, e))?;
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::rename(&tmp, &dir).map_err(|e| io(&dir, e))?;
    Ok(Trained {
        model: model_of(spec, &dir),
        dir,
        reused: false,
        record,
    })
}

/// Writes the subset's pairs (in the orientation of their set) as parts in `format`
/// under `data`.
fn write_subset(
    subset: &Subset<'_>,
    tmp: &Path,
    data: &Path,
    format: OutputFormat,
    file_format: OutputFileFormat,
) -> Result<()> {
    let staging_root = tmp.join("write");
    let out = resolve(&staging_root.display().to_string())?;
    let schema = subset.set.schema.with_format(format, file_format);
    let mut writer = PartWriter::new(
        &out,
        synpref_engine::model::Destination::Curated,
        0,
        schema,
        subset.set.extras.clone(),
        subset.set.file_urls.clone(),
        "subset",
    );
    for p in &subset.pairs {
        let mut pair = (*p).clone();
        if pair.corrected {
            // Held in the verdict's orientation when read; written as curate wrote it.
            std::mem::swap(&mut pair.chosen, &mut pair.rejected);
        }
        // The training presets write no reason column; the value is not read.
        writer.push(synpref_operators::routed(pair, Reason::BothRmsAgree, None))?;
    }
    writer.finish()?;
    let parts = staging_root.join(STAGING_DIR).join("curated");
    std::fs::create_dir_all(&parts).map_err(|e| io(&parts, e))?;
    std::fs::rename(&parts, data).map_err(|e| io(data, e))?;
    let _ = std::fs::remove_dir_all(&staging_root);
    Ok(())
}

/// Quotes a path for `sh`.
fn shell_quote(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', r"'\''"))
}

/// Runs the user's training command for one subset; its output goes to `train.log` in
/// the entry. A failure is an error naming the subset, the exit status and the log's
/// last lines.
fn run_command(
    template: &str,
    data: &Path,
    model_dir: &Path,
    subset: &Subset<'_>,
    tmp: &Path,
) -> Result<()> {
    let command = template
        .replace("{data}", &shell_quote(data))
        .replace("{model_dir}", &shell_quote(model_dir));
    let log_path = tmp.join("train.log");
    let log = std::fs::File::create(&log_path).map_err(|e| io(&log_path, e))?;
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(&command)
        .env("SYNPREF_DATA", data)
        .env("SYNPREF_MODEL_DIR", model_dir)
        .env("SYNPREF_SEED", subset.seed.to_string())
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone().map_err(|e| io(&log_path, e))?)
        .stderr(log)
        .status()
        .map_err(|e| Error::setting("--train-command", format!("cannot run sh: {e}")))?;
    let what = format!(
        "the training command for {} fraction {} seed {} ({} pairs)",
        subset.set.name.label(),
        subset.fraction,
        subset.seed,
        subset.pairs.len()
    );
    if !status.success() {
        let text = std::fs::read_to_string(&log_path).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(20).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        return Err(Error::Worker(format!(
            "{what} failed ({status}); `{command}`; its last output:\n{}",
            tail.join("\n")
        )));
    }
    if !model_dir.join("config.json").is_file() {
        return Err(Error::Worker(format!(
            "{what} exited 0 but left no Hugging Face model in {{model_dir}} ({} has no config.json); `{command}`",
            model_dir.display()
        )));
    }
    Ok(())
}
