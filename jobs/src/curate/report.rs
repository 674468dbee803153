//! Stage 4 of curate: the typed report (`report.json`, DESIGN §4) and manifest
//! (`manifest.json`, written last: its presence means the run committed), and the
//! console summary of a report.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use synpref_engine::model::{Destination, Reason};
use synpref_engine::output::WrittenFile;
use synpref_engine::report::Quality;
use synpref_engine::store::resolve;
use synpref_engine::{Error, Result};
use synpref_operators::models::builtin::TrainInfo;
use synpref_operators::models::{ModelSpec, ModelUsage};
use synpref_operators::near_duplicates::NearDupFigures;
use synpref_operators::write_parts::{LengthCounts, SinkStats};

use super::plan::CuratePlan;
use super::spec::CurateSpec;
use super::train::{Models, TrainingSummary};

/// Seconds per stage.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StageTimes {
    pub survey: f64,
    pub train: f64,
    pub curate: f64,
}

/// One model as the report describes it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelReport {
    pub spec: ModelSpec,
    pub fingerprint: String,
    /// The model that scores the pool (the gold RM; `null` for a cross-fitted best RM,
    /// whose folds are below, and for models that were not trained).
    pub training: Option<TrainInfo>,
    /// One entry per fold: the best RM's cross-fitted models, or the gold RM's
    /// cross-validation models.
    #[serde(default)]
    pub folds: Vec<TrainInfo>,
    pub scoring: ModelUsage,
}

/// `report.json` of a curate run (DESIGN §4; names of the fixed fields are fixed).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CurateReport {
    pub job: String,
    pub input_rows: u64,
    pub curated_rows: u64,
    pub discarded_rows: u64,
    pub quarantined_rows: u64,
    /// Rows per reason code (every code, zeros included).
    pub reasons: BTreeMap<String, u64>,
    pub workers: usize,
    pub threshold: f64,
    pub elapsed_s: f64,
    pub pairs_per_s: f64,
    pub stages_s: StageTimes,
    pub best_rm: ModelReport,
    pub gold_rm: ModelReport,
    pub gold_labels: usize,
    /// Gold-labelled pair ids (labels without their text) that match no valid pool row:
    /// those labels decide nothing (`curate::unmatched`).
    #[serde(default)]
    pub gold_labels_unmatched: u64,
    /// The first few of them, in the order the labels were read.
    #[serde(default)]
    pub gold_labels_unmatched_ids: Vec<String>,
    /// Pair ids with judge votes that match no valid pool row.
    #[serde(default)]
    pub judge_votes_unmatched: u64,
    pub benchmark_ngrams: usize,
    /// The run measured from its own held-out gold verdicts (`null` for a run whose
    /// models were given, e.g. serve's snapshots, which carry serve's own).
    pub quality: Option<Quality>,
    /// With --truth: share of rows whose label matches the truth, over all input rows
    /// as read, over curated rows as written, and over curated rows no human decided.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub truth_agreement_input: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub truth_agreement_curated: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub truth_agreement_model_curated: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub truth_rows_input: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub truth_rows_curated: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub truth_rows_model_curated: Option<u64>,
    /// What this run took from an interrupted run with the same settings instead of
    /// doing it again, and what it read (curate; absent for serve's snapshots).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume: Option<super::checkpoint::ResumeFigures>,
    /// Per `source` value (`(none)` for rows without one): rows per reason and the
    /// share whose chosen reply is longer than the rejected one, as written (DESIGN
    /// §4), so a user sees where the curated set leans.
    #[serde(default)]
    pub by_source: BTreeMap<String, SourceSummary>,
    /// What the near-duplicate search found and what its band index held and spilled
    /// (absent with `--no-near-dup`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub near_duplicates: Option<NearDupFigures>,
    /// Each reason's count again at the top level (DESIGN §4: "a count per reason").
    #[serde(flatten)]
    pub reason_counts: BTreeMap<String, u64>,
}

/// The key of rows without a `source` in `by_source`.
pub const NO_SOURCE: &str = "(none)";

/// One `source` value's rows, over every destination.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SourceSummary {
    pub rows: u64,
    /// Of the rows with both replies, the share whose chosen reply has more characters
    /// than the rejected one (`null` when no row has both).
    pub chosen_longer_share: Option<f64>,
    /// The same over the source's curated rows, as written.
    pub curated_chosen_longer_share: Option<f64>,
    /// Per reason code with rows.
    pub reasons: BTreeMap<String, ReasonSummary>,
}

