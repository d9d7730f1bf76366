//! Format negotiation on real `v4l2-ctl --list-formats-ext` listings (tests/data/cameras).
//!
//! The listings are parsed here, by a parser written for these tests: both v4l2-ctl output
//! styles (`[0]: 'YUYV' (YUYV 4:2:2)` and the older `Index : 0` / `Pixel Format: 'MJPG'`
//! blocks), discrete and stepwise/continuous sizes and intervals, and files holding the
//! output for several device nodes.

use camera_classifier::negotiate::*;

/// The enumeration of one device node.
#[derive(Debug, Clone)]
struct Node {
    /// The node named on the command line (`--device=/dev/video1`, `-d /dev/video0`), if any.
    device: Option<String>,
    /// The buffer type line (`Video Capture`, `Video Capture Multiplanar`).
    buf_type: Option<String>,
    formats: Vec<FormatOffer>,
}

/// Text between the first pair of single quotes: the fourcc (`'Y10 '` keeps its space).
fn quoted_fourcc(text: &str) -> Result<FourCc, String> {
    let start = text.find('\'').ok_or_else(|| format!("no fourcc in {text:?}"))? + 1;
    let end = start + text[start..].find('\'').ok_or_else(|| format!("unterminated fourcc in {text:?}"))?;
    parse_fourcc(&text[start..end])
        .filter(|_| end - start == 4)
        .ok_or_else(|| format!("bad fourcc in {text:?}"))
}

fn parse_dims(text: &str) -> Result<(u32, u32), String> {
    let (w, h) = text.trim().split_once('x').ok_or_else(|| format!("bad size {text:?}"))?;
    let parse = |v: &str| v.parse::<u32>().map_err(|e| format!("bad size {text:?}: {e}"));
    Ok((parse(w)?, parse(h)?))
}

/// `Discrete 640x480`, `Stepwise 32x32 - 2592x1944 with step 2/2`, `Continuous 16x16 - 64x64`.
fn parse_size(value: &str) -> Result<SizeRange, String> {
    let (kind, rest) = value.split_once(' ').ok_or_else(|| format!("bad size line {value:?}"))?;
    match kind {
        "Discrete" => {
            let (width, height) = parse_dims(rest)?;
            Ok(SizeRange::Discrete { width, height })
        }
        "Stepwise" | "Continuous" => {
            let (range, step) = match rest.split_once(" with step ") {
                Some((range, step)) => (range, Some(step)),
                None => (rest, None),
            };
            let (low, high) = range.split_once(" - ").ok_or_else(|| format!("bad range {value:?}"))?;
            let ((min_width, min_height), (max_width, max_height)) = (parse_dims(low)?, parse_dims(high)?);
            let (step_width, step_height) = match step {
                Some(step) => {
                    let (w, h) = step.split_once('/').ok_or_else(|| format!("bad step {value:?}"))?;
                    let parse = |v: &str| v.trim().parse::<u32>().map_err(|e| format!("{value:?}: {e}"));
                    (parse(w)?, parse(h)?)
                }
                None if kind == "Continuous" => (1, 1),
                None => return Err(format!("stepwise size without step: {value:?}")),
            };
            Ok(SizeRange::Stepwise { min_width, max_width, step_width, min_height, max_height, step_height })
        }
        _ => Err(format!("unknown size kind {value:?}")),
    }
}

/// The fastest rate of an interval line: `Discrete 0.033s (30.000 fps)`,
/// `Stepwise 0.040s - 1.000s with step 0.040s (1.000-25.000 fps)`, or, without the
/// parenthesis, the inverse of the first (shortest) interval.
fn parse_interval_fps(value: &str) -> Result<f32, String> {
    let bad = |what: &str| format!("{what} in interval {value:?}");
    if let Some(open) = value.rfind('(') {
        let inner = value[open + 1..].strip_suffix(')').ok_or_else(|| bad("unclosed parenthesis"))?;
        let inner = inner.strip_suffix(" fps").ok_or_else(|| bad("no fps"))?;
        let mut fastest: Option<f32> = None;
        for rate in inner.split('-') {
            let rate: f32 = rate.trim().parse().map_err(|_| bad("bad rate"))?;
            fastest = Some(fastest.map_or(rate, |f| f.max(rate)));
        }
        return fastest.ok_or_else(|| bad("no rate"));
    }
    let (_kind, rest) = value.split_once(' ').ok_or_else(|| bad("no kind"))?;
    let seconds =
        rest.split_whitespace().next().and_then(|s| s.strip_suffix('s')).ok_or_else(|| bad("no time"))?;
    let seconds: f32 = seconds.parse().map_err(|_| bad("bad time"))?;
    Ok(1.0 / seconds)
}

