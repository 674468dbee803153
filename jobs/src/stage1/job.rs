//! Stage 1's commands through the job seam (`crate::job`): `stage1` (a dataflow job on
//! every worker of the run), and the serial `annotate`, `tasks config`, `tasks export`
//! and `tasks import` (which read and write through `engine::store`: a local path or an
//! object-store URL).

use std::path::Path;
use std::sync::Arc;

use synpref_engine::store::{check_outputs_apart, resolve};
use synpref_engine::{Error, Result};

use super::attributes::{run_annotate, AnnotateReport, AnnotateSpec};
use super::tasks;
use super::{prepare, run_worker, summary, Stage1Plan, Stage1Report, Stage1Spec};
use crate::job::{on_workers, Host, Job, Role, RunSettings, SerialJob};

impl Job for Stage1Spec {
    const NAME: &'static str = "stage1";
    type Plan = Stage1Plan;
    type Report = Stage1Report;

    fn run_settings(&self) -> RunSettings {
        self.run
    }

    fn validate(&self) -> Result<()> {
        self.run.validate()?;
        require_local("--out", Some(&self.out))?;
        require_local("--cache", self.cache.as_deref())?;
        let (out, cache) = (
            self.out.display().to_string(),
            local_text(self.cache.as_deref()),
        );
        let mut inputs = vec![
            ("--pool", self.pool.as_str()),
            ("--gold", self.gold.as_str()),
            ("--silver", self.silver.as_str()),
        ];
        inputs.extend(self.truth.as_deref().map(|t| ("--truth", t)));
        check_outputs_apart(&outputs(&out, cache.as_deref()), &inputs)?;
        if self.train.epochs == 0 {
            return Err(Error::setting("--epochs", "must be at least 1"));
        }
        if self.k_max == 0 {
            return Err(Error::setting("--k-max", "must be at least 1"));
        }
        if !(0.0..=2.0).contains(&self.judges.temperature) {
            return Err(Error::setting("--judge-temperature", "must lie in [0, 2]"));
        }
        self.index.validate()
    }

    fn prepare(self, role: &Role) -> Result<Stage1Plan> {
        prepare(self, role.leader())
    }

    fn execute(
        plan: Arc<Stage1Plan>,
        role: &Role,
        host: &dyn Host,
    ) -> Result<Option<Stage1Report>> {
        on_workers(Self::NAME, host, role, plan, run_worker)
    }

    fn summary(_plan: &Stage1Plan, report: &Stage1Report) -> String {
        summary(report)
    }
}

/// Stage 1 and annotate keep their working directory (`--out`: the iterations' sets,
/// the saved best RM, Label Studio task files a person opens) and their LLM cache
/// (`--cache`, appended line by line) on a local disk: a setting error for a URL.
fn require_local(flag: &str, dir: Option<&Path>) -> Result<()> {
    let Some(value) = dir.map(|d| d.display().to_string()) else {
        return Ok(());
    };
    if value.contains("://") {
        return Err(Error::setting(
            flag,
            format!("`{value}`: Stage 1 writes to a local directory"),
        ));
    }
    Ok(())
}

/// A local path as the text the output guard compares.
fn local_text(path: Option<&Path>) -> Option<String> {
    path.map(|p| p.display().to_string())
}

/// `--out` and, when given, `--cache`: what Stage 1 and annotate write.
fn outputs<'a>(out: &'a str, cache: Option<&'a str>) -> Vec<(&'static str, &'a str)> {
    let mut outputs = vec![("--out", out)];
    outputs.extend(cache.map(|c| ("--cache", c)));
    outputs
}

impl SerialJob for AnnotateSpec {
    const NAME: &'static str = "annotate";
    type Report = AnnotateReport;

    fn progress(&self) -> bool {
        self.progress
    }

    fn check(&self) -> Result<()> {
        require_local("--out", Some(&self.out))?;
        require_local("--cache", self.cache.as_deref())?;
        let (out, cache) = (
            self.out.display().to_string(),
            local_text(self.cache.as_deref()),
        );
        check_outputs_apart(
            &outputs(&out, cache.as_deref()),
            &[("--pairs", self.pairs.as_str())],
        )?;
        self.llm.validate()
    }

    fn run(&self) -> Result<AnnotateReport> {
        run_annotate(self)
    }

    fn summarise(&self, r: &AnnotateReport) -> String {
        format!(
            "annotated {} pairs ({} failed validation, {} already annotated; {} of {} input rows invalid) into {}; LLM: {} requests ({} from the cache), {} retries, {} prompt + {} completion tokens, ${:.4}\n",
            r.annotated,
            r.failed,
            r.already_annotated,
            r.invalid_rows,
            r.input_rows,
            self.out.join("pairs.jsonl").display(),
            r.llm.requests,
            r.llm.cached,
            r.llm.retries,
            r.llm.prompt_tokens,
            r.llm.completion_tokens,
            r.llm.cost_usd
        )
    }
}

