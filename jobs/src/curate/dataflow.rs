//! Stage 3 of curate: the curate dataflow, read again from the shards:
//! validate → dedup → unique pair ids → decontaminate → score → consistency rule →
//! Parquet parts, with every routed-away row written beside the kept ones.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use synpref_engine::extras::ExtrasCodec;
use synpref_engine::input::RawRecord;
use synpref_engine::model::Destination;
use synpref_engine::output::{PartWriter, WrittenFile};
use synpref_engine::{Error, Result};
use synpref_operators::consistency_rule::{ConsistencyRule, RuleInputs, RuleSettings};
use synpref_operators::decontaminate::Decontaminate;
use synpref_operators::dedup::Dedup;
use synpref_operators::models::RewardModel;
use synpref_operators::score::{ModelFailure, Score};
use synpref_operators::unique_pair_ids::UniquePairIds;
use synpref_operators::validate::Validate;
use synpref_operators::write_parts::{OutputSinks, SinkStats, WriteParts};
use timely::dataflow::operators::vec::Input;
use timely::dataflow::operators::{Concatenate, Inspect, Probe};
use synpref_operators::index_first::FirstIndex;
use timely::dataflow::{InputHandleVec, ProbeHandle};
use timely::worker::Worker;

use super::feed::feed;
use super::plan::CuratePlan;
use super::survey::Survey;
use super::train::Features;

/// What one worker's curate pass wrote and counted.
pub struct Written {
    pub files: Vec<WrittenFile>,
    pub stats: SinkStats,
    pub seconds: f64,
}

/// Runs the curate dataflow on one worker with the given scorers.
pub fn curate_pass(
    worker: &mut Worker,
    plan: &CuratePlan,
    survey: Survey,
    scorers: (Arc<dyn RewardModel>, Arc<dyn RewardModel>),
    features: &Features,
) -> Result<Written> {
    let spec = &plan.spec;
    let t = std::time::Instant::now();
    let Survey {
        content_index,
        pair_index,
        schema,
        extras_fields,
        first_lines,
        ..
    } = survey;
    let extras = Arc::new(ExtrasCodec::new(extras_fields)?);
    let file_urls: Arc<Vec<String>> = Arc::new(
        plan.input
            .files
            .iter()
            .map(|f| f.location.url.clone())
            .collect(),
    );
    let writers = Destination::ALL
        .iter()
        .map(|d| {
            (
                *d,
                PartWriter::new(
                    &plan.out,
                    *d,
                    worker.index(),
                    schema.clone(),
                    extras.clone(),
                    file_urls.clone(),
                ),
            )
        })
        .collect();
    if let Some(tap) = &plan.hooks.tap {
        tap.schema(&schema, &extras, &file_urls);
    }
    let sinks = Rc::new(RefCell::new(OutputSinks::new(writers, plan.truth.clone())));
    let (best, gold) = scorers;
    let failure: ModelFailure = Rc::new(RefCell::new(None));
    let rule = Arc::new(RuleInputs {
        settings: RuleSettings {
            threshold: spec.threshold,
            emit_flipped: spec.emit_flipped,
        },
        gold: plan.gold.clone(),
        judges: plan.judges.clone(),
    });
    let graph = Graph {
        content_index: content_index.clone(),
        pair_index: pair_index.clone(),
        sinks: sinks.clone(),
        scorers: (best, gold),
        failure: failure.clone(),
        rule,
    };
    let (input, probe, dataflow) = build(worker, plan, graph);
    let fed = feed(
        worker,
        dataflow,
        plan,
        input,
        &probe,
        Some(&extras),
        None,
        &first_lines,
        &plan.bars.curate,
    );
    let model_failed = failure.borrow_mut().take();
    let flushed = [&features.0, &features.1]
        .into_iter()
        .flatten()
        .try_for_each(|f| f.flush())
        .map_err(|e| e.for_setting("--score-cache"));
    let finished = fed
        .and_then(|_| match model_failed {
            Some(e) => Err(Error::other("scoring", e)),
            None => Ok(()),
        })
        .and_then(|_| flushed)
        .and_then(|_| sinks.borrow_mut().finish());
    drop(content_index);
    drop(pair_index);
    let (files, stats) = finished?;
    Ok(Written {
        files,
        stats,
        seconds: t.elapsed().as_secs_f64(),
    })
}

/// What the curate dataflow is built from on one worker.
pub struct Graph {
    pub content_index: FirstIndex,
    pub pair_index: FirstIndex,
    pub sinks: Rc<RefCell<OutputSinks>>,
    pub scorers: (Arc<dyn RewardModel>, Arc<dyn RewardModel>),
    pub failure: ModelFailure,
    pub rule: Arc<RuleInputs>,
}

/// Builds the curate dataflow on this worker: its input, its probe and its index.
pub fn build(
    worker: &mut Worker,
    plan: &CuratePlan,
    g: Graph,
) -> (InputHandleVec<u64, RawRecord>, ProbeHandle<u64>, usize) {
    let validate_settings = super::validate_settings(&plan.spec);
    let dataflow = worker.next_dataflow_index();
    let Graph {
        content_index: ci,
        pair_index: pi,
        sinks,
        scorers: (best, gold),
        failure,
        rule,
    } = g;
    let ngrams = plan.ngrams.clone();
    let tap = plan.hooks.tap.clone();
    let index = worker.index();
    let (input, probe) = worker.dataflow_named::<u64, _, _>("Curate", move |scope| {
        let (input, raw) = scope.new_input::<RawRecord>();
        let (mut valid, invalid) = raw.validate(validate_settings);
        if let Some(tap) = tap.clone() {
            valid = valid.inspect(move |p| tap.valid(index, p));
        }
        let (unique, duplicates) = valid.dedup(ci);
        let (unique, reused_ids) = unique.unique_pair_ids(pi);
        let (clean, contaminated) = unique.decontaminate(ngrams);
        let mut scored = clean.score(best, gold, failure);
        if let Some(tap) = tap {
            scored = scored.inspect(move |s| tap.scored(index, s));
        }
        let decided = scored.consistency_rule(rule);
        let all = scope.concatenate(vec![invalid, duplicates, reused_ids, contaminated, decided]);
        let (probe, all) = all.probe();
        all.write_parts(sinks);
        (input, probe)
    });
    (input, probe, dataflow)
}
