//! `synpref bench import NAME SRC OUT`: a benchmark's released files converted into the
//! evaluation layout (`BenchRow`, JSON Lines). Each benchmark's released row is a typed
//! struct of its own fields (`layouts`); a row that cannot be a comparison (a PPE tie,
//! an RM-Bench row without three styles) is skipped with its file, row and reason in the
//! report, never silently. OUT is written in one put: a reader sees all of it or none.

use std::path::Path;

use serde::{Deserialize, Serialize};
use synpref_engine::store::resolve;
use synpref_engine::{Error, Result};

use super::layouts::{convert_file, Skipped};
use super::{BenchRow, Benchmark};

/// The plain-data spec of an import.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ImportSpec {
    pub benchmark: Benchmark,
    /// A released file, or a local directory searched recursively for them.
    pub src: String,
    /// The layout file written (.jsonl).
    pub out: String,
}

/// What an import read and wrote.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ImportReport {
    pub benchmark: Benchmark,
    pub files: Vec<String>,
    /// Released rows read, over every file.
    pub rows_read: u64,
    /// Layout rows written (comparisons).
    pub comparisons: u64,
    /// Distinct groups (prompts of best-of-N sets and RM-Bench matrices; pairs
    /// elsewhere).
    pub groups: u64,
    /// Comparisons per subset.
    pub subsets: std::collections::BTreeMap<String, u64>,
    pub skipped: Vec<Skipped>,
    pub out: String,
}

/// The released files under `src`: itself when a file (or a URL), else every
/// .parquet, .jsonl and .json file below it, in path order.
pub(crate) fn source_files(src: &str, setting: &str) -> Result<Vec<String>> {
    let path = Path::new(src);
    if !path.is_dir() {
        if src.contains("://") || path.is_file() {
            return Ok(vec![src.to_string()]);
        }
        return Err(Error::setting(
            setting,
            format!("`{src}` is neither a file nor a directory"),
        ));
    }
    fn walk(dir: &Path, out: &mut Vec<String>) -> std::io::Result<()> {
        for entry in std::fs::read_dir(dir)? {
            let p = entry?.path();
            if p.is_dir() {
                walk(&p, out)?;
            } else if p
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| ["parquet", "jsonl", "json"].contains(&e))
            {
                out.push(p.to_string_lossy().into_owned());
            }
        }
        Ok(())
    }
    let mut files = Vec::new();
    walk(path, &mut files).map_err(|e| Error::setting(setting, format!("{src}: {e}")))?;
    files.sort();
    if files.is_empty() {
        return Err(Error::setting(
            setting,
            format!("{src} holds no .parquet, .jsonl or .json file"),
        ));
    }
    Ok(files)
}

/// Runs an import.
pub fn run_import(spec: &ImportSpec) -> Result<ImportReport> {
    let files = source_files(&spec.src, "SRC")?;
    let mut rows: Vec<BenchRow> = Vec::new();
    let mut skipped = Vec::new();
    let mut rows_read = 0;
    for file in &files {
        let (read, converted, skips) = convert_file(spec.benchmark, file, &resolve(file)?)?;
        rows_read += read;
        rows.extend(converted);
        skipped.extend(skips);
    }
    if rows.is_empty() {
        return Err(Error::bad_file(
            &spec.src,
            format!(
                "no {} comparison in it ({} rows skipped)",
                spec.benchmark,
                skipped.len()
            ),
        ));
    }
    super::check_unique_ids(&spec.src, &rows)?;
    let groups: std::collections::HashSet<&str> = rows.iter().map(|r| r.group.as_str()).collect();
    let mut subsets = std::collections::BTreeMap::new();
    for r in &rows {
        *subsets.entry(r.subset.clone()).or_insert(0u64) += 1;
    }
    let report = ImportReport {
        benchmark: spec.benchmark,
        files,
        rows_read,
        comparisons: rows.len() as u64,
        groups: groups.len() as u64,
        subsets,
        skipped,
        out: spec.out.clone(),
    };
    synpref_engine::output::write_json_lines(&resolve(&spec.out)?, &rows)?;
    Ok(report)
}

impl crate::job::SerialJob for ImportSpec {
    const NAME: &'static str = "bench import";
    type Report = ImportReport;

    fn run(&self) -> Result<ImportReport> {
        run_import(self)
    }

    fn summarise(&self, r: &ImportReport) -> String {
        let mut s = format!(
            "imported {}: {} released rows from {} file(s) -> {} comparisons in {} groups, {} rows skipped; written to {}\n",
            r.benchmark,
            r.rows_read,
            r.files.len(),
            r.comparisons,
            r.groups,
            r.skipped.len(),
            r.out
        );
        for (subset, n) in &r.subsets {
            s.push_str(&format!("  {subset:<40} {n:>8}\n"));
        }
        for k in r.skipped.iter().take(10) {
            s.push_str(&format!(
                "  skipped {} row {}: {}\n",
                k.file, k.row, k.reason
            ));
        }
        if r.skipped.len() > 10 {
            s.push_str(&format!(
                "  ... and {} more skipped rows\n",
                r.skipped.len() - 10
            ));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RM-Bench's per-domain files reuse ids: a directory of them imports, each
    /// prompt its own group, and a layout concatenated from two imports of one file
    /// is refused by eval's reader, naming the id.
    #[test]
    fn rm_bench_per_domain_files_with_shared_ids_import_together() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("data");
        std::fs::create_dir(&src).unwrap();
        let row = |domain: &str| {
            serde_json::json!([{
                "id": 8,
                "prompt": format!("a {domain} question"),
                "chosen": ["c1", "c2", "c3"],
                "rejected": ["r1", "r2", "r3"],
            }])
            .to_string()
        };
        for domain in ["chat", "code"] {
            std::fs::write(src.join(format!("{domain}_filtered.json")), row(domain)).unwrap();
        }
        let out = dir.path().join("rm-bench.jsonl");
        let report = run_import(&ImportSpec {
            benchmark: Benchmark::RmBench,
            src: src.to_string_lossy().into_owned(),
            out: out.to_string_lossy().into_owned(),
        })
        .unwrap();
        assert_eq!((report.comparisons, report.groups), (18, 2));
        let layout = out.to_string_lossy().into_owned();
        assert_eq!(
            super::super::read_layout(&layout).unwrap().unwrap().len(),
            18
        );
        let text = std::fs::read_to_string(&out).unwrap();
        std::fs::write(&out, format!("{text}{text}")).unwrap();
        let err = super::super::read_layout(&layout).unwrap_err().to_string();
        assert!(
            err.contains("comparisons 1 and 19 have the same id `chat/8/0,0`"),
            "{err}"
        );
    }
}
