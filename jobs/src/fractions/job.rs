//! fractions through the job seam (`crate::job`). With `--gold` it composes curate: the
//! curate job runs first (its own plan and workers), then the fractions plan is
//! prepared from the committed curate output and run on the workers.

use std::sync::Arc;

use synpref_engine::{Error, Result};

use super::results::{summary, FractionsReport};
use super::{prepare, run_worker, FractionsPlan, FractionsSpec};
use crate::curate::{CurateSpec, MachineSettings};
use crate::job::{on_workers, run_nested, Host, Job, Role, RunSettings};

/// `synpref fractions`: the fractions spec and, with `--gold`, the curate run that
/// makes its curated set first.
pub struct FractionsJob {
    pub curate: Option<CurateSpec>,
    pub fractions: FractionsSpec,
}

/// The curate run of `fractions --gold`: curate's defaults (built-in RMs) with the given
/// gold labels, judge votes and τ, into the fractions spec's `curated` directory.
pub fn curate_first(
    spec: &FractionsSpec,
    gold: String,
    judges: Option<String>,
    threshold: f64,
) -> CurateSpec {
    CurateSpec {
        pairs: spec.pairs.clone(),
        gold,
        out: spec.curated.clone(),
        judges,
        threshold,
        machine: MachineSettings {
            run: spec.run,
            ..MachineSettings::default()
        },
        ..CurateSpec::default()
    }
}

/// What a fractions job prepared: the job itself (the fractions plan reads the curated
/// set, which the curate step writes first).
pub struct FractionsPrepared {
    job: FractionsJob,
    out: String,
}

impl Job for FractionsJob {
    const NAME: &'static str = "fractions";
    type Plan = FractionsPrepared;
    type Report = FractionsReport;

    fn run_settings(&self) -> RunSettings {
        self.fractions.run
    }

    fn validate(&self) -> Result<()> {
        if self.fractions.out.contains("://") {
            return Err(Error::setting(
                "--out",
                format!(
                    "`{}`: fractions writes models and plots to a local directory",
                    self.fractions.out
                ),
            ));
        }
        self.fractions.validate()?;
        // --curated is not among the inputs: by default it lies inside --out
        // (OUT/curate), and its own pool is checked against --pairs by its manifest.
        let f = &self.fractions;
        let cache = f.cache.display().to_string();
        let mut outputs = vec![("--out", f.out.as_str()), ("--cache", cache.as_str())];
        outputs.extend(f.score_cache.as_deref().map(|c| ("--score-cache", c)));
        let mut inputs = vec![("--pairs", f.pairs.as_str())];
        inputs.extend(f.evals.iter().map(|e| ("--eval", e.as_str())));
        synpref_engine::store::check_outputs_apart(&outputs, &inputs)?;
        if let Some(curate) = &self.curate {
            curate.validate()?;
        }
        Ok(())
    }

    fn prepare(self, _role: &Role) -> Result<FractionsPrepared> {
        let out = self.fractions.out.clone();
        Ok(FractionsPrepared { job: self, out })
    }

    fn execute(
        plan: Arc<FractionsPrepared>,
        role: &Role,
        host: &dyn Host,
    ) -> Result<Option<FractionsReport>> {
        if let Some(curate) = &plan.job.curate {
            let out = curate.out.clone();
            if let Some((_, report)) = run_nested(curate.clone(), role, host)? {
                eprintln!(
                    "synpref fractions: curated {} of {} rows into {out}",
                    report.curated_rows, report.input_rows
                );
            }
        }
        let fractions: Arc<FractionsPlan> = Arc::new(prepare(
            plan.job.fractions.clone(),
            role.total_workers(),
            role.local_workers(),
        )?);
        on_workers(Self::NAME, host, role, fractions, run_worker)
    }

    fn summary(plan: &FractionsPrepared, report: &FractionsReport) -> String {
        summary(report, &plan.out)
    }
}
