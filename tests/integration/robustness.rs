//! Crashes and odd input (issue 11): kill -9 at any point leaves nothing a reader could
//! take for output and a re-run gives the uninterrupted run's rows; an output that
//! overlaps an input is refused; conversations with unknown roles or no final
//! assistant turn are quarantined; BOMs, empty files, dictionary-encoded text and
//! unparsable timestamps get a clear answer.

use super::*;

/// What a reader of `out` sees after a crash: outside `_staging/` (which readers skip)
/// no in-progress file, and every part there opens as Parquet.
fn assert_nothing_a_reader_could_mistake(out: &Path) {
    for f in files_under(out) {
        if f.starts_with("_staging/") {
            continue;
        }
        assert!(!f.contains('#'), "in-progress file outside staging: {f}");
        if f.ends_with(".parquet") {
            ParquetRecordBatchReaderBuilder::try_new(File::open(out.join(&f)).unwrap())
                .unwrap_or_else(|e| panic!("{f} is not a whole Parquet file: {e}"));
        }
    }
}

#[test]
fn kill_9_at_random_points_then_a_rerun_leaves_no_stray_files_and_the_uninterrupted_output() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("g");
    gen(&data, 20_000, 11);
    let args = |out: &Path| -> Vec<String> {
        [
            "curate",
            "--pairs",
            s(&data.join("pairs")),
            "--gold",
            s(&data.join("gold.parquet")),
            "--out",
            s(out),
            "--workers",
            "2",
            "--no-progress",
        ]
        .iter()
        .map(|a| a.to_string())
        .collect()
    };
    let reference = tmp.path().join("reference");
    let started = std::time::Instant::now();
    ok(&args(&reference)
        .iter()
        .map(|a| a.as_str())
        .collect::<Vec<_>>());
    let full = started.elapsed();

    let out = tmp.path().join("out");
    // Kill points spread over the whole run (a seeded LCG, so a failure replays).
    let mut state: u64 = 0x5eed;
    let mut killed_mid_run = 0;
    for _ in 0..8 {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        // Within the first 95% of an uninterrupted run's time (the commit is at its
        // end), so that most kills land mid-run even on a busier machine.
        let at = full.mul_f64(0.95 * (state >> 11) as f64 / (1u64 << 53) as f64);
        let mut child = Command::new(env!("CARGO_BIN_EXE_synpref"))
            .args(args(&out))
            .env("RUST_LOG", "off")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(at);
        if child.try_wait().unwrap().is_none() {
            killed_mid_run += 1;
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        assert_nothing_a_reader_could_mistake(&out);
    }
    assert!(
        killed_mid_run >= 4,
        "only {killed_mid_run} kills landed mid-run"
    );

    ok(&args(&out).iter().map(|a| a.as_str()).collect::<Vec<_>>());
    // Exactly the committed files: the manifest's parts, the report, the card, the
    // manifest; no staging, no leftovers of the killed runs.
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(out.join("manifest.json")).unwrap()).unwrap();
    let mut expected: Vec<String> = manifest["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap().to_string())
        .chain(["README.md", "manifest.json", "report.json"].map(String::from))
        .collect();
    expected.sort();
    assert_eq!(files_under(&out), expected);
    assert!(!out.join("_staging").exists());
    for set in ["curated", "discarded", "quarantine"] {
        assert_eq!(
            read_rows(&out.join(set)),
            read_rows(&reference.join(set)),
            "{set} differs from the uninterrupted run"
        );
    }
}

#[test]
fn out_equal_to_inside_or_containing_an_input_is_refused_and_the_input_survives() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("g");
    gen(&data, 500, 3);
    let pairs = data.join("pairs");
    let gold = data.join("gold.parquet");
    let before = files_under(&pairs);
    for (out, relation) in [
        (pairs.clone(), "is the input --pairs"),
        (pairs.join("out"), "lies inside the input --pairs"),
        (data.clone(), "contains the input --pairs"),
    ] {
        let err = curate_fails(&pairs, &gold, &out);
        assert!(err.contains("--out") && err.contains(relation), "{err}");
    }
    // A glob input: its directory is the input.
    let glob = format!("{}/*.parquet", s(&pairs));
    let err = fails_with(
        &[
            "curate",
            "--pairs",
            &glob,
            "--gold",
            s(&gold),
            "--out",
            s(&pairs.join("o")),
        ],
        2,
    );
    assert!(err.contains("lies inside"), "{err}");
    assert_eq!(files_under(&pairs), before, "the input was touched");
}

