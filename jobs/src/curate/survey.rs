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
use synpref_engine::hashing::{dedup_key, dedup_route, unit_interval};
use synpref_engine::input::{JsonlObservation, RawRecord};
use synpref_engine::model::{PreferencePair, RowKey, Verdict};
use synpref_engine::output::OutputSchema;
use synpref_engine::schema::infer_output_schema;
use synpref_engine::Result;
use synpref_operators::collect_examples::CollectExamples;
use synpref_operators::conflict_deciders::{
    CollectDeciders, ConflictDeciders, Decider, DeciderRow,
};
use synpref_operators::index_bands::{BandIndex, IndexBands};
use synpref_operators::index_first::{by_key, FirstIndex, IndexFirst, KeyIndex};
use synpref_operators::minhash::{as_sets, MinHasher, PairShingles};
use synpref_operators::models::builtin::TrainExample;
use synpref_operators::models::ModelSpec;
use synpref_operators::near_duplicates::{
    similar_enough, BandIndexFigures, NearDuplicates, RowSpill,
};
use synpref_operators::sorted_runs::ENTRY_BYTES;
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
    /// (dedup key, example): the key keeps conflicting comparisons out of the sample.
    Best((u64, TrainExample)),
    Gold((u64, RowKey, TrainExample)),
    // Whole pairs are boxed: every fact moves as the enum's size, and these are rare.
    BestPair(Box<(PreferencePair, bool)>),
    GoldPair(Box<(PreferencePair, bool)>),
    VerdictKey((u64, RowKey, bool, u64, bool)),
    VerdictPair(Box<(u64, RowKey, PreferencePair)>),
    Decider(DeciderRow),
    /// The pair's LSH band keys (`minhash`).
    Bands((Vec<u64>, RowKey)),
}

impl Fact {
    const KINDS: u64 = 10;

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
            Fact::Decider(_) => 8,
            Fact::Bands(_) => 9,
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

/// What the survey decided on one worker about which rows go on: the first row of each
/// dedup key and of each pair id, and the row that decides each conflicting comparison
/// (for the keys this worker owns).
#[derive(Clone)]
pub struct Selection {
    pub content_index: FirstIndex,
    pub pair_index: FirstIndex,
    pub deciders: Rc<ConflictDeciders>,
    /// Near-duplicate components and the kept row of each (the same on every worker).
    pub near: Rc<NearDuplicates>,
}

/// What the survey hands to the later stages.
pub struct Survey {
    pub selection: Selection,
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
    schema.duplicate_of = plan.spec.near_dup.enabled;
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
    pub deciders: Rc<RefCell<Vec<DeciderRow>>>,
    pub bands: Rc<RefCell<BandIndex>>,
    /// Each row's pair id (and shingles for the exact check) as this worker reads it,
    /// on local disk (`near_duplicates::RowSpill`); `None` in a graph built to be
    /// printed.
    pub spill: Rc<RefCell<Option<RowSpill>>>,
    best_examples: Rc<RefCell<Vec<(u64, TrainExample)>>>,
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
            deciders: Default::default(),
            bands: Default::default(),
            spill: Default::default(),
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
        let dk = c.deciders.clone();
        let (bi, spill) = (c.bands.clone(), c.spill.clone());
        let hasher = spec
            .near_dup
            .enabled
            .then(|| Arc::new(MinHasher::new(spec.near_dup)));
        let mut band_keys = Vec::new();
        let judges = plan.judges.clone();
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
                let content = dedup_key(p.dedup_hash);
                let mut facts = vec![
                    Fact::Content((content, p.key)),
                    Fact::Pair((p.pair_key, p.key)),
                ];
                // The best RM learns the labels as the pool gives them: a recorded
                // correction, held unswapped, is given swapped.
                facts.extend(
                    sparse(sampled, &best_kind, p.corrected).map(|e| Fact::Best((content, e))),
                );
                // Rows a human verdict or judge votes could decide, should their
                // comparison turn out to occur swapped too (`conflict_deciders`).
                let decider = if gold.labels.contains_key(&p.pair_key) {
                    Some(Decider::Human)
                } else if judges
                    .as_ref()
                    .is_some_and(|j| j.agree_key(p.pair_key).is_some())
                {
                    Some(Decider::Judges)
                } else {
                    None
                };
                facts.extend(decider.map(|d| Fact::Decider((content, p.key, d, p.pair_key))));
                if let Some(hasher) = &hasher {
                    let shingles: PairShingles = hasher.shingles(&p);
                    hasher.band_keys(&shingles, &mut band_keys);
                    if let Some(spill) = spill.borrow_mut().as_mut() {
                        let sets = hasher.settings().verify.then(|| as_sets(shingles.clone()));
                        spill.record(&p, sets.as_ref());
                    }
                    facts.push(Fact::Bands((band_keys.clone(), p.key)));
                }
                if gold_kind == ModelSpec::Builtin && gold_keys.contains(&p.pair_key) {
                    let e = TrainExample::from_pair(&p, bits, false);
                    facts.push(Fact::Gold((p.pair_key, p.key, e)));
                }
                facts.extend(
                    whole(sampled, &best_kind, p.corrected).map(|e| Fact::BestPair(Box::new(e))),
                );
                facts.extend(
                    whole(gold_swap.is_some(), &gold_kind, gold_swap.unwrap_or(false))
                        .map(|e| Fact::GoldPair(Box::new(e))),
                );
                if decisive {
                    facts.push(Fact::VerdictKey((
                        p.pair_key,
                        p.key,
                        clean,
                        content,
                        p.corrected,
                    )));
                    if whole_verdicts && clean {
                        facts.push(Fact::VerdictPair(Box::new((p.pair_key, p.key, p.clone()))));
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
                .index_first("IndexContent", ci, dedup_route);
            next()
                .flat_map(|f| match f {
                    Fact::Pair(c) => Some(c),
                    _ => None,
                })
                .index_first("IndexPairId", pi, by_key);
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
                    Fact::BestPair(e) => Some(*e),
                    _ => None,
                })
                .collect_examples("CollectBestRmPairs", bp);
            next()
                .flat_map(|f| match f {
                    Fact::GoldPair(e) => Some(*e),
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
                    Fact::VerdictPair(e) => Some(*e),
                    _ => None,
                })
                .collect_examples("CollectVerdictPairs", vp);
            next()
                .flat_map(|f| match f {
                    Fact::Decider(d) => Some(d),
                    _ => None,
                })
                .collect_deciders(dk);
            next()
                .flat_map(|f| match f {
                    Fact::Bands((keys, row)) => keys.into_iter().map(|k| (k, row)).collect(),
                    _ => Vec::new(),
                })
                .index_bands(bi);
            (input, probe)
        })
    };
    (input, probe, dataflow)
}

