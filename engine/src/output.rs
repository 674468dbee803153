//! Writing output: the unified output schema, Parquet part writers, and the manifest
//! written last as the commit marker (DESIGN §4).

use std::sync::Arc;

use arrow::array::{
    ArrayRef, Float64Builder, ListBuilder, RecordBatch, StringBuilder, StructBuilder, UInt64Builder,
};
use arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef};
use object_store::buffered::BufWriter;
use parquet::arrow::async_writer::AsyncArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::extras::ExtrasCodec;
use crate::input::ConvForm;
use crate::model::{Attributes, Conversation, Destination, Reason, RowKey, ATTRIBUTE_COLUMNS};
use crate::store::{block_on, Location};

/// Rows buffered before a record batch is handed to the Parquet writer.
pub const WRITE_BATCH_ROWS: usize = 8192;
/// Rows per Parquet row group in output: small enough that the output shards well when
/// it is read again, large enough for good compression.
pub const ROW_GROUP_ROWS: usize = 65_536;
/// A part file is closed after this many rows and the next one started.
pub const ROWS_PER_PART: u64 = 2_000_000;

/// The columns every output part has, in order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OutputSchema {
    pub has_prompt: bool,
    pub prompt: ConvForm,
    pub chosen: ConvForm,
    pub rejected: ConvForm,
    pub attributes: [bool; 6],
}

/// One output row: an input row (as far as it could be read) plus its decision.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OutputRow {
    pub key: RowKey,
    pub row: u64,
    pub pair_id: Option<String>,
    pub prompt: Option<Conversation>,
    pub chosen: Option<Conversation>,
    pub rejected: Option<Conversation>,
    pub attributes: Attributes,
    pub extras: Vec<u8>,
    pub reason: Reason,
    pub p_best: Option<f64>,
    pub p_gold: Option<f64>,
    /// Quarantine only: what is wrong, and the raw line where the row was unparsable.
    pub error: Option<String>,
    pub raw: Option<String>,
    /// Chosen and rejected were swapped relative to the input (not written as a column;
    /// used for truth agreement).
    pub swapped: bool,
}

fn messages_type() -> DataType {
    let fields = Fields::from(vec![
        Field::new("role", DataType::Utf8, true),
        Field::new("content", DataType::Utf8, true),
    ]);
    DataType::List(Arc::new(Field::new("item", DataType::Struct(fields), true)))
}

fn conv_type(form: ConvForm) -> DataType {
    match form {
        ConvForm::Text => DataType::Utf8,
        ConvForm::Messages => messages_type(),
    }
}

impl OutputSchema {
    /// The Arrow schema of a destination's parts.
    pub fn arrow_schema(&self, extras: &ExtrasCodec, dest: Destination) -> SchemaRef {
        let mut fields = vec![Field::new("pair_id", DataType::Utf8, true)];
        if self.has_prompt {
            fields.push(Field::new("prompt", conv_type(self.prompt), true));
        }
        fields.push(Field::new("chosen", conv_type(self.chosen), true));
        fields.push(Field::new("rejected", conv_type(self.rejected), true));
        for (i, name) in ATTRIBUTE_COLUMNS.iter().enumerate() {
            if self.attributes[i] {
                fields.push(Field::new(*name, DataType::Utf8, true));
            }
        }
        fields.extend(extras.fields.iter().cloned());
        fields.push(Field::new("reason", DataType::Utf8, false));
        fields.push(Field::new("p_best", DataType::Float64, true));
        fields.push(Field::new("p_gold", DataType::Float64, true));
        if dest == Destination::Quarantine {
            fields.push(Field::new("source_file", DataType::Utf8, false));
            fields.push(Field::new("source_row", DataType::UInt64, false));
            fields.push(Field::new("error", DataType::Utf8, true));
            fields.push(Field::new("raw", DataType::Utf8, true));
        }
        Arc::new(Schema::new(fields))
    }
}

