//! The commit step of curate (stage 4): every worker's files, counts and model usage
//! are gathered on worker 0, which builds the report and the manifest (`report`), moves
//! the parts from staging into place, and writes report.json, the dataset card
//! (`card`, README.md) and manifest.json last: its presence means the run committed.

use synpref_engine::collective::all_gather;
use synpref_engine::output::{publish, write_json, WrittenFile};
use synpref_engine::Result;
use synpref_operators::models::{LoadedModel, ModelUsage};
use synpref_operators::near_duplicates::NearDupFigures;
use synpref_operators::write_parts::SinkStats;
use timely::worker::Worker;

use super::card::dataset_card;
use super::checkpoint::ResumeFigures;
use super::dataflow::Written;
use super::plan::CuratePlan;
use super::report::{
    build_manifest, build_report, CurateReport, Manifest, ModelSummary, StageTimes,
};
use super::train::{Features, Models};

/// What the earlier stages of a run hand the commit beside the curate pass's output.
pub struct Run<'a> {
    pub models: &'a Models,
    /// The fingerprints of the best and the gold scorer.
    pub fingerprints: (String, String),
    /// Seconds of the survey (0 when it was resumed).
    pub survey_s: f64,
    pub run_id: &'a str,
    /// The near-duplicate search's figures (`None` with `--no-near-dup`).
    pub near_duplicates: Option<NearDupFigures>,
    /// Gold labels and judge votes that match no valid pool row.
    pub unmatched: super::unmatched::Unmatched,
}

/// Gathers every worker's output on worker 0, which builds the report and the manifest
/// and commits the run (`commit`); worker 0 returns the report, the others `None`.
pub fn gather_and_commit(
    worker: &mut Worker,
    plan: &CuratePlan,
    features: &Features,
    written: Written,
    figures: Option<ResumeFigures>,
    run: Run,
) -> Result<Option<CurateReport>> {
    // Model usage: the feature sources are shared by a process's workers, so each
    // process reports once (its first worker).
    let usage = |m: &LoadedModel| {
        m.features()
            .filter(|_| worker.index() % plan.spec.machine.run.workers == 0)
            .map(|f| f.usage())
            .unwrap_or_default()
    };
    let gathered = all_gather(
        worker,
        &(
            written.files,
            written.stats,
            usage(&features.0),
            usage(&features.1),
            figures,
        ),
    )?;
    if worker.index() != 0 {
        return Ok(None);
    }
    let mut files: Vec<WrittenFile> = Vec::new();
    let mut total = SinkStats::default();
    let (mut best_usage, mut gold_usage) = (ModelUsage::default(), ModelUsage::default());
    let mut resumed: Option<ResumeFigures> = None;
    for (f, s, b, g, r) in gathered {
        files.extend(f);
        total.merge(&s);
        best_usage.merge(&b);
        gold_usage.merge(&g);
        if let Some(r) = r {
            let sum = resumed.get_or_insert_with(|| ResumeFigures {
                rows_resumed: 0,
                rows_read: 0,
                ..r.clone()
            });
            sum.rows_resumed += r.rows_resumed;
            sum.rows_read += r.rows_read;
        }
    }
    files.sort();
    let summary = ModelSummary {
        trained: run.models,
        fingerprints: run.fingerprints,
        usage: (best_usage, gold_usage),
    };
    let stages = StageTimes {
        survey: run.survey_s,
        train: run.models.train_s,
        curate: written.seconds,
    };
    let mut report = build_report(plan, &total, &summary, stages, worker.peers());
    report.resume = resumed;
    report.near_duplicates = run.near_duplicates;
    report.gold_labels_unmatched = run.unmatched.gold_labels;
    report.gold_labels_unmatched_ids = run.unmatched.gold_label_ids;
    report.judge_votes_unmatched = run.unmatched.judge_votes;
    let manifest = build_manifest(plan, &summary, &files, &report, run.run_id);
    commit(plan, &report, &manifest)?;
    Ok(Some(report))
}

/// Commits a run: moves the parts from staging into place, writes the report and the
/// dataset card, then the manifest last (its presence means the run committed).
pub fn commit(plan: &CuratePlan, report: &CurateReport, manifest: &Manifest) -> Result<()> {
    publish(&plan.out, &manifest.outputs)?;
    write_json(&plan.out.child("report.json"), report)?;
    let card = dataset_card(report, manifest, &plan.spec.out);
    plan.out.child("README.md").put(card.into_bytes())?;
    write_json(&plan.out.child("manifest.json"), manifest)
}
