//! The durable score cache (DESIGN §3): model outputs per pair, keyed by (pair content
//! hash, model fingerprint), in object storage, so that a re-run, a new gold label or a
//! new threshold never runs a model again on a pair it already scored.
//!
//! Layout: `CACHE/<fingerprint>/chunk-<hash>.parquet`, each chunk a Parquet file of
//! `key` (16-byte content hash, big-endian) and `values` (`width` little-endian f32s).
//! A chunk is written in one `put` once `chunk_rows` new entries have gathered (and at
//! the end of a run); object stores make a put atomic (the local store writes a
//! temporary file and renames it), so a crash loses at most the chunk in flight and
//! never leaves a torn one. Chunk names are hashes of their keys, so two workers that
//! happen to write the same entries write the same object.
//!
//! Values are the exact f32s a model computed; since a pair's output does not depend
//! on its batch (operators' models::batching), a cached value equals a fresh one.

use std::sync::{Arc, Mutex};

use arrow::array::{Array, BinaryArray, FixedSizeBinaryArray, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use rustc_hash::FxHashMap;

use crate::store::{resolve, Location};
use crate::{Error, Result};

/// New entries gathered before a chunk is written: small enough that a crash loses
/// little work, large enough that a 40M-pair run writes thousands of objects, not
/// millions.
pub const DEFAULT_CHUNK_ROWS: usize = 4096;

/// The cache of one model (one fingerprint).
pub struct ScoreCache {
    dir: Location,
    width: usize,
    chunk_rows: usize,
    entries: Mutex<FxHashMap<u128, Arc<[f32]>>>,
    pending: Mutex<Vec<(u128, Vec<f32>)>>,
}

fn schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("key", DataType::FixedSizeBinary(16), false),
        Field::new("values", DataType::Binary, false),
    ]))
}

impl ScoreCache {
    /// Opens (and reads) the cache of `fingerprint` under `url`. Unreadable chunks are
    /// skipped with a warning: a cache miss only costs time.
    pub fn open(url: &str, fingerprint: &str, width: usize) -> Result<ScoreCache> {
        if fingerprint.is_empty() || fingerprint.contains('/') {
            return Err(Error::setting(
                "score cache",
                format!("bad model fingerprint `{fingerprint}`"),
            ));
        }
        let dir = resolve(url)?.child(fingerprint);
        let mut entries = FxHashMap::default();
        for name in dir.list_names()? {
            if !(name.starts_with("chunk-") && name.ends_with(".parquet")) {
                continue;
            }
            let loc = dir.child(&name);
            if let Err(e) = read_chunk(&loc, width, &mut entries) {
                tracing::warn!(chunk = %loc.url, error = %e, "skipping an unreadable score-cache chunk");
            }
        }
        tracing::info!(cache = %dir.url, entries = entries.len(), "score cache opened");
        Ok(ScoreCache {
            dir,
            width,
            chunk_rows: DEFAULT_CHUNK_ROWS,
            entries: Mutex::new(entries),
            pending: Mutex::new(Vec::new()),
        })
    }

    /// Sets the number of new entries per written chunk.
    pub fn with_chunk_rows(mut self, rows: usize) -> ScoreCache {
        self.chunk_rows = rows.max(1);
        self
    }

    pub fn width(&self) -> usize {
        self.width
    }

    pub fn url(&self) -> &str {
        &self.dir.url
    }

