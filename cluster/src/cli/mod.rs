//! The command line: each subcommand's flags (one module per job family) are turned
//! into a job spec and handed to the runner; no job's internals are named here.

mod bench;
mod common;
mod data;
mod fractions;
mod launch;
mod score;
mod stage1;
mod stage2;

use clap::{Parser, Subcommand};
use synpref_engine::cluster::ClusterSpec;
use synpref_engine::Error;
use synpref_jobs::curate::job::ExplainCurate;
use synpref_jobs::serve::job::Serve;

use crate::runner;
use data::{DemoArgs, ExportArgs, GenArgs, LabelCommand};
use fractions::FractionsArgs;
use launch::LaunchArgs;
use score::{EvalArgs, ScoreArgs};
use stage2::{CurateArgs, ExplainJob, ServeArgs};

#[derive(Parser)]
#[command(
    name = "synpref",
    version,
    about = "Curate preference data for reward-model training (Skywork-Reward-V2 style), on timely dataflow"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run the main job end to end on an embedded synthetic dataset (gen + curate).
    Demo(DemoArgs),
    /// Generate SynPref-like pairs with known ground truth, gold verdicts and an eval set.
    Gen(GenArgs),
    /// Batch Stage 2: keep the pairs the gold RM, the best RM (or LLM judges) and human
    /// verdicts agree with.
    Curate(CurateArgs),
    /// Score pairs with one reward model: the input columns plus r_chosen, r_rejected and
    /// p = σ(r_chosen − r_rejected), and the accuracy against the input's labels.
    Score(ScoreArgs),
    /// A reward model's accuracy on preference sets in RewardBench's layouts (explicit
    /// prompt, or whole conversations; optional `subset` and `id`), per subset and
    /// overall, with 95% intervals; and on benchmarks `bench import` wrote, their
    /// official scores (one column per benchmark and their mean); OUT/report.json and a
    /// printed table.
    Eval(EvalArgs),
    /// The field's seven reward-model benchmarks: `bench import NAME SRC OUT` converts
    /// a benchmark's released files into the layout `eval` scores by its official rules.
    Bench {
        #[command(subcommand)]
        command: bench::BenchCommand,
    },
    /// Scaling experiments across data fractions: nested subsets of the curated set
    /// (and raw subsets of the same size) by a seeded hash of pair_id, a reward model
    /// trained on each and evaluated; results.parquet/csv, accuracy.png/svg and
    /// report.json under --out. Models are cached by subset content: a rerun trains
    /// only the subsets that changed.
    Fractions(Box<FractionsArgs>),
    /// Stage 1's loop: train the best RM on the silver set (checkpoint chosen by gold
    /// accuracy), retrieve the unverified pairs nearest the gold pairs it gets wrong
    /// (k = 8 if p ≤ 0.5, else ⌈8(1 − p)⌉), label them with LLM judges (→ silver) or
    /// export them for humans (→ gold), repeat. Writes the next silver and gold sets and
    /// judge votes in curate's --judges format.
    Stage1(Box<stage1::Stage1Args>),
    /// Add the five LLM-written preference attributes (task category, objectivity,
    /// controversiality, desired attributes, guideline) to pairs, with an
    /// OpenAI-compatible server.
    Annotate(Box<stage1::AnnotateArgs>),
    /// Annotation tasks for humans: Label Studio / Argilla export, Label Studio import.
    Tasks {
        #[command(subcommand)]
        command: stage1::TasksCommand,
    },
    /// Keep the curated set current as gold labels arrive (HTTP and label files): a
    /// long-running job with a changelog and snapshots.
    Serve(ServeArgs),
    /// Print the dataflow graphs a job builds, by operator names and edges, without
    /// reading any data or training a model.
    Explain {
        #[command(subcommand)]
        job: ExplainJob,
    },
    /// Re-project a committed curate output (or serve snapshot) into another --format
    /// without re-running anything.
    Export(ExportArgs),
    /// Run a multi-process job (curate, serve, fractions, stage1) as cooperating processes and supervise
    /// them: on this host (--local N), on the hosts of a hostfile over ssh, or as this
    /// task of a Slurm step or pod of a Kubernetes Indexed Job (docs/cluster.md).
    Launch(LaunchArgs),
    /// Manage the gold labels a serve polls.
    Label {
        #[command(subcommand)]
        command: LabelCommand,
    },
}

/// Runs a subcommand: its flags become a job, the runner runs it on this process's
/// timely workers (and those of the run's other processes, with `--hostfile` or
/// `--peers`).
pub fn run(command: Command) -> Result<(), Error> {
    // The jobs that run in one process.
    let single = ClusterSpec::default();
    match command {
        Command::Demo(args) => runner::run(args.into_spec(), &single),
        Command::Gen(args) => runner::run(args.into_spec(), &single),
        Command::Curate(args) => {
            let cluster = args.cluster.cluster()?;
            runner::run(args.into_spec()?, &cluster)
        }
        Command::Score(args) => runner::run(args.into_spec()?, &single),
        Command::Eval(args) => runner::run(args.into_spec()?, &single),
        Command::Bench { command } => runner::run(command.into_spec()?, &single),
        Command::Fractions(args) => {
            let cluster = args.cluster.cluster()?;
            runner::run(args.into_job()?, &cluster)
        }
        Command::Stage1(args) => {
            let cluster = args.cluster.cluster()?;
            runner::run(args.into_spec()?, &cluster)
        }
        Command::Annotate(args) => runner::run(args.into_spec()?, &single),
        Command::Tasks { command } => command.run(&single),
        Command::Serve(args) => {
            let token = args.token()?;
            let cluster = args.cluster.cluster()?;
            // Before any thread starts: SIGTERM and SIGINT then reach only a signal
            // thread. Process 0's stops serve cleanly (`http::start`); another
            // process's waits for process 0 to end the job, as it does when a whole
            // job is signalled at once (`http::follow_stop_signals`).
            crate::http::block_stop_signals();
            if cluster.process != 0 {
                crate::http::follow_stop_signals(cluster.process)?;
            }
            let serve = Serve {
                spec: args.into_spec()?,
                token,
                start_api: crate::http::start,
            };
            runner::run(serve, &cluster)
        }
        Command::Explain {
            job: ExplainJob::Curate(args),
        } => runner::run(ExplainCurate(args.into_spec()?), &single),
        Command::Export(args) => runner::run(args.into_spec(), &single),
        Command::Launch(args) => crate::launch::run_launch(&args.into_spec()?),
        Command::Label { command } => runner::run(command.into_job(), &single),
    }
}
