//! `synpref launch` (issue 13): a job started as several local processes gives the
//! rows one process gives; a process that dies ends the launch within seconds, naming
//! it; `--restarts` starts the job again and it completes; bad usage is refused.

use super::*;
use std::io::BufRead;
use std::sync::Mutex;

/// A running `synpref launch` with its stderr collected line by line.
struct Launch {
    child: std::process::Child,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl Launch {
    fn start(args: &[&str]) -> Launch {
        let mut child = Command::new(env!("CARGO_BIN_EXE_synpref"))
            .arg("launch")
            .args(args)
            .env("RUST_LOG", "warn")
            .env("SYNPREF_TOKEN", TOKEN)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start synpref launch");
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let pipe = child.stderr.take().unwrap();
        let lines = stderr.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(pipe).lines().map_while(|l| l.ok()) {
                lines.lock().unwrap().push(line);
            }
        });
        Launch { child, stderr }
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }

    /// The pid of `process` as the launcher announced it (waits for the line).
    fn pid_of(&self, process: usize) -> u32 {
        let started = std::time::Instant::now();
        let prefix = format!("synpref launch: process {process} (");
        loop {
            if let Some(pid) = self.stderr.lock().unwrap().iter().rev().find_map(|l| {
                l.strip_prefix(&prefix)?
                    .rsplit_once("pid ")?
                    .1
                    .parse::<u32>()
                    .ok()
            }) {
                return pid;
            }
            assert!(
                started.elapsed().as_secs() < 60,
                "no pid line: {}",
                self.stderr()
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

impl Drop for Launch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn sigkill(pid: u32) {
    let st = Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    assert!(st.success(), "kill -9 {pid}");
}

/// The same rows, and with the same workers the same bytes in every part.
fn assert_same_rows(a: &Path, b: &Path) {
    assert_same_part_bytes(a, b);
    for dest in ["curated", "discarded", "quarantine"] {
        assert!(
            read_rows(&a.join(dest)) == read_rows(&b.join(dest)),
            "{dest} differs between {} and {}",
            a.display(),
            b.display()
        );
    }
}

fn curate_args<'a>(pairs: &'a Path, gold: &'a Path, out: &'a Path) -> Vec<&'a str> {
    let mut args = curate_argv(pairs, gold, out);
    args.extend(["--workers", "1"]);
    args
}

/// Generated pairs and gold labels, and the reference: one process of 2 workers.
struct Reference {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    pairs: PathBuf,
    gold: PathBuf,
    single: PathBuf,
}

/// `synpref launch FLAGS -- curate ...` (1 worker per process) into `DIR/name`: it
/// succeeds with 2 workers in all and writes the reference's bytes.
fn launches_the_reference(r: &Reference, flags: &[&str], name: &str) {
    let out = r.dir.join(name);
    let mut args = flags.to_vec();
    args.push("--");
    args.extend(curate_args(&r.pairs, &r.gold, &out));
    let mut run = Launch::start(&args);
    assert_eq!(
        exit_within(&mut run.child, 300),
        Some(0),
        "{}",
        run.stderr()
    );
    assert_eq!(assert_accounting(&out)["workers"], 2);
    assert_same_rows(&r.single, &out);
}

fn reference(pairs: u64, seed: u64) -> Reference {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    gen(&dir.join("g"), pairs, seed);
    let (p, g, single) = (
        dir.join("g/pairs"),
        dir.join("g/gold.parquet"),
        dir.join("single"),
    );
    let mut args = curate_args(&p, &g, &single);
    *args.last_mut().unwrap() = "2";
    ok(&args);
    Reference {
        _tmp: tmp,
        dir,
        pairs: p,
        gold: g,
        single,
    }
}

#[test]
fn launch_local_2_curates_the_rows_of_one_process_and_restarts_after_a_sigkill() {
    let r = reference(6_000, 5);
    let (pairs, gold, single) = (&r.pairs, &r.gold, &r.single);
    launches_the_reference(&r, &["--local", "2"], "launched");

    // Killed as soon as it starts, restarted once: it completes with the same rows.
    let restarted = r.dir.join("restarted");
    let mut a = vec!["--local", "2", "--restarts", "1", "--"];
    a.extend(curate_args(&pairs, &gold, &restarted));
    let mut run = Launch::start(&a);
    sigkill(run.pid_of(1));
    assert_eq!(
        exit_within(&mut run.child, 300),
        Some(0),
        "{}",
        run.stderr()
    );
    let err = run.stderr();
    assert!(
        err.contains("process 1 (") && err.contains("SIGKILL"),
        "{err}"
    );
    assert!(err.contains("restart 1 of 1"), "{err}");
    assert_accounting(&restarted);
    assert_same_rows(&single, &restarted);
}

#[test]
fn a_sigkilled_process_ends_the_launch_within_10_s_with_exit_1_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("g");
    gen(&data, 2_000, 6);
    let (pairs, out) = (data.join("pairs"), tmp.path().join("serve"));
    let addr = format!("127.0.0.1:{}", free_port());
    let run = Launch::start(&[
        "--local",
        "2",
        "--",
        "serve",
        "--pairs",
        s(&pairs),
        "--out",
        s(&out),
        "--listen",
        &addr,
        "--workers",
        "1",
        "--snapshot-every",
        "0",
    ]);
    // The job is up: process 0 answers that both processes are ready.
    wait_until_serving(&addr, &run);
    let mut run = run;
    let killed_at = std::time::Instant::now();
    sigkill(run.pid_of(1));
    let code = exit_within(&mut run.child, 10);
    assert!(killed_at.elapsed().as_secs() < 10);
    assert_eq!(code, Some(1), "{}", run.stderr());
    let err = run.stderr();
    assert!(
        err.contains("synpref: error: process 1 (127.0.0.1:") && err.contains("killed by signal 9"),
        "the launch must name the process that died: {err}"
    );
    // The other process is gone too: its API no longer answers.
    assert!(
        std::net::TcpStream::connect(&addr).is_err(),
        "process 0 still serves"
    );
}