#[test]
fn unknown_roles_and_replies_not_ending_with_the_assistant_are_quarantined() {
    let tmp = tempfile::tempdir().unwrap();
    let pool = tmp.path().join("pool.jsonl");
    let m = |role: &str, content: &str| serde_json::json!({"role": role, "content": content});
    let rows = [
        // Fine: whole conversations.
        serde_json::json!({"pair_id": "ok", "chosen": [m("user", "q"), m("assistant", "a")], "rejected": [m("user", "q"), m("assistant", "b")]}),
        serde_json::json!({"pair_id": "role", "chosen": [m("user", "q"), m("bot", "a")], "rejected": [m("user", "q"), m("assistant", "b")]}),
        serde_json::json!({"pair_id": "prompt_role", "prompt": [m("narrator", "q")], "chosen": "a", "rejected": "b"}),
        serde_json::json!({"pair_id": "last", "chosen": [m("user", "q"), m("assistant", "a"), m("user", "and?")], "rejected": [m("user", "q"), m("assistant", "b")]}),
        serde_json::json!({"pair_id": "reply_last", "prompt": "q", "chosen": [m("user", "a")], "rejected": "b"}),
    ];
    let text: String = rows.iter().map(|r| format!("{r}\n")).collect();
    std::fs::write(&pool, text).unwrap();
    let gold = tmp.path().join("gold.jsonl");
    std::fs::write(&gold, "{\"pair_id\": \"ok\", \"verdict\": \"chosen\"}\n").unwrap();
    let out = tmp.path().join("o");
    curate_ok(&pool, &gold, &out, &[]);
    let r = assert_accounting(&out);
    let q = read_rows(&out.join("quarantine"));
    let reason = |id: &str| {
        q.iter()
            .find(|r| r["pair_id"] == id)
            .map(|r| r["reason"].as_str().unwrap().to_string())
    };
    assert_eq!(reason("role").as_deref(), Some("invalid_role"));
    assert_eq!(reason("prompt_role").as_deref(), Some("invalid_role"));
    assert_eq!(reason("last").as_deref(), Some("invalid_last_turn"));
    assert_eq!(reason("reply_last").as_deref(), Some("invalid_last_turn"));
    assert_eq!(reason("ok"), None);
    assert_eq!(r["invalid_role"], 2);
    assert_eq!(r["invalid_last_turn"], 2);
    let role_error = q.iter().find(|r| r["pair_id"] == "role").unwrap()["error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(role_error.contains("`bot`"), "{role_error}");
}

#[test]
fn utf8_bom_empty_and_blank_jsonl_dictionary_text_and_bad_timestamps_get_clear_answers() {
    let tmp = tempfile::tempdir().unwrap();
    let gold = tmp.path().join("gold.jsonl");
    std::fs::write(&gold, "\u{feff}{\"pair_id\": \"a\", \"verdict\": \"chosen\", \"labeled_at\": \"2025-03-01T13:00:00+01:00\"}\n").unwrap();
    let line = |id: &str| {
        format!("{{\"pair_id\": \"{id}\", \"prompt\": \"q {id}\", \"chosen\": \"yes {id}\", \"rejected\": \"no {id}\"}}\n")
    };

    // A byte-order mark before line 1 is not part of it (pool and gold files).
    let bom = tmp.path().join("bom.jsonl");
    std::fs::write(&bom, format!("\u{feff}{}{}", line("a"), line("b"))).unwrap();
    let out = tmp.path().join("o1");
    curate_ok(&bom, &gold, &out, &[]);
    let r = assert_accounting(&out);
    assert_eq!(r["quarantined_rows"], 0, "{r}");
    assert_eq!(r["human_agrees"], 1, "{r}");

    // A zero-byte file and a file of blank lines are refused, naming the file.
    for (name, body) in [("empty.jsonl", ""), ("blank.jsonl", "\n  \n\n")] {
        let p = tmp.path().join(name);
        std::fs::write(&p, body).unwrap();
        let err = curate_fails(&p, &gold, &tmp.path().join("o2"));
        assert!(err.contains(name), "{err}");
        assert!(!tmp.path().join("o2/manifest.json").exists());
    }

    // No prompt anywhere and string replies: the whole file is refused (exit 2), as
    // for Parquet, not quarantined row by row.
    let noprompt = tmp.path().join("noprompt.jsonl");
    std::fs::write(&noprompt, "{\"chosen\": \"a\", \"rejected\": \"b\"}\n").unwrap();
    let err = curate_fails(&noprompt, &gold, &tmp.path().join("o3"));
    assert!(
        err.contains("noprompt.jsonl") && err.contains("prompt"),
        "{err}"
    );

    // Dictionary-encoded text columns (pandas' category dtype) are text.
    use arrow::array::DictionaryArray;
    use arrow::datatypes::Int32Type;
    let dict = |v: &[&str]| -> ArrayRef {
        Arc::new(v.iter().copied().collect::<DictionaryArray<Int32Type>>())
    };
    let pq = tmp.path().join("dict.parquet");
    write_parquet(
        &pq,
        vec![
            ("pair_id", strings(&["a", "b"])),
            ("prompt", dict(&["q", "q"])),
            ("chosen", dict(&["yes", "yes!"])),
            ("rejected", dict(&["no", "no!"])),
            ("source", dict(&["s", "s"])),
        ],
    );
    let out = tmp.path().join("o4");
    curate_ok(&pq, &gold, &out, &[]);
    let r = assert_accounting(&out);
    assert_eq!(r["quarantined_rows"], 0, "{r}");

    // An unparsable labeled_at stops the run naming file, row and column.
    let bad_gold = tmp.path().join("bad_gold.jsonl");
    std::fs::write(
        &bad_gold,
        "{\"pair_id\": \"a\", \"verdict\": \"chosen\", \"labeled_at\": \"2025-03-01\"}\n{\"pair_id\": \"b\", \"verdict\": \"chosen\", \"labeled_at\": \"last tuesday\"}\n",
    )
    .unwrap();
    let err = curate_fails(&bom, &bad_gold, &tmp.path().join("o5"));
    assert!(
        err.contains("bad_gold.jsonl") && err.contains("labeled_at") && err.contains('2'),
        "{err}"
    );
}

/// A hostfile of `n` free loopback ports.
fn hostfile(dir: &Path, n: usize) -> PathBuf {
    let listeners: Vec<_> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    let text: String = listeners
        .iter()
        .map(|l| format!("127.0.0.1:{}\n", l.local_addr().unwrap().port()))
        .collect();
    let path = dir.join("hosts");
    std::fs::write(&path, text).unwrap();
    path
}

fn curate_process(
    data: &Path,
    out: &Path,
    hosts: &Path,
    process: usize,
    extra: &[&str],
) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_synpref"))
        .args([
            "curate",
            "--pairs",
            s(&data.join("pairs")),
            "--gold",
            s(&data.join("gold.parquet")),
            "--out",
            s(out),
            "--workers",
            "1",
            "--no-progress",
        ])
        .args(["--hostfile", s(hosts), "--process", &process.to_string()])
        .args(extra)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn a_process_whose_peer_never_starts_exits_1_after_the_connect_timeout_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("g");
    gen(&data, 300, 3);
    let hosts = hostfile(tmp.path(), 2);
    for (started, missing) in [(0, 1), (1, 0)] {
        let t = std::time::Instant::now();
        let child = curate_process(
            &data,
            &tmp.path().join("o"),
            &hosts,
            started,
            &["--connect-timeout", "2"],
        );
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(t.elapsed().as_secs() < 30, "waited {:?}", t.elapsed());
        assert!(
            stderr.contains(&format!("process {missing} (127.0.0.1:")),
            "{stderr}"
        );
        assert!(stderr.contains("--connect-timeout"), "{stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    }
}

#[test]
fn a_lost_peer_process_ends_the_survivor_with_exit_1_and_one_line_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("g");
    gen(&data, 30_000, 3);
    let hosts = hostfile(tmp.path(), 2);
    let out = tmp.path().join("o");
    let survivor = curate_process(&data, &out, &hosts, 0, &["--connect-timeout", "30"]);
    let mut victim = curate_process(&data, &out, &hosts, 1, &["--connect-timeout", "30"]);
    // Let them connect and start working, then SIGKILL process 1.
    std::thread::sleep(std::time::Duration::from_millis(2500));
    assert!(
        victim.try_wait().unwrap().is_none(),
        "process 1 ended before it was killed"
    );
    victim.kill().unwrap();
    victim.wait().unwrap();
    let t = std::time::Instant::now();
    let done = survivor.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&done.stderr);
    assert_eq!(done.status.code(), Some(1), "{stderr}");
    assert!(
        t.elapsed().as_secs() < 40,
        "the survivor hung for {:?}",
        t.elapsed()
    );
    assert!(stderr.contains("process 1 (127.0.0.1:"), "{stderr}");
    assert!(
        !stderr.contains("panicked") && !stderr.contains("backtrace"),
        "{stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    assert!(!out.join("manifest.json").exists());
}

/// Issue 30: `--out` through a symlink into the input (or the input through one) once
/// wrote curated/, discarded/ and manifest.json into the input directory, and a rerun
/// deleted them as the old output. Now refused, exit 2, before anything is written.
#[test]
fn an_out_reached_through_a_symlink_into_the_input_is_refused_before_anything_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    gen(&data, 200, 4);
    let pairs = data.join("pairs");
    let gold = data.join("gold.parquet");
    let link = tmp.path().join("link");
    std::os::unix::fs::symlink(&pairs, &link).unwrap();
    let to_data = tmp.path().join("to_data");
    std::os::unix::fs::symlink(&data, &to_data).unwrap();
    let before = files_under(&pairs);
    let cases = [
        (pairs.clone(), link.clone()),
        (pairs.clone(), to_data.join("pairs/o")),
        (link.clone(), pairs.join("o2")),
    ];
    for (input, out) in &cases {
        let mut args = curate_argv(input, &gold, out);
        args.push("--no-progress");
        let stderr = fails_with(&args, 2);
        assert!(stderr.contains("--out"), "{stderr}");
        assert_eq!(files_under(&pairs), before, "{out:?} wrote into the input");
    }
}

