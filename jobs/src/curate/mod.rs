//! `curate`: the batch Stage-2 job (DESIGN §1, §2).
//!
//! The spec (`spec::CurateSpec`) is plain data with documented defaults; `plan::prepare`
//! validates it and reads everything small (input plan, gold labels, judge votes,
//! truth, benchmark prompts) into a `CuratePlan` before any worker starts, so that bad
//! input fails fast with exit 2; `run_worker` runs the stages on each timely worker,
//! each in its own module:
//!
//! 1. `survey`: read all shards, validate, index the first row of every content hash
//!    and pair id, collect the models' training material, infer the output schema.
//! 2. `train`: on worker 0, the cross-fitted best RM, the gold RM with its
//!    cross-validation folds, and the run's self-measurement; handed to all workers.
//! 3. `dataflow`: read again; validate → dedup → unique pair ids → decontaminate →
//!    score → consistency rule → Parquet parts, with every routed-away row beside.
//! 4. `report`: counts and files from all workers; worker 0 writes report.json, then
//!    manifest.json last (its presence means the run committed).
//!
//! `explain` prints the graphs of stages 1 and 3 without running them.

pub mod card;
pub mod dataflow;
pub mod explain;
pub mod feed;
pub mod plan;
pub mod report;
pub mod resume;
pub mod spec;
mod survey;
pub mod train;

use synpref_engine::collective::{agree_on_errors, all_gather};
use synpref_engine::output::WrittenFile;
use synpref_engine::Result;
use synpref_operators::models::ModelUsage;
use synpref_operators::validate::ValidateSettings;
use synpref_operators::write_parts::SinkStats;
use timely::worker::Worker;

pub use dataflow::{decide_and_write, select, CurateGraph, Graph, GraphBuilder};
pub use plan::{
    default_score_cache, prepare, prepare_resumable, prepare_with_gold, CuratePlan, GivenModels,
    ModelRegistry,
};
pub use report::{summary, CurateReport, Manifest};
pub use spec::{CurateSpec, MachineSettings};

/// Validation of pool rows under a spec.
pub fn validate_settings(spec: &CurateSpec) -> ValidateSettings {
    ValidateSettings {
        max_pair_bytes: spec.max_pair_bytes,
        allow_empty_replies: false,
    }
}

/// Runs curate on one timely worker. Worker 0 returns the report.
pub fn run_worker(worker: &mut Worker, plan: &CuratePlan) -> Result<Option<CurateReport>> {
    run_worker_with(worker, plan, &CurateGraph)
}

