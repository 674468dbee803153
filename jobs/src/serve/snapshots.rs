//! Where serve's snapshots are written and how `OUT/snapshot` is replaced atomically
//! (issue 30 item 4; DESIGN §4: "`--out/snapshot/` is always a complete committed
//! curate output, a reader never sees it half-replaced").
//!
//! On a local file system each snapshot pass writes a whole curate output into a
//! directory of its own, `OUT/snapshots/epoch-EEEEEEEEEE-MMMMMMMMMMMMM` (the epoch and
//! the leader's clock in milliseconds), and only once it is committed does
//! `OUT/snapshot` become a symbolic link to it: a new link is made beside the old one
//! and renamed over it, which POSIX `rename(2)` does atomically. A reader that opens
//! `snapshot/manifest.json` and then the parts it lists finds them: a replaced version
//! stays on disk for [`GRACE`] after it was replaced, and only then is it removed. A
//! reader that lists `snapshot/` sees one version, never two.
//!
//! Object storage has neither links nor atomic renames of a prefix: there the pass
//! writes `OUT/snapshot/` in place as curate writes any output (parts first, the
//! manifest last), so a reader can find it without its manifest while a pass runs.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use synpref_engine::store::Location;
use synpref_engine::{Error, Result};

/// How long a replaced snapshot version stays readable: the issue's "a reader that
/// opens manifest.json and then, within a minute, the parts it lists always finds them".
pub const GRACE: Duration = Duration::from_secs(60);

/// The directory under `--out` that holds the versions.
const VERSIONS_DIR: &str = "snapshots";
/// The name readers use.
const POINTER: &str = "snapshot";

/// The versions of one serve output and the link that names the current one.
pub struct Snapshots {
    /// `--out` as given (the URL the versions' URLs are built from).
    out_url: String,
    /// `--out` on the local file system; `None` on object storage (in-place snapshots).
    local: Option<PathBuf>,
    /// Versions replaced by a newer one, with when: removed once [`GRACE`] has passed.
    replaced: Vec<(String, Instant)>,
    /// The last name handed out, so that two snapshots in one millisecond differ.
    last_millis: u64,
}

impl Snapshots {
    /// The snapshots under `out`. On a local file system, versions left by an earlier
    /// process (other than the current one) count as replaced now.
    pub fn open(out: &Location, out_url: &str) -> Result<Snapshots> {
        let local = out.local_path();
        let mut snapshots = Snapshots {
            out_url: out_url.trim_end_matches('/').to_string(),
            local,
            replaced: Vec::new(),
            last_millis: 0,
        };
        if let Some(dir) = &snapshots.local {
            let current = current_version(dir);
            let now = Instant::now();
            for name in versions(dir)? {
                if Some(&name) != current.as_ref() {
                    snapshots.replaced.push((name, now));
                }
            }
        }
        Ok(snapshots)
    }

    /// Where the next snapshot pass of `epoch` writes: a new version directory (local),
    /// or `None` for `OUT/snapshot` itself (object storage).
    pub fn next_dir(&mut self, epoch: u64) -> Option<String> {
        self.local.as_ref()?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        self.last_millis = now.max(self.last_millis + 1);
        Some(format!(
            "{}/{VERSIONS_DIR}/epoch-{epoch:010}-{:013}",
            self.out_url, self.last_millis
        ))
    }

    /// Makes the committed version at `dir` (a URL `next_dir` gave) the one
    /// `OUT/snapshot` names, atomically, and removes versions replaced more than
    /// [`GRACE`] ago. Nothing to do on object storage.
    pub fn publish(&mut self, dir: Option<&str>) -> Result<()> {
        let (Some(out), Some(dir)) = (&self.local, dir) else {
            return Ok(());
        };
        let name = dir
            .rsplit('/')
            .next()
            .expect("next_dir gives a name")
            .to_string();
        let pointer = out.join(POINTER);
        let previous = current_version(out);
        if previous.is_none() && pointer.exists() {
            // An output of a serve from before versioned snapshots: a directory, not a
            // link. It becomes a replaced version (moved, so the link can take its name).
            let legacy = format!("legacy-{:013}", self.last_millis);
            std::fs::rename(&pointer, out.join(VERSIONS_DIR).join(&legacy))
                .map_err(|e| io(&pointer, e))?;
            self.replaced.push((legacy, Instant::now()));
        }
        let staged = out.join(format!(".{POINTER}.{name}"));
        let _ = std::fs::remove_file(&staged);
        std::os::unix::fs::symlink(Path::new(VERSIONS_DIR).join(&name), &staged)
            .map_err(|e| io(&staged, e))?;
        std::fs::rename(&staged, &pointer).map_err(|e| io(&pointer, e))?;
        // The rename is durable once the directory holding it is.
        if let Ok(d) = std::fs::File::open(out) {
            let _ = d.sync_all();
        }
        if let Some(previous) = previous.filter(|p| *p != name) {
            self.replaced.push((previous, Instant::now()));
        }
        self.prune()
    }

