//! The resume step of curate, "restore or run": a resumable run (`prepare_resumable`)
//! whose checkpoint every worker finds takes the survey and the models from it and
//! reads only the slices no earlier run committed; any other run surveys and trains
//! (stages 1 and 2), and a resumable one saves what it surveyed and trained for a
//! restart. `run_worker_with` calls `restore_or_run` once, between loading the model
//! features and the curate pass. What is saved, and where, is `checkpoint`'s.

use std::cell::RefCell;
use std::rc::Rc;

use synpref_engine::collective::{agree_on_errors, all_gather};
use synpref_engine::side::GoldLabels;
use synpref_engine::Result;
use synpref_operators::conflict_deciders::ConflictDeciders;
use synpref_operators::index_first::KeyIndex;
use timely::worker::Worker;

use super::checkpoint::{self, Checkpoint, ResumeFigures, SurveyPart};
use super::dataflow::SliceProgress;
use super::feed::Slices;
use super::plan::{prepare_with_gold, CuratePlan, ModelRegistry};
use super::spec::CurateSpec;
use super::survey::{self, Selection, Survey};
use super::train::{self, Features, Models};

/// `prepare` for a curate run that commits its progress as it goes (`resume`) on
/// `total_workers` workers over all processes: the leader keeps an interrupted run's
/// staged progress when its fingerprint is this run's, and clears everything else.
pub fn prepare_resumable(
    spec: CurateSpec,
    leader: bool,
    total_workers: usize,
) -> Result<CuratePlan> {
    spec.validate()?;
    let gold = GoldLabels::read(&spec.gold)?;
    // Not as leader: what to clear depends on the fingerprint, known once planned.
    let mut plan = prepare_with_gold(spec, gold, false, None, ModelRegistry::default())?;
    let fingerprint = checkpoint::fingerprint(&plan, total_workers);
    if leader {
        let keep = checkpoint::load_checkpoint(&plan.out, &fingerprint)?.is_some();
        if keep {
            synpref_engine::output::clear_committed(&plan.out)?;
        } else {
            synpref_engine::output::clear_output(&plan.out)?;
        }
    }
    plan.resume = Some(fingerprint);
    Ok(plan)
}

/// What the first stages hand the curate pass, restored from a checkpoint or run.
pub struct Stages {
    pub survey: Survey,
    pub models: Models,
    /// One run id for every worker of every process.
    pub run_id: String,
    /// A resumable run's slices on this worker (`None`: one pass over its shards).
    pub progress: Option<SliceProgress>,
    /// What this worker resumed, for the report (`None`: the run is not resumable).
    pub figures: Option<ResumeFigures>,
}

/// The survey and the models, from the checkpoint of an interrupted run with this
/// run's fingerprint where every worker finds it, else surveyed and trained (and
/// saved, in a resumable run); then a resumable run's slices and where every worker's
/// committed ones end.
pub fn restore_or_run(
    worker: &mut Worker,
    plan: &CuratePlan,
    features: &Features,
) -> Result<Stages> {
    let (survey, models, run_id, resuming) = survey_and_models(worker, plan, features)?;
    if let Some(q) = &models.quality {
        tracing::info!(
            gold_rm_cv_accuracy = ?q.gold_rm.cv_accuracy,
            best_rm_cv_accuracy = ?q.best_rm.cv_accuracy,
            warnings = q.warnings.len(),
            "models trained"
        );
    }
    let (progress, figures) = match &plan.resume {
        None => (None, None),
        Some(_) => {
            let (progress, figures) = slice_progress(worker, plan, resuming, survey.rows)?;
            (Some(progress), Some(figures))
        }
    };
    Ok(Stages {
        survey,
        models,
        run_id,
        progress,
        figures,
    })
}

/// Stages 1 and 2, restored or run: the survey, the models, the run id and whether
/// they came from a checkpoint.
fn survey_and_models(
    worker: &mut Worker,
    plan: &CuratePlan,
    features: &Features,
) -> Result<(Survey, Models, String, bool)> {
    let checkpoint = match &plan.resume {
        Some(fp) => checkpoint::load_checkpoint(&plan.out, fp)?,
        None => None,
    };
    let saved_survey = match &checkpoint {
        Some(_) => checkpoint::load_survey(&plan.out, worker.index())?,
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
            checkpoint::clear(&plan.out)?;
        }
        all_gather(worker, &())?;
    }
    match (checkpoint, saved_survey) {
        (Some(checkpoint), Some(part)) if resuming => {
            let (survey, models, run_id) = restored(plan, checkpoint, part)?;
            Ok((survey, models, run_id, true))
        }
        _ => {
            let (survey, models, run_id) = survey_and_train(worker, plan, features)?;
            Ok((survey, models, run_id, false))
        }
    }
}

