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
mod feed;
pub mod plan;
pub mod report;
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
    default_score_cache, prepare, prepare_with_gold, CuratePlan, GivenModels, ModelRegistry,
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

    let mut survey = survey::survey(worker, plan)?;
    let material = std::mem::take(&mut survey.material);
    let survey_s = survey.seconds;

    let models = train::train(worker, plan, material, &features)?;
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

    // One run id for every worker of every process: worker 0's.
    let run_id: String = all_gather(worker, &synpref_engine::output::new_run_id())?.swap_remove(0);
    let written = dataflow::curate_pass(worker, plan, survey, scorers, &features, builder, &run_id);
    let written = match written {
        Ok(w) => w,
        Err(e) => {
            agree_on_errors(worker, Err(e))?;
            unreachable!("agree_on_errors returns the local error")
        }
    };
    agree_on_errors(worker, Ok(()))?;
    if worker.index() == 0 {
        plan.bars.curate.finish_and_clear();
    }

    // Model usage: the feature sources are shared by a process's workers, so each
    // process reports once (its first worker).
    let usage = |f: &Option<std::sync::Arc<synpref_operators::models::CachedFeatures>>| {
        f.as_ref()
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
        ),
    )?;
    if worker.index() != 0 {
        return Ok(None);
    }
    let mut files: Vec<WrittenFile> = Vec::new();
    let mut total = SinkStats::default();
    let (mut best_usage, mut gold_usage) = (ModelUsage::default(), ModelUsage::default());
    for (f, s, b, g) in gathered {
        files.extend(f);
        total.merge(&s);
        best_usage.merge(&b);
        gold_usage.merge(&g);
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
    let report = report::build_report(plan, &total, &summary, stages, worker.peers());
    let manifest = report::build_manifest(plan, &summary, &files, &report, &run_id);
    report::commit(plan, &report, &manifest)?;
    Ok(Some(report))
}
