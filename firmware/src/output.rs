//! The result record every sink writes (JSON lines, MQTT, the status page), and frames to
//! JPEG (saved frames, the preview).
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
//! to result.

use std::io;
use std::time::{Duration, SystemTime};

use bit_runtime::{Frame, PixelFormat, Prediction, Timings};
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
    /// Every stage's latency.
    pub timings: Timings,
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

struct Latency(Timings);

impl serde::Serialize for Latency {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(bit_runtime::Stage::COUNT))?;
        for (stage, d) in self.0.iter() {
            m.serialize_entry(stage.name(), &ms(d))?;
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
        m.serialize_entry("latency_ms", &Latency(self.timings))?;
        m.end()
    }
}

struct Rfc3339(SystemTime);

impl serde::Serialize for Rfc3339 {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_rfc3339_millis(self.0))
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use bit_runtime::Stage;

    #[test]
    fn a_result_record_is_one_json_object_with_every_field() {
        let labels = vec!["cat \"tabby\"".to_string(), "dog".to_string()];
        let top = [Prediction { class: 0, score: 0.912345 }, Prediction { class: 1, score: 0.087655 }];
        let mut timings = Timings::default();
        for (stage, ms) in Stage::ALL.into_iter().zip([1, 2, 70, 0, 75]) {
            timings.set(stage, Duration::from_millis(ms));
        }
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
            timings,
        };
        let v: serde_json::Value = serde_json::from_slice(&serde_json::to_vec(&rec).unwrap()).unwrap();
        assert_eq!(v["time"], "2026-11-18T11:06:40.123Z");
        assert_eq!((v["seq"].as_u64(), v["frame_seq"].as_u64()), (Some(3), Some(17)));
        assert_eq!(v["trigger"], "gpio");
        assert_eq!(v["frame"], serde_json::json!({"format": "YUYV", "width": 640, "height": 480}));
        assert_eq!(v["top"][0], serde_json::json!({"label": "cat \"tabby\"", "class": 0, "score": 0.9123}));
        assert_eq!(v["top"][1]["label"], "dog");
        assert_eq!(
            v["latency_ms"],
            serde_json::json!({"capture": 1.0, "preprocess": 2.0, "inference": 70.0, "postprocess": 0.0, "total": 75.0})
        );
    }
}
