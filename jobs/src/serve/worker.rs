//! Serve's timely workers, on every process of the run (DESIGN §2: "each worker owns
//! the state of its shard of the pool, a label batch is an epoch broadcast to all
//! workers, the retrained gold RM's weights are broadcast, each worker re-scores its
//! own shard").
//!
//! Every worker runs the same program, in lockstep through timely's collectives
//! (`synpref_engine::collective`), so that it works the same across threads and
//! processes:
//!
//! 1. Start: worker 0 hands every worker the epoch to start from and the labels up to
//!    it (`StartInfo`); each process plans the first pass once (`ProcessCtx::plan`).
//! 2. The first pass is curate's own dataflow composed with serve's captures
//!    (`ServeGraph`): each worker keeps the pairs it scored (its shard: curate routes
//!    pairs by pair key) and the valid rows it read.
//! 3. Each worker builds its shard's `PoolState`; the gold RM learns the labels from
//!    every worker's rows of the labelled keys (`batch_rows`, gathered), so that every
//!    worker holds the same gold RM as curate trains, with no weights on the wire.
//! 4. The differential dataflow (`decide_incrementally`) takes every shard's facts; its
//!    changed decisions are routed back to the worker that owns the pair (by pair key,
//!    as curate routes), which writes them as its changelog part.
//! 5. Commands, in order, from worker 0 (which takes them from the controller): an
//!    epoch (learn the batch, re-score this shard's pairs whose decision the weight
//!    move can change, update the facts, write the changelog) or a snapshot (a curate
//!    pass whose scorers read the shards, then each shard saved).

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::rc::Rc;
use std::sync::{mpsc, Arc, Condvar, Mutex, RwLock};
use std::time::Instant;

use arrow::array::{ArrayRef, Int8Array, StringArray, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use differential_dataflow::input::Input;
use differential_dataflow::AsCollection;
use serde::{Deserialize, Serialize};
use synpref_engine::collective::{all_gather, compute_on_leader, gather_to_leader};
use synpref_engine::model::{Destination, GoldLabel};
use synpref_engine::output::{rows_to_batch, write_parquet_file};
use synpref_engine::report::Quality;
use synpref_engine::side::GoldLabels;
use synpref_engine::store::Location;
use synpref_engine::{Error, Result};
use synpref_operators::consistency_rule::{decided_row, RuleSettings};
use synpref_operators::decide_incrementally::{DecideIncrementally, Decided, Epoch, PairFact};
use synpref_operators::models::RewardModel;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::Operator;
use timely::worker::Worker;

use super::aliases::LabelAliases;
use super::conflicts::ConflictTable;
use super::decisions::{Change, DecisionEngine, ShardDecisions};
use super::state::{
    PoolState, SavedPart, SavedScorer, SavedStateMeta, ServeGraph, ServeTap, StateScorer,
};
use crate::curate::{self, CuratePlan, CurateReport, CurateSpec};

/// What every worker is told to do, in order (from the controller, through worker 0).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum ServeCommand {
    /// Apply a label batch as epoch `seq`.
    Epoch { seq: Epoch, labels: Vec<GoldLabel> },
    /// Recompute the self-measurement (worker 0; the controller asks when idle).
    Quality,
    /// Write a snapshot of epoch `epoch` (a curate pass into the version `dir`, which
    /// `snapshots::Snapshots::next_dir` named; none when `pass` is false: the first pass
    /// wrote it) and save the state beside it.
    Snapshot {
        epoch: Epoch,
        pass: bool,
        dir: Option<String>,
    },
    /// End: every worker returns, so that each process can join its workers and end
    /// (serve stopped by SIGTERM or SIGINT on process 0).
    Stop,
}

