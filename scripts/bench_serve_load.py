#!/usr/bin/env python3
"""Serve under label load (issue 30 item 2), a benchmark, not a timed test.

    python3 scripts/bench_serve_load.py BIN [--pairs 20000] [--clients 8] [--labels 50000]

1. `BIN gen` a pool of --pairs pairs (seed 9) in a temporary directory, start `BIN serve`
   on it (one worker per core, no automatic snapshots) and wait until it is ready.
2. --clients threads post 5-label batches of random pool ids as fast as they can until
   --labels records are acknowledged (a 503 is counted and the batch sent again).
3. Prints the acknowledged rate, the largest labels_pending seen, the epochs serve
   applied for the batches it took, and the seconds from the last acknowledgement until
   labels_pending is 0 (the target: 5 s).
4. SIGKILLs serve at once (its saved state is the first pass's: every label acknowledged
   is logged after it), starts it again and prints the seconds until it is `ready`
   (the target: 15 s), and how many epochs the replay took.

Needs pyarrow (which scripts/test.sh installs) to read the pool's ids.
"""

import argparse
import http.client
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import pyarrow.parquet as pq

TOKEN = "bench-token"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request(port, method, path, body=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    conn.request(method, path, body=body, headers={"Authorization": f"Bearer {TOKEN}"})
    r = conn.getresponse()
    data = r.read()
    conn.close()
    return r.status, data


def status(port):
    code, body = request(port, "GET", "/v1/status")
    assert code == 200, body
    return json.loads(body)


def start_serve(binary, pairs, out, port, workers):
    env = dict(os.environ, SYNPREF_TOKEN=TOKEN, RUST_LOG="warn")
    return subprocess.Popen(
        [binary, "serve", "--pairs", pairs, "--out", out, "--listen", f"127.0.0.1:{port}",
         "--workers", str(workers), "--snapshot-every", "0", "--no-progress"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )


def wait_ready(port, started, limit_s=600):
    while True:
        try:
            st = status(port)
            if st["state"] == "ready":
                return time.monotonic() - started, st
        except (ConnectionError, OSError):
            pass
        if time.monotonic() - started > limit_s:
            sys.exit("serve did not become ready")
        time.sleep(0.02)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("binary")
    ap.add_argument("--pairs", type=int, default=20000)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--labels", type=int, default=50000)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="bench-serve-load-")
    data, out = os.path.join(tmp, "g"), os.path.join(tmp, "serve")
    subprocess.run([a.binary, "gen", "--pairs", str(a.pairs), "--out", data, "--seed", "9"],
                   check=True, stdout=subprocess.DEVNULL)
    pairs = os.path.join(data, "pairs")
    ids = pq.read_table(pairs, columns=["pair_id"]).column("pair_id").to_pylist()
    port = free_port()
    t0 = time.monotonic()
    serve = start_serve(a.binary, pairs, out, port, a.workers)
    load_s, _ = wait_ready(port, t0)
    print(f"pool {a.pairs} pairs, {a.workers} workers: ready in {load_s:.1f} s")

    lock = threading.Lock()
    taken = [0, 0, 0.0]  # labels acknowledged, 503s, time of the last acknowledgement
    peak = [0]
    stop = threading.Event()

    def client(seed):
        rng = random.Random(seed)
        while not stop.is_set():
            lines = [json.dumps({"pair_id": rng.choice(ids),
                                 "verdict": rng.choice(["chosen", "rejected"])}) for _ in range(5)]
            body = ("\n".join(lines) + "\n").encode()
            code, reply = request(port, "POST", "/v1/labels", body)
            with lock:
                if code == 503:
                    taken[1] += 1
                    continue
                assert code == 200, reply
                taken[0] += 5
                taken[2] = time.monotonic()
                if taken[0] >= a.labels:
                    stop.set()

    def watch():
        while not stop.is_set():
            peak[0] = max(peak[0], status(port)["labels_pending"])
            time.sleep(0.05)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(a.clients)]
    watcher = threading.Thread(target=watch)
    t_post = time.monotonic()
    for t in threads + [watcher]:
        t.start()
    for t in threads + [watcher]:
        t.join()
    last_ack = taken[2]
    post_s = last_ack - t_post
    while True:
        st = status(port)
        if st["labels_pending"] == 0:
            drained = time.monotonic() - last_ack
            break
        time.sleep(0.01)
    print(f"{a.clients} clients: {taken[0]} labels acknowledged in {post_s:.1f} s "
          f"({taken[0] / post_s:.0f} labels/s, {taken[0] / 5 / post_s:.0f} requests/s), "
          f"{taken[1]} answered 503")
    print(f"labels_pending peak {peak[0]}; 0 again {drained:.2f} s after the last acknowledgement; "
          f"{st.get('epochs_applied', '?')} epochs for {st['epoch']} logged batches; "
          f"last epoch {st['last_update'].get('batches', 1)} batches, {st['last_update']['latency_s']:.3f} s")

    serve.send_signal(signal.SIGKILL)
    serve.wait()
    t0 = time.monotonic()
    serve = start_serve(a.binary, pairs, out, port, a.workers)
    ready_s, st = wait_ready(port, t0)
    print(f"restart with {st['labels_total']} labels logged after the saved state: ready in "
          f"{ready_s:.1f} s, {st.get('epochs_applied', '?')} replay epochs, "
          f"recovered_from_saved_state={st['recovered_from_saved_state']}")
    serve.send_signal(signal.SIGKILL)
    serve.wait()
    subprocess.run(["rm", "-rf", tmp])


if __name__ == "__main__":
    main()
