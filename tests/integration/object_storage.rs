//! Object storage for real (issue 11): curate, score's cache, serve's label log and
//! snapshots against a real S3-compatible server on loopback (`s3s-fs`, an S3 server
//! crate from crates.io; `scripts/test.sh` installs it, and the tests install it under the
//! target directory when no copy is found), with credentials from the usual AWS_*
//! variables; and a Parquet pool read over HTTP from a server on loopback that
//! answers ranged GETs as object stores and CDNs do.

use super::*;

/// The S3 server crate and version the tests run (s3s-fs 0.17 needs rustc 1.96).
const S3S_FS_VERSION: &str = "0.14.1";

/// The `s3s-fs` binary: `$SYNPREF_S3S_FS`, on PATH, in `~/.cargo/bin`, or installed
/// once under the target directory (`cargo install`, a few minutes on 2 cores).
fn s3s_fs() -> PathBuf {
    static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        let runs = |p: &Path| {
            Command::new(p)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        };
        let mut candidates: Vec<PathBuf> = Vec::new();
        if let Ok(p) = std::env::var("SYNPREF_S3S_FS") {
            candidates.push(p.into());
        }
        candidates.push("s3s-fs".into());
        if let Ok(home) = std::env::var("CARGO_HOME")
            .or_else(|_| std::env::var("HOME").map(|h| format!("{h}/.cargo")))
        {
            candidates.push(Path::new(&home).join("bin/s3s-fs"));
        }
        let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("s3s-fs");
        candidates.push(root.join("bin/s3s-fs"));
        if let Some(found) = candidates.iter().find(|p| runs(p)) {
            return found.clone();
        }
        eprintln!(
            "installing s3s-fs {S3S_FS_VERSION} under {} (once)",
            root.display()
        );
        let status = Command::new(env!("CARGO"))
            .args([
                "install",
                "s3s-fs",
                "--version",
                S3S_FS_VERSION,
                "--features",
                "binary",
                "--locked",
                "--root",
            ])
            .arg(&root)
            .status()
            .expect("run cargo install");
        assert!(
            status.success(),
            "cannot install s3s-fs: the S3 tests need a real S3 server"
        );
        root.join("bin/s3s-fs")
    })
    .clone()
}

/// A real S3 server on loopback over a directory (buckets are its subdirectories),
/// stopped when dropped.
struct S3Server {
    child: std::process::Child,
    endpoint: String,
    root: tempfile::TempDir,
}

const ACCESS_KEY: &str = "synpref-test";
const SECRET_KEY: &str = "synpref-test-secret";

