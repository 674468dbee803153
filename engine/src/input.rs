//! Reading preference pairs: planning the input (files, formats, columns, shards) and
//! reading one shard into raw records.
//!
//! A Parquet file is sharded by row group, a JSONL file by byte range; shard `i` goes to
//! worker `i mod workers`, so every worker reads a disjoint part of the input. Readers
//! do not judge rows: they report what is there (`RawRecord`), and the validate operator
//! decides. What makes a whole file unusable (unreadable, not Parquet, a required
//! column missing or of the wrong type) is an error naming the file and column.

// `ParquetObjectReader` is deprecated in parquet 60 in favour of a hand-written
// `AsyncFileReader`; it still does exactly what we need (ranged gets through
// object_store), so we keep the maintained crate's reader until it is removed.
#![allow(deprecated)]

use std::collections::BTreeSet;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch, StringArray, StructArray};
use arrow::datatypes::{DataType, Field, Schema};
use futures::StreamExt;
use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions};
use parquet::arrow::async_reader::{ParquetObjectReader, ParquetRecordBatchStream};
use parquet::arrow::ParquetRecordBatchStreamBuilder;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::extras::ExtrasCodec;
use crate::json_types::{join_into, json_columns, JsonType};
use crate::model::{Attributes, Conversation, Message, RowKey, ATTRIBUTE_COLUMNS};
use crate::output::{ConvForm, OWN_COLUMNS};
use crate::store::{block_on, list_inputs, InputFile, Location};

/// Default rows per record batch when reading: arrow-rs's own default batch size, large
/// enough to amortise per-batch overhead, small enough to keep a few batches per worker
/// in flight.
pub const READ_BATCH_ROWS: usize = 8192;
/// JSONL files larger than this are split into byte ranges read by different workers.
pub const JSONL_SHARD_BYTES: u64 = 32 << 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FileFormat {
    Parquet,
    Jsonl,
}

impl FileFormat {
    pub fn of(name: &str) -> Option<FileFormat> {
        let n = name.to_ascii_lowercase();
        if n.ends_with(".parquet") || n.ends_with(".pq") {
            Some(FileFormat::Parquet)
        } else if n.ends_with(".jsonl") || n.ends_with(".ndjson") || n.ends_with(".json") {
            Some(FileFormat::Jsonl)
        } else {
            None
        }
    }
}

/// The columns of one Parquet file we understand.
#[derive(Clone, Debug)]
pub struct ParquetColumns {
    pub pair_id: bool,
    pub prompt: Option<ConvForm>,
    pub chosen: ConvForm,
    pub rejected: ConvForm,
    pub attributes: [bool; 6],
    pub extras: Vec<Field>,
}

#[derive(Clone)]
pub struct PlannedFile {
    pub index: usize,
    pub location: Location,
    pub size: u64,
    pub format: FileFormat,
    pub parquet: Option<(ArrowReaderMetadata, ParquetColumns)>,
}

/// A unit of reading work.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Shard {
    RowGroup {
        file: usize,
        row_group: usize,
        rows: u64,
    },
    ByteRange {
        file: usize,
        start: u64,
        end: u64,
    },
}

impl Shard {
    pub fn file(&self) -> usize {
        match self {
            Shard::RowGroup { file, .. } | Shard::ByteRange { file, .. } => *file,
        }
    }
}

/// What to read: files in order and their shards.
#[derive(Clone)]
pub struct InputPlan {
    pub url: String,
    pub files: Vec<PlannedFile>,
    pub shards: Vec<Shard>,
    /// Exact for Parquet, estimated (bytes / 512) for JSONL.
    pub estimated_rows: u64,
    /// Rows per batch a shard reader hands out (`READ_BATCH_ROWS` unless set).
    pub batch_rows: usize,
}

impl InputPlan {
    /// The shards a worker reads.
    pub fn shards_for(&self, worker: usize, peers: usize) -> Vec<Shard> {
        self.shards
            .iter()
            .enumerate()
            .filter(|(i, _)| i % peers == worker)
            .map(|(_, s)| s.clone())
            .collect()
    }
}

fn accept_input(name: &str) -> bool {
    FileFormat::of(name).is_some()
}

/// The pair files an input URL names (a file, directory or glob), sorted by path,
/// without reading them: what [`plan_input`] plans, and what a pool's fingerprint is
/// taken from.
pub fn list_pool_files(url: &str) -> Result<Vec<crate::store::InputFile>> {
    list_inputs(url, &accept_input)
}

/// Lists the input and reads every Parquet footer; fails on the first unusable file.
pub fn plan_input(url: &str) -> Result<InputPlan> {
    plan_input_with(url, JSONL_SHARD_BYTES)
}

/// [`plan_input`] with a chosen JSONL shard size (tests use small ones).
pub fn plan_input_with(url: &str, jsonl_shard_bytes: u64) -> Result<InputPlan> {
    plan_files(url, list_pool_files(url)?, jsonl_shard_bytes)
}

