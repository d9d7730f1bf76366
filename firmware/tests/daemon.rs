//! The `camera-classifier` binary end to end on replay sources: results, triggers, bad
//! frames, signals, start-up failures.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;

#[test]
fn replays_the_sample_photos_and_prints_one_json_line_each() {
    let dir = tempfile::tempdir().unwrap();
    let replay =
        format!("[replay]\npath = {:?}\nfps = 50\nat_end = \"stop\"\n", samples().display().to_string());
    let config = write_config(dir.path(), &config_text(&replay, ""));
    let run = start_config(&config);
    let mut results = Vec::new();
    while let Some(v) = run.next_json(Duration::from_secs(60)) {
        results.push(v);
    }
    let (code, _, stderr) = run.wait(Duration::from_secs(10));
    assert_eq!(code, Some(0), "{stderr}");
    let photos = std::fs::read_dir(samples())
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "png" || x == "jpg"))
        .count();
    assert_eq!(results.len(), photos, "{stderr}");
    for (i, r) in results.iter().enumerate() {
        assert_eq!(r["seq"], i as u64);
        assert_eq!(r["frame_seq"], i as u64);
        assert_eq!(r["trigger"], "continuous");
        assert_eq!(r["frame"]["format"], "RGB3");
        let top = r["top"].as_array().unwrap();
        assert_eq!(top.len(), 3);
        let scores: Vec<f64> = top.iter().map(|t| t["score"].as_f64().unwrap()).collect();
        assert!(scores.windows(2).all(|w| w[0] >= w[1]), "best first: {scores:?}");
        assert!(scores.iter().sum::<f64>() <= 1.0001);
        for t in top {
            let class = t["class"].as_u64().unwrap() as usize;
            assert_eq!(t["label"], LABELS[class]);
        }
        let lat = &r["latency_ms"];
        assert!(lat["inference"].as_f64().unwrap() > 0.0, "{lat}");
        assert!(lat["total"].as_f64().unwrap() >= lat["inference"].as_f64().unwrap(), "{lat}");
        assert!(r["time"].as_str().unwrap().ends_with('Z'));
    }
    assert!(stderr.contains("end of the replay"), "{stderr}");
}

#[test]
fn corrupt_frames_are_counted_and_skipped_not_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let frames = dir.path().join("frames");
    std::fs::create_dir(&frames).unwrap();
    // Good: a grey 8x6 YUYV frame; bad: short YUYV, an MJPEG frame that is not a JPEG, and
    // an MJPEG frame cut in half.
    std::fs::write(frames.join("a.8x6.yuyv"), vec![128u8; 8 * 6 * 2]).unwrap();
    std::fs::write(frames.join("b.8x6.yuyv"), vec![128u8; 50]).unwrap();
    std::fs::write(frames.join("c.8x6.mjpg"), b"definitely not a jpeg").unwrap();
    let jpeg = std::fs::read(samples().join("coffee.jpg")).unwrap_or_else(|_| {
        let mut v = Vec::new();
        image::RgbImage::new(8, 8)
            .write_to(&mut std::io::Cursor::new(&mut v), image::ImageFormat::Jpeg)
            .unwrap();
        v
    });
    std::fs::write(frames.join("d.400x300.mjpg"), &jpeg[..jpeg.len() / 2]).unwrap();
    std::fs::write(frames.join("e.8x6.yuyv"), vec![128u8; 8 * 6 * 2]).unwrap();
    let replay =
        format!("[replay]\npath = {:?}\nfps = 100\nat_end = \"stop\"\n", frames.display().to_string());
    let config = write_config(dir.path(), &config_text(&replay, ""));
    let run = start_config(&config);
    let mut seqs = Vec::new();
    while let Some(v) = run.next_json(Duration::from_secs(60)) {
        seqs.push(v["frame_seq"].as_u64().unwrap());
    }
    let (code, _, stderr) = run.wait(Duration::from_secs(10));
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(seqs, [0, 4], "only the two good frames are classified; stderr:\n{stderr}");
    assert!(stderr.contains("refused"), "{stderr}");
    assert!(stderr.contains("bad 3"), "the exit status line counts 3 bad frames:\n{stderr}");
}

