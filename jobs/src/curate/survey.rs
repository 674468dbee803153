//! Stage 1 of curate, the survey: read every shard once, validate, index the first row
//! of every content hash and pair id (for dedup and unique pair ids in the second
//! pass), collect the training material of the models on worker 0's side of the
//! barrier (a deterministic sample of the pool for the best RM, the gold-labelled pairs
//! for the gold RM and for the run's self-measurement), and infer the output schema.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use arrow::datatypes::Field;
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use synpref_engine::collective::{agree_on_errors, all_gather};
use synpref_engine::hashing::{content_key, unit_interval};
use synpref_engine::input::{JsonlObservation, RawRecord};
use synpref_engine::model::{PreferencePair, RowKey, Verdict};
use synpref_engine::output::OutputSchema;
use synpref_engine::schema::infer_output_schema;
use synpref_engine::Result;
use synpref_operators::collect_examples::CollectExamples;
use synpref_operators::index_first::{FirstIndex, IndexFirst, KeyIndex};
use synpref_operators::models::builtin::TrainExample;
use synpref_operators::models::ModelSpec;
use synpref_operators::training::gold::{pool_label_swap, pool_trained_keys};
use synpref_operators::validate::Validate;
use timely::dataflow::operators::vec::{Input, Map, Partition};
use timely::dataflow::operators::Probe;
use timely::dataflow::{InputHandleVec, ProbeHandle};
use timely::worker::Worker;

use super::feed::feed;
use super::plan::CuratePlan;

/// Salt of the best RM's deterministic pool sample (any fixed value).
const SALT_SAMPLE: u64 = 0x5a17_0001;

/// One fact of a pair, on its way to the one operator that consumes its kind.
#[derive(Clone, Debug)]
enum Fact {
    Content((u64, RowKey)),
    Pair((u64, RowKey)),
    Best(TrainExample),
    Gold((u64, RowKey, TrainExample)),
    BestPair((PreferencePair, bool)),
    GoldPair((PreferencePair, bool)),
    VerdictKey((u64, RowKey, bool, u64, bool)),
    VerdictPair((u64, RowKey, PreferencePair)),
}

impl Fact {
    const KINDS: u64 = 8;

    /// The stream of this kind, in the order the survey graph consumes them.
    fn kind(&self) -> u64 {
        match self {
            Fact::Content(_) => 0,
            Fact::Pair(_) => 1,
            Fact::Best(_) => 2,
            Fact::Gold(_) => 3,
            Fact::BestPair(_) => 4,
            Fact::GoldPair(_) => 5,
            Fact::VerdictKey(_) => 6,
            Fact::VerdictPair(_) => 7,
        }
    }
}

/// What the survey learns on one worker and shares with the others.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct SurveyResult {
    rows: u64,
    observations: Vec<JsonlObservation>,
}

/// Training material gathered on one worker (worker 0 trains on everyone's).
#[derive(Default)]
pub struct Material {
    pub best_examples: Vec<TrainExample>,
    pub best_pairs: Vec<(PreferencePair, bool)>,
    pub gold_examples: Vec<(u64, RowKey, TrainExample)>,
    pub gold_pairs: Vec<(PreferencePair, bool)>,
    pub verdict_pairs: Vec<(u64, RowKey, PreferencePair)>,
    /// (pair key, row, reaches the rule): clean and the first row of its content.
    /// (pair key, row, clean, recorded correction) of each decisive verdict's pool row.
    pub verdict_keys: Vec<(u64, RowKey, bool, bool)>,
}

/// What the survey hands to the later stages.
pub struct Survey {
    pub content_index: FirstIndex,
    pub pair_index: FirstIndex,
    pub material: Material,
    pub schema: OutputSchema,
    pub extras_fields: Vec<Field>,
    /// Line numbers where each JSONL byte range starts, for quarantine rows.
    pub first_lines: FxHashMap<(usize, u64), u64>,
    /// Every worker's JSONL observations (what the schema and `first_lines` come from).
    pub observations: Vec<JsonlObservation>,
    /// Rows the survey read, over all workers.
    pub rows: u64,
    pub seconds: f64,
}

