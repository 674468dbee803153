//! Serve under faults (issue 12, item 4): a port it cannot bind, a second serve on the
//! same output, a label log it cannot write, label files still being written.

use super::*;
use std::io::{Read, Write};

/// What an exited child wrote on its piped standard error.
fn stderr_of(child: &mut std::process::Child) -> String {
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    err
}

/// Runs `c` and waits at most `limit_s` for it to exit; its status and stderr.
fn exits_within(mut c: Command, limit_s: u64) -> (Option<i32>, String) {
    let mut child = c
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let code = exit_within(&mut child, limit_s);
    (code, stderr_of(&mut child))
}

#[test]
fn serve_exits_2_naming_the_address_when_the_port_is_taken() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    gen(&data, 200, 3);
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let (code, err) = exits_within(
        serve_command(&data.join("pairs"), &tmp.path().join("out"), 1, &addr),
        60,
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains(&addr) && err.contains("--listen"), "{err}");
}

/// A pool with a bad input file is found by the workers' first plan (shared by the
/// process's workers): serve exits 2 naming the file, as curate does, not 1.
#[test]
fn serve_exits_2_naming_the_file_when_the_pool_has_a_bad_input_file() {
    let tmp = tempfile::tempdir().unwrap();
    let no_rejected = tmp.path().join("no_rejected.jsonl");
    std::fs::write(&no_rejected, "{\"prompt\":\"p\",\"chosen\":\"c\"}\n").unwrap();
    let garbage = tmp.path().join("garbage.parquet");
    std::fs::write(&garbage, b"PAR1 definitely not parquet").unwrap();
    for (pool, workers) in [(&no_rejected, 1), (&garbage, 2)] {
        let listen = format!("127.0.0.1:{}", free_port());
        let out = tmp.path().join(format!("out{workers}"));
        let (code, err) = exits_within(serve_command(pool, &out, workers, &listen), 60);
        let name = pool.file_name().unwrap().to_str().unwrap();
        assert_eq!(code, Some(2), "{name}: {err}");
        assert!(err.contains(name), "{err}");
    }
}

#[test]
fn a_second_serve_on_the_same_out_is_refused_with_exit_2_and_the_first_goes_on() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    gen(&data, 300, 4);
    let pairs = data.join("pairs");
    let out = tmp.path().join("out");
    let first = Serve::start(&pairs, &out, 1, None);
    let listen = format!("127.0.0.1:{}", free_port());
    let (code, err) = exits_within(serve_command(&pairs, &out, 1, &listen), 60);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("serve.lock") && err.contains("another serve"),
        "{err}"
    );
    // The first still takes labels.
    let id = read_rows(&pairs)[0]["pair_id"]
        .as_str()
        .unwrap()
        .to_string();
    first.post_labels(&format!(
        "{{\"pair_id\": \"{id}\", \"verdict\": \"chosen\"}}\n"
    ));
    assert_eq!(first.status()["labels_total"], 1);
}

/// A label log that cannot be written (here its directory replaced by a file, as a
/// full or failed disk would refuse the write): the request gets a 5xx, later ones are
/// refused, serve exits 1 naming the log, and a restart applies every acknowledged
/// label.
#[test]
fn a_failed_label_log_write_answers_5xx_ends_serve_with_exit_1_and_loses_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    gen(&data, 300, 6);
    let pairs = data.join("pairs");
    let out = tmp.path().join("out");
    let log = tmp.path().join("log");
    let ids: Vec<String> = pool_ids(&pairs);
    let line =
        |i: usize, v: &str| format!("{{\"pair_id\": \"{}\", \"verdict\": \"{v}\"}}\n", ids[i]);
    let mut serve = Serve::start_with(&pairs, &out, 1, None, &["--label-log", s(&log)]);
    serve.post_labels(&line(1, "rejected"));
    // The log's directory becomes a file: every later write fails.
    std::fs::rename(&log, tmp.path().join("log-moved")).unwrap();
    std::fs::write(&log, b"not a directory").unwrap();
    let (code, reply) = serve.call("POST", "/v1/labels", line(2, "chosen").as_bytes());
    assert!((500..600).contains(&code), "{code} {reply}");
    assert_eq!(exit_within(&mut serve.child, 30), Some(1));
    // The disk is back: the restart applies the acknowledged label, not the refused one.
    std::fs::remove_file(&log).unwrap();
    std::fs::rename(tmp.path().join("log-moved"), &log).unwrap();
    let serve = Serve::start_with(&pairs, &out, 1, None, &["--label-log", s(&log)]);
    let st = serve.status();
    assert_eq!(st["labels_total"], 1, "{st}");
    assert_eq!(st["epoch"], 1, "{st}");
}

