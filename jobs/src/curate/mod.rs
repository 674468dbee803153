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
//!    Stages 1 and 2 are one step, `resume::restore_or_run`: a resumable run
//!    (`prepare_resumable`) takes them from an interrupted run's checkpoint where it
//!    can, and otherwise runs and saves them (`checkpoint` holds what is saved).
//! 3. `dataflow`: read again; validate → dedup → unique pair ids → decontaminate →
//!    score → consistency rule → Parquet parts, with every routed-away row beside.
//! 4. `commit`: counts and files from all workers; worker 0 builds the report
//!    (`report`), writes report.json and the dataset card (`card`), then
//!    manifest.json last (its presence means the run committed).
//!
//! `explain` prints the graphs of stages 1 and 3 without running them. The modules
//! import one way: spec → plan → feed → survey → train → checkpoint → dataflow →
//! resume → report → card → commit → this one (`scripts/check-rings.py`).

pub mod card;
pub mod checkpoint;
pub mod commit;
pub mod dataflow;
pub mod explain;
pub mod feed;
pub mod job;
pub mod plan;
pub mod report;
pub mod resume;
pub mod spec;
mod survey;
pub mod train;
pub mod unmatched;

use synpref_engine::collective::agree_on_errors;
use synpref_engine::Result;
use timely::worker::Worker;

pub use dataflow::{decide_and_write, select, CurateGraph, Graph, GraphBuilder};
pub use plan::{
    default_score_cache, prepare, prepare_with_gold, CuratePlan, GivenModels, ModelRegistry,
};
pub use report::{summary, CurateReport, Manifest};
pub use resume::prepare_resumable;
pub use spec::{validate_settings, CurateSpec, MachineSettings};
pub use survey::Selection;

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
    let features = load_features(worker, plan)?;
    // Survey and training, from an interrupted run's checkpoint or run (`resume`).
    let stages = resume::restore_or_run(worker, plan, &features)?;
    let unmatched = unmatched::find(worker, plan, &stages.survey.selection.pair_index)?;
    if worker.index() == 0 {
        if let Some(w) = unmatched::warning(&unmatched, "curate") {
            eprintln!("{w}");
        }
    }
    let scorers = match plan.given_models.clone() {
        Some(given) => given,
        None => (
            stages.models.best.scorer(&features.0).expect("trained"),
            stages.models.gold.scorer(&features.1).expect("trained"),
        ),
    };
    let fingerprints = (scorers.0.fingerprint(), scorers.1.fingerprint());
    let survey_s = stages.survey.seconds;
    let near_duplicates = plan
        .spec
        .near_dup
        .enabled
        .then(|| stages.survey.selection.near.figures(plan.memory_budget));
    let written = dataflow::curate_pass(
        worker,
        plan,
        stages.survey,
        scorers,
        &features,
        builder,
        &stages.run_id,
        stages.progress,
    );
    let written = match written {
        Ok(w) => w,
        Err(e) => {
            agree_on_errors(worker, Err(e))?;
            unreachable!("agree_on_errors returns the local error")
        }
    };
    let mut figures = stages.figures;
    if let Some(f) = figures.as_mut() {
        f.rows_read = written.rows_read;
    }
    agree_on_errors(worker, Ok(()))?;
    if worker.index() == 0 {
        plan.bars.curate.finish_and_clear();
    }
    let run = commit::Run {
        models: &stages.models,
        fingerprints,
        survey_s,
        run_id: &stages.run_id,
        near_duplicates,
        unmatched,
    };
    commit::gather_and_commit(worker, plan, &features, written, figures, run)
}

/// The transformer feature sources of both models, loaded (or found in the plan's
/// registry) on every worker; a failure on any worker fails them all.
fn load_features(worker: &mut Worker, plan: &CuratePlan) -> Result<train::Features> {
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
    loaded
}
