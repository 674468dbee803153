//! Side inputs, small next to the pool and read whole by every process: gold labels,
//! LLM-judge votes, ground truth and benchmark prompts for decontamination. Each is a
//! Parquet or JSONL file (or a directory/glob of them); rows are read as JSON objects
//! (Parquet through arrow's JSON writer) so that one parser serves both formats.

use rustc_hash::FxHashMap;
use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::hashing::pair_key;
use crate::input::FileFormat;
use crate::model::{Conversation, GoldLabel, Message, Verdict};
use crate::store::{list_inputs, Location};

/// One row of a side table: where it came from and its fields.
pub struct SideRow {
    pub file: String,
    /// Parquet: row index from 0; JSONL: line number from 1.
    pub row: u64,
    pub fields: Map<String, Value>,
}

/// Reads every row of every file under `url`.
pub fn read_rows(url: &str) -> Result<Vec<SideRow>> {
    let files = list_inputs(url, &|n| FileFormat::of(n).is_some())?;
    let mut out = Vec::new();
    for f in files {
        let name = f.location.path.as_ref().to_string();
        match FileFormat::of(&name).expect("filtered") {
            FileFormat::Jsonl => read_jsonl(&f.location, &mut out)?,
            FileFormat::Parquet => read_parquet(&f.location, &mut out)?,
        }
    }
    Ok(out)
}

fn read_jsonl(loc: &Location, out: &mut Vec<SideRow>) -> Result<()> {
    parse_jsonl(&loc.get()?, &loc.url, out)
}

/// Parses JSONL rows (one JSON object per line; blank lines skipped). `origin` names the
/// source in errors, which also give the line number.
pub fn parse_jsonl(bytes: &[u8], origin: &str, out: &mut Vec<SideRow>) -> Result<()> {
    let bytes = crate::input::strip_bom(bytes);
    for (i, line) in bytes.split(|b| *b == b'\n').enumerate() {
        let line_no = i as u64 + 1;
        if line.iter().all(|b| b.is_ascii_whitespace()) {
            continue;
        }
        match serde_json::from_slice::<Value>(line) {
            Ok(Value::Object(fields)) => out.push(SideRow {
                file: origin.to_string(),
                row: line_no,
                fields,
            }),
            Ok(_) => {
                return Err(Error::bad_row(
                    origin,
                    line_no,
                    None,
                    "line is not a JSON object",
                ))
            }
            Err(e) => {
                return Err(Error::bad_row(
                    origin,
                    line_no,
                    None,
                    format!("not valid JSON: {e}"),
                ))
            }
        }
    }
    Ok(())
}

fn read_parquet(loc: &Location, out: &mut Vec<SideRow>) -> Result<()> {
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::DataType;
    let bytes = loc.get()?;
    let size = bytes.len() as u64;
    let not_parquet = |e: parquet::errors::ParquetError| {
        Error::bad_file(&loc.url, format!("not a readable Parquet file: {e}"))
    };
    let builder = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes)
        .map_err(not_parquet)?;
    crate::input::check_parquet_ranges(&loc.url, builder.metadata(), size)?;
    let mut reader = builder.with_batch_size(8192).build().map_err(not_parquet)?;
    let mut row = 0u64;
    while let Some(batch) = crate::input::catch_parquet_panic(&loc.url, || reader.next())? {
        let batch = batch
            .map_err(|e| Error::bad_file(&loc.url, format!("cannot decode Parquet data: {e}")))?;
        let n = batch.num_rows();
        let mut rows: Vec<Map<String, Value>> = vec![Map::new(); n];
        for (field, col) in batch.schema().fields().iter().zip(batch.columns()) {
            if matches!(
                field.data_type(),
                DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
            ) {
                // Strings, by far the common case, skip the JSON round trip.
                let col = arrow::compute::cast(col, &DataType::Utf8).map_err(|e| Error::Arrow {
                    context: loc.url.clone(),
                    source: e,
                })?;
                let col = col.as_string::<i32>();
                for (i, r) in rows.iter_mut().enumerate() {
                    if col.is_valid(i) {
                        r.insert(
                            field.name().clone(),
                            Value::String(col.value(i).to_string()),
                        );
                    }
                }
                continue;
            }
            let one = arrow::record_batch::RecordBatch::try_new(
                std::sync::Arc::new(arrow::datatypes::Schema::new(vec![field.as_ref().clone()])),
                vec![col.clone()],
            )
            .map_err(|e| Error::Arrow {
                context: loc.url.clone(),
                source: e,
            })?;
            let mut buf = Vec::new();
            {
                let mut w = arrow::json::writer::LineDelimitedWriter::new(&mut buf);
                w.write(&one).map_err(|e| Error::Arrow {
                    context: loc.url.clone(),
                    source: e,
                })?;
                w.finish().map_err(|e| Error::Arrow {
                    context: loc.url.clone(),
                    source: e,
                })?;
            }
            for (r, line) in rows.iter_mut().zip(buf.split(|b| *b == b'\n')) {
                if let Ok(Value::Object(m)) = serde_json::from_slice::<Value>(line) {
                    r.extend(m);
                }
            }
        }
        for fields in rows {
            out.push(SideRow {
                file: loc.url.clone(),
                row,
                fields,
            });
            row += 1;
        }
    }
    Ok(())
}