    pub fn len(&self) -> usize {
        self.entries.lock().expect("cache lock").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The cached values of each key, if present.
    pub fn get_many(&self, keys: &[u128]) -> Vec<Option<Arc<[f32]>>> {
        let entries = self.entries.lock().expect("cache lock");
        keys.iter().map(|k| entries.get(k).cloned()).collect()
    }

    /// Adds entries (`values` holds `width` floats per key); writes every full chunk.
    pub fn insert_many(&self, keys: &[u128], values: &[f32]) -> Result<()> {
        assert_eq!(keys.len() * self.width, values.len(), "score cache width");
        let mut full = Vec::new();
        {
            let mut entries = self.entries.lock().expect("cache lock");
            let mut pending = self.pending.lock().expect("cache lock");
            for (k, v) in keys.iter().zip(values.chunks_exact(self.width)) {
                if entries.insert(*k, Arc::from(v)).is_none() {
                    pending.push((*k, v.to_vec()));
                }
                if pending.len() >= self.chunk_rows {
                    full.push(std::mem::take(&mut *pending));
                }
            }
        }
        for chunk in full {
            self.write_chunk(chunk)?;
        }
        Ok(())
    }

    /// Writes the entries not yet written (call at the end of a run).
    pub fn flush(&self) -> Result<()> {
        let chunk = std::mem::take(&mut *self.pending.lock().expect("cache lock"));
        if chunk.is_empty() {
            return Ok(());
        }
        self.write_chunk(chunk)
    }

    fn write_chunk(&self, mut chunk: Vec<(u128, Vec<f32>)>) -> Result<()> {
        chunk.sort_by_key(|(k, _)| *k);
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        for (k, _) in &chunk {
            h.update(&k.to_be_bytes());
        }
        let keys = FixedSizeBinaryArray::try_from_iter(chunk.iter().map(|(k, _)| k.to_be_bytes()))
            .expect("16-byte keys");
        let values = BinaryArray::from_iter_values(
            chunk
                .iter()
                .map(|(_, v)| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>()),
        );
        let batch = RecordBatch::try_new(schema(), vec![Arc::new(keys), Arc::new(values)])
            .expect("cache schema");
        let loc = self
            .dir
            .child(&format!("chunk-{:032x}.parquet", h.digest128()));
        crate::output::write_parquet_file(&loc, &[batch])
    }
}

fn read_chunk(loc: &Location, width: usize, into: &mut FxHashMap<u128, Arc<[f32]>>) -> Result<()> {
    let bytes = loc.get()?;
    let size = bytes.len() as u64;
    let builder = ParquetRecordBatchReaderBuilder::try_new(bytes)
        .map_err(|e| Error::bad_file(&loc.url, e.to_string()))?;
    crate::input::check_parquet_ranges(&loc.url, builder.metadata(), size)?;
    let mut reader = builder
        .build()
        .map_err(|e| Error::bad_file(&loc.url, e.to_string()))?;
    while let Some(batch) = crate::input::catch_parquet_panic(&loc.url, || reader.next())? {
        let batch = batch.map_err(|e| Error::bad_file(&loc.url, e.to_string()))?;
        // By name: a chunk with fewer columns is an error, not an index out of bounds
        // (found by fuzzing, fuzz/fuzz_targets/score_cache.rs).
        let column = |name: &str| {
            batch
                .column_by_name(name)
                .ok_or_else(|| Error::bad_file(&loc.url, format!("no column `{name}`")))
        };
        let keys = column("key")?
            .as_any()
            .downcast_ref::<FixedSizeBinaryArray>()
            .ok_or_else(|| Error::bad_file(&loc.url, "column `key` is not 16-byte binary"))?;
        let values = column("values")?
            .as_any()
            .downcast_ref::<BinaryArray>()
            .ok_or_else(|| Error::bad_file(&loc.url, "column `values` is not binary"))?;
        for i in 0..batch.num_rows() {
            let v = values.value(i);
            if v.len() != width * 4 || keys.value(i).len() != 16 || keys.is_null(i) {
                return Err(Error::bad_file(
                    &loc.url,
                    format!("row {i}: {} value bytes, expected {}", v.len(), width * 4),
                ));
            }
            let key = u128::from_be_bytes(keys.value(i).try_into().expect("16 bytes"));
            let floats: Vec<f32> = v
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes")))
                .collect();
            into.insert(key, Arc::from(floats));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_survive_reopening_in_atomic_chunks_and_a_lost_pending_chunk_is_only_a_miss() {
        let dir = tempfile::tempdir().unwrap();
        let url = dir.path().to_str().unwrap();
        let cache = ScoreCache::open(url, "fp", 2).unwrap().with_chunk_rows(3);
        let keys: Vec<u128> = (0..7).map(|i| i * 1_000_003).collect();
        let values: Vec<f32> = (0..14).map(|i| i as f32 * 0.25).collect();
        cache.insert_many(&keys, &values).unwrap();
        // Two full chunks written, one entry pending; a crash now loses only that one.
        let reopened = ScoreCache::open(url, "fp", 2).unwrap();
        assert_eq!(reopened.len(), 6);
        cache.flush().unwrap();
        let reopened = ScoreCache::open(url, "fp", 2).unwrap();
        assert_eq!(reopened.len(), 7);
        let got = reopened.get_many(&[keys[6], 42]);
        assert_eq!(got[0].as_deref(), Some(&[3.0f32, 3.25][..]));
        assert!(got[1].is_none());
        // Another fingerprint sees nothing.
        assert!(ScoreCache::open(url, "other", 2).unwrap().is_empty());
    }

    /// Fuzzing regression (fuzz/fuzz_targets/score_cache.rs): a chunk with a `key`
    /// column only panicked (column 1 out of bounds); it is an unreadable chunk, skipped.
    #[test]
    fn fuzz_regression_a_chunk_without_its_values_column_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let chunk = dir.path().join("fp").join("chunk-0.parquet");
        std::fs::create_dir_all(chunk.parent().unwrap()).unwrap();
        std::fs::write(
            &chunk,
            include_bytes!("../../tests/fuzz_regressions/score_cache/key-column-only.parquet"),
        )
        .unwrap();
        let loc = resolve(chunk.to_str().unwrap()).unwrap();
        let err = read_chunk(&loc, 2, &mut FxHashMap::default()).unwrap_err();
        assert!(err.to_string().contains("no column `values`"), "{err}");
        let cache = ScoreCache::open(dir.path().to_str().unwrap(), "fp", 2).unwrap();
        assert!(cache.is_empty());
    }

    /// Fuzzing regression (fuzz/fuzz_targets/score_cache.rs): dictionary-encoded pages
    /// of the fixed-size `key` column with an index past the dictionary, and without a
    /// dictionary page, made the parquet crate panic while decoding; the panic is
    /// caught at the reader (`input::catch_parquet_panic`) and the chunk skipped.
    #[test]
    fn fuzz_regression_corrupt_dictionary_pages_are_an_error() {
        let cases: [(&str, &[u8]); 2] = [
            (
                "index past the dictionary",
                include_bytes!(
                    "../../tests/fuzz_regressions/score_cache/dictionary-index-past-the-dictionary.parquet"
                ),
            ),
            (
                "no dictionary page",
                include_bytes!(
                    "../../tests/fuzz_regressions/score_cache/dictionary-encoded-without-dictionary.parquet"
                ),
            ),
        ];
        for (case, bytes) in cases {
            let dir = tempfile::tempdir().unwrap();
            let chunk = dir.path().join("fp").join("chunk-0.parquet");
            std::fs::create_dir_all(chunk.parent().unwrap()).unwrap();
            std::fs::write(&chunk, bytes).unwrap();
            let loc = resolve(chunk.to_str().unwrap()).unwrap();
            let err = read_chunk(&loc, 2, &mut FxHashMap::default()).unwrap_err();
            assert!(
                err.to_string().contains("corrupt page data"),
                "{case}: {err}"
            );
            let cache = ScoreCache::open(dir.path().to_str().unwrap(), "fp", 2).unwrap();
            assert!(cache.is_empty(), "{case}");
        }
    }
}