/// The device named on a `v4l2-ctl` command line.
fn device_of(command: &str) -> Option<String> {
    let mut words = command.split_whitespace();
    while let Some(word) = words.next() {
        if let Some(device) = word.strip_prefix("--device=") {
            return Some(device.to_owned());
        }
        if word == "-d" || word == "--device" {
            return words.next().map(str::to_owned);
        }
    }
    None
}

/// The format the lines being read belong to.
fn current(node: &mut Node) -> Result<&mut FormatOffer, String> {
    node.formats.last_mut().ok_or_else(|| "no format yet".to_owned())
}

/// Parses `v4l2-ctl --list-formats-ext` output; one [`Node`] per `ioctl: VIDIOC_ENUM_FMT`
/// header. Lines starting with `#` are comments. Unknown lines are errors.
fn parse_listing(text: &str) -> Result<Vec<Node>, String> {
    let mut nodes: Vec<Node> = Vec::new();
    let mut device: Option<String> = None;
    for (number, raw) in text.lines().enumerate() {
        let line = raw.trim();
        let at = |e: String| format!("line {}: {e}: {raw:?}", number + 1);
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if line.contains("v4l2-ctl ") {
            device = device_of(line);
            continue;
        }
        if line == "ioctl: VIDIOC_ENUM_FMT" {
            nodes.push(Node { device: device.take(), buf_type: None, formats: Vec::new() });
            continue;
        }
        let node = nodes.last_mut().ok_or_else(|| at("listing before the ioctl header".into()))?;
        let (key, value) = line.split_once(':').ok_or_else(|| at("no key".into()))?;
        let (key, value) = (key.trim(), value.trim());
        match key {
            "Type" => match &node.buf_type {
                None => node.buf_type = Some(value.to_owned()),
                Some(seen) if seen == value => {}
                Some(seen) => return Err(at(format!("type {value:?} after {seen:?}"))),
            },
            // Old style: a block per format.
            "Index" => node.formats.push(FormatOffer {
                fourcc: *b"\0\0\0\0",
                description: String::new(),
                sizes: Vec::new(),
            }),
            "Pixel Format" => current(node).map_err(at)?.fourcc = quoted_fourcc(value).map_err(at)?,
            "Name" => current(node).map_err(at)?.description = value.to_owned(),
            // New style: `[3]: 'RGB3' (24-bit RGB 8-8-8)`.
            _ if key.starts_with('[') && key.ends_with(']') => {
                let fourcc = quoted_fourcc(value).map_err(at)?;
                // The description may hold parentheses itself: `(10-bit Greyscale (MIPI Packed))`.
                let description = value
                    .get(6..)
                    .filter(|_| value.starts_with('\''))
                    .ok_or_else(|| at("no fourcc".into()))?
                    .trim()
                    .strip_prefix('(')
                    .and_then(|d| d.strip_suffix(')'))
                    .ok_or_else(|| at("no description".into()))?;
                node.formats.push(FormatOffer {
                    fourcc,
                    description: description.to_owned(),
                    sizes: Vec::new(),
                });
            }
            "Size" => {
                let range = parse_size(value).map_err(at)?;
                current(node).map_err(at)?.sizes.push(SizeOffer { range, max_fps: None });
            }
            "Interval" => {
                let fps = parse_interval_fps(value).map_err(at)?;
                let size = current(node)
                    .map_err(at)?
                    .sizes
                    .last_mut()
                    .ok_or_else(|| at("interval before a size".into()))?;
                size.max_fps = Some(size.max_fps.map_or(fps, |f| f.max(fps)));
            }
            _ => return Err(at(format!("unknown key {key:?}"))),
        }
    }
    for node in &nodes {
        if let Some(format) = node.formats.iter().find(|f| f.fourcc == *b"\0\0\0\0") {
            return Err(format!("format without a pixel format line: {format:?}"));
        }
    }
    Ok(nodes)
}

macro_rules! camera {
    ($file:literal) => {
        parse_listing(
            &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/cameras/", $file))
                .expect(concat!("read tests/data/cameras/", $file)),
        )
        .expect(concat!("parse ", $file))
    };
}

/// The listing of a file holding one device node.
macro_rules! single {
    ($file:literal) => {{
        let mut nodes = camera!($file);
        assert_eq!(nodes.len(), 1, "{}", $file);
        nodes.remove(0)
    }};
}

fn min(width: u32, height: u32) -> Request {
    Request { min_width: width, min_height: height, ..Request::default() }
}

fn with_fps(request: Request, fps: f32) -> Request {
    Request { fps: Some(fps), ..request }
}