/// Calls `f(file, row, values)` for each row of every file under `url`, with the
/// values of the named string columns (None where absent or null). For large side
/// tables (truth, judge votes): Parquet files are read column-projected and typed,
/// without building a JSON object per row.
pub fn for_each_string_row(
    url: &str,
    columns: &[&str],
    mut f: impl FnMut(&str, u64, &[Option<&str>]) -> Result<()>,
) -> Result<()> {
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::DataType;
    let files = list_inputs(url, &|n| FileFormat::of(n).is_some())?;
    for file in files {
        let loc = &file.location;
        if FileFormat::of(loc.path.as_ref()) == Some(FileFormat::Jsonl) {
            let mut rows = Vec::new();
            read_jsonl(loc, &mut rows)?;
            for r in rows {
                let mut values = Vec::with_capacity(columns.len());
                for c in columns {
                    values.push(r.string(c)?);
                }
                let refs: Vec<Option<&str>> = values.iter().map(|v| v.as_deref()).collect();
                f(&r.file, r.row, &refs)?;
            }
            continue;
        }
        let bytes = loc.get()?;
        let size = bytes.len() as u64;
        let builder = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes)
            .map_err(|e| Error::bad_file(&loc.url, format!("not a readable Parquet file: {e}")))?;
        crate::input::check_parquet_ranges(&loc.url, builder.metadata(), size)?;
        let schema = builder.schema().clone();
        let mut roots = Vec::new();
        for c in columns {
            if let Some((i, field)) = schema
                .fields()
                .iter()
                .enumerate()
                .find(|(_, fl)| fl.name() == c)
            {
                if !matches!(
                    field.data_type(),
                    DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
                ) {
                    return Err(Error::bad_column(
                        &loc.url,
                        *c,
                        format!("has type {}; expected a string", field.data_type()),
                    ));
                }
                roots.push(i);
            }
        }
        let mask = parquet::arrow::ProjectionMask::roots(builder.parquet_schema(), roots);
        let mut reader = builder
            .with_projection(mask)
            .with_batch_size(8192)
            .build()
            .map_err(|e| Error::bad_file(&loc.url, format!("not a readable Parquet file: {e}")))?;
        let mut row = 0u64;
        while let Some(batch) = crate::input::catch_parquet_panic(&loc.url, || reader.next())? {
            let batch = batch.map_err(|e| {
                Error::bad_file(&loc.url, format!("cannot decode Parquet data: {e}"))
            })?;
            let cols: Vec<Option<arrow::array::StringArray>> = columns
                .iter()
                .map(|c| {
                    batch
                        .column_by_name(c)
                        .map(|a| {
                            arrow::compute::cast(a, &DataType::Utf8)
                                .map(|a| a.as_string::<i32>().clone())
                        })
                        .transpose()
                })
                .collect::<std::result::Result<_, _>>()
                .map_err(|e| Error::Arrow {
                    context: loc.url.clone(),
                    source: e,
                })?;
            let mut values: Vec<Option<&str>> = vec![None; columns.len()];
            for i in 0..batch.num_rows() {
                for (v, c) in values.iter_mut().zip(&cols) {
                    *v = c.as_ref().and_then(|c| c.is_valid(i).then(|| c.value(i)));
                }
                f(&loc.url, row, &values)?;
                row += 1;
            }
        }
    }
    Ok(())
}