/// Issue 30 item 1: annotate, eval, tasks, Stage 1, fractions and gen guard their
/// outputs as curate does (before the fix annotate ran with `--out` equal to `--pairs`,
/// read its own cache as input and lost its report), gen refuses to replace a `pairs/`
/// it did not write, and fractions refuses a `--curated` output of another pool.
#[test]
fn every_writing_command_refuses_an_out_that_overlaps_its_input_and_fractions_another_pools_curate()
{
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    gen(&data, 200, 4);
    let pairs = data.join("pairs");
    let eval_set = data.join("eval.parquet");
    let before = files_under(&data);
    let model = format!("hf:{}", s(&fixture("qwen3_rm_chat")));
    let inside = pairs.join("o");
    let missing = tmp.path().join("c");
    let cases: Vec<Vec<&str>> = vec![
        vec![
            "annotate",
            "--pairs",
            s(&pairs),
            "--out",
            s(&pairs),
            "--model",
            "m",
        ],
        vec![
            "annotate",
            "--pairs",
            s(&pairs),
            "--out",
            s(&inside),
            "--model",
            "m",
        ],
        vec![
            "annotate",
            "--pairs",
            s(&pairs),
            "--out",
            s(tmp.path()),
            "--model",
            "m",
        ],
        vec![
            "eval",
            "--model",
            &model,
            "--eval",
            s(&eval_set),
            "--out",
            s(&data),
        ],
        vec!["tasks", "export", "--pairs", s(&pairs), "--out", s(&inside)],
        vec![
            "tasks",
            "import",
            "--label-studio",
            s(&eval_set),
            "--out",
            s(&eval_set),
        ],
        vec![
            "fractions",
            "--pairs",
            s(&pairs),
            "--curated",
            s(&missing),
            "--eval",
            s(&eval_set),
            "--out",
            s(&pairs),
        ],
    ];
    for args in &cases {
        let stderr = fails_with(args, 2);
        assert!(stderr.contains("--out"), "{args:?}: {stderr}");
        assert_eq!(files_under(&data), before, "{args:?} wrote into the input");
    }

    // gen replaces `pairs/` only where gen wrote it.
    let pool = tmp.path().join("pool");
    std::fs::create_dir_all(pool.join("pairs")).unwrap();
    std::fs::copy(
        pairs.join("part-00000.parquet"),
        pool.join("pairs/mine.parquet"),
    )
    .unwrap();
    let stderr = fails_with(&["gen", "--pairs", "10", "--out", s(&pool)], 2);
    assert!(
        stderr.contains("--out") && stderr.contains("did not write"),
        "{stderr}"
    );
    assert_eq!(files_under(&pool), vec!["pairs/mine.parquet".to_string()]);
    gen(&data, 150, 5); // an earlier gen output is replaced as before

    // fractions: the curate output of one pool against another pool's --pairs.
    let other = tmp.path().join("other");
    gen(&other, 120, 6);
    let curated = tmp.path().join("curated");
    curate_ok(
        &other.join("pairs"),
        &other.join("gold.parquet"),
        &curated,
        &[],
    );
    let out = tmp.path().join("fractions");
    let stderr = fails_with(
        &[
            "fractions",
            "--pairs",
            s(&pairs),
            "--curated",
            s(&curated),
            "--eval",
            s(&eval_set),
            "--out",
            s(&out),
        ],
        2,
    );
    assert!(
        stderr.contains("--curated")
            && stderr.contains("another pool")
            && stderr.contains("--pairs"),
        "{stderr}"
    );
}

