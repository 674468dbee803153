//! `synpref launch`: starts the processes of a multi-process job where the placement
//! says (this host, hosts over ssh, or this task of a Slurm step or Kubernetes Indexed
//! Job), streams their stderr with a `[pN]` prefix, sums their progress into one bar,
//! and supervises them: when one fails, the others are stopped within the grace period
//! and the launch fails naming it, its exit status and its last lines of stderr; with
//! `--restarts K` the whole job is started again up to K times.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use synpref_engine::launch::{kubernetes, shell_quote, slurm, LaunchSpec, Placement, Role};
use synpref_engine::progress::{ProgressLine, PROGRESS_ENV};
use synpref_engine::{Error, Result};

/// Lines of a failed process's stderr the launch error quotes.
const TAIL_LINES: usize = 20;
/// How often the launcher looks at its processes and redraws the bar.
const POLL: Duration = Duration::from_millis(100);

/// One process of the job as the launcher starts it.
struct Planned {
    process: usize,
    /// Where it runs, for messages: its address in the run.
    address: String,
    command: Command,
    /// The command's stdin stays open while the launcher lives (`ssh`: the remote
    /// process is killed when it closes; see `remote_command`).
    hold_stdin: bool,
}

struct Running {
    /// Held open for the process's lifetime (`Planned::hold_stdin`).
    _stdin: Option<std::process::ChildStdin>,
    process: usize,
    address: String,
    child: Child,
    tail: Arc<Mutex<VecDeque<String>>>,
    progress: Arc<Mutex<Option<ProgressLine>>>,
    reader: std::thread::JoinHandle<()>,
    ended: Option<(ExitStatus, Instant)>,
}

/// Runs the job to the end: Ok when every process exits 0.
pub fn run_launch(spec: &LaunchSpec) -> Result<()> {
    let mut attempt = 0;
    loop {
        let failure = match run_once(spec)? {
            None => return Ok(()),
            Some(f) => f,
        };
        let Error::LaunchedProcessFailed { exit_code, .. } = &failure else {
            return Err(failure);
        };
        if *exit_code == 2 || attempt >= spec.restarts {
            return Err(failure);
        }
        attempt += 1;
        eprintln!(
            "synpref launch: {failure}\nsynpref launch: starting the job again (restart {attempt} of {})",
            spec.restarts
        );
    }
}

/// The processes this launcher starts, and the addresses of all of the run's.
fn plan(spec: &LaunchSpec) -> Result<Vec<Planned>> {
    let this = std::env::current_exe()
        .map_err(|e| Error::other("launch", format!("cannot find the synpref binary: {e}")))?;
    let local = |role: Role, only_own: bool| -> Vec<Planned> {
        let own: Vec<usize> = if only_own {
            vec![role.process]
        } else {
            (0..role.addresses.len()).collect()
        };
        own.into_iter()
            .map(|p| {
                let mut command = Command::new(&this);
                command.args(spec.process_args(p, &role.addresses));
                Planned {
                    process: p,
                    address: role.addresses[p].clone(),
                    command,
                    hold_stdin: false,
                }
            })
            .collect()
    };
    let env = |k: &str| std::env::var(k).ok();
    Ok(match &spec.placement {
        Placement::Local { processes } => local(
            Role {
                process: 0,
                addresses: free_loopback_addresses(*processes)?,
            },
            false,
        ),
        Placement::Slurm { port } => local(slurm::role(&env, *port)?, true),
        Placement::Kubernetes {
            processes,
            service,
            port,
        } => local(kubernetes::role(&env, *processes, service, *port)?, true),
        Placement::Hostfile {
            path,
            ssh,
            remote_binary,
        } => {
            let addresses = synpref_engine::cluster::ClusterSpec::from_hostfile(path, 0)?.addresses;
            let binary = remote_binary
                .clone()
                .unwrap_or_else(|| this.to_string_lossy().into_owned());
            let cwd = std::env::current_dir()
                .map_err(|e| Error::other("launch", format!("no working directory: {e}")))?;
            (0..addresses.len())
                .map(|p| {
                    let host = host_of(&addresses[p]);
                    let job = std::iter::once(shell_quote(&binary))
                        .chain(
                            spec.process_args(p, &addresses)
                                .iter()
                                .map(|a| shell_quote(a)),
                        )
                        .collect::<Vec<_>>()
                        .join(" ");
                    let mut command = Command::new(&ssh[0]);
                    command
                        .args(&ssh[1..])
                        .arg(host)
                        .arg(remote_command(&cwd.to_string_lossy(), &job));
                    Planned {
                        process: p,
                        address: addresses[p].clone(),
                        command,
                        hold_stdin: true,
                    }
                })
                .collect()
        }
    })
}

