//! `export`: re-projects a committed curate output (or serve snapshot) into another
//! `--format` / `--output-file-format` without re-running anything: the parts are
//! read back through the pool reader (curate's own columns as the previous decision),
//! written in the new layout, and committed like a curate run (staging, report, card,
//! manifest last). Quarantine is copied as it is: its rows may not be pairs at all.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use synpref_engine::extras::ExtrasCodec;
use synpref_engine::input::{JsonlObservation, RawBody, ShardReader};
use synpref_engine::model::{Destination, Reason};
use synpref_engine::output::{
    clear_output, publish, write_json, OutputFileFormat, OutputFormat, PartWriter, WrittenFile,
};
use synpref_engine::schema::infer_output_schema;
use synpref_engine::store::{check_output_apart, resolve, Location};
use synpref_engine::{Error, Result};
use synpref_operators::validate::check;

use crate::curate::card::dataset_card;
use crate::curate::{CurateReport, Manifest};

/// The settings of an export.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExportSpec {
    /// A committed curate output (its `manifest.json` must exist).
    pub from: String,
    /// Where the re-projected output goes.
    pub out: String,
    pub format: OutputFormat,
    /// `None`: the format's default file format.
    pub output_file_format: Option<OutputFileFormat>,
    pub progress: bool,
}

/// What an export did.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExportSummary {
    pub rows: u64,
    pub files: Vec<WrittenFile>,
}

/// Layouts that keep what every other layout is built from (the prompt, the decision
/// columns); the presets drop them, so an export cannot start from one.
fn keeps_decisions(format: OutputFormat) -> bool {
    matches!(format, OutputFormat::Input | OutputFormat::Conversational)
}

fn read_json<T: serde::de::DeserializeOwned>(loc: &Location) -> Result<T> {
    let bytes = loc.get()?;
    serde_json::from_slice(&bytes)
        .map_err(|e| Error::bad_file(&loc.url, format!("not a synpref file of this version: {e}")))
}

/// The parts of `dest` the manifest records, by path relative to the output.
fn recorded_parts(manifest: &Manifest, dest: Destination) -> Vec<&WrittenFile> {
    let prefix = format!("{}/", dest.dir());
    manifest
        .outputs
        .iter()
        .filter(|f| f.path.starts_with(&prefix))
        .collect()
}

/// The path of an input file relative to the output `from`.
fn relative<'a>(file: &'a synpref_engine::input::PlannedFile, from: &Location) -> &'a str {
    let path = file.location.path.as_ref();
    path.strip_prefix(from.path.as_ref())
        .unwrap_or(path)
        .trim_start_matches('/')
}

/// Refuses a part whose rows are not the count its manifest records.
fn check_rows_recorded(
    manifest: &Manifest,
    dest: Destination,
    input: &synpref_engine::input::InputPlan,
    from: &Location,
    rows_read: &[u64],
) -> Result<()> {
    for (file, rows) in input.files.iter().zip(rows_read) {
        let path = relative(file, from);
        let recorded = recorded_parts(manifest, dest)
            .into_iter()
            .find(|f| f.path == path)
            .map(|f| f.rows);
        if recorded != Some(*rows) {
            return Err(Error::bad_file(
                &file.location.url,
                format!(
                    "{rows} rows, manifest.json records {}: the output was changed after it was committed",
                    recorded.map(|r| r.to_string()).unwrap_or_else(|| "none".into())
                ),
            ));
        }
    }
    Ok(())
}