/// `(fourcc, width, height, max_fps, upscaled, too_slow)` as a comparable tuple.
fn pick(offers: &[FormatOffer], request: &Request) -> (String, u32, u32, Option<f32>, bool, bool) {
    let c = negotiate(offers, request).unwrap_or_else(|e| panic!("{request:?}: {e}"));
    (fourcc_str(c.fourcc), c.width, c.height, c.max_fps, c.upscaled, c.too_slow)
}

fn fourccs(node: &Node) -> Vec<String> {
    node.formats.iter().map(|f| fourcc_str(f.fourcc)).collect()
}

fn format<'a>(node: &'a Node, code: &[u8; 4]) -> &'a FormatOffer {
    node.formats.iter().find(|f| f.fourcc == *code).unwrap()
}

fn fps_of(format: &FormatOffer, width: u32, height: u32) -> Option<f32> {
    let size = SizeRange::Discrete { width, height };
    format.sizes.iter().find(|s| s.range == size).unwrap().max_fps
}

// ---- the parser ----

#[test]
fn parser_reads_every_listing() {
    let files = [
        ("bluerobotics-lowlight-h264-usb-camera.txt", camera!("bluerobotics-lowlight-h264-usb-camera.txt")),
        ("generic-usb-webcam-yg-u700.txt", camera!("generic-usb-webcam-yg-u700.txt")),
        ("jetson-nano-imx219-csi.txt", camera!("jetson-nano-imx219-csi.txt")),
        ("logitech-c920.txt", camera!("logitech-c920.txt")),
        ("logitech-c922.txt", camera!("logitech-c922.txt")),
        (
            "rockchip-rk3566-rkisp-mainpath-multiplanar.txt",
            camera!("rockchip-rk3566-rkisp-mainpath-multiplanar.txt"),
        ),
        ("rpi-camera-module-3-imx708-unicam-pi4.txt", camera!("rpi-camera-module-3-imx708-unicam-pi4.txt")),
        (
            "rpi-camera-module-v1-bcm2835-v4l2-legacy.txt",
            camera!("rpi-camera-module-v1-bcm2835-v4l2-legacy.txt"),
        ),
    ];
    for (file, nodes) in &files {
        assert!(!nodes.is_empty(), "{file}");
        for node in nodes {
            assert!(node.buf_type.as_deref().is_some_and(|t| t.starts_with("Video Capture")), "{file}");
            assert!(!node.formats.is_empty(), "{file}");
            for format in &node.formats {
                assert!(!format.description.is_empty(), "{file} {}", fourcc_str(format.fourcc));
                assert!(!format.sizes.is_empty(), "{file} {}", fourcc_str(format.fourcc));
            }
        }
    }
}

#[test]
fn parser_new_style_discrete_with_intervals() {
    let c920 = single!("logitech-c920.txt");
    assert_eq!(c920.device, None);
    assert_eq!(c920.buf_type.as_deref(), Some("Video Capture"));
    assert_eq!(fourccs(&c920), ["YUYV", "H264", "MJPG"]);
    let yuyv = format(&c920, b"YUYV");
    assert_eq!(yuyv.description, "YUYV 4:2:2");
    assert_eq!(yuyv.sizes.len(), 19);
    assert_eq!(
        yuyv.sizes[0],
        SizeOffer { range: SizeRange::Discrete { width: 640, height: 480 }, max_fps: Some(30.0) }
    );
    assert_eq!(fps_of(yuyv, 800, 600), Some(24.0));
    assert_eq!(fps_of(yuyv, 1280, 720), Some(10.0));
    assert_eq!(fps_of(yuyv, 1920, 1080), Some(5.0));
    assert_eq!(fps_of(yuyv, 2304, 1536), Some(2.0));
    assert_eq!(format(&c920, b"MJPG").description, "Motion-JPEG, compressed");
    assert_eq!(fps_of(format(&c920, b"MJPG"), 1920, 1080), Some(30.0));
}

#[test]
fn parser_old_style_two_nodes() {
    let nodes = camera!("bluerobotics-lowlight-h264-usb-camera.txt");
    assert_eq!(nodes.len(), 2);
    assert_eq!(nodes[0].device.as_deref(), Some("/dev/video0"));
    assert_eq!(nodes[1].device.as_deref(), Some("/dev/video1"));
    assert_eq!(fourccs(&nodes[0]), ["MJPG", "YUYV"]);
    assert_eq!(fourccs(&nodes[1]), ["H264"]);
    assert_eq!(format(&nodes[0], b"MJPG").description, "Motion-JPEG");
    assert_eq!(format(&nodes[0], b"MJPG").sizes.len(), 8, "1920x1080 is listed twice");
    assert_eq!(fps_of(format(&nodes[0], b"YUYV"), 800, 600), Some(15.0));
}