/// The output schema and the first line of each JSONL byte range, from every worker's
/// JSONL observations (a resumed run computes them again from its checkpoint).
pub fn schema_and_lines(
    plan: &CuratePlan,
    observations: &[JsonlObservation],
) -> Result<(OutputSchema, Vec<Field>, FxHashMap<(usize, u64), u64>)> {
    let (schema, extras_fields) = infer_output_schema(&plan.input, observations)?;
    let mut schema = schema.with_format(plan.spec.format, plan.spec.file_format());
    schema.matched_ngram = !plan.spec.decontaminate.is_empty();
    let mut ranges: Vec<(usize, u64, u64)> = observations
        .iter()
        .map(|o| (o.file, o.start, o.line_count))
        .collect();
    ranges.sort();
    let mut first_lines: FxHashMap<(usize, u64), u64> = FxHashMap::default();
    let mut running = (usize::MAX, 0u64);
    for (file, start, count) in ranges {
        if running.0 != file {
            running = (file, 0);
        }
        first_lines.insert((file, start), running.1);
        running.1 += count;
    }
    Ok((schema, extras_fields, first_lines))
}

/// Where the survey dataflow leaves what it collects on this worker.
pub struct Collectors {
    pub content_index: FirstIndex,
    pub pair_index: FirstIndex,
    best_examples: Rc<RefCell<Vec<TrainExample>>>,
    gold_examples: Rc<RefCell<Vec<(u64, RowKey, TrainExample)>>>,
    best_pairs: Rc<RefCell<Vec<(PreferencePair, bool)>>>,
    gold_pairs: Rc<RefCell<Vec<(PreferencePair, bool)>>>,
    verdict_pairs: Rc<RefCell<Vec<(u64, RowKey, PreferencePair)>>>,
    verdict_keys: Rc<RefCell<Vec<(u64, RowKey, bool, u64, bool)>>>,
}

impl Collectors {
    pub fn new() -> Self {
        Collectors {
            content_index: Rc::new(RefCell::new(KeyIndex::default())),
            pair_index: Rc::new(RefCell::new(KeyIndex::default())),
            best_examples: Default::default(),
            gold_examples: Default::default(),
            best_pairs: Default::default(),
            gold_pairs: Default::default(),
            verdict_pairs: Default::default(),
            verdict_keys: Default::default(),
        }
    }
}