fn required<'a>(file: &str, row: u64, column: &str, v: Option<&'a str>) -> Result<&'a str> {
    v.ok_or_else(|| {
        Error::bad_row(
            file,
            row,
            Some(column.to_string()),
            format!("required column `{column}` is missing or null"),
        )
    })
}

impl SideRow {
    pub fn string(&self, column: &str) -> Result<Option<String>> {
        match self.fields.get(column) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(Error::bad_row(
                &self.file,
                self.row,
                Some(column.to_string()),
                format!("expected a string, found {other}"),
            )),
        }
    }

    pub fn required_string(&self, column: &str) -> Result<String> {
        self.string(column)?.ok_or_else(|| {
            Error::bad_row(
                &self.file,
                self.row,
                Some(column.to_string()),
                format!("required column `{column}` is missing or null"),
            )
        })
    }

    /// A prompt or response column: a string or a list of {role, content} messages.
    pub fn conversation(&self, column: &str) -> Result<Option<Conversation>> {
        let bad = |m: &str| {
            Error::bad_row(
                &self.file,
                self.row,
                Some(column.to_string()),
                m.to_string(),
            )
        };
        match self.fields.get(column) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(Conversation::Text(s.clone()))),
            Some(Value::Array(items)) => {
                let mut ms = Vec::new();
                for it in items {
                    let role = it.get("role").and_then(Value::as_str);
                    let content = it.get("content").and_then(Value::as_str);
                    match (role, content) {
                        (Some(r), Some(c)) => ms.push(Message {
                            role: r.into(),
                            content: c.into(),
                        }),
                        _ => return Err(bad("expected {role, content} messages")),
                    }
                }
                Ok(Some(Conversation::Messages(ms)))
            }
            Some(_) => Err(bad(
                "expected a string or a list of {role, content} messages",
            )),
        }
    }
}

/// Gold labels by pair key, the later label for a pair superseding the earlier
/// (DESIGN §4): later by `labeled_at` where both have it, else later in file order.
#[derive(Default, Clone)]
pub struct GoldLabels {
    pub labels: FxHashMap<u64, GoldLabel>,
    /// Label records read (relabels included).
    pub records: u64,
    pub files: Vec<String>,
    /// Every record, in the order read.
    pub stream: Vec<GoldLabel>,
    /// The position in `stream` of the record in force for each pair key (the one in
    /// `labels`). The gold RM learns from these records only, in stream order: a
    /// superseded label no longer trains it (`in_force`).
    in_force_at: FxHashMap<u64, usize>,
}

/// A gold label from one side-table row (DESIGN §4): `pair_id`, `verdict`, optional
/// `annotator`, `labeled_at` and the pair's text.
pub fn label_from_row(r: &SideRow) -> Result<GoldLabel> {
    let pair_id = r.required_string("pair_id")?;
    if pair_id.is_empty() {
        return Err(Error::bad_row(
            &r.file,
            r.row,
            Some("pair_id".into()),
            "`pair_id` is empty",
        ));
    }
    let verdict_text = r.required_string("verdict")?;
    let verdict = Verdict::parse(&verdict_text).ok_or_else(|| {
        Error::bad_row(
            &r.file,
            r.row,
            Some("verdict".into()),
            format!("`{verdict_text}` is not one of \"chosen\", \"rejected\", \"undecidable\""),
        )
    })?;
    let text = match (
        r.conversation("prompt")?,
        r.conversation("chosen")?,
        r.conversation("rejected")?,
    ) {
        (Some(p), Some(c), Some(j)) => Some((p, c, j)),
        _ => None,
    };
    Ok(GoldLabel {
        pair_id,
        verdict,
        annotator: r.string("annotator")?,
        labeled_at: scalar_text(r.fields.get("labeled_at"))
            .map(|t| {
                normalise_timestamp(&t).ok_or_else(|| {
                    Error::bad_row(
                        &r.file,
                        r.row,
                        Some("labeled_at".into()),
                        format!(
                            "`{t}` is not a timestamp: expected RFC 3339 (2025-03-01T12:00:00Z, \
                             2025-03-01T13:00:00+01:00), `2025-03-01 12:00:00` (UTC) or a date (2025-03-01)"
                        ),
                    )
                })
            })
            .transpose()?,
        text,
    })
}

