//! Writing output: the unified output schema, Parquet part writers, and the manifest
//! written last as the commit marker (DESIGN §4).

use std::sync::Arc;

use arrow::array::{
    ArrayRef, Float64Array, ListBuilder, RecordBatch, StringBuilder, StructBuilder, UInt64Array,
};
use arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef};
use object_store::buffered::BufWriter;
use parquet::arrow::async_writer::AsyncArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::extras::ExtrasCodec;
use crate::model::{
    Attributes, Conversation, Destination, Message, Reason, RowKey, ATTRIBUTE_COLUMNS,
};
use crate::store::{block_on, Location};

/// Rows buffered before a record batch is handed to the Parquet writer.
pub const WRITE_BATCH_ROWS: usize = 8192;
/// Rows per Parquet row group in output: small enough that the output shards well when
/// it is read again, large enough for good compression.
pub const ROW_GROUP_ROWS: usize = 65_536;
/// A part file is closed after this many rows and the next one started.
pub const ROWS_PER_PART: u64 = 2_000_000;

/// How curated and discarded rows are laid out (`--format`, DESIGN §4). Quarantine is
/// always written as `Input`: its rows may lack the fields the other layouts need.
/// Its names (`input`, `trl`, ...) are clap's and serde's, alike.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum OutputFormat {
    /// Rows as read (prompt, chosen and rejected in their input form) plus `reason`,
    /// `p_best`, `p_gold`.
    #[default]
    Input,
    /// No `prompt`; `chosen`/`rejected` are whole message lists (prompt turns, then the
    /// reply), the one form TRL, OpenRLHF and RewardBench all read unchanged; all other
    /// columns as in `Input`.
    Conversational,
    /// TRL's `RewardTrainer`: `pair_id`, whole-conversation `chosen`/`rejected`, and a
    /// numeric `margin` (read by its loss when present).
    Trl,
    /// OpenRLHF's `train_rm` (with `--apply_chat_template`; `--margin_loss` reads
    /// `margin`): the same columns as `trl`.
    Openrlhf,
    /// RewardBench's `--dataset DIR` (or `--dataset 'DIR/curated/*.jsonl' --load_json`):
    /// `pair_id` and whole-conversation `chosen`/`rejected` with system turns folded into
    /// the next user turn (`fold_system_turns`), as JSON lines.
    Rewardbench,
}

impl OutputFormat {
    /// The file format a layout is written in unless `--output-file-format` says
    /// otherwise: RewardBench loads `--load_json` datasets, everything else Parquet.
    pub fn default_file_format(self) -> OutputFileFormat {
        match self {
            OutputFormat::Rewardbench => OutputFileFormat::Jsonl,
            _ => OutputFileFormat::Parquet,
        }
    }
}

impl std::fmt::Display for OutputFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        value_name(self, f)
    }
}

/// Writes a value's clap name (its `--flag` spelling, which its serde name equals): the
/// `Display` of the setting enums.
pub fn value_name(
    value: &impl clap::ValueEnum,
    f: &mut std::fmt::Formatter<'_>,
) -> std::fmt::Result {
    f.write_str(
        value
            .to_possible_value()
            .expect("no variant is skipped")
            .get_name(),
    )
}

/// The file format of output parts (`--output-file-format`).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum OutputFileFormat {
    #[default]
    Parquet,
    /// JSON lines, for tools that read JSON only.
    Jsonl,
}

impl OutputFileFormat {
    pub fn extension(self) -> &'static str {
        match self {
            OutputFileFormat::Parquet => "parquet",
            OutputFileFormat::Jsonl => "jsonl",
        }
    }
    /// The `datasets` builder name of this format (dataset cards).
    pub fn builder_name(self) -> &'static str {
        match self {
            OutputFileFormat::Parquet => "parquet",
            OutputFileFormat::Jsonl => "json",
        }
    }
}

impl std::fmt::Display for OutputFileFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        value_name(self, f)
    }
}

