//! `launch`: where the processes of a multi-process job run, turned into a launch spec.

use clap::Args;

#[derive(Args)]
#[command(group(clap::ArgGroup::new("placement").required(true).args(["local", "hostfile", "slurm", "kubernetes"])))]
pub struct LaunchArgs {
    /// Start N processes on this host, on free loopback ports.
    #[arg(long, value_name = "N")]
    local: Option<usize>,
    /// Start one process per line of FILE (host:port) over ssh; each host needs the
    /// synpref binary (--remote-binary) and the job's files at the same paths.
    #[arg(long, value_name = "FILE")]
    hostfile: Option<String>,
    /// Run as this task of a Slurm step (`srun synpref launch --slurm -- ...`): the
    /// index from SLURM_PROCID, the peers from SLURM_JOB_NODELIST.
    #[arg(long)]
    slurm: bool,
    /// Run as this pod of a Kubernetes Indexed Job (index from JOB_COMPLETION_INDEX,
    /// peers `<job>-<i>.<service>`); see deploy/kubernetes/.
    #[arg(long)]
    kubernetes: bool,
    /// --kubernetes: the number of pods (the Job's completions and parallelism).
    #[arg(long, env = "SYNPREF_PROCESSES", required_if_eq("kubernetes", "true"))]
    processes: Option<usize>,
    /// --kubernetes: the headless Service the pods' template names as subdomain.
    #[arg(long, env = "SYNPREF_SERVICE", default_value = "synpref")]
    service: String,
    /// --slurm and --kubernetes: the port of each process (plus its index among the
    /// tasks of its node).
    #[arg(long, default_value_t = synpref_engine::launch::DEFAULT_PORT)]
    port: u16,
    /// --hostfile: the command that runs a command line on a host.
    #[arg(long, default_value = "ssh -o BatchMode=yes")]
    ssh: String,
    /// --hostfile: the synpref binary's path on the hosts [default: this binary's path].
    #[arg(long)]
    remote_binary: Option<String>,
    /// Start the whole job again up to K times when a process fails (not after exit
    /// status 2, bad usage).
    #[arg(long, default_value_t = 0, value_name = "K")]
    restarts: u32,
    /// Seconds to let the other processes end on their own after one fails, before
    /// they are killed.
    #[arg(long, default_value_t = synpref_engine::launch::DEFAULT_GRACE_S)]
    grace: f64,
    /// The job and its arguments, after `--`: e.g. `-- curate --pairs P --gold G --out O`.
    #[arg(last = true, required = true, value_name = "JOB ARGS")]
    job: Vec<String>,
}

impl LaunchArgs {
    pub fn into_spec(self) -> Result<synpref_engine::launch::LaunchSpec, synpref_engine::Error> {
        use synpref_engine::launch::{LaunchSpec, Placement};
        let placement = if let Some(n) = self.local {
            Placement::Local { processes: n }
        } else if let Some(path) = self.hostfile {
            let ssh: Vec<String> = self.ssh.split_whitespace().map(str::to_string).collect();
            if ssh.is_empty() {
                return Err(synpref_engine::Error::setting("--ssh", "is empty"));
            }
            Placement::Hostfile {
                path,
                ssh,
                remote_binary: self.remote_binary,
            }
        } else if self.slurm {
            Placement::Slurm { port: self.port }
        } else {
            Placement::Kubernetes {
                processes: self.processes.unwrap_or(0),
                service: self.service,
                port: self.port,
            }
        };
        LaunchSpec::new(placement, self.restarts, self.grace, self.job)
    }
}
