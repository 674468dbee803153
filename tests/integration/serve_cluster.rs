//! Serve on several timely processes (issue 12): the pool sharded over every worker of
//! every process, label batches applied as epochs on all of them; after every epoch
//! the snapshot equals a from-scratch curate, and a SIGKILL of either process followed
//! by a restart of the job loses no acknowledged label.

use super::*;

/// A serve job of `processes` processes on loopback: process 0 (with the API) as a
/// `Serve`, the others as plain children.
struct ServeJob {
    main: Serve,
    followers: Vec<std::process::Child>,
}

impl ServeJob {
    fn start(
        tmp: &Path,
        pairs: &Path,
        out: &Path,
        processes: usize,
        labels: Option<&Path>,
    ) -> ServeJob {
        ServeJob::start_with(tmp, pairs, out, processes, labels, &[])
    }

    /// `start` with `extra` arguments for every process.
    fn start_with(
        tmp: &Path,
        pairs: &Path,
        out: &Path,
        processes: usize,
        labels: Option<&Path>,
        extra: &[&str],
    ) -> ServeJob {
        let hostfile = tmp.join(format!("hosts-{}", free_port()));
        let hosts: Vec<String> = (0..processes)
            .map(|_| format!("127.0.0.1:{}", free_port()))
            .collect();
        std::fs::write(&hostfile, hosts.join("\n") + "\n").unwrap();
        let cluster = |p: usize| {
            vec![
                "--hostfile".to_string(),
                s(&hostfile).to_string(),
                "--process".into(),
                p.to_string(),
            ]
        };
        // Followers listen on no API: the address is never bound.
        let followers = (1..processes)
            .map(|p| {
                serve_command(pairs, out, 1, "127.0.0.1:1")
                    .args(cluster(p))
                    .args(extra)
                    .stdout(std::process::Stdio::null())
                    .spawn()
                    .unwrap()
            })
            .collect();
        let main_args = cluster(0);
        let main_args: Vec<&str> = main_args
            .iter()
            .map(String::as_str)
            .chain(extra.iter().copied())
            .collect();
        let main = Serve::start_with(pairs, out, 1, labels, &main_args);
        ServeJob { main, followers }
    }
}

impl Drop for ServeJob {
    fn drop(&mut self) {
        for f in &mut self.followers {
            let _ = f.kill();
            let _ = f.wait();
        }
    }
}

