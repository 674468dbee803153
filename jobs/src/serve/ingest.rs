//! serve's ingest thread: the label log's only writer (issue 30 item 3).
//!
//! It appends each HTTP batch, and what it takes of the label files under `--labels`,
//! as one durable segment each, before anything is acknowledged or applied. The files
//! are listed on a timer of their own (`--poll-interval`), whatever the HTTP traffic,
//! with the conventions of the data tools (Spark, Hive, pyarrow):
//! - a file whose name (or any directory on its path) starts with `_` or `.` is
//!   ignored: write there, then rename into place;
//! - a JSONL file is taken up to its last complete line, and when it grows its new
//!   complete lines are taken (a last line without a newline is taken once it parses
//!   and the file has kept its size for a whole listing); the log records how far each
//!   file was taken (`label_log::FileExtent`), so a restart goes on from there;
//! - a Parquet file is taken whole, once it has kept its size for a whole listing;
//! - a file that shrinks, or whose taken bytes change, is rejected with a message
//!   (its new labels would silently disagree with the ones applied); a file that does
//!   not parse is rejected at that size and read again when it changes; a rejection
//!   leaves `/v1/status` once the file is read.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use synpref_engine::input::FileFormat;
use synpref_engine::label_log::{prefix_hash, source_tag, FileExtent, LabelLog};
use synpref_engine::model::GoldLabel;
use synpref_engine::side::{parse_label_lines, read_label_records};
use synpref_engine::store::Location;
use synpref_engine::{Error, Result};

use super::{unix_now, Control, Ingest, Status};

/// The label log's only writer.
pub(super) struct Ingester {
    log: LabelLog,
    next_seq: u64,
    /// Tags of the sources already logged (HTTP requests; label files taken whole
    /// before extents were recorded).
    taken: HashSet<u64>,
    /// How far each label file has been taken.
    extents: HashMap<String, FileExtent>,
    /// Rejected files: their size when rejected and why.
    rejected: BTreeMap<String, (u64, String)>,
    /// Size of each label file at the last listing.
    listed: HashMap<String, u64>,
    labels_dir: Option<Location>,
    status: Arc<Mutex<Status>>,
    /// Set when the log cannot be written; serve then ends.
    fatal: Arc<Mutex<Option<String>>>,
    requests: u64,
}

/// A new segment: its number and labels, for the controller.
type Logged = (u64, Vec<GoldLabel>);

impl Ingester {
    pub(super) fn new(
        log: LabelLog,
        labels_dir: Option<Location>,
        status: Arc<Mutex<Status>>,
        fatal: Arc<Mutex<Option<String>>>,
    ) -> Result<Self> {
        let segments = log.segments()?;
        let mut taken = HashSet::new();
        let mut extents: HashMap<String, FileExtent> = HashMap::new();
        let mut records = 0u64;
        for s in &segments {
            let batch = log.read(s)?;
            taken.insert(batch.source);
            records += batch.labels.len() as u64;
            if let Some(e) = batch.extent {
                extents.insert(e.name.clone(), e);
            }
        }
        {
            // What was acknowledged before this process started, from the moment the
            // API answers: `/v1/status` never shows 0/0 while a restart loads.
            let mut st = status.lock().expect("status");
            st.epoch = segments.len() as u64;
            st.labels_total = records;
            st.labels_pending = records;
        }
        Ok(Ingester {
            next_seq: segments.len() as u64 + 1,
            taken,
            extents,
            rejected: BTreeMap::new(),
            listed: HashMap::new(),
            log,
            labels_dir,
            status,
            fatal,
            requests: 0,
        })
    }

    fn append(
        &mut self,
        source: &str,
        labels: &[GoldLabel],
        extent: Option<&FileExtent>,
    ) -> Result<u64> {
        let seq = self.next_seq;
        self.log.append_from(seq, source, labels, extent)?;
        self.next_seq += 1;
        self.taken.insert(source_tag(source));
        self.status.lock().expect("status").labels_pending += labels.len() as u64;
        Ok(seq)
    }

    /// Lists `--labels` and takes what is new; returns the new segments. An error is a
    /// failed write of the log (fatal); a failed listing is logged and tried again.
    pub(super) fn poll(&mut self) -> Result<Vec<Logged>> {
        let Some(dir) = self.labels_dir.clone() else {
            return Ok(Vec::new());
        };
        match dir.list_sizes() {
            Ok(listing) => self.take(&dir, listing),
            Err(e) => {
                tracing::error!(error = %e, "cannot list label files; trying again");
                Ok(Vec::new())
            }
        }
    }

    /// `poll` given a listing.
    fn take(&mut self, dir: &Location, listing: Vec<(String, u64)>) -> Result<Vec<Logged>> {
        let mut out = Vec::new();
        let mut listed = HashMap::new();
        for (name, size) in listing {
            let Some(format) = FileFormat::of(&name) else {
                continue;
            };
            if name
                .split('/')
                .any(|c| c.starts_with('_') || c.starts_with('.'))
            {
                continue;
            }
            listed.insert(name.clone(), size);
            let stable = self.listed.get(&name) == Some(&size);
            if self.rejected.get(&name).map(|r| r.0) == Some(size) {
                continue;
            }
            let url = dir.child(&name).url;
            let read = match format {
                FileFormat::Parquet => self.read_parquet(&name, &url, size, stable),
                FileFormat::Jsonl => self.read_jsonl(dir, &name, size, stable),
            };
            match read {
                Ok(None) => {}
                Ok(Some((labels, extent))) => {
                    let source = format!("file:{name}@{}", extent.end);
                    let seq = self.append(&source, &labels, Some(&extent))?;
                    self.extents.insert(name.clone(), extent);
                    self.rejected.remove(&name);
                    let mut st = self.status.lock().expect("status");
                    st.label_files_taken += 1;
                    st.label_files_rejected = self.rejections();
                    drop(st);
                    tracing::info!(file = %url, labels = labels.len(), epoch = seq, "label file taken");
                    out.push((seq, labels));
                }
                Err(e) => {
                    tracing::error!(file = %url, error = %e, "label file rejected (read again if it changes)");
                    self.rejected.insert(name, (size, format!("{url}: {e}")));
                    self.status.lock().expect("status").label_files_rejected = self.rejections();
                }
            }
        }
        self.listed = listed;
        Ok(out)
    }

