//! `serve`: Stage 2 kept current as human gold labels arrive (DESIGN §2, "serve is the
//! same graph in differential dataflow"), on one process or many.
//!
//! Threads of serve's process 0 (the others run only workers: `run_follower`):
//! - timely workers, on every process (`worker`): first a curate pass over the pool,
//!   its graph composed from curate's stages and serve's captures (`state::ServeGraph`),
//!   after which each worker owns the shard of pairs it scored (`state::PoolState`);
//!   then, in lockstep, the commands worker 0 hands them: epochs (a label batch:
//!   the gold RM learned on every worker, each shard re-scored where the weight move
//!   can change a decision, the changed decisions written as each worker's changelog
//!   part) and snapshots (a curate pass whose scorers read the shards; each shard
//!   saved beside it).
//! - the controller (the main thread): turns label batches into commands, waits for
//!   worker 0's figures, keeps `/v1/status`, and asks for snapshots every
//!   `snapshot_every` epochs or when asked.
//! - the ingest thread (`ingest`): the only writer of the label log; appends HTTP
//!   batches and the complete lines of the label files under `--labels`, listed on a
//!   timer of their own, one segment each, durably, before anything is acknowledged or
//!   applied. A failed write ends serve (exit 1).
//! - the HTTP server, started first by the caller (the binary's `http` module) with
//!   the `Api` that `run_serve` hands it: the jobs crate starts no runtime or server.
//!
//! Restart: the label log is the source of truth. A restarted serve loads the state
//! saved with the last snapshot (or recomputes it from scratch), replays the segments
//! logged after it as the epochs they were (`/v1/status` says `recovering`, with
//! figures that never go backwards), and goes on: no acknowledged label is lost and
//! the state equals what the first process would hold.

pub mod aliases;
pub mod conflicts;
pub mod decisions;
pub mod gold;
mod ingest;
pub mod job;
pub mod snapshots;
pub mod state;
pub mod worker;

use std::collections::BTreeMap;
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use synpref_engine::input::FileFormat;
use synpref_engine::label_log::LabelLog;
use synpref_engine::model::{Destination, GoldLabel};
use synpref_engine::pool_store::PoolStore;
use synpref_engine::side::{read_label_records, GoldLabels};
use synpref_engine::store::{resolve, Location};
use synpref_engine::{Error, Result};
use synpref_operators::models::{LoadedModel, ModelSpec};
use timely::worker::Worker;

use crate::curate::{self, CurateSpec};
use gold::GoldFeatures;
use ingest::Ingester;
use state::{PoolState, ServeTap};
use worker::{ProcessCtx, ServeCommand, StartInfo, WorkerReport};

/// The settings of a serve run. Every knob's name, default and meaning is here.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ServeSpec {
    /// The curate settings serve keeps current (pairs, threshold, models, …); its `gold`
    /// is the label log and its `out` the snapshot directory, both set by serve.
    pub curate: CurateSpec,
    /// Prefix listed every `poll_interval_s` for label files (Parquet or JSONL gold
    /// labels; names starting with `_` or `.` are skipped). A JSONL file is taken up to
    /// its last complete line and again as it grows; a Parquet file whole, once
    /// complete. Append to a file or add new ones; a rewritten file is rejected
    /// (`ingest`).
    pub labels: Option<String>,
    /// Output: `snapshot/`, `changelog/`, `labels-log/` (unless `label_log` is set).
    pub out: String,
    /// Where accepted label batches are logged (default `OUT/labels-log`).
    pub label_log: Option<String>,
    /// Address of the HTTP API. Loopback unless told otherwise: the API accepts labels.
    pub listen: String,
    /// Seconds between listings of `labels`.
    pub poll_interval_s: f64,
    /// Epochs between automatic snapshots (0: only when asked).
    pub snapshot_every: u64,
    /// Largest accepted HTTP body (bytes).
    pub max_body_bytes: usize,
    /// Backlog bound: while more label records than this are logged but not applied,
    /// `POST /v1/labels` answers 503 with `Retry-After` (nothing is logged), so that
    /// an acknowledgement never stands for minutes-stale work.
    pub max_pending_labels: u64,
    /// Local directory for the pool store (default: the system temporary directory).
    pub pool_dir: Option<String>,
    /// How decisions are kept: one per pair in each shard (`shard`, the default: no
    /// arrangements) or differential dataflow's reduce over the facts
    /// (`differential`); the same decisions either way (docs/benchmarks.md compares
    /// their memory and latency).
    pub decisions: decisions::DecisionEngine,
}