/// Every label record of the files under `url`, in order; a bad row fails the whole
/// read, and so does a file without any label (it would teach nothing).
pub fn read_label_records(url: &str) -> Result<Vec<GoldLabel>> {
    let labels: Vec<GoldLabel> = read_rows(url)?
        .iter()
        .map(label_from_row)
        .collect::<Result<_>>()?;
    if labels.is_empty() {
        return Err(Error::bad_file(url, "no labels in this file"));
    }
    Ok(labels)
}

/// Parses a JSONL body of gold labels; the first bad line fails the whole body.
pub fn parse_label_lines(bytes: &[u8], origin: &str) -> Result<Vec<GoldLabel>> {
    let mut rows = Vec::new();
    parse_jsonl(bytes, origin, &mut rows)?;
    rows.iter().map(label_from_row).collect()
}

/// A conversation as the input format writes it: a string, or `{role, content}` messages.
pub fn conversation_json(c: &Conversation) -> Value {
    match c {
        Conversation::Text(t) => Value::String(t.clone()),
        Conversation::Messages(ms) => Value::Array(
            ms.iter()
                .map(|m| serde_json::json!({"role": m.role, "content": m.content}))
                .collect(),
        ),
    }
}

/// A pair as a JSON object in the input format (DESIGN §4): `pair_id`, `prompt`,
/// `chosen`, `rejected` (whole conversations, no `prompt`, for the implicit-prompt
/// form) and the attribute columns it has. Other input columns are not carried.
pub fn pair_to_json(p: &crate::model::PreferencePair) -> Value {
    let mut m = Map::new();
    m.insert("pair_id".into(), p.pair_id.clone().into());
    if !p.implicit_prompt {
        m.insert("prompt".into(), conversation_json(&p.prompt));
    }
    m.insert("chosen".into(), conversation_json(&p.chosen));
    m.insert("rejected".into(), conversation_json(&p.rejected));
    for (i, name) in crate::model::ATTRIBUTE_COLUMNS.iter().enumerate() {
        if let Some(v) = p.attributes.get(i) {
            m.insert((*name).into(), v.into());
        }
    }
    Value::Object(m)
}

/// One gold label as a JSON object in the input format (so that label-log segments are
/// themselves gold-label files any job can read).
pub fn label_to_json(label: &GoldLabel) -> Value {
    let mut m = Map::new();
    m.insert("pair_id".into(), label.pair_id.clone().into());
    m.insert("verdict".into(), label.verdict.as_str().into());
    if let Some(a) = &label.annotator {
        m.insert("annotator".into(), a.clone().into());
    }
    if let Some(t) = &label.labeled_at {
        m.insert("labeled_at".into(), t.clone().into());
    }
    if let Some((p, c, r)) = &label.text {
        m.insert("prompt".into(), conversation_json(p));
        m.insert("chosen".into(), conversation_json(c));
        m.insert("rejected".into(), conversation_json(r));
    }
    Value::Object(m)
}

impl GoldLabels {
    /// The labels of every file under `url`, in file order.
    pub fn read(url: &str) -> Result<GoldLabels> {
        let rows = read_rows(url)?;
        let mut gold = GoldLabels::default();
        for r in rows {
            if !gold.files.contains(&r.file) {
                gold.files.push(r.file.clone());
            }
            let label = label_from_row(&r)?;
            gold.insert(label);
        }
        Ok(gold)
    }

