//! Serve's HTTP API (axum, on its own tokio runtime), started by the binary so that
//! the jobs crate starts no runtime or server (`synpref_jobs::serve::run_serve` is
//! handed `start`):
//!
//! - `POST /v1/labels`: a JSONL body of gold labels. All lines are checked before any is
//!   taken; a bad line fails the request with 400 naming the line. The reply comes
//!   after the batch is durably in the label log: an acknowledged label is never lost.
//!   While more than `--max-pending-labels` wait to be applied it answers 503 with
//!   `Retry-After` and takes nothing.
//! - `GET /v1/status`: JSON (`Status`).
//! - `GET /metrics`: Prometheus text format.
//! - `POST /v1/snapshot`: compacts, and replies once the snapshot is written.
//!
//! Every endpoint needs `Authorization: Bearer TOKEN`; the token is compared in constant
//! time (`subtle`), so response timing does not reveal how much of a guess was right.

use std::fmt::Write as _;
use std::sync::mpsc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use subtle::ConstantTimeEq;
use synpref_engine::side::parse_label_lines;
use synpref_engine::{Error, Result};

use synpref_jobs::serve::{Api, Control, Ingest};

/// Blocks SIGTERM and SIGINT in the calling thread, and so in every thread it starts
/// afterwards: called first thing by `synpref serve`, so that these signals reach only
/// the thread `start` waits for them on (`stop_on_signals`), which stops serve cleanly.
pub fn block_stop_signals() {
    // SAFETY: plain libc calls on a signal set this function owns.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}

/// How long a serve process other than process 0 waits, after SIGTERM or SIGINT, for
/// process 0 to end the job before it exits anyway. Process 0 finishes the epoch in
/// flight first, and an epoch under the load benchmark (docs/benchmarks.md, "serve
/// under load") takes well under a second: a wait this long means process 0 is not
/// stopping (it was not signalled, or it is stuck).
const FOLLOWER_STOP_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Waits for SIGTERM or SIGINT (blocked by `block_stop_signals`), one at a time.
fn wait_for_stop_signal() -> &'static str {
    // SAFETY: sigwait on a set of blocked signals, as POSIX prescribes.
    let signal = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        let mut signal = 0;
        libc::sigwait(&set, &mut signal);
        signal
    };
    if signal == libc::SIGINT {
        "SIGINT"
    } else {
        "SIGTERM"
    }
}

/// SIGTERM or SIGINT on a serve process other than process 0 (which holds the API and
/// the controller): a stopped job (a process group signalled at once, `launch` ended)
/// signals every process, and process 0 then finishes the epoch in flight on every
/// worker, which needs this process alive. So this process says so and waits for the
/// job to end, up to [`FOLLOWER_STOP_WAIT`]; after that, or at a second signal, it
/// exits (exit 0: its pool store is left to the next serve, which removes it through
/// its free lock, and process 0 ends naming the lost process).
pub fn follow_stop_signals(process: usize) -> Result<()> {
    std::thread::Builder::new()
        .name("synpref-signals".into())
        .spawn(move || {
            let name = wait_for_stop_signal();
            eprintln!(
                "synpref serve (process {process}): {name}: waiting up to {} s for process 0 to stop the job (stop it too); a second signal exits at once",
                FOLLOWER_STOP_WAIT.as_secs()
            );
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                let _ = tx.send(wait_for_stop_signal());
            });
            match rx.recv_timeout(FOLLOWER_STOP_WAIT) {
                Ok(again) => eprintln!("synpref serve (process {process}): {again}: exiting now"),
                Err(_) => eprintln!(
                    "synpref serve (process {process}): process 0 did not stop the job within {} s: exiting",
                    FOLLOWER_STOP_WAIT.as_secs()
                ),
            }
            std::process::exit(0);
        })
        .map_err(|e| Error::other("signal thread", e))?;
    Ok(())
}

