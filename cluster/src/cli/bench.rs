//! `synpref bench`: the field's seven reward-model benchmarks (issue 27).

use clap::Subcommand;
use synpref_engine::Error;
use synpref_jobs::bench::import::ImportSpec;
use synpref_jobs::bench::Benchmark;

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Convert a benchmark's released files (Parquet, JSON Lines or JSON arrays, as
    /// distributed) into synpref's evaluation layout: JSON Lines, one row per scored
    /// comparison with `benchmark`, `subset`, `group` and `cell`, which `synpref eval
    /// --eval OUT` scores by the benchmark's official rules.
    Import {
        /// rewardbench, rewardbench2, ppe-preference, ppe-correctness, rmb, rm-bench or
        /// judgebench.
        name: String,
        /// A released file, or a directory of them (searched recursively for .parquet,
        /// .jsonl and .json files, e.g. RMB's Pairwise_set/ and BoN_set/ trees).
        src: String,
        /// The layout file to write (.jsonl).
        out: String,
    },
}

impl BenchCommand {
    pub fn into_spec(self) -> Result<ImportSpec, Error> {
        match self {
            BenchCommand::Import { name, src, out } => {
                let benchmark = Benchmark::parse(&name).ok_or_else(|| {
                    let names: Vec<&str> = Benchmark::ALL.iter().map(|b| b.name()).collect();
                    Error::setting(
                        "NAME",
                        format!("`{name}` is not one of {}", names.join(", ")),
                    )
                })?;
                if !out.ends_with(".jsonl") {
                    return Err(Error::setting(
                        "OUT",
                        format!("`{out}`: the layout is JSON Lines; name it *.jsonl"),
                    ));
                }
                Ok(ImportSpec {
                    benchmark,
                    src,
                    out,
                })
            }
        }
    }
}