/// One (source, reason)'s rows and length bias.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReasonSummary {
    pub rows: u64,
    pub chosen_longer_share: Option<f64>,
}

/// `by_source` of the report, from the summed sink counts.
pub fn source_summaries(
    counts: &BTreeMap<String, BTreeMap<String, LengthCounts>>,
) -> BTreeMap<String, SourceSummary> {
    counts
        .iter()
        .map(|(source, reasons)| {
            let (mut all, mut curated) = (LengthCounts::default(), LengthCounts::default());
            for (reason, c) in reasons {
                all.merge(c);
                if Reason::from_code(reason).map(|r| r.destination()) == Some(Destination::Curated)
                {
                    curated.merge(c);
                }
            }
            let name = if source.is_empty() { NO_SOURCE } else { source };
            let summary = SourceSummary {
                rows: all.rows,
                chosen_longer_share: all.chosen_longer_share(),
                curated_chosen_longer_share: curated.chosen_longer_share(),
                reasons: reasons
                    .iter()
                    .map(|(reason, c)| {
                        (
                            reason.clone(),
                            ReasonSummary {
                                rows: c.rows,
                                chosen_longer_share: c.chosen_longer_share(),
                            },
                        )
                    })
                    .collect(),
            };
            (name.to_string(), summary)
        })
        .collect()
}

/// `manifest.json`: the exact inputs, settings, model fingerprints and output files.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub synpref_version: String,
    pub job: String,
    pub spec: CurateSpec,
    pub inputs: ManifestInputs,
    pub models: ManifestModels,
    pub outputs: Vec<WrittenFile>,
    /// The id in this run's part names (`part-W-S-RUN`), which the dataset card's
    /// patterns name.
    #[serde(default)]
    pub run_id: String,
    pub report: String,
    pub rows: ManifestRows,
    pub committed_unix_s: u64,
}

impl Manifest {
    /// The input plan of the `dest` parts this manifest lists, in the committed output
    /// `from`. Refuses an output whose parts are not those (a part deleted, added or
    /// renamed since it was committed): exit 2 naming the first. A part of another run
    /// (named by a run id other than this manifest's) is left out, not refused: on
    /// object storage serve replaces its snapshot by copying the new version's parts
    /// beside the old ones, the manifest last, and removes the old parts after
    /// `serve::snapshots::GRACE`, so that a reader of the previous manifest still finds
    /// them. Readers of a committed output (export, fractions) read these parts only.
    pub fn plan_parts(
        &self,
        dest: Destination,
        from: &synpref_engine::store::Location,
    ) -> Result<synpref_engine::input::InputPlan> {
        let dir = from.child(dest.dir());
        let prefix = format!("{}/", dest.dir());
        let recorded: std::collections::BTreeSet<&str> = self
            .outputs
            .iter()
            .map(|f| f.path.as_str())
            .filter(|p| p.starts_with(&prefix))
            .collect();
        let mut kept = Vec::new();
        for file in synpref_engine::input::list_pool_files(&dir.url)? {
            let path = file.location.path.as_ref();
            let name = path
                .strip_prefix(from.path.as_ref())
                .unwrap_or(path)
                .trim_start_matches('/')
                .to_string();
            if recorded.contains(name.as_str()) {
                kept.push((name, file));
            } else if !of_another_run(&name, &self.run_id) {
                return Err(Error::bad_file(
                    &file.location.url,
                    "not listed in manifest.json: the output was changed after it was committed",
                ));
            }
        }
        let found: std::collections::BTreeSet<&str> =
            kept.iter().map(|(n, _)| n.as_str()).collect();
        if let Some(missing) = recorded.difference(&found).next() {
            return Err(Error::bad_file(
                &from.child(missing).url,
                "listed in manifest.json but not there: the output was changed after it was committed",
            ));
        }
        synpref_engine::input::plan_files(
            &dir.url,
            kept.into_iter().map(|(_, f)| f).collect(),
            synpref_engine::input::JSONL_SHARD_BYTES,
        )
    }