    /// Adds a record; returns the stream position of the record it supersedes, if it
    /// supersedes one (a record dated before the one in force supersedes nothing).
    pub fn insert(&mut self, label: GoldLabel) -> Option<usize> {
        self.records += 1;
        let at = self.stream.len();
        self.stream.push(label.clone());
        let key = pair_key(&label.pair_id);
        match self.labels.get(&key) {
            Some(old) if matches!((&old.labeled_at, &label.labeled_at), (Some(a), Some(b)) if b < a) => {
                None
            }
            _ => {
                self.labels.insert(key, label);
                self.in_force_at.insert(key, at)
            }
        }
    }

    /// The records in force from stream position `from` on, in stream order: what the
    /// gold RM learns (from 0: all of it; a superseded record does not train it, so
    /// two contradictory labels for one pair train it on the later one only).
    pub fn in_force(&self, from: usize) -> impl Iterator<Item = &GoldLabel> + '_ {
        self.stream
            .iter()
            .enumerate()
            .skip(from)
            .filter(|(at, l)| self.in_force_at.get(&pair_key(&l.pair_id)) == Some(at))
            .map(|(_, l)| l)
    }
}

/// A `labeled_at` as RFC 3339 in UTC with nanoseconds, so that later labels compare
/// later as text whatever offset or precision they were written with; `None` when the
/// text is no timestamp.
pub fn normalise_timestamp(text: &str) -> Option<String> {
    use chrono::{DateTime, NaiveDate, NaiveDateTime, SecondsFormat, Utc};
    let t = text.trim();
    let utc = DateTime::parse_from_rfc3339(t)
        .map(|d| d.with_timezone(&Utc))
        .ok()
        .or_else(|| {
            ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"]
                .iter()
                .find_map(|f| NaiveDateTime::parse_from_str(t, f).ok())
                .map(|n| n.and_utc())
        })
        .or_else(|| {
            NaiveDate::parse_from_str(t, "%Y-%m-%d")
                .ok()
                .and_then(|d| d.and_hms_opt(0, 0, 0))
                .map(|n| n.and_utc())
        })?;
    Some(utc.to_rfc3339_opts(SecondsFormat::Nanos, true))
}

fn scalar_text(v: Option<&Value>) -> Option<String> {
    match v {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(other) => Some(other.to_string()),
    }
}

/// Aggregated LLM-judge votes per pair: (votes for chosen, votes for rejected).
#[derive(Default, Clone)]
pub struct JudgeVotes {
    pub votes: FxHashMap<u64, (u32, u32)>,
}

impl JudgeVotes {
    /// Reads `pair_id`, `verdict` (chosen/rejected/undecidable) rows; several rows per
    /// pair (several judges or samples) are aggregated by majority.
    pub fn read(url: &str) -> Result<JudgeVotes> {
        let mut out = JudgeVotes::default();
        for_each_string_row(url, &["pair_id", "verdict"], |file, row, v| {
            let pair_id = required(file, row, "pair_id", v[0])?;
            let text = required(file, row, "verdict", v[1])?;
            let verdict = Verdict::parse(text).ok_or_else(|| {
                Error::bad_row(
                    file,
                    row,
                    Some("verdict".into()),
                    format!("`{text}` is not chosen/rejected/undecidable"),
                )
            })?;
            let e = out.votes.entry(pair_key(pair_id)).or_default();
            match verdict {
                Verdict::Chosen => e.0 += 1,
                Verdict::Rejected => e.1 += 1,
                Verdict::Undecidable => {}
            }
            Ok(())
        })?;
        Ok(out)
    }

    /// The judges agree with the pair's label: a strict majority of votes for chosen.
    pub fn agree_key(&self, key: u64) -> Option<bool> {
        self.votes.get(&key).map(|(c, r)| c > r)
    }
}