/// `synpref tasks config`: Label Studio's labelling config for synpref's tasks.
pub struct TasksConfig;

impl SerialJob for TasksConfig {
    const NAME: &'static str = "tasks config";
    type Report = ();

    fn run(&self) -> Result<()> {
        Ok(())
    }

    fn summarise(&self, _: &()) -> String {
        tasks::LABEL_STUDIO_CONFIG.to_string()
    }
}

/// Where `tasks export` writes pairs for annotators.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TaskFormat {
    LabelStudio,
    Argilla,
}

impl TaskFormat {
    /// `--format`'s value.
    pub fn parse(value: &str) -> Result<TaskFormat> {
        match value {
            "label-studio" => Ok(TaskFormat::LabelStudio),
            "argilla" => Ok(TaskFormat::Argilla),
            other => Err(Error::setting(
                "--format",
                format!("`{other}` is not label-studio or argilla"),
            )),
        }
    }
}

/// `synpref tasks export`: pairs as Label Studio tasks or an Argilla dataset.
pub struct TasksExport {
    pub pairs: String,
    pub format: TaskFormat,
    /// The JSON file to write (local).
    pub out: String,
    /// Seed of the Response A/B order.
    pub seed: u64,
}

/// What `tasks export` wrote.
pub struct ExportedTasks {
    pub tasks: usize,
    pub input_rows: u64,
    pub invalid_rows: u64,
}

impl SerialJob for TasksExport {
    const NAME: &'static str = "tasks export";
    type Report = ExportedTasks;

    fn check(&self) -> Result<()> {
        check_outputs_apart(&[("--out", &self.out)], &[("--pairs", &self.pairs)])
    }

    fn run(&self) -> Result<ExportedTasks> {
        let set = crate::read::load_eval_set(&self.pairs, 8192)?;
        let refs: Vec<_> = set.pairs.iter().collect();
        let suggestions = vec![tasks::Suggestion::default(); refs.len()];
        let to = resolve(&self.out)?;
        match self.format {
            TaskFormat::LabelStudio => {
                tasks::write_label_studio(&to, &refs, &suggestions, self.seed)?
            }
            TaskFormat::Argilla => tasks::write_argilla(&to, &refs, &suggestions, self.seed)?,
        }
        Ok(ExportedTasks {
            tasks: refs.len(),
            input_rows: set.input_rows,
            invalid_rows: set.invalid_rows,
        })
    }

    fn summarise(&self, r: &ExportedTasks) -> String {
        format!(
            "wrote {} tasks ({} input rows, {} invalid) to {}\n",
            r.tasks, r.input_rows, r.invalid_rows, self.out
        )
    }
}

/// `synpref tasks import`: Label Studio's JSON export of synpref tasks as gold labels.
pub struct TasksImport {
    /// Label Studio's JSON export.
    pub label_studio: String,
    /// The gold-label file to write (JSONL: pair_id, verdict, annotator, labeled_at).
    pub out: String,
}

impl SerialJob for TasksImport {
    const NAME: &'static str = "tasks import";
    type Report = tasks::Imported;

    fn check(&self) -> Result<()> {
        check_outputs_apart(
            &[("--out", &self.out)],
            &[("--label-studio", &self.label_studio)],
        )
    }

    fn run(&self) -> Result<tasks::Imported> {
        let imported = tasks::import_label_studio(&resolve(&self.label_studio)?)?;
        let mut body = Vec::new();
        for l in &imported.labels {
            serde_json::to_writer(&mut body, &synpref_engine::side::label_to_json(l))
                .map_err(|e| Error::other(self.out.clone(), e))?;
            body.push(b'\n');
        }
        resolve(&self.out)?.put(body)?;
        Ok(imported)
    }

    fn summarise(&self, imported: &tasks::Imported) -> String {
        format!(
            "imported {} gold labels from {} tasks ({} not annotated, {} annotations cancelled or empty) into {}\n",
            imported.labels.len(),
            imported.tasks,
            imported.unannotated,
            imported.cancelled,
            self.out
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stage1::Stage1Spec;

    #[test]
    fn stage1_refuses_an_object_store_out_or_cache_in_its_validate_naming_the_flag() {
        let spec = |out: &str| Stage1Spec::new("p".into(), "g".into(), "s".into(), out.into());
        assert!(Job::validate(&spec("/tmp/stage1")).is_ok());
        let err = Job::validate(&spec("s3://bucket/stage1")).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("--out"), "{err}");
        let mut cached = spec("/tmp/stage1");
        cached.cache = Some("gs://bucket/cache".into());
        let err = Job::validate(&cached).unwrap_err();
        assert!(err.to_string().contains("--cache"), "{err}");
    }
}
