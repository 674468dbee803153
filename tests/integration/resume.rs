//! Resume (issue 13): a curate killed with SIGKILL at any point and started again with
//! the same arguments keeps what was committed (the survey and the models, and every
//! slice all workers finished), reads only the rest, and writes the same bytes as a run
//! that was never interrupted; a changed setting starts afresh.

use super::*;

fn resume_dir(out: &Path) -> PathBuf {
    out.join("_staging").join("resume")
}

/// Slices every worker had committed, in a row from the first, when the run died.
fn committed_by_all(out: &Path, workers: usize) -> u64 {
    (0..workers)
        .map(|w| {
            (0u64..)
                .take_while(|s| {
                    resume_dir(out)
                        .join(format!("slice-w{w:05}-s{s:06}.json"))
                        .exists()
                })
                .count() as u64
        })
        .min()
        .unwrap()
}

fn curate_command(pairs: &Path, gold: &Path, out: &Path, extra: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_synpref"));
    c.args(curate_argv(pairs, gold, out))
        .args(["--workers", "2", "--slice-rows", "2000", "--no-progress"])
        .args(extra)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    c
}

/// Starts curate and kills it (SIGKILL) once `file` exists under its resume state, or
/// after `delay_ms` when `file` is `None`. Whether the run finished first is returned.
fn kill_when(mut c: Command, out: &Path, file: Option<&str>, delay_ms: u64) -> bool {
    let mut child = c.spawn().unwrap();
    let started = std::time::Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            return true;
        }
        let due = match file {
            Some(f) => resume_dir(out).join(f).exists(),
            None => started.elapsed().as_millis() as u64 >= delay_ms,
        };
        if due {
            child.kill().unwrap();
            child.wait().unwrap();
            return false;
        }
        assert!(started.elapsed().as_secs() < 300, "curate ran too long");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

#[test]
fn curate_killed_at_any_point_resumes_reads_only_the_rest_and_writes_the_same_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("g");
    // 20 files of one row group each: 10 shards per worker, 5 slices of 2,000 rows.
    let st = Command::new(env!("CARGO_BIN_EXE_synpref"))
        .args([
            "gen",
            "--pairs",
            "20000",
            "--rows-per-file",
            "1000",
            "--seed",
            "11",
            "--out",
            s(&data),
        ])
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
    let (pairs, gold) = (data.join("pairs"), data.join("gold.parquet"));
    let whole = tmp.path().join("whole");
    assert!(curate_command(&pairs, &gold, &whole, &[])
        .status()
        .unwrap()
        .success());
    let r = assert_accounting(&whole);
    assert_eq!(r["resume"]["survey_resumed"], false);
    assert_eq!(r["resume"]["slices"], 5);
    assert_eq!(r["resume"]["rows_read"], 20_000);
    assert!(
        !whole.join("_staging").exists(),
        "a committed run leaves no resume state"
    );

    let kill_points: [(Option<&str>, u64); 5] = [
        (Some("checkpoint.json"), 0),
        (Some("slice-w00000-s000000.json"), 0),
        (Some("slice-w00001-s000002.json"), 0),
        (Some("slice-w00000-s000003.json"), 0),
        (None, 1_500),
    ];
    let mut killed = 0;
    for (i, (file, delay)) in kill_points.into_iter().enumerate() {
        let out = tmp.path().join(format!("killed-{i}"));
        if kill_when(curate_command(&pairs, &gold, &out, &[]), &out, file, delay) {
            continue; // finished before the kill point: nothing to resume
        }
        killed += 1;
        let checkpointed = resume_dir(&out).join("checkpoint.json").exists();
        let committed = committed_by_all(&out, 2);
        let st = curate_command(&pairs, &gold, &out, &[]).status().unwrap();
        assert!(st.success(), "kill point {i}: the restarted run failed");
        let r = assert_accounting(&out);
        let resume = &r["resume"];
        assert_eq!(
            resume["survey_resumed"], checkpointed,
            "kill point {i}: {resume}"
        );
        assert_eq!(
            resume["survey_rows_read"],
            if checkpointed { 0 } else { 20_000 },
            "{resume}"
        );
        assert_eq!(
            resume["slices_resumed"], committed,
            "kill point {i}: {resume}"
        );
        // Only the rows of uncommitted slices are read again, each once.
        let (resumed, read) = (
            resume["rows_resumed"].as_u64().unwrap(),
            resume["rows_read"].as_u64().unwrap(),
        );
        assert_eq!(resumed + read, 20_000, "kill point {i}: {resume}");
        assert_eq!(resumed, committed * 2 * 2_000, "kill point {i}: {resume}");
        assert_same_part_bytes(&whole, &out);
        let (a, b) = (report(&whole), r);
        for key in [
            "curated_rows",
            "discarded_rows",
            "quarantined_rows",
            "reasons",
            "quality",
        ] {
            assert_eq!(a[key], b[key], "kill point {i}: {key}");
        }
    }

    assert!(
        killed >= 4,
        "only {killed} of the kill points hit a running curate"
    );

    // A changed setting does not reuse the progress of the interrupted run.
    let out = tmp.path().join("changed");
    assert!(!kill_when(
        curate_command(&pairs, &gold, &out, &[]),
        &out,
        Some("slice-w00000-s000001.json"),
        0
    ));
    let st = curate_command(&pairs, &gold, &out, &["--threshold", "0.6"])
        .status()
        .unwrap();
    assert!(st.success());
    let r = assert_accounting(&out);
    assert_eq!(r["resume"]["survey_resumed"], false, "{}", r["resume"]);
    assert_eq!(r["resume"]["slices_resumed"], 0);
    assert_eq!(r["resume"]["rows_read"], 20_000);
}
