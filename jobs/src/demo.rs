//! `demo`: the main job end to end on an embedded default: generate a SynPref-like pool
//! with known ground truth (`gen`), curate it (`curate`) with the generated gold labels,
//! judge votes and benchmark prompts, and summarise what curation did.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use synpref_engine::Result;

use crate::curate::{summary, CurateReport, CurateSpec, MachineSettings};
use crate::gen::{run_gen, GenSpec};
use crate::job::{run_nested, Host, Job, Role, RunSettings};

/// The embedded default of `synpref demo`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DemoSpec {
    /// Output directory: data/ holds the generated input, curated/ the curate output.
    pub out: String,
    /// Pool size: 50K pairs run in a few seconds on one core and are enough for the
    /// built-in models to separate label noise from signal.
    pub pairs: u64,
    pub seed: u64,
    /// Timely worker threads in this process and progress bars (the shared block).
    #[serde(flatten)]
    pub run: RunSettings,
}

impl DemoSpec {
    pub fn new(out: String, workers: usize) -> Self {
        DemoSpec {
            out,
            pairs: 50_000,
            seed: 7,
            run: RunSettings {
                workers,
                progress: true,
            },
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
            truth: Some(join(&data, "truth.parquet")),
            judges: Some(join(&data, "judge_votes.parquet")),
            decontaminate: vec![join(&data, "benchmark_prompts.jsonl")],
            machine: MachineSettings {
                run: self.run,
                ..MachineSettings::default()
            },
            ..CurateSpec::default()
        }
    }
}

fn join(dir: &str, name: &str) -> String {
    format!("{}/{}", dir.trim_end_matches('/'), name)
}

/// What a demo did: the generated pool and the curate report.
pub struct DemoReport {
    pub curate: CurateReport,
}

impl Job for DemoSpec {
    const NAME: &'static str = "demo";
    type Plan = DemoSpec;
    type Report = DemoReport;

    fn run_settings(&self) -> RunSettings {
        self.run
    }

    fn validate(&self) -> Result<()> {
        self.gen_spec().validate()?;
        self.curate_spec().validate()
    }

    fn prepare(self, _role: &Role) -> Result<DemoSpec> {
        Ok(self)
    }

    fn execute(demo: Arc<DemoSpec>, role: &Role, host: &dyn Host) -> Result<Option<DemoReport>> {
        eprintln!(
            "synpref demo: generating {} pairs under {}/data",
            demo.pairs, demo.out
        );
        let g = run_gen(&demo.gen_spec())?;
        eprintln!(
            "synpref demo: {} pairs, {} gold labels, {:.1}% of pool labels wrong; curating with {} worker(s)",
            g.pairs,
            g.gold_labels,
            100.0 * g.label_noise,
            demo.run.workers
        );
        Ok(run_nested(demo.curate_spec(), role, host)?.map(|(_, curate)| DemoReport { curate }))
    }

    fn summary(demo: &DemoSpec, report: &DemoReport) -> String {
        summary(&report.curate, &demo.curate_spec().out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spec_embedding_the_run_settings_keeps_the_keys_workers_and_progress() {
        let spec = DemoSpec::new("out".into(), 3);
        let json = serde_json::to_value(&spec).unwrap();
        assert_eq!(json["workers"], 3);
        assert_eq!(json["progress"], true);
        assert!(json.get("run").is_none(), "{json}");
        let back: DemoSpec = serde_json::from_value(json).unwrap();
        assert_eq!(back, spec);
    }
}