/// Ground truth for evaluation: whether the pair's chosen reply is truly the better one.
#[derive(Default, Clone)]
pub struct Truth {
    pub chosen_is_better: FxHashMap<u64, bool>,
}

impl Truth {
    /// Reads `pair_id` and `preference` ∈ {"chosen", "rejected"} rows.
    pub fn read(url: &str) -> Result<Truth> {
        let mut t = Truth::default();
        for_each_string_row(url, &["pair_id", "preference"], |file, row, v| {
            let pair_id = required(file, row, "pair_id", v[0])?;
            let better = match required(file, row, "preference", v[1])? {
                "chosen" => true,
                "rejected" => false,
                other => {
                    return Err(Error::bad_row(
                        file,
                        row,
                        Some("preference".into()),
                        format!("`{other}` is not chosen/rejected"),
                    ))
                }
            };
            t.chosen_is_better.insert(pair_key(pair_id), better);
            Ok(())
        })?;
        Ok(t)
    }
}

/// Benchmark texts decontamination indexes: every user turn of each prompt, and every
/// reply the benchmark holds.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BenchmarkTexts {
    pub prompts: Vec<String>,
    pub replies: Vec<String>,
}

impl BenchmarkTexts {
    /// Sorts both lists and keeps each distinct text once.
    pub fn dedup(&mut self) {
        for texts in [&mut self.prompts, &mut self.replies] {
            texts.sort();
            texts.dedup();
        }
    }
}

/// The texts of evaluation benchmarks, from files with a `prompt` column (and, with
/// `replies`, the `chosen` and `rejected` columns where they exist; jobs'
/// `bench::decontamination_texts` reads the released layouts too).
pub fn read_benchmark_texts(urls: &[String], replies: bool) -> Result<BenchmarkTexts> {
    let mut texts = BenchmarkTexts::default();
    for url in urls {
        for r in read_rows(url)? {
            let c = r.conversation("prompt")?.ok_or_else(|| {
                Error::bad_row(
                    &r.file,
                    r.row,
                    Some("prompt".into()),
                    "benchmark file rows need a `prompt`",
                )
            })?;
            texts
                .prompts
                .extend(c.user_turns().into_iter().map(str::to_string));
            for column in ["chosen", "rejected"].into_iter().filter(|_| replies) {
                if let Some(reply) = r.conversation(column)? {
                    reply.for_each_text(|t| texts.replies.push(t.to_string()));
                }
            }
        }
    }
    Ok(texts)
}

#[cfg(test)]
mod fuzz_regressions {
    use super::*;

    /// Fuzzing regression (fuzz/fuzz_targets/pairs_parquet.rs): a footer whose column
    /// chunk has a negative size made the parquet crate panic (`byte_range`) when a row
    /// group was read; every Parquet reader now refuses it with an error.
    #[test]
    fn fuzz_regression_a_negative_column_chunk_size_is_an_error_in_every_reader() {
        let bytes = include_bytes!(
            "../../tests/fuzz_regressions/pairs_parquet/negative-column-range.parquet"
        );
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f.parquet");
        std::fs::write(&file, bytes).unwrap();
        let url = file.to_str().unwrap();
        let refused = |e: crate::Error| {
            let text = e.to_string();
            assert!(text.contains("claims bytes"), "{text}");
        };
        refused(
            crate::input::plan_input(url)
                .err()
                .expect("pairs: an error"),
        );
        refused(read_rows(url).err().expect("side rows: an error"));
        refused(
            for_each_string_row(url, &["pair_id"], |_, _, _| Ok(()))
                .err()
                .expect("string rows: an error"),
        );
        // The score cache skips an unreadable chunk (a miss), as it skips any other.
        let cache = dir.path().join("cache");
        std::fs::create_dir_all(cache.join("fp")).unwrap();
        std::fs::write(cache.join("fp").join("chunk-0.parquet"), bytes).unwrap();
        let opened = crate::score_cache::ScoreCache::open(cache.to_str().unwrap(), "fp", 2);
        assert!(opened.unwrap().is_empty());
    }
}
