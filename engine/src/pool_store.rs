//! The pool store: `serve`'s local, random-access copy of the pool's valid pairs.
//!
//! Serve keeps only a few numbers per pair in memory (DESIGN §2: the pool is far larger
//! than memory at 40M pairs); when a pair must be scored again or written to the
//! changelog, its text comes from here. Each worker appends the pairs it reads to its
//! own file (no locking between workers); a pair is addressed by `PoolLoc` (file and
//! byte offset), and read back with one positioned read of a length-prefixed record
//! (bincode, the compact encoding timely already sends these pairs in: at 10M generated
//! pairs it took 1,130 bytes a pair as JSON, docs/benchmarks.md).
//! The store lives in a local directory that is deleted with it: it is a cache of the
//! input, rebuilt from the input when serve starts.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use crate::error::{Error, Result};
use crate::model::PreferencePair;

/// Where a pair is in the store: file index in the top 16 bits, byte offset below.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PoolLoc(pub u64);

const OFFSET_BITS: u32 = 48;

/// Pool-store directories are `synpref-pool-PID-XXXXXX`.
const PREFIX: &str = "synpref-pool-";

/// The file in each pool-store directory its process holds an exclusive `flock` on for
/// as long as the store lives: the kernel releases it when the process ends, however it
/// ends (SIGKILL included), and on a shared file system it is held for a process on
/// another host too, which a process-id check could not tell.
const LOCK_FILE: &str = "owner.lock";

/// How old a directory without a lock file must be before it counts as abandoned: one
/// being created has no lock for the microseconds between `mkdir` and the lock, and
/// directories of serves from before lock files have none at all.
const UNLOCKED_GRACE: std::time::Duration = std::time::Duration::from_secs(600);

