//! The daemon's `[http]` status server end to end: the real binary on a replay, real HTTP
//! requests, the page in headless Chromium, `/healthz` going stale, and the frame rate under
//! a flood of clients and slow clients.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::*;

/// A 160x120 picture, left half red and right half blue, as the only replayed frame.
fn red_blue(dir: &Path) -> PathBuf {
    let frames = dir.join("frames");
    std::fs::create_dir(&frames).unwrap();
    let img = image::RgbImage::from_fn(160, 120, |x, _| {
        if x < 80 { image::Rgb([255, 0, 0]) } else { image::Rgb([0, 0, 255]) }
    });
    img.save(frames.join("red-blue.png")).unwrap();
    frames
}

fn wait_for_result(port: u16) -> serde_json::Value {
    let start = Instant::now();
    loop {
        if let Ok((code, _, body)) = try_get(port, "/api/latest") {
            assert_eq!(code, 200);
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
            if !v["seq"].is_null() && !v["snapshot_seq"].is_null() {
                return v;
            }
        }
        assert!(start.elapsed() < Duration::from_secs(60), "no result on /api/latest within 60 s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn serves_the_latest_result_snapshot_metrics_and_health_and_the_page_renders() {
    let dir = tempfile::tempdir().unwrap();
    let frames = red_blue(dir.path());
    let port = free_port();
    let replay =
        format!("[replay]\npath = {:?}\nfps = 10\nat_end = \"wait\"\n", frames.display().to_string());
    // Event streams of 1 s: headless Chromium's virtual time stands still while one is open.
    let http = format!(
        "[http]\nbind = \"127.0.0.1:{port}\"\npreview_fps = 5\nstale_after_s = 3\nevent_stream_lifetime_s = 1\n"
    );
    let run = start_config(&write_config(dir.path(), &config_text(&replay, &http)));

    let latest = wait_for_result(port);
    let (code, _, _) = get(port, "/healthz");
    assert_eq!(code, 200, "healthy right after a frame");
    assert_eq!(latest["seq"], 0);
    assert_eq!(latest["frame"]["format"], "RGB3");
    assert_eq!(latest["frame_seq"], 0, "the record of the JSON lines");
    assert_eq!(
        (latest["frame"]["width"].as_u64(), latest["frame"]["height"].as_u64()),
        (Some(160), Some(120))
    );
    assert_eq!(latest["model"], "bit-d1111-c4.onnx");
    let top = latest["top"].as_array().unwrap();
    assert_eq!(top.len(), 3);
    assert!(top.iter().all(|t| LABELS.contains(&t["label"].as_str().unwrap())), "{latest}");
    assert!(latest["latency_ms"]["inference"].as_f64().unwrap() > 0.0);
    assert_eq!(latest["history"].as_array().unwrap().len(), 1);
    assert!(latest["counters"]["frames"].as_u64().unwrap() >= 1);
    assert_eq!(latest["counters"]["dropped"], 0);

    // The snapshot is the frame, encoded as JPEG.
    let (code, head, jpeg) = get(port, "/snapshot.jpg");
    assert_eq!(code, 200);
    assert!(head.contains("content-type: image/jpeg") && head.contains("x-result-seq: 0"), "{head}");
    let shot = image::load_from_memory(&jpeg).unwrap().to_rgb8();
    assert_eq!(shot.dimensions(), (160, 120));
    let (l, r) = (shot.get_pixel(20, 60), shot.get_pixel(140, 60));
    assert!(l[0] > 200 && l[2] < 60 && r[2] > 200 && r[0] < 60, "{l:?} {r:?}");

    let (code, head, metrics) = get(port, "/metrics");
    assert_eq!(code, 200);
    assert!(head.contains("content-type: text/plain; version=0.0.4"), "{head}");
    let metrics = String::from_utf8(metrics).unwrap();
    for needle in [
        "camera_classifier_classified_total 1\n",
        "camera_classifier_source_up 1\n",
        "camera_classifier_latency_seconds_count{stage=\"inference\"} 1\n",
        "camera_classifier_results_dropped_total 0\n",
        "camera_classifier_build_info{version=",
        "camera_classifier_http_requests_total{code=\"200\"}",
    ] {
        assert!(metrics.contains(needle), "/metrics lacks {needle:?}:\n{metrics}");
    }
    assert!(!metrics.contains("camera_classifier_mqtt_"), "MQTT metrics without [mqtt]");

    // The page in a real browser: the label text and the frame are rendered.
    if let Some(chromium) = chromium_path() {
        let url = format!("http://127.0.0.1:{port}/");
        let shot_path = dir.path().join("page.png");
        let took = run_chromium(
            &chromium,
            dir.path(),
            "shot",
            &format!("--screenshot={}", shot_path.display()),
            &url,
        );
        run_chromium(&chromium, dir.path(), "dom", "--dump-dom", &url);
        let dom = std::fs::read_to_string(dir.path().join("dom.stdout")).unwrap();
        let best = top[0]["label"].as_str().unwrap();
        assert!(dom.contains(&format!(">{best}<")), "the DOM lacks the top label {best:?}:\n{dom}");
        assert!(dom.contains("bit-d1111-c4.onnx"), "the DOM lacks the model name");
        assert!(dom.contains("/snapshot.jpg?seq=0"), "the frame was not loaded");
        let page = image::open(&shot_path).unwrap().to_rgb8();
        let (red, red_x) = count_pixels(&page, |p| p[0] > 200 && p[1] < 60 && p[2] < 60);
        let (blue, blue_x) = count_pixels(&page, |p| p[2] > 200 && p[0] < 60 && p[1] < 60);
        eprintln!("page screenshot in {took:?}: {red} red px, {blue} blue px");
        assert!(
            red > 2000 && blue > 2000 && red_x < blue_x,
            "the frame is not shown: {red} red, {blue} blue"
        );
        if let Some(d) = std::env::var_os("BIT_SCREENSHOT_DIR") {
            std::fs::create_dir_all(&d).unwrap();
            std::fs::copy(&shot_path, Path::new(&d).join("camera-classifier-daemon-page.png")).unwrap();
        }
    }

    // The replay waits after its only frame: /healthz fails once stale_after_s has passed.
    let start = Instant::now();
    let reason = loop {
        let (code, _, body) = get(port, "/healthz");
        if code == 503 {
            break String::from_utf8(body).unwrap();
        }
        assert!(start.elapsed() < Duration::from_secs(10), "/healthz stayed {code}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(reason.contains("no frame for"), "{reason}");

    run.signal(libc::SIGTERM);
    let (code, _, stderr) = run.wait(Duration::from_secs(10));
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains(&format!("status page on http://127.0.0.1:{port}/")), "{stderr}");
}

#[test]
fn a_flood_of_clients_and_slow_clients_does_not_slow_the_frame_loop() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let fps = 20;
    let replay =
        format!("[replay]\npath = {:?}\nfps = {fps}\nat_end = \"loop\"\n", samples().display().to_string());
    let http =
        format!("[http]\nbind = \"127.0.0.1:{port}\"\nmax_connections = 8\nmax_connections_per_client = 8\n");
    let run = start_config(&write_config(dir.path(), &config_text(&replay, &http)));
    wait_for_result(port);

    let quiet = run.results_for(Duration::from_secs(3));

    let stop = Arc::new(AtomicBool::new(false));
    let (ok, busy, reset) =
        (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut threads = Vec::new();
    // 16 clients requesting snapshots and metrics as fast as they can...
    for i in 0..16 {
        let (stop, ok, busy, reset) = (stop.clone(), ok.clone(), busy.clone(), reset.clone());
        threads.push(std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let path = if i % 2 == 0 { "/snapshot.jpg" } else { "/metrics" };
                match try_get(port, path).map(|r| r.0) {
                    Ok(200) => ok.fetch_add(1, Ordering::Relaxed),
                    Ok(503) => busy.fetch_add(1, Ordering::Relaxed),
                    Ok(c) => panic!("{path}: {c}"),
                    // Connection reset by a 503 sent and closed before the request was read.
                    Err(_) => reset.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }
    // ...and 2 sending a request head one byte every 200 ms, each holding a connection slot until
    // the 5 s head deadline or until evicted.
    for _ in 0..2 {
        let stop = stop.clone();
        threads.push(std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else { continue };
                for b in b"GET /metrics HTTP/1.1\r\nHost: x\r\n" {
                    if stop.load(Ordering::Relaxed) || s.write_all(&[*b]).is_err() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
        }));
    }
    let flooded = run.results_for(Duration::from_secs(3));
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    let (code, _, _) = get(port, "/healthz");
    run.signal(libc::SIGTERM);
    let (exit, _, stderr) = run.wait(Duration::from_secs(10));
    let (ok, busy, reset) =
        (ok.load(Ordering::Relaxed), busy.load(Ordering::Relaxed), reset.load(Ordering::Relaxed));
    eprintln!(
        "results in 3 s: {quiet} quiet, {flooded} flooded ({ok} responses 200, {busy} 503, {reset} reset)"
    );
    assert_eq!(exit, Some(0), "{stderr}");
    assert_eq!(code, 200, "the server recovers after the flood");
    // 18 clients against 8 connection slots: some are told to retry (bounded connections at
    // work), the rest is served.
    assert!(ok >= 50, "{ok} served, {busy} refused");
    let expect = 3 * fps;
    assert!(quiet as f64 >= 0.8 * expect as f64, "{quiet} results in 3 s without clients");
    assert!(flooded as f64 >= 0.8 * expect as f64, "{flooded} results in 3 s under the flood");
}
