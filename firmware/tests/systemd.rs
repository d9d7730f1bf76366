//! systemd integration: the notify protocol as the daemon speaks it (against a test
//! `NOTIFY_SOCKET`), the watchdog's dependence on frames, and the unit file.

mod common;

use std::os::unix::net::UnixDatagram;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;

/// Reads the notify socket on a thread, stamping each message with its arrival time
/// relative to `start`.
struct Collector {
    msgs: Arc<Mutex<Vec<(Duration, String)>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Collector {
    fn new(sock: UnixDatagram, start: Instant) -> Collector {
        let msgs = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (m, s) = (msgs.clone(), stop.clone());
        sock.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while !s.load(Ordering::Relaxed) {
                if let Ok(n) = sock.recv(&mut buf) {
                    let t = start.elapsed();
                    for line in String::from_utf8_lossy(&buf[..n]).lines() {
                        m.lock().unwrap().push((t, line.to_string()));
                    }
                }
            }
        });
        Collector { msgs, stop, thread: Some(thread) }
    }

    fn snapshot(&self) -> Vec<(Duration, String)> {
        self.msgs.lock().unwrap().clone()
    }

    /// Waits until `until` holds for the messages so far, at most `limit`.
    fn wait_for(
        &self,
        until: impl Fn(&[(Duration, String)]) -> bool,
        limit: Duration,
    ) -> Vec<(Duration, String)> {
        let end = Instant::now() + limit;
        loop {
            let m = self.snapshot();
            if until(&m) || Instant::now() > end {
                return m;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn finish(mut self) -> Vec<(Duration, String)> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap();
        self.snapshot()
    }
}

fn kinds(msgs: &[(Duration, String)]) -> Vec<&str> {
    msgs.iter().map(|(_, m)| m.split('=').next().unwrap()).collect()
}

#[test]
fn notify_sends_ready_watchdog_status_then_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    let replay = format!("[replay]\npath = {:?}\nfps = 20\n", samples().display().to_string());
    let config = write_config(dir.path(), &config_text(&replay, "[output]\nstatus_interval_s = 1\n"));
    let start = Instant::now();
    let collector = Collector::new(sock, start);
    let run = start_with(&config, &sock_path, 1_000_000);
    collector.wait_for(
        |m| {
            let k = kinds(m);
            k.contains(&"READY")
                && k.iter().filter(|k| **k == "WATCHDOG").count() >= 3
                && k.contains(&"STATUS")
        },
        Duration::from_secs(60),
    );
    run.signal(libc::SIGTERM);
    collector.wait_for(|m| kinds(m).contains(&"STOPPING"), Duration::from_secs(5));
    let (code, took, stderr) = run.wait(Duration::from_secs(10));
    assert_eq!(code, Some(0), "{stderr}");
    assert!(took < Duration::from_secs(2), "SIGTERM to exit: {took:?}");

    let all = collector.finish();
    let k = kinds(&all);
    eprintln!("notify messages: {all:?}");
    assert_eq!(k.first(), Some(&"READY"), "READY=1 first: {all:?}");
    assert_eq!(all[0].1, "READY=1");
    assert_eq!(k.last(), Some(&"STOPPING"), "STOPPING=1 last: {all:?}");
    assert_eq!(k.iter().filter(|k| **k == "READY").count(), 1);
    let status = all.iter().find(|(_, m)| m.starts_with("STATUS=")).expect("a STATUS line");
    assert!(status.1.contains("classified") && status.1.contains("inference p50"), "{}", status.1);
    // Pings at half the 1 s interval (frames come every 50 ms): consecutive ones 450 ms to
    // 1 s apart, never as late as the interval itself.
    let pings: Vec<Duration> = all.iter().filter(|(_, m)| m == "WATCHDOG=1").map(|(t, _)| *t).collect();
    for w in pings.windows(2) {
        let gap = w[1] - w[0];
        assert!(
            gap >= Duration::from_millis(450) && gap < Duration::from_millis(1000),
            "gap {gap:?} in {pings:?}"
        );
    }
}

