//! `sorted_runs`: fixed-width (key, row) entries held under a memory cap. Entries go
//! into one in-memory buffer; when it holds `capacity` entries it is sorted and written
//! to a local temporary file as a sorted run, and the buffer is reused. `merge` then
//! reads every run back, merged with the buffer, in (key, row) order, so a consumer sees
//! one sorted stream whatever was spilled: the result never depends on the cap.
//!
//! Hand-written rather than `extsort`: that crate sorts one iterator handed to it at
//! once, while the survey's entries arrive a batch at a time inside a timely operator
//! that must not block, and our entries are 16 fixed bytes that need no codec.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use synpref_engine::model::RowKey;
use synpref_engine::{Error, Result};

/// One entry: a key and the row it came from.
pub type Entry = (u64, RowKey);

/// Bytes of an entry on disk (and in memory): key and row, little-endian.
pub const ENTRY_BYTES: usize = 16;

/// Read buffer of one run while merging, at most: the merge holds one per run, and
/// together they stay within the cap (down to `MIN_RUN_READ_BUFFER` each).
const RUN_READ_BUFFER: usize = 256 << 10;
/// Read buffer of one run, at least: 256 entries per positioned read.
const MIN_RUN_READ_BUFFER: usize = 4 << 10;

/// Entries under a memory cap, spilled to disk in sorted runs.
#[derive(Debug)]
pub struct SortedRuns {
    buffer: Vec<Entry>,
    /// Entries the buffer holds before it is written as a run.
    capacity: usize,
    dir: Option<PathBuf>,
    spill: Option<Spill>,
    /// (first entry, entry count) of each run in the spill file.
    runs: Vec<(u64, u64)>,
    spilled: u64,
    /// The first I/O error; `merge` reports it (a timely sink cannot return one).
    failed: Option<String>,
}

#[derive(Debug)]
struct Spill {
    file: tempfile::NamedTempFile,
    writer: BufWriter<File>,
}

impl SortedRuns {
    /// Holds at most `capacity` entries (at least one) in memory; runs go to `dir` (the
    /// system's temporary directory when `None`).
    pub fn new(capacity: usize, dir: Option<&Path>) -> SortedRuns {
        SortedRuns {
            buffer: Vec::new(),
            capacity: capacity.max(1),
            dir: dir.map(Path::to_path_buf),
            spill: None,
            runs: Vec::new(),
            spilled: 0,
            failed: None,
        }
    }

    /// Room for `entries` entries, up to the cap: the buffer then grows in one
    /// allocation instead of copying itself as it doubles.
    pub fn reserve(&mut self, entries: usize) {
        let want = entries.min(self.capacity);
        self.buffer
            .reserve_exact(want.saturating_sub(self.buffer.len()));
    }

    pub fn push(&mut self, key: u64, row: RowKey) {
        self.buffer.push((key, row));
        if self.buffer.len() >= self.capacity {
            self.write_run();
        }
    }

    /// Entries pushed so far.
    pub fn len(&self) -> u64 {
        self.spilled + self.buffer.len() as u64
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Sorted runs written to disk so far.
    pub fn run_count(&self) -> usize {
        self.runs.len()
    }

    /// Bytes written to disk so far.
    pub fn spilled_bytes(&self) -> u64 {
        self.spilled * ENTRY_BYTES as u64
    }

    fn write_run(&mut self) {
        self.buffer.sort_unstable();
        if self.failed.is_none() {
            if let Err(e) = self.append_buffer() {
                self.failed = Some(e.to_string());
            }
        }
        self.runs.push((self.spilled, self.buffer.len() as u64));
        self.spilled += self.buffer.len() as u64;
        self.buffer.clear();
    }

    fn append_buffer(&mut self) -> std::io::Result<()> {
        if self.spill.is_none() {
            let file = match &self.dir {
                Some(d) => tempfile::NamedTempFile::new_in(d),
                None => tempfile::NamedTempFile::new(),
            }?;
            let writer = BufWriter::with_capacity(1 << 20, file.reopen()?);
            self.spill = Some(Spill { file, writer });
        }
        let w = &mut self.spill.as_mut().expect("opened above").writer;
        for (key, row) in &self.buffer {
            w.write_all(&key.to_le_bytes())?;
            w.write_all(&row.0.to_le_bytes())?;
        }
        Ok(())
    }

    /// Calls `each` with every entry, in (key, row) order, and consumes the runs (their
    /// file is removed when this returns). Fails with the first I/O error of spilling
    /// or reading back, naming the spill file.
    pub fn merge(mut self, mut each: impl FnMut(Entry)) -> Result<()> {
        self.buffer.sort_unstable();
        let Some(spill) = self.spill.take() else {
            if let Some(e) = self.failed {
                return Err(spill_error(None, &e));
            }
            self.buffer.into_iter().for_each(each);
            return Ok(());
        };
        let path = spill.file.path().to_path_buf();
        let Spill { file, writer } = spill;
        let io = |e: std::io::Error| spill_error(Some(&path), &e.to_string());
        if let Some(e) = self.failed {
            return Err(spill_error(Some(&path), &e));
        }
        // Flushes what the writer still buffers.
        drop(writer.into_inner().map_err(|e| io(e.into_error()))?);
        // Every run reads through the one spill file by positioned reads: a run
        // needs no file descriptor of its own (a small budget over a large pool makes
        // thousands of runs, past a process's descriptor limit).
        let file = file.reopen().map_err(io)?;
        let share = self.capacity * ENTRY_BYTES / (self.runs.len() + 1);
        let chunk = share.clamp(MIN_RUN_READ_BUFFER, RUN_READ_BUFFER) / ENTRY_BYTES * ENTRY_BYTES;
        let mut readers: Vec<RunReader> = self
            .runs
            .iter()
            .map(|&(first, count)| RunReader::new(first, count, chunk))
            .collect();
        let mut memory = self.buffer.into_iter();
        // The heap holds the next entry of each source; the buffer is source `runs`.
        let memory_source = readers.len();
        let mut heap = BinaryHeap::with_capacity(readers.len() + 1);
        for (i, r) in readers.iter_mut().enumerate() {
            if let Some(e) = r.next(&file).map_err(io)? {
                heap.push(Reverse((e, i)));
            }
        }
        if let Some(e) = memory.next() {
            heap.push(Reverse((e, memory_source)));
        }
        while let Some(Reverse((entry, source))) = heap.pop() {
            each(entry);
            let next = if source == memory_source {
                memory.next()
            } else {
                readers[source].next(&file).map_err(io)?
            };
            if let Some(e) = next {
                heap.push(Reverse((e, source)));
            }
        }
        Ok(())
    }
}

/// What is left of one run while merging: its next bytes in the spill file, and a
/// buffer of the bytes read ahead.
struct RunReader {
    /// Offset in the spill file of the first byte not yet read into `buffer`.
    offset: u64,
    /// Bytes of the run not yet read into `buffer`.
    unread: u64,
    buffer: Vec<u8>,
    /// Position of the next entry in `buffer`.
    at: usize,
}

impl RunReader {
    fn new(first: u64, count: u64, chunk: usize) -> RunReader {
        RunReader {
            offset: first * ENTRY_BYTES as u64,
            unread: count * ENTRY_BYTES as u64,
            buffer: Vec::with_capacity(chunk),
            at: 0,
        }
    }