/// Stages 1 and 2 restored: the survey as the checkpoint and this worker's saved
/// indexes give it back, and the checkpoint's models and run id.
fn restored(
    plan: &CuratePlan,
    checkpoint: Checkpoint,
    part: SurveyPart,
) -> Result<(Survey, Models, String)> {
    let (schema, extras_fields, first_lines) =
        survey::schema_and_lines(plan, &checkpoint.observations)?;
    let index = |entries| Rc::new(RefCell::new(KeyIndex::from_sealed(entries)));
    tracing::info!(run_id = %checkpoint.run_id, "resuming: survey and models from the checkpoint");
    let survey = Survey {
        selection: Selection {
            deciders: Rc::new(ConflictDeciders::from_rows(
                part.deciders,
                part.adopted_labels,
            )),
            near: Rc::new(part.near),
            content_index: index(part.content_index),
            pair_index: index(part.pair_index),
        },
        material: Default::default(),
        schema,
        extras_fields,
        first_lines,
        observations: checkpoint.observations,
        rows: 0,
        seconds: 0.0,
    };
    Ok((survey, checkpoint.models, checkpoint.run_id))
}

/// Stages 1 and 2 run: the survey and the training, then (in a resumable run) every
/// worker's survey indexes and worker 0's checkpoint saved.
fn survey_and_train(
    worker: &mut Worker,
    plan: &CuratePlan,
    features: &Features,
) -> Result<(Survey, Models, String)> {
    let mut survey = survey::survey(worker, plan)?;
    let material = std::mem::take(&mut survey.material);
    let models = train::train(worker, plan, material, features)?;
    // One run id for every worker of every process: worker 0's.
    let run_id: String = all_gather(worker, &synpref_engine::output::new_run_id())?.swap_remove(0);
    if let Some(fingerprint) = &plan.resume {
        let part = SurveyPart {
            content_index: survey.selection.content_index.borrow().entries().to_vec(),
            pair_index: survey.selection.pair_index.borrow().entries().to_vec(),
            deciders: survey.selection.deciders.rows(),
            adopted_labels: survey.selection.deciders.adopted_rows(),
            near: (*survey.selection.near).clone(),
        };
        let saved = checkpoint::save_survey(&plan.out, worker.index(), &part);
        agree_on_errors(worker, saved)?;
        if worker.index() == 0 {
            checkpoint::save_checkpoint(
                &plan.out,
                &Checkpoint {
                    fingerprint: fingerprint.clone(),
                    run_id: run_id.clone(),
                    models: models.clone(),
                    observations: survey.observations.clone(),
                    survey_rows: survey.rows,
                },
            )?;
        }
    }
    Ok((survey, models, run_id))
}

/// A resumable run's slices on this worker, from the first slice that not every worker
/// committed (0 when the survey was not resumed), and the figures of what it resumed.
fn slice_progress(
    worker: &mut Worker,
    plan: &CuratePlan,
    resuming: bool,
    survey_rows_read: u64,
) -> Result<(SliceProgress, ResumeFigures)> {
    let own = checkpoint::slices_for(plan, worker.index(), worker.peers());
    let committed = checkpoint::committed_slices(&plan.out, worker.index());
    let counts = all_gather(
        worker,
        &(own.len() as u64, if resuming { committed } else { 0 }),
    )?;
    let mut from = counts.iter().map(|c| c.1).min().unwrap_or(0);
    let mut marker = match from {
        0 => None,
        s => Some(checkpoint::load_marker(&plan.out, worker.index(), s - 1)?),
    };
    // The committed parts must all still be staged (a run stopped while its parts were
    // being published is not resumed slice by slice).
    let intact = match &marker {
        Some(m) => checkpoint::parts_staged(&plan.out, m)?,
        None => true,
    };
    if !all_gather(worker, &intact)?.into_iter().all(|ok| ok) {
        tracing::warn!("committed parts are missing from staging; reading every slice again");
        (from, marker) = (0, None);
    }
    let rows_before = marker.as_ref().map_or(0, |m| m.rows_read);
    let figures = ResumeFigures {
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
    let progress = SliceProgress {
        slices: Slices {
            shards: own,
            from,
            rows_before,
            rows_through: Default::default(),
        },
        committed: marker,
    };
    Ok((progress, figures))
}