/// The shell command line `ssh` runs on a host: the job in `cwd`, reporting progress as
/// lines, and beside it a watcher that kills the job once the session's stdin closes,
/// which happens when the launcher dies, however it dies (its end of the pipe closes
/// and ssh passes the EOF on). Without it a killed launcher would leave the remote
/// processes running until they lost a peer. The job's status is the command's.
fn remote_command(cwd: &str, job: &str) -> String {
    // A background command of a non-interactive shell reads /dev/null, so the watcher
    // reads the session's stdin through fd 3, saved first.
    format!(
        "cd {} && exec 3<&0 && {{ {PROGRESS_ENV}=lines {job} </dev/null & pid=$!; \
         {{ cat <&3 >/dev/null; kill -9 $pid; }} >/dev/null 2>&1 & wait $pid; }}",
        shell_quote(cwd)
    )
}

/// `host` of `host:port` (`[::1]:7100` → `::1`).
fn host_of(address: &str) -> &str {
    let host = address.rsplit_once(':').map_or(address, |(h, _)| h);
    host.trim_start_matches('[').trim_end_matches(']')
}

/// `n` distinct free ports on 127.0.0.1, held open until all are chosen so that none
/// repeats (another program could still take one before the job binds it; the job then
/// fails to connect and a `--restarts` run picks new ports).
fn free_loopback_addresses(n: usize) -> Result<Vec<String>> {
    let listeners = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<Vec<_>>>()
        .map_err(|e| Error::other("launch", format!("no free loopback port: {e}")))?;
    listeners
        .iter()
        .map(|l| {
            l.local_addr()
                .map(|a| format!("127.0.0.1:{}", a.port()))
                .map_err(|e| Error::other("launch", e))
        })
        .collect()
}

/// Starts the processes and waits for them: `None` when all exit 0, else the failure.
fn run_once(spec: &LaunchSpec) -> Result<Option<Error>> {
    let bar = job_bar();
    let mut running = Vec::new();
    for mut planned in plan(spec)? {
        planned
            .command
            .env(PROGRESS_ENV, "lines")
            .stdin(if planned.hold_stdin {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stderr(Stdio::piped());
        // SAFETY: prctl is async-signal-safe; between fork and exec it only asks the
        // kernel to kill the child when the launcher dies, so that no process of the
        // job outlives its supervisor.
        unsafe {
            planned.command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let mut child = match planned.command.spawn() {
            Ok(c) => c,
            Err(e) => {
                stop(&mut running, 0.0);
                return Err(Error::other(
                    "launch",
                    format!(
                        "cannot start process {} ({}): {e}",
                        planned.process, planned.address
                    ),
                ));
            }
        };
        bar.suspend(|| {
            eprintln!(
                "synpref launch: process {} ({}) started, pid {}",
                planned.process,
                planned.address,
                child.id()
            )
        });
        let tail = Arc::new(Mutex::new(VecDeque::new()));
        let progress = Arc::new(Mutex::new(None));
        let stderr = child.stderr.take().expect("piped stderr");
        let reader = {
            let (tail, progress, bar) = (tail.clone(), progress.clone(), bar.clone());
            let prefix = format!("[p{}] ", planned.process);
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    if let Some(p) = ProgressLine::parse(&line) {
                        *progress.lock().expect("progress") = Some(p);
                        continue;
                    }
                    bar.suspend(|| eprintln!("{prefix}{line}"));
                    let mut tail = tail.lock().expect("tail");
                    if tail.len() == TAIL_LINES {
                        tail.pop_front();
                    }
                    tail.push_back(line);
                }
            })
        };
        running.push(Running {
            _stdin: child.stdin.take(),
            process: planned.process,
            address: planned.address,
            child,
            tail,
            progress,
            reader,
            ended: None,
        });
    }
    loop {
        let now = Instant::now();
        for r in running.iter_mut().filter(|r| r.ended.is_none()) {
            if let Some(status) = r.child.try_wait().map_err(|e| Error::other("launch", e))? {
                r.ended = Some((status, now));
            }
        }
        draw(&bar, &running);
        if running
            .iter()
            .any(|r| r.ended.is_some_and(|(s, _)| !s.success()))
        {
            break;
        }
        if running.iter().all(|r| r.ended.is_some()) {
            bar.finish_and_clear();
            for r in running {
                let _ = r.reader.join();
            }
            return Ok(None);
        }
        std::thread::sleep(POLL);
    }
    stop(&mut running, spec.grace_s);
    bar.finish_and_clear();
    let culprit = culprit(&running);
    let (status, _) = running[culprit].ended.expect("ended");
    let tail: Vec<String> = running[culprit]
        .tail
        .lock()
        .expect("tail")
        .iter()
        .cloned()
        .collect();
    let others = running.len() - 1;
    let r = &running[culprit];
    let exit_code = if status.code() == Some(2) { 2 } else { 1 };
    let message = format!(
        "process {} ({}) {}; {}. Its last lines of stderr:\n{}",
        r.process,
        r.address,
        describe(status),
        if others > 0 {
            format!("stopped the other {others} process(es)")
        } else {
            "no other process of this launcher".to_string()
        },
        if tail.is_empty() {
            "  (none)".to_string()
        } else {
            tail.iter()
                .map(|l| format!("  {l}"))
                .collect::<Vec<_>>()
                .join("\n")
        }
    );
    let failure = Error::LaunchedProcessFailed {
        process: r.process,
        exit_code,
        message,
    };
    for r in running {
        let _ = r.reader.join();
    }
    Ok(Some(failure))
}

