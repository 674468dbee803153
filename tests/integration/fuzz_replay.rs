//! Every fuzz target's seeds (fuzz/seeds/TARGET/) and every input a fuzzing run found a
//! crash with (tests/fuzz_regressions/TARGET/) replayed through the targets' own bodies
//! (`synpref_fuzz::targets`, fuzz/src, included here as a module) on the stable
//! toolchain: the test command's share of the fuzzing of issue 30 item 7. It needs no
//! libFuzzer build (scripts/fuzz does the mutation runs, with its nightly sanitizer
//! build of every dependency), so a reader that panics again on a kept input, or a
//! target that no longer builds against the crates, fails here.

use std::path::{Path, PathBuf};

#[path = "../../fuzz/src/lib.rs"]
#[allow(dead_code)]
mod fuzz_bodies;

/// The files of `dir`, sorted (none when it does not exist).
fn inputs(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

#[test]
fn every_fuzz_seed_and_kept_crasher_is_read_without_a_panic() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut replayed = 0;
    let mut panics = Vec::new();
    for (target, body) in fuzz_bodies::targets::TARGETS {
        let seeds = inputs(&root.join("fuzz/seeds").join(target));
        assert!(!seeds.is_empty(), "fuzz/seeds/{target}/ has no seed");
        let kept = inputs(&root.join("tests/fuzz_regressions").join(target));
        for input in seeds.iter().chain(&kept) {
            let bytes = std::fs::read(input).unwrap();
            let run = std::panic::catch_unwind(|| body(&bytes));
            if run.is_err() {
                panics.push(format!("{target}: {}", input.display()));
            }
            replayed += 1;
        }
    }
    // A directory of kept crashers for a target that no longer exists is a mistake.
    for dir in inputs_dirs(&root.join("tests/fuzz_regressions")) {
        let name = dir.file_name().unwrap().to_str().unwrap().to_string();
        assert!(
            fuzz_bodies::targets::TARGETS
                .iter()
                .any(|(t, _)| *t == name),
            "tests/fuzz_regressions/{name}/ names no fuzz target"
        );
    }
    // The targets' inputs were written under `$TMPDIR/synpref-fuzz-PID`.
    std::fs::remove_dir_all(fuzz_bodies::scratch()).unwrap();
    eprintln!(
        "replayed {replayed} inputs through {} targets",
        fuzz_bodies::targets::TARGETS.len()
    );
    assert!(panics.is_empty(), "panicked on: {panics:#?}");
    assert!(replayed >= 30, "only {replayed} inputs replayed");
}

fn inputs_dirs(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect()
}