    fn next(&mut self, file: &File) -> std::io::Result<Option<Entry>> {
        if self.at == self.buffer.len() {
            if self.unread == 0 {
                return Ok(None);
            }
            let n = (self.buffer.capacity() as u64).min(self.unread) as usize;
            self.buffer.resize(n, 0);
            file.read_exact_at(&mut self.buffer, self.offset)?;
            self.offset += n as u64;
            self.unread -= n as u64;
            self.at = 0;
        }
        let bytes = &self.buffer[self.at..self.at + ENTRY_BYTES];
        self.at += ENTRY_BYTES;
        let key = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"));
        let row = u64::from_le_bytes(bytes[8..].try_into().expect("8 bytes"));
        Ok(Some((key, RowKey(row))))
    }
}

fn spill_error(path: Option<&Path>, e: &str) -> Error {
    let place = path.map_or("a temporary file".to_string(), |p| p.display().to_string());
    Error::other(
        "spill",
        format!("sorted runs in {place} (--spill-dir): {e}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(n: u64) -> Vec<Entry> {
        // A fixed scramble: keys repeat (every 7th) and rows arrive out of order.
        (0..n)
            .map(|i| {
                (
                    (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) % 97) % 31,
                    RowKey(n - i),
                )
            })
            .collect()
    }

    fn merged(capacity: usize, input: &[Entry]) -> (Vec<Entry>, usize) {
        let mut runs = SortedRuns::new(capacity, None);
        for &(k, r) in input {
            runs.push(k, r);
        }
        assert_eq!(runs.len(), input.len() as u64);
        let count = runs.run_count();
        let mut out = Vec::new();
        runs.merge(|e| out.push(e)).unwrap();
        (out, count)
    }

    #[test]
    fn the_merged_stream_is_the_sorted_input_whatever_the_cap() {
        let input = entries(1000);
        let mut sorted = input.clone();
        sorted.sort_unstable();
        for capacity in [1, 2, 7, 100, 999, 1000, 5000] {
            let (out, runs) = merged(capacity, &input);
            assert_eq!(out, sorted, "capacity {capacity}");
            assert_eq!(runs, 1000 / capacity, "capacity {capacity}");
        }
    }

    /// Each run once had its own file descriptor: a small budget over a large pool
    /// made more runs than a process may open (1,024 by default on Linux).
    #[test]
    fn more_runs_than_a_process_may_open_files_still_merge() {
        // One run per entry, past this process's soft limit on open files.
        let limits = std::fs::read_to_string("/proc/self/limits").unwrap();
        let open_files: u64 = limits
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .and_then(|l| l.split_whitespace().nth(3))
            .and_then(|v| v.parse().ok())
            .unwrap_or(1024);
        let n = open_files.min(1 << 20) + 100;
        let input = entries(n);
        let mut sorted = input.clone();
        sorted.sort_unstable();
        let (out, runs) = merged(1, &input);
        assert_eq!(runs as u64, n);
        assert_eq!(out, sorted);
    }

    #[test]
    fn an_unwritable_spill_dir_is_an_error_naming_the_setting() {
        let mut runs = SortedRuns::new(2, Some(Path::new("/nonexistent/spill")));
        for (k, r) in entries(5) {
            runs.push(k, r);
        }
        let err = runs.merge(|_| {}).unwrap_err().to_string();
        assert!(err.contains("--spill-dir"), "{err}");
    }
}
