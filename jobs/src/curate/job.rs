//! curate through the job seam (`crate::job`): the plan is prepared once per process
//! (resumable: the leader keeps an interrupted run's committed slices), the dataflow
//! runs on every worker, worker 0 returns the report.

use std::sync::Arc;

use synpref_engine::Result;

use super::{
    explain, prepare, prepare_resumable, run_worker, summary, CuratePlan, CurateReport, CurateSpec,
};
use crate::job::{on_workers, Host, Job, Role, RunSettings};

impl Job for CurateSpec {
    const NAME: &'static str = "curate";
    type Plan = CuratePlan;
    type Report = CurateReport;

    fn run_settings(&self) -> RunSettings {
        self.machine.run
    }

    fn validate(&self) -> Result<()> {
        CurateSpec::validate(self)
    }

    fn prepare(self, role: &Role) -> Result<CuratePlan> {
        prepare_resumable(self, role.leader(), role.total_workers())
    }

    fn execute(
        plan: Arc<CuratePlan>,
        role: &Role,
        host: &dyn Host,
    ) -> Result<Option<CurateReport>> {
        on_workers(Self::NAME, host, role, plan, run_worker)
    }

    fn summary(plan: &CuratePlan, report: &CurateReport) -> String {
        summary(report, &plan.spec.out)
    }
}

/// `synpref explain curate`: the dataflow graphs a curate run with this spec builds,
/// on one worker with empty inputs; nothing is read beyond the plan, nothing is trained
/// or written.
pub struct ExplainCurate(pub CurateSpec);

impl Job for ExplainCurate {
    const NAME: &'static str = "explain";
    type Plan = CuratePlan;
    type Report = String;

    fn run_settings(&self) -> RunSettings {
        RunSettings::serial(false)
    }

    fn validate(&self) -> Result<()> {
        self.0.validate()
    }

    fn prepare(self, _role: &Role) -> Result<CuratePlan> {
        prepare(self.0, false)
    }

    fn execute(plan: Arc<CuratePlan>, role: &Role, host: &dyn Host) -> Result<Option<String>> {
        on_workers(Self::NAME, host, role, plan, |worker, plan| {
            Ok(Some(explain::explain_worker(worker, plan)))
        })
    }

    fn summary(_plan: &CuratePlan, graphs: &String) -> String {
        graphs.clone()
    }
}
