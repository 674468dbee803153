//! The pool store: `serve`'s local, random-access copy of the pool's valid pairs.
//!
//! Serve keeps only a few numbers per pair in memory (DESIGN §2: the pool is far larger
//! than memory at 40M pairs); when a pair must be scored again or written to the
//! changelog, its text comes from here. Each worker appends the pairs it reads to its
//! own file (no locking between workers); a pair is addressed by `PoolLoc` (file and
//! byte offset), and read back with one positioned read of a length-prefixed record.
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

/// Removes the pool stores of processes that no longer run (a SIGKILLed serve cannot
/// remove its own).
fn remove_orphans(parent: &Path) {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(PREFIX)
            .and_then(|r| r.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
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
        let bytes = serde_json::to_vec(pair).map_err(|e| Error::other("pool store", e))?;
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
    /// Open files for reading, by index; shared by concurrent readers (positioned
    /// reads need no seek position).
    files: RwLock<Vec<Option<Arc<File>>>>,
}

impl PoolStore {
    /// A new, empty store in a fresh directory under `parent` (the system's temporary
    /// directory when `None`), removed when the store is dropped. Stores left by killed
    /// processes (directories named by their process id) are removed here.
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
        Ok(PoolStore {
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
        serde_json::from_slice(&bytes).map_err(|e| {
            Error::other(
                self.path().display().to_string(),
                format!("corrupt record: {e}"),
            )
        })
    }

    /// Reads the record at `loc` as written by `append_bytes`.
    pub fn read_bytes(&self, loc: PoolLoc) -> Result<Vec<u8>> {
        let file = (loc.0 >> OFFSET_BITS) as u16;
        let offset = loc.0 & ((1 << OFFSET_BITS) - 1);
        let path = self.file_path(file);
        let io = |e: std::io::Error| Error::other(path.display().to_string(), e);
        let handle = self
            .files
            .read()
            .expect("pool store")
            .get(file as usize)
            .cloned()
            .flatten()
            .ok_or_else(|| Error::other(path.display().to_string(), "not a finished pool file"))?;
        let mut len = [0u8; 4];
        handle.read_exact_at(&mut len, offset).map_err(io)?;
        let mut bytes = vec![0u8; u32::from_le_bytes(len) as usize];
        handle.read_exact_at(&mut bytes, offset + 4).map_err(io)?;
        Ok(bytes)
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
            pair_key: i,
            corrected: false,
        }
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
}
