//! Turning a job into timely workers: the timely configuration, the panic hook, and
//! gathering what the workers return.

use std::sync::Arc;

use synpref_engine::Error;
use synpref_jobs::curate::{self, CuratePlan, CurateSpec, Report};

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

fn timely_config(workers: usize) -> timely::Config {
    if workers == 1 {
        timely::Config::thread()
    } else {
        timely::Config::process(workers)
    }
}

/// Runs curate on `spec.workers` worker threads of this process.
pub fn run_curate(spec: CurateSpec) -> Result<Report, Error> {
    let workers = spec.workers;
    let plan: Arc<CuratePlan> = Arc::new(curate::prepare(spec)?);
    let guards = timely::execute(timely_config(workers), move |worker| curate::run_worker(worker, &plan))
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
    report.ok_or_else(|| Error::Worker("worker 0 returned no report".into()))
}
