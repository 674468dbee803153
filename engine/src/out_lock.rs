//! The lock that keeps a second long-running job (serve) off an output prefix another
//! one owns: two serves on one `--out` would both append to its label log and write
//! its changelog, and the second would fail every label with a number the first took.
//!
//! - On the local file system: an advisory `flock` (`File::try_lock`) on `OUT/LOCK_NAME`,
//!   held for the life of the process and released by the kernel when the process dies
//!   (SIGKILL included), so a restart after a crash is never refused.
//! - On object storage, which has no locks: a lease object `OUT/LOCK_NAME` holding its
//!   owner and the time it was last renewed, created with a create-only put and renewed
//!   every `LEASE_RENEW_S` by a background thread. A lease not renewed for
//!   `LEASE_EXPIRY_S` belonged to a process that died: it is taken over. (Two processes
//!   that start within the same instant on an expired lease can both take it over; the
//!   label log's create-only segments still keep them from overwriting each other.)

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::store::{block_on, Location};

/// The lock's name under the output prefix.
pub const LOCK_NAME: &str = "serve.lock";
/// Seconds between renewals of an object-storage lease.
pub const LEASE_RENEW_S: u64 = 10;
/// Seconds after which an unrenewed lease is taken to belong to a dead process: three
/// missed renewals, so that one slow put does not hand the output to a second process.
pub const LEASE_EXPIRY_S: u64 = 3 * LEASE_RENEW_S;

/// Who holds a lock: written into the lock file or lease object.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct LockOwner {
    pub pid: u32,
    pub host: String,
    /// Unix seconds of the last renewal (leases) or of taking the lock (files).
    pub renewed_unix_s: u64,
}

impl LockOwner {
    fn me() -> LockOwner {
        LockOwner {
            pid: std::process::id(),
            host: hostname(),
            renewed_unix_s: unix_now(),
        }
    }

    fn describe(&self) -> String {
        format!("process {} on {}", self.pid, self.host)
    }
}

/// A held lock; dropping it releases a file lock (a lease just stops being renewed and
/// expires).
pub struct OutLock {
    _file: Option<std::fs::File>,
    pub url: String,
}

/// Takes the lock on `out` for `setting` (named in the error), or fails with exit 2
/// naming who holds it.
pub fn lock_output(out: &Location, setting: &str) -> Result<OutLock> {
    let loc = out.child(LOCK_NAME);
    match loc.local_path() {
        Some(path) => lock_file(&path, &loc.url, setting),
        None => lease(loc, setting),
    }
}

fn lock_file(path: &std::path::Path, url: &str, setting: &str) -> Result<OutLock> {
    use std::io::{Read, Seek, Write};
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| Error::other(url, e))?;
    }
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|e| Error::other(url, e))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut text = String::new();
            let _ = file.read_to_string(&mut text);
            let who = serde_json::from_str::<LockOwner>(&text)
                .map(|o| o.describe())
                .unwrap_or_else(|_| "another process".into());
            return Err(Error::setting(
                setting,
                format!("{url} is held by {who}: another serve owns this output; stop it or choose another {setting}"),
            ));
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(Error::other(url, e)),
    }
    let owner = serde_json::to_vec(&LockOwner::me()).expect("owner serialises");
    file.set_len(0)
        .and_then(|_| file.rewind())
        .and_then(|_| file.write_all(&owner))
        .map_err(|e| Error::other(url, e))?;
    Ok(OutLock {
        _file: Some(file),
        url: url.to_string(),
    })
}

fn lease(loc: Location, setting: &str) -> Result<OutLock> {
    let body = || serde_json::to_vec(&LockOwner::me()).expect("owner serialises");
    let created = block_on(loc.store.put_opts(
        &loc.path,
        object_store::PutPayload::from(body()),
        object_store::PutOptions::from(object_store::PutMode::Create),
    ));
    match created {
        Ok(_) => {}
        Err(object_store::Error::AlreadyExists { .. }) => {
            let held: Option<LockOwner> =
                loc.get().ok().and_then(|b| serde_json::from_slice(&b).ok());
            match held {
                Some(o) if unix_now().saturating_sub(o.renewed_unix_s) < LEASE_EXPIRY_S => {
                    return Err(Error::setting(
                        setting,
                        format!(
                            "{} is held by {} (renewed {} s ago): another serve owns this output; stop it or choose another {setting}",
                            loc.url,
                            o.describe(),
                            unix_now().saturating_sub(o.renewed_unix_s)
                        ),
                    ))
                }
                // Expired or unreadable: its owner is gone.
                _ => loc.put(body())?,
            }
        }
        Err(e) => {
            return Err(Error::Storage {
                path: loc.url.clone(),
                source: e,
            })
        }
    }
    let url = loc.url.clone();
    std::thread::Builder::new()
        .name("synpref-lease".into())
        .spawn(move || loop {
            std::thread::sleep(Duration::from_secs(LEASE_RENEW_S));
            if let Err(e) = loc.put(body()) {
                tracing::warn!(lease = %loc.url, error = %e, "cannot renew the output lease");
            }
        })
        .map_err(|e| Error::other("lease thread", e))?;
    Ok(OutLock { _file: None, url })
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "unknown host".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::resolve;

    /// A second lock on the same output is refused naming the holder; once the first
    /// is dropped (its process gone) the output can be locked again.
    #[test]
    fn a_second_lock_on_a_local_output_is_refused_until_the_first_is_released() {
        let dir = tempfile::tempdir().unwrap();
        let out = resolve(dir.path().to_str().unwrap()).unwrap();
        let first = lock_output(&out, "--out").unwrap();
        let err = lock_output(&out, "--out").err().expect("refused");
        assert_eq!(err.exit_code(), 2);
        let text = err.to_string();
        assert!(
            text.contains("--out") && text.contains(&std::process::id().to_string()),
            "{text}"
        );
        drop(first);
        lock_output(&out, "--out").expect("free again");
    }
}