    /// Removes the versions replaced more than [`GRACE`] ago (serve's controller also
    /// calls this when idle, so that they go even when no snapshot follows).
    pub fn prune(&mut self) -> Result<()> {
        let Some(out) = &self.local else {
            return Ok(());
        };
        let current = current_version(out);
        let mut kept = Vec::new();
        for (name, when) in self.replaced.drain(..) {
            if when.elapsed() < GRACE || Some(&name) == current.as_ref() {
                kept.push((name, when));
                continue;
            }
            let dir = out.join(VERSIONS_DIR).join(&name);
            match std::fs::remove_dir_all(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io(&dir, e)),
            }
        }
        self.replaced = kept;
        Ok(())
    }
}

/// The version `OUT/snapshot` links to, if it is such a link.
fn current_version(out: &Path) -> Option<String> {
    let target = std::fs::read_link(out.join(POINTER)).ok()?;
    Some(target.file_name()?.to_string_lossy().into_owned())
}

/// The version directories under `OUT/snapshots/`.
fn versions(out: &Path) -> Result<Vec<String>> {
    let dir = out.join(VERSIONS_DIR);
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io(&dir, e)),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| io(&dir, e))?;
        if entry.path().is_dir() {
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    names.sort();
    Ok(names)
}

fn io(path: &Path, e: std::io::Error) -> Error {
    Error::other(path.display().to_string(), e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publishing_swaps_the_link_and_keeps_the_replaced_version_for_the_grace_period() {
        let tmp = tempfile::tempdir().unwrap();
        let out_url = tmp.path().to_str().unwrap();
        let out = synpref_engine::store::resolve(out_url).unwrap();
        let mut snapshots = Snapshots::open(&out, out_url).unwrap();
        let write = |dir: &str, text: &str| {
            std::fs::create_dir_all(dir).unwrap();
            std::fs::write(format!("{dir}/manifest.json"), text).unwrap();
        };
        let first = snapshots.next_dir(0).unwrap();
        write(&first, "first");
        snapshots.publish(Some(&first)).unwrap();
        let manifest = tmp.path().join("snapshot/manifest.json");
        assert_eq!(std::fs::read_to_string(&manifest).unwrap(), "first");
        let second = snapshots.next_dir(0).unwrap();
        assert_ne!(first, second, "two snapshots of one epoch get two versions");
        write(&second, "second");
        snapshots.publish(Some(&second)).unwrap();
        assert_eq!(std::fs::read_to_string(&manifest).unwrap(), "second");
        // The replaced version is still there for a reader that opened it.
        assert!(Path::new(&first).join("manifest.json").exists());
        // Past the grace period it goes; the current one stays.
        for (_, when) in &mut snapshots.replaced {
            *when -= GRACE;
        }
        snapshots.prune().unwrap();
        assert!(!Path::new(&first).exists());
        assert_eq!(std::fs::read_to_string(&manifest).unwrap(), "second");
        // A process started later counts the versions it finds (but the current) as
        // replaced.
        let again = Snapshots::open(&out, out_url).unwrap();
        assert!(again.replaced.is_empty());
    }

    #[test]
    fn a_snapshot_directory_of_an_older_serve_becomes_a_replaced_version() {
        let tmp = tempfile::tempdir().unwrap();
        let out_url = tmp.path().to_str().unwrap();
        let out = synpref_engine::store::resolve(out_url).unwrap();
        std::fs::create_dir_all(tmp.path().join("snapshot")).unwrap();
        std::fs::write(tmp.path().join("snapshot/manifest.json"), "old").unwrap();
        let mut snapshots = Snapshots::open(&out, out_url).unwrap();
        let dir = snapshots.next_dir(3).unwrap();
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(format!("{dir}/manifest.json"), "new").unwrap();
        snapshots.publish(Some(&dir)).unwrap();
        let pointer = tmp.path().join("snapshot");
        assert!(pointer.symlink_metadata().unwrap().file_type().is_symlink());
        assert_eq!(
            std::fs::read_to_string(pointer.join("manifest.json")).unwrap(),
            "new"
        );
        assert_eq!(snapshots.replaced.len(), 1);
    }
}