/// Removes the pool stores nobody holds (a SIGKILLed serve cannot remove its own).
fn remove_orphans(parent: &Path) {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with(PREFIX) {
            continue;
        }
        let abandoned = match File::open(e.path().join(LOCK_FILE)) {
            // Free to lock: its owner is gone (the lock is dropped at once).
            Ok(lock) => lock.try_lock().is_ok(),
            Err(_) => e
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > UNLOCKED_GRACE),
        };
        if abandoned {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// Appends pairs to one file of the store (one per worker).
pub struct PoolWriter {
    file: u16,
    out: BufWriter<File>,
    offset: u64,
    path: PathBuf,
}

impl PoolWriter {
    pub fn append(&mut self, pair: &PreferencePair) -> Result<PoolLoc> {
        let bytes = bincode::serialize(pair).map_err(|e| Error::other("pool store", e))?;
        self.append_bytes(&bytes)
    }

    /// Appends one opaque record (serve keeps scored pairs' features this way).
    pub fn append_bytes(&mut self, bytes: &[u8]) -> Result<PoolLoc> {
        let loc = PoolLoc(((self.file as u64) << OFFSET_BITS) | self.offset);
        self.out
            .write_all(&(bytes.len() as u32).to_le_bytes())
            .and_then(|_| self.out.write_all(bytes))
            .map_err(|e| Error::other(self.path.display().to_string(), e))?;
        self.offset += 4 + bytes.len() as u64;
        Ok(loc)
    }
}

/// A pool store: a directory of per-worker files.
pub struct PoolStore {
    dir: tempfile::TempDir,
    /// Holds the `LOCK_FILE` lock while the store lives.
    _owner: File,
    /// Open files for reading, by index; shared by concurrent readers (positioned
    /// reads need no seek position).
    files: RwLock<Vec<Option<Arc<File>>>>,
}

impl PoolStore {
    /// A new, empty store in a fresh directory under `parent` (the system's temporary
    /// directory when `None`), removed when the store is dropped. Stores nobody holds
    /// (left by killed processes: their lock file is free) are removed here.
    pub fn create(parent: Option<&Path>) -> Result<PoolStore> {
        let parent = parent
            .map(Path::to_path_buf)
            .unwrap_or_else(std::env::temp_dir);
        std::fs::create_dir_all(&parent)
            .map_err(|e| Error::other(parent.display().to_string(), e))?;
        remove_orphans(&parent);
        let dir = tempfile::Builder::new()
            .prefix(&format!("{PREFIX}{}-", std::process::id()))
            .tempdir_in(&parent)
            .map_err(|e| Error::other("pool store directory", e))?;
        let lock_path = dir.path().join(LOCK_FILE);
        let owner = File::create(&lock_path)
            .map_err(|e| Error::other(lock_path.display().to_string(), e))?;
        owner
            .try_lock()
            .map_err(|e| Error::other(lock_path.display().to_string(), e.to_string()))?;
        Ok(PoolStore {
            _owner: owner,
            dir,
            files: RwLock::new(Vec::new()),
        })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    fn file_path(&self, file: u16) -> PathBuf {
        self.dir.path().join(format!("pairs-{file:05}.bin"))
    }

    /// A writer for file `file` (a worker index); the file is created empty.
    pub fn writer(&self, file: u16) -> Result<PoolWriter> {
        let path = self.file_path(file);
        let f = File::create(&path).map_err(|e| Error::other(path.display().to_string(), e))?;
        Ok(PoolWriter {
            file,
            out: BufWriter::with_capacity(1 << 20, f),
            offset: 0,
            path,
        })
    }

    /// Flushes a writer: its pairs become readable.
    pub fn finish(&self, mut writer: PoolWriter) -> Result<()> {
        writer
            .out
            .flush()
            .map_err(|e| Error::other(writer.path.display().to_string(), e))?;
        let f = File::open(&writer.path)
            .map_err(|e| Error::other(writer.path.display().to_string(), e))?;
        let mut files = self.files.write().expect("pool store");
        let i = writer.file as usize;
        if files.len() <= i {
            files.resize_with(i + 1, || None);
        }
        files[i] = Some(Arc::new(f));
        Ok(())
    }

    /// Reads the pair at `loc`.
    pub fn read(&self, loc: PoolLoc) -> Result<PreferencePair> {
        let bytes = self.read_bytes(loc)?;
        bincode::deserialize(&bytes).map_err(|e| {
            Error::other(
                self.path().display().to_string(),
                format!("corrupt record: {e}"),
            )
        })
    }

    /// Reads the record at `loc` as written by `append_bytes`.
    pub fn read_bytes(&self, loc: PoolLoc) -> Result<Vec<u8>> {
        let handle = self.handle(loc.file())?;
        let io = |e: std::io::Error| self.io_error(loc.file(), e);
        let mut len = [0u8; 4];
        handle.read_exact_at(&mut len, loc.offset()).map_err(io)?;
        let mut bytes = vec![0u8; u32::from_le_bytes(len) as usize];
        handle
            .read_exact_at(&mut bytes, loc.offset() + 4)
            .map_err(io)?;
        Ok(bytes)
    }

    /// Calls `f(k, record)` for each `locs[k]`, with `locs` sorted: the records are
    /// read in windows of about `READ_WINDOW` bytes, one positioned read per window,
    /// rather than with two reads each. Re-scoring a shard reads most of its records,
    /// and there per-record reads cost more CPU than the margins computed from them
    /// (docs/benchmarks.md, "re-scoring in windows").
    pub fn read_each(
        &self,
        locs: &[PoolLoc],
        mut f: impl FnMut(usize, &[u8]) -> Result<()>,
    ) -> Result<()> {
        debug_assert!(locs.windows(2).all(|w| w[0] <= w[1]), "locations sorted");
        let mut buf = Vec::new();
        let mut k = 0;
        while k < locs.len() {
            let (file, start) = (locs[k].file(), locs[k].offset());
            let mut end = k + 1;
            while end < locs.len()
                && locs[end].file() == file
                && locs[end].offset() < start + READ_WINDOW
                && locs[end].offset() - locs[end - 1].offset() <= READ_GAP
            {
                end += 1;
            }
            let handle = self.handle(file)?;
            buf.resize((locs[end - 1].offset() - start + RECORD_TAIL) as usize, 0);
            let got = read_up_to(&handle, &mut buf, start).map_err(|e| self.io_error(file, e))?;
            let window = &buf[..got];
            for (j, loc) in locs.iter().enumerate().take(end).skip(k) {
                let at = (loc.offset() - start) as usize;
                let record = window
                    .get(at..at + 4)
                    .map(|l| u32::from_le_bytes(l.try_into().expect("4 bytes")) as usize)
                    .and_then(|n| window.get(at + 4..at + 4 + n));
                match record {
                    Some(r) => f(j, r)?,
                    // Longer than the window's tail: read on its own.
                    None => f(j, &self.read_bytes(*loc)?)?,
                }
            }
            k = end;
        }
        Ok(())
    }

    fn handle(&self, file: u16) -> Result<Arc<File>> {
        self.files
            .read()
            .expect("pool store")
            .get(file as usize)
            .cloned()
            .flatten()
            .ok_or_else(|| {
                Error::other(
                    self.file_path(file).display().to_string(),
                    "not a finished pool file",
                )
            })
    }

    fn io_error(&self, file: u16, e: std::io::Error) -> Error {
        Error::other(self.file_path(file).display().to_string(), e)
    }
}

/// Bytes `PoolStore::read_each` reads at once, at most (plus `RECORD_TAIL`): a dense run
/// of records costs one system call per megabyte, and the buffer stays in cache.
const READ_WINDOW: u64 = 1 << 20;

/// The farthest apart two wanted records may start and still share a window: reading
/// the bytes between them (a memory copy from the page cache at several GB/s: 16 KiB
/// in a few µs) costs about what a second read call costs. Farther apart, as when an
/// epoch re-scores one pair in a hundred, each is read on its own, so that a sparse
/// epoch does not copy the whole store (it did: 1 MB windows for a few records each).
const READ_GAP: u64 = 16 << 10;

/// Bytes read past a window's last record start, to take in its body; a longer record
/// is read on its own. Features records are about 700 bytes (16 + 3 per n-gram, ≈ 228
/// n-grams a pair at 10M generated pairs), rarely more than a few kilobytes.
const RECORD_TAIL: u64 = 4 << 10;

/// Fills `buf` from `offset` until it is full or the file ends; the bytes read.
fn read_up_to(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match file.read_at(&mut buf[got..], offset + got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

impl PoolLoc {
    fn file(self) -> u16 {
        (self.0 >> OFFSET_BITS) as u16
    }

    fn offset(self) -> u64 {
        self.0 & ((1 << OFFSET_BITS) - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Attributes, Conversation, RowKey};

    fn pair(i: u64) -> PreferencePair {
        PreferencePair {
            key: RowKey(i),
            row: i,
            pair_id: format!("p{i}"),
            prompt: Conversation::Text(format!("prompt {i}")),
            chosen: Conversation::Text("c".repeat(i as usize)),
            rejected: Conversation::Text("r".into()),
            implicit_prompt: false,
            attributes: Attributes::default(),
            extras: vec![1, 2, 3],
            content_hash: i as u128,
            dedup_hash: i as u128,
            pair_key: i,
            corrected: false,
            agreed: false,
            conflict: false,
            adopted_label: None,
        }
    }

    /// Issue 30 item 6: a store is removed by a later process only when no process
    /// holds its lock, whatever process ids the directory names (before, a live serve's
    /// store on a shared directory was removed by a serve on another host, whose
    /// `/proc` lacked the first one's process id).
    #[test]
    fn a_held_store_is_kept_and_an_abandoned_one_removed_whatever_its_process_id() {
        let parent = tempfile::tempdir().unwrap();
        let live = PoolStore::create(Some(parent.path())).unwrap();
        // A directory named after a process id that cannot be running here, whose lock
        // is held (as by a process on another host): kept.
        let foreign = parent.path().join(format!("{PREFIX}4294967295-remote"));
        std::fs::create_dir_all(&foreign).unwrap();
        let held = File::create(foreign.join(LOCK_FILE)).unwrap();
        held.try_lock().unwrap();
        // One whose lock nobody holds: removed.
        let abandoned = parent
            .path()
            .join(format!("{PREFIX}{}-gone", std::process::id()));
        std::fs::create_dir_all(&abandoned).unwrap();
        File::create(abandoned.join(LOCK_FILE)).unwrap();
        // A fresh one without a lock file yet (being created): kept.
        let fresh = parent.path().join(format!("{PREFIX}1-fresh"));
        std::fs::create_dir_all(&fresh).unwrap();
        let second = PoolStore::create(Some(parent.path())).unwrap();
        assert!(live.path().exists() && second.path().exists());
        assert!(foreign.exists(), "a store whose lock is held was removed");
        assert!(fresh.exists(), "a store being created was removed");
        assert!(!abandoned.exists(), "an abandoned store was kept");
        drop(held);
    }

    #[test]
    fn pairs_read_back_from_any_file_in_any_order() {
        let store = PoolStore::create(None).unwrap();
        let mut locs = Vec::new();
        for w in 0..2u16 {
            let mut wr = store.writer(w).unwrap();
            for i in 0..50 {
                locs.push((
                    wr.append(&pair(i + 100 * w as u64)).unwrap(),
                    i + 100 * w as u64,
                ));
            }
            store.finish(wr).unwrap();
        }
        locs.reverse();
        for (loc, i) in locs {
            assert_eq!(store.read(loc).unwrap(), pair(i));
        }
    }

    /// Records longer than a window's tail, windows that end mid-record, two files and
    /// sparse and dense subsets all read back as `read_bytes` gives them.
    #[test]
    fn records_read_in_windows_equal_records_read_one_by_one() {
        let store = PoolStore::create(None).unwrap();
        let mut locs = Vec::new();
        for w in 0..2u16 {
            let mut wr = store.writer(w).unwrap();
            for i in 0..3000u32 {
                // Mostly small records, every 500th longer than RECORD_TAIL.
                let len = if i % 500 == 7 {
                    70_000
                } else {
                    1 + (i as usize * 37) % 900
                };
                let bytes: Vec<u8> = (0..len).map(|b| (b as u32 ^ i) as u8).collect();
                locs.push(wr.append_bytes(&bytes).unwrap());
            }
            store.finish(wr).unwrap();
        }
        for stride in [1, 2, 7, 40, 1000] {
            let mut picked: Vec<PoolLoc> = locs.iter().copied().step_by(stride).collect();
            picked.sort_unstable();
            let mut seen = 0;
            store
                .read_each(&picked, |k, bytes| {
                    assert_eq!(k, seen, "records in order");
                    assert_eq!(bytes, store.read_bytes(picked[k]).unwrap(), "record {k}");
                    seen += 1;
                    Ok(())
                })
                .unwrap();
            assert_eq!(seen, picked.len());
        }
    }
}