fn conv_array<'a>(
    form: ConvForm,
    values: impl Iterator<Item = Option<&'a Conversation>>,
    role: &str,
) -> ArrayRef {
    match form {
        ConvForm::Text => {
            let mut b = StringBuilder::new();
            for v in values {
                match v {
                    Some(Conversation::Text(t)) => b.append_value(t),
                    Some(Conversation::Messages(ms)) => {
                        // Only reachable if a run mixes forms without planning for it.
                        b.append_value(
                            ms.iter()
                                .map(|m| m.content.as_str())
                                .collect::<Vec<_>>()
                                .join("\n"),
                        )
                    }
                    None => b.append_null(),
                }
            }
            Arc::new(b.finish())
        }
        ConvForm::Messages => {
            let fields = Fields::from(vec![
                Field::new("role", DataType::Utf8, true),
                Field::new("content", DataType::Utf8, true),
            ]);
            let sb = StructBuilder::from_fields(fields.clone(), 0);
            let mut b = ListBuilder::new(sb).with_field(Arc::new(Field::new(
                "item",
                DataType::Struct(fields),
                true,
            )));
            let push = |b: &mut ListBuilder<StructBuilder>, r: &str, c: &str| {
                let s = b.values();
                s.field_builder::<StringBuilder>(0)
                    .expect("role")
                    .append_value(r);
                s.field_builder::<StringBuilder>(1)
                    .expect("content")
                    .append_value(c);
                s.append(true);
            };
            for v in values {
                match v {
                    Some(Conversation::Text(t)) => {
                        // Plain text in a run whose column holds messages: one message.
                        push(&mut b, role, t);
                        b.append(true);
                    }
                    Some(Conversation::Messages(ms)) => {
                        for m in ms {
                            push(&mut b, &m.role, &m.content);
                        }
                        b.append(true);
                    }
                    None => b.append(false),
                }
            }
            Arc::new(b.finish())
        }
    }
}

/// Builds the record batch for a set of rows.
pub fn rows_to_batch(
    schema: &OutputSchema,
    arrow_schema: &SchemaRef,
    extras: &ExtrasCodec,
    dest: Destination,
    file_urls: &[String],
    rows: Vec<OutputRow>,
) -> Result<RecordBatch> {
    let mut cols: Vec<ArrayRef> = Vec::new();
    let mut pair_id = StringBuilder::new();
    for r in &rows {
        pair_id.append_option(r.pair_id.as_deref());
    }
    cols.push(Arc::new(pair_id.finish()));
    if schema.has_prompt {
        cols.push(conv_array(
            schema.prompt,
            rows.iter().map(|r| r.prompt.as_ref()),
            "user",
        ));
    }
    cols.push(conv_array(
        schema.chosen,
        rows.iter().map(|r| r.chosen.as_ref()),
        "assistant",
    ));
    cols.push(conv_array(
        schema.rejected,
        rows.iter().map(|r| r.rejected.as_ref()),
        "assistant",
    ));
    for (i, _) in ATTRIBUTE_COLUMNS.iter().enumerate() {
        if schema.attributes[i] {
            let mut b = StringBuilder::new();
            for r in &rows {
                b.append_option(r.attributes.get(i));
            }
            cols.push(Arc::new(b.finish()));
        }
    }
    cols.extend(extras.decode(rows.iter().map(|r| r.extras.as_slice()))?);
    let mut reason = StringBuilder::new();
    let mut p_best = Float64Builder::new();
    let mut p_gold = Float64Builder::new();
    for r in &rows {
        reason.append_value(r.reason.code());
        p_best.append_option(r.p_best);
        p_gold.append_option(r.p_gold);
    }
    cols.push(Arc::new(reason.finish()));
    cols.push(Arc::new(p_best.finish()));
    cols.push(Arc::new(p_gold.finish()));
    if dest == Destination::Quarantine {
        let mut file = StringBuilder::new();
        let mut row = UInt64Builder::new();
        let mut error = StringBuilder::new();
        let mut raw = StringBuilder::new();
        for r in &rows {
            file.append_value(&file_urls[r.key.file_index()]);
            row.append_value(r.row);
            error.append_option(r.error.as_deref());
            raw.append_option(r.raw.as_deref());
        }
        cols.push(Arc::new(file.finish()));
        cols.push(Arc::new(row.finish()));
        cols.push(Arc::new(error.finish()));
        cols.push(Arc::new(raw.finish()));
    }
    RecordBatch::try_new(arrow_schema.clone(), cols).map_err(|e| Error::Arrow {
        context: format!("{} batch", dest.dir()),
        source: e,
    })
}

/// Writer properties of every Parquet file synpref writes: zstd level 1 (fast, and
/// smaller than snappy), row groups of `ROW_GROUP_ROWS`, and dictionary encoding only
/// for the low-cardinality columns: for prompts and replies a dictionary is built,
/// overflows and is thrown away, which cost a fifth of the write time when it was on.
pub fn writer_properties() -> WriterProperties {
    let mut b = WriterProperties::builder()
        .set_compression(Compression::ZSTD(
            ZstdLevel::try_new(1).expect("valid level"),
        ))
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .set_dictionary_enabled(false);
    for column in ATTRIBUTE_COLUMNS.iter().chain(&["reason", "source_file"]) {
        if *column != "desired_attributes" && *column != "guideline" {
            b = b.set_column_dictionary_enabled(
                parquet::schema::types::ColumnPath::from(*column),
                true,
            );
        }
    }
    b.build()
}

