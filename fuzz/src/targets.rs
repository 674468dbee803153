//! One function per fuzz target, each taking libFuzzer's input bytes and running one
//! reader of untrusted bytes on them (`fuzz_targets/NAME.rs` calls `NAME`). Each returns
//! normally whatever the bytes: an error from the reader is the expected answer to bad
//! input; a panic, an abort, a hang or a broken invariant asserted here is a finding.
//! `TARGETS` lists them by name for the replay test of the main suite.

use std::path::PathBuf;
use std::sync::OnceLock;

use synpref_engine::output::{OutputFileFormat, OutputFormat};
use synpref_engine::store::resolve;
use synpref_jobs::export::{run_export, ExportSpec};

use synpref_engine::label_log::LabelLog;
use synpref_engine::score_cache::ScoreCache;
use synpref_engine::side::{parse_label_lines, read_label_records, GoldLabels, JudgeVotes, Truth};
use synpref_jobs::bench::layouts::convert_file;
use synpref_jobs::bench::prompts::decontamination_texts;
use synpref_jobs::bench::{read_layout, Benchmark};
use synpref_jobs::curate::checkpoint::{
    committed_slices, load_checkpoint, load_marker, load_survey,
};
use synpref_jobs::curate::CurateSpec;
use synpref_jobs::serve::state::{spec_fingerprint, PoolState, SavedScorer, SavedStateMeta};

// `super`, not `crate`: the main suite includes this crate's lib.rs as a module.
use super::{fresh_dir, read_pairs, scratch, side_file_name, write, write_at};

/// A target's body: libFuzzer's input in, nothing out.
pub type Target = fn(&[u8]);

/// Every target by name (the file name under `fuzz_targets/` and `fuzz/seeds/`).
pub const TARGETS: &[(&str, Target)] = &[
    ("bench_files", bench_files),
    ("gold_labels", gold_labels),
    ("judge_votes", judge_votes),
    ("label_lines", label_lines),
    ("manifest", manifest),
    ("pairs_jsonl", pairs_jsonl),
    ("pairs_parquet", pairs_parquet),
    ("saved_state", saved_state),
    ("score_cache", score_cache),
];

/// Benchmark and evaluation-set files, as downloaded from their publishers: the bytes
/// as a Parquet file (when they start with `PAR1`) or a JSON / JSON Lines file, read by
/// `synpref_jobs::bench::layouts::convert_file` for each of the seven benchmarks
/// (`bench import`, through `bench::released::rows_of`), `bench::read_layout` (an
/// imported layout), `bench::prompts::decontamination_texts` and
/// `synpref_engine::side::read_benchmark_texts` (curate's `--decontaminate`), and
/// `synpref_jobs::read::load_eval_set` (`eval`, `fractions`, `stage1`).
pub fn bench_files(data: &[u8]) {
    let url = write(&side_file_name("bench", data), data);
    let loc = synpref_engine::store::resolve(&url).expect("a local path");
    for b in Benchmark::ALL {
        let _ = convert_file(b, &url, &loc);
    }
    let _ = read_layout(&url);
    let urls = [url.clone()];
    let _ = decontamination_texts(&urls, true);
    let _ = synpref_engine::side::read_benchmark_texts(&urls, true);
    let _ = synpref_jobs::read::load_eval_set(&url, 64);
}

/// Gold-label files (`curate --gold`, `stage1 --gold`, the label files `serve` polls):
/// `synpref_engine::side::GoldLabels::read` and `read_label_records` on the bytes as a
/// Parquet file (when they start with `PAR1`) or a JSON Lines file. Label files are
/// written by annotation tools and people: untrusted.
pub fn gold_labels(data: &[u8]) {
    let url = write(&side_file_name("gold", data), data);
    let gold = GoldLabels::read(&url);
    let records = read_label_records(&url);
    if let (Ok(g), Ok(r)) = (gold, records) {
        assert_eq!(g.records, r.len() as u64, "both readers read every record");
    }
}

/// LLM-judge votes (`curate --judges`) and ground truth (`--truth`):
/// `synpref_engine::side::JudgeVotes::read` and `Truth::read`, both through
/// `side::for_each_string_row` (column-projected Parquet, or JSON Lines), on the bytes
/// as a Parquet file (when they start with `PAR1`) or a JSON Lines file. Votes come
/// from judge runs outside synpref (stage1 writes them too, but any tool may).
pub fn judge_votes(data: &[u8]) {
    let url = write(&side_file_name("judges", data), data);
    let _ = JudgeVotes::read(&url);
    let _ = Truth::read(&url);
}