#[test]
fn parser_stepwise_sizes_and_odd_fourccs() {
    let pi = single!("rpi-camera-module-v1-bcm2835-v4l2-legacy.txt");
    assert_eq!(pi.device.as_deref(), Some("/dev/video2"));
    assert_eq!(pi.formats.len(), 14);
    let range = SizeRange::Stepwise {
        min_width: 32,
        max_width: 2592,
        step_width: 2,
        min_height: 32,
        max_height: 1944,
        step_height: 2,
    };
    // Including BGR4's Size line, which is indented with spaces instead of tabs.
    assert!(pi.formats.iter().all(|f| f.sizes == [SizeOffer { range, max_fps: None }]));
    assert_eq!(format(&pi, b"BGR4").description, "32-bit BGRA/X 8-8-8-8");

    let unicam = single!("rpi-camera-module-3-imx708-unicam-pi4.txt");
    assert_eq!(unicam.device.as_deref(), Some("/dev/video0"));
    assert_eq!(unicam.formats.len(), 51);
    assert_eq!(format(&unicam, b"Y10 ").description, "10-bit Greyscale");
    assert_eq!(format(&unicam, b"Y10P").description, "10-bit Greyscale (MIPI Packed)");

    let rockchip = single!("rockchip-rk3566-rkisp-mainpath-multiplanar.txt");
    assert_eq!(rockchip.buf_type.as_deref(), Some("Video Capture Multiplanar"));
    assert_eq!(rockchip.formats.len(), 23);
}

#[test]
fn parser_repeated_sizes_and_intervals() {
    let webcam = single!("generic-usb-webcam-yg-u700.txt");
    assert_eq!(fourccs(&webcam), ["MJPG", "H264", "YUYV"]);
    let h264 = format(&webcam, b"H264");
    assert_eq!(h264.sizes.len(), 15);
    let mut distinct: Vec<SizeRange> = Vec::new();
    for size in &h264.sizes {
        if !distinct.contains(&size.range) {
            distinct.push(size.range);
        }
    }
    assert_eq!(distinct.len(), 10);
    assert_eq!(h264.sizes[0].max_fps, Some(30.0));
    assert_eq!(fps_of(format(&webcam, b"MJPG"), 2560, 1440), Some(25.0));
}

#[test]
fn parser_interval_and_size_kinds() {
    let text = "ioctl: VIDIOC_ENUM_FMT\n\tType: Video Capture\n\n\t[0]: 'YUYV' (YUYV 4:2:2)\n\
                \t\tSize: Discrete 320x240\n\
                \t\t\tInterval: Stepwise 0.040s - 1.000s with step 0.040s (1.000-25.000 fps)\n\
                \t\tSize: Stepwise 320x240 - 1920x1080 with step 16/8\n\
                \t\t\tInterval: Continuous 0.017s - 1.000s (1.000-60.000 fps)\n\
                \t\tSize: Continuous 16x16 - 64x64\n\
                \t\t\tInterval: Stepwise 0.020s - 0.100s with step 0.010s\n";
    let nodes = parse_listing(text).unwrap();
    let sizes = &nodes[0].formats[0].sizes;
    assert_eq!(sizes[0].max_fps, Some(25.0));
    assert_eq!(sizes[1].max_fps, Some(60.0));
    assert_eq!(sizes[2].max_fps, Some(50.0));
    assert_eq!(sizes[2].range.to_string(), "16x16-64x64 step 1/1");
    assert_eq!(sizes[1].range.to_string(), "320x240-1920x1080 step 16/8");
    assert!(parse_listing("ioctl: VIDIOC_ENUM_FMT\n\tWhat: ever\n").is_err());
}

// ---- Logitech C920: YUYV (slow at large sizes), H264, MJPG ----

#[test]
fn c920_min_224_picks_yuyv_320x240() {
    let c920 = single!("logitech-c920.txt");
    // 320x240 is the smallest size with both dimensions >= 224 (160x120, 176x144, 320x180 are not).
    assert_eq!(pick(&c920.formats, &min(224, 224)), ("YUYV".into(), 320, 240, Some(30.0), false, false));
    // YUYV 320x240 runs at 30 fps, so asking for 30 changes nothing.
    assert_eq!(
        pick(&c920.formats, &with_fps(min(224, 224), 30.0)),
        ("YUYV".into(), 320, 240, Some(30.0), false, false)
    );
}