/// Where the run starts: decided by process 0 from its label log and saved state.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StartInfo {
    pub epoch0: Epoch,
    /// The label records of epochs 1..=epoch0, in order.
    pub labels: Vec<GoldLabel>,
    /// A saved state of epoch0 made by as many workers exists (`state.json`).
    pub saved: bool,
    /// The version the first pass writes its snapshot into
    /// (`snapshots::Snapshots::next_dir`).
    pub snapshot_dir: String,
}

/// One worker's figures for an epoch, gathered onto worker 0.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct EpochFigures {
    pub changed_rows: u64,
    /// Changed rows per reason (+1/−1).
    pub reason_deltas: BTreeMap<String, i64>,
    pub rescored: u64,
    pub pairs: u64,
    pub bytes: u64,
    pub train_s: f64,
    pub rescore_s: f64,
    pub drift: f64,
}

impl EpochFigures {
    fn merge(&mut self, o: &EpochFigures) {
        self.changed_rows += o.changed_rows;
        for (k, v) in &o.reason_deltas {
            *self.reason_deltas.entry(k.clone()).or_default() += v;
        }
        self.rescored += o.rescored;
        self.pairs += o.pairs;
        self.bytes += o.bytes;
        self.train_s = self.train_s.max(o.train_s);
        self.rescore_s = self.rescore_s.max(o.rescore_s);
        self.drift = self.drift.max(o.drift);
    }
}

/// What worker 0 tells the controller.
pub enum WorkerReport {
    Loaded {
        report: Box<CurateReport>,
        figures: EpochFigures,
        quality: Option<Box<Quality>>,
        /// The pair keys of every valid pool row, sorted (`PoolKeys`).
        pool_keys: Vec<u64>,
    },
    Epoch {
        figures: EpochFigures,
        dataflow_s: f64,
    },
    /// The self-measurement for the labels so far (`ServeCommand::Quality`).
    Quality(Option<Box<Quality>>),
    Snapshot(Result<Option<Box<CurateReport>>>),
}

/// What a process's workers share.
pub struct ProcessCtx {
    pub spec: CurateSpec,
    pub registry: curate::ModelRegistry,
    pub local_workers: usize,
    /// This is process 0 (writes reports and manifests, feeds the commands).
    pub leader: bool,
    pub tap: Arc<ServeTap>,
    pub state_dir: Location,
    pub changelog: Location,
    pub rule: RuleSettings,
    pub decisions: DecisionEngine,
    /// Set by process 0's controller before its workers start.
    pub start: Mutex<Option<StartInfo>>,
    commands: Mutex<VecDeque<ServeCommand>>,
    commands_cv: Condvar,
    reports: Mutex<mpsc::Sender<WorkerReport>>,
    /// The first pass's plan, built by the first of the process's workers to need it.
    /// (Both are dropped once the workers are loaded: they hold a copy of the margins.)
    /// A failure is kept whole, so that each worker reports it with its exit status
    /// (a bad input exits 2).
    plan: Mutex<Option<std::result::Result<Arc<CuratePlan>, Arc<Error>>>>,
    /// The saved state a restart starts from, every part merged.
    saved: Mutex<Option<std::result::Result<Arc<SavedPart>, Arc<Error>>>>,
    /// The plan of a snapshot (by its directory), built once per snapshot per process.
    snapshot_plan: Mutex<Option<(Option<String>, Arc<CuratePlan>)>>,
    /// Each local worker's shard, for the snapshot's scorers.
    states: Mutex<Vec<Option<Arc<RwLock<PoolState>>>>>,
    /// The first error of any of this process's workers.
    pub error: Mutex<Option<Error>>,
    /// This process's workers that ended without error (after `ServeCommand::Stop`).
    pub stopped: std::sync::atomic::AtomicUsize,
}