/// [`plan_input`] of chosen files of `url` (as [`list_pool_files`] gives them): export
/// plans the parts a manifest lists, not whatever else the directory holds.
pub fn plan_files(url: &str, files: Vec<InputFile>, jsonl_shard_bytes: u64) -> Result<InputPlan> {
    let mut planned = Vec::with_capacity(files.len());
    let mut shards = Vec::new();
    let mut estimated_rows = 0;
    for (index, InputFile { location, size }) in files.into_iter().enumerate() {
        let name = location
            .path
            .as_ref()
            .rsplit('/')
            .next()
            .unwrap_or("")
            .to_string();
        // A directory or glob lists only these; a file named directly may be anything.
        let format = FileFormat::of(&name).ok_or_else(|| {
            Error::bad_file(
                &location.url,
                "not a pair file: give .parquet or .jsonl files (or a directory or glob of them)",
            )
        })?;
        match format {
            FileFormat::Parquet => {
                let mut reader =
                    ParquetObjectReader::new(location.store.clone(), location.path.clone())
                        .with_file_size(size);
                let meta = block_on(ArrowReaderMetadata::load_async(
                    &mut reader,
                    ArrowReaderOptions::new(),
                ))
                .map_err(|e| {
                    Error::bad_file(&location.url, format!("not a readable Parquet file: {e}"))
                })?;
                check_parquet_ranges(&location.url, meta.metadata(), size)?;
                let columns = parquet_columns(&location.url, meta.schema())?;
                // A file without rows is refused as a zero-byte JSONL file is: one
                // answer for "no rows" whatever the format.
                if meta.metadata().file_metadata().num_rows() == 0 {
                    return Err(Error::bad_file(
                        &location.url,
                        "no rows: the Parquet file holds no rows; remove it or give rows",
                    ));
                }
                for (rg, md) in meta.metadata().row_groups().iter().enumerate() {
                    let rows = md.num_rows() as u64;
                    estimated_rows += rows;
                    if rows > 0 {
                        shards.push(Shard::RowGroup {
                            file: index,
                            row_group: rg,
                            rows,
                        });
                    }
                }
                planned.push(PlannedFile {
                    index,
                    location,
                    size,
                    format,
                    parquet: Some((meta, columns)),
                });
            }
            FileFormat::Jsonl => {
                if size == 0 {
                    return Err(Error::bad_file(
                        &location.url,
                        "no rows: the file is empty (0 bytes); remove it or give rows",
                    ));
                }
                estimated_rows += size / 512 + 1;
                let mut start = 0;
                while start < size {
                    let end = (start + jsonl_shard_bytes.max(1)).min(size);
                    shards.push(Shard::ByteRange {
                        file: index,
                        start,
                        end,
                    });
                    start = end;
                }
                planned.push(PlannedFile {
                    index,
                    location,
                    size,
                    format,
                    parquet: None,
                });
            }
        }
    }
    Ok(InputPlan {
        url: url.to_string(),
        files: planned,
        shards,
        estimated_rows,
        batch_rows: READ_BATCH_ROWS,
    })
}

fn conv_form(file: &str, column: &str, dt: &DataType) -> Result<ConvForm> {
    match dt {
        t if is_string(t) => Ok(ConvForm::Text),
        DataType::List(f) | DataType::LargeList(f) => match f.data_type() {
            DataType::Struct(fields)
                if fields.iter().any(|f| f.name() == "role")
                    && fields.iter().any(|f| f.name() == "content") =>
            {
                Ok(ConvForm::Messages)
            }
            other => Err(Error::bad_column(
                file,
                column,
                format!(
                    "list of {other}; expected a string or a list of {{role, content}} messages"
                ),
            )),
        },
        other => Err(Error::bad_column(
            file,
            column,
            format!("has type {other}; expected a string or a list of {{role, content}} messages"),
        )),
    }
}

/// Text, plain or dictionary-encoded (pandas' `category`, Spark's and polars'
/// dictionary pages read back as such).
fn is_string(dt: &DataType) -> bool {
    match dt {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => true,
        DataType::Dictionary(_, values) => is_string(values),
        _ => false,
    }
}

fn parquet_columns(file: &str, schema: &Schema) -> Result<ParquetColumns> {
    let find = |name: &str| schema.fields().iter().find(|f| f.name() == name);
    let required = |name: &str| {
        find(name).ok_or_else(|| {
            Error::bad_column(
                file,
                name,
                format!(
                    "required column `{name}` is missing (columns: {})",
                    column_list(schema)
                ),
            )
        })
    };
    let chosen = conv_form(file, "chosen", required("chosen")?.data_type())?;
    let rejected = conv_form(file, "rejected", required("rejected")?.data_type())?;
    let prompt = match find("prompt") {
        Some(f) => Some(conv_form(file, "prompt", f.data_type())?),
        None => {
            if chosen != ConvForm::Messages || rejected != ConvForm::Messages {
                return Err(Error::bad_column(
                    file,
                    "prompt",
                    "required column `prompt` is missing, and `chosen`/`rejected` are not whole conversations \
                     (TRL implicit-prompt form needs lists of {role, content} messages)",
                ));
            }
            None
        }
    };
    let pair_id = match find("pair_id") {
        Some(f) if is_string(f.data_type()) => true,
        Some(f) => {
            return Err(Error::bad_column(
                file,
                "pair_id",
                format!("has type {}; expected a string", f.data_type()),
            ))
        }
        None => false,
    };
    let mut attributes = [false; 6];
    for (i, name) in ATTRIBUTE_COLUMNS.iter().enumerate() {
        if let Some(f) = find(name) {
            if !is_string(f.data_type()) {
                return Err(Error::bad_column(
                    file,
                    *name,
                    format!("has type {}; expected a string", f.data_type()),
                ));
            }
            attributes[i] = true;
        }
    }
    let mut extras = Vec::new();
    for f in schema.fields() {
        let n = f.name().as_str();
        if ["pair_id", "prompt", "chosen", "rejected"].contains(&n)
            || ATTRIBUTE_COLUMNS.contains(&n)
            || OWN_COLUMNS.contains(&n)
        {
            continue;
        }
        if !ExtrasCodec::supports(f.data_type()) {
            return Err(Error::bad_column(
                file,
                n,
                format!("type {} cannot be carried through", f.data_type()),
            ));
        }
        extras.push(Field::new(n, f.data_type().clone(), true));
    }
    Ok(ParquetColumns {
        pair_id,
        prompt,
        chosen,
        rejected,
        attributes,
        extras,
    })
}

