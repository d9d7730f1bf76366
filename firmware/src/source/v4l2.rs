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
//!
//! The format is set with a raw `VIDIOC_S_FMT` ([`set_format`]) rather than the crate's
//! `set_format`: that converts the driver's answer into enums and panics on a colorspace,
//! quantization, transfer function or field order it does not know (kernels add them). The
//! answer's `colorspace`, `ycbcr_enc` and `quantization` give the YUV matrix and range of the
//! frames ([`yuv_color`]), unless `camera.yuv` names one.

use std::time::Duration;

use bit_runtime::{Frame, PixelFormat, YuvColor, YuvMatrix, YuvRange};
use v4l::Device;
use v4l::buffer::Type;
use v4l::capability::Flags as CapFlags;
use v4l::frameinterval::FrameIntervalEnum;
use v4l::framesize::FrameSizeEnum;
use v4l::io::mmap::Stream;
use v4l::io::traits::{CaptureStream, Stream as _};
use v4l::video::Capture;

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
    color: YuvColor,
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
        let wanted = Applied {
            width: choice.width,
            height: choice.height,
            fourcc: choice.fourcc,
            ..Applied::default()
        };
        let got = set_format(&device, &wanted)
            .map_err(|e| OpenError::Unavailable(format!("{name}: VIDIOC_S_FMT {wanted}: {e}")))?;
        // The driver may adjust anything: what it returns is what it will deliver (a Pi
        // camera's unicam node lists YUYV but hands back raw Bayer).
        choice.check_applied(got.fourcc).map_err(|e| OpenError::Unusable(format!("{name}: {e}")))?;
        let format = pixel_format(got.fourcc).ok_or_else(|| {
            OpenError::Unusable(format!(
                "{name}: asked for {wanted}, the driver chose {got}, which the runtime cannot read"
            ))
        })?;
        if got.width != choice.width || got.height != choice.height || got.fourcc != choice.fourcc {
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
        let (reported, approximation) = yuv_color(got.colorspace, got.ycbcr_enc, got.quantization);
        let color = self.config.yuv.unwrap_or(reported);
        let yuv = match format {
            PixelFormat::Yuyv | PixelFormat::Uyvy | PixelFormat::Nv12 => {
                if let Some(why) = approximation.filter(|_| self.config.yuv.is_none()) {
                    log::warn!("{name}: {why}");
                }
                let from = if self.config.yuv.is_some() { "camera.yuv" } else { "as reported" };
                format!(
                    ", YUV {color} ({from}; colorspace {} ycbcr_enc {} quantization {})",
                    got.colorspace, got.ycbcr_enc, got.quantization
                )
            }
            _ => String::new(),
        };
        log::info!(
            "{name}: {} ({}), capturing {} {}x{} stride {stride}{yuv} ({} offered format(s): {})",
            caps.card,
            caps.driver,
            fourcc_text(got.fourcc),
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
            color,
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
        let mut frame = Frame::new(&buf[..used], o.format, o.width, o.height).with_color(o.color);
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

/// A single-planar capture format: what is asked of `VIDIOC_S_FMT` and what the driver
/// answers (only the fields this daemon reads).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Applied {
    width: u32,
    height: u32,
    fourcc: [u8; 4],
    stride: u32,
    colorspace: u32,
    ycbcr_enc: u32,
    quantization: u32,
}

impl std::fmt::Display for Applied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}x{}", fourcc_text(self.fourcc), self.width, self.height)
    }
}