#[test]
fn triggered_mode_classifies_once_per_signal_and_fifo_line_and_saves_frames() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("control");
    let saved = dir.path().join("saved");
    let replay = format!("[replay]\npath = {:?}\nfps = 30\n", samples().display().to_string());
    let extra = format!(
        "[mode]\nkind = \"triggered\"\n[control]\nfifo = {:?}\n[output]\nsave_frames = true\nsave_dir = {:?}\nmax_saved = 2\n",
        fifo.display().to_string(),
        saved.display().to_string()
    );
    let config = write_config(dir.path(), &config_text(&replay, &extra));
    let run = start_config(&config);
    // The FIFO appears once the signal handlers are installed (SIGUSR1 before that would
    // kill the process, as it would any program).
    let t0 = std::time::Instant::now();
    while !fifo.exists() {
        assert!(t0.elapsed() < Duration::from_secs(60), "the daemon creates its control FIFO");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Nothing is classified without a trigger.
    assert!(run.next_json(Duration::from_millis(1000)).is_none(), "no trigger, no result");

    run.signal(libc::SIGUSR1);
    let r = run.next_json(Duration::from_secs(20)).expect("a result for SIGUSR1");
    assert_eq!(r["trigger"], "signal");
    assert!(run.next_json(Duration::from_millis(800)).is_none(), "one trigger, one result");

    std::fs::write(&fifo, "trigger\n").unwrap();
    let r = run.next_json(Duration::from_secs(20)).expect("a result for the FIFO line");
    assert_eq!(r["trigger"], "fifo");
    std::fs::write(&fifo, "bogus\ntrigger\n").unwrap();
    let r = run.next_json(Duration::from_secs(20)).expect("a result for the second FIFO line");
    assert_eq!(r["trigger"], "fifo");
    assert!(run.next_json(Duration::from_millis(800)).is_none(), "one line, one result");

    run.signal(libc::SIGTERM);
    let (code, _, stderr) = run.wait(Duration::from_secs(10));
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("unknown command 'bogus'"), "{stderr}");
    let mut files: Vec<_> = std::fs::read_dir(&saved).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    assert_eq!(files.len(), 2, "max_saved = 2 of 3 triggered frames: {files:?}");
    for f in &files {
        let img = image::open(f).unwrap();
        assert!(img.width() > 0, "{f:?}");
    }
    assert!(files[1].to_string_lossy().contains("-00000002-"), "the newest is kept: {files:?}");
}

#[test]
fn sigterm_during_continuous_inference_exits_cleanly_within_two_seconds() {
    let dir = tempfile::tempdir().unwrap();
    let replay = format!("[replay]\npath = {:?}\nfps = 1000\n", samples().display().to_string());
    let config = write_config(dir.path(), &config_text(&replay, ""));
    let run = start_config(&config);
    for _ in 0..3 {
        run.next_json(Duration::from_secs(30)).expect("results flow");
    }
    run.signal(libc::SIGTERM);
    let (code, took, stderr) = run.wait(Duration::from_secs(10));
    assert_eq!(code, Some(0), "{stderr}");
    assert!(took < Duration::from_secs(2), "took {took:?}");
    assert!(stderr.contains("stopping"), "{stderr}");
}