impl S3Server {
    fn start(buckets: &[&str]) -> S3Server {
        let root = tempfile::tempdir().unwrap();
        for b in buckets {
            std::fs::create_dir_all(root.path().join(b)).unwrap();
        }
        let port = free_port();
        let child = Command::new(s3s_fs())
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
            .arg(root.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let addr = format!("127.0.0.1:{port}");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while std::net::TcpStream::connect(&addr).is_err() {
            assert!(std::time::Instant::now() < deadline, "s3s-fs did not start");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        S3Server {
            child,
            endpoint: format!("http://{addr}"),
            root,
        }
    }

    /// The usual environment variables object_store's S3 client reads.
    fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT", self.endpoint.clone()),
            ("AWS_ALLOW_HTTP", "true".into()),
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY.into()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.into()),
            ("AWS_REGION", "us-east-1".into()),
        ]
    }

    /// Where the server keeps an object (for checks only; every test reads and writes
    /// through the S3 API).
    fn file(&self, bucket_path: &str) -> PathBuf {
        self.root.path().join(bucket_path)
    }

    fn synpref(&self, args: &[&str]) -> Output {
        let out = Command::new(env!("CARGO_BIN_EXE_synpref"))
            .args(args)
            .envs(self.env())
            .env("RUST_LOG", "warn")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "synpref {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Copies a local directory tree into a bucket through the S3 API (object_store's
/// own client, as a user's upload tool would).
fn upload(server: &S3Server, local: &Path, url: &str) {
    use object_store::{aws::AmazonS3Builder, path::Path as ObjectPath, ObjectStoreExt};
    let (bucket, prefix) = url.strip_prefix("s3://").unwrap().split_once('/').unwrap();
    let store = AmazonS3Builder::new()
        .with_endpoint(&server.endpoint)
        .with_allow_http(true)
        .with_access_key_id(ACCESS_KEY)
        .with_secret_access_key(SECRET_KEY)
        .with_region("us-east-1")
        .with_bucket_name(bucket)
        .build()
        .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut files = vec![local.to_path_buf()];
    if local.is_dir() {
        files = std::fs::read_dir(local)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
    }
    for f in files {
        let key = if local.is_dir() {
            format!("{prefix}/{}", f.file_name().unwrap().to_string_lossy())
        } else {
            prefix.to_string()
        };
        let bytes = std::fs::read(&f).unwrap();
        rt.block_on(store.put(&ObjectPath::from(key), bytes.into()))
            .unwrap();
    }
}

#[test]
fn s3_curate_reads_and_writes_through_a_real_s3_server_with_the_local_rows() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("g");
    gen(&data, 3_000, 31);
    let server = S3Server::start(&["pool", "out"]);
    upload(&server, &data.join("pairs"), "s3://pool/pairs");
    upload(
        &server,
        &data.join("gold.parquet"),
        "s3://pool/gold.parquet",
    );
    upload(
        &server,
        &data.join("truth.parquet"),
        "s3://pool/truth.parquet",
    );
    let local = tmp.path().join("local");
    curate_ok(
        &data.join("pairs"),
        &data.join("gold.parquet"),
        &local,
        &["--workers", "2"],
    );
    for _ in 0..2 {
        // Twice: the second run replaces the first's output on the server.
        server.synpref(&[
            "curate",
            "--pairs",
            "s3://pool/pairs",
            "--gold",
            "s3://pool/gold.parquet",
            "--truth",
            "s3://pool/truth.parquet",
            "--out",
            "s3://out/run",
            "--workers",
            "2",
            "--no-progress",
        ]);
    }
    let remote = server.file("out/run");
    let r = assert_accounting(&remote);
    assert!(r["truth_agreement_curated"].as_f64().is_some());
    for set in ["curated", "discarded", "quarantine"] {
        // Quarantine names each row's file: the URL it was read from.
        let without_source = |dir: &Path| -> Vec<Value> {
            read_rows(dir)
                .into_iter()
                .map(|mut r| {
                    if let Some(o) = r.as_object_mut() {
                        o.remove("source_file");
                    }
                    r
                })
                .collect()
        };
        assert_eq!(
            without_source(&remote.join(set)),
            without_source(&local.join(set)),
            "{set}"
        );
    }
    assert!(read_rows(&remote.join("quarantine"))
        .iter()
        .all(|r| r["source_file"]
            .as_str()
            .unwrap()
            .starts_with("s3://pool/pairs/")));
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(remote.join("manifest.json")).unwrap()).unwrap();
    assert!(manifest["inputs"]["pairs"][0]["url"]
        .as_str()
        .unwrap()
        .starts_with("s3://pool/pairs/"));
    assert!(remote.join("README.md").exists());
    // Nothing staged is left on the server.
    let staged = files_under(&remote.join("_staging"));
    assert!(staged.is_empty(), "{staged:?}");
}

#[test]
fn s3_score_cache_serves_a_second_curate_run_from_the_server() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("g");
    gen(&data, 300, 5);
    let server = S3Server::start(&["pool", "out", "cache"]);
    upload(&server, &data.join("pairs"), "s3://pool/pairs");
    upload(
        &server,
        &data.join("gold.parquet"),
        "s3://pool/gold.parquet",
    );
    let spec = format!("encoder:{}", fixture("bert_minilm").display());
    let mut curated = Vec::new();
    for run in 0..2 {
        let out = format!("s3://out/run{run}");
        server.synpref(&[
            "curate",
            "--pairs",
            "s3://pool/pairs",
            "--gold",
            "s3://pool/gold.parquet",
            "--out",
            &out,
            "--best-rm",
            &spec,
            "--gold-rm",
            &spec,
            "--score-cache",
            "s3://cache/scores",
            "--workers",
            "2",
            "--no-progress",
        ]);
        let r = report(&server.file(&format!("out/run{run}")));
        let (scored, cached) = (
            r["best_rm"]["scoring"]["scored"].as_u64().unwrap(),
            r["best_rm"]["scoring"]["cached"].as_u64().unwrap(),
        );
        if run == 0 {
            assert!(scored > 0, "{r}");
        } else {
            assert_eq!(scored, 0, "the second run reads every score from S3: {r}");
            assert!(cached > 0);
        }
        curated.push(read_rows(&server.file(&format!("out/run{run}/curated"))));
    }
    assert_eq!(curated[0], curated[1]);
    assert!(!files_under(&server.file("cache/scores")).is_empty());

    // `score` with a transformer RM, reading and writing through the server.
    let model = format!("hf:{}", fixture("qwen3_rm_chat").display());
    for _ in 0..2 {
        server.synpref(&[
            "score",
            "--model",
            &model,
            "--pairs",
            "s3://pool/pairs",
            "--out",
            "s3://out/scored",
            "--no-progress",
        ]);
    }
    let scored = server.file("out/scored");
    let r = report(&scored);
    let rows = read_rows(&scored);
    assert_eq!(rows.len() as u64, r["scored_rows"].as_u64().unwrap(), "{r}");
    assert!(rows.iter().all(|row| row["p"].as_f64().is_some()));
    assert!(files_under(&scored)
        .iter()
        .all(|f| !f.starts_with("_staging")));
}