fn start_with(config: &std::path::Path, sock: &std::path::Path, watchdog_usec: u64) -> Running {
    let mut c = daemon();
    c.arg("--config").arg(config).env("NOTIFY_SOCKET", sock).env("WATCHDOG_USEC", watchdog_usec.to_string());
    start(c)
}

#[test]
fn a_stalled_source_stops_the_watchdog_pings() {
    let dir = tempfile::tempdir().unwrap();
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    // Four frames at 10 fps, then nothing: a camera that stalls.
    let frames = dir.path().join("frames");
    std::fs::create_dir(&frames).unwrap();
    for i in 0..4 {
        std::fs::write(frames.join(format!("f{i}.16x8.yuyv")), vec![100u8 + i as u8; 16 * 8 * 2]).unwrap();
    }
    let replay =
        format!("[replay]\npath = {:?}\nfps = 10\nat_end = \"wait\"\n", frames.display().to_string());
    let config = write_config(dir.path(), &config_text(&replay, ""));
    let start = Instant::now();
    let collector = Collector::new(sock, start);
    let run = start_with(&config, &sock_path, 200_000);
    let mut results = Vec::new();
    while results.len() < 4 {
        results.push(run.next_json(Duration::from_secs(60)).expect("four frames"));
    }
    let last_result = start.elapsed();
    // Two more seconds of a silent source.
    std::thread::sleep(Duration::from_secs(2));
    assert!(run.next_json(Duration::from_millis(1)).is_none(), "no frame, no result");
    run.signal(libc::SIGTERM);
    let (code, _, stderr) = run.wait(Duration::from_secs(10));
    assert_eq!(code, Some(0), "{stderr}");
    let msgs = collector.finish();
    eprintln!("last result at {last_result:?}; notify messages: {msgs:?}");
    assert_eq!(kinds(&msgs).first(), Some(&"READY"), "{msgs:?}");
    let pings: Vec<Duration> = msgs.iter().filter(|(_, m)| m == "WATCHDOG=1").map(|(t, _)| *t).collect();
    assert!(!pings.is_empty(), "pings while frames flowed: {msgs:?}");
    let late: Vec<&Duration> =
        pings.iter().filter(|t| **t > last_result + Duration::from_millis(300)).collect();
    assert!(
        late.is_empty(),
        "watchdog pings after the source stalled at {last_result:?}: {late:?} (all: {pings:?})"
    );
    assert_eq!(kinds(&msgs).last(), Some(&"STOPPING"), "{msgs:?}");
    for (i, r) in results.iter().enumerate() {
        assert_eq!(r["frame_seq"], i as u64);
    }
}

/// `systemd-analyze verify` of the unit (with `drop_in` as `<unit>.d/<name>` if given) in a
/// scratch root holding the system's units, the daemon as /usr/bin/camera-classifier and a stub
/// for each of `stubs` (executables the unit names): (success, stderr). None without
/// systemd-analyze (said on stderr).
fn verify_in_scratch_root(drop_in: Option<&std::path::Path>, stubs: &[&str]) -> Option<(bool, String)> {
    let Ok(out) = std::process::Command::new("systemd-analyze").arg("--version").output() else {
        eprintln!("SKIPPED: systemd-analyze is not installed (Debian package systemd)");
        return None;
    };
    assert!(out.status.success());
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let units = r.join("etc/systemd/system");
    std::fs::create_dir_all(r.join("usr/bin")).unwrap();
    std::fs::create_dir_all(units.join("camera-classifier.service.d")).unwrap();
    std::fs::create_dir_all(r.join("usr/lib/systemd")).unwrap();
    std::fs::copy(env!("CARGO_BIN_EXE_camera-classifier"), r.join("usr/bin/camera-classifier")).unwrap();
    for stub in stubs {
        let path = r.join("usr/bin").join(stub);
        std::fs::write(&path, "#!/bin/sh\nexec \"$@\"\n").unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    }
    let copied = std::process::Command::new("cp")
        .args(["-r", "/lib/systemd/system"])
        .arg(r.join("usr/lib/systemd/"))
        .status()
        .unwrap();
    assert!(copied.success());
    let unit = repo_root().join("firmware/systemd/camera-classifier.service");
    std::fs::copy(&unit, units.join("camera-classifier.service")).unwrap();
    if let Some(drop_in) = drop_in {
        std::fs::copy(drop_in, units.join("camera-classifier.service.d").join(drop_in.file_name().unwrap()))
            .unwrap();
    }
    let out = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg(format!("--root={}", r.display()))
        .arg("camera-classifier.service")
        .output()
        .unwrap();
    Some((out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned()))
}