#[test]
fn a_missing_or_corrupt_model_fails_at_start_with_the_file_named() {
    let dir = tempfile::tempdir().unwrap();
    let replay = format!("[replay]\npath = {:?}\n", samples().display().to_string());
    let missing = dir.path().join("nope.onnx");
    let config =
        write_config(dir.path(), &format!("[model]\npath = {:?}\n{replay}", missing.display().to_string()));
    let out = daemon().arg("--config").arg(&config).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("model.path") && stderr.contains("nope.onnx"), "{stderr}");

    let corrupt = dir.path().join("corrupt.onnx");
    let mut bytes = std::fs::read(model()).unwrap();
    bytes.truncate(bytes.len() / 3);
    std::fs::write(&corrupt, bytes).unwrap();
    let config =
        write_config(dir.path(), &format!("[model]\npath = {:?}\n{replay}", corrupt.display().to_string()));
    let out = daemon().arg("--config").arg(&config).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("corrupt.onnx"), "{stderr}");
    assert!(out.stdout.is_empty());
}

#[test]
fn check_config_exits_0_for_a_valid_file_and_1_listing_every_problem() {
    let dir = tempfile::tempdir().unwrap();
    let replay = format!("[replay]\npath = {:?}\n", samples().display().to_string());
    let gpio = "[gpio]\nchip = \"pinctrl-bcm2711\"\n[[gpio.outputs]]\nline = 27\nlabels = [\"dog\"]\n";
    let good = write_config(dir.path(), &config_text(&replay, ""));
    let out = daemon().arg("--config").arg(&good).arg("--check-config").output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("valid (4 classes"));
    // The check looks the GPIO chip up, as start-up does: on a machine without one it fails.
    if !Path::new("/dev/gpiochip0").exists() {
        let with_gpio = write_config(dir.path(), &config_text(&replay, gpio));
        let out = daemon().arg("--config").arg(&with_gpio).arg("--check-config").output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains("gpio.chip"), "{stderr}");
    }

    // A label the model does not have: found by reading the model's metadata.
    let wrong_label = config_text(&replay, &gpio.replace("\"dog\"", "\"zebra\""));
    let bad = write_config(dir.path(), &wrong_label);
    let out = daemon().arg("--config").arg(&bad).arg("--check-config").output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("gpio.outputs[0].labels") && stderr.contains("'zebra'"), "{stderr}");

    let bad = write_config(
        dir.path(),
        &config_text(&replay, "[mode]\nkind = \"interval\"\n[output]\nmax_saved = 0\n")
            .replace("top_k = 3", "top_k = 99"),
    );
    let out = daemon().arg("--config").arg(&bad).arg("--check-config").output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    for field in ["model.top_k", "mode.interval_ms", "output.max_saved"] {
        assert!(stderr.contains(field), "{field} in:\n{stderr}");
    }
    let out =
        daemon().arg("--config").arg(dir.path().join("absent.toml")).arg("--check-config").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("absent.toml"));
}

#[test]
fn a_device_that_is_not_a_camera_fails_with_status_2_and_a_missing_one_is_retried() {
    let dir = tempfile::tempdir().unwrap();
    // /dev/null opens but answers VIDIOC_QUERYCAP with ENOTTY: retrying cannot help.
    let camera = "[camera]\ndevice = \"/dev/null\"\n";
    let config = write_config(dir.path(), &config_text(camera, ""));
    let out = daemon().arg("--config").arg(&config).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("/dev/null is not a V4L2 device"), "{stderr}");

    // A device that does not exist (yet) is retried with backoff until stopped.
    let missing = dir.path().join("video-missing");
    let camera = format!("[camera]\ndevice = {:?}\nreconnect_max_ms = 300\n", missing.display().to_string());
    let config = write_config(dir.path(), &config_text(&camera, ""));
    let run = start_config(&config);
    std::thread::sleep(Duration::from_millis(2500));
    run.signal(libc::SIGTERM);
    let (code, took, stderr) = run.wait(Duration::from_secs(10));
    assert_eq!(code, Some(0), "{stderr}");
    assert!(took < Duration::from_secs(2), "{took:?}");
    let retries = stderr.matches("retrying in").count();
    assert!(retries >= 3, "backoff 250, 300, 300 ms...: {retries} retries in:\n{stderr}");
    assert!(stderr.contains("retrying in 250 ms") && stderr.contains("retrying in 300 ms"), "{stderr}");
}