impl ProcessCtx {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        spec: CurateSpec,
        registry: curate::ModelRegistry,
        local_workers: usize,
        leader: bool,
        tap: Arc<ServeTap>,
        out: &Location,
        reports: mpsc::Sender<WorkerReport>,
        decisions: DecisionEngine,
    ) -> ProcessCtx {
        ProcessCtx {
            rule: spec.rule(),
            stopped: Default::default(),
            decisions,
            spec,
            registry,
            local_workers,
            leader,
            tap,
            state_dir: out.child("state"),
            changelog: out.child("changelog"),
            start: Mutex::new(None),
            commands: Mutex::new(VecDeque::new()),
            commands_cv: Condvar::new(),
            reports: Mutex::new(reports),
            plan: Mutex::new(None),
            saved: Mutex::new(None),
            snapshot_plan: Mutex::new(None),
            states: Mutex::new(vec![None; local_workers]),
            error: Mutex::new(None),
        }
    }

    /// Queues a command for the workers (process 0's controller).
    pub fn command(&self, c: ServeCommand) {
        self.commands.lock().expect("commands").push_back(c);
        self.commands_cv.notify_all();
    }

    /// The next command, waiting for one (worker 0).
    fn next_command(&self) -> ServeCommand {
        let mut q = self.commands.lock().expect("commands");
        loop {
            if let Some(c) = q.pop_front() {
                return c;
            }
            q = self.commands_cv.wait(q).expect("commands");
        }
    }

    fn report(&self, r: WorkerReport) {
        let _ = self.reports.lock().expect("reports").send(r);
    }

    /// The saved state, every part merged, loaded once per process (`worker` asks).
    fn saved(&self, meta: &SavedStateMeta, worker: usize) -> Result<Arc<SavedPart>> {
        self.saved
            .lock()
            .expect("saved")
            .get_or_insert_with(|| {
                PoolState::load_all_parts(&self.state_dir, meta)
                    .map(Arc::new)
                    .map_err(Arc::new)
            })
            .clone()
            .map_err(|e| e.copied_by(worker))
    }

    /// The first pass's plan: the labels up to the start epoch and, from a saved
    /// state, scorers that look the margins up (no model runs). `worker` asks.
    fn initial_plan(
        &self,
        worker: usize,
        start: &StartInfo,
        meta: Option<&SavedStateMeta>,
        saved: Option<&SavedPart>,
    ) -> Result<Arc<CuratePlan>> {
        let build = || -> Result<Arc<CuratePlan>> {
            let mut labels = GoldLabels::default();
            for l in &start.labels {
                labels.insert(l.clone());
            }
            let scorers = match (meta, saved) {
                (Some(meta), Some(saved)) => {
                    let (best, gold) = SavedScorer::pair(saved, meta);
                    Some((
                        Arc::new(best) as Arc<dyn RewardModel>,
                        Arc::new(gold) as Arc<dyn RewardModel>,
                    ))
                }
                _ => None,
            };
            let mut spec = self.spec.clone();
            spec.out = start.snapshot_dir.clone();
            Ok(Arc::new(curate::prepare_with_gold(
                spec,
                labels,
                self.leader,
                scorers,
                self.registry.clone(),
            )?))
        };
        self.plan
            .lock()
            .expect("plan")
            .get_or_insert_with(|| build().map_err(Arc::new))
            .clone()
            .map_err(|e| e.copied_by(worker))
    }

    /// The plan of the snapshot written into `dir`: a curate pass over the pool with the
    /// labels so far, whose scorers read this process's shards.
    fn snapshot_plan(&self, dir: &Option<String>, state: &PoolState) -> Result<Arc<CuratePlan>> {
        let mut slot = self.snapshot_plan.lock().expect("snapshot plan");
        if let Some((d, plan)) = &*slot {
            if d == dir {
                return Ok(plan.clone());
            }
        }
        let states: Vec<_> = self
            .states
            .lock()
            .expect("states")
            .iter()
            .map(|s| s.clone().expect("every local worker has its shard"))
            .collect();
        let scorers = (
            Arc::new(StateScorer {
                states: states.clone(),
                gold: false,
                fingerprint: state.best_fingerprint.clone(),
            }) as Arc<dyn RewardModel>,
            Arc::new(StateScorer {
                states,
                gold: true,
                fingerprint: state.gold_fingerprint(),
            }) as Arc<dyn RewardModel>,
        );
        let mut spec = self.spec.clone();
        spec.machine.run.progress = false;
        if let Some(dir) = dir {
            spec.out = dir.clone();
        }
        let plan = Arc::new(curate::prepare_with_gold(
            spec,
            state.labels.clone(),
            self.leader,
            Some(scorers),
            self.registry.clone(),
        )?);
        *slot = Some((dir.clone(), plan.clone()));
        Ok(plan)
    }
}

