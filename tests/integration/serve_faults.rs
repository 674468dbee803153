//! Serve under faults (issue 12, item 4): a port it cannot bind, a second serve on the
//! same output, a label log it cannot write, label files still being written.

use super::*;
use std::io::{Read, Write};

/// Runs `c` and waits at most `limit_s` for it to exit; its status and stderr.
fn exits_within(mut c: Command, limit_s: u64) -> (Option<i32>, String) {
    let mut child = c
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let code = exit_within(&mut child, limit_s);
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    (code, err)
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

/// A JSONL label file is taken only once complete; one whose last line is cut off is
/// held back (at most rejected at that size) and taken whole once the line is finished.
#[test]
fn label_files_are_taken_only_once_complete_and_a_partial_line_is_not_rejected_for_good() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    gen(&data, 300, 8);
    let pairs = data.join("pairs");
    let labels = tmp.path().join("labels");
    std::fs::create_dir_all(&labels).unwrap();
    let ids: Vec<String> = pool_ids(&pairs);
    let serve = Serve::start(&pairs, &tmp.path().join("out"), 1, Some(&labels));
    let file = labels.join("batch.jsonl");
    let full = format!(
        "{{\"pair_id\": \"{}\", \"verdict\": \"chosen\"}}\n{{\"pair_id\": \"{}\", \"verdict\": \"rejected\"}}\n",
        ids[0], ids[1]
    );
    let cut = full.len() - 20;
    std::fs::write(&file, &full[..cut]).unwrap();
    // Several listings (0.2 s apart) see the cut file: it is not taken.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let st = serve.status();
    assert_eq!(st["labels_total"], 0, "{st}");
    assert_eq!(st["label_files_taken"], 0, "{st}");
    // The writer finishes the line: the whole file is taken, both labels.
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&file)
        .unwrap();
    f.write_all(&full.as_bytes()[cut..]).unwrap();
    drop(f);
    let st = serve.wait_for_epoch(1);
    assert_eq!(st["labels_total"], 2, "{st}");
    assert_eq!(st["label_files_taken"], 1, "{st}");
}