/// Builds the survey dataflow on this worker: its input, its probe and its index.
pub fn build(
    worker: &mut Worker,
    plan: &CuratePlan,
    c: &Collectors,
) -> (InputHandleVec<u64, RawRecord>, ProbeHandle<u64>, usize) {
    let spec = &plan.spec;
    let validate_settings = super::spec::validate_settings(spec);
    let bits = spec.train.feature_bits;
    let (best_kind, gold_kind) = (spec.best_rm.clone(), spec.gold_rm.clone());
    // The sample holds `best_rm_sample` training pairs besides the epoch-choice slice.
    let sample_rate = (spec.best_rm_sample as f64
        / (1.0 - spec.cross_fit.heldout_share)
        / plan.input.estimated_rows.max(1) as f64)
        .min(1.0);
    let dataflow = worker.next_dataflow_index();
    let (input, probe) = {
        let (ci, pi) = (c.content_index.clone(), c.pair_index.clone());
        let (be, ge) = (c.best_examples.clone(), c.gold_examples.clone());
        let (bp, gp, vp) = (
            c.best_pairs.clone(),
            c.gold_pairs.clone(),
            c.verdict_pairs.clone(),
        );
        let vk = c.verdict_keys.clone();
        let whole_verdicts =
            !(spec.best_rm == ModelSpec::Builtin && spec.gold_rm == ModelSpec::Builtin);
        let ngrams = plan.ngrams.clone();
        let gold = plan.gold.clone();
        let gold_keys = Arc::new(pool_trained_keys(&plan.gold));
        worker.dataflow_named::<u64, _, _>("Survey", move |scope| {
            let (input, raw) = scope.new_input::<RawRecord>();
            let (valid, _quarantined) = raw.validate(validate_settings);
            // One pass over each pair reduces it to the few facts the survey keeps, so
            // that the full pairs are never cloned for several consumers.
            let facts = valid.flat_map(move |p: PreferencePair| {
                let decisive = gold
                    .labels
                    .get(&p.pair_key)
                    .is_some_and(|l| l.verdict != Verdict::Undecidable);
                let candidate = unit_interval(&p.pair_id, SALT_SAMPLE) < sample_rate;
                // The n-gram check only where its answer is needed: it costs more than
                // everything else the survey does with a pair.
                let clean = (candidate || decisive) && !ngrams.contaminates(&p);
                let sampled = candidate && clean;
                let gold_swap = pool_label_swap(&gold, p.pair_key);
                let sparse = |take: bool, kind: &ModelSpec, swap: bool| {
                    (take && *kind == ModelSpec::Builtin)
                        .then(|| TrainExample::from_pair(&p, bits, swap))
                };
                let whole = |take: bool, kind: &ModelSpec, swap: bool| {
                    (take && matches!(kind, ModelSpec::Encoder(_))).then(|| (p.clone(), swap))
                };
                // Each fact goes to the one stream that consumes its kind.
                let mut facts = vec![
                    Fact::Content((content_key(p.dedup_hash), p.key)),
                    Fact::Pair((p.pair_key, p.key)),
                ];
                // The best RM learns the labels as the pool gives them: a recorded
                // correction, held unswapped, is given swapped.
                facts.extend(sparse(sampled, &best_kind, p.corrected).map(Fact::Best));
                if gold_kind == ModelSpec::Builtin && gold_keys.contains(&p.pair_key) {
                    let e = TrainExample::from_pair(&p, bits, false);
                    facts.push(Fact::Gold((p.pair_key, p.key, e)));
                }
                facts.extend(whole(sampled, &best_kind, p.corrected).map(Fact::BestPair));
                facts.extend(
                    whole(gold_swap.is_some(), &gold_kind, gold_swap.unwrap_or(false))
                        .map(Fact::GoldPair),
                );
                if decisive {
                    let content = content_key(p.dedup_hash);
                    facts.push(Fact::VerdictKey((
                        p.pair_key,
                        p.key,
                        clean,
                        content,
                        p.corrected,
                    )));
                    if whole_verdicts && clean {
                        facts.push(Fact::VerdictPair((p.pair_key, p.key, p.clone())));
                    }
                }
                facts
            });
            let (probe, facts) = facts.probe();
            // Each fact moves to the one stream that consumes it: handing every fact to
            // eight consumers would clone every training example eight times (timely
            // clones a batch for each extra consumer of a stream).
            let parts = facts.partition(Fact::KINDS, |f: Fact| (f.kind(), f));
            let mut parts = parts.into_iter();
            let mut next = || parts.next().expect("one stream per kind");
            next()
                .flat_map(|f| match f {
                    Fact::Content(c) => Some(c),
                    _ => None,
                })
                .index_first("IndexContent", ci);
            next()
                .flat_map(|f| match f {
                    Fact::Pair(c) => Some(c),
                    _ => None,
                })
                .index_first("IndexPairId", pi);
            next()
                .flat_map(|f| match f {
                    Fact::Best(e) => Some(e),
                    _ => None,
                })
                .collect_examples("CollectBestRmExamples", be);
            next()
                .flat_map(|f| match f {
                    Fact::Gold(e) => Some(e),
                    _ => None,
                })
                .collect_examples("CollectGoldRmExamples", ge);
            next()
                .flat_map(|f| match f {
                    Fact::BestPair(e) => Some(e),
                    _ => None,
                })
                .collect_examples("CollectBestRmPairs", bp);
            next()
                .flat_map(|f| match f {
                    Fact::GoldPair(e) => Some(e),
                    _ => None,
                })
                .collect_examples("CollectGoldRmPairs", gp);
            next()
                .flat_map(|f| match f {
                    Fact::VerdictKey(e) => Some(e),
                    _ => None,
                })
                .collect_examples("CollectVerdictKeys", vk);
            next()
                .flat_map(|f| match f {
                    Fact::VerdictPair(e) => Some(e),
                    _ => None,
                })
                .collect_examples("CollectVerdictPairs", vp);
            (input, probe)
        })
    };
    (input, probe, dataflow)
}