    fn rejections(&self) -> Vec<String> {
        self.rejected.values().map(|(_, m)| m.clone()).collect()
    }

    /// A Parquet label file: taken whole once it kept its size for a listing.
    fn read_parquet(
        &self,
        name: &str,
        url: &str,
        size: u64,
        stable: bool,
    ) -> Result<Option<(Vec<GoldLabel>, FileExtent)>> {
        if let Some(taken) = self.extents.get(name) {
            if taken.end == size {
                return Ok(None);
            }
            return Err(Error::bad_file(
                url,
                format!(
                    "changed after it was taken ({} bytes then, {size} now): a Parquet label file is taken whole; add a new file instead",
                    taken.end
                ),
            ));
        }
        if !stable || self.taken_before_extents(name) {
            return Ok(None);
        }
        let labels = read_label_records(url)?;
        Ok(Some((
            labels,
            FileExtent {
                name: name.to_string(),
                end: size,
                prefix_hash: 0,
            },
        )))
    }

    /// A JSONL label file: its complete lines after what was taken before.
    fn read_jsonl(
        &self,
        dir: &Location,
        name: &str,
        size: u64,
        stable: bool,
    ) -> Result<Option<(Vec<GoldLabel>, FileExtent)>> {
        let taken = self.extents.get(name);
        let from = taken.map(|t| t.end).unwrap_or(0);
        if size == from || self.taken_before_extents(name) {
            return Ok(None);
        }
        let loc = dir.child(name);
        if size < from {
            return Err(Error::bad_file(
                &loc.url,
                format!("shrank to {size} bytes after its first {from} bytes were taken: append to a label file, never rewrite it"),
            ));
        }
        let bytes = loc.get()?;
        // The listing and the read may disagree when the writer is at work: go by the
        // bytes read.
        if (bytes.len() as u64) < from {
            return Ok(None);
        }
        if let Some(t) = taken {
            if prefix_hash(&bytes[..from as usize]) != t.prefix_hash {
                return Err(Error::bad_file(
                    &loc.url,
                    format!("its first {from} bytes, already taken, changed: append to a label file, never rewrite it"),
                ));
            }
        }
        let new = &bytes[from as usize..];
        let complete = match new.iter().rposition(|b| *b == b'\n') {
            Some(last) => last + 1,
            None => 0,
        };
        let tail = &new[complete..];
        let origin = format!("{} (from byte {from})", loc.url);
        // A last line without a newline: taken once the file kept its size for a
        // listing and the line parses (a half-written line does not).
        let end = if !tail.is_empty() && stable && parse_label_lines(tail, &origin).is_ok() {
            new.len()
        } else {
            complete
        };
        if end == 0 {
            return Ok(None);
        }
        let labels = parse_label_lines(&new[..end], &origin)?;
        let end = from + end as u64;
        let extent = FileExtent {
            name: name.to_string(),
            end,
            prefix_hash: prefix_hash(&bytes[..end as usize]),
        };
        if labels.is_empty() {
            // Blank lines only: nothing to log; looked at again when the file grows.
            return Ok(None);
        }
        Ok(Some((labels, extent)))
    }

    /// The file was taken whole by a serve from before extents were recorded.
    fn taken_before_extents(&self, name: &str) -> bool {
        !self.extents.contains_key(name)
            && self.taken.contains(&source_tag(&format!("file:{name}")))
    }

    /// Ends ingestion after a failed write of the log: no label is acknowledged any
    /// more, and the controller ends serve with the error.
    fn fail(&self, control: &mpsc::Sender<Control>, e: &Error) {
        let message = format!("cannot write the label log {}: {e}", self.log.dir.url);
        tracing::error!("{message}; serve stops taking labels and exits");
        *self.fatal.lock().expect("fatal") = Some(message.clone());
        let _ = control.send(Control::Fatal(message));
    }

    /// Takes HTTP batches as they come and lists `--labels` every `poll`, on its own
    /// timer: a steady stream of requests never holds a file back.
    pub(super) fn run(
        mut self,
        rx: mpsc::Receiver<Ingest>,
        control: mpsc::Sender<Control>,
        poll: Duration,
    ) {
        let mut next_listing = Instant::now() + poll;
        loop {
            let wait = next_listing.saturating_duration_since(Instant::now());
            match rx.recv_timeout(wait) {
                Ok(Ingest::Http { labels, reply }) => {
                    self.requests += 1;
                    let source = format!("http:{}:{}", unix_now(), self.requests);
                    match self.append(&source, &labels, None) {
                        Ok(seq) => {
                            let _ = control.send(Control::Labels { seq, labels });
                            let _ = reply.send(Ok(seq));
                        }
                        Err(e) => {
                            self.fail(&control, &e);
                            let _ = reply.send(Err(e));
                            return;
                        }
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            }
            if Instant::now() >= next_listing {
                match self.poll() {
                    Ok(batches) => {
                        for (seq, labels) in batches {
                            let _ = control.send(Control::Labels { seq, labels });
                        }
                    }
                    Err(e) => {
                        self.fail(&control, &e);
                        return;
                    }
                }
                next_listing = Instant::now() + poll;
            }
        }
    }
}
