#!/usr/bin/env python3
"""Daemon soak: the release camera-classifier on a replay at full rate, with the status page
polled (/api/latest, /snapshot.jpg, /metrics), an /events stream held and reconnected, and
MQTT results published to a local mosquitto, for FRAMES results (default 10,000). Every
second it samples the daemon's RSS, threads and open file descriptors; at the end it prints
the table and checks that they stay flat after the warm-up:

  RSS: the last quarter's maximum within RSS_SLACK_MB (16) of the warm-up maximum
  threads: the same count throughout the steady state
  file descriptors: never more than the warm-up maximum + FD_SLACK (8)

Usage: scripts/soak.py MODEL [FRAMES]   (MODEL: an .onnx from bit-tool; the demo writes
demo-out/bit-s-r50x1-int8.onnx). Needs mosquitto on PATH; builds nothing (run
`cargo build --release -p camera-classifier` first). Exit status 1 when a bound is broken.
"""
import http.client
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

RSS_SLACK_MB = 16
FD_SLACK = 8


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sample(pid):
    status = open(f"/proc/{pid}/status").read()
    field = lambda name: int(next(l.split()[1] for l in status.splitlines() if l.startswith(name + ":")))
    return field("VmRSS") / 1024.0, field("Threads"), len(os.listdir(f"/proc/{pid}/fd"))


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    model = os.path.abspath(sys.argv[1])
    frames = int(sys.argv[2]) if len(sys.argv) > 2 else 10_000
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    daemon = os.path.join(os.environ.get("CARGO_TARGET_DIR", os.path.join(root, "target")), "release", "camera-classifier")
    mosquitto = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    work = tempfile.mkdtemp(prefix="soak-")
    http_port, mqtt_port = free_port(), free_port()
    with open(os.path.join(work, "mosquitto.conf"), "w") as f:
        f.write(f"listener {mqtt_port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    broker = subprocess.Popen([mosquitto, "-c", os.path.join(work, "mosquitto.conf")],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    config = os.path.join(work, "soak.toml")
    with open(config, "w") as f:
        f.write(f"""[model]
path = "{model}"
threads = 1
[replay]
path = "{root}/samples/images"
fps = 1000
at_end = "loop"
[mode]
kind = "continuous"
[http]
bind = "127.0.0.1:{http_port}"
preview_fps = 5
[mqtt]
host = "127.0.0.1"
port = {mqtt_port}
device_id = "soak"
""")
    time.sleep(0.5)
    proc = subprocess.Popen([daemon, "--config", config], stdout=subprocess.PIPE,
                            stderr=open(os.path.join(work, "daemon.log"), "w"), text=True)
    results = [0]
    started = time.time()

    def read_results():
        for _ in proc.stdout:
            results[0] += 1

    threading.Thread(target=read_results, daemon=True).start()
    stop = threading.Event()
    polls = {"ok": 0, "failed": 0, "events": 0}
    failures = []

    def poll():
        paths = ["/api/latest", "/snapshot.jpg", "/metrics", "/"]
        i = 0
        while not stop.is_set():
            try:
                c = http.client.HTTPConnection("127.0.0.1", http_port, timeout=5)
                for _ in range(20):  # keep-alive: 20 requests per connection
                    c.request("GET", paths[i % len(paths)], headers={"Host": "localhost"})
                    r = c.getresponse()
                    r.read()
                    polls["ok" if r.status in (200, 503) else "failed"] += 1
                    i += 1
                    time.sleep(0.05)
                c.close()
            except OSError as e:
                if stop.is_set():
                    break  # the daemon is being stopped: a request cut now is expected
                polls["failed"] += 1
                failures.append(f"{time.time() - started:.1f} s, {paths[i % len(paths)]}: {e!r}")
                time.sleep(0.2)

    def events():
        while not stop.is_set():
            try:
                c = http.client.HTTPConnection("127.0.0.1", http_port, timeout=5)
                c.request("GET", "/events", headers={"Host": "localhost"})
                r = c.getresponse()
                deadline = time.time() + 5
                while time.time() < deadline and not stop.is_set():
                    if r.fp.readline().startswith(b"data: "):
                        polls["events"] += 1
                c.close()  # and reconnect: streams opened and closed all along
            except OSError:
                time.sleep(0.2)

    # The page is up once the model has loaded; failures count from then on.
    deadline = time.time() + 120
    while True:
        try:
            c = http.client.HTTPConnection("127.0.0.1", http_port, timeout=5)
            c.request("GET", "/healthz", headers={"Host": "localhost"})
            c.getresponse().read()
            c.close()
            break
        except OSError:
            if time.time() > deadline or proc.poll() is not None:
                sys.exit(f"soak: the status page never came up; see {work}/daemon.log")
            time.sleep(0.1)
    for target in (poll, poll, events):
        threading.Thread(target=target, daemon=True).start()
    samples = []
    while results[0] < frames:
        if proc.poll() is not None:
            sys.exit(f"soak: the daemon exited with {proc.returncode}; see {work}/daemon.log")
        samples.append((time.time() - started, results[0]) + sample(proc.pid))
        time.sleep(1)
    samples.append((time.time() - started, results[0]) + sample(proc.pid))
    stop.set()
    time.sleep(0.5)  # the pollers finish the request they are in
    proc.terminate()
    code = proc.wait(timeout=20)
    broker.terminate()
    elapsed = time.time() - started

    print(f"{'t (s)':>7} {'results':>8} {'RSS (MB)':>9} {'threads':>8} {'fds':>5}")
    step = max(1, len(samples) // 20)
    for t, n, rss, threads, fds in samples[::step] + [samples[-1]]:
        print(f"{t:7.0f} {n:8d} {rss:9.1f} {threads:8d} {fds:5d}")
    warm = [s for s in samples if s[1] >= min(500, frames // 10)]
    head, tail = warm[: max(1, len(warm) // 4)], warm[-max(1, len(warm) // 4):]
    rss_warm, rss_end = max(s[2] for s in head), max(s[2] for s in tail)
    threads = sorted({s[3] for s in warm})
    fd_warm, fd_max = max(s[4] for s in head), max(s[4] for s in warm)
    print(f"{results[0]} results in {elapsed:.0f} s ({results[0] / elapsed:.1f}/s); "
          f"{polls['ok']} page requests ({polls['failed']} failed), {polls['events']} events; "
          f"SIGTERM exit {code}")
    print(f"RSS {rss_warm:.1f} MB after warm-up, {rss_end:.1f} MB at the end; threads {threads}; "
          f"fds {fd_warm} after warm-up, at most {fd_max}")
    for f in failures[:10]:
        print("page request failed at", f)
    broken = []
    if rss_end > rss_warm + RSS_SLACK_MB:
        broken.append(f"RSS grew by {rss_end - rss_warm:.1f} MB")
    if len(threads) != 1:
        broken.append(f"thread count changed: {threads}")
    if fd_max > fd_warm + FD_SLACK:
        broken.append(f"file descriptors grew to {fd_max}")
    if code != 0 or polls["failed"] > 0:
        broken.append(f"exit {code}, {polls['failed']} failed page requests")
    if broken:
        sys.exit("soak: " + "; ".join(broken) + f" (logs in {work})")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
