//! A camera stand-in: image files and raw frame files played back at a set rate.
//!
//! Images (png, jpg, bmp, ppm) are decoded once, at open, to RGB24 frames; raw frame files
//! (`<name>.<W>x<H>.<format>`, the bytes a V4L2 buffer held) are delivered as they are, so
//! frames recorded from a real camera replay through exactly the daemon's camera path,
//! corrupt ones included. Frames are delivered on a fixed schedule (`fps`), whatever the
//! consumer does, like a camera: a slow consumer sees later frames, not a backlog.

use std::path::PathBuf;
use std::time::Duration;

use bit_runtime::frame::MAX_SIDE;
use bit_runtime::{Frame, PixelFormat, raw_frame_kind};

use super::{Captured, FrameSource, OpenError, SourceError};
use crate::config::{AtEnd, ReplayConfig};
use crate::monotonic_now;

struct Recorded {
    name: String,
    data: Vec<u8>,
    format: PixelFormat,
    width: u32,
    height: u32,
}

/// Largest raw frame file replayed (an uncompressed 4K RGB frame is 24 MiB).
const MAX_FILE: u64 = 64 << 20;
/// Most frame bytes a replay keeps in memory.
const MAX_TOTAL: usize = 512 << 20;

/// Plays back the files of a directory (sorted by name), or one file.
pub struct ReplaySource {
    config: ReplayConfig,
    frames: Vec<Recorded>,
    limit: (u32, u32),
    period: Duration,
    next: usize,
    /// Frames delivered since open.
    sequence: u64,
    /// When the next frame is due (monotonic).
    due: Duration,
    ended: bool,
}

impl ReplaySource {
    /// Lists and reads the files now (so that [`FrameSource::frame_limit`] is known); an
    /// unreadable image is skipped with a warning, no playable file at all is an error.
    pub fn new(config: &ReplayConfig) -> Result<ReplaySource, OpenError> {
        let files: Vec<PathBuf> = if config.path.is_dir() {
            let rd = std::fs::read_dir(&config.path)
                .map_err(|e| OpenError::Unavailable(format!("replay {}: {e}", config.path.display())))?;
            let mut files: Vec<PathBuf> = rd
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| bit_runtime::frame::is_frame_file(p))
                .collect();
            files.sort();
            files
        } else {
            vec![config.path.clone()]
        };
        let mut frames = Vec::with_capacity(files.len());
        let mut total = 0usize;
        for f in &files {
            let name = f.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            if let Some((format, width, height)) = raw_frame_kind(f) {
                // Raw frames replay as they are, wrong lengths included (a camera delivers
                // those too), but a size no camera has would only size the buffers for it.
                if width == 0 || height == 0 || width > MAX_SIDE || height > MAX_SIDE {
                    log::warn!(
                        "replay: skipping {}: {width}x{height} is not a frame size (1..={MAX_SIDE} a side)",
                        f.display()
                    );
                    continue;
                }
                let len = std::fs::metadata(f).map(|m| m.len()).unwrap_or(0);
                if len > MAX_FILE {
                    log::warn!("replay: skipping {}: {len} bytes, more than {MAX_FILE}", f.display());
                    continue;
                }
                match std::fs::read(f) {
                    Ok(data) => {
                        total += data.len();
                        frames.push(Recorded { name, data, format, width, height })
                    }
                    Err(e) => log::warn!("replay: skipping {}: {e}", f.display()),
                }
                if total > MAX_TOTAL {
                    return Err(OpenError::Unusable(format!(
                        "replay {}: the files hold more than {} MiB of frames (the replay keeps them in memory)",
                        config.path.display(),
                        MAX_TOTAL >> 20
                    )));
                }
                continue;
            }
            match bit_runtime::load_image(f) {
                Ok(img) => {
                    let (width, height) = img.dimensions();
                    total += img.as_raw().len();
                    frames.push(Recorded {
                        name,
                        data: img.into_raw(),
                        format: PixelFormat::Rgb24,
                        width,
                        height,
                    })
                }
                Err(e) => log::warn!("replay: skipping {e}"),
            }
        }
        if frames.is_empty() {
            return Err(OpenError::Unusable(format!(
                "replay {}: no playable files (png, jpg, bmp, ppm, or <name>.<W>x<H>.<yuyv|uyvy|nv12|rgb|bgr|grey|mjpg>)",
                config.path.display()
            )));
        }
        let limit = frames.iter().fold((1, 1), |(w, h), f| (w.max(f.width), h.max(f.height)));
        log::info!(
            "replay: {} frame(s) from {}, at {} fps, then {:?}",
            frames.len(),
            config.path.display(),
            config.fps,
            config.at_end
        );
        Ok(ReplaySource {
            config: config.clone(),
            frames,
            limit,
            period: Duration::from_secs_f64(1.0 / config.fps as f64),
            next: 0,
            sequence: 0,
            due: Duration::ZERO,
            ended: false,
        })
    }

    /// Frames the replay holds.
    pub fn len(&self) -> usize {
        self.frames.len()
    }

    /// Whether it holds none (never true: [`ReplaySource::new`] refuses that).
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }
}

impl FrameSource for ReplaySource {
    fn describe(&self) -> String {
        format!(
            "replay {} ({} frames at {} fps)",
            self.config.path.display(),
            self.frames.len(),
            self.config.fps
        )
    }

    fn frame_limit(&self) -> (u32, u32) {
        self.limit
    }

    fn known_sizes(&self) -> Vec<(u32, u32)> {
        let mut sizes: Vec<_> = self.frames.iter().map(|f| (f.width, f.height)).collect();
        sizes.sort_unstable();
        sizes.dedup();
        sizes
    }

