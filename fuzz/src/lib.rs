//! The bodies of the fuzz targets (`targets`, one function per reader of untrusted
//! bytes; `fuzz_targets/*.rs` only hand libFuzzer's input to them) and their helpers: a
//! scratch directory per process (the readers take URLs, so each input is written to a
//! file there, one fixed path per target so that nothing accumulates), and the
//! pair-reading pipeline `score`, `eval`, `fractions` and `stage1` run on an input.
//!
//! The main test suite replays every seed and every kept crasher through these same
//! functions on the stable toolchain (tests/integration/fuzz_replay.rs includes this
//! file), so a regression is caught by the test command without a libFuzzer build.
//! Only engine, jobs and std are used here, for that reason.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

pub mod targets;

use synpref_engine::extras::ExtrasCodec;
use synpref_engine::input::{plan_input, plan_input_with};
use synpref_jobs::read::{input_schema, read_valid_pairs};

/// Lets a panic inside `synpref_engine::input::catch_parquet_panic` (a reader's call into
/// the parquet crate, whose panic it turns into an error naming the file) unwind to it,
/// as the binary's own abort-on-panic hook does (`input::panic_is_caught`), instead of
/// libfuzzer-sys's hook aborting at once. Any other panic is still a crash.
fn let_caught_panics_unwind() {
    let abort = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !synpref_engine::input::panic_is_caught() {
            abort(info);
        }
    }));
}

/// This process's scratch directory: `$TMPDIR/synpref-fuzz-PID` (`scripts/fuzz` points
/// TMPDIR into fuzz/target and removes it afterwards). The first call (every target
/// makes one before reading) also installs `let_caught_panics_unwind`.
pub fn scratch() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let_caught_panics_unwind();
        let d = std::env::temp_dir().join(format!("synpref-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&d).expect("scratch directory");
        d
    })
}

/// An empty directory `name` under the scratch directory (emptied if it exists).
pub fn fresh_dir(name: &str) -> PathBuf {
    let d = scratch().join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("scratch subdirectory");
    d
}

/// Writes `bytes` to `path` (parents created) and returns it as the string readers take.
pub fn write_at(path: &Path, bytes: &[u8]) -> String {
    if let Some(p) = path.parent() {
        std::fs::create_dir_all(p).expect("scratch parent");
    }
    std::fs::write(path, bytes).expect("scratch file");
    path.to_str().expect("UTF-8 scratch path").to_string()
}

/// Writes `bytes` to the scratch file `name` and returns its path.
pub fn write(name: &str, bytes: &[u8]) -> String {
    write_at(&scratch().join(name), bytes)
}

/// Parquet files start (and end) with `PAR1`; anything else is tried as JSON Lines.
pub fn side_file_name(stem: &str, data: &[u8]) -> String {
    if data.starts_with(b"PAR1") {
        format!("{stem}.parquet")
    } else {
        format!("{stem}.jsonl")
    }
}

/// What reading an input of pairs gave: rows read, valid pairs, invalid rows.
#[derive(Debug, PartialEq, Eq)]
pub struct PairCounts {
    pub rows: u64,
    pub valid: u64,
    pub invalid: u64,
}

/// Plans `url` (JSONL byte ranges of `shard_bytes` when given), infers its output
/// schema from a survey, then reads and validates every row and decodes the extra
/// columns of the valid pairs again, as `eval` does for `subset`: the whole reading
/// path of `synpref_jobs::read`. `None` where a step refuses the input (an error).
pub fn read_pairs(url: &str, shard_bytes: Option<u64>) -> Option<PairCounts> {
    let plan = match shard_bytes {
        Some(n) => plan_input_with(url, n),
        None => plan_input(url),
    }
    .ok()?;
    let (_schema, extras_fields) = input_schema(&plan).ok()?;
    let extras = Arc::new(ExtrasCodec::new(extras_fields).ok()?);
    let (mut valid, mut invalid) = (0u64, 0u64);
    let rows = read_valid_pairs(
        &plan,
        &extras,
        64,
        &mut |_| {
            invalid += 1;
            Ok(())
        },
        &mut |pairs| {
            valid += pairs.len() as u64;
            let columns = extras.decode(pairs.iter().map(|p| p.extras.as_slice()))?;
            for c in &columns {
                assert_eq!(c.len(), pairs.len(), "an extras column per pair");
            }
            Ok(())
        },
    )
    .ok()?;
    Some(PairCounts {
        rows,
        valid,
        invalid,
    })
}