/// How a prompt/response column is stored in a Parquet file (read by `input`,
/// written by the output schema).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConvForm {
    Text,
    Messages,
}

/// The columns every output part has, in order, and how they are laid out.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OutputSchema {
    pub has_prompt: bool,
    pub prompt: ConvForm,
    pub chosen: ConvForm,
    pub rejected: ConvForm,
    pub attributes: [bool; 6],
    #[serde(default)]
    pub format: OutputFormat,
    #[serde(default)]
    pub file_format: OutputFileFormat,
    /// Discarded parts carry `matched_ngram` (runs with `--decontaminate`).
    #[serde(default)]
    pub matched_ngram: bool,
    /// Discarded parts carry `duplicate_of` (runs with near-duplicate detection on).
    #[serde(default)]
    pub duplicate_of: bool,
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
    /// `contaminated` rows only: the benchmark n-gram the pair holds, as the pair
    /// writes it (the `matched_ngram` column of discarded parts).
    #[serde(default)]
    pub matched_ngram: Option<String>,
    /// `near_duplicate` rows only: the pair id of the row kept instead (the
    /// `duplicate_of` column of discarded parts).
    #[serde(default)]
    pub duplicate_of: Option<String>,
    /// Chosen and rejected were swapped relative to the input (not written as a column;
    /// used for truth agreement).
    pub swapped: bool,
}

/// The columns curate writes itself: replaced, never duplicated, when curate's own
/// output is read again (re-curation, `export`). `margin` is not among them: it is
/// often the user's own column, and only the presets write one.
pub const OWN_COLUMNS: [&str; 9] = [
    "reason",
    "p_best",
    "p_gold",
    "matched_ngram",
    "duplicate_of",
    "source_file",
    "source_row",
    "error",
    "raw",
];

/// One column of an output part.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Column {
    PairId,
    Prompt,
    Chosen,
    Rejected,
    /// Prompt turns then the reply, as one message list.
    WholeChosen,
    WholeRejected,
    Attribute(usize),
    Extras,
    Reason,
    PBest,
    PGold,
    Margin,
    SourceFile,
    SourceRow,
    Error,
    /// Discarded parts of a decontaminated run: the benchmark n-gram a `contaminated`
    /// row holds.
    MatchedNgram,
    DuplicateOf,
    Raw,
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

/// The preset `margin`: the gold RM's reward difference for the row as written,
/// ln(p_gold / (1 − p_gold)), floored at 0 (a margin asks the trained RM to separate
/// the replies by at least that much, as Llama 2's margin loss does, Touvron et al.
/// 2023 §3.2.2; a negative one would ask nothing) and 0 where no gold RM scored the row.
pub fn margin(p_gold: Option<f64>) -> f64 {
    match p_gold {
        Some(p) if p.is_finite() => {
            // Clamped so that a saturated probability gives a finite margin (≈ 13.8).
            let p = p.clamp(1e-6, 1.0 - 1e-6);
            (p / (1.0 - p)).ln().max(0.0)
        }
        _ => 0.0,
    }
}

/// A conversation as RewardBench 0.1.4 can read it: its loader relabels the prompt's
/// turns by position (user, assistant, user, …) and asserts that the last is a user's
/// (rewardbench/utils.py, `prepare_dialogue_from_tokenizer`), so system and developer
/// turns are folded into the next user turn (their text first, a blank line between).
pub fn fold_system_turns(messages: Vec<Message>) -> Vec<Message> {
    let mut out: Vec<Message> = Vec::with_capacity(messages.len());
    let mut pending: Vec<String> = Vec::new();
    for m in messages {
        if m.role == "system" || m.role == "developer" {
            pending.push(m.content);
        } else if m.role == "user" && !pending.is_empty() {
            pending.push(m.content);
            out.push(Message {
                role: "user".into(),
                content: std::mem::take(&mut pending).join("\n\n"),
            });
        } else {
            if !pending.is_empty() {
                out.push(Message {
                    role: "user".into(),
                    content: std::mem::take(&mut pending).join("\n\n"),
                });
            }
            out.push(m);
        }
    }
    if !pending.is_empty() {
        out.push(Message {
            role: "user".into(),
            content: pending.join("\n\n"),
        });
    }
    out
}