impl Default for ServeSpec {
    fn default() -> Self {
        ServeSpec {
            curate: CurateSpec::default(),
            labels: None,
            out: String::new(),
            label_log: None,
            listen: "127.0.0.1:8787".into(),
            poll_interval_s: 2.0,
            snapshot_every: 100,
            // 16 MiB: about 100K labels with their pair ids per request.
            max_body_bytes: 16 << 20,
            // Group commit applies a backlog in one epoch; 100K labels is one
            // epoch of a few seconds at 1M pairs (docs/benchmarks.md), a bound that
            // only a stalled serve or a flood reaches.
            max_pending_labels: 100_000,
            pool_dir: None,
            decisions: decisions::DecisionEngine::default(),
        }
    }
}

impl ServeSpec {
    fn label_log_url(&self) -> String {
        self.label_log
            .clone()
            .unwrap_or_else(|| format!("{}/labels-log", self.out.trim_end_matches('/')))
    }

    /// The curate spec of serve's passes: gold from the label log, out to `snapshot/`.
    fn curate_spec(&self) -> CurateSpec {
        let mut c = self.curate.clone();
        c.gold = self.label_log_url();
        c.out = format!("{}/snapshot", self.out.trim_end_matches('/'));
        c
    }

    pub fn validate(&self) -> Result<()> {
        if self.out.is_empty() {
            return Err(Error::setting("--out", "is required"));
        }
        self.curate_spec().validate()?;
        match &self.curate.gold_rm {
            ModelSpec::Builtin => {}
            ModelSpec::Encoder(_) if self.curate.score_cache.is_none() => {
                return Err(Error::setting(
                    "--score-cache",
                    "serve with an encoder gold RM needs the score cache: it retrains the head from cached encoder outputs every epoch (drop --no-score-cache)",
                ))
            }
            ModelSpec::Encoder(_) => {}
            ModelSpec::Hf(_) => {
                return Err(Error::setting(
                    "--gold-rm",
                    "serve retrains the gold RM on the labels every epoch: use `builtin` or `encoder:DIR` (an `hf:` model is not trained on labels)",
                ))
            }
        }
        if self.poll_interval_s.is_nan() || self.poll_interval_s <= 0.0 {
            return Err(Error::setting("--poll-interval", "must be positive"));
        }
        if self.max_body_bytes == 0 {
            return Err(Error::setting("--max-body-bytes", "must be positive"));
        }
        if self.max_pending_labels == 0 {
            return Err(Error::setting("--max-pending-labels", "must be positive"));
        }
        self.listen
            .parse::<std::net::SocketAddr>()
            .map_err(|e| Error::setting("--listen", format!("`{}`: {e}", self.listen)))?;
        Ok(())
    }
}

/// Where a serve process is in its life.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ServeState {
    /// The first pass over the pool (or the load of a saved state) is running.
    #[default]
    Loading,
    /// Loaded; applying the epochs the label log holds beyond the loaded state.
    Recovering,
    /// Every epoch acknowledged before this process started is applied.
    Ready,
}

/// Progress of a restart through the label log.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Recovery {
    /// The epoch the loaded state (saved state, or the first pass) stands at.
    pub loaded_epoch: u64,
    /// The last epoch the log held when this process started: `ready` once applied.
    pub target_epoch: u64,
    /// Epochs applied so far.
    pub applied_epoch: u64,
}

/// What `GET /v1/status` reports.
///
/// `epoch` and `labels_total` never go backwards, across restarts included: until a
/// restarted process has applied what the label log holds (`state` `loading` or
/// `recovering`), they give what was acknowledged before it started, and
/// `applied_epoch` and `recovery` say how far it has got.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Status {
    pub state: ServeState,
    pub epoch: u64,
    /// The last epoch whose labels the decisions reflect.
    pub applied_epoch: u64,
    pub recovery: Option<Recovery>,
    /// Label records applied so far (relabels and duplicates included).
    pub labels_total: u64,
    /// Label records accepted into the log but not applied yet.
    pub labels_pending: u64,
    /// Epochs this process has applied since it started. With group commit one epoch
    /// takes every batch waiting, so under load this grows slower than `epoch` (the
    /// log's segments).
    pub epochs_applied: u64,
    pub label_files_taken: u64,
    pub label_files_rejected: Vec<String>,
    /// Label records (without their pair's text) whose pair id matches no valid pool
    /// row: logged (the pool may be re-run), but they decide nothing.
    pub labels_unmatched: u64,
    /// The first few such pair ids.
    pub labels_unmatched_ids: Vec<String>,
    pub input_rows: u64,
    pub curated_rows: u64,
    pub discarded_rows: u64,
    pub quarantined_rows: u64,
    pub reasons: BTreeMap<String, u64>,
    pub pool_pairs: u64,
    pub state_bytes_per_pair: f64,
    pub last_update: Option<UpdateStats>,
    pub snapshot_epoch: Option<u64>,
    /// This process started from the state saved with a snapshot (no model ran for
    /// the epochs up to it).
    pub recovered_from_saved_state: bool,
    pub started_unix_s: u64,
    /// The run's self-measurement (DESIGN §4 `quality`), as of the last pass that
    /// trained and measured the models.
    pub quality: Option<synpref_engine::report::Quality>,
}

