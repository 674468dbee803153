//! The `synpref` binary: parses flags (`cli`), turns them into a job spec, and runs it
//! on timely workers (`runner`); the HTTP server of serve (`http`) and the process
//! supervisor of `launch` (`launch`) also live here, as processes, runtimes and servers
//! start in the binary crate (DESIGN §2). Exit status (DESIGN §4): 0 success, 2 bad usage or bad
//! input files, 1 other failures.

mod cli;
mod http;
mod launch;
mod runner;

/// mimalloc instead of glibc malloc: the dataflow allocates and frees millions of
/// short strings per second across worker threads, and glibc's per-thread arenas spent
/// a quarter of curate's time in malloc/free and held freed memory (docs/benchmarks.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in mimalloc v2's `mi_option_t` (mimalloc.h; libmimalloc-sys
/// exports no constant for it).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Never hand freed memory back to the OS during a run: Parquet's multi-megabyte
/// buffers are freed and allocated again for every row group, and with mimalloc's
/// default 10 ms purge delay the kernel zeroed fresh pages for each (9% of curate's
/// time). Measured at 1M pairs: 10.8 s → 9.3 s, peak RSS +60 MB (docs/benchmarks.md).
/// `MIMALLOC_PURGE_DELAY` in the environment (mimalloc's own setting, read at its
/// start) overrides this, e.g. to measure what the setting costs a job's memory.
fn tune_allocator() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
        return;
    }
    // SAFETY: sets a global option before any worker thread starts; mimalloc reads it
    // atomically.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
}

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // serve holds its state for days after one curate pass: its freed pages go back
    // to the OS (mimalloc's default purge), or its resident memory would stay at the
    // pass's peak (docs/benchmarks.md, issue 12).
    if std::env::args().nth(1).as_deref() != Some("serve") {
        tune_allocator();
    }
    runner::install_abort_on_panic();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = cli::Cli::parse();
    match cli::run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("synpref: error: {e}");
            ExitCode::from(e.exit_code() as u8)
        }
    }
}
