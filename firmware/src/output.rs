//! Results out: one JSON line per classification, and triggered frames saved as JPEG.
//!
//! A result line (see `examples/result.json` in the README):
//!
//! ```json
//! {"time":"2026-11-27T10:00:00.123Z","seq":12,"frame_seq":57,"trigger":"gpio",
//!  "frame":{"format":"YUYV","width":640,"height":480},
//!  "top":[{"label":"tabby","class":281,"score":0.83}, ...],
//!  "latency_ms":{"capture":3.1,"preprocess":1.2,"inference":70.4,"postprocess":0.01,"total":75.0}}
//! ```
//!
//! `trigger` is `continuous`, `interval`, `gpio`, `signal` or `fifo`; `capture` is the
//! frame's age when the daemon took it (from the driver's timestamp), `total` from capture
//! to result. Lines are serialized into a buffer that is reused, so a line costs no
//! allocation once the buffer has grown.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use bit_runtime::{Frame, PixelFormat, Prediction};
use serde::ser::{SerializeMap, SerializeSeq, Serializer};

/// One classification, borrowed from the frame loop.
#[derive(Clone, Copy, Debug)]
pub struct ResultRecord<'a> {
    /// Wall-clock time of the result.
    pub time: SystemTime,
    /// Classifications since start, from 0.
    pub seq: u64,
    /// The source's frame counter.
    pub frame_seq: u64,
    /// What caused it (`continuous`, `interval`, `gpio`, `signal`, `fifo`).
    pub trigger: &'a str,
    /// Frame format.
    pub format: PixelFormat,
    /// Frame width.
    pub width: u32,
    /// Frame height.
    pub height: u32,
    /// The best classes, best first.
    pub top: &'a [Prediction],
    /// Class names, index order.
    pub labels: &'a [String],
    /// Capture, preprocess, inference, postprocess, total.
    pub latency: [Duration; 5],
}

struct Top<'a>(&'a [Prediction], &'a [String]);

impl serde::Serialize for Top<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for p in self.0 {
            seq.serialize_element(&Class { label: self.1.get(p.class).map_or("?", String::as_str), p })?;
        }
        seq.end()
    }
}

struct Class<'a> {
    label: &'a str,
    p: &'a Prediction,
}

impl serde::Serialize for Class<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(3))?;
        m.serialize_entry("label", self.label)?;
        m.serialize_entry("class", &self.p.class)?;
        m.serialize_entry("score", &round(self.p.score as f64, 1e4))?;
        m.end()
    }
}

fn round(v: f64, scale: f64) -> f64 {
    (v * scale).round() / scale
}

/// Milliseconds, rounded to the microsecond (as every result record shows them).
pub(crate) fn ms(d: Duration) -> f64 {
    round(d.as_secs_f64() * 1e3, 1e3)
}

struct Frame3(PixelFormat, u32, u32);

impl serde::Serialize for Frame3 {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(3))?;
        let code = self.0.fourcc();
        m.serialize_entry("format", std::str::from_utf8(&code).unwrap_or("????"))?;
        m.serialize_entry("width", &self.1)?;
        m.serialize_entry("height", &self.2)?;
        m.end()
    }
}

struct Latency([Duration; 5]);

impl serde::Serialize for Latency {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(5))?;
        for (name, d) in ["capture", "preprocess", "inference", "postprocess", "total"].iter().zip(self.0) {
            m.serialize_entry(name, &ms(d))?;
        }
        m.end()
    }
}

impl serde::Serialize for ResultRecord<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(7))?;
        m.serialize_entry("time", &Rfc3339(self.time))?;
        m.serialize_entry("seq", &self.seq)?;
        m.serialize_entry("frame_seq", &self.frame_seq)?;
        m.serialize_entry("trigger", self.trigger)?;
        m.serialize_entry("frame", &Frame3(self.format, self.width, self.height))?;
        m.serialize_entry("top", &Top(self.top, self.labels))?;
        m.serialize_entry("latency_ms", &Latency(self.latency))?;
        m.end()
    }
}

struct Rfc3339(SystemTime);

impl serde::Serialize for Rfc3339 {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_rfc3339_millis(self.0))
    }
}