/// JSON Lines label bodies: `synpref_engine::side::parse_label_lines`, which parses the
/// body of serve's `POST /v1/labels` (cluster/src/http.rs calls it on the raw request
/// bytes, from any client holding the token), and `synpref_engine::label_log::LabelLog::read`,
/// which reads a label-log segment back on restart (saved state in object storage) with
/// the same parser plus its `log_source` field.
pub fn label_lines(data: &[u8]) {
    let _ = parse_label_lines(data, "request body");
    let dir = scratch().join("label-log");
    write_at(&dir.join("seg-0000000001.jsonl"), data);
    let log = LabelLog::open(dir.to_str().expect("UTF-8")).expect("a local directory");
    if let Ok(segments) = log.segments() {
        for s in &segments {
            let _ = log.read(s);
        }
    }
}

/// fuzz/fixtures/export, found from this crate and from the main suite's (`cluster/`),
/// both beside fuzz/.
const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../fuzz/fixtures/export");

/// A copy of the fixture in the scratch directory, made once per process.
fn from_dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let to = fresh_dir("export-from");
        for dir in ["curated", "discarded", "quarantine"] {
            for f in std::fs::read_dir(format!("{FIXTURE}/{dir}")).expect("fixture") {
                let f = f.expect("fixture entry").path();
                let bytes = std::fs::read(&f).expect("fixture file");
                write_at(&to.join(dir).join(f.file_name().unwrap()), &bytes);
            }
        }
        to
    })
}

fn export_with(manifest: &[u8], report: &[u8]) {
    let from = from_dir();
    write_at(&from.join("manifest.json"), manifest);
    write_at(&from.join("report.json"), report);
    let out = scratch().join("export-out");
    let spec = ExportSpec {
        from: from.to_str().expect("UTF-8").to_string(),
        out: out.to_str().expect("UTF-8").to_string(),
        format: OutputFormat::Trl,
        output_file_format: Some(OutputFileFormat::Jsonl),
        progress: false,
    };
    let _ = run_export(&spec);
}

/// A committed output's `manifest.json` and `report.json`, read back by
/// `synpref_jobs::export::run_export` (`synpref export --from`): serde of `Manifest` and
/// `CurateReport`, then everything export does with them (which part files to read,
/// the quarantine parts to copy, the dataset card). The bytes are tried as the manifest
/// (with the fixture's report) and as the report (with the fixture's manifest) of the
/// small committed output in fuzz/fixtures/export. A committed output may be
/// downloaded, hand-edited or written by another version.
pub fn manifest(data: &[u8]) {
    static FIXED: OnceLock<(Vec<u8>, Vec<u8>)> = OnceLock::new();
    let (manifest, report) = FIXED.get_or_init(|| {
        (
            std::fs::read(format!("{FIXTURE}/manifest.json")).expect("fixture manifest"),
            std::fs::read(format!("{FIXTURE}/report.json")).expect("fixture report"),
        )
    });
    export_with(data, report);
    export_with(manifest, data);
}

/// JSON Lines pair rows: the bytes as a `.jsonl` input read through
/// `synpref_engine::input::plan_input` / `ShardReader` (the survey and the full read),
/// `synpref_engine::schema::infer_output_schema` and `synpref_jobs::read::read_valid_pairs`
/// (validation, extras encoding and decoding). A pairs file is the user's own data,
/// often scraped or converted: every byte of it is untrusted.
///
/// The file is read twice: whole, and cut into about five byte ranges whose size
/// depends on the input's length, so that cuts fall anywhere (as a large file is cut
/// between workers); where both succeed they must read the same rows.
pub fn pairs_jsonl(data: &[u8]) {
    let url = write("pairs.jsonl", data);
    let whole = read_pairs(&url, None);
    let n = data.len() as u64;
    let cut = read_pairs(&url, Some((n / 5).max(1) + n % 3));
    if let (Some(a), Some(b)) = (whole, cut) {
        assert_eq!(a, b, "reading in byte ranges changes what is read");
    }
}

