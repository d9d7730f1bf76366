//! A V4L2 camera through the `v4l` crate: enumerate, negotiate ([`crate::negotiate`]), set
//! the format and use what the driver chose, mmap streaming, `bytesused`, timeouts.
//!
//! Buffers: the driver fills `buffers` mmap'ed buffers in turn; the daemon holds one (the
//! frame being classified) and returns it on the next call, so the others keep filling and
//! the daemon, which asks for frames continuously (also while idle in triggered mode), always
//! gets a fresh one rather than a stale backlog.
//!
//! The `v4l` crate's `next()` returns the previous buffer to the driver and then waits; if
//! that wait times out, its next call would queue the same buffer twice. So the wait is done
//! here first (`poll` on the device), and `next()` is only called once a filled buffer is
//! ready (it then does not block).

use std::time::Duration;

use bit_runtime::{Frame, PixelFormat};
use v4l::buffer::Type;
use v4l::capability::Flags as CapFlags;
use v4l::frameinterval::FrameIntervalEnum;
use v4l::framesize::FrameSizeEnum;
use v4l::io::mmap::Stream;
use v4l::io::traits::{CaptureStream, Stream as _};
use v4l::video::Capture;
use v4l::{Device, FourCC};

use super::{Captured, FrameSource, OpenError, SourceError};
use crate::config::CameraConfig;
use crate::negotiate::{self, FormatOffer, Request, SizeOffer, SizeRange};

/// Largest frame negotiated when the configuration names no size (sizes the classifier's
/// MJPEG buffer; 1080p covers every USB camera's useful modes).
pub const DEFAULT_LIMIT: (u32, u32) = (1920, 1080);

struct Open {
    // Declared before `device`: the stream unmaps its buffers and stops streaming on drop.
    stream: Stream<'static>,
    _device: Device,
    format: PixelFormat,
    width: u32,
    height: u32,
    stride: usize,
    started: bool,
}

/// A V4L2 capture device.
pub struct V4l2Source {
    config: CameraConfig,
    open: Option<Open>,
    limit: (u32, u32),
}

impl V4l2Source {
    /// A camera at the configured device; nothing is opened yet.
    pub fn new(config: &CameraConfig) -> V4l2Source {
        let limit = config.size.unwrap_or(DEFAULT_LIMIT);
        V4l2Source { config: config.clone(), open: None, limit }
    }
}

/// What the device offers, as [`negotiate`] takes it: each format's sizes (frame rates
/// for discrete sizes), limited to `limit` (larger sizes are left out, a stepwise range is
/// clamped).
pub fn enumerate(device: &Device, limit: (u32, u32)) -> std::io::Result<Vec<FormatOffer>> {
    let mut offers = Vec::new();
    for desc in device.enum_formats()? {
        let code = desc.fourcc.repr;
        let mut sizes = Vec::new();
        for size in device.enum_framesizes(desc.fourcc).unwrap_or_default() {
            match size.size {
                FrameSizeEnum::Discrete(d) => {
                    if d.width > limit.0 || d.height > limit.1 {
                        continue;
                    }
                    let max_fps = device
                        .enum_frameintervals(desc.fourcc, d.width, d.height)
                        .unwrap_or_default()
                        .iter()
                        .map(|i| match &i.interval {
                            FrameIntervalEnum::Discrete(f) => (f.numerator, f.denominator),
                            FrameIntervalEnum::Stepwise(s) => (s.min.numerator, s.min.denominator),
                        })
                        .filter(|(num, _)| *num > 0)
                        .map(|(num, den)| den as f32 / num as f32)
                        .reduce(f32::max);
                    sizes.push(SizeOffer {
                        range: SizeRange::Discrete { width: d.width, height: d.height },
                        max_fps,
                    });
                }
                FrameSizeEnum::Stepwise(s) => {
                    if s.min_width > limit.0 || s.min_height > limit.1 {
                        continue;
                    }
                    sizes.push(SizeOffer {
                        range: SizeRange::Stepwise {
                            min_width: s.min_width,
                            max_width: s.max_width.min(limit.0),
                            step_width: s.step_width.max(1),
                            min_height: s.min_height,
                            max_height: s.max_height.min(limit.1),
                            step_height: s.step_height.max(1),
                        },
                        max_fps: None,
                    });
                }
            }
        }
        offers.push(FormatOffer { fourcc: code, description: desc.description.clone(), sizes });
    }
    Ok(offers)
}