/// Writes result lines to `out` (stdout in the daemon).
pub struct JsonLines<W: Write> {
    out: W,
    buf: Vec<u8>,
    failed: bool,
}

impl<W: Write> JsonLines<W> {
    /// Lines to `out`.
    pub fn new(out: W) -> JsonLines<W> {
        JsonLines { out, buf: Vec::with_capacity(1024), failed: false }
    }

    /// Writes one line and flushes it. After a write error (stdout closed) it logs once and
    /// writes nothing more: results are not worth stopping the device for.
    pub fn write(&mut self, record: &ResultRecord) {
        if self.failed {
            return;
        }
        self.buf.clear();
        // Serializing into a Vec cannot fail but for a serializer bug.
        if serde_json::to_writer(&mut self.buf, record).is_err() {
            return;
        }
        self.buf.push(b'\n');
        if let Err(e) = self.out.write_all(&self.buf).and_then(|()| self.out.flush()) {
            log::warn!("result output failed ({e}); no more JSON lines will be written");
            self.failed = true;
        }
    }

    /// The writer.
    pub fn get_ref(&self) -> &W {
        &self.out
    }
}

/// Saves frames as JPEG files in a directory, keeping at most `max` of them (oldest
/// removed first). Files are written atomically: a temporary file, synced, then renamed.
pub struct FrameSaver {
    dir: PathBuf,
    max: usize,
    kept: VecDeque<PathBuf>,
    encoder: FrameJpeg,
}

/// Frames to JPEG: MJPEG frames as they came, raw frames converted to RGB and encoded. The
/// buffers are reused, so once they have grown to the frame size an encoding allocates only
/// inside the encoder.
pub struct FrameJpeg {
    quality: u8,
    rgb: Vec<u8>,
    jpeg: Vec<u8>,
}

impl FrameJpeg {
    /// An encoder at `quality` (1..=100).
    pub fn new(quality: u8) -> FrameJpeg {
        FrameJpeg { quality: quality.clamp(1, 100), rgb: Vec::new(), jpeg: Vec::new() }
    }

    /// `frame` as JPEG bytes (borrowed from the frame for MJPEG, from the encoder otherwise).
    pub fn encode<'b>(&'b mut self, frame: &Frame<'b>) -> io::Result<&'b [u8]> {
        if frame.format == PixelFormat::Mjpeg {
            return Ok(frame.data);
        }
        let (w, h) = (frame.width, frame.height);
        self.rgb.resize(3 * w as usize * h as usize, 0);
        bit_runtime::frame_to_rgb8(frame, &mut self.rgb)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
        self.jpeg.clear();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut self.jpeg, self.quality)
            .encode(&self.rgb, w, h, image::ExtendedColorType::Rgb8)
            .map_err(|e| io::Error::other(e.to_string()))?;
        Ok(&self.jpeg)
    }
}

impl FrameSaver {
    /// Creates `dir` if needed and takes stock of the JPEG files already in it (sorted by
    /// name, which starts with the time), removing the oldest beyond `max`.
    pub fn new(dir: &Path, max: usize, quality: u8) -> io::Result<FrameSaver> {
        let ctx = |e: io::Error| io::Error::new(e.kind(), format!("frame directory {}: {e}", dir.display()));
        std::fs::create_dir_all(dir).map_err(ctx)?;
        let mut existing: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(ctx)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "jpg"))
            .collect();
        existing.sort();
        let mut saver = FrameSaver {
            dir: dir.to_owned(),
            max: max.max(1),
            kept: existing.into(),
            encoder: FrameJpeg::new(quality),
        };
        saver.prune();
        Ok(saver)
    }

    fn prune(&mut self) {
        while self.kept.len() > self.max {
            if let Some(old) = self.kept.pop_front()
                && let Err(e) = std::fs::remove_file(&old)
                && e.kind() != io::ErrorKind::NotFound
            {
                log::warn!("removing {}: {e}", old.display());
            }
        }
    }

    /// Saves `frame` as `<time>-<seq>-<label>.jpg` (MJPEG frames as they came, raw frames
    /// encoded at the configured quality).
    pub fn save(&mut self, frame: &Frame, time: SystemTime, seq: u64, label: &str) -> io::Result<PathBuf> {
        let stamp: String = humantime::format_rfc3339_millis(time)
            .to_string()
            .chars()
            .map(|c| if c == ':' { '-' } else { c })
            .collect();
        let label: String = label
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' })
            .take(40)
            .collect();
        let path = self.dir.join(format!("{stamp}-{seq:08}-{label}.jpg"));
        write_atomically(&path, self.encoder.encode(frame)?)?;
        self.kept.push_back(path.clone());
        self.prune();
        Ok(path)
    }
}