/// Runs the survey on one worker.
pub fn survey(worker: &mut Worker, plan: &CuratePlan) -> Result<Survey> {
    let t = Instant::now();
    let collectors = Collectors::new();
    let (input, probe, dataflow) = build(worker, plan, &collectors);
    let Collectors {
        content_index,
        pair_index,
        best_examples,
        gold_examples,
        best_pairs,
        gold_pairs,
        verdict_pairs,
        verdict_keys,
    } = collectors;
    let mut observations = Vec::new();
    let fed = feed(
        worker,
        dataflow,
        plan,
        input,
        &probe,
        None,
        Some(&mut observations),
        &FxHashMap::default(),
        &plan.bars.survey,
        &super::feed::Slices::whole(plan, worker),
    );
    let rows = match &fed {
        Ok(n) => *n,
        Err(_) => 0,
    };
    agree_on_errors(worker, fed.map(|_| ()))?;
    content_index.borrow_mut().seal();
    pair_index.borrow_mut().seal();
    if worker.index() == 0 {
        plan.bars.survey.finish_and_clear();
    }
    let surveys = all_gather(worker, &SurveyResult { rows, observations })?;
    let survey_rows: u64 = surveys.iter().map(|s| s.rows).sum();
    let observations: Vec<JsonlObservation> =
        surveys.into_iter().flat_map(|s| s.observations).collect();
    let (schema, extras_fields, first_lines) = schema_and_lines(plan, &observations)?;
    let seconds = t.elapsed().as_secs_f64();
    tracing::info!(rows = survey_rows, seconds, "survey done");
    // Which verdict rows the rule would see: a row that repeats an earlier row's
    // content is discarded as a duplicate first. The content index is sharded over the
    // workers, so worker 0's list goes to all and each answers for the keys it holds.
    let verdict_keys = std::mem::take(&mut *verdict_keys.borrow_mut());
    let asked: Vec<(u64, RowKey)> = verdict_keys.iter().map(|v| (v.3, v.1)).collect();
    let asked = all_gather(worker, &asked)?.swap_remove(0);
    let answers: Vec<Option<bool>> = {
        let index = content_index.borrow();
        asked
            .iter()
            .map(|(content, row)| index.first(*content).map(|first| first == *row))
            .collect()
    };
    let answers = all_gather(worker, &answers)?;
    let duplicate_rows: rustc_hash::FxHashSet<RowKey> = asked
        .iter()
        .enumerate()
        .filter(|(i, _)| answers.iter().any(|a| a[*i] == Some(false)))
        .map(|(_, (_, row))| *row)
        .collect();
    let verdict_keys: Vec<(u64, RowKey, bool, bool)> = verdict_keys
        .into_iter()
        .map(|(key, row, clean, _, corrected)| {
            (key, row, clean && !duplicate_rows.contains(&row), corrected)
        })
        .collect();
    let mut verdict_pairs = std::mem::take(&mut *verdict_pairs.borrow_mut());
    verdict_pairs.retain(|(_, row, _)| !duplicate_rows.contains(row));
    let take = |v: &Rc<RefCell<Vec<_>>>| v.borrow_mut().split_off(0);
    let material = Material {
        best_examples: std::mem::take(&mut *best_examples.borrow_mut()),
        best_pairs: take(&best_pairs),
        gold_examples: std::mem::take(&mut *gold_examples.borrow_mut()),
        gold_pairs: take(&gold_pairs),
        verdict_pairs,
        verdict_keys,
    };
    Ok(Survey {
        content_index,
        pair_index,
        material,
        schema,
        extras_fields,
        first_lines,
        observations,
        rows: survey_rows,
        seconds,
    })
}
