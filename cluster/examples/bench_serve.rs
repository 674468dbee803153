//! Drives a running `synpref serve` for `scripts/bench-serve.sh`: posts batches of
//! random gold labels for pool pairs (ids from gen's truth.parquet), waits for each
//! epoch, and prints the update latencies serve reports (median, p99, max) per batch
//! size as JSON.
//!
//! Usage: bench_serve ADDR TOKEN TRUTH_PARQUET SIZES REPS SEED
//! (SIZES: comma-separated batch sizes, e.g. 1,100,1000; REPS: batches per size)

use std::fs::File;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

use arrow::array::{Array, AsArray};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde_json::{json, Value};

fn http(addr: &str, method: &str, path: &str, token: &str, body: &[u8]) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut r = Vec::new();
    s.read_to_end(&mut r).unwrap();
    let text = String::from_utf8_lossy(&r).into_owned();
    let code = text.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = text
        .split_once("\r\n\r\n")
        .map(|x| x.1.to_string())
        .unwrap_or_default();
    (code, body)
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn main() {
    let a: Vec<String> = std::env::args().collect();
    assert!(
        a.len() == 7,
        "usage: bench_serve ADDR TOKEN TRUTH SIZES REPS SEED"
    );
    let (addr, token, truth) = (&a[1], &a[2], &a[3]);
    let sizes: Vec<usize> = a[4].split(',').map(|s| s.parse().unwrap()).collect();
    let reps: usize = a[5].parse().unwrap();
    let mut seed: u64 = a[6].parse().unwrap();
    let mut next = move || {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        seed >> 33
    };
    let mut ids = Vec::new();
    let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(truth).unwrap())
        .unwrap()
        .build()
        .unwrap();
    for b in reader {
        let b = b.unwrap();
        let col = b
            .column_by_name("pair_id")
            .unwrap()
            .as_string::<i32>()
            .clone();
        for i in 0..col.len() {
            ids.push(col.value(i).to_string());
        }
    }
    // Wait for serve.
    let started = Instant::now();
    while std::net::TcpStream::connect(addr.as_str()).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(7200),
            "serve never listened"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let status = |path: &str| -> Value {
        let (c, b) = http(addr, "GET", path, token, b"");
        assert_eq!(c, 200, "{b}");
        serde_json::from_str(&b).unwrap()
    };
    let mut results = Vec::new();
    for &size in &sizes {
        let mut server = Vec::new();
        let mut client = Vec::new();
        let mut rescored = Vec::new();
        let mut changed = Vec::new();
        let mut train = Vec::new();
        for _ in 0..reps {
            let mut body = String::new();
            for _ in 0..size {
                let id = &ids[next() as usize % ids.len()];
                let verdict = ["chosen", "rejected", "chosen", "rejected", "undecidable"]
                    [next() as usize % 5];
                body.push_str(&json!({"pair_id": id, "verdict": verdict}).to_string());
                body.push('\n');
            }
            let t = Instant::now();
            let (c, reply) = http(addr, "POST", "/v1/labels", token, body.as_bytes());
            assert_eq!(c, 200, "{reply}");
            let epoch = serde_json::from_str::<Value>(&reply).unwrap()["epoch"]
                .as_u64()
                .unwrap();
            let st = loop {
                let st = status("/v1/status");
                if st["epoch"].as_u64().unwrap() >= epoch {
                    break st;
                }
                std::thread::sleep(Duration::from_millis(2));
            };
            client.push(t.elapsed().as_secs_f64());
            let u = &st["last_update"];
            server.push(u["latency_s"].as_f64().unwrap());
            rescored.push(u["rescored_pairs"].as_f64().unwrap());
            changed.push(u["changed_rows"].as_f64().unwrap());
            train.push(u["train_s"].as_f64().unwrap());
        }
        for v in [
            &mut server,
            &mut client,
            &mut rescored,
            &mut changed,
            &mut train,
        ] {
            v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        }
        let r = json!({
            "batch": size, "batches": reps,
            "latency_s": {"median": quantile(&server, 0.5), "p99": quantile(&server, 0.99), "max": server[server.len()-1]},
            "client_latency_s": {"median": quantile(&client, 0.5), "p99": quantile(&client, 0.99)},
            "train_s_median": quantile(&train, 0.5),
            "rescored_pairs_median": quantile(&rescored, 0.5),
            "changed_rows_median": quantile(&changed, 0.5),
        });
        eprintln!("{r}");
        results.push(r);
    }
    let st = status("/v1/status");
    println!(
        "{}",
        serde_json::to_string_pretty(&json!({"updates": results, "status": st})).unwrap()
    );
}
