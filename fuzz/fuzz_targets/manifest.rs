//! A committed output's `manifest.json` and `report.json`, read back by
//! `synpref_jobs::export::run_export` (`synpref export --from`): serde of `Manifest` and
//! `CurateReport`, then everything export does with them (which part files to read,
//! the quarantine parts to copy, the dataset card). The bytes are tried as the manifest
//! (with the fixture's report) and as the report (with the fixture's manifest) of the
//! small committed output in fuzz/fixtures/export. A committed output may be
//! downloaded, hand-edited or written by another version.
#![no_main]
use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use synpref_engine::output::{OutputFileFormat, OutputFormat};
use synpref_jobs::export::{run_export, ExportSpec};

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/export");

/// A copy of the fixture in the scratch directory, made once per process.
fn from_dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let to = synpref_fuzz::fresh_dir("export-from");
        for dir in ["curated", "discarded", "quarantine"] {
            for f in std::fs::read_dir(format!("{FIXTURE}/{dir}")).expect("fixture") {
                let f = f.expect("fixture entry").path();
                let bytes = std::fs::read(&f).expect("fixture file");
                synpref_fuzz::write_at(&to.join(dir).join(f.file_name().unwrap()), &bytes);
            }
        }
        to
    })
}

fn export_with(manifest: &[u8], report: &[u8]) {
    let from = from_dir();
    synpref_fuzz::write_at(&from.join("manifest.json"), manifest);
    synpref_fuzz::write_at(&from.join("report.json"), report);
    let out = synpref_fuzz::scratch().join("export-out");
    let spec = ExportSpec {
        from: from.to_str().expect("UTF-8").to_string(),
        out: out.to_str().expect("UTF-8").to_string(),
        format: OutputFormat::Trl,
        output_file_format: Some(OutputFileFormat::Jsonl),
        progress: false,
    };
    let _ = run_export(&spec);
}

fuzz_target!(|data: &[u8]| {
    static FIXED: OnceLock<(Vec<u8>, Vec<u8>)> = OnceLock::new();
    let (manifest, report) = FIXED.get_or_init(|| {
        (
            std::fs::read(format!("{FIXTURE}/manifest.json")).expect("fixture manifest"),
            std::fs::read(format!("{FIXTURE}/report.json")).expect("fixture report"),
        )
    });
    export_with(data, report);
    export_with(manifest, data);
});