/// `VIDIOC_S_FMT` for single-planar capture: size and fourcc asked, everything else left to
/// the driver (field `ANY`, colorspace `DEFAULT`); returns the driver's answer, read as plain
/// numbers.
fn set_format(device: &Device, wanted: &Applied) -> std::io::Result<Applied> {
    use v4l::v4l_sys::{v4l2_buf_type_V4L2_BUF_TYPE_VIDEO_CAPTURE, v4l2_format};
    // SAFETY: v4l2_format is plain old data (integers and unions of them): all zeroes is
    // a valid value, and the kernel ABI's "everything else default".
    let mut f: v4l2_format = unsafe { std::mem::zeroed() };
    f.type_ = v4l2_buf_type_V4L2_BUF_TYPE_VIDEO_CAPTURE;
    // SAFETY: writing fields of the `pix` member of a zeroed union, the member the type
    // chosen above selects; the pointer is to a live, exclusively borrowed v4l2_format the
    // size VIDIOC_S_FMT encodes, for the duration of the call.
    unsafe {
        f.fmt.pix.width = wanted.width;
        f.fmt.pix.height = wanted.height;
        f.fmt.pix.pixelformat = u32::from_le_bytes(wanted.fourcc);
        v4l::v4l2::ioctl(
            device.handle().fd(),
            v4l::v4l2::vidioc::VIDIOC_S_FMT,
            &mut f as *mut v4l2_format as *mut std::os::raw::c_void,
        )?;
    }
    // SAFETY: the kernel filled `pix` (the member of a capture format); every bit pattern
    // of these integer fields is valid, `ycbcr_enc` and `hsv_enc` alike.
    let pix = unsafe { f.fmt.pix };
    Ok(Applied {
        width: pix.width,
        height: pix.height,
        fourcc: pix.pixelformat.to_le_bytes(),
        stride: pix.bytesperline,
        colorspace: pix.colorspace,
        // SAFETY: see above: both members of the union are one u32.
        ycbcr_enc: unsafe { pix.__bindgen_anon_1.ycbcr_enc },
        quantization: pix.quantization,
    })
}

// V4L2's colorimetry values (linux/videodev2.h; stable ABI).
const COLORSPACE_REC709: u32 = 3;
const COLORSPACE_SMPTE240M: u32 = 2;
const COLORSPACE_JPEG: u32 = 7;
const COLORSPACE_BT2020: u32 = 10;
const COLORSPACE_DCI_P3: u32 = 12;
const YCBCR_ENC_DEFAULT: u32 = 0;
const YCBCR_ENC_601: u32 = 1;
const YCBCR_ENC_709: u32 = 2;
const YCBCR_ENC_XV601: u32 = 3;
const YCBCR_ENC_XV709: u32 = 4;
const YCBCR_ENC_SYCC: u32 = 5;
const YCBCR_ENC_BT2020: u32 = 6;
const YCBCR_ENC_BT2020_CONST_LUM: u32 = 7;
const YCBCR_ENC_SMPTE240M: u32 = 8;
const QUANTIZATION_DEFAULT: u32 = 0;
const QUANTIZATION_FULL_RANGE: u32 = 1;
const QUANTIZATION_LIM_RANGE: u32 = 2;