/// Runs one serve worker until the process ends; an error is recorded in `ctx` for
/// the process's main thread, which ends the process.
pub fn serve_worker(worker: &mut Worker, ctx: &ProcessCtx) -> Result<()> {
    let r = run(worker, ctx);
    if r.is_ok() {
        ctx.stopped
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
    if let Err(e) = &r {
        let mut slot = ctx.error.lock().expect("error");
        if slot.is_none() {
            // Reported by the main thread as `Error::Worker` was ("worker failed: …"),
            // with the error's own exit status (a bad input exits 2).
            *slot = Some(Error::PeerFailed {
                worker: worker.index(),
                exit_code: e.exit_code(),
                message: format!("worker failed: {e}"),
            });
        }
    }
    r
}

fn run(worker: &mut Worker, ctx: &ProcessCtx) -> Result<()> {
    let index = worker.index();
    let local = index % ctx.local_workers;
    // 1. Where to start.
    let start: StartInfo = compute_on_leader(worker, || {
        ctx.start
            .lock()
            .expect("start")
            .take()
            .ok_or_else(|| Error::Worker("serve's start was not set".into()))
    })?;
    let meta = if start.saved {
        let meta = PoolState::load_meta(&ctx.state_dir, &ctx.spec)?
            .filter(|m| m.epoch == start.epoch0)
            .ok_or_else(|| {
                Error::Worker("process 0 found a saved state that this process cannot read".into())
            })?;
        Some(meta)
    } else {
        None
    };
    let saved = meta.as_ref().map(|m| ctx.saved(m, index)).transpose()?;
    let plan = ctx.initial_plan(index, &start, meta.as_ref(), saved.as_deref())?;
    let judges = plan.judges.clone();

    // 2. The first pass.
    let graph = ServeGraph {
        tap: ctx.tap.clone(),
    };
    let report = curate::run_worker_with(worker, &plan, &graph)?;
    let best_fingerprint: String = compute_on_leader(worker, || {
        Ok(report
            .as_ref()
            .map(|r| r.best_rm.fingerprint.clone())
            .unwrap_or_default())
    })?;

    // 3. This worker's shard, and the gold RM learned from the labels so far. The pair
    // ids of every valid row go to process 0, where labels naming none are told apart.
    let valid_keys: Vec<u64> = {
        let c = ctx.tap.workers[local].lock().expect("capture");
        c.valid.iter().map(|v| v.0).collect()
    };
    let pool_keys = gather_to_leader(worker, &valid_keys)?.map(|all| {
        let mut keys = all.concat();
        keys.sort_unstable();
        keys.dedup();
        keys
    });
    let mut state = PoolState::from_capture(&ctx.tap, local, ctx.spec.clone())?;
    state.best_fingerprint = best_fingerprint;
    let record_only = match &meta {
        Some(meta) => {
            let trainer = PoolState::load_trainer(&ctx.state_dir, meta, &ctx.spec)?;
            let saved_trainer = trainer.is_some();
            state.restore(saved.as_ref().expect("loaded with the meta"), trainer, meta)?;
            saved_trainer
        }
        None => false,
    };
    // Every conflicting comparison's rows, and every scored pair's (and conflict
    // row's) duplicate copies, whose labels it takes, on every worker.
    let (copies, conflict_rows) = ctx.tap.take_copies(local);
    let conflict_rows = all_gather(worker, &conflict_rows)?.concat();
    state.conflicts = ConflictTable::new(conflict_rows, judges.as_deref());
    let copies = all_gather(worker, &copies)?.concat();
    let mine = state.copies_of_scored(copies);
    state.aliases = LabelAliases::new(all_gather(worker, &mine)?.concat());
    // Worker 0 learns the labels from every worker's rows of them; the others take
    // its weights.
    let rows = state.batch_rows(&start.labels)?;
    if let Some(gathered) = gather_to_leader(worker, &rows)? {
        state.learn_batch(start.labels.clone(), gathered, record_only)?;
    }
    let weights = compute_on_leader(worker, || Ok(state.shared_weights()))?;
    if index != 0 {
        state.take_batch(start.labels, weights)?;
    }
    let state = Arc::new(RwLock::new(state));
    ctx.states.lock().expect("states")[local] = Some(state.clone());

    // 4. The decisions: per shard, or differential's reduce over every shard's facts.
    let mut decisions = {
        let s = state.read().expect("state");
        match ctx.decisions {
            DecisionEngine::Shard => {
                Decisions::Shard(ShardDecisions::new(&s, &ctx.rule, judges.as_deref()))
            }
            DecisionEngine::Differential => {
                Decisions::differential(worker, ctx.rule, judges.clone(), &s, start.epoch0)
            }
        }
    };
    let figures = {
        let s = state.read().expect("state");
        EpochFigures {
            pairs: s.keys.len() as u64,
            bytes: (s.bytes() + decisions.bytes()) as u64,
            ..Default::default()
        }
    };
    let all = all_gather(worker, &figures)?;
    // Every worker is loaded: the first pass's plan and the saved state are no longer
    // needed (the plan's scorers hold a copy of the margins).
    *ctx.plan.lock().expect("plan") = None;
    *ctx.saved.lock().expect("saved") = None;
    drop((plan, saved));
    if index == 0 {
        let mut total = EpochFigures::default();
        for f in &all {
            total.merge(f);
        }
        let report = report.ok_or_else(|| Error::Worker("worker 0 has no report".into()))?;
        let best_rm = report
            .quality
            .as_ref()
            .map(|q| q.best_rm.clone())
            .unwrap_or_default();
        let quality = state
            .read()
            .expect("state")
            .quality(judges.as_deref(), &best_rm)
            .map(Box::new);
        ctx.report(WorkerReport::Loaded {
            report: Box::new(report.clone()),
            figures: total,
            quality,
            pool_keys: pool_keys.unwrap_or_default(),
        });
        serve_commands(worker, ctx, &state, &mut decisions, judges, best_rm)
    } else {
        serve_commands(
            worker,
            ctx,
            &state,
            &mut decisions,
            judges,
            Default::default(),
        )
    }
}

/// The decisions of a worker, as `ProcessCtx::decisions` chose.
enum Decisions {
    Shard(ShardDecisions),
    Differential(Box<DifferentialDecisions>),
}

/// differential's reduce: its input, its probe, and the changed decisions it routed to
/// this worker.
struct DifferentialDecisions {
    input: differential_dataflow::input::InputSession<Epoch, (u64, PairFact), isize>,
    probe: timely::dataflow::ProbeHandle<Epoch>,
    changes: Rc<RefCell<Vec<Change>>>,
}

impl Decisions {
    /// The reduce over every shard's facts; the changed decisions are routed back to
    /// the worker that owns the pair (by pair key, as curate routes pairs).
    fn differential(
        worker: &mut Worker,
        rule: RuleSettings,
        judges: Option<Arc<synpref_engine::side::JudgeVotes>>,
        s: &PoolState,
        epoch0: Epoch,
    ) -> Decisions {
        let changes: Rc<RefCell<Vec<Change>>> = Rc::new(RefCell::new(Vec::new()));
        let (mut input, probe) = {
            let changes = changes.clone();
            worker.dataflow_named::<Epoch, _, _>("Serve", move |scope| {
                let (input, facts) = scope.new_collection::<(u64, PairFact), isize>();
                let (probe, _) = facts
                    .decide_incrementally(rule, judges)
                    .inner
                    .unary(
                        Exchange::new(|x: &((u64, Decided), Epoch, isize)| (x.0).0),
                        "ToOwner",
                        |_, _| {
                            move |input, output| {
                                input.for_each(|time, data| {
                                    output.session(&time).give_container(data);
                                });
                            }
                        },
                    )
                    .as_collection()
                    .inspect(move |((k, d), t, r)| changes.borrow_mut().push((*k, *d, *t, *r)))
                    .probe();
                (input, probe)
            })
        };
        input.advance_to(epoch0);
        for i in 0..s.keys.len() {
            input.insert((
                s.keys[i],
                PairFact::Margins {
                    best: s.m_best[i].to_bits(),
                    gold: s.m_gold[i].to_bits(),
                },
            ));
        }
        for k in &s.corrected {
            input.insert((*k, PairFact::Corrected));
        }
        for k in &s.agreed {
            input.insert((*k, PairFact::Agreed));
        }
        for (k, _) in &s.conflict {
            input.insert((*k, PairFact::Conflict));
            if s.outvoted(*k) {
                input.insert((*k, PairFact::Outvoted));
            }
        }
        // One worker states the verdicts for all.
        if worker.index() == 0 {
            for (k, v) in s.aliases.verdicts(&s.labels) {
                input.insert((k, PairFact::Verdict(v)));
            }
        }
        input.advance_to(epoch0 + 1);
        input.flush();
        while probe.less_than(&(epoch0 + 1)) {
            worker.step();
        }
        changes.borrow_mut().clear();
        Decisions::Differential(Box::new(DifferentialDecisions {
            input,
            probe,
            changes,
        }))
    }

    /// Whether this worker states the verdict facts of every key (differential: one
    /// worker for all) or of its own keys (shard: each for its own).
    fn verdicts(&self, worker: &Worker) -> bool {
        match self {
            Decisions::Shard(_) => true,
            Decisions::Differential(_) => worker.index() == 0,
        }
    }

    /// Applies an epoch's fact updates; this worker's changed decisions.
    fn epoch(
        &mut self,
        worker: &mut Worker,
        state: &PoolState,
        updates: &[((u64, PairFact), isize)],
        ctx: &ProcessCtx,
        judges: Option<&synpref_engine::side::JudgeVotes>,
        seq: Epoch,
    ) -> Vec<Change> {
        match self {
            Decisions::Shard(d) => d.update(state, updates, &ctx.rule, judges, seq),
            Decisions::Differential(d) => {
                let DifferentialDecisions {
                    input,
                    probe,
                    changes,
                } = &mut **d;
                input.advance_to(seq);
                for (fact, diff) in updates {
                    input.update(*fact, *diff);
                }
                input.advance_to(seq + 1);
                input.flush();
                while probe.less_than(&(seq + 1)) {
                    worker.step();
                }
                changes.borrow_mut().drain(..).collect()
            }
        }
    }

    fn bytes(&self) -> usize {
        match self {
            Decisions::Shard(d) => d.bytes(),
            // The arrangements' memory is not counted here (see docs/benchmarks.md).
            Decisions::Differential(_) => 0,
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn serve_commands(
    worker: &mut Worker,
    ctx: &ProcessCtx,
    state: &Arc<RwLock<PoolState>>,
    decisions: &mut Decisions,
    judges: Option<Arc<synpref_engine::side::JudgeVotes>>,
    best_rm: synpref_engine::report::ModelQuality,
) -> Result<()> {
    let (index, peers) = (worker.index(), worker.peers());
    loop {
        let command = compute_on_leader(worker, || Ok(ctx.next_command()))?;
        match command {
            ServeCommand::Epoch { seq, labels } => {
                let t = Instant::now();
                let epoch_start = state.read().expect("state").start_epoch(&labels);
                let rows = state.read().expect("state").batch_rows(&labels)?;
                if let Some(gathered) = gather_to_leader(worker, &rows)? {
                    state
                        .write()
                        .expect("state")
                        .learn_batch(labels.clone(), gathered, false)?;
                }
                let weights = compute_on_leader(worker, || {
                    Ok(state.read().expect("state").shared_weights())
                })?;
                if index != 0 {
                    state.write().expect("state").take_batch(labels, weights)?;
                }
                let verdicts = decisions.verdicts(worker);
                let change = state
                    .write()
                    .expect("state")
                    .finish_epoch(epoch_start, verdicts)?;
                let mine = {
                    let s = state.read().expect("state");
                    decisions.epoch(worker, &s, &change.updates, ctx, judges.as_deref(), seq)
                };
                let written = write_changelog(ctx, &state.read().expect("state"), index, seq, mine);
                let local = match &written {
                    Ok((rows, deltas)) => {
                        let s = state.read().expect("state");
                        Ok(EpochFigures {
                            changed_rows: *rows,
                            reason_deltas: deltas.clone(),
                            rescored: change.rescored as u64,
                            pairs: s.keys.len() as u64,
                            bytes: (s.bytes() + decisions.bytes()) as u64,
                            train_s: change.train_s,
                            rescore_s: change.rescore_s,
                            drift: change.drift,
                        })
                    }
                    Err(e) => Err(e.to_string()),
                };
                let all = all_gather(worker, &local)?;
                let mut total = EpochFigures::default();
                for (w, f) in all.iter().enumerate() {
                    match f {
                        Ok(f) => total.merge(f),
                        Err(e) => {
                            return Err(Error::Worker(format!("worker {w}, epoch {seq}: {e}")))
                        }
                    }
                }
                if index == 0 {
                    ctx.report(WorkerReport::Epoch {
                        figures: total,
                        dataflow_s: t.elapsed().as_secs_f64(),
                    });
                }
            }
            ServeCommand::Quality => {
                // The self-measurement retrains its folds over every label: no decision
                // waits for it, so the controller asks for it only when no batch does.
                if index == 0 {
                    let quality = state
                        .read()
                        .expect("state")
                        .quality(judges.as_deref(), &best_rm)
                        .map(Box::new);
                    ctx.report(WorkerReport::Quality(quality));
                }
            }
            ServeCommand::Snapshot { epoch, pass, dir } => {
                let result = if pass {
                    let plan = {
                        let s = state.read().expect("state");
                        ctx.snapshot_plan(&dir, &s)
                    };
                    plan.and_then(|plan| curate::run_worker(worker, &plan))
                } else {
                    Ok(None)
                };
                // Every worker saves its shard beside the snapshot; worker 0 commits
                // the state (`state.json`) once all have.
                let saved = state
                    .read()
                    .expect("state")
                    .save_part(&ctx.state_dir, epoch, index);
                let local = (
                    result.as_ref().err().map(|e| e.to_string()),
                    saved.as_ref().err().map(|e| e.to_string()),
                    state.read().expect("state").keys.len() as u64,
                );
                let all = all_gather(worker, &local)?;
                if let Some(e) = all.iter().find_map(|(_, s, _)| s.clone()) {
                    return Err(Error::Worker(format!("saving serve's state: {e}")));
                }
                if index == 0 {
                    let failed = all.iter().find_map(|(r, _, _)| r.clone());
                    let pairs: u64 = all.iter().map(|(_, _, n)| n).sum();
                    let r = match (result, failed) {
                        (Ok(report), None) => state
                            .read()
                            .expect("state")
                            .save_meta(&ctx.state_dir, epoch, peers, pairs)
                            .map(|_| report.map(Box::new)),
                        (Err(e), _) => Err(e),
                        (_, Some(e)) => Err(Error::Worker(e)),
                    };
                    ctx.report(WorkerReport::Snapshot(r));
                }
            }
            ServeCommand::Stop => return Ok(()),
        }
    }
}

/// Writes this worker's changed decisions of one epoch as
/// `changelog/epoch-EEEEEEEEEE/part-WWWWW.parquet`: the rows as curate writes them (with
/// the shard's current p columns), preceded by `epoch`, `diff` (+1/−1) and `set`.
fn write_changelog(
    ctx: &ProcessCtx,
    state: &PoolState,
    worker: usize,
    epoch: Epoch,
    mut changes: Vec<Change>,
) -> Result<(u64, BTreeMap<String, i64>)> {
    let mut deltas = BTreeMap::new();
    changes.retain(|c| c.2 == epoch && c.3 != 0);
    if changes.is_empty() {
        return Ok((0, deltas));
    }
    // Retractions first, then assertions; each in key order.
    changes.sort_by_key(|c| (c.3 > 0, c.0, c.1));
    // The changelog is serve's own record, always rows as read plus the decision,
    // whatever layout the snapshots are written in.
    let schema = ctx.tap.schema.lock().expect("schema").clone();
    let Some((schema, extras, urls)) = schema else {
        return Err(Error::other("changelog", "the output schema is unknown"));
    };
    let schema = schema.with_format(
        synpref_engine::output::OutputFormat::Input,
        synpref_engine::output::OutputFileFormat::Parquet,
    );
    let mut rows = Vec::with_capacity(changes.len());
    let (mut epochs, mut diffs, mut sets) = (Vec::new(), Vec::new(), Vec::new());
    for (key, decided, _, diff) in &changes {
        let i = state.find(*key).ok_or_else(|| {
            Error::other("changelog", "a changed pair is not in this worker's shard")
        })?;
        let pair = state.store.read(state.loc[i])?;
        let (p_best, p_gold) = (
            synpref_operators::models::sigmoid(state.m_best[i] as f64),
            synpref_operators::models::sigmoid(state.m_gold[i] as f64),
        );
        *deltas.entry(decided.reason.code().to_string()).or_default() += *diff as i64;
        rows.push(decided_row(
            pair,
            decided.reason,
            decided.swap,
            p_best,
            p_gold,
        ));
        epochs.push(epoch);
        diffs.push(*diff as i8);
        sets.push(decided.reason.destination().dir());
    }
    let arrow_schema = schema.arrow_schema(&extras, Destination::Curated);
    let batch = rows_to_batch(
        &schema,
        &arrow_schema,
        &extras,
        Destination::Curated,
        &urls,
        rows,
    )?;
    let mut fields = vec![
        Field::new("epoch", DataType::UInt64, false),
        Field::new("diff", DataType::Int8, false),
        Field::new("set", DataType::Utf8, false),
    ];
    fields.extend(batch.schema().fields().iter().map(|f| f.as_ref().clone()));
    let mut cols: Vec<ArrayRef> = vec![
        Arc::new(UInt64Array::from(epochs)),
        Arc::new(Int8Array::from(diffs)),
        Arc::new(StringArray::from(sets)),
    ];
    cols.extend(batch.columns().iter().cloned());
    let batch =
        RecordBatch::try_new(Arc::new(Schema::new(fields)), cols).map_err(|e| Error::Arrow {
            context: "changelog".into(),
            source: e,
        })?;
    let n = batch.num_rows() as u64;
    let loc = ctx
        .changelog
        .child(&format!("epoch-{epoch:010}/part-{worker:05}.parquet"));
    write_parquet_file(&loc, &[batch])?;
    Ok((n, deltas))
}