/// One epoch's figures.
#[derive(Clone, Debug, Default, Serialize)]
pub struct UpdateStats {
    /// The epoch: the last label-log segment it applied.
    pub epoch: u64,
    /// Logged batches (segments) the epoch applied together (group commit).
    pub batches: u64,
    pub labels: u64,
    pub latency_s: f64,
    pub train_s: f64,
    pub rescore_s: f64,
    pub dataflow_s: f64,
    pub rescored_pairs: u64,
    pub weight_drift: f64,
    pub changed_rows: u64,
}

/// Messages to the controller.
pub enum Control {
    /// A batch appended to the log as segment `seq`.
    Labels { seq: u64, labels: Vec<GoldLabel> },
    /// Compact now; the reply carries the snapshot's report.
    Snapshot(mpsc::Sender<Result<serde_json::Value>>),
    /// The label log cannot be written: serve stops (exit 1) so that nothing is
    /// acknowledged that would not be applied; a restart applies everything logged.
    Fatal(String),
    /// The process was asked to stop (SIGTERM, SIGINT: the name): once the epoch in
    /// flight is applied, serve says what it logged and applied, removes its pool
    /// store and returns (exit 0). A restart applies anything logged after.
    Stop(String),
}

/// Messages to the ingest thread.
pub enum Ingest {
    Http {
        labels: Vec<GoldLabel>,
        reply: mpsc::Sender<Result<u64>>,
    },
}

/// What the HTTP API's handlers share with serve: the token, the ingest and control
/// channels, the status.
#[derive(Clone)]
pub struct Api {
    pub token: Arc<String>,
    pub ingest: Arc<Mutex<mpsc::Sender<Ingest>>>,
    pub control: Arc<Mutex<mpsc::Sender<Control>>>,
    pub status: Arc<Mutex<Status>>,
    pub max_body_bytes: usize,
    /// `ServeSpec::max_pending_labels`.
    pub max_pending_labels: u64,
    /// The pair keys of the pool's valid rows, once the first pass is done.
    pub pool_keys: PoolKeys,
}

/// The sorted pair keys of every valid pool row, known on process 0 once the first pass
/// is done (8 bytes per row): the API answers which ids of a label batch match no pair.
pub type PoolKeys = Arc<std::sync::OnceLock<Vec<u64>>>;

/// How many unmatched ids `/v1/status` names.
const NAMED_UNMATCHED: usize = 5;

/// The pair ids among `labels` (those without their pair's text) that no pool row has.
pub fn unmatched_ids<'a>(pool_keys: &[u64], labels: &'a [GoldLabel]) -> Vec<&'a str> {
    labels
        .iter()
        .filter(|l| l.text.is_none())
        .filter(|l| {
            pool_keys
                .binary_search(&synpref_engine::hashing::pair_key(&l.pair_id))
                .is_err()
        })
        .map(|l| l.pair_id.as_str())
        .collect()
}

/// Counts a batch's unmatched labels into the status.
fn count_unmatched(st: &mut Status, pool_keys: &[u64], labels: &[GoldLabel]) {
    for id in unmatched_ids(pool_keys, labels) {
        st.labels_unmatched += 1;
        if st.labels_unmatched_ids.len() < NAMED_UNMATCHED
            && !st.labels_unmatched_ids.iter().any(|i| i == id)
        {
            st.labels_unmatched_ids.push(id.to_string());
        }
    }
}

/// What serve runs on each of its timely workers.
pub use crate::job::WorkerFn;

/// What serve needs started for it, supplied by the binary: the jobs crate starts no
/// thread pool, runtime or server of its own.
pub struct ServeRuntime<'a> {
    /// Starts the HTTP API on `listen` for `api`; returns the bound address.
    pub start_api: &'a dyn Fn(&str, Api) -> Result<std::net::SocketAddr>,
    /// Starts `workers` timely worker threads in this process (with the workers of
    /// the run's other processes, if any), each running the function; the returned
    /// handle joins them when dropped.
    pub start_workers: &'a dyn Fn(usize, WorkerFn) -> Result<Box<dyn std::any::Any>>,
    /// This process's index among the run's processes (0: the one with the API, the
    /// label log and the controller), and how many there are.
    pub process: usize,
    pub processes: usize,
}