    fn open(&mut self, _min_size: (u32, u32)) -> Result<(), OpenError> {
        self.next = 0;
        self.ended = false;
        self.due = monotonic_now();
        Ok(())
    }

    fn close(&mut self) {}

    fn next_frame(&mut self, wait: Duration) -> Result<Captured<'_>, SourceError> {
        if self.ended {
            return match self.config.at_end {
                AtEnd::Stop => Err(SourceError::End),
                // A stalled camera: nothing, ever.
                _ => {
                    std::thread::sleep(wait);
                    Err(SourceError::Timeout)
                }
            };
        }
        let now = monotonic_now();
        if self.due > now {
            let left = self.due - now;
            if left > wait {
                std::thread::sleep(wait);
                return Err(SourceError::Timeout);
            }
            std::thread::sleep(left);
        }
        // Like a camera: a frame not taken in time is gone; the next one is due a period after.
        let now = monotonic_now();
        let index = self.next;
        self.due = (self.due + self.period).max(now);
        self.next += 1;
        if self.next == self.frames.len() {
            match self.config.at_end {
                AtEnd::Loop => self.next = 0,
                AtEnd::Stop | AtEnd::Wait => self.ended = true,
            }
        }
        self.sequence += 1;
        let r = &self.frames[index];
        log::trace!("replay: frame {} {}", self.sequence, r.name);
        Ok(Captured {
            frame: Frame::new(&r.data, r.format, r.width, r.height),
            sequence: self.sequence - 1,
            timestamp: now,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        image::RgbImage::from_pixel(8, 6, image::Rgb([200, 10, 10])).save(d.path().join("a.png")).unwrap();
        std::fs::write(d.path().join("b.4x2.yuyv"), [16u8; 16]).unwrap();
        std::fs::write(d.path().join("c.4x2.yuyv"), [16u8; 5]).unwrap(); // corrupt: short
        std::fs::write(d.path().join("d.png"), b"not a png").unwrap(); // skipped
        std::fs::write(d.path().join("notes.txt"), b"ignored").unwrap();
        d
    }

    fn config(d: &tempfile::TempDir, at_end: AtEnd) -> ReplayConfig {
        ReplayConfig { path: d.path().to_owned(), fps: 200.0, at_end }
    }

    #[test]
    fn plays_images_and_raw_frames_in_name_order_then_stops() {
        let d = dir();
        let mut s = ReplaySource::new(&config(&d, AtEnd::Stop)).unwrap();
        assert_eq!(s.len(), 3);
        assert_eq!(s.frame_limit(), (8, 6));
        s.open((224, 224)).unwrap();
        let mut got = Vec::new();
        loop {
            match s.next_frame(Duration::from_secs(1)) {
                Ok(c) => got.push((c.sequence, c.frame.format, c.frame.width, c.frame.data.len())),
                Err(SourceError::End) => break,
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(
            got,
            [
                (0, PixelFormat::Rgb24, 8, 8 * 6 * 3),
                (1, PixelFormat::Yuyv, 4, 16),
                (2, PixelFormat::Yuyv, 4, 5)
            ]
        );
        assert_eq!(s.next_frame(Duration::from_millis(1)).unwrap_err(), SourceError::End);
    }

    #[test]
    fn loops_and_keeps_its_rate() {
        let d = dir();
        let mut s = ReplaySource::new(&ReplayConfig { fps: 50.0, ..config(&d, AtEnd::Loop) }).unwrap();
        s.open((1, 1)).unwrap();
        let start = monotonic_now();
        let mut stamps = Vec::new();
        while stamps.len() < 7 {
            if let Ok(c) = s.next_frame(Duration::from_millis(100)) {
                stamps.push((c.sequence, c.frame.width, c.timestamp));
            }
        }
        let widths: Vec<u32> = stamps.iter().map(|s| s.1).collect();
        assert_eq!(widths, [8, 4, 4, 8, 4, 4, 8]);
        // 6 periods of 20 ms at least between the first and the last frame.
        assert!(stamps[6].2 - stamps[0].2 >= Duration::from_millis(119), "{:?}", stamps[6].2 - stamps[0].2);
        assert!(stamps[0].2 >= start);
    }

    #[test]
    fn a_short_wait_times_out_before_the_next_frame_is_due() {
        let d = dir();
        let mut s = ReplaySource::new(&ReplayConfig { fps: 1.0, ..config(&d, AtEnd::Loop) }).unwrap();
        s.open((1, 1)).unwrap();
        assert!(s.next_frame(Duration::from_millis(10)).is_ok());
        assert_eq!(s.next_frame(Duration::from_millis(10)).unwrap_err(), SourceError::Timeout);
    }

    #[test]
    fn wait_at_end_stalls_forever() {
        let d = dir();
        let mut s = ReplaySource::new(&config(&d, AtEnd::Wait)).unwrap();
        s.open((1, 1)).unwrap();
        for _ in 0..3 {
            s.next_frame(Duration::from_secs(1)).unwrap();
        }
        for _ in 0..3 {
            assert_eq!(s.next_frame(Duration::from_millis(5)).unwrap_err(), SourceError::Timeout);
        }
    }

    #[test]
    fn a_directory_without_playable_files_is_an_error_naming_it() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("x.png"), b"broken").unwrap();
        let err = ReplaySource::new(&config(&d, AtEnd::Loop)).err().unwrap().to_string();
        assert!(err.contains(&d.path().display().to_string()) && err.contains("no playable files"), "{err}");
    }
}
