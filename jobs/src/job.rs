//! The seam every job goes through: a plain-data spec that validates itself, a plan
//! prepared once per process from the spec and the process's [`Role`], an execution (on
//! this process's timely workers, or on the calling thread for a job that needs none),
//! a typed report, and a summary printed from it.
//!
//! The binary owns processes, threads and servers (DESIGN §2): it hands a job a
//! [`Host`] that starts timely workers, and runs every job the same way:
//! `validate` → `prepare` → `execute` → `summary` (`cluster/src/runner.rs`). A job that
//! extends another composes the other's plan and execution (demo runs gen then curate;
//! fractions with `--gold` runs curate first), it does not reach into it.

use std::ops::Range;
use std::sync::{mpsc, Arc, Mutex};

use serde::{Deserialize, Serialize};
use synpref_engine::{Error, Result};
use timely::worker::Worker;

/// Where this process stands in a run: its index among the run's processes, how many
/// there are, and how many timely workers each runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Role {
    /// This process's index (0: the leader, which writes the report).
    pub process: usize,
    /// Processes of the run (1 without `--hostfile`/`--peers`).
    pub processes: usize,
    /// Timely worker threads in each process.
    pub workers: usize,
}

impl Role {
    /// One process with `workers` worker threads.
    pub fn single(workers: usize) -> Role {
        Role {
            process: 0,
            processes: 1,
            workers,
        }
    }

    /// Whether this process leads the run (writes its report and commits its output).
    pub fn leader(&self) -> bool {
        self.process == 0
    }

    /// Timely workers of the whole run.
    pub fn total_workers(&self) -> usize {
        self.workers * self.processes.max(1)
    }

    /// The global indices of this process's workers.
    pub fn local_workers(&self) -> Range<usize> {
        let first = self.process * self.workers;
        first..first + self.workers
    }
}

/// The run settings every job has, whatever its work: how many timely worker threads
/// each process runs and whether progress bars are drawn. Declared once as flags
/// (`cluster/src/cli/common.rs`, `RunArgs`). The specs of the jobs that run on timely
/// workers (curate through its `MachineSettings`, serve, fractions, stage1, demo)
/// embed this block with `#[serde(flatten)]`, so their saved specs keep the keys
/// `workers` and `progress`; the serial jobs (score, eval, export, gen, annotate,
/// tasks) run on one worker and carry only `progress` (`SerialJob::progress`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RunSettings {
    /// Timely worker threads in this process (1 for jobs that run on one thread).
    pub workers: usize,
    /// Draw progress bars on standard error.
    pub progress: bool,
}

impl Default for RunSettings {
    /// One worker, progress bars on (they hide themselves when stderr is not a
    /// terminal).
    fn default() -> Self {
        RunSettings {
            workers: 1,
            progress: true,
        }
    }
}

impl RunSettings {
    /// Checks the worker count (`--workers`): at least one, and at most 1,024 threads
    /// in a process (more is a typo, not a machine).
    pub fn validate(&self) -> Result<()> {
        if self.workers == 0 || self.workers > 1024 {
            return Err(Error::setting(
                "--workers",
                format!("{} is not between 1 and 1024", self.workers),
            ));
        }
        Ok(())
    }

    /// One worker, with or without progress bars: the jobs that run on the calling
    /// thread (score, eval, export, gen, annotate, tasks).
    pub fn serial(progress: bool) -> RunSettings {
        RunSettings {
            workers: 1,
            progress,
        }
    }

    /// The number of CPU cores, as polars and DuckDB default their thread pools.
    pub fn default_workers() -> usize {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    }
}

/// What one timely worker runs: the host starts a worker thread per call of it.
pub type WorkerFn = Box<dyn Fn(&mut Worker) -> Result<()> + Send + Sync + 'static>;

/// What the binary starts for a job: the jobs crate starts no thread pool, runtime or
/// server of its own.
pub trait Host {
    /// Starts `workers` timely worker threads in this process (with the workers of the
    /// run's other processes, if any), each running `f`; the returned handle joins them
    /// when dropped.
    fn start_workers(&self, workers: usize, f: WorkerFn) -> Result<Box<dyn std::any::Any>>;
}

/// A job: a spec (`Self`) that validates itself and prepares a plan, the plan's
/// execution, and the summary printed from its report.
pub trait Job: Sized {
    /// The job's name in messages.
    const NAME: &'static str;
    /// What a process prepares once from the spec and its role, shared by its workers.
    type Plan: Send + Sync + 'static;
    /// What the leader returns (the other processes return `None`).
    type Report: Send + 'static;

    /// The run settings (worker threads, progress bars).
    fn run_settings(&self) -> RunSettings;

    /// Checks the settings without reading any input: a bad one is `Error::Setting`
    /// naming the flag (exit 2).
    fn validate(&self) -> Result<()>;

    /// Reads what every worker of this process needs (input listings, models).
    fn prepare(self, role: &Role) -> Result<Self::Plan>;