/// Runs serve until the process is killed (or a fatal error), on the workers and with
/// the HTTP API that `runtime` starts.
pub fn run_serve(spec: ServeSpec, token: String, runtime: ServeRuntime<'_>) -> Result<()> {
    spec.validate()?;
    if runtime.process != 0 {
        return run_follower(spec, runtime);
    }
    let started = Instant::now();
    let out = resolve(&spec.out)?;
    // One serve per output: a second would append to the same label log.
    let _lock = synpref_engine::out_lock::lock_output(&out, "--out")?;
    let log = LabelLog::open(&spec.label_log_url())?;
    let torn = log.remove_torn_writes()?;
    if torn > 0 {
        tracing::info!(
            files = torn,
            "removed staging files of label-log writes a kill interrupted"
        );
    }
    let labels_dir = spec.labels.as_deref().map(resolve).transpose()?;
    let status = Arc::new(Mutex::new(Status {
        started_unix_s: unix_now(),
        ..Default::default()
    }));
    let fatal: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
    let mut ingest = Ingester::new(log.clone(), labels_dir, status.clone(), fatal.clone())?;
    let (control_tx, control_rx) = mpsc::channel::<Control>();
    let (ingest_tx, ingest_rx) = mpsc::channel::<Ingest>();
    let pool_keys = PoolKeys::default();
    // The API first: a port in use ends serve at once (exit 2, naming the address),
    // and while the pool loads `/v1/status` says so and labels are already logged.
    let addr = (runtime.start_api)(
        &spec.listen,
        Api {
            token: Arc::new(token),
            ingest: Arc::new(Mutex::new(ingest_tx)),
            control: Arc::new(Mutex::new(control_tx.clone())),
            status: status.clone(),
            max_body_bytes: spec.max_body_bytes,
            max_pending_labels: spec.max_pending_labels,
            pool_keys: pool_keys.clone(),
        },
    )?;
    eprintln!("synpref serve: listening on http://{addr} (loading)");
    // Label files already there (and complete: the same size at two listings) are
    // taken before the first pass.
    let poll = Duration::from_secs_f64(spec.poll_interval_s);
    ingest.poll()?;
    std::thread::sleep(poll.min(Duration::from_secs(1)));
    ingest.poll()?;
    let segments = log.segments()?;
    let cspec = spec.curate_spec();
    let state_dir = out.child("state");
    // A state saved at epoch E spares every model its work up to E; the segments after
    // it are applied as epochs once serve is up.
    let saved =
        PoolState::load_meta(&state_dir, &cspec)?.filter(|s| s.epoch <= segments.len() as u64);
    let epoch0 = saved
        .as_ref()
        .map(|s| s.epoch)
        .unwrap_or(segments.len() as u64);
    let mut labels = GoldLabels::default();
    let mut replay = Vec::new();
    let mut acknowledged = 0u64;
    for seg in &segments {
        let batch = log.read(seg)?.labels;
        acknowledged += batch.len() as u64;
        if seg.seq <= epoch0 {
            for l in batch {
                labels.insert(l);
            }
        } else {
            replay.push((seg.seq, batch));
        }
    }
    let target_epoch = segments.len() as u64;
    {
        // What was acknowledged before this process started: shown until applied, so
        // that no figure goes backwards over a restart.
        let mut st = status.lock().expect("status");
        st.epoch = target_epoch;
        st.labels_total = acknowledged;
        st.labels_pending = acknowledged;
        st.recovery = Some(Recovery {
            loaded_epoch: epoch0,
            target_epoch,
            applied_epoch: 0,
        });
    }
    // Segments logged after the saved state go first, as the epochs they were; then
    // whatever the ingest thread logs from now on.
    for (seq, labels) in replay {
        let _ = control_tx.send(Control::Labels { seq, labels });
    }
    {
        let control_tx = control_tx.clone();
        std::thread::Builder::new()
            .name("synpref-ingest".into())
            .spawn(move || ingest.run(ingest_rx, control_tx, poll))
            .map_err(|e| Error::other("ingest thread", e))?;
    }
    tracing::info!(
        segments = segments.len(),
        from_saved_state = saved.is_some(),
        epoch = epoch0,
        records = labels.records,
        "label log read"
    );
    clear_changelog(&out.child("changelog"), saved.is_some(), epoch0)?;
    let (reports_tx, reports_rx) = mpsc::channel::<WorkerReport>();
    let ctx = process_ctx(&spec, &cspec, &out, true, reports_tx)?;
    let mut snapshots = snapshots::Snapshots::open(&out, &spec.out)?;
    // The first pass writes the snapshot of epoch0 into a version of its own.
    let first_snapshot = snapshots.next_dir(epoch0);
    *ctx.start.lock().expect("start") = Some(StartInfo {
        epoch0,
        labels: labels.stream.clone(),
        saved: saved.is_some(),
        snapshot_dir: first_snapshot.clone(),
    });
    let workers = start_workers(&ctx, &runtime)?;
    let recovered = saved.is_some();
    let mut controller = Controller {
        spec: &spec,
        ctx: &ctx,
        reports: reports_rx,
        fatal: &fatal,
        status: &status,
        target_epoch,
        applied_labels: labels.records,
        last_snapshot: epoch0,
        quality_stale: false,
        snapshots,
        pool_keys: pool_keys.clone(),
    };
    let WorkerReport::Loaded {
        report: initial_report,
        figures,
        quality,
        pool_keys: keys,
    } = controller.wait("the first pass")?
    else {
        return Err(Error::Worker(
            "the workers did not report the first pass".into(),
        ));
    };
    if !recovered {
        // The state of the first pass, so that a restart from here runs no model.
        // (The first pass wrote the snapshot of this epoch already.)
        ctx.command(ServeCommand::Snapshot {
            epoch: epoch0,
            pass: false,
            dir: None,
        });
        if let WorkerReport::Snapshot(r) = controller.wait("saving the first state")? {
            r?;
        }
    }
    controller.snapshots.publish(&first_snapshot)?;
    {
        let mut st = status.lock().expect("status");
        show_applied(&mut st, epoch0, controller.applied_labels, target_epoch);
        st.labels_pending = st.labels_pending.saturating_sub(controller.applied_labels);
        st.pool_pairs = figures.pairs;
        st.state_bytes_per_pair = figures.bytes as f64 / figures.pairs.max(1) as f64;
        st.snapshot_epoch = Some(epoch0);
        st.recovered_from_saved_state = recovered;
        count_unmatched(&mut st, &keys, &labels.stream);
        apply_report_counts(&mut st, &initial_report);
        if st.quality.is_none() {
            // A restart from a saved state trained nothing: measure from the state.
            st.quality = quality.map(|q| *q);
        }
    }
    let _ = pool_keys.set(keys);
    tracing::info!(
        epoch = epoch0,
        pairs = figures.pairs,
        seconds = started.elapsed().as_secs_f64(),
        "serve loaded"
    );
    let replaying = if target_epoch > epoch0 {
        format!(
            "; applying the logged epochs {}..={target_epoch}",
            epoch0 + 1
        )
    } else {
        String::new()
    };
    eprintln!(
        "synpref serve: loaded at epoch {epoch0} in {:.1} s{replaying}",
        started.elapsed().as_secs_f64()
    );
    drop(control_tx);
    controller.run(control_rx)?;
    // Stopped (or every sender gone): the workers of every process end, and this
    // process waits for them so that the others see the job end, not a lost process.
    ctx.command(ServeCommand::Stop);
    workers.join();
    remove_pool_store(&ctx);
    Ok(())
}