/// Parquet pair rows: the bytes as a `.parquet` input read through
/// `synpref_engine::input::plan_input` (footer and column checks), `ShardReader` (each
/// row group, survey-projected and whole), `synpref_engine::schema::infer_output_schema`
/// and `synpref_jobs::read::read_valid_pairs`. Parquet files come from anywhere
/// (Hugging Face datasets, other tools' exports): a corrupt footer, page or column of
/// an unexpected type must be an error naming the file, never a panic.
pub fn pairs_parquet(data: &[u8]) {
    let url = write("pairs.parquet", data);
    let _ = read_pairs(&url, None);
}

/// Saved state read back after a restart, from the output prefix (object storage that
/// may hold torn, truncated or other versions' files): the first byte chooses the
/// reader, the rest is the file.
///
/// - 0: curate's `checkpoint.json` — `synpref_jobs::curate::checkpoint::load_checkpoint`
/// - 1: curate's survey indexes `survey-wNNNNN.bin` (bincode) — `checkpoint::load_survey`
/// - 2: curate's slice marker `slice-wNNNNN-sNNNNNN.json` — `checkpoint::committed_slices`
///   and `checkpoint::load_marker`
/// - 3: serve's `state.json` — `synpref_jobs::serve::state::PoolState::load_meta` (the
///   text `@SPEC@` is replaced by the default settings' fingerprint, which a saved state
///   must carry to be used) and then `PoolState::load_all_parts`
/// - 4: one of serve's saved parts `pairs-EEEEEEEEEE-wNNNNN.bin` —
///   `PoolState::load_all_parts` and `SavedScorer::pair`
///
/// (Label-log segments are fuzzed by `label_lines`, score-cache chunks by `score_cache`.)
pub fn saved_state(data: &[u8]) {
    let Some((&mode, file)) = data.split_first() else {
        return;
    };
    let dir = fresh_dir("state");
    let resume = dir.join("_staging").join("resume");
    let loc = resolve(dir.to_str().expect("UTF-8")).expect("a local path");
    match mode % 5 {
        0 => {
            write_at(&resume.join("checkpoint.json"), file);
            let _ = load_checkpoint(&loc, "aad80913ebd7699c");
        }
        1 => {
            write_at(&resume.join("survey-w00000.bin"), file);
            let _ = load_survey(&loc, 0);
        }
        2 => {
            write_at(&resume.join("slice-w00000-s000000.json"), file);
            let _ = committed_slices(&loc, 0);
            let _ = load_marker(&loc, 0, 0);
        }
        3 => {
            let spec = CurateSpec::default();
            let text = String::from_utf8_lossy(file).replace("@SPEC@", &spec_fingerprint(&spec));
            write_at(&dir.join("state.json"), text.as_bytes());
            if let Ok(Some(meta)) = PoolState::load_meta(&loc, &spec) {
                let _ = PoolState::load_all_parts(&loc, &meta);
            }
        }
        _ => {
            write_at(&dir.join("pairs-0000000001-w00000.bin"), file);
            let meta = SavedStateMeta {
                epoch: 1,
                workers: 1,
                pairs: 0,
                margin_error: 0.0,
                examples: 0,
                spec: String::new(),
                best_fingerprint: "best".into(),
                gold_fingerprint: "gold".into(),
                trainer: None,
            };
            if let Ok(saved) = PoolState::load_all_parts(&loc, &meta) {
                let _ = SavedScorer::pair(&saved, &meta);
            }
        }
    }
}

/// Score-cache chunks (saved state read back): `synpref_engine::score_cache::ScoreCache::open`
/// on a cache directory holding the bytes as one `chunk-*.parquet`. Chunks live in
/// object storage shared between runs and may be torn, truncated or written by another
/// version; an unreadable chunk must be skipped with a warning (a cache miss), never
/// crash the run.
pub fn score_cache(data: &[u8]) {
    let dir = scratch().join("score-cache");
    write_at(&dir.join("fp").join("chunk-0.parquet"), data);
    let url = dir.to_str().expect("UTF-8");
    // Width 2 matches the seeds (best and gold margins); 1 exercises the size check.
    for width in [2, 1] {
        let cache = ScoreCache::open(url, "fp", width).expect("unreadable chunks are skipped");
        let _ = cache.get_many(&[0, 1, u128::MAX]);
    }
}
