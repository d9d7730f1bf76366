#!/usr/bin/env python3
"""Frame-rate cost of the daemon's integrations, measured side by side in one run.

Runs the camera-classifier binary on the sample photos replayed faster than the model can
classify them (so the loop is inference-bound), once per configuration and round:

  off        no [mqtt], no [http]
  mqtt       results to a local mosquitto (started here on a free port)
  http       the status page, with a client doing what the page does (GET /api/latest every
             0.5 s, /snapshot.jpg when the result changes) plus a Prometheus scrape each second
  mqtt+http  both

Configurations alternate within each round (off, mqtt, http, both, off, ...) so drift on a
shared machine hits them alike. Prints the median classifications per second of each, its
ratio to `off`, and the median inference p50 the daemon reported.

    scripts/bench-integrations.py [--model demo-out/bit-s-r50x1-int8.onnx] [--seconds 20]
                                  [--rounds 3] [--threads 2]

The default model is the demo's int8 BiT-S-R50x1 (run scripts/demo.sh first).
"""

import argparse
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def poller(port, stop, counts):
    """What the status page does, plus a metrics scrape each second."""
    base = f"http://127.0.0.1:{port}"
    last_seq, last_scrape = None, 0.0
    while not stop.is_set():
        try:
            with urllib.request.urlopen(base + "/api/latest", timeout=5) as r:
                body = r.read()
            counts["latest"] += 1
            m = re.search(rb'"snapshot_seq":(\d+)', body)
            if m and m.group(1) != last_seq:
                last_seq = m.group(1)
                with urllib.request.urlopen(base + "/snapshot.jpg", timeout=5) as r:
                    r.read()
                counts["snapshot"] += 1
            if time.monotonic() - last_scrape >= 1.0:
                last_scrape = time.monotonic()
                with urllib.request.urlopen(base + "/metrics", timeout=5) as r:
                    r.read()
                counts["metrics"] += 1
        except OSError:
            counts["errors"] += 1
        stop.wait(0.5)


def run_once(daemon, model, threads, seconds, mqtt_port, http_port, workdir):
    cfg = os.path.join(workdir, "bench.toml")
    text = f"""[model]
path = "{model}"
threads = {threads}
top_k = 5
[replay]
path = "{ROOT}/samples/images"
fps = 60
at_end = "loop"
[output]
json = false
status_interval_s = 3600
"""
    if mqtt_port:
        text += f'[mqtt]\nhost = "127.0.0.1"\nport = {mqtt_port}\ndevice_id = "bench"\nhome_assistant = true\n'
    if http_port:
        text += f'[http]\nbind = "127.0.0.1:{http_port}"\n'
    with open(cfg, "w") as f:
        f.write(text)
    p = subprocess.Popen([daemon, "--config", cfg], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    stop, counts = threading.Event(), {"latest": 0, "snapshot": 0, "metrics": 0, "errors": 0}
    t = None
    if http_port:
        # Wait for the server before starting the client.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", http_port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        t = threading.Thread(target=poller, args=(http_port, stop, counts))
        t.start()
    time.sleep(seconds)
    stop.set()
    if t:
        t.join()
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=30)
    m = re.search(r"stopping: (\d+) classified \(([\d.]+)/s\), inference p50 ([\d.]+) ms", err)
    if p.returncode != 0 or not m:
        sys.exit(f"the daemon failed (exit {p.returncode}):\n{err}")
    return float(m.group(2)), float(m.group(3)), counts


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=os.path.join(ROOT, "demo-out/bit-s-r50x1-int8.onnx"))
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--daemon", default=os.path.join(os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")), "release/camera-classifier"))
    a = ap.parse_args()
    if not os.path.exists(a.model):
        sys.exit(f"{a.model}: no such model (run scripts/demo.sh first, or pass --model)")
    if not os.path.exists(a.daemon):
        sys.exit(f"{a.daemon}: build it first: cargo build --release -p camera-classifier")
    mosquitto = "/usr/sbin/mosquitto"
    if not os.path.exists(mosquitto):
        sys.exit("mosquitto is not installed (apt-get install mosquitto)")
    with tempfile.TemporaryDirectory() as work:
        mqtt_port = free_port()
        conf = os.path.join(work, "mosquitto.conf")
        with open(conf, "w") as f:
            f.write(f"listener {mqtt_port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
        broker = subprocess.Popen([mosquitto, "-c", conf], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            configs = [("off", False, False), ("mqtt", True, False), ("http", False, True), ("mqtt+http", True, True)]
            rates = {c[0]: [] for c in configs}
            p50s = {c[0]: [] for c in configs}
            served = {c[0]: [] for c in configs}
            for r in range(a.rounds):
                for name, mqtt, http in configs:
                    rate, p50, counts = run_once(
                        a.daemon, os.path.abspath(a.model), a.threads, a.seconds,
                        mqtt_port if mqtt else None, free_port() if http else None, work)
                    rates[name].append(rate)
                    p50s[name].append(p50)
                    served[name].append(counts)
                    print(f"round {r + 1} {name:10} {rate:6.2f} classified/s, inference p50 {p50:.1f} ms"
                          + (f", http {counts}" if http else ""), flush=True)
        finally:
            broker.terminate()
            broker.wait()
    base = statistics.median(rates["off"])
    print()
    print(f"model {os.path.basename(a.model)}, {a.threads} inference threads, {a.seconds:.0f} s x {a.rounds} rounds per configuration")
    print(f"{'integrations':12} {'classified/s (median)':>22} {'vs off':>8} {'inference p50 ms':>17}")
    for name, _, _ in configs:
        med = statistics.median(rates[name])
        print(f"{name:12} {med:22.2f} {med / base:8.3f} {statistics.median(p50s[name]):17.1f}")


if __name__ == "__main__":
    main()