/// Clears the changelog a restart writes again: all of it without a saved state, else
/// the epochs after the saved one (replayed by however many workers this run has).
fn clear_changelog(changelog: &Location, saved: bool, epoch0: u64) -> Result<()> {
    if !saved {
        return changelog.delete_prefix();
    }
    for name in changelog.list_names()? {
        let epoch = name
            .strip_prefix("epoch-")
            .and_then(|r| r.split('/').next())
            .and_then(|e| e.parse::<u64>().ok());
        if epoch.is_some_and(|e| e > epoch0) {
            changelog.child(&name).delete()?;
        }
    }
    Ok(())
}

/// serve's controller on the leader process: applies each logged batch of labels as an
/// epoch on the workers, takes snapshots, and keeps `/v1/status` current.
struct Controller<'a> {
    spec: &'a ServeSpec,
    ctx: &'a ProcessCtx,
    reports: mpsc::Receiver<WorkerReport>,
    fatal: &'a Mutex<Option<String>>,
    status: &'a Mutex<Status>,
    /// The epoch of the label log when this process started.
    target_epoch: u64,
    /// Label records applied so far.
    applied_labels: u64,
    last_snapshot: u64,
    /// An epoch was applied since the last self-measurement.
    quality_stale: bool,
    /// The snapshot versions and the link that names the current one.
    snapshots: snapshots::Snapshots,
    /// Set once the first pass is done.
    pool_keys: PoolKeys,
}