/// A prompt and a reply as one message list: a text prompt is a user turn, a text
/// reply an assistant turn; a row without a prompt (implicit-prompt form) already
/// holds the whole conversation.
pub fn whole_conversation(prompt: Option<&Conversation>, reply: &Conversation) -> Vec<Message> {
    let mut messages = Vec::new();
    let mut add = |c: &Conversation, role: &str| match c {
        Conversation::Text(t) => messages.push(Message {
            role: role.to_string(),
            content: t.clone(),
        }),
        Conversation::Messages(ms) => messages.extend(ms.iter().cloned()),
    };
    if let Some(p) = prompt {
        add(p, "user");
    }
    add(reply, "assistant");
    messages
}

impl OutputSchema {
    /// The layout a destination is written in (quarantine: always as read).
    fn format_for(&self, dest: Destination) -> OutputFormat {
        if dest == Destination::Quarantine {
            OutputFormat::Input
        } else {
            self.format
        }
    }

    /// The same columns in another layout.
    pub fn with_format(&self, format: OutputFormat, file_format: OutputFileFormat) -> Self {
        OutputSchema {
            format,
            file_format,
            ..self.clone()
        }
    }

    fn columns(&self, dest: Destination) -> Vec<Column> {
        let mut c = vec![Column::PairId];
        match self.format_for(dest) {
            OutputFormat::Input => {
                if self.has_prompt {
                    c.push(Column::Prompt);
                }
                c.extend([Column::Chosen, Column::Rejected]);
            }
            OutputFormat::Conversational => {
                c.extend([Column::WholeChosen, Column::WholeRejected]);
            }
            OutputFormat::Trl | OutputFormat::Openrlhf => {
                c.extend([Column::WholeChosen, Column::WholeRejected, Column::Margin]);
                return c;
            }
            OutputFormat::Rewardbench => {
                c.extend([Column::WholeChosen, Column::WholeRejected]);
                return c;
            }
        }
        c.extend(
            (0..ATTRIBUTE_COLUMNS.len())
                .filter(|i| self.attributes[*i])
                .map(Column::Attribute),
        );
        c.extend([Column::Extras, Column::Reason, Column::PBest, Column::PGold]);
        if dest == Destination::Discarded && self.matched_ngram {
            c.push(Column::MatchedNgram);
        }
        if dest == Destination::Discarded && self.duplicate_of {
            c.push(Column::DuplicateOf);
        }
        if dest == Destination::Quarantine {
            c.extend([
                Column::SourceFile,
                Column::SourceRow,
                Column::Error,
                Column::Raw,
            ]);
        }
        c
    }

    /// The Arrow schema of a destination's parts.
    pub fn arrow_schema(&self, extras: &ExtrasCodec, dest: Destination) -> SchemaRef {
        let mut fields = Vec::new();
        for column in self.columns(dest) {
            let field = |name: &str, t: DataType, nullable: bool| Field::new(name, t, nullable);
            fields.push(match column {
                Column::PairId => field("pair_id", DataType::Utf8, true),
                Column::Prompt => field("prompt", conv_type(self.prompt), true),
                Column::Chosen => field("chosen", conv_type(self.chosen), true),
                Column::Rejected => field("rejected", conv_type(self.rejected), true),
                Column::WholeChosen => field("chosen", messages_type(), true),
                Column::WholeRejected => field("rejected", messages_type(), true),
                Column::Attribute(i) => field(ATTRIBUTE_COLUMNS[i], DataType::Utf8, true),
                Column::Extras => {
                    fields.extend(extras.fields.iter().cloned());
                    continue;
                }
                Column::Reason => field("reason", DataType::Utf8, false),
                Column::PBest => field("p_best", DataType::Float64, true),
                Column::PGold => field("p_gold", DataType::Float64, true),
                Column::Margin => field("margin", DataType::Float64, false),
                Column::SourceFile => field("source_file", DataType::Utf8, false),
                Column::SourceRow => field("source_row", DataType::UInt64, false),
                Column::Error => field("error", DataType::Utf8, true),
                Column::MatchedNgram => field("matched_ngram", DataType::Utf8, true),
                Column::DuplicateOf => field("duplicate_of", DataType::Utf8, true),
                Column::Raw => field("raw", DataType::Utf8, true),
            });
        }
        Arc::new(Schema::new(fields))
    }
}