/// `run_worker` with the curate pass's dataflow built by `builder`: a job that extends
/// curate composes its own graph from curate's stages (`select`, `decide_and_write`).
pub fn run_worker_with(
    worker: &mut Worker,
    plan: &CuratePlan,
    builder: &dyn GraphBuilder,
) -> Result<Option<CurateReport>> {
    let spec = &plan.spec;
    let (options, cache) = (&spec.models, spec.score_cache.as_deref());
    let loaded = plan
        .models
        .features("--best-rm", &spec.best_rm, options, cache)
        .and_then(|b| {
            Ok((
                b,
                plan.models
                    .features("--gold-rm", &spec.gold_rm, options, cache)?,
            ))
        });
    agree_on_errors(
        worker,
        loaded
            .as_ref()
            .map(|_| ())
            .map_err(|e| synpref_engine::Error::other("models", e)),
    )?;
    let features: train::Features = loaded?;

    // A resumable run whose checkpoint every worker finds takes the survey and the
    // models from it; otherwise it surveys and trains, and saves them (`resume`).
    let checkpoint = match &plan.resume {
        Some(fp) => resume::load_checkpoint(&plan.out, fp)?,
        None => None,
    };
    let saved_survey = match &checkpoint {
        Some(_) => resume::load_survey(&plan.out, worker.index())?,
        None => None,
    };
    let resuming = checkpoint.is_some()
        && all_gather(worker, &saved_survey.is_some())?
            .into_iter()
            .all(|found| found);
    if plan.resume.is_some() && !resuming {
        // Whatever an interrupted run of another fingerprint (or a torn one) left.
        all_gather(worker, &())?;
        if worker.index() == 0 {
            resume::clear(&plan.out)?;
        }
        all_gather(worker, &())?;
    }
    let (survey, models, run_id) = match (checkpoint, saved_survey) {
        (Some(checkpoint), Some(part)) if resuming => {
            let (schema, extras_fields, first_lines) =
                survey::schema_and_lines(plan, &checkpoint.observations)?;
            let index = |entries| {
                std::rc::Rc::new(std::cell::RefCell::new(
                    synpref_operators::index_first::KeyIndex::from_sealed(entries),
                ))
            };
            tracing::info!(run_id = %checkpoint.run_id, "resuming: survey and models from the checkpoint");
            let survey = survey::Survey {
                content_index: index(part.content_index),
                pair_index: index(part.pair_index),
                material: Default::default(),
                schema,
                extras_fields,
                first_lines,
                observations: checkpoint.observations,
                rows: 0,
                seconds: 0.0,
            };
            (survey, checkpoint.models, checkpoint.run_id)
        }
        _ => {
            let mut survey = survey::survey(worker, plan)?;
            let material = std::mem::take(&mut survey.material);
            let models = train::train(worker, plan, material, &features)?;
            // One run id for every worker of every process: worker 0's.
            let run_id: String =
                all_gather(worker, &synpref_engine::output::new_run_id())?.swap_remove(0);
            if let Some(fingerprint) = &plan.resume {
                let part = resume::SurveyPart {
                    content_index: survey.content_index.borrow().entries().to_vec(),
                    pair_index: survey.pair_index.borrow().entries().to_vec(),
                };
                let saved = resume::save_survey(&plan.out, worker.index(), &part);
                agree_on_errors(worker, saved)?;
                if worker.index() == 0 {
                    resume::save_checkpoint(
                        &plan.out,
                        &resume::Checkpoint {
                            fingerprint: fingerprint.clone(),
                            run_id: run_id.clone(),
                            models: models.clone(),
                            observations: survey.observations.clone(),
                            survey_rows: survey.rows,
                        },
                    )?;
                }
            }
            (survey, models, run_id)
        }
    };
    let survey_s = survey.seconds;
    let survey_rows_read = survey.rows;
    if let Some(q) = &models.quality {
        tracing::info!(
            gold_rm_cv_accuracy = ?q.gold_rm.cv_accuracy,
            best_rm_cv_accuracy = ?q.best_rm.cv_accuracy,
            warnings = q.warnings.len(),
            "models trained"
        );
    }
    let scorers = match plan.given_models.clone() {
        Some(given) => given,
        None => (
            models.best.scorer(&features.0).expect("trained"),
            models.gold.scorer(&features.1).expect("trained"),
        ),
    };
    let fingerprints = (scorers.0.fingerprint(), scorers.1.fingerprint());

    // A resumable run's slices, and where every worker's committed ones end.
    let (progress, mut figures) = match &plan.resume {
        None => (None, None),
        Some(_) => {
            let own = resume::slices_for(plan, worker.index(), worker.peers());
            let committed = resume::committed_slices(&plan.out, worker.index());
            let counts = all_gather(
                worker,
                &(own.len() as u64, if resuming { committed } else { 0 }),
            )?;
            let mut from = counts.iter().map(|c| c.1).min().unwrap_or(0);
            let mut marker = match from {
                0 => None,
                s => Some(resume::load_marker(&plan.out, worker.index(), s - 1)?),
            };
            // The committed parts must all still be staged (a run stopped while its
            // parts were being published is not resumed slice by slice).
            let intact = match &marker {
                Some(m) => resume::parts_staged(&plan.out, m)?,
                None => true,
            };
            if !all_gather(worker, &intact)?.into_iter().all(|ok| ok) {
                tracing::warn!(
                    "committed parts are missing from staging; reading every slice again"
                );
                (from, marker) = (0, None);
            }
            let rows_before = marker.as_ref().map_or(0, |m| m.rows_read);
            let figures = resume::ResumeFigures {
                survey_resumed: resuming,
                slices_resumed: from,
                slices: counts.iter().map(|c| c.0).max().unwrap_or(0),
                rows_resumed: rows_before,
                rows_read: 0,
                survey_rows_read,
            };
            if from > 0 {
                tracing::info!(
                    slices = from,
                    "resuming: committed slices are not read again"
                );
            }
            let progress = dataflow::SliceProgress {
                slices: feed::Slices {
                    shards: own,
                    from,
                    rows_before,
                    rows_through: Default::default(),
                },
                committed: marker,
            };
            (Some(progress), Some(figures))
        }
    };
    let written = dataflow::curate_pass(
        worker, plan, survey, scorers, &features, builder, &run_id, progress,
    );
    let written = match written {
        Ok(w) => w,
        Err(e) => {
            agree_on_errors(worker, Err(e))?;
            unreachable!("agree_on_errors returns the local error")
        }
    };
    if let Some(f) = figures.as_mut() {
        f.rows_read = written.rows_read;
    }
    agree_on_errors(worker, Ok(()))?;
    if worker.index() == 0 {
        plan.bars.curate.finish_and_clear();
    }

    // Model usage: the feature sources are shared by a process's workers, so each
    // process reports once (its first worker).
    let usage = |m: &synpref_operators::models::LoadedModel| {
        m.features()
            .filter(|_| worker.index() % spec.machine.workers == 0)
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
    let mut resumed: Option<resume::ResumeFigures> = None;
    for (f, s, b, g, r) in gathered {
        files.extend(f);
        total.merge(&s);
        best_usage.merge(&b);
        gold_usage.merge(&g);
        if let Some(r) = r {
            let sum = resumed.get_or_insert_with(|| resume::ResumeFigures {
                rows_resumed: 0,
                rows_read: 0,
                ..r.clone()
            });
            sum.rows_resumed += r.rows_resumed;
            sum.rows_read += r.rows_read;
        }
    }
    files.sort();
    let summary = report::ModelSummary {
        trained: &models,
        fingerprints,
        usage: (best_usage, gold_usage),
    };
    let stages = report::StageTimes {
        survey: survey_s,
        train: models.train_s,
        curate: written.seconds,
    };
    let mut report = report::build_report(plan, &total, &summary, stages, worker.peers());
    report.resume = resumed;
    let manifest = report::build_manifest(plan, &summary, &files, &report, &run_id);
    report::commit(plan, &report, &manifest)?;
    Ok(Some(report))
}