impl Controller<'_> {
    /// The workers' next report, or the error that ended them, a worker's or the label
    /// log's.
    fn wait(&self, what: &str) -> Result<WorkerReport> {
        loop {
            match self.reports.recv_timeout(Duration::from_millis(50)) {
                Ok(r) => return Ok(r),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(Error::Worker(format!("the workers stopped during {what}")))
                }
            }
            if let Some(e) = self.ctx.error.lock().expect("error").take() {
                return Err(e);
            }
            if let Some(e) = self.fatal.lock().expect("fatal").clone() {
                return Err(Error::other("label log", e));
            }
        }
    }

    /// Writes the snapshot of `epoch`; its report, with the epoch.
    fn snapshot(&mut self, epoch: u64) -> Result<serde_json::Value> {
        let t = Instant::now();
        let dir = self.snapshots.next_dir(epoch);
        self.ctx.command(ServeCommand::Snapshot {
            epoch,
            pass: true,
            dir: Some(dir.clone()),
        });
        let WorkerReport::Snapshot(r) = self.wait("a snapshot")? else {
            return Err(Error::Worker(
                "the workers did not report the snapshot".into(),
            ));
        };
        let report =
            r?.ok_or_else(|| Error::Worker("the snapshot pass returned no report".into()))?;
        self.snapshots.publish(&dir)?;
        self.status.lock().expect("status").snapshot_epoch = Some(epoch);
        tracing::info!(
            epoch,
            seconds = t.elapsed().as_secs_f64(),
            "snapshot written"
        );
        let mut report =
            serde_json::to_value(report).map_err(|e| Error::other("snapshot report", e))?;
        if let Some(o) = report.as_object_mut() {
            o.insert("epoch".into(), epoch.into());
        }
        Ok(report)
    }

    /// Measures the labels so far if an epoch came since the last measurement.
    fn refresh_quality(&mut self) -> Result<()> {
        if self.quality_stale {
            self.ctx.command(ServeCommand::Quality);
            if let WorkerReport::Quality(Some(q)) = self.wait("the self-measurement")? {
                self.status.lock().expect("status").quality = Some(*q);
            }
            self.quality_stale = false;
        }
        Ok(())
    }

    /// Applies logged segment `seq` as an epoch.
    fn apply_epoch(&mut self, seq: u64, labels: Vec<GoldLabel>) -> Result<()> {
        let n = labels.len() as u64;
        if let Some(keys) = self.pool_keys.get() {
            count_unmatched(&mut self.status.lock().expect("status"), keys, &labels);
        }
        let t = Instant::now();
        self.ctx.command(ServeCommand::Epoch { seq, labels });
        let WorkerReport::Epoch {
            figures,
            dataflow_s,
        } = self.wait("an epoch")?
        else {
            return Err(Error::Worker("the workers did not report the epoch".into()));
        };
        let previous = self.status.lock().expect("status").applied_epoch;
        let stats = UpdateStats {
            epoch: seq,
            batches: seq.saturating_sub(previous).max(1),
            labels: n,
            latency_s: t.elapsed().as_secs_f64(),
            train_s: figures.train_s,
            rescore_s: figures.rescore_s,
            dataflow_s,
            rescored_pairs: figures.rescored,
            weight_drift: figures.drift,
            changed_rows: figures.changed_rows,
        };
        tracing::info!(?stats, "epoch applied");
        self.applied_labels += n;
        {
            let mut st = self.status.lock().expect("status");
            show_applied(&mut st, seq, self.applied_labels, self.target_epoch);
            st.labels_pending = st.labels_pending.saturating_sub(n);
            st.epochs_applied += 1;
            for (reason, d) in &figures.reason_deltas {
                let e = st.reasons.entry(reason.clone()).or_default();
                *e = (*e as i64 + d) as u64;
            }
            recount(&mut st);
            st.state_bytes_per_pair = figures.bytes as f64 / figures.pairs.max(1) as f64;
            st.last_update = Some(stats);
        }
        self.quality_stale = true;
        if self.spec.snapshot_every > 0 && seq - self.last_snapshot >= self.spec.snapshot_every {
            self.snapshot(seq)?;
            self.last_snapshot = seq;
        }
        Ok(())
    }

    /// Serves the control channel until it closes (every sender gone) or an error.
    ///
    /// Group commit: an epoch takes every logged batch waiting when it starts (each
    /// already durable and acknowledged, in log order), so the apply rate grows with
    /// the load instead of being one epoch per request, and a restart replays its
    /// backlog in a few epochs. An epoch is named after the last segment it applies;
    /// the decisions depend only on the labels so far, never on how they were grouped
    /// (the online gold-RM fold takes the same labels in the same order; an encoder
    /// head is retrained from scratch), which the serve oracle tests check.
    fn run(mut self, control: mpsc::Receiver<Control>) -> Result<()> {
        let mut next: Option<Control> = None;
        loop {
            let received = match next.take() {
                Some(msg) => Ok(msg),
                None => control.recv_timeout(Duration::from_millis(50)),
            };
            let msg = match received {
                Ok(Control::Labels { seq, labels }) => {
                    let (seq, labels, after) = gather_waiting(seq, labels, &control);
                    next = after;
                    Control::Labels { seq, labels }
                }
                Ok(msg) => msg,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    // Idle: measure the labels so far if an epoch came since, remove
                    // snapshot versions past their grace period, and end on a worker's
                    // error.
                    self.refresh_quality()?;
                    self.snapshots.prune()?;
                    if let Some(e) = self.ctx.error.lock().expect("error").take() {
                        return Err(e);
                    }
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => return Ok(()),
            };
            match msg {
                Control::Labels { seq, labels } => self.apply_epoch(seq, labels)?,
                Control::Snapshot(reply) => {
                    // A snapshot is a checkpoint: the status it leaves measures the
                    // labels so far.
                    self.refresh_quality()?;
                    let epoch = self.status.lock().expect("status").applied_epoch;
                    let r = self.snapshot(epoch);
                    if r.is_ok() {
                        self.last_snapshot = epoch;
                    }
                    let _ = reply.send(r);
                }
                Control::Stop(signal) => {
                    let st = self.status.lock().expect("status").clone();
                    eprintln!(
                        "synpref serve: {signal}: stopping at epoch {} with {} labels applied and {} logged but not applied (a restart applies them); every acknowledged label is in the label log",
                        st.applied_epoch, st.labels_total, st.labels_pending
                    );
                    // run_serve stops the workers and removes the pool store.
                    return Ok(());
                }
                Control::Fatal(e) => {
                    // A moment for the HTTP server to send the failed request its 5xx
                    // before the process ends.
                    std::thread::sleep(Duration::from_millis(500));
                    return Err(Error::other("label log", e));
                }
            }
        }
    }
}