/// Runs an export.
pub fn run_export(spec: &ExportSpec) -> Result<ExportSummary> {
    // A live serve's `snapshot` is a link replaced atomically by each snapshot: read
    // one version throughout (it stays for `serve::snapshots::GRACE` once replaced).
    let from_url = synpref_engine::store::pin_local(&spec.from);
    let from = resolve(&from_url)?;
    let manifest = Manifest::read_committed("--from", &from_url)?;
    let report: CurateReport = read_json(&from.child("report.json"))?;
    if !keeps_decisions(manifest.spec.format) {
        return Err(Error::setting(
            "--from",
            format!(
                "`{}` was written with --format {}, which keeps neither the prompt nor reason/p_best/p_gold; export from an `input` or `conversational` output",
                spec.from, manifest.spec.format
            ),
        ));
    }
    let out = resolve(&spec.out)?;
    clear_output(&out)?;
    let file_format = spec
        .output_file_format
        .unwrap_or_else(|| spec.format.default_file_format());
    let mut written: Vec<WrittenFile> = Vec::new();
    let run_id = synpref_engine::output::new_run_id();
    let bar = synpref_engine::progress::bar(
        "export",
        manifest.rows.curated + manifest.rows.discarded,
        "pairs",
    );
    if !spec.progress {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let validate = crate::curate::validate_settings(&manifest.spec);
    for dest in [Destination::Curated, Destination::Discarded] {
        let has_parts = manifest
            .outputs
            .iter()
            .any(|f| f.path.starts_with(&format!("{}/", dest.dir())));
        if !has_parts {
            continue;
        }
        let input = manifest.plan_parts(dest, &from)?;
        let mut rows_read = vec![0u64; input.files.len()];
        let mut observations = Vec::new();
        for shard in input.shards_for(0, 1) {
            let mut obs = JsonlObservation {
                file: shard.file(),
                start: match &shard {
                    synpref_engine::input::Shard::ByteRange { start, .. } => *start,
                    _ => 0,
                },
                ..Default::default()
            };
            let mut reader = ShardReader::open(&input, shard, None, true, None)?;
            while reader.next_batch(Some(&mut obs))?.is_some() {}
            observations.push(obs);
        }
        let (schema, extras_fields) = infer_output_schema(&input, &observations)?;
        let schema = schema.with_format(spec.format, file_format);
        let extras = Arc::new(ExtrasCodec::new(extras_fields)?);
        let urls = Arc::new(input.files.iter().map(|f| f.location.url.clone()).collect());
        let mut writer = PartWriter::new(&out, dest, 0, schema, extras.clone(), urls, &run_id);
        for shard in input.shards_for(0, 1) {
            let mut reader = ShardReader::open(&input, shard, Some(&extras), false, None)?;
            while let Some(batch) = reader.next_batch(None)? {
                bar.inc(batch.len() as u64);
                for record in batch {
                    let (file, row) = (record.key.file_index(), record.row);
                    rows_read[file] += 1;
                    let where_ = || format!("{} row {row}", input.files[file].location.url);
                    let previous = match &record.body {
                        RawBody::Fields(f) => f.previous.clone(),
                        RawBody::Unparsable { .. } => None,
                    };
                    let reason = previous
                        .as_ref()
                        .and_then(|p| Reason::from_code(&p.reason))
                        .ok_or_else(|| {
                            Error::bad_file(where_(), "no `reason` column a curate run writes")
                        })?;
                    let mut pair = check(record, &validate).map_err(|q| {
                        Error::bad_file(
                            where_(),
                            format!("not a valid pair: {}", q.error.unwrap_or_default()),
                        )
                    })?;
                    if pair.corrected {
                        // `check` holds corrected rows as their verdict was given; the
                        // export writes them as curate did.
                        std::mem::swap(&mut pair.chosen, &mut pair.rejected);
                    }
                    let mut row = synpref_operators::routed(pair, reason, None);
                    let previous = previous.expect("reason read above");
                    row.p_best = previous.p_best;
                    row.p_gold = previous.p_gold;
                    writer.push(row)?;
                }
            }
        }
        check_rows_recorded(&manifest, dest, &input, &from, &rows_read)?;
        written.extend(writer.finish()?);
    }
    bar.finish_and_clear();
    // Quarantine as it is: its rows may be unreadable as pairs.
    let staging = out.child(synpref_engine::output::STAGING_DIR);
    for f in manifest
        .outputs
        .iter()
        .filter(|f| f.path.starts_with("quarantine/"))
    {
        // Renamed into this run (the card's patterns name the run id).
        let (stem, ext) = f.path.rsplit_once('.').unwrap_or((f.path.as_str(), ""));
        let stem = stem
            .strip_suffix(&format!("-{}", manifest.run_id))
            .filter(|_| !manifest.run_id.is_empty())
            .unwrap_or(stem);
        let path = format!("{stem}-{run_id}.{ext}");
        staging
            .child(&path)
            .put(from.child(&f.path).get()?.to_vec())?;
        written.push(WrittenFile { path, rows: f.rows });
    }
    written.sort();
    let rows = written.iter().map(|f| f.rows).sum();
    let mut exported = manifest.clone();
    exported.job = "export".into();
    exported.spec.format = spec.format;
    exported.spec.output_file_format = spec.output_file_format;
    exported.spec.out = spec.out.clone();
    exported.outputs = written.clone();
    exported.run_id = run_id.clone();
    exported.committed_unix_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    publish(&out, &written)?;
    write_json(&out.child("report.json"), &report)?;
    out.child("README.md")
        .put(dataset_card(&report, &exported, &spec.out).into_bytes())?;
    write_json(&out.child("manifest.json"), &exported)?;
    Ok(ExportSummary {
        rows,
        files: written,
    })
}

impl crate::job::SerialJob for ExportSpec {
    const NAME: &'static str = "export";
    type Report = ExportSummary;

    fn progress(&self) -> bool {
        self.progress
    }

    /// `--out` apart from `--from`, before anything is read.
    fn check(&self) -> Result<()> {
        check_output_apart("--out", &self.out, &[("--from", self.from.as_str())])
    }

    fn run(&self) -> Result<ExportSummary> {
        run_export(self)
    }

    fn summarise(&self, summary: &ExportSummary) -> String {
        format!(
            "exported {} rows in {} files as --format {} under {}\n",
            summary.rows,
            summary.files.len(),
            self.format,
            self.out
        )
    }
}
