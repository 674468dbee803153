//! Turning a job into timely workers: the timely configuration, the panic hook, and
//! gathering what the workers return.

use std::sync::Arc;

use synpref_engine::cluster::ClusterSpec;
use synpref_engine::Error;
use synpref_jobs::curate::{self, CuratePlan, CurateReport, CurateSpec};

/// Makes any panic abort the whole process. In a multi-threaded timely process a
/// panicking worker otherwise leaves its peers waiting forever for its progress
/// messages; aborting turns a hang into a visible failure (and, across processes,
/// peers see the connection drop).
pub fn install_abort_on_panic() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default(info);
        eprintln!("synpref: a thread panicked; aborting the process so that no timely worker waits forever");
        std::process::abort();
    }));
}

/// The timely configuration of this process: threads, or one of a cluster.
fn timely_config(cluster: &ClusterSpec, workers: usize) -> timely::Config {
    if cluster.addresses.len() > 1 {
        timely::Config {
            communication: timely::CommunicationConfig::Cluster {
                threads: workers,
                process: cluster.process,
                addresses: cluster.addresses.clone(),
                report: false,
                zerocopy: false,
            },
            worker: timely::WorkerConfig::default(),
        }
    } else if workers == 1 {
        timely::Config::thread()
    } else {
        timely::Config::process(workers)
    }
}

/// Runs curate on `spec.workers` worker threads of this process (and, with a cluster,
/// of every other process of the run).
pub fn run_curate(spec: CurateSpec, cluster: &ClusterSpec) -> Result<Option<CurateReport>, Error> {
    let workers = spec.machine.workers;
    let leader = cluster.process == 0;
    let plan: Arc<CuratePlan> = Arc::new(curate::prepare(spec, leader)?);
    let guards = timely::execute(timely_config(cluster, workers), move |worker| {
        curate::run_worker(worker, &plan)
    })
    .map_err(|e| Error::Worker(format!("cannot start timely workers: {e}")))?;
    let mut report = None;
    let mut first_error: Option<Error> = None;
    for (i, r) in guards.join().into_iter().enumerate() {
        match r {
            Ok(Ok(Some(rep))) => report = Some(rep),
            Ok(Ok(None)) => {}
            Ok(Err(e)) => {
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
            Err(panic) => return Err(Error::Worker(format!("worker {i} panicked: {panic}"))),
        }
    }
    if let Some(e) = first_error {
        return Err(e);
    }
    match report {
        Some(r) => Ok(Some(r)),
        // Processes other than the first have no report; worker 0 wrote it.
        None if !leader => Ok(None),
        None => Err(Error::Worker("worker 0 returned no report".into())),
    }
}

/// The dataflow graphs of a curate run with `spec`, built on one worker with empty
/// inputs: nothing is read beyond the plan, nothing is trained or written.
pub fn explain_curate(spec: CurateSpec) -> Result<String, Error> {
    let plan: Arc<CuratePlan> = Arc::new(curate::prepare(spec, false)?);
    let guards = timely::execute(timely::Config::thread(), move |worker| {
        curate::explain::explain_worker(worker, &plan)
    })
    .map_err(|e| Error::Worker(format!("cannot start a timely worker: {e}")))?;
    guards
        .join()
        .into_iter()
        .next()
        .and_then(|r| r.ok())
        .ok_or_else(|| Error::Worker("the explaining worker failed".into()))
}

/// Starts `workers` timely worker threads in this process running `f` (serve's
/// workers); the handle joins them when dropped.
pub fn start_workers(
    workers: usize,
    f: synpref_jobs::serve::WorkerFn,
) -> Result<Box<dyn std::any::Any>, Error> {
    let guards = timely::execute(timely_config(&ClusterSpec::default(), workers), move |w| {
        f(w)
    })
    .map_err(|e| Error::Worker(format!("cannot start timely workers: {e}")))?;
    Ok(Box::new(guards))
}