#[test]
fn c920_fps_moves_large_requests_to_mjpeg() {
    let c920 = single!("logitech-c920.txt");
    // Without a rate: YUYV 800x600 (24 fps at most).
    assert_eq!(pick(&c920.formats, &min(800, 600)), ("YUYV".into(), 800, 600, Some(24.0), false, false));
    // 24 fps is enough for 24.
    assert_eq!(pick(&c920.formats, &with_fps(min(800, 600), 24.0)).0, "YUYV");
    // No YUYV size of at least 800x600 reaches 30 fps; MJPG 800x600 does.
    assert_eq!(
        pick(&c920.formats, &with_fps(min(800, 600), 30.0)),
        ("MJPG".into(), 800, 600, Some(30.0), false, false)
    );
    // YUYV 640x480 is 30 fps: still raw at 640x480.
    assert_eq!(pick(&c920.formats, &with_fps(min(640, 480), 30.0)).0, "YUYV");
}

#[test]
fn c920_forced_mjpeg() {
    let c920 = single!("logitech-c920.txt");
    let request = Request { fourcc: Some(*b"MJPG"), ..min(224, 224) };
    assert_eq!(pick(&c920.formats, &request), ("MJPG".into(), 320, 240, Some(30.0), false, false));
    let request = Request { fourcc: Some(*b"MJPG"), ..min(1000, 700) };
    assert_eq!(pick(&c920.formats, &request), ("MJPG".into(), 1280, 720, Some(30.0), false, false));
}