/// Issue 30 item 3: label files under `--labels` follow the data tools' conventions. A
/// JSONL file is taken up to its last complete line and again as it grows (before, a
/// file whose writer paused was taken half-written and its later lines never); `_` and
/// `.` names are skipped until renamed; a restart goes on where the log says the file
/// was taken; a last line without a newline is taken once it parses; a rewritten file
/// is rejected with a message; a rejection leaves the status once the file is read.
#[test]
fn label_files_are_taken_line_by_line_as_they_grow_skipped_while_hidden_and_refused_when_rewritten()
{
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    gen(&data, 300, 8);
    let pairs = data.join("pairs");
    let labels = tmp.path().join("labels");
    std::fs::create_dir_all(&labels).unwrap();
    let ids: Vec<String> = pool_ids(&pairs);
    let out = tmp.path().join("out");
    let serve = Serve::start(&pairs, &out, 1, Some(&labels));
    let line = |i: usize| format!("{{\"pair_id\": \"{}\", \"verdict\": \"chosen\"}}\n", ids[i]);
    let wait_total = |serve: &Serve, n: u64| -> Value {
        let started = std::time::Instant::now();
        loop {
            let st = serve.status();
            if st["labels_total"].as_u64() == Some(n) && st["labels_pending"] == 0 {
                return st;
            }
            assert!(
                started.elapsed().as_secs() < 120,
                "labels_total never {n}: {st}"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    };
    let append = |name: &str, text: &str| {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(labels.join(name))
            .unwrap();
        f.write_all(text.as_bytes()).unwrap();
    };
    // One complete line and half of the next: the complete one is taken, the half
    // waits (and is not rejected).
    let second = line(1);
    append("batch.jsonl", &(line(0) + &second[..20]));
    wait_total(&serve, 1);
    std::thread::sleep(std::time::Duration::from_millis(1000));
    let st = wait_total(&serve, 1);
    assert_eq!(st["label_files_rejected"], serde_json::json!([]), "{st}");
    // The writer finishes the line and adds one: both are taken.
    append("batch.jsonl", &(second[20..].to_string() + &line(2)));
    wait_total(&serve, 3);
    // Hidden names are skipped; renamed into place, the file is taken.
    append(".hidden.jsonl", &line(3));
    append("_writing.jsonl", &line(4));
    std::thread::sleep(std::time::Duration::from_millis(1000));
    wait_total(&serve, 3);
    std::fs::rename(labels.join("_writing.jsonl"), labels.join("done.jsonl")).unwrap();
    wait_total(&serve, 4);
    // A last line without a newline is taken once the file keeps its size.
    append("no-newline.jsonl", line(5).trim_end());
    wait_total(&serve, 5);

    // Restarted: nothing is taken twice, and the file goes on from where it was taken.
    drop(serve);
    let serve = Serve::start(&pairs, &out, 1, Some(&labels));
    wait_total(&serve, 5);
    append("batch.jsonl", &line(6));
    wait_total(&serve, 6);

    // Rewritten shorter: rejected, naming the file and why; nothing more is taken.
    std::fs::write(labels.join("batch.jsonl"), line(7)).unwrap();
    let started = std::time::Instant::now();
    let st = loop {
        let st = serve.status();
        if st["label_files_rejected"].as_array().unwrap().len() == 1 {
            break st;
        }
        assert!(
            started.elapsed().as_secs() < 60,
            "the rewrite was not rejected: {st}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let rejection = st["label_files_rejected"][0].as_str().unwrap().to_string();
    assert!(
        rejection.contains("batch.jsonl") && rejection.contains("shrank"),
        "{rejection}"
    );
    // A bad line: rejected; corrected, it is read and its rejection goes.
    std::fs::write(
        labels.join("bad.jsonl"),
        "{\"pair_id\": \"x\", \"verdict\": \"maybe\"}\n",
    )
    .unwrap();
    let started = std::time::Instant::now();
    while serve.status()["label_files_rejected"]
        .as_array()
        .unwrap()
        .len()
        < 2
    {
        assert!(
            started.elapsed().as_secs() < 60,
            "bad.jsonl was not rejected"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    std::fs::write(labels.join("bad.jsonl"), line(8)).unwrap();
    let st = wait_total(&serve, 7);
    let rejected = st["label_files_rejected"].as_array().unwrap();
    assert_eq!(rejected.len(), 1, "{st}");
    assert!(
        rejected[0].as_str().unwrap().contains("batch.jsonl"),
        "{st}"
    );
}

/// Issue 30 item 6: SIGTERM ends serve cleanly. It applies what it took, says so, removes
/// its pool store and exits 0 (before, it died at once, silent, leaving its pool-store
/// directory); the status answers the logged figures from its first moment after a
/// restart (before, epoch 0 and 0 labels for the first second).
#[test]
fn sigterm_applies_the_epoch_in_flight_reports_removes_the_pool_store_and_exits_0() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    gen(&data, 300, 9);
    let pairs = data.join("pairs");
    let ids = pool_ids(&pairs);
    let out = tmp.path().join("out");
    let pools = tmp.path().join("pools");
    let serve = Serve::start_with(&pairs, &out, 1, None, &["--pool-dir", s(&pools)]);
    let body = format!(
        "{{\"pair_id\": \"{}\", \"verdict\": \"rejected\"}}\n",
        ids[2]
    );
    serve.post_labels(&body);
    let pool_dirs = || std::fs::read_dir(&pools).map(|d| d.count()).unwrap_or(0);
    assert_eq!(pool_dirs(), 1);
    // SIGTERM: exit 0, naming what it applied, with its pool store gone.
    let addr = serve.addr.clone();
    let mut c = serve_command(&pairs, &out, 1, &addr);
    drop(serve);
    c.args(["--pool-dir", s(&pools)])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let mut child = c.spawn().unwrap();
    // The restarted serve answers the logged figures from its first answer on.
    let started = std::time::Instant::now();
    loop {
        if std::net::TcpStream::connect(&addr).is_ok() {
            let (code, body) = http(&addr, "GET", "/v1/status", Some(TOKEN), b"");
            assert_eq!(code, 200, "{body}");
            let st: Value = serde_json::from_str(&body).unwrap();
            assert_eq!(st["epoch"], 1, "{st}");
            assert_eq!(st["labels_total"], 1, "{st}");
            if st["state"] == "ready" {
                break;
            }
        }
        assert!(started.elapsed().as_secs() < 120, "not ready");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let (code, _) = http(&addr, "POST", "/v1/labels", Some(TOKEN), body.as_bytes());
    assert_eq!(code, 200);
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let code = exit_within(&mut child, 120);
    let err = stderr_of(&mut child);
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("SIGTERM: stopping at epoch"), "{err}");
    assert_eq!(pool_dirs(), 0, "the pool store is left behind");
}