/// The batch `seq` with every batch already waiting behind it on `control`, in log
/// order: (the last segment's number, all their labels, the first other message met).
fn gather_waiting(
    mut seq: u64,
    mut labels: Vec<GoldLabel>,
    control: &mpsc::Receiver<Control>,
) -> (u64, Vec<GoldLabel>, Option<Control>) {
    loop {
        match control.try_recv() {
            Ok(Control::Labels {
                seq: s,
                labels: more,
            }) => {
                debug_assert!(s > seq, "segments arrive in log order");
                seq = s;
                labels.extend(more);
            }
            Ok(other) => return (seq, labels, Some(other)),
            Err(_) => return (seq, labels, None),
        }
    }
}

/// The process context of a serve process: its pool store, captures and settings.
fn process_ctx(
    spec: &ServeSpec,
    cspec: &CurateSpec,
    out: &Location,
    leader: bool,
    reports: mpsc::Sender<WorkerReport>,
) -> Result<Arc<ProcessCtx>> {
    let workers = cspec.machine.run.workers;
    let registry = curate::ModelRegistry::default();
    let pool_dir = spec.pool_dir.as_ref().map(std::path::PathBuf::from);
    let store = Arc::new(PoolStore::create(pool_dir.as_deref())?);
    let gold_model = registry.features(
        "--gold-rm",
        &cspec.gold_rm,
        &cspec.models,
        cspec.score_cache.as_deref(),
    )?;
    let gold_features = match gold_model {
        LoadedModel::Builtin => GoldFeatures::Hashed {
            bits: cspec.train.feature_bits,
        },
        // Serve's own reads of the encoder outputs (features records, the head's
        // training set) go through a view, so that reports count only scoring.
        // (`validate` refuses an `hf:` gold RM.)
        LoadedModel::Encoder(f) | LoadedModel::Hf(f) => {
            GoldFeatures::Encoder(Arc::new(f.uncounted_view()))
        }
    };
    let tap = Arc::new(ServeTap::new(store, gold_features, workers)?);
    Ok(Arc::new(ProcessCtx::new(
        cspec.clone(),
        registry,
        workers,
        leader,
        tap,
        out,
        reports,
        spec.decisions,
    )))
}

/// The process's running workers: [`Workers::join`] after `ServeCommand::Stop`, which
/// every worker of every process obeys. Dropped otherwise (serve ending with an error,
/// when workers may wait for a command that never comes), they are left to the
/// process's exit rather than joined, which would hang.
struct Workers(Option<Box<dyn std::any::Any>>);

impl Workers {
    /// Waits for the workers to end (and timely's connections to other processes to
    /// close): only after they were told `ServeCommand::Stop`.
    fn join(mut self) {
        drop(self.0.take());
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        if let Some(guards) = self.0.take() {
            std::mem::forget(guards);
        }
    }
}

/// Starts the process's workers.
fn start_workers(ctx: &Arc<ProcessCtx>, runtime: &ServeRuntime<'_>) -> Result<Workers> {
    let worker_ctx = ctx.clone();
    let guards = (runtime.start_workers)(
        ctx.local_workers,
        Box::new(move |worker: &mut Worker| worker::serve_worker(worker, &worker_ctx)),
    )?;
    Ok(Workers(Some(guards)))
}

/// Removes this process's pool store (serve stopped cleanly).
fn remove_pool_store(ctx: &ProcessCtx) {
    let dir = ctx.tap.store.path().to_path_buf();
    if let Err(e) = std::fs::remove_dir_all(&dir) {
        tracing::warn!(dir = %dir.display(), error = %e, "could not remove the pool store");
    }
}