/// Runs the survey on one worker.
pub fn survey(worker: &mut Worker, plan: &CuratePlan) -> Result<Survey> {
    let t = Instant::now();
    let collectors = Collectors::new();
    let near_dup = plan.spec.near_dup;
    // Each worker owns about its share of every pair's keys (the estimate is the
    // planner's; an index grows past it if needed). Reserving once keeps a growing
    // vector from holding its old and new copies at once as it doubles.
    let share = plan.input.estimated_rows as usize / worker.peers().max(1);
    let share = share + share / 16;
    collectors.content_index.borrow_mut().reserve(share);
    collectors.pair_index.borrow_mut().reserve(share);
    if near_dup.enabled {
        let spill_dir = plan.spec.machine.spill_dir.as_deref();
        let spill = RowSpill::new(spill_dir, near_dup.verify);
        let spill = agreed(worker, spill)?;
        *collectors.spill.borrow_mut() = Some(spill);
        // The process's budget, shared by its workers, in 16-byte band entries.
        let local_workers = plan.spec.machine.run.workers.max(1) as u64;
        let capacity = plan.memory_budget / local_workers / ENTRY_BYTES as u64;
        let mut bands = BandIndex::new(capacity as usize, spill_dir);
        bands.reserve(share * near_dup.bands);
        *collectors.bands.borrow_mut() = bands;
    }
    let (input, probe, dataflow) = build(worker, plan, &collectors);
    let Collectors {
        content_index,
        pair_index,
        deciders,
        bands,
        spill,
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
    let deciders = Rc::new(ConflictDeciders::build(
        &content_index.borrow(),
        &std::mem::take(&mut *deciders.borrow_mut()),
    ));
    if worker.index() == 0 {
        plan.bars.survey.finish_and_clear();
    }
    let near = if near_dup.enabled {
        let spill = spill.borrow_mut().take().expect("a spill with near-dup on");
        let bands = std::mem::take(&mut *bands.borrow_mut());
        resolve_near_duplicates(worker, plan, bands, spill)?
    } else {
        NearDuplicates::default()
    };
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
    // A row reaches the rule if it is the first with its key and, where its comparison
    // also occurs swapped, the row that decides it (`dedup`), else no near-duplicate
    // member (`near_duplicates`).
    let answers: Vec<Option<bool>> = {
        let index = content_index.borrow();
        asked
            .iter()
            .map(|(content, row)| {
                index.first(*content).map(|first| {
                    let passes = if index.first(content ^ 1).is_some() {
                        deciders.decider(*content) == Some(*row)
                    } else {
                        near.kept_instead(*row).is_none()
                    };
                    first == *row && passes
                })
            })
            .collect()
    };
    // Neither copy of a conflicting comparison trains the best RM: its label is
    // whichever copy the sample happened to draw.
    let conflicting: rustc_hash::FxHashSet<u64> =
        all_gather(worker, &content_index.borrow().both_orientations())?
            .into_iter()
            .flatten()
            .collect();
    let unconflicted = |key: u64| !conflicting.contains(&(key & !1));
    let answers = all_gather(worker, &answers)?;
    let unreached_rows: rustc_hash::FxHashSet<RowKey> = asked
        .iter()
        .enumerate()
        .filter(|(i, _)| answers.iter().any(|a| a[*i] == Some(false)))
        .map(|(_, (_, row))| *row)
        .collect();
    let verdict_keys: Vec<(u64, RowKey, bool, bool)> = verdict_keys
        .into_iter()
        .map(|(key, row, clean, _, corrected)| {
            (key, row, clean && !unreached_rows.contains(&row), corrected)
        })
        .collect();
    let mut verdict_pairs = std::mem::take(&mut *verdict_pairs.borrow_mut());
    verdict_pairs.retain(|(_, row, _)| !unreached_rows.contains(row));
    let take = |v: &Rc<RefCell<Vec<_>>>| v.borrow_mut().split_off(0);
    let best_examples: Vec<TrainExample> = std::mem::take(&mut *best_examples.borrow_mut())
        .into_iter()
        .filter(|(key, _)| unconflicted(*key))
        .map(|(_, e)| e)
        .collect();
    let mut best_pairs = take(&best_pairs);
    best_pairs.retain(|(p, _)| unconflicted(dedup_key(p.dedup_hash)));
    let material = Material {
        best_examples,
        best_pairs,
        gold_examples: std::mem::take(&mut *gold_examples.borrow_mut()),
        gold_pairs: take(&gold_pairs),
        verdict_pairs,
        verdict_keys,
    };
    Ok(Survey {
        selection: Selection {
            content_index,
            pair_index,
            deciders,
            near: Rc::new(near),
        },
        material,
        schema,
        extras_fields,
        first_lines,
        observations,
        rows: survey_rows,
        seconds,
    })
}

/// The near-duplicate components, the same on every worker: every worker's candidate
/// edges gathered, the ids (and with the exact check the shingles) of the rows they
/// name read back from each worker's spill and gathered, then joined
/// (`NearDuplicates::resolve`).
fn resolve_near_duplicates(
    worker: &mut Worker,
    plan: &CuratePlan,
    bands: BandIndex,
    mut spill: RowSpill,
) -> Result<NearDuplicates> {
    let t = Instant::now();
    let settings = plan.spec.near_dup;
    let entries = bands.len();
    let (runs, spilled_bytes) = bands.spilled();
    let band_index = all_gather(worker, &(entries, runs as u64, spilled_bytes))?
        .into_iter()
        .fold(BandIndexFigures::default(), |sum, (e, r, b)| {
            BandIndexFigures {
                entries: sum.entries + e,
                spilled_runs: sum.spilled_runs + r,
                spilled_bytes: sum.spilled_bytes + b,
            }
        });
    let local_edges = agreed(worker, bands.candidate_edges())?;
    let edges: Vec<(RowKey, RowKey)> = all_gather(worker, &local_edges)?
        .into_iter()
        .flatten()
        .collect();
    drop(local_edges);
    // Only the rows whose pair ids or shingles are needed come back from the spills:
    // with the exact check every row an edge names (its shingles), else only each
    // component's root (whose id `duplicate_of` names), a tenth as many.
    let mut near = if settings.verify {
        let nodes = NearDuplicates::nodes(&edges);
        let (ids, shingles) = spilled_rows(worker, &mut spill, &nodes)?;
        let mut near =
            NearDuplicates::components(edges, similar_enough(&shingles, settings.threshold));
        near.name_roots(|r| ids.get(&r).cloned())?;
        near
    } else {
        let mut near = NearDuplicates::components(edges, |_, _| true);
        let (ids, _) = spilled_rows(worker, &mut spill, &near.root_rows())?;
        near.name_roots(|r| ids.get(&r).cloned())?;
        near
    };
    near.band_index = band_index;
    tracing::info!(
        band_entries = band_index.entries,
        spilled_runs = band_index.spilled_runs,
        spilled_bytes = band_index.spilled_bytes,
        candidate_edges = near.candidate_edges,
        rejected_edges = near.rejected_edges,
        components = near.component_count(),
        near_duplicates = near.member_count(),
        seconds = t.elapsed().as_secs_f64(),
        "near-duplicates resolved"
    );
    Ok(near)
}

/// The pair ids (and with the exact check, shingles) of `rows` (sorted), read back
/// from every worker's spill and gathered on all.
fn spilled_rows(
    worker: &mut Worker,
    spill: &mut RowSpill,
    rows: &[RowKey],
) -> Result<(FxHashMap<RowKey, String>, FxHashMap<RowKey, PairShingles>)> {
    let found = agreed(worker, spill.lookup(rows))?;
    let found = all_gather(worker, &found)?;
    let mut ids: FxHashMap<RowKey, String> = FxHashMap::default();
    let mut shingles: FxHashMap<RowKey, PairShingles> = FxHashMap::default();
    for (row, id, sh) in found.into_iter().flatten() {
        ids.insert(row, id);
        if let Some(sh) = sh {
            shingles.insert(row, sh);
        }
    }
    Ok((ids, shingles))
}

/// `local`'s value once every worker has succeeded, else the first failure.
fn agreed<T>(worker: &mut Worker, local: Result<T>) -> Result<T> {
    match local {
        Ok(v) => agree_on_errors(worker, Ok(())).map(|_| v),
        Err(e) => {
            agree_on_errors(worker, Err(e))?;
            unreachable!("agree_on_errors returns the local error")
        }
    }
}
