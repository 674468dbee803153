//! `demo`: the main job end to end on an embedded default: generate a SynPref-like pool
//! with known ground truth (`gen`), curate it (`curate`) with the generated gold labels,
//! judge votes and benchmark prompts, and summarise what curation did.

use serde::{Deserialize, Serialize};

use crate::curate::CurateSpec;
use crate::gen::GenSpec;

/// The embedded default of `synpref demo`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DemoSpec {
    /// Output directory: data/ holds the generated input, curated/ the curate output.
    pub out: String,
    /// Pool size: 50K pairs run in a few seconds on one core and are enough for the
    /// built-in models to separate label noise from signal.
    pub pairs: u64,
    pub seed: u64,
    pub workers: usize,
    pub progress: bool,
}

impl DemoSpec {
    pub fn new(out: String, workers: usize) -> Self {
        DemoSpec {
            out,
            pairs: 50_000,
            seed: 7,
            workers,
            progress: true,
        }
    }

    pub fn gen_spec(&self) -> GenSpec {
        GenSpec::new(self.pairs, join(&self.out, "data"), self.seed)
    }

    pub fn curate_spec(&self) -> CurateSpec {
        let data = join(&self.out, "data");
        CurateSpec {
            pairs: join(&data, "pairs"),
            gold: join(&data, "gold.parquet"),
            out: join(&self.out, "curated"),
            workers: self.workers,
            truth: Some(join(&data, "truth.parquet")),
            judges: Some(join(&data, "judge_votes.parquet")),
            decontaminate: vec![join(&data, "benchmark_prompts.jsonl")],
            progress: self.progress,
            ..CurateSpec::default()
        }
    }
}

fn join(dir: &str, name: &str) -> String {
    format!("{}/{}", dir.trim_end_matches('/'), name)
}

/// A short human-readable summary of a curate report.
pub fn summary(report: &serde_json::Value, out: &str) -> String {
    let g = |k: &str| report[k].as_u64().unwrap_or(0);
    let f = |k: &str| report[k].as_f64();
    let mut s = String::new();
    s.push_str(&format!(
        "curated {} of {} pairs ({} discarded, {} quarantined) with {} worker(s) in {:.2} s ({:.0} pairs/s)\n",
        g("curated_rows"),
        g("input_rows"),
        g("discarded_rows"),
        g("quarantined_rows"),
        g("workers"),
        f("elapsed_s").unwrap_or(0.0),
        f("pairs_per_s").unwrap_or(0.0),
    ));
    s.push_str("rows per reason:\n");
    if let Some(reasons) = report["reasons"].as_object() {
        for (k, v) in reasons {
            let n = v.as_u64().unwrap_or(0);
            if n > 0 {
                s.push_str(&format!("  {k:<28} {n:>10}\n"));
            }
        }
    }
    if let (Some(a), Some(b)) = (f("truth_agreement_input"), f("truth_agreement_curated")) {
        s.push_str(&format!(
            "labels matching the ground truth: {:.1}% of the input, {:.1}% of the curated set ({:+.1} points)\n",
            100.0 * a,
            100.0 * b,
            100.0 * (b - a)
        ));
    }
    s.push_str(&format!("outputs: {out}/{{curated,discarded,quarantine}}/, {out}/report.json, {out}/manifest.json\n"));
    s
}