/// Issue 30 item 6: "no rows" and "no valid row" have one answer everywhere, exit 2.
/// Before, a zero-row Parquet pool committed an empty run (while a zero-byte JSONL pool
/// exited 2), a zero-byte `--decontaminate` file turned decontamination off without a
/// word, and eval and annotate exited 0 with no valid row.
#[test]
fn zero_rows_and_no_valid_row_exit_2_in_every_command() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    gen(&data, 150, 12);
    let gold = data.join("gold.parquet");
    let empty: ArrayRef = Arc::new(StringArray::from(Vec::<&str>::new()));
    let zero = tmp.path().join("zero");
    std::fs::create_dir_all(&zero).unwrap();
    write_parquet(
        &zero.join("part-0.parquet"),
        vec![
            ("pair_id", empty.clone()),
            ("prompt", empty.clone()),
            ("chosen", empty.clone()),
            ("rejected", empty),
        ],
    );
    let empty_jsonl = tmp.path().join("empty.jsonl");
    std::fs::write(&empty_jsonl, "").unwrap();
    let out = tmp.path().join("out");
    for pool in [&zero, &empty_jsonl] {
        let mut args = curate_argv(pool, &gold, &out);
        args.push("--no-progress");
        let stderr = fails_with(&args, 2);
        assert!(stderr.contains("no rows"), "{pool:?}: {stderr}");
        assert!(!out.join("manifest.json").exists());
    }
    let pairs = data.join("pairs");
    let mut args = curate_argv(&pairs, &gold, &out);
    args.extend(["--decontaminate", s(&empty_jsonl), "--no-progress"]);
    let stderr = fails_with(&args, 2);
    assert!(
        stderr.contains("empty.jsonl") && stderr.contains("no rows"),
        "{stderr}"
    );

    // Rows, but none a valid pair: eval and annotate name the reasons with counts.
    let invalid = tmp.path().join("invalid.jsonl");
    std::fs::write(
        &invalid,
        "{\"pair_id\": \"a\", \"prompt\": \"p\", \"chosen\": \"x\", \"rejected\": null}\n\
         {\"pair_id\": \"b\", \"prompt\": \"p\", \"chosen\": \"y\", \"rejected\": null}\n",
    )
    .unwrap();
    let model = format!("hf:{}", s(&fixture("qwen3_rm_chat")));
    let evals = tmp.path().join("eval-out");
    let stderr = fails_with(
        &[
            "eval",
            "--model",
            &model,
            "--eval",
            s(&invalid),
            "--out",
            s(&evals),
            "--device",
            "cpu",
        ],
        2,
    );
    assert!(
        stderr.contains("no valid row")
            && stderr.contains("2 rows read")
            && stderr.contains("2 invalid_missing_response"),
        "{stderr}"
    );
    let stderr = fails_with(
        &[
            "eval",
            "--model",
            &model,
            "--eval",
            s(&empty_jsonl),
            "--out",
            s(&evals),
            "--device",
            "cpu",
        ],
        2,
    );
    assert!(stderr.contains("no rows"), "{stderr}");
    let annotated = tmp.path().join("annotated");
    let stderr = fails_with(
        &[
            "annotate",
            "--pairs",
            s(&invalid),
            "--out",
            s(&annotated),
            "--model",
            "m",
            "--no-progress",
        ],
        2,
    );
    assert!(stderr.contains("no valid row"), "{stderr}");
}

