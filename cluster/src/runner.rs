//! Running any job (`synpref_jobs::job::Job`) on timely workers: the timely
//! configuration of this process (threads, or one process of a cluster), the watchdog
//! for peers that never connect, and the panic hook that ends the process.

use std::sync::Arc;

use synpref_engine::cluster::ClusterSpec;
use synpref_engine::Error;
use synpref_jobs::job::{Host, Job, Role, WorkerFn};

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
        // A corrupt Parquet page the parquet crate panics on, inside a reader that
        // turns the panic into an error naming the file (`input::catch_parquet_panic`).
        if synpref_engine::input::panic_is_caught() {
            return;
        }
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

/// The timely workers of this process (and, with a cluster, of its peers): what every
/// job runs on.
struct TimelyHost<'a> {
    cluster: &'a ClusterSpec,
}

impl Host for TimelyHost<'_> {
    fn start_workers(&self, workers: usize, f: WorkerFn) -> Result<Box<dyn std::any::Any>, Error> {
        let connected = connect_watchdog(self.cluster);
        let guards = timely::execute(timely_config(self.cluster, workers), move |w| f(w))
            .map_err(|e| Error::Worker(format!("cannot start timely workers: {e}")))?;
        connected.store(true, std::sync::atomic::Ordering::SeqCst);
        Ok(Box::new(guards))
    }
}

/// Runs any job the same way: validates its spec, prepares its plan once for this
/// process's role in `cluster`, executes it on this process's timely workers, and
/// prints the summary of the report (the leader's; the other processes print none).
pub fn run<J: Job>(job: J, cluster: &ClusterSpec) -> Result<(), Error> {
    job.validate()?;
    let role = Role {
        process: cluster.process,
        processes: cluster.addresses.len().max(1),
        workers: job.run_settings().workers,
    };
    let plan = Arc::new(job.prepare(&role)?);
    if let Some(report) = J::execute(plan.clone(), &role, &TimelyHost { cluster })? {
        print!("{}", J::summary(&plan, &report));
    }
    Ok(())
}