/// A file written by a part writer, for the manifest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, PartialOrd, Ord)]
pub struct WrittenFile {
    pub path: String,
    pub rows: u64,
}

/// Writes one destination's rows of one worker as Parquet parts
/// `DIR/part-WWWWW-SSSSS.parquet` (worker, sequence number).
pub struct PartWriter {
    dir: Location,
    dest: Destination,
    worker: usize,
    schema: OutputSchema,
    arrow_schema: SchemaRef,
    extras: Arc<ExtrasCodec>,
    file_urls: Arc<Vec<String>>,
    buffer: Vec<OutputRow>,
    current: Option<(AsyncArrowWriter<BufWriter>, String, u64)>,
    seq: usize,
    written: Vec<WrittenFile>,
}

impl PartWriter {
    pub fn new(
        out: &Location,
        dest: Destination,
        worker: usize,
        schema: OutputSchema,
        extras: Arc<ExtrasCodec>,
        file_urls: Arc<Vec<String>>,
    ) -> Self {
        let arrow_schema = schema.arrow_schema(&extras, dest);
        PartWriter {
            dir: out.child(dest.dir()),
            dest,
            worker,
            schema,
            arrow_schema,
            extras,
            file_urls,
            buffer: Vec::new(),
            current: None,
            seq: 0,
            written: Vec::new(),
        }
    }

    pub fn push(&mut self, row: OutputRow) -> Result<()> {
        self.buffer.push(row);
        if self.buffer.len() >= WRITE_BATCH_ROWS {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let rows = std::mem::take(&mut self.buffer);
        let n = rows.len() as u64;
        let batch = rows_to_batch(
            &self.schema,
            &self.arrow_schema,
            &self.extras,
            self.dest,
            &self.file_urls,
            rows,
        )?;
        if self.current.is_none() {
            let name = format!("part-{:05}-{:05}.parquet", self.worker, self.seq);
            self.seq += 1;
            let loc = self.dir.child(&name);
            let object = BufWriter::new(loc.store.clone(), loc.path.clone());
            let writer = AsyncArrowWriter::try_new(
                object,
                self.arrow_schema.clone(),
                Some(writer_properties()),
            )
            .map_err(|e| Error::Parquet {
                path: loc.url.clone(),
                source: e,
            })?;
            self.current = Some((writer, format!("{}/{}", self.dest.dir(), name), 0));
        }
        let (writer, path, rows) = self.current.as_mut().expect("opened above");
        block_on(writer.write(&batch)).map_err(|e| Error::Parquet {
            path: path.clone(),
            source: e,
        })?;
        *rows += n;
        if *rows >= ROWS_PER_PART {
            self.close_part()?;
        }
        Ok(())
    }

    fn close_part(&mut self) -> Result<()> {
        if let Some((writer, path, rows)) = self.current.take() {
            block_on(writer.close()).map_err(|e| Error::Parquet {
                path: path.clone(),
                source: e,
            })?;
            self.written.push(WrittenFile { path, rows });
        }
        Ok(())
    }

    /// Flushes and closes; returns the files written.
    pub fn finish(mut self) -> Result<Vec<WrittenFile>> {
        self.flush()?;
        self.close_part()?;
        Ok(self.written)
    }
}

/// Writes a small JSON document (report, manifest) atomically: object stores make a
/// single put atomic.
pub fn write_json<T: Serialize>(loc: &Location, value: &T) -> Result<()> {
    let mut bytes = serde_json::to_vec_pretty(value).map_err(|e| Error::other(&loc.url, e))?;
    bytes.push(b'\n');
    loc.put(bytes)
}

/// Writes a record batch as a single Parquet file (used by `gen` and tests).
pub fn write_parquet_file(loc: &Location, batches: &[RecordBatch]) -> Result<()> {
    let Some(first) = batches.first() else {
        return Err(Error::other(&loc.url, "nothing to write"));
    };
    let object = BufWriter::new(loc.store.clone(), loc.path.clone());
    let mut writer = AsyncArrowWriter::try_new(object, first.schema(), Some(writer_properties()))
        .map_err(|e| Error::Parquet {
        path: loc.url.clone(),
        source: e,
    })?;
    for b in batches {
        block_on(writer.write(b)).map_err(|e| Error::Parquet {
            path: loc.url.clone(),
            source: e,
        })?;
    }
    block_on(writer.close()).map_err(|e| Error::Parquet {
        path: loc.url.clone(),
        source: e,
    })?;
    Ok(())
}