/// Issue 30 item 6: a superseded gold label no longer trains the gold RM. Before, with
/// two contradictory labels for one pair the decision followed the later one while the
/// built-in gold RM learned both (p_gold 0.475 against 0.549 with the label replaced).
/// Curate with both labels must train the same gold RM as curate with the earlier one
/// left out; serve taking the later one in a later epoch must equal both.
#[test]
fn a_superseded_gold_label_no_longer_trains_the_gold_rm_in_curate_and_serve() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    gen(&data, 600, 13);
    let pairs = data.join("pairs");
    let only_gold = tmp.path().join("gen-gold");
    std::fs::create_dir_all(&only_gold).unwrap();
    std::fs::copy(data.join("gold.parquet"), only_gold.join("gold.parquet")).unwrap();
    let labels: Vec<(String, String)> = read_rows(&only_gold)
        .iter()
        .map(|r| {
            (
                r["pair_id"].as_str().unwrap().to_string(),
                r["verdict"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let line = |id: &str, v: &str| format!("{{\"pair_id\": \"{id}\", \"verdict\": \"{v}\"}}\n");
    let flip = |v: &str| if v == "chosen" { "rejected" } else { "chosen" }.to_string();
    // The contradicted pair: the first with a decisive label.
    let (target, verdict) = labels
        .iter()
        .find(|(_, v)| v != "undecidable")
        .unwrap()
        .clone();
    let original: String = labels.iter().map(|(id, v)| line(id, v)).collect();
    let both = tmp.path().join("both");
    std::fs::create_dir_all(&both).unwrap();
    std::fs::write(
        both.join("gold.jsonl"),
        original.clone() + &line(&target, &flip(&verdict)),
    )
    .unwrap();
    let replaced = tmp.path().join("replaced");
    std::fs::create_dir_all(&replaced).unwrap();
    // The same labels without the superseded record: the later one in its place in
    // the stream (the gold RM learns the records in force in stream order).
    let replaced_lines: String = labels
        .iter()
        .filter(|(id, _)| *id != target)
        .map(|(id, v)| line(id, v))
        .chain([line(&target, &flip(&verdict))])
        .collect();
    std::fs::write(replaced.join("gold.jsonl"), replaced_lines).unwrap();
    let (out_both, out_replaced) = (tmp.path().join("c-both"), tmp.path().join("c-replaced"));
    curate_ok(&pairs, &both, &out_both, &[]);
    curate_ok(&pairs, &replaced, &out_replaced, &[]);
    let fingerprint = |out: &Path| report(out)["gold_rm"]["fingerprint"].clone();
    assert_eq!(
        fingerprint(&out_both),
        fingerprint(&out_replaced),
        "the superseded label still trains curate's gold RM"
    );
    assert!(decisions(&out_both) == decisions(&out_replaced));

    // serve: the original labels at start, the contradiction as a later epoch.
    let labels_dir = tmp.path().join("labels");
    std::fs::create_dir_all(&labels_dir).unwrap();
    std::fs::write(labels_dir.join("gold.jsonl"), original).unwrap();
    let out = tmp.path().join("serve");
    let serve = Serve::start(&pairs, &out, 1, Some(&labels_dir));
    serve.post_labels(&line(&target, &flip(&verdict)));
    serve.snapshot();
    assert_eq!(
        fingerprint(&out.join("snapshot")),
        fingerprint(&out_replaced),
        "serve's gold RM learned the superseded label"
    );
    assert!(decisions(&out.join("snapshot")) == decisions(&out_replaced));
}

/// Fuzzing regression (fuzz/fuzz_targets/pairs_parquet.rs, tests/fuzz_regressions/
/// pairs_parquet/): Parquet pages whose definition levels run past their buffer make
/// arrow-buffer panic inside the parquet crate's decoder. Through the binary, whose
/// panic hook aborts the process on any other panic, the reader's catch
/// (`input::catch_parquet_panic`) must still turn it into exit 2 naming the file, with
/// no output committed, whatever the worker count.
#[test]
fn corrupt_parquet_pages_in_a_pool_exit_2_naming_the_file_not_an_abort() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    gen(&data, 30, 3);
    let gold = data.join("gold.parquet");
    let pool = tmp.path().join("pool");
    std::fs::create_dir_all(&pool).unwrap();
    let regressions = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fuzz_regressions");
    for (i, name) in [
        "pairs_parquet/definition-levels-past-the-buffer.parquet",
        "pairs_parquet/negative-column-range.parquet",
    ]
    .iter()
    .enumerate()
    {
        let part = pool.join("part-0.parquet");
        std::fs::copy(regressions.join(name), &part).unwrap();
        for workers in ["1", "2"] {
            let out = tmp.path().join(format!("out-{i}-{workers}"));
            let mut args = curate_argv(&pool, &gold, &out);
            args.extend(["--workers", workers, "--no-progress"]);
            let stderr = fails_with(&args, 2);
            assert!(
                stderr.contains(s(&part)) && !stderr.contains("panicked at"),
                "{name}, {workers} worker(s): {stderr}"
            );
            assert!(!out.join("manifest.json").exists(), "{name}");
        }
    }
}
