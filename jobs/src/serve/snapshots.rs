//! Where serve's snapshots are written and how `OUT/snapshot` is replaced atomically
//! (issue 30 item 4; DESIGN §4: "`--out/snapshot/` is always a complete committed
//! curate output, a reader never sees it half-replaced").
//!
//! Each snapshot pass writes a whole curate output into a version of its own,
//! `OUT/snapshots/epoch-EEEEEEEEEE-MMMMMMMMMMMMM` (the epoch and the leader's clock in
//! milliseconds). Only once that is committed does `OUT/snapshot` show it:
//!
//! - On a local file system `OUT/snapshot` is a symbolic link to the version: a new
//!   link is made beside the old one and renamed over it, which POSIX `rename(2)` does
//!   atomically. A replaced version stays on disk for [`GRACE`], then goes. A reader
//!   that lists `snapshot/` sees one version, never two.
//! - Object storage has neither links nor atomic renames of a prefix, but a single
//!   object is replaced atomically. The version's parts (whose names carry the pass's
//!   run id, so they never collide with the current ones) are copied into
//!   `OUT/snapshot/` beside the current ones, then its report and card, then its
//!   manifest.json last; the version is removed, and the parts the new manifest no
//!   longer lists stay for [`GRACE`]. A reader that reads `manifest.json` and the parts
//!   it lists always finds them; one that lists `snapshot/curated/` instead may, for
//!   that minute, see the previous run's parts beside the current ones (the dataset
//!   card's file patterns and `export` name the current run's only).
//!
//! Either way a reader that opens `snapshot/manifest.json` and then, within a minute,
//! the parts it lists always finds them.

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
    /// `--out` on the local file system; `None` on object storage.
    local: Option<PathBuf>,
    /// `--out` itself.
    out: Location,
    /// Local: versions replaced by a newer one, with when; object storage: the paths of
    /// parts under `OUT/snapshot/` its manifest no longer lists. Removed once [`GRACE`]
    /// has passed.
    replaced: Vec<(String, Instant)>,
    /// The last name handed out, so that two snapshots in one millisecond differ.
    last_millis: u64,
}

impl Snapshots {
    /// The snapshots under `out`. What an earlier process left counts as replaced now:
    /// on a local file system the versions other than the current one; on object
    /// storage the parts under `OUT/snapshot/` its manifest does not list (versions
    /// there, never published, are removed at once).
    pub fn open(out: &Location, out_url: &str) -> Result<Snapshots> {
        let local = out.local_path();
        let mut snapshots = Snapshots {
            out_url: out_url.trim_end_matches('/').to_string(),
            local,
            out: out.clone(),
            replaced: Vec::new(),
            last_millis: 0,
        };
        let now = Instant::now();
        if let Some(dir) = &snapshots.local {
            let current = current_version(dir);
            for name in versions(dir)? {
                if Some(&name) != current.as_ref() {
                    snapshots.replaced.push((name, now));
                }
            }
        } else {
            for part in object_storage_leftovers(out)? {
                snapshots.replaced.push((part, now));
            }
        }
        Ok(snapshots)
    }

    /// Where the next snapshot pass of `epoch` writes: a new version.
    pub fn next_dir(&mut self, epoch: u64) -> String {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        self.last_millis = now.max(self.last_millis + 1);
        format!(
            "{}/{VERSIONS_DIR}/epoch-{epoch:010}-{:013}",
            self.out_url, self.last_millis
        )
    }