fn text_array<'a>(values: impl Iterator<Item = Option<&'a str>>) -> ArrayRef {
    let mut b = StringBuilder::new();
    for v in values {
        b.append_option(v);
    }
    Arc::new(b.finish())
}

fn messages_array(values: impl Iterator<Item = Option<Vec<Message>>>) -> ArrayRef {
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
    for v in values {
        match v {
            Some(ms) => {
                for m in ms {
                    let s = b.values();
                    s.field_builder::<StringBuilder>(0)
                        .expect("role")
                        .append_value(&m.role);
                    s.field_builder::<StringBuilder>(1)
                        .expect("content")
                        .append_value(&m.content);
                    s.append(true);
                }
                b.append(true);
            }
            None => b.append(false),
        }
    }
    Arc::new(b.finish())
}

fn conv_array<'a>(
    form: ConvForm,
    values: impl Iterator<Item = Option<&'a Conversation>>,
    role: &str,
) -> ArrayRef {
    match form {
        ConvForm::Text => {
            let texts: Vec<Option<String>> = values
                .map(|v| {
                    v.map(|c| match c {
                        Conversation::Text(t) => t.clone(),
                        // Only reachable if a run mixes forms without planning for it.
                        Conversation::Messages(ms) => ms
                            .iter()
                            .map(|m| m.content.as_str())
                            .collect::<Vec<_>>()
                            .join("\n"),
                    })
                })
                .collect();
            text_array(texts.iter().map(|t| t.as_deref()))
        }
        ConvForm::Messages => messages_array(values.map(|v| {
            v.map(|c| match c {
                // Plain text in a run whose column holds messages: one message.
                Conversation::Text(t) => vec![Message {
                    role: role.to_string(),
                    content: t.clone(),
                }],
                Conversation::Messages(ms) => ms.clone(),
            })
        })),
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
    for column in schema.columns(dest) {
        match column {
            Column::PairId => cols.push(text_array(rows.iter().map(|r| r.pair_id.as_deref()))),
            Column::Prompt => cols.push(conv_array(
                schema.prompt,
                rows.iter().map(|r| r.prompt.as_ref()),
                "user",
            )),
            Column::Chosen => cols.push(conv_array(
                schema.chosen,
                rows.iter().map(|r| r.chosen.as_ref()),
                "assistant",
            )),
            Column::Rejected => cols.push(conv_array(
                schema.rejected,
                rows.iter().map(|r| r.rejected.as_ref()),
                "assistant",
            )),
            Column::WholeChosen | Column::WholeRejected => {
                let fold = schema.format_for(dest) == OutputFormat::Rewardbench;
                cols.push(messages_array(rows.iter().map(|r| {
                    let reply = if column == Column::WholeChosen {
                        &r.chosen
                    } else {
                        &r.rejected
                    };
                    reply.as_ref().map(|c| {
                        let whole = whole_conversation(r.prompt.as_ref(), c);
                        if fold {
                            fold_system_turns(whole)
                        } else {
                            whole
                        }
                    })
                })))
            }
            Column::Attribute(i) => cols.push(text_array(rows.iter().map(|r| r.attributes.get(i)))),
            Column::Extras => cols.extend(extras.decode(rows.iter().map(|r| r.extras.as_slice()))?),
            Column::Reason => cols.push(text_array(rows.iter().map(|r| Some(r.reason.code())))),
            Column::PBest => cols.push(Arc::new(
                rows.iter().map(|r| r.p_best).collect::<Float64Array>(),
            )),
            Column::PGold => cols.push(Arc::new(
                rows.iter().map(|r| r.p_gold).collect::<Float64Array>(),
            )),
            Column::Margin => cols.push(Arc::new(Float64Array::from_iter_values(
                rows.iter().map(|r| margin(r.p_gold)),
            ))),
            Column::SourceFile => cols.push(text_array(
                rows.iter()
                    .map(|r| Some(file_urls[r.key.file_index()].as_str())),
            )),
            Column::SourceRow => cols.push(Arc::new(UInt64Array::from_iter_values(
                rows.iter().map(|r| r.row),
            ))),
            Column::Error => cols.push(text_array(rows.iter().map(|r| r.error.as_deref()))),
            Column::MatchedNgram => {
                cols.push(text_array(rows.iter().map(|r| r.matched_ngram.as_deref())))
            }
            Column::DuplicateOf => {
                cols.push(text_array(rows.iter().map(|r| r.duplicate_of.as_deref())))
            }
            Column::Raw => cols.push(text_array(rows.iter().map(|r| r.raw.as_deref()))),
        }
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

/// Where a run's parts are written while it runs: `OUT/_staging/`. Readers skip
/// `_`-prefixed paths (pyarrow, `datasets`, Spark, synpref's own input listing), so a
/// crash mid-run leaves nothing under `curated/`, `discarded/` or `quarantine/` a
/// reader could take for a part; `publish` moves the parts into place at commit and
/// the next run clears whatever a crash left.
pub const STAGING_DIR: &str = "_staging";

/// Where, under the staging area, a resumable run keeps its progress (jobs'
/// `curate::resume`).
pub const RESUME_DIR: &str = "resume";

/// The objects a committed output consists of besides its parts; `manifest.json` is
/// written last and removed first.
pub const COMMIT_FILES: [&str; 3] = ["manifest.json", "README.md", "report.json"];

/// Removes a previous run's output, uncommitting it first (the manifest goes first),
/// and any staging a crashed run left. On the local file system whole directories go,
/// so that the in-progress files object_store writes beside a part (`part-…#1`), which
/// its listing does not show, go too.
pub fn clear_output(out: &Location) -> Result<()> {
    for name in COMMIT_FILES {
        out.child(name).delete()?;
    }
    for dir in Destination::ALL
        .iter()
        .map(|d| d.dir())
        .chain([STAGING_DIR])
    {
        out.child(dir).delete_tree()?;
    }
    Ok(())
}

/// Removes a previous run's committed output (the manifest first) but keeps the staging
/// area, where an interrupted run's progress waits to be resumed.
pub fn clear_committed(out: &Location) -> Result<()> {
    for name in COMMIT_FILES {
        out.child(name).delete()?;
    }
    for dir in Destination::ALL.iter().map(|d| d.dir()) {
        out.child(dir).delete_tree()?;
    }
    Ok(())
}

/// Moves a run's parts from staging into place (the step before the report, card and
/// manifest are written) and removes the staging directory.
pub fn publish(out: &Location, files: &[WrittenFile]) -> Result<()> {
    let staging = out.child(STAGING_DIR);
    // Resume state goes first: a run killed while its parts move is not resumable (its
    // committed slices' parts may already have moved), so it starts afresh.
    staging.child(RESUME_DIR).delete_tree()?;
    for f in files {
        staging.child(&f.path).rename_to(&out.child(&f.path))?;
    }
    staging.delete_tree()
}

/// A new run's id, a part of its part files' names: Hugging Face `datasets` caches a
/// local dataset by its card's data-file patterns, not by the files' contents, so an
/// output re-written in place must change its patterns or `load_dataset(OUT)` returns
/// the previous run's rows (seen with datasets 5.2). Time and process id, hashed.
pub fn new_run_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(&nanos.to_le_bytes());
    h.update(&std::process::id().to_le_bytes());
    format!("{:012x}", h.digest() & 0xffff_ffff_ffff)
}

/// Writes one destination's rows of one worker as parts
/// `_staging/DIR/part-WWWWW-SSSSS-RUN.{parquet,jsonl}` (worker, sequence number, run
/// id), in the layout and file format of its schema.
pub struct PartWriter {
    dir: Location,
    dest: Destination,
    worker: usize,
    schema: OutputSchema,
    arrow_schema: SchemaRef,
    extras: Arc<ExtrasCodec>,
    file_urls: Arc<Vec<String>>,
    buffer: Vec<OutputRow>,
    current: Option<(PartFile, String, u64)>,
    seq: usize,
    run_id: String,
    written: Vec<WrittenFile>,
}

/// An open part.
enum PartFile {
    Parquet(AsyncArrowWriter<BufWriter>),
    Jsonl(BufWriter),
}

impl PartWriter {
    pub fn new(
        out: &Location,
        dest: Destination,
        worker: usize,
        schema: OutputSchema,
        extras: Arc<ExtrasCodec>,
        file_urls: Arc<Vec<String>>,
        run_id: &str,
    ) -> Self {
        let arrow_schema = schema.arrow_schema(&extras, dest);
        PartWriter {
            dir: out.child(STAGING_DIR).child(dest.dir()),
            dest,
            worker,
            schema,
            arrow_schema,
            extras,
            file_urls,
            buffer: Vec::new(),
            current: None,
            seq: 0,
            run_id: run_id.to_string(),
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
            let file_format = self.schema.file_format;
            let name = format!(
                "part-{:05}-{:05}-{}.{}",
                self.worker,
                self.seq,
                self.run_id,
                file_format.extension()
            );
            self.seq += 1;
            let loc = self.dir.child(&name);
            let object = BufWriter::new(loc.store.clone(), loc.path.clone());
            let file = match file_format {
                OutputFileFormat::Parquet => PartFile::Parquet(
                    AsyncArrowWriter::try_new(
                        object,
                        self.arrow_schema.clone(),
                        Some(writer_properties()),
                    )
                    .map_err(|e| Error::Parquet {
                        path: loc.url.clone(),
                        source: e,
                    })?,
                ),
                OutputFileFormat::Jsonl => PartFile::Jsonl(object),
            };
            self.current = Some((file, format!("{}/{}", self.dest.dir(), name), 0));
        }
        let (file, path, rows) = self.current.as_mut().expect("opened above");
        match file {
            PartFile::Parquet(writer) => {
                block_on(writer.write(&batch)).map_err(|e| Error::Parquet {
                    path: path.clone(),
                    source: e,
                })?
            }
            PartFile::Jsonl(object) => {
                let bytes = jsonl_bytes(&batch, path)?;
                block_on(tokio::io::AsyncWriteExt::write_all(object, &bytes))
                    .map_err(|e| Error::other(path.clone(), e))?
            }
        }
        *rows += n;
        if *rows >= ROWS_PER_PART {
            self.close_part()?;
        }
        Ok(())
    }

    fn close_part(&mut self) -> Result<()> {
        if let Some((file, path, rows)) = self.current.take() {
            match file {
                PartFile::Parquet(writer) => {
                    block_on(writer.close()).map_err(|e| Error::Parquet {
                        path: path.clone(),
                        source: e,
                    })?;
                }
                PartFile::Jsonl(mut object) => {
                    block_on(tokio::io::AsyncWriteExt::shutdown(&mut object))
                        .map_err(|e| Error::other(path.clone(), e))?;
                }
            }
            self.written.push(WrittenFile { path, rows });
        }
        Ok(())
    }

    /// Writes what is buffered and closes the open part, so that every row pushed so
    /// far is in `written()`'s files (a resumable run's commit point).
    pub fn close_current(&mut self) -> Result<()> {
        self.flush()?;
        self.close_part()
    }

    /// The parts closed so far, in order.
    pub fn written(&self) -> &[WrittenFile] {
        &self.written
    }

    /// Continues after `files`, the parts of this writer that an interrupted run
    /// committed: the next part takes the next sequence number.
    pub fn resume_after(&mut self, files: Vec<WrittenFile>) {
        self.seq = files.len();
        self.written = files;
    }

    /// Flushes and closes; returns the files written (paths relative to the output,
    /// where `publish` puts them).
    pub fn finish(mut self) -> Result<Vec<WrittenFile>> {
        self.flush()?;
        self.close_part()?;
        Ok(self.written)
    }
}

/// A record batch as JSON lines, nulls written out (so that every line has every key,
/// as JSON readers that infer a schema from the first lines expect).
pub fn jsonl_bytes(batch: &RecordBatch, path: &str) -> Result<Vec<u8>> {
    let mut buf = Vec::new();
    let mut writer = arrow::json::WriterBuilder::new()
        .with_explicit_nulls(true)
        .build::<_, arrow::json::writer::LineDelimited>(&mut buf);
    writer
        .write(batch)
        .and_then(|_| writer.finish())
        .map_err(|e| Error::Arrow {
            context: format!("{path} as JSON lines"),
            source: e,
        })?;
    drop(writer);
    Ok(buf)
}

/// Writes rows as JSON Lines in one put, so a reader sees the whole file or none of it
/// (object stores make a single put atomic; on a local disk object_store writes a
/// temporary file and renames it).
pub fn write_json_lines<T: Serialize>(
    loc: &Location,
    rows: impl IntoIterator<Item = T>,
) -> Result<()> {
    let mut bytes = Vec::new();
    for row in rows {
        serde_json::to_writer(&mut bytes, &row).map_err(|e| Error::other(&loc.url, e))?;
        bytes.push(b'\n');
    }
    loc.put(bytes)
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

#[cfg(test)]
mod tests {
    #[test]
    fn setting_enums_have_one_name_for_clap_serde_and_display() {
        use clap::ValueEnum;
        let names = |all: &[String]| all.join(" ");
        let formats: Vec<String> = OutputFormat::value_variants()
            .iter()
            .map(|v| {
                let json = serde_json::to_value(v).unwrap();
                assert_eq!(json.as_str(), Some(v.to_string().as_str()));
                assert_eq!(OutputFormat::from_str(&v.to_string(), false), Ok(*v));
                v.to_string()
            })
            .collect();
        assert_eq!(
            names(&formats),
            "input conversational trl openrlhf rewardbench"
        );
        let files: Vec<String> = OutputFileFormat::value_variants()
            .iter()
            .map(|v| {
                let json = serde_json::to_value(v).unwrap();
                assert_eq!(json.as_str(), Some(v.to_string().as_str()));
                v.to_string()
            })
            .collect();
        assert_eq!(names(&files), "parquet jsonl");
    }

    use super::*;

    fn m(role: &str, content: &str) -> Message {
        Message {
            role: role.into(),
            content: content.into(),
        }
    }

    /// RewardBench 0.1.4 relabels turns by position: a system turn must not take one.
    #[test]
    fn rewardbench_layout_folds_system_turns_into_the_next_user_turn() {
        let folded = fold_system_turns(vec![
            m("system", "Be brief."),
            m("user", "Hi"),
            m("assistant", "Hello"),
            m("developer", "Now in French."),
            m("user", "Bye"),
            m("assistant", "Au revoir"),
        ]);
        assert_eq!(
            folded,
            vec![
                m("user", "Be brief.\n\nHi"),
                m("assistant", "Hello"),
                m("user", "Now in French.\n\nBye"),
                m("assistant", "Au revoir"),
            ]
        );
        let plain = vec![m("user", "q"), m("assistant", "a")];
        assert_eq!(fold_system_turns(plain.clone()), plain);
    }

    #[test]
    fn margins_are_the_gold_log_odds_floored_at_zero() {
        assert_eq!(margin(None), 0.0);
        assert_eq!(margin(Some(0.3)), 0.0);
        assert!((margin(Some(0.75)) - 3f64.ln()).abs() < 1e-12);
        assert!(margin(Some(1.0)).is_finite());
    }
}
