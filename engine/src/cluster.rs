//! The cluster spec: who the processes of a run are (this process's index and every
//! process's address). The binary turns it into a timely configuration and starts the
//! processes; jobs only need to know whether they lead.

use crate::error::{Error, Result};

/// Where this process stands in a run: alone, or one of several timely processes
/// (each with `workers` threads) that find each other at `addresses`.
#[derive(Clone, Debug)]
pub struct ClusterSpec {
    /// This process's index in `addresses`.
    pub process: usize,
    /// host:port of every process, in process order; empty for a single process.
    pub addresses: Vec<String>,
    /// Seconds a process waits for all its peers to connect before it gives up
    /// (`--connect-timeout`): long enough for processes started by hand or by a
    /// scheduler a little apart, short enough that a peer that never starts is noticed.
    pub connect_timeout_s: f64,
}

/// The default of `--connect-timeout`, in seconds.
pub const DEFAULT_CONNECT_TIMEOUT_S: f64 = 60.0;

impl Default for ClusterSpec {
    fn default() -> Self {
        ClusterSpec {
            process: 0,
            addresses: Vec::new(),
            connect_timeout_s: DEFAULT_CONNECT_TIMEOUT_S,
        }
    }
}

impl ClusterSpec {
    /// Reads a hostfile: one `host:port` per line, blank lines and `#` comments skipped.
    pub fn from_hostfile(path: &str, process: usize) -> Result<ClusterSpec> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::setting("--hostfile", format!("{path}: {e}")))?;
        let addresses: Vec<String> = text
            .lines()
            .map(|l| l.split('#').next().unwrap_or("").trim())
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect();
        Self::from_addresses(addresses, process, "--hostfile", &format!("{path}: line"))
    }

    /// Takes `--peers`: every process's `host:port`, comma-separated, in process order
    /// (what `synpref launch` hands each process).
    pub fn from_peers(peers: &str, process: usize) -> Result<ClusterSpec> {
        let addresses = peers.split(',').map(|a| a.trim().to_string()).collect();
        Self::from_addresses(addresses, process, "--peers", "address")
    }

    fn from_addresses(
        addresses: Vec<String>,
        process: usize,
        setting: &str,
        item: &str,
    ) -> Result<ClusterSpec> {
        for (i, a) in addresses.iter().enumerate() {
            if a.rsplit_once(':')
                .is_none_or(|(host, port)| host.is_empty() || port.parse::<u16>().is_err())
            {
                return Err(Error::setting(
                    setting,
                    format!("{item} {}: `{a}` is not host:port", i + 1),
                ));
            }
        }
        if process >= addresses.len() {
            return Err(Error::setting(
                "--process",
                format!(
                    "{process} is not below the {} processes of {setting}",
                    addresses.len()
                ),
            ));
        }
        Ok(ClusterSpec {
            process,
            addresses,
            connect_timeout_s: DEFAULT_CONNECT_TIMEOUT_S,
        })
    }

    /// The first process clears old output and writes the report and the manifest.
    pub fn is_leader(&self) -> bool {
        self.process == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_are_host_port_pairs_and_the_process_is_among_them() {
        let c = ClusterSpec::from_peers("127.0.0.1:5000,node2:5001", 1).unwrap();
        assert_eq!(c.addresses, ["127.0.0.1:5000", "node2:5001"]);
        assert!(!c.is_leader());
        for (peers, process, flag) in [
            ("127.0.0.1:5000,node2", 0, "--peers"),
            ("a:1,b:99999", 0, "--peers"),
            ("a:1,b:2", 2, "--process"),
        ] {
            let e = ClusterSpec::from_peers(peers, process).unwrap_err();
            assert!(e.to_string().contains(flag), "{peers}: {e}");
        }
    }
}