/// The YUV matrix and range of a format the driver reported, with the kernel's rules for
/// `DEFAULT` values (`V4L2_MAP_YCBCR_ENC_DEFAULT`, `V4L2_MAP_QUANTIZATION_DEFAULT` for YUV
/// formats: Rec. 709 and DCI-P3 colorspaces encode with BT.709, BT.2020 with BT.2020,
/// SMPTE 240M with its own, everything else with BT.601; full range for the JPEG
/// colorspace, limited otherwise). xvYCC encodings are their matrix in limited range (their
/// extended gamut is the codes outside it, which the conversion clamps like any other);
/// sYCC is BT.601. The second value says what was approximated: BT.2020's constant-luminance
/// encoding (converted as the non-constant one) and values this table does not know (BT.601,
/// limited range, the kernel's own default).
pub fn yuv_color(colorspace: u32, ycbcr_enc: u32, quantization: u32) -> (YuvColor, Option<String>) {
    let mut approximation = None;
    let enc = if ycbcr_enc == YCBCR_ENC_DEFAULT {
        match colorspace {
            COLORSPACE_REC709 | COLORSPACE_DCI_P3 => YCBCR_ENC_709,
            COLORSPACE_BT2020 => YCBCR_ENC_BT2020,
            COLORSPACE_SMPTE240M => YCBCR_ENC_SMPTE240M,
            _ => YCBCR_ENC_601,
        }
    } else {
        ycbcr_enc
    };
    let matrix = match enc {
        YCBCR_ENC_601 | YCBCR_ENC_XV601 | YCBCR_ENC_SYCC => YuvMatrix::Bt601,
        YCBCR_ENC_709 | YCBCR_ENC_XV709 => YuvMatrix::Bt709,
        YCBCR_ENC_BT2020 => YuvMatrix::Bt2020,
        YCBCR_ENC_BT2020_CONST_LUM => {
            approximation = Some(
                "the driver reports BT.2020 constant-luminance YUV, converted as BT.2020 \
                 non-constant luminance (set camera.yuv if colours look wrong)"
                    .to_owned(),
            );
            YuvMatrix::Bt2020
        }
        YCBCR_ENC_SMPTE240M => YuvMatrix::Smpte240m,
        other => {
            approximation = Some(format!(
                "the driver reports ycbcr_enc {other}, which this daemon does not know: converting as \
                 BT.601 (set camera.yuv to choose)"
            ));
            YuvMatrix::Bt601
        }
    };
    let range = match quantization {
        QUANTIZATION_FULL_RANGE => YuvRange::Full,
        QUANTIZATION_LIM_RANGE => YuvRange::Limited,
        QUANTIZATION_DEFAULT if colorspace == COLORSPACE_JPEG => YuvRange::Full,
        QUANTIZATION_DEFAULT => YuvRange::Limited,
        other => {
            let note = format!(
                "the driver reports quantization {other}, which this daemon does not know: limited range assumed"
            );
            approximation = Some(match approximation {
                Some(first) => format!("{first}; {note}"),
                None => note,
            });
            YuvRange::Limited
        }
    };
    (YuvColor { matrix, range }, approximation)
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

    /// The kernel's default rules and each explicit value (linux/videodev2.h, and the
    /// colorimetry tables of the V4L2 documentation).
    #[test]
    fn the_reported_colorimetry_maps_to_the_matrix_and_range() {
        use YuvMatrix::*;
        use YuvRange::*;
        let color = |matrix, range| YuvColor { matrix, range };
        // (colorspace, ycbcr_enc, quantization) -> encoding
        let cases = [
            // Defaults: what UVC webcams report (SRGB / SMPTE170M, nothing else set).
            ((8, 0, 0), color(Bt601, Limited)),
            ((1, 0, 0), color(Bt601, Limited)),
            ((0, 0, 0), color(Bt601, Limited)),
            ((3, 0, 0), color(Bt709, Limited)),
            ((12, 0, 0), color(Bt709, Limited)),
            ((10, 0, 0), color(Bt2020, Limited)),
            ((2, 0, 0), color(Smpte240m, Limited)),
            // The JPEG colorspace (the Pi's legacy camera, many MJPEG webcams' YUYV modes).
            ((7, 0, 0), color(Bt601, Full)),
            // Explicit values win over the colorspace's defaults.
            ((7, 0, 2), color(Bt601, Limited)),
            ((8, 2, 1), color(Bt709, Full)),
            ((3, 1, 0), color(Bt601, Limited)),
            ((8, 3, 0), color(Bt601, Limited)),
            ((8, 4, 0), color(Bt709, Limited)),
            ((8, 5, 1), color(Bt601, Full)),
            ((10, 6, 1), color(Bt2020, Full)),
            ((2, 8, 2), color(Smpte240m, Limited)),
        ];
        for ((colorspace, enc, q), want) in cases {
            assert_eq!(
                yuv_color(colorspace, enc, q),
                (want, None),
                "colorspace {colorspace} ycbcr_enc {enc} quantization {q}"
            );
        }
        let (c, why) = yuv_color(10, 7, 0);
        assert_eq!(c, color(Bt2020, Limited));
        assert!(why.unwrap().contains("constant-luminance"));
        let (c, why) = yuv_color(8, 99, 77);
        assert_eq!(c, YuvColor::BT601_LIMITED);
        let why = why.unwrap();
        assert!(why.contains("ycbcr_enc 99") && why.contains("quantization 77"), "{why}");
    }

    #[test]
    fn jpeg_is_mjpeg_by_another_name() {
        assert_eq!(pixel_format(*b"JPEG"), Some(PixelFormat::Mjpeg));
        assert_eq!(pixel_format(*b"MJPG"), Some(PixelFormat::Mjpeg));
        assert_eq!(pixel_format(*b"NV12"), Some(PixelFormat::Nv12));
        assert_eq!(pixel_format(*b"RG10"), None);
    }
}