fn column_list(schema: &Schema) -> String {
    schema
        .fields()
        .iter()
        .map(|f| f.name().as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// A field of a raw record as found in the input.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum RawValue {
    /// The column or key is absent.
    Missing,
    Null,
    Value(Conversation),
    /// Present, but neither text nor a list of messages; the string describes it.
    WrongType(String),
}

/// The fields of one input row, unjudged.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RawFields {
    pub pair_id: Option<String>,
    /// `pair_id` present but not a string.
    pub pair_id_wrong_type: bool,
    pub prompt: RawValue,
    pub chosen: RawValue,
    pub rejected: RawValue,
    pub attributes: Attributes,
    pub extras: Vec<u8>,
    /// The decision columns of an earlier curate pass, when the row carries them
    /// (`export` writes them again; curate replaces them).
    pub previous: Option<PreviousDecision>,
}

impl RawFields {
    /// The row's `reason` is `human_corrected`: an earlier curate pass wrote it with
    /// chosen and rejected swapped to follow a human verdict.
    pub fn is_corrected(&self) -> bool {
        self.previous
            .as_ref()
            .is_some_and(|p| p.reason == CORRECTED_REASON)
    }

    /// The row's `reason` is `human_agrees`: an earlier curate pass kept it for a human
    /// verdict that agreed with its label.
    pub fn is_agreed(&self) -> bool {
        self.previous
            .as_ref()
            .is_some_and(|p| p.reason == AGREED_REASON)
    }
}

/// `reason`, `p_best` and `p_gold` as an earlier curate pass wrote them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PreviousDecision {
    pub reason: String,
    pub p_best: Option<f64>,
    pub p_gold: Option<f64>,
}

/// The `reason` an earlier curate pass gives a row it swapped for a human verdict.
pub const CORRECTED_REASON: &str = "human_corrected";

/// The `reason` an earlier curate pass gives a row a human verdict agreed with.
pub const AGREED_REASON: &str = "human_agrees";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum RawBody {
    Fields(RawFields),
    /// A JSONL line that is not a JSON object.
    Unparsable {
        raw: String,
        message: String,
    },
}

/// One input row as read.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RawRecord {
    pub key: RowKey,
    /// Parquet: row index from 0; JSONL: line number from 1 (0 when the line number is
    /// not known because the line lies in a later byte range; see `byte_offset`).
    pub row: u64,
    /// Total bytes of the row's text, for the size limit.
    pub bytes: usize,
    pub body: RawBody,
}

/// What a survey of JSONL shards saw, merged over workers to judge files and to fix
/// the output schema.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct JsonlObservation {
    pub file: usize,
    /// First byte of the shard this observation covers.
    pub start: u64,
    /// Lines (blank ones included) that start in the shard: turns into the first line
    /// number of each later shard, so quarantine rows name their line.
    pub line_count: u64,
    pub lines: u64,
    pub unparsable: u64,
    pub first_error: Option<(u64, String)>,
    pub keys: BTreeSet<String>,
    /// Each key's values joined into one type (`json_types`): extra columns keep it.
    #[serde(default)]
    pub types: std::collections::BTreeMap<String, JsonType>,
    pub message_columns: BTreeSet<String>,
    pub has_prompt: bool,
}

/// Reads one shard in batches.
pub struct ShardReader<'a> {
    plan: &'a InputPlan,
    shard: Shard,
    extras: Option<&'a ExtrasCodec>,
    state: ReaderState,
}

enum ReaderState {
    Parquet {
        stream: ParquetRecordBatchStream<ParquetObjectReader>,
        next_row: u64,
    },
    Jsonl {
        data: bytes::Bytes,
        pos: usize,
        base_offset: u64,
        line: u64,
        line_known: bool,
    },
    Done,
}