#[test]
fn launch_refuses_single_process_jobs_cluster_flags_and_does_not_restart_bad_usage() {
    let tmp = tempfile::tempdir().unwrap();
    let e = fails_with(
        &[
            "launch", "--local", "2", "--", "gen", "--pairs", "10", "--out", "x",
        ],
        2,
    );
    assert!(e.contains("JOB") && e.contains("gen"), "{e}");
    let e = fails_with(
        &["launch", "--local", "2", "--", "curate", "--process", "1"],
        2,
    );
    assert!(e.contains("--process"), "{e}");
    fails_with(&["launch", "--", "curate"], 2);
    // Processes that refuse their arguments (exit 2): no restart, the launch exits 2.
    let missing = tmp.path().join("missing");
    let out = tmp.path().join("out");
    let mut run = Launch::start(&[
        "--local",
        "2",
        "--restarts",
        "3",
        "--",
        "curate",
        "--pairs",
        s(&missing),
        "--gold",
        s(&missing),
        "--out",
        s(&out),
    ]);
    assert_eq!(exit_within(&mut run.child, 60), Some(2), "{}", run.stderr());
    let err = run.stderr();
    assert!(
        err.contains("exited with status 2") && err.contains(s(&missing)),
        "{err}"
    );
    assert!(!err.contains("restart 1"), "{err}");
}

/// A real OpenSSH server on a loopback port that lets in one generated key: what
/// `launch --hostfile` needs of a host. Fails (does not skip) without `sshd` and
/// `ssh-keygen`: scripts/test.sh installs openssh-server.
struct LoopbackSshd {
    child: std::process::Child,
    /// The `--ssh` command that reaches it.
    ssh: String,
    _dir: tempfile::TempDir,
}

impl LoopbackSshd {
    fn start() -> LoopbackSshd {
        let dir = tempfile::tempdir().unwrap();
        let keygen = |name: &str| {
            let st = Command::new("ssh-keygen")
                .args([
                    "-q",
                    "-t",
                    "ed25519",
                    "-N",
                    "",
                    "-f",
                    s(&dir.path().join(name)),
                ])
                .status()
                .expect("ssh-keygen (openssh-client) is needed: scripts/test.sh installs it");
            assert!(st.success());
        };
        keygen("host_key");
        keygen("client_key");
        std::fs::copy(
            dir.path().join("client_key.pub"),
            dir.path().join("authorized_keys"),
        )
        .unwrap();
        let port = free_port();
        let config = dir.path().join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nAuthorizedKeysFile {}\n\
                 PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n\
                 StrictModes no\nPidFile none\n",
                s(&dir.path().join("host_key")),
                s(&dir.path().join("authorized_keys"))
            ),
        )
        .unwrap();
        // sshd started as root wants its privilege-separation directory.
        let _ = std::fs::create_dir_all("/run/sshd");
        let sshd = ["/usr/sbin/sshd", "/usr/local/sbin/sshd", "sshd"]
            .into_iter()
            .find(|p| !p.starts_with('/') || Path::new(p).exists())
            .unwrap();
        let child = Command::new(sshd)
            .args(["-D", "-e", "-f", s(&config)])
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect(
                "sshd (openssh-server) is needed for launch --hostfile's test: scripts/test.sh installs it",
            );
        let started = std::time::Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed().as_secs() < 20,
                "sshd did not listen on {port}"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let ssh = format!(
            "ssh -i {} -p {port} -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR",
            s(&dir.path().join("client_key"))
        );
        LoopbackSshd {
            child,
            ssh,
            _dir: dir,
        }
    }
}

impl Drop for LoopbackSshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn launch_over_ssh_from_a_hostfile_curates_the_rows_of_one_process() {
    let sshd = LoopbackSshd::start();
    let r = reference(3_000, 8);
    let hostfile = r.dir.join("hosts");
    std::fs::write(
        &hostfile,
        format!(
            "# two processes on loopback, reached over ssh\n127.0.0.1:{}\n127.0.0.1:{}\n",
            free_port(),
            free_port()
        ),
    )
    .unwrap();
    launches_the_reference(
        &r,
        &["--hostfile", s(&hostfile), "--ssh", &sshd.ssh],
        "over-ssh",
    );