#[test]
fn serve_on_two_processes_equals_curate_from_scratch_after_every_epoch_and_across_sigkill() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    gen(&data, 1500, 31);
    let pairs = data.join("pairs");
    let ids: Vec<String> = pool_ids(&pairs);
    let labels = tmp.path().join("labels");
    std::fs::create_dir_all(&labels).unwrap();
    std::fs::copy(data.join("gold.parquet"), labels.join("gold.parquet")).unwrap();
    let out = tmp.path().join("serve");
    let mut job = ServeJob::start(tmp.path(), &pairs, &out, 2, Some(&labels));
    let mut rng = Lcg(41);
    let mut labelled = Vec::new();
    let mut posted = job.main.status()["labels_total"].as_u64().unwrap();
    assert!(posted > 0, "gen's gold labels are taken at start");
    let check = |job: &ServeJob, tag: &str, posted: u64| {
        job.main.snapshot();
        let scratch = tmp.path().join(format!("scratch-{tag}"));
        curate_from_label_log(&pairs, &out, &scratch, 1, &[]);
        let (got, want) = (decisions(&out.join("snapshot")), decisions(&scratch));
        assert_eq!(got.len(), want.len(), "{tag}");
        assert!(
            got == want,
            "{tag}: the 2-process serve's snapshot differs from curate"
        );
        let st = job.main.status();
        assert_eq!(st["labels_total"].as_u64().unwrap(), posted, "{tag}: {st}");
        assert_eq!(st["labels_pending"], 0, "{tag}: {st}");
        let r = report(&scratch);
        for k in ["curated_rows", "discarded_rows", "quarantined_rows"] {
            assert_eq!(st[k], r[k], "{tag}: status {k}: {st}");
        }
        assert_eq!(
            st["pool_pairs"].as_u64().unwrap(),
            r["curated_rows"].as_u64().unwrap() + reasons_scored_but_discarded(&r),
            "{tag}: the shards together hold every scored pair: {st}"
        );
        for k in ["gold_rm", "estimated_label_accuracy", "warnings"] {
            assert_eq!(
                st["quality"][k], r["quality"][k],
                "{tag}: status quality.{k}"
            );
        }
    };
    for (epoch, n) in [1usize, 9, 60, 2].into_iter().enumerate() {
        let mut lines: Vec<String> = (0..n)
            .map(|_| random_label(&mut rng, &ids, &mut labelled))
            .collect();
        lines.push(lines[rng.below(lines.len())].clone());
        posted += lines.len() as u64;
        job.main.post_labels(&(lines.join("\n") + "\n"));
        check(&job, &format!("epoch-{epoch}"), posted);
    }
    // Every worker of both processes wrote changelog parts.
    let parts: Vec<String> = files_under(&out.join("changelog"));
    for w in ["part-00000", "part-00001"] {
        assert!(parts.iter().any(|p| p.contains(w)), "no {w} in {parts:?}");
    }

    // SIGKILL of process 1: process 0 ends (exit 1) within 10 s, naming the lost
    // process, instead of hanging.
    job.followers[0].kill().unwrap();
    job.followers[0].wait().unwrap();
    let code = exit_within(&mut job.main.child, 10);
    assert_eq!(code, Some(1));
    drop(job);

    // Restarted, labels go on; then SIGKILL of process 0 right after a 200.
    let mut job = ServeJob::start(tmp.path(), &pairs, &out, 2, Some(&labels));
    let st = job.main.status();
    assert_eq!(st["labels_total"].as_u64().unwrap(), posted, "{st}");
    assert_eq!(st["recovered_from_saved_state"], true, "{st}");
    let lines: Vec<String> = (0..25)
        .map(|_| random_label(&mut rng, &ids, &mut labelled))
        .collect();
    let (code, reply) = job
        .main
        .call("POST", "/v1/labels", (lines.join("\n") + "\n").as_bytes());
    assert_eq!(code, 200, "{reply}");
    posted += lines.len() as u64;
    job.main.child.kill().unwrap();
    job.main.child.wait().unwrap();
    let code = exit_within(&mut job.followers[0], 10);
    assert_eq!(code, Some(1));
    drop(job);
    let job = ServeJob::start(tmp.path(), &pairs, &out, 2, Some(&labels));
    check(&job, "after-sigkill", posted);
}

/// Scored pairs a curate report sends to discarded (all discarded reasons but
/// duplicates and contamination, which are never scored).
fn reasons_scored_but_discarded(r: &Value) -> u64 {
    let reasons = &r["reasons"];
    [
        "human_undecidable",
        "gold_rm_disagrees",
        "best_rm_and_judge_disagree",
    ]
    .iter()
    .map(|k| reasons[*k].as_u64().unwrap_or(0))
    .sum()
}

/// A two-process serve stopped as a whole (SIGTERM to every process, the follower
/// first, as a process-group kill or an orchestrator may): the follower waits for
/// process 0, which applies the epoch in flight; both exit 0 and both pool stores go.
/// Before, the follower died at once and process 0 ended with exit 1 (a lost process).
#[test]
fn sigterm_to_every_process_of_a_two_process_serve_ends_both_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    gen(&data, 400, 17);
    let pairs = data.join("pairs");
    let ids = pool_ids(&pairs);
    let out = tmp.path().join("serve");
    let pools = tmp.path().join("pools");
    let mut job = ServeJob::start_with(
        tmp.path(),
        &pairs,
        &out,
        2,
        None,
        &["--pool-dir", s(&pools)],
    );
    job.main.post_labels(&format!(
        "{{\"pair_id\": \"{}\", \"verdict\": \"chosen\"}}\n",
        ids[0]
    ));
    let pool_dirs = || std::fs::read_dir(&pools).map(|d| d.count()).unwrap_or(0);
    assert_eq!(pool_dirs(), 2, "one pool store per process");
    let follower = &mut job.followers[0];
    unsafe {
        libc::kill(follower.id() as i32, libc::SIGTERM);
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(
        follower.try_wait().unwrap().is_none(),
        "the follower exited before process 0 stopped the job"
    );
    unsafe {
        libc::kill(job.main.child.id() as i32, libc::SIGTERM);
    }
    // (Process 0's message on SIGTERM is checked by the one-process test in
    // serve_faults.)
    assert_eq!(exit_within(&mut job.main.child, 60), Some(0), "process 0");
    let code = exit_within(&mut job.followers[0], 60);
    assert_eq!(code, Some(0), "the follower");
    assert_eq!(pool_dirs(), 0, "a pool store is left behind");
}