#[test]
fn c920_forced_sizes() {
    let c920 = single!("logitech-c920.txt");
    let request = Request { size: Some((1920, 1080)), ..min(224, 224) };
    assert_eq!(pick(&c920.formats, &request), ("YUYV".into(), 1920, 1080, Some(5.0), false, false));
    let request = Request { fps: Some(30.0), ..request };
    assert_eq!(pick(&c920.formats, &request), ("MJPG".into(), 1920, 1080, Some(30.0), false, false));
    // YUYV only: 2304x1536.
    let request = Request { size: Some((2304, 1536)), ..min(224, 224) };
    assert_eq!(pick(&c920.formats, &request).0, "YUYV");

    let err = negotiate(&c920.formats, &Request { size: Some((1000, 1000)), ..min(224, 224) }).unwrap_err();
    assert!(matches!(err, NegotiateError::SizeNotOffered { width: 1000, height: 1000, .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.starts_with("size 1000x1000 was requested but is not offered"), "{text}");
    assert!(text.contains("'YUYV': 640x480, 160x90, 160x120,"), "{text}");
    assert!(text.contains("1920x1080, 2304x1296, 2304x1536; 'MJPG': 640x480,"), "{text}");
    // H264 cannot be read, so its sizes are not offered.
    assert!(!text.contains("H264"), "{text}");
}

#[test]
fn c920_forced_formats_it_cannot_use() {
    let c920 = single!("logitech-c920.txt");
    let err = negotiate(&c920.formats, &Request { fourcc: Some(*b"H264"), ..min(224, 224) }).unwrap_err();
    assert!(matches!(err, NegotiateError::UnreadableFormat { .. }), "{err:?}");
    assert!(err.to_string().contains("'H264' was requested but the classifier cannot read it"), "{err}");

    let err = negotiate(&c920.formats, &Request { fourcc: Some(*b"NV12"), ..min(224, 224) }).unwrap_err();
    assert_eq!(
        err.to_string(),
        "format 'NV12' was requested but the camera does not offer it; it offers 'YUYV', 'H264', 'MJPG'"
    );
}

#[test]
fn c920_larger_than_any_size_upscales_the_best_format() {
    let c920 = single!("logitech-c920.txt");
    // The largest YUYV size, even though it is 2 fps and MJPG stops at 1920x1080.
    assert_eq!(pick(&c920.formats, &min(4000, 3000)), ("YUYV".into(), 2304, 1536, Some(2.0), true, false));
    // With 30 fps asked: the largest YUYV size that reaches 30 fps (800x448 > 640x480 in area).
    assert_eq!(
        pick(&c920.formats, &with_fps(min(4000, 3000), 30.0)),
        ("YUYV".into(), 800, 448, Some(30.0), true, false)
    );
    // Big enough but too slow beats upscaling: YUYV 2304x1536 at 2 fps.
    assert_eq!(
        pick(&c920.formats, &with_fps(min(2304, 1536), 30.0)),
        ("YUYV".into(), 2304, 1536, Some(2.0), false, true)
    );
}

// ---- Logitech C922: like the C920 without H264; MJPG 1280x720 at 60 fps ----

#[test]
fn c922_picks() {
    let c922 = single!("logitech-c922.txt");
    assert_eq!(fourccs(&c922), ["YUYV", "MJPG"]);
    assert_eq!(pick(&c922.formats, &min(224, 224)), ("YUYV".into(), 320, 240, Some(30.0), false, false));
    // Only MJPG 1280x720 runs at 60 fps.
    assert_eq!(
        pick(&c922.formats, &with_fps(min(224, 224), 60.0)),
        ("MJPG".into(), 1280, 720, Some(60.0), false, false)
    );
    assert_eq!(pick(&c922.formats, &with_fps(min(1280, 720), 30.0)).0, "MJPG");
}

// ---- generic USB webcam: MJPG, H264 (sizes listed twice), YUYV up to 1280x720 ----

#[test]
fn generic_webcam_picks() {
    let webcam = single!("generic-usb-webcam-yg-u700.txt");
    let f = &webcam.formats;
    assert_eq!(pick(f, &min(224, 224)), ("YUYV".into(), 320, 240, Some(30.0), false, false));
    assert_eq!(pick(f, &with_fps(min(640, 480), 30.0)), ("YUYV".into(), 640, 480, Some(30.0), false, false));
    // YUYV 800x600 is 15 fps.
    assert_eq!(pick(f, &min(800, 600)), ("YUYV".into(), 800, 600, Some(15.0), false, false));
    assert_eq!(pick(f, &with_fps(min(800, 600), 30.0)), ("MJPG".into(), 800, 600, Some(30.0), false, false));
    assert_eq!(pick(f, &min(1280, 720)), ("YUYV".into(), 1280, 720, Some(10.0), false, false));
    // Raw stops at 1280x720: a big enough MJPG beats it.
    assert_eq!(pick(f, &min(1920, 1080)), ("MJPG".into(), 1920, 1080, Some(30.0), false, false));
    // The only size of at least 2560x1440 is 25 fps.
    assert_eq!(
        pick(f, &with_fps(min(2560, 1440), 30.0)),
        ("MJPG".into(), 2560, 1440, Some(25.0), false, true)
    );
    assert!(!pick(f, &with_fps(min(2560, 1440), 25.0)).5);
    // Larger than anything: YUYV's largest, not MJPG's 2560x1440.
    assert_eq!(pick(f, &min(4000, 3000)), ("YUYV".into(), 1280, 720, Some(10.0), true, false));
}

#[test]
fn generic_webcam_repeated_sizes_do_not_matter() {
    let webcam = single!("generic-usb-webcam-yg-u700.txt");
    // A camera whose MJPG section repeats sizes the way this webcam's H264 section does.
    let repeated = FormatOffer { fourcc: *b"MJPG", ..format(&webcam, b"H264").clone() };
    let mut unique = repeated.clone();
    let mut kept: Vec<SizeOffer> = Vec::new();
    for size in &repeated.sizes {
        if !kept.iter().any(|k| k.range == size.range) {
            kept.push(*size);
        }
    }
    unique.sizes = kept;
    assert_eq!((repeated.sizes.len(), unique.sizes.len()), (15, 10));
    let yuyv = format(&webcam, b"YUYV").clone();
    let with_repeats = [repeated, yuyv.clone()];
    let without = [unique, yuyv];
    for request in [
        min(224, 224),
        min(800, 600),
        with_fps(min(800, 600), 30.0),
        with_fps(min(1920, 1080), 30.0),
        min(4000, 3000),
        Request { size: Some((640, 480)), fourcc: Some(*b"MJPG"), ..min(0, 0) },
        Request { size: Some((1000, 1000)), ..min(0, 0) },
    ] {
        assert_eq!(negotiate(&with_repeats, &request), negotiate(&without, &request), "{request:?}");
    }
    let err = negotiate(&with_repeats, &Request { size: Some((1000, 1000)), ..min(0, 0) }).unwrap_err();
    assert_eq!(err.to_string().matches("320x240").count(), 2, "once for MJPG, once for YUYV: {err}");
}

// ---- Blue Robotics low-light USB camera: two nodes, old output style ----

#[test]
fn bluerobotics_video0_picks() {
    let nodes = camera!("bluerobotics-lowlight-h264-usb-camera.txt");
    let f = &nodes[0].formats;
    // YUYV is listed second but ranks first.
    assert_eq!(pick(f, &min(224, 224)), ("YUYV".into(), 320, 240, Some(30.0), false, false));
    assert_eq!(pick(f, &min(800, 600)), ("YUYV".into(), 800, 600, Some(15.0), false, false));
    assert_eq!(pick(f, &with_fps(min(800, 600), 30.0)), ("MJPG".into(), 800, 600, Some(30.0), false, false));
    assert_eq!(pick(f, &min(1280, 720)), ("MJPG".into(), 1280, 720, Some(30.0), false, false));
    assert_eq!(pick(f, &min(4000, 3000)), ("YUYV".into(), 800, 600, Some(15.0), true, false));
    // 640x480 (YUYV) and 1920x1080 (MJPG) are each listed twice.
    let request = Request { size: Some((640, 480)), ..min(0, 0) };
    assert_eq!(pick(f, &request), ("YUYV".into(), 640, 480, Some(30.0), false, false));
    let request = Request { size: Some((1920, 1080)), fps: Some(30.0), ..min(0, 0) };
    assert_eq!(pick(f, &request), ("MJPG".into(), 1920, 1080, Some(30.0), false, false));
    let err = negotiate(f, &Request { size: Some((1024, 768)), ..min(0, 0) }).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("'YUYV': 640x480, 800x600, 640x360, 352x288, 320x240"), "{text}");
    assert_eq!(text.matches("1920x1080").count(), 1, "{text}");
}

#[test]
fn bluerobotics_video1_h264_only_is_not_readable() {
    let nodes = camera!("bluerobotics-lowlight-h264-usb-camera.txt");
    let err = negotiate(&nodes[1].formats, &min(224, 224)).unwrap_err();
    assert_eq!(err, NegotiateError::NoReadableFormat { offered: vec![(*b"H264", "H.264".into())] });
    let text = err.to_string();
    assert!(text.contains("it offers 'H264' (H.264);"), "{text}");
    assert!(text.contains("H264-only nodes are not readable"), "{text}");
}

// ---- Raspberry Pi camera v1, legacy bcm2835-v4l2: 14 formats, stepwise 32x32-2592x1944 step 2 ----

#[test]
fn pi_v1_legacy_stepwise_picks_yuyv() {
    let pi = single!("rpi-camera-module-v1-bcm2835-v4l2-legacy.txt");
    let f = &pi.formats;
    // YU12 is listed first but cannot be read; YUYV ranks first of the rest.
    assert_eq!(pick(f, &min(224, 224)), ("YUYV".into(), 224, 224, None, false, false));
    // Rounded up to the 2-pixel grid.
    assert_eq!(pick(f, &min(225, 301)), ("YUYV".into(), 226, 302, None, false, false));
    // No intervals are listed, so any rate is taken as reachable.
    assert_eq!(pick(f, &with_fps(min(1920, 1080), 30.0)), ("YUYV".into(), 1920, 1080, None, false, false));
    assert_eq!(pick(f, &min(3000, 2000)), ("YUYV".into(), 2592, 1944, None, true, false));
    assert_eq!(pick(f, &min(3000, 100)), ("YUYV".into(), 2592, 1944, None, true, false));
}

#[test]
fn pi_v1_legacy_forced_format_and_size() {
    let pi = single!("rpi-camera-module-v1-bcm2835-v4l2-legacy.txt");
    let f = &pi.formats;
    let request = Request { fourcc: Some(*b"JPEG"), ..min(640, 480) };
    assert_eq!(pick(f, &request), ("JPEG".into(), 640, 480, None, false, false));
    let request = Request { size: Some((640, 480)), ..min(224, 224) };
    assert_eq!(pick(f, &request), ("YUYV".into(), 640, 480, None, false, false));
    let request = Request { size: Some((641, 480)), fourcc: Some(*b"BGR3"), ..min(224, 224) };
    let err = negotiate(f, &request).unwrap_err();
    assert_eq!(
        err.to_string(),
        "size 641x480 was requested but is not offered; offered sizes: 'BGR3': 32x32-2592x1944 step 2/2"
    );
    let err = negotiate(f, &Request { fourcc: Some(*b"YU12"), ..min(224, 224) }).unwrap_err();
    assert!(matches!(err, NegotiateError::UnreadableFormat { .. }), "{err:?}");
}

#[test]
fn pi_v1_legacy_rank_among_the_rest() {
    let pi = single!("rpi-camera-module-v1-bcm2835-v4l2-legacy.txt");
    let without = |drop: &[&[u8; 4]]| -> Vec<FormatOffer> {
        pi.formats.iter().filter(|f| !drop.iter().any(|d| **d == f.fourcc)).cloned().collect()
    };
    let request = min(224, 224);
    assert_eq!(pick(&without(&[b"YUYV"]), &request).0, "NV12");
    assert_eq!(pick(&without(&[b"YUYV", b"NV12"]), &request).0, "UYVY");
    assert_eq!(pick(&without(&[b"YUYV", b"NV12", b"UYVY"]), &request).0, "RGB3");
    assert_eq!(pick(&without(&[b"YUYV", b"NV12", b"UYVY", b"RGB3"]), &request).0, "BGR3");
    // Of the compressed formats, MJPG ranks before the legacy driver's JPEG.
    assert_eq!(pick(&without(&[b"YUYV", b"NV12", b"UYVY", b"RGB3", b"BGR3"]), &request).0, "MJPG");
    let rest = without(&[b"YUYV", b"NV12", b"UYVY", b"RGB3", b"BGR3", b"MJPG"]);
    assert_eq!(pick(&rest, &request).0, "JPEG");
    let rest = without(&[b"YUYV", b"NV12", b"UYVY", b"RGB3", b"BGR3", b"MJPG", b"JPEG"]);
    let err = negotiate(&rest, &request).unwrap_err();
    let text = err.to_string();
    for code in
        ["'YU12' (Planar YUV 4:2:0)", "'H264' (H.264)", "'YVYU'", "'VYUY'", "'YV12'", "'NV21'", "'BGR4'"]
    {
        assert!(text.contains(code), "{code}: {text}");
    }
}

// ---- Raspberry Pi Camera Module 3 via unicam: 51 formats, stepwise step 1 ----

#[test]
fn pi_camera_3_unicam() {
    let unicam = single!("rpi-camera-module-3-imx708-unicam-pi4.txt");
    let f = &unicam.formats;
    assert_eq!(pick(f, &min(224, 224)), ("YUYV".into(), 224, 224, None, false, false));
    assert_eq!(pick(f, &min(1536, 864)), ("YUYV".into(), 1536, 864, None, false, false));
    let request = Request { fourcc: Some(*b"GREY"), ..min(224, 224) };
    assert_eq!(pick(f, &request), ("GREY".into(), 224, 224, None, false, false));
    // The node lists YUYV, but an imx708 sends 10-bit Bayer: set-format comes back with
    // the sensor's format (here as the driver would report it), and check_applied says so.
    let choice = negotiate(f, &min(224, 224)).unwrap();
    let err = choice.check_applied(*b"pBAA").unwrap_err();
    let text = err.to_string();
    assert!(text.starts_with("the driver replaced pixel format 'YUYV' with 'pBAA'"), "{text}");
    assert!(text.contains("libcamerify") && text.contains("v4l2-compat"), "{text}");
    // Without any of its colour formats, only GREY is left.
    let grey_and_bayer: Vec<FormatOffer> =
        f.iter().filter(|f| f.description.contains("Bayer") || f.fourcc == *b"GREY").cloned().collect();
    assert_eq!(pick(&grey_and_bayer, &min(224, 224)).0, "GREY");
}

// ---- Jetson Nano, IMX219 over CSI: RG10 only ----

#[test]
fn jetson_imx219_bayer_only_errors_with_hints() {
    let jetson = single!("jetson-nano-imx219-csi.txt");
    assert_eq!(fourccs(&jetson), ["RG10"]);
    assert_eq!(format(&jetson, b"RG10").sizes.len(), 5);
    let err = negotiate(&jetson.formats, &min(224, 224)).unwrap_err();
    assert!(matches!(err, NegotiateError::NoReadableFormat { .. }), "{err:?}");
    let text = err.to_string();
    for needle in ["'RG10' (10-bit Bayer RGRG/GBGB)", "Bayer CSI sensors", "libcamerify", "nvarguscamerasrc"]
    {
        assert!(text.contains(needle), "{needle}: {text}");
    }
    let err = negotiate(&jetson.formats, &Request { fourcc: Some(*b"RG10"), ..min(224, 224) }).unwrap_err();
    assert!(matches!(err, NegotiateError::UnreadableFormat { .. }), "{err:?}");
}

// ---- Rockchip RK3566 ISP main path: multi-planar, stepwise 32x16-800x600 step 8/8 ----

#[test]
fn rockchip_multiplanar_picks_nv12() {
    let rockchip = single!("rockchip-rk3566-rkisp-mainpath-multiplanar.txt");
    let f = &rockchip.formats;
    // UYVY is listed first, NV12 seventh; NV12 ranks higher.
    assert_eq!(fourccs(&rockchip)[..7], ["UYVY", "422P", "NV16", "NV61", "YM16", "NV21", "NV12"]);
    // Width grid 32, 40, ..., 224; height grid 16, 24, ..., 224.
    assert_eq!(pick(f, &min(224, 224)), ("NV12".into(), 224, 224, None, false, false));
    // 300 rounds up to 304 on both grids (32 + 34 * 8, 16 + 36 * 8).
    assert_eq!(pick(f, &min(300, 300)), ("NV12".into(), 304, 304, None, false, false));
    assert_eq!(pick(f, &min(1024, 768)), ("NV12".into(), 800, 600, None, true, false));
    let err = negotiate(f, &Request { size: Some((300, 300)), ..min(0, 0) }).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("'UYVY': 32x16-800x600 step 8/8; 'NV12': 32x16-800x600 step 8/8"), "{text}");
    let without_nv12: Vec<FormatOffer> = f.iter().filter(|f| f.fourcc != *b"NV12").cloned().collect();
    assert_eq!(pick(&without_nv12, &min(224, 224)).0, "UYVY");
}