#[test]
fn systemd_analyze_verify_accepts_the_unit() {
    // Verify checks the unit, its dependencies and the executable.
    let Some((ok, stderr)) = verify_in_scratch_root(None, &[]) else { return };
    assert!(ok, "{stderr}");
    // Unknown keys are only warnings for verify: there must be none.
    assert!(stderr.trim().is_empty(), "systemd-analyze verify warned:\n{stderr}");
    let unit = repo_root().join("firmware/systemd/camera-classifier.service");
    let text = std::fs::read_to_string(unit).unwrap();
    for key in [
        "Type=notify",
        "WatchdogSec=",
        "Restart=on-failure",
        "DynamicUser=yes",
        "SupplementaryGroups=video gpio",
        "DeviceAllow=char-video4linux rw",
        "DeviceAllow=char-gpiochip rw",
        "ProtectSystem=strict",
        "StateDirectory=camera-classifier",
        "ConfigurationDirectory=camera-classifier",
    ] {
        assert!(text.lines().any(|l| l.starts_with(key)), "{key} missing from the unit");
    }
    // The sandbox must let the daemon reach its notify socket (AF_UNIX), an MQTT broker and
    // its status page's clients (AF_INET, AF_INET6).
    let families: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("RestrictAddressFamilies="))
        .flat_map(str::split_whitespace)
        .collect();
    for family in ["AF_UNIX", "AF_INET", "AF_INET6"] {
        assert!(families.contains(&family), "RestrictAddressFamilies= lacks {family}: {families:?}");
    }
}

/// `DeviceAllow=` lines of a unit or drop-in.
fn device_allow(text: &str) -> Vec<&str> {
    text.lines().filter_map(|l| l.strip_prefix("DeviceAllow=")).collect()
}

#[test]
fn the_libcamera_drop_in_allows_exactly_what_libcamera_opens() {
    let unit_path = repo_root().join("firmware/systemd/camera-classifier.service");
    let drop_in_path = repo_root().join("firmware/systemd/libcamera.conf");
    let (unit, drop_in) =
        (std::fs::read_to_string(&unit_path).unwrap(), std::fs::read_to_string(&drop_in_path).unwrap());
    // Without the drop-in: cameras (and their v4l-subdevs) and GPIO chips only.
    assert_eq!(device_allow(&unit), ["char-video4linux rw", "char-gpiochip rw"]);
    // With it: the media controller and DMA heaps on top, and udev's netlink socket.
    assert_eq!(device_allow(&drop_in), ["char-media rw", "char-dma_heap rw"]);
    assert!(drop_in.lines().any(|l| l == "RestrictAddressFamilies=AF_NETLINK"));
    // Both commands run under libcamerify, replacing the unit's (an empty assignment first).
    for key in ["ExecStartPre", "ExecStart"] {
        let values: Vec<&str> =
            drop_in.lines().filter_map(|l| l.strip_prefix(&format!("{key}=")[..])).collect();
        assert_eq!(values.len(), 2, "{key}: {values:?}");
        assert!(
            values[0].is_empty() && values[1].starts_with("/usr/bin/libcamerify /usr/bin/camera-classifier")
        );
    }
    // Nothing else of the sandbox is touched.
    for line in drop_in.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        let key = line.split('=').next().unwrap();
        assert!(
            ["[Service]", "DeviceAllow", "RestrictAddressFamilies", "ExecStartPre", "ExecStart"]
                .contains(&key),
            "unexpected setting in the drop-in: {line}"
        );
    }

    // systemd accepts the unit with the drop-in (libcamerify as a stub).
    let Some((ok, stderr)) = verify_in_scratch_root(Some(&drop_in_path), &["libcamerify"]) else { return };
    assert!(ok && stderr.trim().is_empty(), "systemd-analyze verify:\n{stderr}");
}
