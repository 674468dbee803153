//! The label log: every batch of gold labels `serve` has accepted, in order, as
//! numbered segments under one prefix in object storage.
//!
//! A segment is `seg-SSSSSSSSSS.jsonl`, named by its sequence number (the epoch its
//! labels are applied at). Each is written in one atomic, create-only, durable put
//! (`Location::put_new_durable`) before the batch is acknowledged, so two writers cannot
//! both take a number. It holds the labels as gold-label JSONL (DESIGN §4), each line
//! with one more field, `log_source`: a hash of where the batch came from (a label file
//! under `--labels`, or an HTTP request), so that a restarted serve knows which label
//! files it has already taken. A batch read from a label file under `--labels` also
//! records how far that file was taken (`FileExtent`: its name, the byte offset the
//! batch ends at, and a hash of every byte before it), so that a restarted serve goes
//! on from there and notices a file changed in its taken part. Readers of gold labels
//! ignore the extra fields: the log directory is itself a valid `--gold` input, and
//! `curate --gold LOG` recomputes from scratch what serve holds.

use crate::error::{Error, Result};
use crate::model::GoldLabel;
use crate::side::{label_to_json, parse_label_lines};
use crate::store::{resolve, Location};

/// One segment of the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Segment {
    /// 1, 2, …: the epoch at which the segment's labels apply.
    pub seq: u64,
    pub name: String,
}

/// A segment's contents.
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    /// Hash of the batch's source (`source_tag`).
    pub source: u64,
    pub labels: Vec<GoldLabel>,
    /// The label file the batch was read from and how far (none for HTTP batches and
    /// for segments logged before extents were recorded).
    pub extent: Option<FileExtent>,
}

/// How far a label file was taken: its bytes `[0, end)`, whose hash is `prefix_hash`
/// (`prefix_hash`), are in the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileExtent {
    /// The file's name relative to `--labels`.
    pub name: String,
    pub end: u64,
    pub prefix_hash: u64,
}

/// The hash a `FileExtent` records of a file's taken bytes.
pub fn prefix_hash(bytes: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(bytes)
}

/// The field of each logged line that names the batch's source.
const SOURCE_FIELD: &str = "log_source";
/// The fields of each logged line that record a `FileExtent`.
const FILE_FIELD: &str = "log_file";
const FILE_END_FIELD: &str = "log_file_end";
const FILE_HASH_FIELD: &str = "log_file_prefix_hash";

/// A label log under one prefix.
#[derive(Clone, Debug)]
pub struct LabelLog {
    pub dir: Location,
}

/// The tag of a batch's source: a label file's URL with its size, or a request id.
pub fn source_tag(source: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(source.as_bytes())
}

impl LabelLog {
    pub fn open(url: &str) -> Result<LabelLog> {
        Ok(LabelLog { dir: resolve(url)? })
    }

    /// Removes what a write killed midway left on a local disk: object_store writes a
    /// segment to `seg-N.jsonl#K`, hard-links it to `seg-N.jsonl` and then removes the
    /// staging name, so a SIGKILL in between leaves it (never read: `segments` skips
    /// it). Called by serve at startup, under its output lock, before it appends;
    /// returns how many it removed. Object stores write a segment in one request and
    /// leave nothing.
    pub fn remove_torn_writes(&self) -> Result<usize> {
        let Some(dir) = self.dir.local_path() else {
            return Ok(0);
        };
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(Error::other(dir.display().to_string(), e)),
        };
        let mut removed = 0;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let staged_segment = name
                .split_once('#')
                .is_some_and(|(segment, _)| parse_name(segment).is_some());
            if staged_segment {
                std::fs::remove_file(entry.path())
                    .map_err(|e| Error::other(entry.path().display().to_string(), e))?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// The segments, in sequence order. Other objects under the prefix are ignored.
    pub fn segments(&self) -> Result<Vec<Segment>> {
        let mut out: Vec<Segment> = self
            .dir
            .list_names()?
            .into_iter()
            .filter_map(|name| parse_name(&name).map(|seq| Segment { seq, name }))
            .collect();
        out.sort_by_key(|s| s.seq);
        for (i, s) in out.iter().enumerate() {
            if s.seq != i as u64 + 1 {
                return Err(Error::bad_file(
                    &self.dir.child(&s.name).url,
                    format!(
                        "label log is not contiguous: segment {} follows {}",
                        s.seq, i
                    ),
                ));
            }
        }
        Ok(out)
    }

    /// Appends a non-empty batch as segment `seq`; returns once it is durable. Fails
    /// if the segment exists (another writer took the number).
    pub fn append(&self, seq: u64, source: &str, labels: &[GoldLabel]) -> Result<Segment> {
        self.append_from(seq, source, labels, None)
    }

    /// [`append`](Self::append) for a batch read from a label file, recording how far
    /// the file is taken.
    pub fn append_from(
        &self,
        seq: u64,
        source: &str,
        labels: &[GoldLabel],
        extent: Option<&FileExtent>,
    ) -> Result<Segment> {
        if labels.is_empty() {
            return Err(Error::other(&self.dir.url, "an empty batch is not logged"));
        }
        let name = format!("seg-{seq:010}.jsonl");
        let tag = format!("{:016x}", source_tag(source));
        let mut bytes = Vec::with_capacity(labels.len() * 96);
        for l in labels {
            let mut v = label_to_json(l);
            let m = v.as_object_mut().expect("object");
            m.insert(SOURCE_FIELD.into(), tag.clone().into());
            if let Some(e) = extent {
                m.insert(FILE_FIELD.into(), e.name.clone().into());
                m.insert(FILE_END_FIELD.into(), e.end.into());
                m.insert(
                    FILE_HASH_FIELD.into(),
                    format!("{:016x}", e.prefix_hash).into(),
                );
            }
            serde_json::to_writer(&mut bytes, &v).map_err(|e| Error::other(&self.dir.url, e))?;
            bytes.push(b'\n');
        }
        self.dir.child(&name).put_new_durable(bytes)?;
        Ok(Segment { seq, name })
    }

    /// One segment's labels, in order, and its source.
    pub fn read(&self, segment: &Segment) -> Result<Batch> {
        let loc = self.dir.child(&segment.name);
        let bytes = loc.get()?;
        let labels = parse_label_lines(&bytes, &loc.url)?;
        let first = bytes.split(|b| *b == b'\n').next().unwrap_or(b"");
        let first = serde_json::from_slice::<LoggedFields>(first).ok();
        let extent = first.as_ref().and_then(|f| {
            Some(FileExtent {
                name: f.log_file.clone()?,
                end: f.log_file_end?,
                prefix_hash: u64::from_str_radix(f.log_file_prefix_hash.as_deref()?, 16).ok()?,
            })
        });
        let source = first
            .and_then(|f| f.log_source)
            .and_then(|t| u64::from_str_radix(&t, 16).ok())
            .ok_or_else(|| {
                Error::bad_row(
                    &loc.url,
                    1,
                    Some(SOURCE_FIELD.into()),
                    "missing or not a hash",
                )
            })?;
        Ok(Batch {
            source,
            labels,
            extent,
        })
    }
}

/// The fields serve adds to each logged line (`SOURCE_FIELD`, `FILE_FIELD`, …).
#[derive(serde::Deserialize)]
struct LoggedFields {
    log_source: Option<String>,
    log_file: Option<String>,
    log_file_end: Option<u64>,
    log_file_prefix_hash: Option<String>,
}

fn parse_name(name: &str) -> Option<u64> {
    let seq = name.strip_prefix("seg-")?.strip_suffix(".jsonl")?;
    if seq.len() != 10 {
        return None;
    }
    seq.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Conversation, Verdict};