/// The runtime's pixel format for a V4L2 fourcc (`JPEG` is MJPEG by another name).
pub fn pixel_format(code: [u8; 4]) -> Option<PixelFormat> {
    crate::negotiate::pixel_format(code)
}

fn fourcc_text(code: [u8; 4]) -> String {
    String::from_utf8_lossy(&code).into_owned()
}

impl FrameSource for V4l2Source {
    fn describe(&self) -> String {
        match &self.open {
            Some(o) => format!("{}: {} {}x{}", self.config.device.display(), o.format, o.width, o.height),
            None => format!("{} (closed)", self.config.device.display()),
        }
    }

    fn frame_limit(&self) -> (u32, u32) {
        self.limit
    }

    fn known_sizes(&self) -> Vec<(u32, u32)> {
        self.config.size.into_iter().collect()
    }

    fn open(&mut self, min_size: (u32, u32)) -> Result<(), OpenError> {
        self.close();
        let path = &self.config.device;
        let name = path.display();
        let device = Device::with_path(path).map_err(|e| OpenError::Unavailable(format!("{name}: {e}")))?;
        let caps = device.query_caps().map_err(|e| {
            if e.raw_os_error() == Some(libc::ENOTTY) {
                OpenError::Unusable(format!("{name} is not a V4L2 device (VIDIOC_QUERYCAP: {e})"))
            } else {
                OpenError::Unavailable(format!("{name}: VIDIOC_QUERYCAP: {e}"))
            }
        })?;
        if !caps.capabilities.contains(CapFlags::VIDEO_CAPTURE) {
            let why = if caps.capabilities.contains(CapFlags::VIDEO_CAPTURE_MPLANE) {
                "is a multi-planar capture device (e.g. a Rockchip ISP); this daemon captures single-planar \
                 V4L2 only"
            } else {
                "is not a video capture device (a metadata or output node?)"
            };
            return Err(OpenError::Unusable(format!("{name} ({}, driver {}) {why}", caps.card, caps.driver)));
        }
        if !caps.capabilities.contains(CapFlags::STREAMING) {
            return Err(OpenError::Unusable(format!(
                "{name} ({}) does not support streaming I/O",
                caps.card
            )));
        }
        let offers = enumerate(&device, self.limit)
            .map_err(|e| OpenError::Unavailable(format!("{name}: enumerating formats: {e}")))?;
        let request = Request {
            min_width: min_size.0,
            min_height: min_size.1,
            fourcc: self.config.format,
            size: self.config.size,
            fps: self.config.fps,
        };
        let choice = negotiate::negotiate(&offers, &request)
            .map_err(|e| OpenError::Unusable(format!("{name}: {e}")))?;
        if choice.upscaled {
            log::warn!(
                "{name}: no size of at least {}x{} offered; capturing {}x{} (frames are upscaled)",
                min_size.0,
                min_size.1,
                choice.width,
                choice.height
            );
        }
        let wanted = v4l::Format::new(choice.width, choice.height, FourCC::new(&choice.fourcc));
        let got = device
            .set_format(&wanted)
            .map_err(|e| OpenError::Unavailable(format!("{name}: VIDIOC_S_FMT {wanted}: {e}")))?;
        // The driver may adjust anything: what it returns is what it will deliver (a Pi
        // camera's unicam node lists YUYV but hands back raw Bayer).
        choice.check_applied(got.fourcc.repr).map_err(|e| OpenError::Unusable(format!("{name}: {e}")))?;
        let format = pixel_format(got.fourcc.repr).ok_or_else(|| {
            OpenError::Unusable(format!(
                "{name}: asked for {wanted}, the driver chose {got}, which the runtime cannot read"
            ))
        })?;
        if got.width != choice.width || got.height != choice.height || got.fourcc.repr != choice.fourcc {
            log::warn!("{name}: asked for {wanted}, the driver chose {got}");
        }
        if let Some(fps) = self.config.fps {
            match device.set_params(&v4l::video::capture::Parameters::with_fps(fps.round().max(1.0) as u32)) {
                Ok(p) => log::info!("{name}: frame interval {}", p.interval),
                Err(e) => log::warn!("{name}: could not set {fps} fps: {e}"),
            }
        }
        let mut stream =
            Stream::with_buffers(&device, Type::VideoCapture, self.config.buffers).map_err(|e| {
                OpenError::Unavailable(format!("{name}: mapping {} buffers: {e}", self.config.buffers))
            })?;
        // Only the first call of `next()` (which starts streaming) waits inside the crate.
        stream.set_timeout(self.config.timeout);
        let stride = if format == PixelFormat::Mjpeg { 0 } else { got.stride as usize };
        log::info!(
            "{name}: {} ({}), capturing {} {}x{} stride {stride} ({} offered format(s): {})",
            caps.card,
            caps.driver,
            fourcc_text(got.fourcc.repr),
            got.width,
            got.height,
            offers.len(),
            offers.iter().map(|o| fourcc_text(o.fourcc)).collect::<Vec<_>>().join(" ")
        );
        self.open = Some(Open {
            stream,
            _device: device,
            format,
            width: got.width,
            height: got.height,
            stride,
            started: false,
        });
        Ok(())
    }