#[test]
fn s3_serve_keeps_its_label_log_and_snapshots_on_the_server() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("g");
    gen(&data, 600, 9);
    let server = S3Server::start(&["pool", "served"]);
    upload(&server, &data.join("pairs"), "s3://pool/pairs");
    let ids: Vec<String> = read_rows(&data.join("pairs"))
        .iter()
        .filter_map(|r| r["pair_id"].as_str().map(str::to_string))
        .collect();
    let addr = format!("127.0.0.1:{}", free_port());
    let mut child = Command::new(env!("CARGO_BIN_EXE_synpref"))
        .args([
            "serve",
            "--pairs",
            "s3://pool/pairs",
            "--out",
            "s3://served/run",
            "--listen",
            &addr,
            "--workers",
            "2",
            "--format",
            "conversational",
            "--no-progress",
        ])
        .envs(server.env())
        .env("SYNPREF_TOKEN", TOKEN)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while std::net::TcpStream::connect(&addr).is_err() {
        assert!(std::time::Instant::now() < deadline, "serve did not start");
        assert!(child.try_wait().unwrap().is_none(), "serve exited");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    // Two batches, a snapshot after each: every snapshot pass uses the labels of its
    // own epoch, and replaces the one before without a moment where the manifest lists
    // a part that is not there.
    let snapshot = server.file("served/run/snapshot");
    let mut first_parts = Vec::new();
    for (batch, range) in [(0, 0..12), (1, 12..20)] {
        let body: String = ids[range]
            .iter()
            .enumerate()
            .map(|(i, id)| {
                let v = if i % 3 == 0 { "rejected" } else { "chosen" };
                format!("{{\"pair_id\": \"{id}\", \"verdict\": \"{v}\"}}\n")
            })
            .collect();
        let (status, reply) = http(&addr, "POST", "/v1/labels", Some(TOKEN), body.as_bytes());
        assert_eq!(status, 200, "{reply}");
        let (status, reply) = http(&addr, "POST", "/v1/snapshot", Some(TOKEN), b"");
        assert_eq!(status, 200, "{reply}");
        let listed = manifest_parts(&snapshot);
        for part in &listed {
            assert!(
                snapshot.join(part).exists(),
                "batch {batch}: {part} is listed but not there"
            );
        }
        if batch == 0 {
            first_parts = listed;
        } else {
            // The replaced version's parts are still there for a reader that read its
            // manifest (they go after snapshots::GRACE); export reads the listed ones.
            for part in &first_parts {
                assert!(snapshot.join(part).exists(), "{part} went at once");
            }
            server.synpref(&[
                "export",
                "--from",
                "s3://served/run/snapshot",
                "--out",
                "s3://served/exported",
                "--format",
                "trl",
            ]);
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    // The acknowledged labels are in the log on the server, and the log is itself a
    // gold-label input a curate run reads from S3.
    let log_dir = server.file("served/run/labels-log");
    let log = files_under(&log_dir);
    assert_eq!(log.len(), 2, "{log:?}");
    let lines: usize = log
        .iter()
        .map(|f| {
            std::fs::read_to_string(log_dir.join(f))
                .unwrap()
                .lines()
                .count()
        })
        .sum();
    assert_eq!(lines, 20);
    let r = report(&snapshot);
    // Every label is in force (a label on a duplicate row leaves it a duplicate).
    let human = r["human_agrees"].as_u64().unwrap() + r["human_corrected"].as_u64().unwrap();
    assert!((15..=20).contains(&human), "{r}");
    server.synpref(&[
        "curate",
        "--pairs",
        "s3://pool/pairs",
        "--gold",
        "s3://served/run/labels-log",
        "--out",
        "s3://served/check",
        "--workers",
        "2",
        "--format",
        "conversational",
        "--no-progress",
    ]);
    assert_eq!(
        read_rows(&server.file("served/check/curated")),
        manifest_rows(&snapshot, "curated/"),
        "serve's snapshot on S3 equals a curate run on its S3 label log"
    );
    // Snapshots are laid out as --format says, with their dataset card.
    let row = &manifest_rows(&snapshot, "curated/")[0];
    assert!(
        row.get("prompt").is_none() && row["chosen"].is_array(),
        "{row}"
    );
    assert!(std::fs::read_to_string(snapshot.join("README.md"))
        .unwrap()
        .contains("--format conversational"));
}

/// The parts a committed output's manifest.json lists (paths under the output).
fn manifest_parts(out: &Path) -> Vec<String> {
    let m: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("manifest.json")).unwrap()).unwrap();
    m["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap().to_string())
        .collect()
}

/// The rows of the parts the manifest lists under `prefix`, sorted as `read_rows`
/// sorts (a listing of the directory may also hold a replaced version's parts).
fn manifest_rows(out: &Path, prefix: &str) -> Vec<Value> {
    let only = tempfile::tempdir().unwrap();
    for part in manifest_parts(out).iter().filter(|p| p.starts_with(prefix)) {
        let name = Path::new(part).file_name().unwrap();
        std::fs::copy(out.join(part), only.path().join(name)).unwrap();
    }
    read_rows(only.path())
}

/// A static file server on loopback that answers HEAD and ranged GETs (what
/// object_store's HTTP store sends), on its own thread.
fn serve_files_over_http(root: PathBuf) -> String {
    use axum::body::Body;
    use axum::http::{header, HeaderMap, Method, StatusCode};
    use axum::response::Response;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let handler = move |method: Method, uri: axum::http::Uri, headers: HeaderMap| {
                let root = root.clone();
                async move {
                    let path = root.join(uri.path().trim_start_matches('/'));
                    let Ok(bytes) = std::fs::read(&path) else {
                        return Response::builder()
                            .status(StatusCode::NOT_FOUND)
                            .body(Body::empty())
                            .unwrap();
                    };
                    let len = bytes.len();
                    let range = headers
                        .get(header::RANGE)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.strip_prefix("bytes="))
                        .and_then(|v| v.split_once('-'))
                        .map(|(a, b)| {
                            let start: usize = a.parse().unwrap_or(0);
                            let end: usize = b.parse().map(|e: usize| e + 1).unwrap_or(len);
                            (start, end.min(len))
                        });
                    let builder = Response::builder()
                        .header(header::ACCEPT_RANGES, "bytes")
                        .header(header::LAST_MODIFIED, "Mon, 30 Nov 2026 00:00:00 GMT")
                        .header(header::ETAG, format!("\"{len}\""));
                    let (status, body, builder) = match range {
                        Some((start, end)) => (
                            StatusCode::PARTIAL_CONTENT,
                            bytes[start..end].to_vec(),
                            builder.header(
                                header::CONTENT_RANGE,
                                format!("bytes {start}-{}/{len}", end - 1),
                            ),
                        ),
                        None => (StatusCode::OK, bytes, builder),
                    };
                    let n = body.len();
                    let body = if method == Method::HEAD {
                        Vec::new()
                    } else {
                        body
                    };
                    builder
                        .status(status)
                        .header(header::CONTENT_LENGTH, n)
                        .body(Body::from(body))
                        .unwrap()
                }
            };
            let app = axum::Router::new().fallback(handler);
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
    });
    format!("http://{addr}")
}

#[test]
fn http_reads_a_parquet_pool_and_gold_file_served_on_loopback() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("g");
    gen(&data, 2_000, 41);
    let pool_file = std::fs::read_dir(data.join("pairs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "parquet"))
        .unwrap();
    let base = serve_files_over_http(data.clone());
    let name = pool_file
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let out_http = tmp.path().join("http");
    let out_local = tmp.path().join("local");
    ok(&[
        "curate",
        "--pairs",
        &format!("{base}/pairs/{name}"),
        "--gold",
        &format!("{base}/gold.parquet"),
        "--out",
        s(&out_http),
        "--no-progress",
    ]);
    curate_ok(&pool_file, &data.join("gold.parquet"), &out_local, &[]);
    assert_accounting(&out_http);
    assert_eq!(
        read_rows(&out_http.join("curated")),
        read_rows(&out_local.join("curated"))
    );
}