/// Waits for SIGTERM or SIGINT (blocked by `block_stop_signals`) on a thread of its
/// own. The first asks serve's controller to stop after the epoch in flight; one while
/// the pool still loads, or a second, ends the process at once (exit 0: every
/// acknowledged label is in the log, and a restart applies it).
fn stop_on_signals(api: Api) -> Result<()> {
    std::thread::Builder::new()
        .name("synpref-signals".into())
        .spawn(move || {
            let mut asked = false;
            loop {
                let name = wait_for_stop_signal();
                let loading =
                    api.status.lock().expect("status").state == synpref_jobs::serve::ServeState::Loading;
                if asked || loading {
                    eprintln!(
                        "synpref serve: {name}: exiting now{}; every acknowledged label is in the label log",
                        if loading { " (the pool was still loading)" } else { "" }
                    );
                    std::process::exit(0);
                }
                asked = true;
                let _ = api
                    .control
                    .lock()
                    .expect("control")
                    .send(Control::Stop(name.to_string()));
            }
        })
        .map_err(|e| Error::other("signal thread", e))?;
    Ok(())
}

/// Binds `listen` and serves on a background thread; returns the bound address.
pub fn start(listen: &str, api: Api) -> Result<std::net::SocketAddr> {
    stop_on_signals(api.clone())?;
    let listener = std::net::TcpListener::bind(listen)
        .map_err(|e| Error::setting("--listen", format!("cannot bind {listen}: {e}")))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| Error::other("--listen", e))?;
    let addr = listener
        .local_addr()
        .map_err(|e| Error::other("--listen", e))?;
    let limit = api.max_body_bytes;
    let app = Router::new()
        .route("/v1/labels", post(post_labels))
        .route("/v1/status", get(get_status))
        .route("/v1/snapshot", post(post_snapshot))
        .route("/metrics", get(get_metrics))
        .layer(DefaultBodyLimit::max(limit))
        .route_layer(middleware::from_fn_with_state(api.clone(), require_token))
        .with_state(api);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("synpref-http")
        .enable_all()
        .build()
        .map_err(|e| Error::other("http runtime", e))?;
    std::thread::Builder::new()
        .name("synpref-http".into())
        .spawn(move || {
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                if let Err(e) = axum::serve(listener, app).await {
                    tracing::error!(error = %e, "http server stopped");
                }
            })
        })
        .map_err(|e| Error::other("http thread", e))?;
    Ok(addr)
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(serde_json::json!({ "error": message.into() }))).into_response()
}

/// The token of an `Authorization` header value with the Bearer scheme. The scheme is
/// case-insensitive (RFC 9110 §11.1: "It uses a case-insensitive token to identify the
/// authentication scheme"), and one or more spaces separate it from the credentials
/// (§11.4: `auth-scheme [ 1*SP ( token68 / ... ) ]`).
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim_start_matches(' '))
}

#[cfg(test)]
#[test]
fn the_bearer_scheme_is_case_insensitive_and_other_schemes_are_not_bearer() {
    for value in ["Bearer t0k", "bearer t0k", "BEARER t0k", "BeArEr   t0k"] {
        assert_eq!(bearer_token(value), Some("t0k"), "{value}");
    }
    for value in ["Basic t0k", "Bearert0k", "t0k", "", "Bearer"] {
        assert_eq!(bearer_token(value), None, "{value}");
    }
}

async fn require_token(State(api): State<Api>, request: Request, next: Next) -> Response {
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_token)
        .unwrap_or("");
    if bool::from(given.as_bytes().ct_eq(api.token.as_bytes())) && !api.token.is_empty() {
        next.run(request).await
    } else {
        let mut r = error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, "Bearer".parse().expect("static"));
        r
    }
}

/// Seconds a client is asked to wait when the backlog is over its bound: about one
/// epoch of a large pool (docs/benchmarks.md), after which the backlog has been taken.
const RETRY_AFTER_S: u32 = 2;

