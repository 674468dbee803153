//! Turning a job into timely workers: the timely configuration, the panic hook, and
//! gathering what the workers return.

use std::sync::Arc;

use synpref_engine::cluster::ClusterSpec;
use synpref_engine::Error;
use synpref_jobs::curate::{self, CuratePlan, CurateReport, CurateSpec};
use synpref_jobs::fractions::{self, results::FractionsReport, FractionsSpec};

/// Makes any panic abort the whole process. In a multi-threaded timely process a
/// panicking worker otherwise leaves its peers waiting forever for its progress
/// messages; aborting turns a hang into a visible failure (and, across processes,
/// peers see the connection drop).
///
/// A panic of timely's network threads (`timely:send-K`, `timely:recv-K`) is not a bug
/// of this process but the loss of process K: it ends this process with exit status 1
/// and one line naming the peer, instead of a backtrace and an abort.
pub fn install_abort_on_panic() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let thread = std::thread::current();
        let name = thread.name().unwrap_or("");
        let peer = name
            .strip_prefix("timely:recv-")
            .or_else(|| name.strip_prefix("timely:send-"))
            .and_then(|k| k.parse::<usize>().ok());
        if let Some(peer) = peer {
            let address = PEERS
                .get()
                .and_then(|a| a.get(peer).cloned())
                .unwrap_or_else(|| "unknown address".into());
            let cause = info
                .payload()
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| info.payload().downcast_ref::<&str>().copied())
                .unwrap_or("connection lost");
            eprintln!(
                "synpref: error: lost process {peer} ({address}) of the run: {cause}; ending this process (nothing was committed)"
            );
            std::process::exit(1);
        }
        default(info);
        eprintln!("synpref: a thread panicked; aborting the process so that no timely worker waits forever");
        std::process::abort();
    }));
}

/// The addresses of this run's processes, for the messages about lost peers.
static PEERS: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();

/// Ends this process (exit 1, one line naming the missing peers) unless `connected`
/// is set within the cluster's connect timeout: timely waits for its peers forever.
fn connect_watchdog(cluster: &ClusterSpec) -> Arc<std::sync::atomic::AtomicBool> {
    use std::sync::atomic::{AtomicBool, Ordering};
    let connected = Arc::new(AtomicBool::new(false));
    if cluster.addresses.len() <= 1 {
        connected.store(true, Ordering::SeqCst);
        return connected;
    }
    let _ = PEERS.set(cluster.addresses.clone());
    let flag = connected.clone();
    let cluster = cluster.clone();
    std::thread::Builder::new()
        .name("synpref:connect-watchdog".into())
        .spawn(move || {
            let deadline =
                std::time::Instant::now() + std::time::Duration::from_secs_f64(cluster.connect_timeout_s);
            while std::time::Instant::now() < deadline {
                if flag.load(Ordering::SeqCst) {
                    return;
                }
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            if flag.load(Ordering::SeqCst) {
                return;
            }
            // A started peer listens on its address: those that refuse were not started
            // (or died before connecting).
            let missing: Vec<String> = cluster
                .addresses
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != cluster.process)
                .filter(|(_, a)| {
                    use std::net::ToSocketAddrs;
                    !a.to_socket_addrs().ok().and_then(|mut s| s.next()).is_some_and(|s| {
                        std::net::TcpStream::connect_timeout(&s, std::time::Duration::from_secs(1))
                            .is_ok()
                    })
                })
                .map(|(i, a)| format!("process {i} ({a})"))
                .collect();
            let who = if missing.is_empty() {
                "every peer is listening but not all connected".to_string()
            } else {
                format!("not reachable: {}", missing.join(", "))
            };
            eprintln!(
                "synpref: error: process {} waited {} s (--connect-timeout) for the other processes of the hostfile; {who}. Start every process of the hostfile, each with its own --process",
                cluster.process, cluster.connect_timeout_s
            );
            std::process::exit(1);
        })
        .expect("start the connect watchdog");
    connected
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
    let total_workers = workers * cluster.addresses.len().max(1);
    let plan: Arc<CuratePlan> = Arc::new(curate::prepare_resumable(spec, leader, total_workers)?);
    run_job(cluster, workers, "curate", move |worker| {
        curate::run_worker(worker, &plan)
    })
}

/// Runs fractions on `spec.workers` worker threads of this process (and, with a
/// cluster, of every other process of the run).
pub fn run_fractions(
    spec: FractionsSpec,
    cluster: &ClusterSpec,
) -> Result<Option<FractionsReport>, Error> {
    let workers = spec.workers;
    let total_workers = workers * cluster.addresses.len().max(1);
    let first = cluster.process * workers;
    let plan = Arc::new(fractions::prepare(
        spec,
        total_workers,
        first..first + workers,
    )?);
    run_job(cluster, workers, "fractions", move |worker| {
        fractions::run_worker(worker, &plan)
    })
}

/// Runs stage1 on `spec.workers` worker threads of this process (and, with a cluster,
/// of every other process of the run).
pub fn run_stage1(
    spec: synpref_jobs::stage1::Stage1Spec,
    cluster: &ClusterSpec,
) -> Result<Option<synpref_jobs::stage1::Stage1Report>, Error> {
    let workers = spec.workers;
    let plan = Arc::new(synpref_jobs::stage1::prepare(spec, cluster.process == 0)?);
    run_job(cluster, workers, "stage1", move |worker| {
        synpref_jobs::stage1::run_worker(worker, &plan)
    })
}

/// Runs a job's worker function on this process's timely workers and joins them:
/// worker 0's report (`None` on the other processes), or the first worker's own error
/// in preference to the copies its peers report.
fn run_job<R: Send + 'static>(
    cluster: &ClusterSpec,
    workers: usize,
    job: &str,
    f: impl Fn(&mut timely::worker::Worker) -> Result<Option<R>, Error> + Send + Sync + 'static,
) -> Result<Option<R>, Error> {
    let leader = cluster.process == 0;
    let connected = connect_watchdog(cluster);
    let guards = timely::execute(timely_config(cluster, workers), f)
        .map_err(|e| Error::Worker(format!("cannot start timely workers: {e}")))?;
    connected.store(true, std::sync::atomic::Ordering::SeqCst);
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
        None => Err(Error::Worker(format!("{job}: worker 0 returned no report"))),
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
/// workers), connected to the other processes of `cluster`; the handle joins them
/// when dropped.
pub fn start_workers(
    cluster: &ClusterSpec,
    workers: usize,
    f: synpref_jobs::serve::WorkerFn,
) -> Result<Box<dyn std::any::Any>, Error> {
    let connected = connect_watchdog(cluster);
    let guards = timely::execute(timely_config(cluster, workers), move |w| f(w))
        .map_err(|e| Error::Worker(format!("cannot start timely workers: {e}")))?;
    connected.store(true, std::sync::atomic::Ordering::SeqCst);
    Ok(Box::new(guards))
}
