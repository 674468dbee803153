//! The flags several subcommands share, each declared once with one doc: the run
//! settings (`--workers`, `--no-progress`), the transformer models' settings and the
//! timely processes of a multi-process job.

use clap::Args;
use synpref_engine::cluster::ClusterSpec;
use synpref_engine::Error;
use synpref_jobs::curate::default_score_cache;
use synpref_jobs::job::RunSettings;
use synpref_operators::models::{AttentionChoice, DTypeChoice, DeviceChoice, ModelOptions};

/// `--workers`: the timely worker threads of a job that runs on workers.
#[derive(Args)]
pub struct WorkersArg {
    /// Timely worker threads in this process [default: the number of CPU cores].
    #[arg(long)]
    pub workers: Option<usize>,
}

impl WorkersArg {
    /// The flag's value, or the number of CPU cores.
    pub fn workers(&self) -> usize {
        self.workers.unwrap_or_else(RunSettings::default_workers)
    }
}

/// `--no-progress`.
#[derive(Args)]
pub struct ProgressArg {
    /// Do not draw progress bars.
    #[arg(long)]
    pub no_progress: bool,
}

impl ProgressArg {
    pub fn progress(&self) -> bool {
        !self.no_progress
    }
}

/// The run settings of a job that runs on timely workers: `--workers`, `--no-progress`.
#[derive(Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub workers: WorkersArg,
    #[command(flatten)]
    pub progress: ProgressArg,
}

impl RunArgs {
    pub fn settings(&self) -> RunSettings {
        RunSettings {
            workers: self.workers.workers(),
            progress: self.progress.progress(),
        }
    }
}

/// Settings of the transformer models (`hf:DIR`, `encoder:DIR`).
#[derive(Args)]
pub struct ModelArgs {
    /// Longest input in tokens; longer conversations lose tokens from the start of the
    /// prompt, and the report counts them (hf: 4096, eval 16384; encoder: its
    /// max_seq_length; a model's max_position_embeddings caps it).
    #[arg(long)]
    max_tokens: Option<usize>,
    /// Padded tokens per model batch.
    #[arg(long, default_value_t = ModelOptions::default().token_budget)]
    token_budget: usize,
    /// auto, cpu or cuda (cuda needs a build with `--features cuda`).
    #[arg(long, default_value_t = ModelOptions::default().device)]
    device: DeviceChoice,
    /// auto (bf16 on CUDA, f32 on CPU), f32 or bf16.
    #[arg(long, default_value_t = ModelOptions::default().dtype)]
    dtype: DTypeChoice,
    /// auto (packed batches with prompt sharing: CPU f32, or CUDA bf16 with flash
    /// attention) or eager (padded batches, transformers' eager attention: the
    /// reference for parity checks).
    #[arg(long, default_value_t = ModelOptions::default().attention)]
    attention: AttentionChoice,
    /// Score cache (a directory or object-store URL) [default: $SYNPREF_CACHE, else
    /// ~/.cache/synpref/scores].
    #[arg(long)]
    score_cache: Option<String>,
    /// Do not read or write the score cache.
    #[arg(long, conflicts_with = "score_cache")]
    no_score_cache: bool,
}

impl ModelArgs {
    pub fn options(&self) -> Result<ModelOptions, synpref_engine::Error> {
        if self.token_budget == 0 {
            return Err(Error::setting("--token-budget", "must be at least 1"));
        }
        if self.max_tokens == Some(0) {
            return Err(Error::setting("--max-tokens", "must be at least 1"));
        }
        Ok(ModelOptions {
            max_tokens: self.max_tokens,
            token_budget: self.token_budget,
            device: self.device,
            dtype: self.dtype,
            attention: self.attention,
        })
    }

    pub fn cache(&self) -> Option<String> {
        if self.no_score_cache {
            None
        } else {
            self.score_cache.clone().or_else(default_score_cache)
        }
    }
}

/// Which timely processes a multi-process job runs on (curate, serve, fractions).
#[derive(Args)]
pub struct ClusterArgs {
    /// Run as one of several timely processes: a file with one host:port per process.
    /// Start the same command once per line, each with its own --process (or let
    /// `synpref launch` start them).
    #[arg(long, requires = "process", conflicts_with = "peers")]
    hostfile: Option<String>,
    /// Run as one of several timely processes: every process's host:port,
    /// comma-separated, in process order (what `synpref launch` gives each process).
    #[arg(long, requires = "process")]
    peers: Option<String>,
    /// This process's index in --hostfile or --peers (from 0).
    #[arg(long)]
    process: Option<usize>,
    /// Seconds to wait for every process of --hostfile to connect before giving up
    /// (exit 1, naming the processes that are not reachable).
    #[arg(long, default_value_t = synpref_engine::cluster::DEFAULT_CONNECT_TIMEOUT_S)]
    connect_timeout: f64,
}

impl ClusterArgs {
    pub fn cluster(&self) -> Result<ClusterSpec, Error> {
        if !(self.connect_timeout > 0.0 && self.connect_timeout.is_finite()) {
            return Err(Error::setting(
                "--connect-timeout",
                format!(
                    "{} is not a positive number of seconds",
                    self.connect_timeout
                ),
            ));
        }
        let mut cluster = match (&self.hostfile, &self.peers, self.process) {
            (Some(h), _, Some(p)) => ClusterSpec::from_hostfile(h, p)?,
            (_, Some(peers), Some(p)) => ClusterSpec::from_peers(peers, p)?,
            (None, None, Some(_)) => {
                return Err(Error::setting("--process", "needs --hostfile or --peers"))
            }
            _ => ClusterSpec::default(),
        };
        cluster.connect_timeout_s = self.connect_timeout;
        Ok(cluster)
    }
}

/// A byte count from the command line: digits with an optional K, M, G or T suffix
/// (powers of 1024, an optional trailing `B` or `iB`), e.g. `512M` or `2GiB`.
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let t = t
        .strip_suffix("iB")
        .or_else(|| t.strip_suffix('B'))
        .unwrap_or(t);
    let (digits, shift) = match t.chars().last().map(|c| c.to_ascii_uppercase()) {
        Some('K') => (&t[..t.len() - 1], 10),
        Some('M') => (&t[..t.len() - 1], 20),
        Some('G') => (&t[..t.len() - 1], 30),
        Some('T') => (&t[..t.len() - 1], 40),
        _ => (t, 0),
    };
    let n: u64 = digits
        .trim()
        .parse()
        .map_err(|_| format!("`{text}` is not a byte count such as 1073741824, 512M or 2G"))?;
    n.checked_mul(1u64 << shift)
        .filter(|&b| b > 0)
        .ok_or_else(|| format!("`{text}` is not a positive byte count below 16 EiB"))
}

#[cfg(test)]
mod tests {
    use super::parse_bytes;

    #[test]
    fn byte_counts_take_binary_suffixes() {
        assert_eq!(parse_bytes("4096"), Ok(4096));
        assert_eq!(parse_bytes("512M"), Ok(512 << 20));
        assert_eq!(parse_bytes("2g"), Ok(2 << 30));
        assert_eq!(parse_bytes("2GiB"), Ok(2 << 30));
        assert_eq!(parse_bytes("64KB"), Ok(64 << 10));
        assert!(parse_bytes("0").is_err());
        assert!(parse_bytes("lots").is_err());
        assert!(parse_bytes("99999999T").is_err());
    }
}