    #[test]
    fn a_staging_file_left_by_a_killed_write_is_ignored_and_then_removed() {
        let dir = tempfile::tempdir().unwrap();
        let log = LabelLog::open(dir.path().to_str().unwrap()).unwrap();
        let line = "{\"pair_id\": \"p1\", \"verdict\": \"chosen\"}\n";
        std::fs::write(dir.path().join("seg-0000000001.jsonl"), line).unwrap();
        // What object_store leaves when killed between its hard link and the removal.
        std::fs::write(dir.path().join("seg-0000000001.jsonl#1"), line).unwrap();
        std::fs::write(dir.path().join("notes#1"), "not a segment").unwrap();
        assert_eq!(log.segments().unwrap().len(), 1);
        assert_eq!(log.remove_torn_writes().unwrap(), 1);
        assert!(!dir.path().join("seg-0000000001.jsonl#1").exists());
        assert!(
            dir.path().join("notes#1").exists(),
            "only staged segments go"
        );
        assert_eq!(log.segments().unwrap().len(), 1);
    }

    #[test]
    fn segments_round_trip_in_order_and_refuse_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let log = LabelLog::open(dir.path().to_str().unwrap()).unwrap();
        let a = GoldLabel {
            pair_id: "p1".into(),
            verdict: Verdict::Rejected,
            annotator: Some("ann".into()),
            // As read back: label files keep `labeled_at` normalised to RFC 3339 UTC.
            labeled_at: Some("2026-01-01T00:00:00.000000000Z".into()),
            text: None,
        };
        let b = GoldLabel {
            pair_id: "p2".into(),
            verdict: Verdict::Chosen,
            annotator: None,
            labeled_at: None,
            text: Some((
                Conversation::Text("x".into()),
                Conversation::Text("y".into()),
                Conversation::Text("z".into()),
            )),
        };
        log.append(1, "http:1", &[a.clone()]).unwrap();
        log.append(2, "file:labels/x.jsonl", &[b.clone(), a.clone()])
            .unwrap();
        let segs = log.segments().unwrap();
        assert_eq!(segs.len(), 2);
        assert_eq!(log.read(&segs[0]).unwrap().labels, vec![a.clone()]);
        let second = log.read(&segs[1]).unwrap();
        assert_eq!(second.labels, vec![b, a.clone()]);
        assert_eq!(second.source, source_tag("file:labels/x.jsonl"));
        assert_eq!(second.extent, None);
        let extent = FileExtent {
            name: "sub/y.jsonl".into(),
            end: 1234,
            prefix_hash: prefix_hash(b"abc"),
        };
        log.append_from(3, "file:sub/y.jsonl@1234", &[a.clone()], Some(&extent))
            .unwrap();
        let third = log.read(&log.segments().unwrap()[2]).unwrap();
        assert_eq!(third.extent, Some(extent));
        assert!(log.append(2, "http:2", &[a.clone()]).is_err());
        assert!(log.append(4, "http:4", &[]).is_err());
        // The log is a gold-label input as it stands.
        let gold = crate::side::GoldLabels::read(dir.path().to_str().unwrap()).unwrap();
        assert_eq!(gold.records, 4);
        assert_eq!(gold.labels.len(), 2);
    }
}