    fn close(&mut self) {
        if let Some(mut o) = self.open.take()
            && o.started
            && let Err(e) = o.stream.stop()
        {
            log::debug!("{}: VIDIOC_STREAMOFF: {e}", self.config.device.display());
        }
    }

    fn next_frame(&mut self, wait: Duration) -> Result<Captured<'_>, SourceError> {
        let Some(o) = self.open.as_mut() else {
            return Err(SourceError::Lost {
                what: "capture",
                kind: std::io::ErrorKind::NotConnected,
                errno: None,
            });
        };
        if o.started {
            let ms = i32::try_from(wait.as_millis()).unwrap_or(i32::MAX);
            match o.stream.handle().poll(libc::POLLIN, ms) {
                Ok(0) => return Err(SourceError::Timeout),
                Ok(_) => {}
                Err(e) => return Err(SourceError::from_io("poll", &e)),
            }
        }
        o.started = true;
        let (buf, meta) = match o.stream.next() {
            Ok(x) => x,
            // A timeout inside `next()` (first call only) leaves every buffer queued but
            // the crate believes one is ours: reopen rather than queue it twice.
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                return Err(SourceError::Lost { what: "first frame", kind: e.kind(), errno: None });
            }
            Err(e) => return Err(SourceError::from_io("VIDIOC_DQBUF", &e)),
        };
        let used = (meta.bytesused as usize).min(buf.len());
        let mut frame = Frame::new(&buf[..used], o.format, o.width, o.height);
        if o.format != PixelFormat::Mjpeg {
            frame = frame.with_stride(o.stride);
        }
        let ts = meta.timestamp;
        Ok(Captured {
            frame,
            sequence: meta.sequence as u64,
            timestamp: Duration::new(ts.sec.max(0) as u64, (ts.usec.clamp(0, 999_999) as u32) * 1000),
        })
    }
}

impl Drop for V4l2Source {
    fn drop(&mut self) {
        self.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// bindgen generated the V4L2 structs for this target's ABI (a host-layout struct on a
    /// cross build would make every VIDIOC_QBUF/DQBUF fail or corrupt memory).
    #[test]
    fn v4l2_buffer_has_the_kernel_abi_size() {
        let size = std::mem::size_of::<v4l::v4l_sys::v4l2_buffer>();
        #[cfg(target_pointer_width = "64")]
        assert_eq!(size, 88);
        #[cfg(target_pointer_width = "32")]
        assert!(size == 68 || size == 80, "{size}: 68 with 32-bit time_t, 80 with 64-bit time_t");
    }

    #[test]
    fn jpeg_is_mjpeg_by_another_name() {
        assert_eq!(pixel_format(*b"JPEG"), Some(PixelFormat::Mjpeg));
        assert_eq!(pixel_format(*b"MJPG"), Some(PixelFormat::Mjpeg));
        assert_eq!(pixel_format(*b"NV12"), Some(PixelFormat::Nv12));
        assert_eq!(pixel_format(*b"RG10"), None);
    }
}