    /// Makes the committed version at `dir` (a URL `next_dir` gave) the one
    /// `OUT/snapshot` names, atomically, and removes what was replaced more than
    /// [`GRACE`] ago.
    pub fn publish(&mut self, dir: &str) -> Result<()> {
        let Some(out) = &self.local else {
            return self.publish_by_copy(dir);
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

    /// Object storage: copies the committed version at `dir` into `OUT/snapshot/`, the
    /// manifest last, then removes the version; the parts it replaces stay for
    /// [`GRACE`].
    fn publish_by_copy(&mut self, dir: &str) -> Result<()> {
        let version = synpref_engine::store::resolve(dir)?;
        let pointer = self.out.child(POINTER);
        let parts = listed_parts(&version)?;
        for part in &parts {
            version.child(part).copy_to(&pointer.child(part))?;
        }
        // The manifest last: its replacement is the moment the new version shows.
        for name in synpref_engine::output::COMMIT_FILES.iter().rev() {
            version.child(name).copy_to(&pointer.child(name))?;
        }
        version.delete_prefix()?;
        let now = Instant::now();
        for part in unlisted_parts(&pointer, &parts)? {
            if !self.replaced.iter().any(|(p, _)| *p == part) {
                self.replaced.push((part, now));
            }
        }
        self.prune()
    }

    /// Removes what was replaced more than [`GRACE`] ago (serve's controller also calls
    /// this when idle, so that it goes even when no snapshot follows).
    pub fn prune(&mut self) -> Result<()> {
        let Some(out) = &self.local else {
            let pointer = self.out.child(POINTER);
            let mut kept = Vec::new();
            for (part, when) in self.replaced.drain(..) {
                if when.elapsed() < GRACE {
                    kept.push((part, when));
                } else {
                    pointer.child(&part).delete()?;
                }
            }
            self.replaced = kept;
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

/// What an earlier serve left on object storage: its versions, never published, are
/// removed now; the parts under `OUT/snapshot/` its manifest does not list are returned
/// (replaced ones whose grace period that process did not see end).
fn object_storage_leftovers(out: &Location) -> Result<Vec<String>> {
    out.child(VERSIONS_DIR).delete_prefix()?;
    let pointer = out.child(POINTER);
    let listed = listed_parts(&pointer)?;
    unlisted_parts(&pointer, &listed)
}

/// The parts (paths under `output`) the committed output at `output` lists in its
/// manifest; none when it has no manifest.
fn listed_parts(output: &Location) -> Result<Vec<String>> {
    let Some(bytes) = output.child("manifest.json").get_if_exists()? else {
        return Ok(Vec::new());
    };
    let manifest: crate::curate::Manifest = serde_json::from_slice(&bytes)
        .map_err(|e| Error::other(output.child("manifest.json").url, e))?;
    Ok(manifest.outputs.into_iter().map(|f| f.path).collect())
}

/// The parts under `output`'s part directories that `listed` does not hold.
fn unlisted_parts(output: &Location, listed: &[String]) -> Result<Vec<String>> {
    let mut unlisted = Vec::new();
    for dest in synpref_engine::model::Destination::ALL {
        for name in output.child(dest.dir()).list_names()? {
            let path = format!("{}/{name}", dest.dir());
            if !listed.contains(&path) {
                unlisted.push(path);
            }
        }
    }
    Ok(unlisted)
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
        let first = snapshots.next_dir(0);
        write(&first, "first");
        snapshots.publish(&first).unwrap();
        let manifest = tmp.path().join("snapshot/manifest.json");
        assert_eq!(std::fs::read_to_string(&manifest).unwrap(), "first");
        let second = snapshots.next_dir(0);
        assert_ne!(first, second, "two snapshots of one epoch get two versions");
        write(&second, "second");
        snapshots.publish(&second).unwrap();
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

    /// The object-storage way (copies, manifest last), run on a local directory: a
    /// `Snapshots` whose `local` is unset publishes as it does on S3.
    #[test]
    fn publishing_by_copy_keeps_the_replaced_parts_for_the_grace_period() {
        let tmp = tempfile::tempdir().unwrap();
        let out_url = tmp.path().to_str().unwrap();
        let out = synpref_engine::store::resolve(out_url).unwrap();
        let mut snapshots = Snapshots::open(&out, out_url).unwrap();
        snapshots.local = None;
        let write = |dir: &str, run: &str| {
            let part = format!("curated/part-00000-00000-{run}.parquet");
            std::fs::create_dir_all(format!("{dir}/curated")).unwrap();
            std::fs::write(format!("{dir}/{part}"), run).unwrap();
            // A real committed output's manifest (fuzz/fixtures/export), its parts
            // replaced.
            let mut manifest: crate::curate::Manifest =
                serde_json::from_str(include_str!("../../../fuzz/fixtures/export/manifest.json"))
                    .unwrap();
            manifest.run_id = run.into();
            manifest.outputs = vec![synpref_engine::output::WrittenFile {
                path: part.clone(),
                rows: 1,
            }];
            std::fs::write(
                format!("{dir}/manifest.json"),
                serde_json::to_vec(&manifest).unwrap(),
            )
            .unwrap();
            for name in ["README.md", "report.json"] {
                std::fs::write(format!("{dir}/{name}"), run).unwrap();
            }
            part
        };
        let snapshot = tmp.path().join("snapshot");
        let first = snapshots.next_dir(1);
        let first_part = write(&first, "aaaa");
        snapshots.publish(&first).unwrap();
        assert_eq!(
            listed_parts(&out.child("snapshot")).unwrap(),
            [first_part.as_str()]
        );
        let objects = |url: &str| {
            synpref_engine::store::resolve(url)
                .unwrap()
                .list_names()
                .unwrap()
        };
        assert!(
            objects(&first).is_empty(),
            "the version is removed once copied"
        );
        let second = snapshots.next_dir(2);
        let second_part = write(&second, "bbbb");
        snapshots.publish(&second).unwrap();
        assert_eq!(
            listed_parts(&out.child("snapshot")).unwrap(),
            [second_part.as_str()]
        );
        assert_eq!(
            std::fs::read_to_string(snapshot.join("report.json")).unwrap(),
            "bbbb"
        );
        // The replaced part stays for a reader of the previous manifest, then goes.
        assert!(snapshot.join(&first_part).exists());
        snapshots.prune().unwrap();
        assert!(snapshot.join(&first_part).exists());
        for (_, when) in &mut snapshots.replaced {
            *when -= GRACE;
        }
        snapshots.prune().unwrap();
        assert!(!snapshot.join(&first_part).exists());
        assert!(snapshot.join(&second_part).exists());
        // A later process counts unlisted parts as replaced, and removes versions that
        // were never published.
        write(&snapshots.next_dir(3), "cccc");
        std::fs::write(snapshot.join("curated/part-00001-00000-aaaa.parquet"), "x").unwrap();
        let left = object_storage_leftovers(&out).unwrap();
        assert_eq!(left, ["curated/part-00001-00000-aaaa.parquet"]);
        assert!(objects(&format!("{out_url}/{VERSIONS_DIR}")).is_empty());
    }

    #[test]
    fn a_snapshot_directory_of_an_older_serve_becomes_a_replaced_version() {
        let tmp = tempfile::tempdir().unwrap();
        let out_url = tmp.path().to_str().unwrap();
        let out = synpref_engine::store::resolve(out_url).unwrap();
        std::fs::create_dir_all(tmp.path().join("snapshot")).unwrap();
        std::fs::write(tmp.path().join("snapshot/manifest.json"), "old").unwrap();
        let mut snapshots = Snapshots::open(&out, out_url).unwrap();
        let dir = snapshots.next_dir(3);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(format!("{dir}/manifest.json"), "new").unwrap();
        snapshots.publish(&dir).unwrap();
        let pointer = tmp.path().join("snapshot");
        assert!(pointer.symlink_metadata().unwrap().file_type().is_symlink());
        assert_eq!(
            std::fs::read_to_string(pointer.join("manifest.json")).unwrap(),
            "new"
        );
        assert_eq!(snapshots.replaced.len(), 1);
    }
}