async fn post_labels(State(api): State<Api>, body: Bytes) -> Response {
    let labels = match parse_label_lines(&body, "request body") {
        Ok(l) => l,
        Err(Error::BadInput { location, message }) => {
            // JSONL rows are numbered by line from 1.
            let line = location.row.unwrap_or(0);
            let column = location
                .column
                .map(|c| format!(", column `{c}`"))
                .unwrap_or_default();
            let body = serde_json::json!({
                "error": format!("line {line}{column}: {message}; no label of this request was taken"),
                "line": line,
            });
            return (StatusCode::BAD_REQUEST, Json(body)).into_response();
        }
        Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    if labels.is_empty() {
        return error(StatusCode::BAD_REQUEST, "request body: no labels");
    }
    let n = labels.len();
    let checked = labels.clone();
    let pending = api.status.lock().expect("status").labels_pending;
    if pending + n as u64 > api.max_pending_labels {
        // Nothing is logged: the client sends the same batch again later.
        let mut r = error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "{pending} labels are waiting to be applied (--max-pending-labels {}): nothing of this request was taken; send it again after Retry-After",
                api.max_pending_labels
            ),
        );
        r.headers_mut()
            .insert(header::RETRY_AFTER, RETRY_AFTER_S.into());
        return r;
    }
    let (tx, rx) = mpsc::channel();
    let sent = api
        .ingest
        .lock()
        .expect("ingest")
        .send(Ingest::Http { labels, reply: tx });
    if sent.is_err() {
        return error(StatusCode::SERVICE_UNAVAILABLE, "serve is shutting down");
    }
    match tokio::task::spawn_blocking(move || rx.recv()).await {
        Ok(Ok(Ok(seq))) => {
            // Ids no pool row has: logged all the same (the pool may be re-run), and
            // said here so that a typo does not lose a person's work without a trace.
            // `null` while the first pass runs (the pool's ids are not known yet).
            let unmatched = api
                .pool_keys
                .get()
                .map(|keys| synpref_jobs::serve::unmatched_ids(keys, &checked));
            Json(serde_json::json!({ "accepted": n, "epoch": seq, "unmatched": unmatched }))
                .into_response()
        }
        Ok(Ok(Err(e))) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("not logged: {e}"),
        ),
        _ => error(StatusCode::SERVICE_UNAVAILABLE, "serve is shutting down"),
    }
}

async fn get_status(State(api): State<Api>) -> Response {
    let st = api.status.lock().expect("status").clone();
    Json(st).into_response()
}

async fn post_snapshot(State(api): State<Api>) -> Response {
    let (tx, rx) = mpsc::channel();
    if api
        .control
        .lock()
        .expect("control")
        .send(Control::Snapshot(tx))
        .is_err()
    {
        return error(StatusCode::SERVICE_UNAVAILABLE, "serve is shutting down");
    }
    match tokio::task::spawn_blocking(move || rx.recv()).await {
        Ok(Ok(Ok(report))) => Json(report).into_response(),
        Ok(Ok(Err(e))) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        _ => error(StatusCode::SERVICE_UNAVAILABLE, "serve is shutting down"),
    }
}

async fn get_metrics(State(api): State<Api>) -> Response {
    let st = api.status.lock().expect("status").clone();
    let mut m = String::new();
    let mut gauge = |name: &str, help: &str, value: f64| {
        let _ = writeln!(m, "# HELP synpref_serve_{name} {help}");
        let _ = writeln!(m, "# TYPE synpref_serve_{name} gauge");
        let _ = writeln!(m, "synpref_serve_{name} {value}");
    };
    gauge(
        "epoch",
        "Last applied epoch (label batch).",
        st.epoch as f64,
    );
    gauge(
        "ready",
        "1 once every epoch logged before this process started is applied (state ready).",
        if st.state == synpref_jobs::serve::ServeState::Ready {
            1.0
        } else {
            0.0
        },
    );
    gauge(
        "applied_epoch",
        "Epoch the decisions reflect (epoch shows what was acknowledged).",
        st.applied_epoch as f64,
    );
    gauge(
        "labels_total",
        "Label records applied so far.",
        st.labels_total as f64,
    );
    gauge(
        "labels_pending",
        "Label records logged but not applied yet.",
        st.labels_pending as f64,
    );
    gauge(
        "epochs_applied",
        "Epochs this process applied (each takes every batch waiting: group commit).",
        st.epochs_applied as f64,
    );
    gauge("pool_pairs", "Scored pairs held.", st.pool_pairs as f64);
    gauge(
        "state_bytes_per_pair",
        "Memory of the per-pair arrays and index per scored pair.",
        st.state_bytes_per_pair,
    );
    if let Some(u) = &st.last_update {
        gauge(
            "last_update_seconds",
            "Latency of the last epoch, from batch to changelog.",
            u.latency_s,
        );
        gauge(
            "last_update_rescored_pairs",
            "Pairs re-scored in the last epoch.",
            u.rescored_pairs as f64,
        );
    }
    let _ = writeln!(m, "# HELP synpref_serve_rows Rows per reason.");
    let _ = writeln!(m, "# TYPE synpref_serve_rows gauge");
    for (reason, n) in &st.reasons {
        let _ = writeln!(m, "synpref_serve_rows{{reason=\"{reason}\"}} {n}");
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], m).into_response()
}