    /// Reads the manifest of the committed output at `dir` (the value of `flag`): a
    /// setting error naming the flag when there is none or it is not this version's.
    pub fn read_committed(flag: &str, dir: &str) -> Result<Manifest> {
        let loc = resolve(dir)?.child("manifest.json");
        let not_committed = |why: String| {
            Error::setting(
                flag,
                format!("`{dir}` is not a committed synpref output ({why})"),
            )
        };
        if !loc.exists()? {
            return Err(not_committed("no manifest.json".into()));
        }
        let bytes = loc.get()?;
        serde_json::from_slice(&bytes)
            .map_err(|e| not_committed(format!("manifest.json unreadable: {e}")))
    }

    /// Refuses a committed output whose recorded pool is not the pool at `pairs` (the
    /// value of `pairs_flag`): names, sizes and order of the pair files must match.
    pub fn check_pool(&self, flag: &str, dir: &str, pairs_flag: &str, pairs: &str) -> Result<()> {
        let recorded = PoolFingerprint::recorded(self);
        let given = PoolFingerprint::of_input(pairs)?;
        if recorded == given {
            return Ok(());
        }
        Err(Error::setting(
            flag,
            format!(
                "`{dir}` was curated from another pool than {pairs_flag} `{pairs}`: its manifest records {} from `{}`, {pairs_flag} has {}; give the curate output of this pool",
                recorded.describe(),
                self.spec.pairs,
                given.describe()
            ),
        ))
    }
}

/// What identifies a pool without reading its rows: each pair file's name and size, in
/// path order. Two pools with the same fingerprint are, in practice, the same files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolFingerprint(Vec<(String, u64)>);

impl PoolFingerprint {
    /// The pool a manifest records.
    pub fn recorded(manifest: &Manifest) -> PoolFingerprint {
        PoolFingerprint(
            manifest
                .inputs
                .pairs
                .iter()
                .map(|f| (last_segment(&f.url).to_string(), f.bytes))
                .collect(),
        )
    }

    /// The pool at an input URL, listed now.
    pub fn of_input(url: &str) -> Result<PoolFingerprint> {
        let files = synpref_engine::input::list_pool_files(url)?;
        Ok(PoolFingerprint(
            files
                .iter()
                .map(|f| (last_segment(f.location.path.as_ref()).to_string(), f.size))
                .collect(),
        ))
    }

    /// "N files, B bytes" for messages.
    pub fn describe(&self) -> String {
        let bytes: u64 = self.0.iter().map(|(_, b)| b).sum();
        format!("{} files, {bytes} bytes", self.0.len())
    }
}