/// Waits up to `grace_s` for the processes still running to end on their own (each
/// ends soon after losing a peer), then kills the rest.
fn stop(running: &mut [Running], grace_s: f64) {
    let deadline = Instant::now() + Duration::from_secs_f64(grace_s);
    loop {
        let now = Instant::now();
        for r in running.iter_mut().filter(|r| r.ended.is_none()) {
            if let Ok(Some(status)) = r.child.try_wait() {
                r.ended = Some((status, now));
            }
        }
        if running.iter().all(|r| r.ended.is_some()) || now >= deadline {
            break;
        }
        std::thread::sleep(POLL);
    }
    for r in running.iter_mut().filter(|r| r.ended.is_none()) {
        let _ = r.child.kill();
        if let Ok(status) = r.child.wait() {
            r.ended = Some((status, Instant::now()));
        }
    }
}

/// The process whose failure ended the run: one killed by a signal the launcher did not
/// send, else the first to fail that does not report a lost peer (the others of a
/// timely run end, exit 1, naming the process they lost).
fn culprit(running: &[Running]) -> usize {
    let failed = |r: &Running| r.ended.is_some_and(|(s, _)| !s.success());
    let lost_peer = |r: &Running| {
        r.tail.lock().expect("tail").iter().any(|l| {
            l.contains("lost process") || l.contains("waited") && l.contains("--connect-timeout")
        })
    };
    let order = |r: &Running| r.ended.map(|(_, at)| at);
    (0..running.len())
        .filter(|&i| failed(&running[i]))
        .min_by_key(|&i| {
            let r = &running[i];
            let signalled = r.ended.is_some_and(|(s, _)| s.signal().is_some());
            (!signalled, lost_peer(r), order(r), r.process)
        })
        .unwrap_or(0)
}

fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exited with status {c}"),
        (None, Some(s)) => format!(
            "was killed by signal {s}{}",
            if s == 9 { " (SIGKILL)" } else { "" }
        ),
        _ => status.to_string(),
    }
}

/// The launcher's one bar (drawn only when stderr is a terminal).
fn job_bar() -> indicatif::ProgressBar {
    let bar =
        indicatif::ProgressBar::with_draw_target(None, indicatif::ProgressDrawTarget::stderr());
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{msg} [{bar:30}] {human_pos}/{human_len} ({per_sec}, eta {eta})",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar
}

/// What the job's one bar shows: the stage most processes report (the earliest
/// process's on a tie), how many report it, the rows they have done together, and the
/// stage's length. Every process's bar counts the whole input (a process's workers share
/// one bar whose length is the plan's estimate for all input), so the length is the
/// largest reported, not their sum.
fn job_progress(lines: &[ProgressLine]) -> Option<(String, usize, u64, u64)> {
    let count = |m: &str| lines.iter().filter(|l| l.message == m).count();
    let stage = lines
        .iter()
        .max_by_key(|l| {
            (
                count(&l.message),
                std::cmp::Reverse(lines.iter().position(|x| x.message == l.message)),
            )
        })?
        .message
        .clone();
    let same: Vec<&ProgressLine> = lines.iter().filter(|l| l.message == stage).collect();
    let length = same.iter().map(|l| l.length).max().unwrap_or(0);
    // A bar finished by its process reports its whole length (indicatif sets the
    // position to the length), which the others' rows would then overshoot.
    let position: u64 = same.iter().map(|l| l.position).sum();
    let position = if length > 0 {
        position.min(length)
    } else {
        position
    };
    Some((stage, same.len(), position, length))
}

fn draw(bar: &indicatif::ProgressBar, running: &[Running]) {
    let lines: Vec<ProgressLine> = running
        .iter()
        .filter_map(|r| r.progress.lock().expect("progress").clone())
        .collect();
    let Some((stage, reporting, position, length)) = job_progress(&lines) else {
        return;
    };
    bar.set_message(format!("{stage} ({reporting}/{} processes)", running.len()));
    if length > 0 {
        bar.set_length(length);
    }
    bar.set_position(position);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(message: &str, position: u64, length: u64) -> ProgressLine {
        ProgressLine {
            message: message.into(),
            position,
            length,
            unit: "pairs".into(),
        }
    }

    #[test]
    fn the_job_bar_sums_the_processes_rows_of_the_stage_most_of_them_are_in() {
        assert_eq!(job_progress(&[]), None);
        let lines = [
            line("survey", 1_000_000, 1_000_000),
            line("curate", 200_000, 1_000_000),
            line("curate", 300_000, 1_000_000),
        ];
        assert_eq!(
            job_progress(&lines),
            Some(("curate".to_string(), 2, 500_000, 1_000_000))
        );
        // Process 0 finished its bar (position = length): never past the whole.
        let finished = [line("survey", 100, 100), line("survey", 50, 100)];
        assert_eq!(job_progress(&finished).unwrap().2, 100);
        // A tie goes to the stage the earliest process reports.
        let tie = [line("survey", 10, 100), line("curate", 5, 100)];
        assert_eq!(job_progress(&tie).unwrap().0, "survey");
    }
}
