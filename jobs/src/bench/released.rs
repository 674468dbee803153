//! Benchmark files as they are distributed: Parquet (Hugging Face's datasets), JSON
//! Lines, or one JSON array (RMB, RM-Bench), read row by row into a typed struct of
//! the benchmark's own fields. A row that does not fit names the file, the row and
//! serde's reason (exit 2).
//!
//! Parquet rows go through arrow's JSON writer, so list-valued and object-valued
//! columns (RewardBench 2's `chosen` lists, PPE's `scores`) reach the struct as they
//! would from the JSON the dataset was built from.

use serde::de::DeserializeOwned;
use synpref_engine::store::Location;
use synpref_engine::{Error, Result};

/// The rows of one released file, each with its row number (Parquet and JSON arrays:
/// from 0; JSON Lines: the line number, from 1, as quarantine reports it).
pub fn read_rows<T: DeserializeOwned>(loc: &Location) -> Result<Vec<(u64, T)>> {
    rows_of(&loc.url, loc.get()?)
}

/// The rows of a released file's bytes, already read (`url` names it in errors and
/// says whether it is Parquet).
pub fn rows_of<T: DeserializeOwned>(url: &str, bytes: bytes::Bytes) -> Result<Vec<(u64, T)>> {
    if url.ends_with(".parquet") {
        return parquet_rows(url, bytes);
    }
    let text = std::str::from_utf8(&bytes)
        .map_err(|e| Error::bad_file(url, format!("not UTF-8 text: {e}")))?;
    match text.trim_start().as_bytes().first() {
        Some(b'[') => {
            let rows: Vec<serde_json::Value> = serde_json::from_str(text)
                .map_err(|e| Error::bad_file(url, format!("not a JSON array: {e}")))?;
            rows.into_iter()
                .enumerate()
                .map(|(i, v)| Ok((i as u64, typed(url, i as u64, v)?)))
                .collect()
        }
        Some(_) => text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(i, line)| {
                let row = i as u64 + 1;
                serde_json::from_str(line)
                    .map(|t| (row, t))
                    .map_err(|e| Error::bad_row(url, row, None, e.to_string()))
            })
            .collect(),
        None => Err(Error::bad_file(url, "no rows: the file is empty")),
    }
}

fn typed<T: DeserializeOwned>(url: &str, row: u64, value: serde_json::Value) -> Result<T> {
    serde_json::from_value(value).map_err(|e| Error::bad_row(url, row, None, e.to_string()))
}

fn parquet_rows<T: DeserializeOwned>(url: &str, bytes: bytes::Bytes) -> Result<Vec<(u64, T)>> {
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    let size = bytes.len() as u64;
    let builder = ParquetRecordBatchReaderBuilder::try_new(bytes)
        .map_err(|e| Error::bad_file(url, format!("not a Parquet file: {e}")))?;
    synpref_engine::input::check_parquet_ranges(url, builder.metadata(), size)?;
    let mut reader = builder
        .build()
        .map_err(|e| Error::bad_file(url, format!("not a Parquet file: {e}")))?;
    let mut out = Vec::new();
    while let Some(batch) = synpref_engine::input::catch_parquet_panic(url, || reader.next())? {
        let batch = batch.map_err(|e| Error::bad_file(url, e.to_string()))?;
        let mut lines = Vec::new();
        {
            let mut writer = arrow::json::LineDelimitedWriter::new(&mut lines);
            writer
                .write(&batch)
                .and_then(|_| writer.finish())
                .map_err(|e| Error::bad_file(url, e.to_string()))?;
        }
        for line in lines.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            let row = out.len() as u64;
            let t = serde_json::from_slice(line)
                .map_err(|e| Error::bad_row(url, row, None, e.to_string()))?;
            out.push((row, t));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    /// Fuzzing regression (fuzz/fuzz_targets/pairs_parquet.rs): a footer whose column
    /// chunk has a negative size made the parquet crate panic; a released file like it
    /// is an error naming the file.
    #[test]
    fn fuzz_regression_a_negative_column_chunk_size_is_an_error() {
        let bytes = bytes::Bytes::from_static(include_bytes!(
            "../../../tests/fuzz_regressions/pairs_parquet/negative-column-range.parquet"
        ));
        let err = super::rows_of::<serde_json::Value>("bench.parquet", bytes).unwrap_err();
        assert!(err.to_string().contains("claims bytes"), "{err}");
    }
}