/// Writes `bytes` to a temporary file beside `path`, syncs it and renames it over `path`:
/// a reader (or a power cut) sees the old file or the whole new one, never half of it.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let ctx = |e: io::Error| io::Error::new(e.kind(), format!("{}: {e}", path.display()));
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(ctx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_result_line_is_one_json_object_with_every_field() {
        let labels = vec!["cat \"tabby\"".to_string(), "dog".to_string()];
        let top = [Prediction { class: 0, score: 0.912345 }, Prediction { class: 1, score: 0.087655 }];
        let mut out = JsonLines::new(Vec::new());
        let rec = ResultRecord {
            time: SystemTime::UNIX_EPOCH + Duration::from_millis(1_795_000_000_123),
            seq: 3,
            frame_seq: 17,
            trigger: "gpio",
            format: PixelFormat::Yuyv,
            width: 640,
            height: 480,
            top: &top,
            labels: &labels,
            latency: [1, 2, 70, 0, 75].map(Duration::from_millis),
        };
        out.write(&rec);
        out.write(&rec);
        let text = String::from_utf8(out.get_ref().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        let v: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
        assert_eq!(v["time"], "2026-11-18T11:06:40.123Z");
        assert_eq!((v["seq"].as_u64(), v["frame_seq"].as_u64()), (Some(3), Some(17)));
        assert_eq!(v["trigger"], "gpio");
        assert_eq!(v["frame"], serde_json::json!({"format": "YUYV", "width": 640, "height": 480}));
        assert_eq!(v["top"][0], serde_json::json!({"label": "cat \"tabby\"", "class": 0, "score": 0.9123}));
        assert_eq!(v["top"][1]["label"], "dog");
        assert_eq!(v["latency_ms"]["inference"], 70.0);
        assert_eq!(v["latency_ms"]["total"], 75.0);
    }

    #[test]
    fn saved_frames_are_bounded_oldest_first_and_readable() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("0000-old.jpg"), b"old").unwrap();
        let mut saver = FrameSaver::new(d.path(), 2, 90).unwrap();
        let yuyv = vec![128u8; 8 * 4 * 2];
        let frame = Frame::new(&yuyv, PixelFormat::Yuyv, 8, 4);
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let a = saver.save(&frame, t0, 1, "tiger cat").unwrap();
        let b = saver.save(&frame, t0 + Duration::from_secs(1), 2, "a/b").unwrap();
        assert!(!d.path().join("0000-old.jpg").exists(), "the oldest goes first");
        assert!(a.file_name().unwrap().to_str().unwrap().ends_with("-00000001-tiger_cat.jpg"), "{a:?}");
        assert!(b.file_name().unwrap().to_str().unwrap().ends_with("-00000002-a_b.jpg"), "{b:?}");
        let img = image::open(&b).unwrap().to_rgb8();
        assert_eq!(img.dimensions(), (8, 4));
        let c = saver.save(&frame, t0 + Duration::from_secs(2), 3, "x").unwrap();
        let mut left: Vec<PathBuf> =
            std::fs::read_dir(d.path()).unwrap().map(|e| e.unwrap().path()).collect();
        left.sort();
        assert_eq!(left, [b, c.clone()]);
        // MJPEG frames are stored byte for byte.
        let jpeg = std::fs::read(&c).unwrap();
        let mj = Frame::new(&jpeg, PixelFormat::Mjpeg, 8, 4);
        let m = saver.save(&mj, t0 + Duration::from_secs(3), 4, "m").unwrap();
        assert_eq!(std::fs::read(m).unwrap(), jpeg);
        assert!(
            std::fs::read_dir(d.path()).unwrap().all(|e| !e
                .unwrap()
                .path()
                .to_string_lossy()
                .ends_with(".tmp"))
        );
    }
}