    /// Runs the plan: a dataflow job on the host's workers ([`on_workers`]), a serial
    /// one on the calling thread. The leader's report; `None` on the other processes.
    fn execute(plan: Arc<Self::Plan>, role: &Role, host: &dyn Host)
        -> Result<Option<Self::Report>>;

    /// What the binary prints on standard output when the job is done.
    fn summary(plan: &Self::Plan, report: &Self::Report) -> String;
}

/// A job that runs on the calling thread of one process (score, eval, export, gen,
/// annotate, tasks, label add): its spec is its plan, and `run` returns its report.
pub trait SerialJob: Sized + Send + Sync + 'static {
    /// The job's name in messages.
    const NAME: &'static str;
    /// What `run` returns.
    type Report: Send + 'static;

    /// Whether progress bars are drawn.
    fn progress(&self) -> bool {
        false
    }

    /// Checks the settings without reading any input (exit 2 naming the flag).
    fn check(&self) -> Result<()> {
        Ok(())
    }

    /// Does the job.
    fn run(&self) -> Result<Self::Report>;

    /// What the binary prints on standard output when the job is done.
    fn summarise(&self, report: &Self::Report) -> String;
}

impl<T: SerialJob> Job for T {
    const NAME: &'static str = T::NAME;
    type Plan = T;
    type Report = T::Report;

    fn run_settings(&self) -> RunSettings {
        RunSettings::serial(self.progress())
    }

    fn validate(&self) -> Result<()> {
        self.check()
    }

    fn prepare(self, _role: &Role) -> Result<T> {
        Ok(self)
    }

    fn execute(plan: Arc<T>, _role: &Role, _host: &dyn Host) -> Result<Option<T::Report>> {
        plan.run().map(Some)
    }

    fn summary(plan: &T, report: &T::Report) -> String {
        plan.summarise(report)
    }
}

/// Runs `work` on each of this process's `role.workers` timely workers and joins them:
/// the report of the worker that returned one (global worker 0), `None` on processes
/// without it, or the first worker's own error in preference to the copies its peers
/// report (`Error::PeerFailed`).
pub fn on_workers<P, R>(
    job: &'static str,
    host: &dyn Host,
    role: &Role,
    plan: Arc<P>,
    work: fn(&mut Worker, &P) -> Result<Option<R>>,
) -> Result<Option<R>>
where
    P: Send + Sync + 'static,
    R: Send + 'static,
{
    let (sender, results) = mpsc::channel::<Result<Option<R>>>();
    let sender = Mutex::new(sender);
    let guards = host.start_workers(
        role.workers,
        Box::new(move |worker: &mut Worker| {
            let outcome = work(worker, &plan);
            // The receiver outlives the workers (it is read after they are joined).
            let _ = sender.lock().expect("worker result channel").send(outcome);
            Ok(())
        }),
    )?;
    // Joins every worker (a panicking worker aborts the process: the binary's hook).
    drop(guards);
    let mut report = None;
    let mut first_error: Option<Error> = None;
    for outcome in results.try_iter() {
        match outcome {
            Ok(Some(r)) => report = Some(r),
            Ok(None) => {}
            Err(e) => {
                // Prefer a worker's own error to the copies its peers report.
                let replace = match (&first_error, &e) {
                    (None, _) => true,
                    (Some(Error::PeerFailed { .. }), e) => !matches!(e, Error::PeerFailed { .. }),
                    _ => false,
                };
                if replace {
                    first_error = Some(e);
                }
            }
        }
    }
    if let Some(e) = first_error {
        return Err(e);
    }
    match report {
        Some(r) => Ok(Some(r)),
        // Processes other than the first have no report; worker 0 wrote it.
        None if !role.leader() => Ok(None),
        None => Err(Error::Worker(format!("{job}: worker 0 returned no report"))),
    }
}

/// Prepares and executes `job` as the binary's runner does, without the summary: for a
/// job that composes another (demo runs curate after gen).
pub fn run_nested<J: Job>(
    job: J,
    role: &Role,
    host: &dyn Host,
) -> Result<Option<(Arc<J::Plan>, J::Report)>> {
    job.validate()?;
    let role = Role {
        workers: job.run_settings().workers,
        ..*role
    };
    let plan = Arc::new(job.prepare(&role)?);
    Ok(J::execute(plan.clone(), &role, host)?.map(|r| (plan, r)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_of_the_second_process_owns_the_second_range_of_workers() {
        let role = Role {
            process: 1,
            processes: 3,
            workers: 4,
        };
        assert!(!role.leader());
        assert_eq!(role.total_workers(), 12);
        assert_eq!(role.local_workers(), 4..8);
        assert!(Role::single(2).leader());
    }

    #[test]
    fn worker_counts_outside_one_to_1024_are_refused_naming_the_flag() {
        for bad in [0, 1025] {
            let err = RunSettings {
                workers: bad,
                progress: false,
            }
            .validate()
            .unwrap_err();
            assert_eq!(err.exit_code(), 2);
            assert!(err.to_string().contains("--workers"), "{err}");
        }
        assert!(RunSettings::serial(false).validate().is_ok());
    }
}