    // A launcher killed outright takes its remote processes with it (they would
    // otherwise run on until they lost a peer): a serve job's API goes away.
    let addr = format!("127.0.0.1:{}", free_port());
    let token = r.dir.join("token");
    std::fs::write(&token, TOKEN).unwrap();
    let serve_out = r.dir.join("serve");
    let mut run = Launch::start(&[
        "--hostfile",
        s(&hostfile),
        "--ssh",
        &sshd.ssh,
        "--",
        "serve",
        "--pairs",
        s(&r.pairs),
        "--out",
        s(&serve_out),
        "--listen",
        &addr,
        "--token-file",
        s(&token),
        "--workers",
        "1",
    ]);
    wait_until_serving(&addr, &run);
    run.child.kill().unwrap();
    run.child.wait().unwrap();
    let killed_at = std::time::Instant::now();
    while std::net::TcpStream::connect(&addr).is_ok() {
        assert!(
            killed_at.elapsed().as_secs() < 10,
            "the remote serve outlived its launcher by 10 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// Waits until process 0 of a launched serve answers that every process is ready.
fn wait_until_serving(addr: &str, run: &Launch) {
    let started = std::time::Instant::now();
    while !std::net::TcpStream::connect(addr).is_ok_and(|_| {
        http(addr, "GET", "/v1/status", Some(TOKEN), b"")
            .1
            .contains(r#""state":"ready""#)
    }) {
        assert!(
            started.elapsed().as_secs() < 300,
            "not ready: {}",
            run.stderr()
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[test]
fn launch_slurm_tasks_find_each_other_from_slurms_variables_and_curate_the_rows_of_one_process() {
    // Two tasks of one step on one node, as `srun --ntasks=2` starts them: each
    // launcher reads its SLURM_* variables; node `localhost`, ports base and base + 1.
    let r = reference(3_000, 9);
    let (pairs, gold, single) = (&r.pairs, &r.gold, &r.single);
    let out = r.dir.join("slurm");
    let port = free_port().to_string();
    let mut tasks: Vec<std::process::Child> = (0..2)
        .map(|task| {
            Command::new(env!("CARGO_BIN_EXE_synpref"))
                .args(["launch", "--slurm", "--port", &port, "--"])
                .args(curate_args(&pairs, &gold, &out))
                .env("SLURM_PROCID", task.to_string())
                .env("SLURM_NTASKS", "2")
                .env("SLURM_JOB_NODELIST", "localhost")
                .env("SLURM_TASKS_PER_NODE", "2")
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    for t in &mut tasks {
        assert_eq!(exit_within(t, 300), Some(0));
    }
    assert_eq!(assert_accounting(&out)["workers"], 2);
    assert_same_rows(&single, &out);
}

#[test]
fn a_launched_curate_restarted_after_a_sigkill_resumes_the_slices_every_process_committed() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("g");
    // 24 files of one row group each: 12 shards per worker, 4 slices of 3,000 rows.
    gen_with(&data, 24000, 12, &["--rows-per-file", "1000"]);
    let (pairs, gold) = (data.join("pairs"), data.join("gold.parquet"));
    let sliced = ["--slice-rows", "3000", "--no-progress"];
    let single = tmp.path().join("single");
    let mut args = curate_argv(&pairs, &gold, &single);
    args.extend(["--workers", "2"]);
    args.extend(sliced);
    ok(&args);

    let out = tmp.path().join("launched");
    let mut args = vec!["--local", "2", "--restarts", "1", "--"];
    args.extend(curate_args(&pairs, &gold, &out));
    args.extend(sliced);
    let mut run = Launch::start(&args);
    let pid = run.pid_of(1);
    let resume = out.join("_staging/resume");
    let started = std::time::Instant::now();
    while !(0..2).all(|w| resume.join(format!("slice-w{w:05}-s000000.json")).exists()) {
        assert!(
            started.elapsed().as_secs() < 300,
            "no slice committed: {}",
            run.stderr()
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    sigkill(pid);
    assert_eq!(
        exit_within(&mut run.child, 300),
        Some(0),
        "{}",
        run.stderr()
    );
    assert!(run.stderr().contains("restart 1 of 1"), "{}", run.stderr());
    let r = assert_accounting(&out);
    let resumed = &r["resume"];
    assert_eq!(resumed["survey_resumed"], true, "{resumed}");
    let slices = resumed["slices_resumed"].as_u64().unwrap();
    assert!((1..4).contains(&slices), "{resumed}");
    assert_eq!(resumed["rows_resumed"], slices * 2 * 3_000, "{resumed}");
    assert_eq!(
        resumed["rows_read"],
        24_000 - slices * 2 * 3_000,
        "{resumed}"
    );
    assert_same_part_bytes(&single, &out);
}