fn last_segment(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InputFile {
    pub url: String,
    pub bytes: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ManifestInputs {
    pub pairs: Vec<InputFile>,
    pub gold: Vec<String>,
    pub gold_label_records: u64,
    pub judges: Option<String>,
    pub truth: Option<String>,
    pub decontaminate: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ManifestModel {
    pub spec: ModelSpec,
    pub fingerprint: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ManifestModels {
    pub best_rm: ManifestModel,
    pub gold_rm: ManifestModel,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ManifestRows {
    pub input: u64,
    pub curated: u64,
    pub discarded: u64,
    pub quarantined: u64,
}

/// What the models contribute to the report and the manifest.
pub struct ModelSummary<'a> {
    pub trained: &'a Models,
    pub fingerprints: (String, String),
    pub usage: (ModelUsage, ModelUsage),
}

fn share((n, hits): (u64, u64)) -> Option<f64> {
    (n > 0).then(|| hits as f64 / n as f64)
}

fn model_report(
    spec: &ModelSpec,
    fingerprint: &str,
    training: Option<TrainingSummary>,
    usage: ModelUsage,
) -> ModelReport {
    let t = training.unwrap_or_default();
    ModelReport {
        spec: spec.clone(),
        fingerprint: fingerprint.to_string(),
        training: t.model,
        folds: t.folds,
        scoring: usage,
    }
}

/// The report of a run from the summed sink counts.
pub fn build_report(
    plan: &CuratePlan,
    total: &SinkStats,
    models: &ModelSummary,
    stages: StageTimes,
    workers: usize,
) -> CurateReport {
    let count = |d: Destination| -> u64 {
        total
            .rows
            .iter()
            .filter(|(k, _)| Reason::from_code(k).map(|r| r.destination()) == Some(d))
            .map(|(_, v)| v)
            .sum()
    };
    let (curated, discarded, quarantined) = (
        count(Destination::Curated),
        count(Destination::Discarded),
        count(Destination::Quarantine),
    );
    let input_rows = curated + discarded + quarantined;
    let reasons: BTreeMap<String, u64> = Reason::all()
        .into_iter()
        .map(|r| {
            (
                r.code().to_string(),
                total.rows.get(r.code()).copied().unwrap_or(0),
            )
        })
        .collect();
    let elapsed_s = plan.started.elapsed().as_secs_f64();
    let truth = plan.truth.is_some();
    let spec = &plan.spec;
    CurateReport {
        job: "curate".into(),
        input_rows,
        curated_rows: curated,
        discarded_rows: discarded,
        quarantined_rows: quarantined,
        reasons: reasons.clone(),
        workers,
        threshold: spec.threshold,
        elapsed_s,
        pairs_per_s: input_rows as f64 / elapsed_s.max(1e-9),
        stages_s: stages,
        best_rm: model_report(
            &spec.best_rm,
            &models.fingerprints.0,
            models.trained.best.training(),
            models.usage.0.clone(),
        ),
        gold_rm: model_report(
            &spec.gold_rm,
            &models.fingerprints.1,
            models.trained.gold.training(),
            models.usage.1.clone(),
        ),
        gold_labels: plan.gold.labels.len(),
        gold_labels_unmatched: 0,
        gold_labels_unmatched_ids: Vec::new(),
        judge_votes_unmatched: 0,
        benchmark_ngrams: plan.ngrams.len(),
        quality: models.trained.quality.clone(),
        truth_agreement_input: truth.then(|| share(total.truth_input)).flatten(),
        truth_agreement_curated: truth.then(|| share(total.truth_curated)).flatten(),
        truth_agreement_model_curated: truth.then(|| share(total.truth_model_curated)).flatten(),
        truth_rows_input: truth.then_some(total.truth_input.0),
        truth_rows_curated: truth.then_some(total.truth_curated.0),
        truth_rows_model_curated: truth.then_some(total.truth_model_curated.0),
        resume: None,
        by_source: source_summaries(&total.by_source),
        near_duplicates: None,
        reason_counts: reasons,
    }
}

/// The manifest of a committed run.
pub fn build_manifest(
    plan: &CuratePlan,
    models: &ModelSummary,
    files: &[WrittenFile],
    report: &CurateReport,
    run_id: &str,
) -> Manifest {
    let committed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let spec = &plan.spec;
    Manifest {
        synpref_version: env!("CARGO_PKG_VERSION").into(),
        job: "curate".into(),
        spec: spec.clone(),
        inputs: ManifestInputs {
            pairs: plan
                .input
                .files
                .iter()
                .map(|f| InputFile {
                    url: f.location.url.clone(),
                    bytes: f.size,
                })
                .collect(),
            gold: plan.gold.files.clone(),
            gold_label_records: plan.gold.records,
            judges: spec.judges.clone(),
            truth: spec.truth.clone(),
            decontaminate: spec.decontaminate.clone(),
        },
        models: ManifestModels {
            best_rm: ManifestModel {
                spec: spec.best_rm.clone(),
                fingerprint: models.fingerprints.0.clone(),
            },
            gold_rm: ManifestModel {
                spec: spec.gold_rm.clone(),
                fingerprint: models.fingerprints.1.clone(),
            },
        },
        outputs: files.to_vec(),
        run_id: run_id.to_string(),
        report: "report.json".into(),
        rows: ManifestRows {
            input: report.input_rows,
            curated: report.curated_rows,
            discarded: report.discarded_rows,
            quarantined: report.quarantined_rows,
        },
        committed_unix_s: committed,
    }
}

fn pct(x: f64) -> String {
    format!("{:.1}%", 100.0 * x)
}

fn estimate_line(label: &str, e: &synpref_engine::report::Estimate) -> String {
    match (e.value, e.ci95) {
        (Some(v), Some([l, h])) => format!(
            "{label}: {} (95% CI {}–{}, n = {})\n",
            pct(v),
            pct(l),
            pct(h),
            e.n
        ),
        _ => format!("{label}: not measured (no held-out gold verdict)\n"),
    }
}

/// A short human-readable summary of a curate report: counts, the run's
/// self-measurement and every warning.
pub fn summary(report: &CurateReport, out: &str) -> String {
    let mut s = String::new();
    s.push_str(&format!(
        "curated {} of {} pairs ({} discarded, {} quarantined) with {} worker(s) in {:.2} s ({:.0} pairs/s)\n",
        report.curated_rows,
        report.input_rows,
        report.discarded_rows,
        report.quarantined_rows,
        report.workers,
        report.elapsed_s,
        report.pairs_per_s,
    ));
    if let Some(r) = report
        .resume
        .as_ref()
        .filter(|r| r.survey_resumed || r.slices_resumed > 0)
    {
        s.push_str(&format!(
            "resumed an interrupted run: survey and models from its checkpoint, {} of {} slices committed ({} rows not read again, {} read)\n",
            r.slices_resumed, r.slices, r.rows_resumed, r.rows_read
        ));
    }
    s.push_str("rows per reason:\n");
    for (k, n) in &report.reasons {
        if *n > 0 {
            s.push_str(&format!("  {k:<28} {n:>10}\n"));
        }
    }
    if let Some(q) = &report.quality {
        s.push_str("quality, measured on held-out gold verdicts (humans err too):\n");
        s.push_str(&estimate_line(
            &format!(
                "  gold RM accuracy ({}-fold cross-validation)",
                q.gold_rm.folds
            ),
            &q.gold_rm.estimate(),
        ));
        if q.best_rm.n > 0 {
            s.push_str(&estimate_line(
                &format!(
                    "  best RM accuracy on held-out pool labels ({} folds)",
                    q.best_rm.folds
                ),
                &q.best_rm.estimate(),
            ));
        }
        let la = &q.estimated_label_accuracy;
        s.push_str(&estimate_line(
            "  labels agreeing with human verdicts, input",
            &la.input,
        ));
        s.push_str(&estimate_line(
            "  labels agreeing with human verdicts, kept by the models",
            &la.model_curated,
        ));
        for w in &q.warnings {
            s.push_str(&format!("warning: {w}\n"));
        }
    }
    if let (Some(a), Some(b)) = (report.truth_agreement_input, report.truth_agreement_curated) {
        s.push_str(&format!(
            "labels matching the ground truth: {} of the input, {} of the curated set ({:+.1} points)",
            pct(a),
            pct(b),
            100.0 * (b - a)
        ));
        if let Some(m) = report.truth_agreement_model_curated {
            s.push_str(&format!(", {} of the rows the models kept", pct(m)));
        }
        s.push('\n');
    }
    s.push_str(&format!("outputs: {out}/{{curated,discarded,quarantine}}/, {out}/report.json, {out}/README.md (dataset card), {out}/manifest.json\n"));
    s
}

/// Whether the part `name` is named as a curate run names its parts
/// (`…/part-WWWWW-NNNNN-RUNID.ext`, digits and a hexadecimal run id as long as
/// `run_id`) by a run other than `run_id` (never, for an output that records no run id).
fn of_another_run(name: &str, run_id: &str) -> bool {
    let stem = name.rsplit('/').next().unwrap_or(name);
    let stem = stem.split('.').next().unwrap_or(stem);
    let fields: Vec<&str> = stem.split('-').collect();
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    match fields[..] {
        ["part", worker, seq, id] => {
            digits(worker)
                && digits(seq)
                && !run_id.is_empty()
                && id.len() == run_id.len()
                && id.bytes().all(|b| b.is_ascii_hexdigit())
                && id != run_id
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_parts_named_by_another_run_count_as_another_runs() {
        let run = "f7cdce25172e";
        assert!(of_another_run(
            "curated/part-00000-00001-0123456789ab.parquet",
            run
        ));
        assert!(!of_another_run(
            "curated/part-00000-00001-f7cdce25172e.parquet",
            run
        ));
        assert!(!of_another_run("curated/part-extra.parquet", run));
        assert!(!of_another_run(
            "curated/part-00000-00001-extra.parquet",
            run
        ));
        assert!(!of_another_run(
            "curated/part-x-00001-0123456789ab.parquet",
            run
        ));
        assert!(!of_another_run(
            "curated/part-00000-00001-0123456789ab.parquet",
            ""
        ));
    }
}