impl<'a> ShardReader<'a> {
    /// Opens a shard. With `survey_only`, Parquet columns a survey does not need
    /// (attributes other than `task_category`, extra columns) are not even decoded.
    /// `first_line` is the number of lines before a JSONL shard (known after a survey);
    /// without it, lines of shards after a file's first are numbered 0.
    pub fn open(
        plan: &'a InputPlan,
        shard: Shard,
        extras: Option<&'a ExtrasCodec>,
        survey_only: bool,
        first_line: Option<u64>,
    ) -> Result<Self> {
        let file = &plan.files[shard.file()];
        let state = match &shard {
            Shard::RowGroup { row_group, .. } => {
                let (meta, _) = file
                    .parquet
                    .as_ref()
                    .expect("row groups only for parquet files");
                let reader = ParquetObjectReader::new(
                    file.location.store.clone(),
                    file.location.path.clone(),
                )
                .with_file_size(file.size);
                let first_row: i64 = meta.metadata().row_groups()[..*row_group]
                    .iter()
                    .map(|r| r.num_rows())
                    .sum();
                let mut builder =
                    ParquetRecordBatchStreamBuilder::new_with_metadata(reader, meta.clone());
                if survey_only {
                    // `reason` marks rows an earlier pass corrected: the survey must
                    // see them in the orientation their verdicts were given for.
                    const SURVEY_COLUMNS: [&str; 6] = [
                        "pair_id",
                        "prompt",
                        "chosen",
                        "rejected",
                        "task_category",
                        "reason",
                    ];
                    let roots: Vec<usize> = meta
                        .schema()
                        .fields()
                        .iter()
                        .enumerate()
                        .filter(|(_, f)| SURVEY_COLUMNS.contains(&f.name().as_str()))
                        .map(|(i, _)| i)
                        .collect();
                    let mask = parquet::arrow::ProjectionMask::roots(
                        meta.metadata().file_metadata().schema_descr(),
                        roots,
                    );
                    builder = builder.with_projection(mask);
                }
                let stream = builder
                    .with_row_groups(vec![*row_group])
                    .with_batch_size(plan.batch_rows.max(1))
                    .build()
                    .map_err(|e| {
                        Error::bad_file(
                            &file.location.url,
                            format!("cannot read row group {row_group}: {e}"),
                        )
                    })?;
                ReaderState::Parquet {
                    stream,
                    next_row: first_row as u64,
                }
            }
            Shard::ByteRange { start, end, .. } => {
                let (data, skip) = read_line_range(&file.location, *start, *end, file.size)?;
                ReaderState::Jsonl {
                    data,
                    pos: skip,
                    base_offset: start.saturating_sub(1).min(*start),
                    line: if *start == 0 {
                        0
                    } else {
                        first_line.unwrap_or(0)
                    },
                    line_known: *start == 0 || first_line.is_some(),
                }
            }
        };
        Ok(ShardReader {
            plan,
            shard,
            extras,
            state,
        })
    }

