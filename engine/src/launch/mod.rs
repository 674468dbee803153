//! What `synpref launch` decides before it starts anything: where each process of a
//! job runs and how it finds its peers (`Placement`, `LaunchSpec`), and, for processes
//! a scheduler started, which one this is (`Role`, from Slurm's or Kubernetes'
//! environment). Plain data and pure functions; the binary starts and supervises the
//! processes.

pub mod kubernetes;
pub mod slurm;

use crate::error::{Error, Result};

/// Where the processes of a launched job run.
#[derive(Clone, Debug, PartialEq)]
pub enum Placement {
    /// `processes` processes on this host, on free loopback ports.
    Local { processes: usize },
    /// One process per line of a hostfile (`host:port`), each started over `ssh`.
    Hostfile {
        path: String,
        /// The command that runs a command line on a host: `ssh -o BatchMode=yes` unless
        /// told otherwise; the host and the quoted command line follow it.
        ssh: Vec<String>,
        /// The `synpref` binary's path on the hosts [default: this binary's path].
        remote_binary: Option<String>,
    },
    /// This process is one task of a Slurm job step (`srun`); one launcher per task.
    Slurm { port: u16 },
    /// This process is one pod of a Kubernetes Indexed Job behind a headless Service.
    Kubernetes {
        processes: usize,
        service: String,
        port: u16,
    },
}

/// The default base port of `--slurm` and `--kubernetes` (a task's port is this plus
/// its index among the tasks on its node). Any port free on every node will do; 7100
/// is outside the ranges Linux hands out for ephemeral ports (32768–60999).
pub const DEFAULT_PORT: u16 = 7100;

/// The default of `--grace`: seconds the launcher waits for the other processes to end
/// on their own (each ends within a second or two of losing a peer, DESIGN §2's abort
/// hook) before it kills them.
pub const DEFAULT_GRACE_S: f64 = 3.0;

/// The job arguments `launch` adds to each process; the user must not give them.
pub const CLUSTER_FLAGS: [&str; 3] = ["--hostfile", "--peers", "--process"];

/// The jobs that run as cooperating processes.
pub const MULTI_PROCESS_JOBS: [&str; 4] = ["curate", "serve", "fractions", "stage1"];

/// A validated `synpref launch` command.
#[derive(Clone, Debug, PartialEq)]
pub struct LaunchSpec {
    pub placement: Placement,
    /// Times the whole job is started again after a process fails (exit status 1 or a
    /// signal; never after exit status 2, bad usage, which a restart cannot mend).
    pub restarts: u32,
    pub grace_s: f64,
    /// The job and its arguments, e.g. `["curate", "--pairs", ...]`.
    pub job: Vec<String>,
}

impl LaunchSpec {
    /// Checks the job part: a job that runs on several processes, without the flags
    /// `launch` sets itself.
    pub fn new(
        placement: Placement,
        restarts: u32,
        grace_s: f64,
        job: Vec<String>,
    ) -> Result<Self> {
        let name = job.first().ok_or_else(|| {
            Error::setting(
                "JOB",
                "give the job to launch after `--`, e.g. `-- curate --pairs ...`",
            )
        })?;
        if !MULTI_PROCESS_JOBS.contains(&name.as_str()) {
            return Err(Error::setting(
                "JOB",
                format!(
                    "`{name}` does not run on several processes; launch runs {}",
                    MULTI_PROCESS_JOBS.join(", ")
                ),
            ));
        }
        if let Some(f) = job.iter().find(|a| {
            CLUSTER_FLAGS
                .iter()
                .any(|f| a.as_str() == *f || a.starts_with(&format!("{f}=")))
        }) {
            return Err(Error::setting(
                "JOB",
                format!(
                    "`{f}` is set by launch for each process; leave it out of the job's arguments"
                ),
            ));
        }
        if let Placement::Local { processes: 0 } = placement {
            return Err(Error::setting("--local", "must be at least 1"));
        }
        if let Placement::Kubernetes { processes: 0, .. } = placement {
            return Err(Error::setting("--processes", "must be at least 1"));
        }
        if !(grace_s >= 0.0 && grace_s.is_finite()) {
            return Err(Error::setting(
                "--grace",
                format!("{grace_s} is not a number of seconds"),
            ));
        }
        Ok(LaunchSpec {
            placement,
            restarts,
            grace_s,
            job,
        })
    }

    /// The job's arguments for process `process` of a run at `addresses`.
    pub fn process_args(&self, process: usize, addresses: &[String]) -> Vec<String> {
        let mut args = self.job.clone();
        args.extend([
            "--peers".to_string(),
            addresses.join(","),
            "--process".to_string(),
            process.to_string(),
        ]);
        args
    }
}

/// A process started by a scheduler: its index and every process's address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Role {
    pub process: usize,
    pub addresses: Vec<String>,
}

/// Reads the scheduler's variables through `env` (the process environment in the
/// binary, a map in tests), naming the variable at fault.
pub type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

fn required(env: Env, name: &str) -> Result<String> {
    env(name).filter(|v| !v.trim().is_empty()).ok_or_else(|| {
        Error::setting(
            name,
            "is not set: run this inside the scheduler's job (see docs/cluster.md)",
        )
    })
}

fn number(env: Env, name: &str) -> Result<usize> {
    let v = required(env, name)?;
    v.trim()
        .parse()
        .map_err(|_| Error::setting(name, format!("`{v}` is not a whole number")))
}

/// Quotes `arg` for a POSIX shell (what `ssh` hands the remote command line to).
pub fn shell_quote(arg: &str) -> String {
    if !arg.is_empty()
        && arg
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./:=,@%+".contains(&b))
    {
        return arg.to_string();
    }
    format!("'{}'", arg.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_job_must_run_on_several_processes_and_leave_the_cluster_flags_to_launch() {
        let local = Placement::Local { processes: 2 };
        assert!(LaunchSpec::new(local.clone(), 0, 3.0, job(&["curate", "--out", "o"])).is_ok());
        for bad in [
            job(&[]),
            job(&["gen", "--pairs", "1"]),
            job(&["curate", "--process", "1"]),
            job(&["serve", "--hostfile=h"]),
        ] {
            let e = LaunchSpec::new(local.clone(), 0, 3.0, bad.clone()).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{bad:?}: {e}");
        }
        let e = LaunchSpec::new(Placement::Local { processes: 0 }, 0, 3.0, job(&["curate"]));
        assert!(e.unwrap_err().to_string().contains("--local"));
    }

    #[test]
    fn each_process_gets_every_address_and_its_own_index() {
        let spec = LaunchSpec::new(
            Placement::Local { processes: 2 },
            0,
            3.0,
            job(&["curate", "--out", "o"]),
        )
        .unwrap();
        let a = vec!["127.0.0.1:5000".to_string(), "127.0.0.1:5001".to_string()];
        assert_eq!(
            spec.process_args(1, &a),
            job(&[
                "curate",
                "--out",
                "o",
                "--peers",
                "127.0.0.1:5000,127.0.0.1:5001",
                "--process",
                "1"
            ])
        );
    }

    #[test]
    fn shell_quoting_survives_spaces_quotes_and_empty_arguments() {
        assert_eq!(shell_quote("s3://b/p"), "s3://b/p");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("$HOME"), "'$HOME'");
    }
}
