//! serve through the job seam (`crate::job`): a long-running job. The binary supplies
//! the HTTP server (`StartApi`, axum lives in the binary crate) and the timely workers
//! (`Host`); serve runs until the process is stopped. `label add` is a serial job.

use std::sync::Arc;

use synpref_engine::Result;

use super::{add_label_file, run_serve, Api, ServeRuntime, ServeSpec};
use crate::job::{Host, Job, Role, RunSettings, SerialJob};

/// Starts serve's HTTP API on an address for `Api`; returns the bound address.
pub type StartApi = fn(&str, Api) -> Result<std::net::SocketAddr>;

/// `synpref serve`: the spec, the API's bearer token (never part of the spec, which is
/// written to files), and the HTTP server the binary starts.
pub struct Serve {
    pub spec: ServeSpec,
    pub token: String,
    pub start_api: StartApi,
}

impl Job for Serve {
    const NAME: &'static str = "serve";
    type Plan = Serve;
    type Report = ();

    fn run_settings(&self) -> RunSettings {
        self.spec.curate.machine.run
    }

    fn validate(&self) -> Result<()> {
        self.spec.validate()
    }

    fn prepare(self, _role: &Role) -> Result<Serve> {
        Ok(self)
    }

    fn execute(plan: Arc<Serve>, role: &Role, host: &dyn Host) -> Result<Option<()>> {
        let start_workers = |workers: usize, f| host.start_workers(workers, f);
        run_serve(
            plan.spec.clone(),
            plan.token.clone(),
            ServeRuntime {
                start_api: &plan.start_api,
                start_workers: &start_workers,
                process: role.process,
                processes: role.processes,
            },
        )?;
        Ok(None)
    }

    fn summary(_plan: &Serve, _report: &()) -> String {
        String::new()
    }
}

/// `synpref label add`: validate a gold-label file and add it under the prefix a serve
/// polls.
pub struct AddLabels {
    /// The prefix `synpref serve --labels` polls.
    pub labels: String,
    /// A Parquet or JSONL gold-label file.
    pub file: String,
    /// The pool to check the labels' pair ids against first (`None`: no check).
    pub pairs: Option<String>,
}

/// What `label add` did: the labels added and the file's URL under the prefix.
pub struct AddedLabels {
    pub labels: usize,
    pub url: String,
}

impl SerialJob for AddLabels {
    const NAME: &'static str = "label add";
    type Report = AddedLabels;

    fn run(&self) -> Result<AddedLabels> {
        if let Some(pairs) = &self.pairs {
            super::check_labels_match(&self.file, pairs)?;
        }
        let (labels, url) = add_label_file(&self.labels, &self.file)?;
        Ok(AddedLabels { labels, url })
    }

    fn summarise(&self, r: &AddedLabels) -> String {
        format!("added {} labels as {}\n", r.labels, r.url)
    }
}
