//! Stage 3 of curate: the curate dataflow, read again from the shards:
//! validate → dedup → unique pair ids → decontaminate → score → consistency rule →
//! Parquet parts, with every routed-away row written beside the kept ones.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use synpref_engine::extras::ExtrasCodec;
use synpref_engine::input::RawRecord;
use synpref_engine::model::Destination;
use synpref_engine::model::PreferencePair;
use synpref_engine::output::{OutputRow, OutputSchema};
use synpref_engine::output::{PartWriter, WrittenFile};
use synpref_engine::{Error, Result};
use synpref_operators::consistency_rule::{ConsistencyRule, RuleInputs};
use synpref_operators::decontaminate::Decontaminate;
use synpref_operators::decontaminate::NgramIndex;
use synpref_operators::dedup::Dedup;
use synpref_operators::models::RewardModel;
use synpref_operators::near_duplicates::RouteNearDuplicates;
use synpref_operators::score::ScoredPair;
use synpref_operators::score::{ModelFailure, Score};
use synpref_operators::unique_pair_ids::UniquePairIds;
use synpref_operators::validate::Validate;
use synpref_operators::write_parts::{OutputSinks, SinkStats, SliceCommits, WriteParts};
use synpref_operators::Rows;
use timely::dataflow::operators::vec::Input;
use timely::dataflow::operators::{Concatenate, Probe};
use timely::dataflow::{InputHandleVec, ProbeHandle};
use timely::worker::Worker;

use super::checkpoint::{save_marker, SliceMarker};
use super::feed::{feed, Slices};
use super::plan::CuratePlan;
use super::survey::{Selection, Survey};
use super::train::Features;

/// What one worker's curate pass wrote and counted.
pub struct Written {
    pub files: Vec<WrittenFile>,
    pub stats: SinkStats,
    pub seconds: f64,
    /// Input rows this pass read (not those of slices an earlier run committed).
    pub rows_read: u64,
}

/// A resumable run's curate pass on one worker: its slices, and the last slice an
/// interrupted run committed on this worker (its parts and counts are kept).
pub struct SliceProgress {
    pub slices: Slices,
    pub committed: Option<SliceMarker>,
}

/// Runs the curate dataflow on one worker with the given scorers.
#[allow(clippy::too_many_arguments)]
pub fn curate_pass(
    worker: &mut Worker,
    plan: &CuratePlan,
    survey: Survey,
    scorers: (Arc<dyn RewardModel>, Arc<dyn RewardModel>),
    features: &Features,
    builder: &dyn GraphBuilder,
    run_id: &str,
    progress: Option<SliceProgress>,
) -> Result<Written> {
    let spec = &plan.spec;
    let t = std::time::Instant::now();
    let Survey {
        selection,
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
                    run_id,
                ),
            )
        })
        .collect();
    let mut sinks = OutputSinks::new(writers, plan.truth.clone());
    let slices = match progress {
        None => Slices::whole(plan, worker),
        Some(SliceProgress { slices, committed }) => {
            if let Some(marker) = committed {
                for (dest, writer) in sinks.writers.iter_mut() {
                    let prefix = format!("{}/", dest.dir());
                    let files = marker
                        .files
                        .iter()
                        .filter(|f| f.path.starts_with(&prefix))
                        .cloned()
                        .collect();
                    writer.as_mut().expect("open").resume_after(files);
                }
                sinks.stats = marker.stats;
            }
            let (out, index, through) = (
                plan.out.clone(),
                worker.index(),
                slices.rows_through.clone(),
            );
            sinks.slices = Some(SliceCommits {
                next: slices.from,
                commit: Box::new(move |slice, files, stats| {
                    let through = through.borrow();
                    let rows_read = through
                        .get(slice as usize)
                        .or(through.last())
                        .copied()
                        .unwrap_or(0);
                    save_marker(
                        &out,
                        &SliceMarker {
                            worker: index,
                            slice,
                            files,
                            stats: stats.clone(),
                            rows_read,
                        },
                    )
                }),
            });
            slices
        }
    };
    let sinks = Rc::new(RefCell::new(sinks));
    let (best, gold) = scorers;
    let failure: ModelFailure = Rc::new(RefCell::new(None));
    let rule = Arc::new(RuleInputs {
        settings: spec.rule(),
        gold: plan.gold.clone(),
        judges: plan.judges.clone(),
    });
    let graph = Graph {
        selection: selection.clone(),
        sinks: sinks.clone(),
        scorers: (best, gold),
        failure: failure.clone(),
        rule,
        schema: schema.clone(),
        extras: extras.clone(),
        file_urls: file_urls.clone(),
    };
    let (input, probe, dataflow) = builder.build(worker, plan, graph);
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
        &slices,
    );
    let rows_read = *fed.as_ref().unwrap_or(&0);
    let model_failed = failure.borrow_mut().take();
    let flushed = [&features.0, &features.1]
        .into_iter()
        .filter_map(|m| m.features())
        .try_for_each(|f| f.flush())
        .map_err(|e| e.for_setting("--score-cache"));
    let finished = fed
        .and_then(|_| match model_failed {
            Some(e) => Err(Error::other("scoring", e)),
            None => Ok(()),
        })
        .and_then(|_| flushed)
        .and_then(|_| sinks.borrow_mut().finish());
    drop(selection);
    let (files, stats) = finished?;
    Ok(Written {
        files,
        stats,
        seconds: t.elapsed().as_secs_f64(),
        rows_read,
    })
}