/// A process of a multi-process serve other than the first: its workers own their
/// shards and follow worker 0's commands; it has no API, label log or controller. It
/// ends (with the error) when one of its workers fails, and cleanly (its pool store
/// removed, exit 0) when process 0 stops the job; the loss of another process ends it
/// through the runner's panic hook.
fn run_follower(spec: ServeSpec, runtime: ServeRuntime<'_>) -> Result<()> {
    let out = resolve(&spec.out)?;
    let cspec = spec.curate_spec();
    let (reports_tx, _reports_rx) = mpsc::channel::<WorkerReport>();
    let ctx = process_ctx(&spec, &cspec, &out, false, reports_tx)?;
    let workers = start_workers(&ctx, &runtime)?;
    eprintln!(
        "synpref serve: process {} of {} started",
        runtime.process, runtime.processes
    );
    loop {
        if let Some(e) = ctx.error.lock().expect("error").take() {
            return Err(e);
        }
        if ctx.stopped.load(std::sync::atomic::Ordering::SeqCst) == ctx.local_workers {
            workers.join();
            remove_pool_store(&ctx);
            eprintln!(
                "synpref serve: process {}: stopped by process 0",
                runtime.process
            );
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Records that the decisions reflect every label up to `epoch` (`labels` records in
/// all): the shown figures only move forward, and the process is `ready` once the
/// epoch the log held at its start is applied.
fn show_applied(st: &mut Status, epoch: u64, labels: u64, target_epoch: u64) {
    st.applied_epoch = epoch;
    st.epoch = st.epoch.max(epoch);
    st.labels_total = st.labels_total.max(labels);
    if let Some(r) = &mut st.recovery {
        r.applied_epoch = epoch;
    }
    st.state = if epoch >= target_epoch {
        st.recovery = None;
        ServeState::Ready
    } else {
        ServeState::Recovering
    };
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn apply_report_counts(st: &mut Status, report: &curate::CurateReport) {
    st.reasons = report.reasons.clone();
    if report.quality.is_some() {
        st.quality = report.quality.clone();
    }
    recount(st);
}

fn recount(st: &mut Status) {
    use synpref_engine::model::Reason;
    let (mut c, mut d, mut q) = (0, 0, 0);
    for (k, v) in &st.reasons {
        match Reason::from_code(k).map(|r| r.destination()) {
            Some(Destination::Curated) => c += v,
            Some(Destination::Discarded) => d += v,
            Some(Destination::Quarantine) => q += v,
            None => {}
        }
    }
    st.curated_rows = c;
    st.discarded_rows = d;
    st.quarantined_rows = q;
    st.input_rows = c + d + q;
}

/// `label add --pairs`: refuses a label file with pair ids (labels without text) that
/// no row of the pool at `pairs` has, naming the first few.
pub fn check_labels_match(file: &str, pairs: &str) -> Result<()> {
    let labels = read_label_records(file)?;
    let mut keys = Vec::new();
    synpref_engine::side::for_each_string_row(pairs, &["pair_id"], |_, _, v| {
        if let Some(id) = v[0] {
            keys.push(synpref_engine::hashing::pair_key(id));
        }
        Ok(())
    })?;
    keys.sort_unstable();
    let unmatched = unmatched_ids(&keys, &labels);
    if unmatched.is_empty() {
        return Ok(());
    }
    let first: Vec<&str> = unmatched.iter().take(NAMED_UNMATCHED).copied().collect();
    Err(Error::bad_file(
        file,
        format!(
            "{} of its {} labels name pair ids that no row of --pairs {pairs} has (first: {}): nothing was added; correct the pair_id column",
            unmatched.len(),
            labels.len(),
            first.join(", ")
        ),
    ))
}

/// `synpref label add`: checks a gold-label file (every row must be a valid label) and
/// adds a copy under `labels` with a new, time-ordered name, in one atomic put, for a
/// serve polling that prefix to take. Returns the label count and the new file's URL.
pub fn add_label_file(labels: &str, file: &str) -> Result<(usize, String)> {
    let parsed = read_label_records(file)?;
    let src = resolve(file)?;
    let ext = match FileFormat::of(src.path.as_ref()) {
        Some(FileFormat::Parquet) => "parquet",
        _ => "jsonl",
    };
    let bytes = src.get()?.to_vec();
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    let name = format!(
        "labels-{millis:015}-{:016x}.{ext}",
        xxhash_rust::xxh3::xxh3_64(&bytes)
    );
    let dest = resolve(labels)?.child(&name);
    dest.put_new_durable(bytes)?;
    Ok((parsed.len(), dest.url))
}