    /// The next batch of records, or None at the end of the shard.
    pub fn next_batch(
        &mut self,
        jsonl_obs: Option<&mut JsonlObservation>,
    ) -> Result<Option<Vec<RawRecord>>> {
        let file_index = self.shard.file();
        let file = &self.plan.files[file_index];
        match &mut self.state {
            ReaderState::Done => Ok(None),
            ReaderState::Parquet { stream, next_row } => {
                match catch_parquet_panic(&file.location.url, || block_on(stream.next()))? {
                    None => {
                        self.state = ReaderState::Done;
                        Ok(None)
                    }
                    Some(Err(e)) => Err(Error::bad_file(
                        &file.location.url,
                        format!("cannot decode Parquet data: {e}"),
                    )),
                    Some(Ok(batch)) => {
                        let records = parquet_batch_records(
                            &file.location.url,
                            file_index,
                            *next_row,
                            &batch,
                            self.extras,
                        )?;
                        *next_row += batch.num_rows() as u64;
                        Ok(Some(records))
                    }
                }
            }
            ReaderState::Jsonl {
                data,
                pos,
                base_offset,
                line,
                line_known,
            } => {
                if *pos >= data.len() {
                    self.state = ReaderState::Done;
                    return Ok(None);
                }
                let batch_rows = self.plan.batch_rows.max(1);
                let mut records = Vec::with_capacity(batch_rows.min(1024));
                let mut obs = jsonl_obs;
                let mut texts: Vec<(usize, serde_json::Map<String, Value>)> = Vec::new();
                while *pos < data.len() && records.len() < batch_rows {
                    let rest = &data[*pos..];
                    let len = memchr_newline(rest).unwrap_or(rest.len());
                    let line_bytes = &rest[..len];
                    let offset = *base_offset + *pos as u64;
                    *pos += (len + 1).min(rest.len());
                    *line += 1;
                    if let Some(o) = obs.as_deref_mut() {
                        o.line_count += 1;
                    }
                    let trimmed = trim_ascii(line_bytes);
                    if trimmed.is_empty() {
                        continue;
                    }
                    let row = if *line_known { *line } else { 0 };
                    let key = RowKey::new(file_index, offset);
                    if let Some(o) = obs.as_deref_mut() {
                        o.lines += 1;
                    }
                    match serde_json::from_slice::<Value>(trimmed) {
                        Ok(Value::Object(map)) => {
                            if let Some(o) = obs.as_deref_mut() {
                                observe_keys(o, &map);
                            }
                            texts.push((records.len(), map));
                            records.push(RawRecord {
                                key,
                                row,
                                bytes: trimmed.len(),
                                body: RawBody::Unparsable {
                                    raw: String::new(),
                                    message: String::new(),
                                },
                            });
                        }
                        Ok(other) => {
                            let message =
                                format!("line is JSON {} but not an object", json_kind(&other));
                            note_error(obs.as_deref_mut(), row, &message);
                            records.push(unparsable(key, row, trimmed, message));
                        }
                        Err(e) => {
                            let message = format!("not valid JSON: {e}");
                            note_error(obs.as_deref_mut(), row, &message);
                            records.push(unparsable(key, row, trimmed, message));
                        }
                    }
                }
                // Extras of a JSONL batch are encoded column-wise, like Parquet's.
                let extras_rows = match self.extras {
                    Some(codec) if !codec.is_empty() => {
                        let maps: Vec<&serde_json::Map<String, Value>> =
                            texts.iter().map(|(_, m)| m).collect();
                        let cols = json_columns(&codec.fields, &maps, &file.location.url)?;
                        Some(codec.encode(cols.into_iter().map(Some).collect(), texts.len())?)
                    }
                    _ => None,
                };
                let mut extras_iter = extras_rows.map(|v| v.into_iter());
                for (i, map) in texts {
                    let extras = extras_iter
                        .as_mut()
                        .and_then(|it| it.next())
                        .unwrap_or_default();
                    records[i].body = RawBody::Fields(json_fields(map, extras));
                }
                Ok(Some(records))
            }
        }
    }
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn note_error(obs: Option<&mut JsonlObservation>, row: u64, message: &str) {
    if let Some(o) = obs {
        o.unparsable += 1;
        if o.first_error.is_none() {
            o.first_error = Some((row, message.to_string()));
        }
    }
}

fn observe_keys(o: &mut JsonlObservation, map: &serde_json::Map<String, Value>) {
    for (k, v) in map {
        if !o.keys.contains(k) {
            o.keys.insert(k.clone());
        }
        if !matches!(v, Value::Null) {
            join_into(&mut o.types, k, &JsonType::of(v));
        }
        if matches!(k.as_str(), "prompt" | "chosen" | "rejected")
            && matches!(v, Value::Array(_))
            && !o.message_columns.contains(k)
        {
            o.message_columns.insert(k.clone());
        }
    }
    if map.contains_key("prompt") {
        o.has_prompt = true;
    }
}

fn unparsable(key: RowKey, row: u64, bytes: &[u8], message: String) -> RawRecord {
    // Keep at most 64 KiB of the raw line in quarantine.
    let raw = String::from_utf8_lossy(&bytes[..bytes.len().min(64 << 10)]).into_owned();
    RawRecord {
        key,
        row,
        bytes: bytes.len(),
        body: RawBody::Unparsable { raw, message },
    }
}

/// The UTF-8 byte-order mark some Windows tools write at the start of a text file.
const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// A text file's bytes without a leading UTF-8 byte-order mark.
pub fn strip_bom(bytes: &[u8]) -> &[u8] {
    bytes.strip_prefix(UTF8_BOM).unwrap_or(bytes)
}

/// Checks the column-chunk byte ranges of a Parquet footer, which the parquet crate
/// takes on trust: it panics on a negative offset or size when it reads a row group
/// (`ColumnChunkMetaData::byte_range`, parquet 60). A range outside the file is refused
/// here too, with the same error, before any read of it. Every reader of Parquet bytes
/// calls this between reading the footer and reading row groups (found by fuzzing,
/// fuzz/fuzz_targets/pairs_parquet.rs).
pub fn check_parquet_ranges(
    url: &str,
    meta: &parquet::file::metadata::ParquetMetaData,
    file_size: u64,
) -> Result<()> {
    for (i, rg) in meta.row_groups().iter().enumerate() {
        for col in rg.columns() {
            let start = col
                .dictionary_page_offset()
                .unwrap_or(col.data_page_offset());
            let len = col.compressed_size();
            if start < 0 || len < 0 || start as u64 + len as u64 > file_size {
                return Err(Error::bad_file(
                    url,
                    format!(
                        "not a readable Parquet file: row group {i}, column `{}` claims bytes \
                         {start}..{start}+{len} of a {file_size}-byte file",
                        col.column_path()
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Runs `decode`, a call into the parquet crate that decodes pages, with a panic in it
/// turned into an error naming the file. parquet 60 does not check all page data
/// before indexing with it (a dictionary index past the end of a fixed-size binary
/// column's dictionary panics, `array_reader/fixed_len_byte_array.rs`; found by
/// fuzzing, fuzz/fuzz_targets/score_cache.rs), and pages cannot be checked from
/// outside without decoding them: so the panic is caught here, at the boundary. The
/// default panic hook still prints the crate's message.
pub fn catch_parquet_panic<T>(url: &str, decode: impl FnOnce() -> T) -> Result<T> {
    CATCHING.with(|c| c.set(true));
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(decode));
    CATCHING.with(|c| c.set(false));
    caught.map_err(|panic| {
        let why = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        Error::bad_file(
            url,
            format!(
                "cannot decode Parquet data: corrupt page data (the parquet crate panicked: {why})"
            ),
        )
    })
}

thread_local! {
    /// Set while `catch_parquet_panic` decodes on this thread.
    static CATCHING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether a panic on this thread happens inside `catch_parquet_panic`, which turns it
/// into an error: the binary's abort-on-panic hook lets such a panic unwind.
pub fn panic_is_caught() -> bool {
    CATCHING.with(|c| c.get())
}

fn memchr_newline(b: &[u8]) -> Option<usize> {
    b.iter().position(|&c| c == b'\n')
}

fn trim_ascii(b: &[u8]) -> &[u8] {
    let start = b
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(b.len());
    let end = b
        .iter()
        .rposition(|c| !c.is_ascii_whitespace())
        .map(|i| i + 1)
        .unwrap_or(start);
    &b[start..end.max(start)]
}

/// Reads the bytes of the lines that start in [start, end): from one byte before
/// `start` (to see whether a line starts exactly there) to the newline ending the last
/// line. Returns the data and how many leading bytes to skip.
fn read_line_range(
    loc: &Location,
    start: u64,
    end: u64,
    size: u64,
) -> Result<(bytes::Bytes, usize)> {
    let from = start.saturating_sub(1);
    let mut buf = loc.get_range(from..end)?.to_vec();
    let mut skip = if start == 0 {
        0
    } else {
        match memchr_newline(&buf) {
            Some(i) => i + 1,
            None => buf.len(),
        }
    };
    // Extend past `end` to finish the last line.
    let mut next = end;
    if buf.len() > skip && buf.last() != Some(&b'\n') {
        while next < size {
            let chunk_end = (next + (1 << 20)).min(size);
            let chunk = loc.get_range(next..chunk_end)?;
            match memchr_newline(&chunk) {
                Some(i) => {
                    buf.extend_from_slice(&chunk[..=i]);
                    break;
                }
                None => buf.extend_from_slice(&chunk),
            }
            next = chunk_end;
        }
    }
    if start == 0 {
        // A byte-order mark is not part of the first line. Taken off once the line is
        // whole: a first range shorter than the mark held only part of it, and the
        // line was then read with the rest of the mark (found by fuzzing,
        // fuzz/fuzz_targets/pairs_jsonl.rs).
        skip = buf.len() - strip_bom(&buf).len();
    }
    Ok((bytes::Bytes::from(buf), skip))
}

fn json_conversation(v: Option<&Value>) -> RawValue {
    match v {
        None => RawValue::Missing,
        Some(Value::Null) => RawValue::Null,
        Some(Value::String(s)) => RawValue::Value(Conversation::Text(s.clone())),
        Some(Value::Array(items)) => {
            let mut messages = Vec::with_capacity(items.len());
            for item in items {
                match item {
                    Value::Object(m) => {
                        let role = m.get("role").and_then(Value::as_str);
                        let content = m.get("content").and_then(Value::as_str);
                        match (role, content) {
                            (Some(role), Some(content)) => messages.push(Message {
                                role: role.to_string(),
                                content: content.to_string(),
                            }),
                            _ => {
                                return RawValue::WrongType(
                                    "a message without string `role` and `content`".into(),
                                )
                            }
                        }
                    }
                    other => {
                        return RawValue::WrongType(format!("a list holding {}", json_kind(other)))
                    }
                }
            }
            RawValue::Value(Conversation::Messages(messages))
        }
        Some(other) => RawValue::WrongType(json_kind(other).to_string()),
    }
}

fn json_fields(map: serde_json::Map<String, Value>, extras: Vec<u8>) -> RawFields {
    let (pair_id, pair_id_wrong_type) = match map.get("pair_id") {
        None | Some(Value::Null) => (None, false),
        Some(Value::String(s)) => (Some(s.clone()), false),
        Some(_) => (None, true),
    };
    let mut attributes = Attributes::default();
    for (i, name) in ATTRIBUTE_COLUMNS.iter().enumerate() {
        *attributes.slot(i) = match map.get(*name) {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(other) => Some(other.to_string()),
        };
    }
    RawFields {
        pair_id,
        pair_id_wrong_type,
        prompt: json_conversation(map.get("prompt")),
        chosen: json_conversation(map.get("chosen")),
        rejected: json_conversation(map.get("rejected")),
        attributes,
        extras,
        previous: map
            .get("reason")
            .and_then(Value::as_str)
            .map(|reason| PreviousDecision {
                reason: reason.to_string(),
                p_best: map.get("p_best").and_then(Value::as_f64),
                p_gold: map.get("p_gold").and_then(Value::as_f64),
            }),
    }
}

/// Pre-downcast access to a prompt/response column of a batch.
enum ConvColumn<'b> {
    Text(ArrayRef, std::marker::PhantomData<&'b ()>),
    Messages {
        offsets: Vec<usize>,
        nulls: Option<arrow::buffer::NullBuffer>,
        roles: StringArray,
        contents: StringArray,
    },
}

impl ConvColumn<'_> {
    fn new(file: &str, name: &str, col: &ArrayRef) -> Result<Self> {
        let err = |e: arrow::error::ArrowError| {
            Error::bad_column(file, name, format!("cannot decode: {e}"))
        };
        match col.data_type() {
            DataType::Utf8 => Ok(ConvColumn::Text(col.clone(), Default::default())),
            t if is_string(t) => Ok(ConvColumn::Text(
                arrow::compute::cast(col, &DataType::Utf8).map_err(err)?,
                Default::default(),
            )),
            DataType::List(_) | DataType::LargeList(_) => {
                let (offsets, values, nulls): (Vec<usize>, ArrayRef, _) = match col.data_type() {
                    DataType::List(_) => {
                        let l = col.as_list::<i32>();
                        (
                            l.offsets().iter().map(|o| *o as usize).collect(),
                            l.values().clone(),
                            l.nulls().cloned(),
                        )
                    }
                    _ => {
                        let l = col.as_list::<i64>();
                        (
                            l.offsets().iter().map(|o| *o as usize).collect(),
                            l.values().clone(),
                            l.nulls().cloned(),
                        )
                    }
                };
                let s: &StructArray = values.as_struct();
                let field = |n: &str| -> Result<StringArray> {
                    let c = s.column_by_name(n).ok_or_else(|| {
                        Error::bad_column(file, name, format!("messages lack `{n}`"))
                    })?;
                    let c = arrow::compute::cast(c, &DataType::Utf8).map_err(err)?;
                    Ok(c.as_string::<i32>().clone())
                };
                Ok(ConvColumn::Messages {
                    offsets,
                    nulls,
                    roles: field("role")?,
                    contents: field("content")?,
                })
            }
            other => Err(Error::bad_column(
                file,
                name,
                format!("unexpected type {other}"),
            )),
        }
    }

    fn value(&self, i: usize) -> RawValue {
        match self {
            ConvColumn::Text(a, _) => {
                let a = a.as_string::<i32>();
                if a.is_null(i) {
                    RawValue::Null
                } else {
                    RawValue::Value(Conversation::Text(a.value(i).to_string()))
                }
            }
            ConvColumn::Messages {
                offsets,
                nulls,
                roles,
                contents,
            } => {
                if nulls.as_ref().is_some_and(|n| n.is_null(i)) {
                    return RawValue::Null;
                }
                let mut ms = Vec::with_capacity(offsets[i + 1] - offsets[i]);
                for j in offsets[i]..offsets[i + 1] {
                    if roles.is_null(j) || contents.is_null(j) {
                        return RawValue::WrongType(
                            "a message with a null `role` or `content`".into(),
                        );
                    }
                    ms.push(Message {
                        role: roles.value(j).to_string(),
                        content: contents.value(j).to_string(),
                    });
                }
                RawValue::Value(Conversation::Messages(ms))
            }
        }
    }
}

fn string_column(file: &str, name: &str, batch: &RecordBatch) -> Result<Option<StringArray>> {
    match batch.column_by_name(name) {
        None => Ok(None),
        Some(c) => {
            let c = arrow::compute::cast(c, &DataType::Utf8)
                .map_err(|e| Error::bad_column(file, name, format!("cannot decode: {e}")))?;
            Ok(Some(c.as_string::<i32>().clone()))
        }
    }
}

fn parquet_batch_records(
    file: &str,
    file_index: usize,
    first_row: u64,
    batch: &RecordBatch,
    extras: Option<&ExtrasCodec>,
) -> Result<Vec<RawRecord>> {
    let n = batch.num_rows();
    let conv = |name: &str| -> Result<Option<ConvColumn>> {
        batch
            .column_by_name(name)
            .map(|c| ConvColumn::new(file, name, c))
            .transpose()
    };
    let prompt = conv("prompt")?;
    let chosen = conv("chosen")?.expect("checked at planning");
    let rejected = conv("rejected")?.expect("checked at planning");
    let pair_id = string_column(file, "pair_id", batch)?;
    let reason = string_column(file, "reason", batch)?;
    let probability = |name: &str| -> Result<Option<arrow::array::Float64Array>> {
        match batch.column_by_name(name) {
            None => Ok(None),
            Some(c) => {
                let c = arrow::compute::cast(c, &DataType::Float64)
                    .map_err(|e| Error::bad_column(file, name, format!("cannot decode: {e}")))?;
                Ok(Some(
                    c.as_primitive::<arrow::datatypes::Float64Type>().clone(),
                ))
            }
        }
    };
    let (p_best, p_gold) = (probability("p_best")?, probability("p_gold")?);
    let value_at = |a: &Option<arrow::array::Float64Array>, i: usize| {
        a.as_ref().and_then(|a| (!a.is_null(i)).then(|| a.value(i)))
    };
    let attrs: Vec<Option<StringArray>> = ATTRIBUTE_COLUMNS
        .iter()
        .map(|n| string_column(file, n, batch))
        .collect::<Result<_>>()?;
    let extras_rows = match extras {
        Some(codec) if !codec.is_empty() => Some(
            codec.encode(
                codec
                    .fields
                    .iter()
                    .map(|f| batch.column_by_name(f.name()).cloned())
                    .collect(),
                n,
            )?,
        ),
        _ => None,
    };
    let mut extras_iter = extras_rows.map(|v| v.into_iter());
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let row = first_row + i as u64;
        let mut attributes = Attributes::default();
        for (j, a) in attrs.iter().enumerate() {
            if let Some(a) = a {
                if !a.is_null(i) {
                    *attributes.slot(j) = Some(a.value(i).to_string());
                }
            }
        }
        let fields = RawFields {
            pair_id: pair_id
                .as_ref()
                .and_then(|a| (!a.is_null(i)).then(|| a.value(i).to_string())),
            pair_id_wrong_type: false,
            prompt: prompt
                .as_ref()
                .map(|p| p.value(i))
                .unwrap_or(RawValue::Missing),
            chosen: chosen.value(i),
            rejected: rejected.value(i),
            attributes,
            extras: extras_iter
                .as_mut()
                .and_then(|it| it.next())
                .unwrap_or_default(),
            previous: reason
                .as_ref()
                .filter(|r| !r.is_null(i))
                .map(|r| PreviousDecision {
                    reason: r.value(i).to_string(),
                    p_best: value_at(&p_best, i),
                    p_gold: value_at(&p_gold, i),
                }),
        };
        let bytes = [&fields.prompt, &fields.chosen, &fields.rejected]
            .iter()
            .map(|v| {
                if let RawValue::Value(c) = v {
                    c.text_bytes()
                } else {
                    0
                }
            })
            .sum();
        out.push(RawRecord {
            key: RowKey::new(file_index, row),
            row,
            bytes,
            body: RawBody::Fields(fields),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every line of a JSONL file is read exactly once, with its line number, however
    /// the file is cut into byte ranges (cuts inside lines, at newlines, in blank lines).
    #[test]
    fn jsonl_byte_ranges_read_every_line_once_with_its_number() {
        let dir = std::env::temp_dir().join(format!("synpref-ranges-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("pairs.jsonl");
        let mut text = String::new();
        for i in 0..300 {
            if i % 37 == 5 {
                text.push('\n');
            }
            let pad = "x".repeat(i % 23);
            text.push_str(&format!("{{\"pair_id\":\"p{i}\",\"prompt\":\"{pad}\",\"chosen\":\"a\",\"rejected\":\"b\"}}\n"));
        }
        std::fs::write(&path, &text).unwrap();
        let expected: Vec<(String, u64)> = text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.is_empty())
            .map(|(n, l)| (l.split('"').nth(3).unwrap().to_string(), n as u64 + 1))
            .collect();
        for shard_bytes in [1, 7, 64, 100, 1000, 1 << 20] {
            let plan = plan_input_with(path.to_str().unwrap(), shard_bytes).unwrap();
            // First pass: count lines per shard, as the survey does.
            let mut counts = Vec::new();
            for shard in &plan.shards {
                let mut obs = JsonlObservation::default();
                let mut r = ShardReader::open(&plan, shard.clone(), None, true, None).unwrap();
                while r.next_batch(Some(&mut obs)).unwrap().is_some() {}
                counts.push(obs.line_count);
            }
            let mut got = Vec::new();
            let mut before = 0;
            for (shard, count) in plan.shards.iter().zip(counts) {
                let mut r =
                    ShardReader::open(&plan, shard.clone(), None, false, Some(before)).unwrap();
                while let Some(batch) = r.next_batch(None).unwrap() {
                    for rec in batch {
                        let RawBody::Fields(f) = rec.body else {
                            panic!("unparsable")
                        };
                        got.push((f.pair_id.unwrap(), rec.row));
                    }
                }
                before += count;
            }
            assert_eq!(got, expected, "shard size {shard_bytes}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Every record of every shard of `path` cut into `shard_bytes` ranges: (row key,
    /// whether the line was a JSON object).
    fn records_in_ranges(path: &str, shard_bytes: u64) -> Vec<(RowKey, bool)> {
        let plan = plan_input_with(path, shard_bytes).unwrap();
        let mut out = Vec::new();
        for shard in &plan.shards {
            let mut r = ShardReader::open(&plan, shard.clone(), None, false, None).unwrap();
            while let Some(batch) = r.next_batch(None).unwrap() {
                out.extend(
                    batch
                        .into_iter()
                        .map(|rec| (rec.key, matches!(rec.body, RawBody::Fields(_)))),
                );
            }
        }
        out
    }

    /// Fuzzing regression (fuzz/fuzz_targets/pairs_jsonl.rs): a file starting with a
    /// byte-order mark, cut into a first range shorter than the mark, read its first
    /// line with the mark's last bytes (not JSON); with a first range of exactly the
    /// mark, the first line was read by no range at all.
    #[test]
    fn fuzz_regression_a_byte_order_mark_longer_than_the_first_range() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pairs.jsonl");
        std::fs::write(
            &path,
            include_bytes!(
                "../../tests/fuzz_regressions/pairs_jsonl/bom-in-short-first-range.jsonl"
            ),
        )
        .unwrap();
        let path = path.to_str().unwrap();
        let whole = records_in_ranges(path, JSONL_SHARD_BYTES);
        assert!(
            whole[0].1,
            "the first line (after the mark) is a JSON object"
        );
        for shard_bytes in 1..=8 {
            assert_eq!(
                records_in_ranges(path, shard_bytes),
                whole,
                "ranges of {shard_bytes} bytes"
            );
        }
    }
}