/// What a curate dataflow is built from on one worker: the survey's selection, the
/// models, the sinks, the rule, and the output schema the survey found.
pub struct Graph {
    pub selection: Selection,
    pub sinks: Rc<RefCell<OutputSinks>>,
    pub scorers: (Arc<dyn RewardModel>, Arc<dyn RewardModel>),
    pub failure: ModelFailure,
    pub rule: Arc<RuleInputs>,
    pub schema: OutputSchema,
    pub extras: Arc<ExtrasCodec>,
    pub file_urls: Arc<Vec<String>>,
}

/// Builds the curate pass's dataflow on a worker: its input, its probe and its index.
/// Curate's own is `CurateGraph`; a job that extends curate (serve) brings its own
/// builder, composed from the same stages (`select`, `decide_and_write`) with its
/// operators between them.
pub trait GraphBuilder {
    fn build(
        &self,
        worker: &mut Worker,
        plan: &CuratePlan,
        graph: Graph,
    ) -> (InputHandleVec<u64, RawRecord>, ProbeHandle<u64>, usize);
}

/// Curate's dataflow: validate → `select` → score → `decide_and_write`.
pub struct CurateGraph;

impl GraphBuilder for CurateGraph {
    fn build(
        &self,
        worker: &mut Worker,
        plan: &CuratePlan,
        g: Graph,
    ) -> (InputHandleVec<u64, RawRecord>, ProbeHandle<u64>, usize) {
        let validate_settings = super::spec::validate_settings(&plan.spec);
        let dataflow = worker.next_dataflow_index();
        let ngrams = plan.ngrams.clone();
        let (input, probe) = worker.dataflow_named::<u64, _, _>("Curate", move |scope| {
            let (input, raw) = scope.new_input::<RawRecord>();
            let (valid, invalid) = raw.validate(validate_settings);
            let (clean, routed) = select(valid, invalid, g.selection, ngrams);
            let scored = clean.score(g.scorers.0, g.scorers.1, g.failure);
            let probe = decide_and_write(scored, routed, g.rule, g.sinks);
            (input, probe)
        });
        (input, probe, dataflow)
    }
}

/// Stage: dedup (first row of each comparison, conflicting labels), near-duplicates,
/// unique pair ids,
/// decontamination. Returns the clean pairs and every routed-away stream, `invalid`
/// first.
pub fn select<'scope>(
    valid: Rows<'scope, PreferencePair>,
    invalid: Rows<'scope, OutputRow>,
    selection: Selection,
    ngrams: Arc<NgramIndex>,
) -> (Rows<'scope, PreferencePair>, Vec<Rows<'scope, OutputRow>>) {
    let (unique, duplicates) = valid.dedup(selection.content_index, selection.deciders);
    let (unique, near_duplicates) = unique.near_duplicates(selection.near);
    let (unique, reused_ids) = unique.unique_pair_ids(selection.pair_index);
    let (clean, contaminated) = unique.decontaminate(ngrams);
    (
        clean,
        vec![
            invalid,
            duplicates,
            near_duplicates,
            reused_ids,
            contaminated,
        ],
    )
}

/// Stage: the consistency rule on the scored pairs, and every row, routed or decided,
/// into the sinks. Returns the probe of everything written.
pub fn decide_and_write<'scope>(
    scored: Rows<'scope, ScoredPair>,
    mut routed: Vec<Rows<'scope, OutputRow>>,
    rule: Arc<RuleInputs>,
    sinks: Rc<RefCell<OutputSinks>>,
) -> ProbeHandle<u64> {
    let scope = scored.scope();
    routed.push(scored.consistency_rule(rule));
    let (probe, all) = scope.concatenate(routed).probe();
    all.write_parts(sinks);
    probe
}
