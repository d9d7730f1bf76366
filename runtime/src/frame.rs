//! Camera frames as the runtime takes them: borrowed bytes, a pixel format and a size.
//!
//! A [`Frame`] is checked ([`Frame::validate`]) before any pixel is read: its length must be
//! exactly what the format and size call for, so a frame whose format or size is not what the
//! camera was asked for is refused instead of classified as noise. Errors are [`FrameError`]:
//! `Copy`, no allocation, no formatting until displayed.

use std::fmt;

use crate::preprocess::Roi;

/// Largest width or height of any frame (JPEG's own limit is 65535). Keeps every byte count
/// of a valid frame well inside `usize`, also on 32-bit boards.
pub const MAX_SIDE: u32 = 16384;

/// Pixel layout of a frame, named as V4L2 names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PixelFormat {
    /// Packed 4:2:2, bytes `Y0 U Y1 V` for each pair of pixels (V4L2 `YUYV`, the usual raw
    /// format of USB UVC cameras). Width must be even.
    Yuyv,
    /// Packed 4:2:2, bytes `U Y0 V Y1` (V4L2 `UYVY`). Width must be even.
    Uyvy,
    /// Planar 4:2:0: a full-size Y plane, then one half-size plane of interleaved `U V` (V4L2
    /// `NV12`, single-planar: both planes share the row stride). Width and height must be
    /// even.
    Nv12,
    /// Packed 8-bit `R G B` (V4L2 `RGB3`).
    Rgb24,
    /// Packed 8-bit `B G R` (V4L2 `BGR3`).
    Bgr24,
    /// 8-bit luminance only (V4L2 `GREY`); replicated to three channels.
    Grey,
    /// One baseline or progressive JPEG per frame (V4L2 `MJPG`).
    Mjpeg,
}

impl PixelFormat {
    /// Every format, in declaration order.
    pub const ALL: [PixelFormat; 7] = [
        PixelFormat::Yuyv,
        PixelFormat::Uyvy,
        PixelFormat::Nv12,
        PixelFormat::Rgb24,
        PixelFormat::Bgr24,
        PixelFormat::Grey,
        PixelFormat::Mjpeg,
    ];

    /// The V4L2 four-character code.
    pub fn fourcc(self) -> [u8; 4] {
        match self {
            PixelFormat::Yuyv => *b"YUYV",
            PixelFormat::Uyvy => *b"UYVY",
            PixelFormat::Nv12 => *b"NV12",
            PixelFormat::Rgb24 => *b"RGB3",
            PixelFormat::Bgr24 => *b"BGR3",
            PixelFormat::Grey => *b"GREY",
            PixelFormat::Mjpeg => *b"MJPG",
        }
    }

    /// The format with this V4L2 four-character code, if the runtime reads it.
    pub fn from_fourcc(code: [u8; 4]) -> Option<PixelFormat> {
        PixelFormat::ALL.into_iter().find(|f| f.fourcc() == code)
    }

    /// Bytes of one row of `width` pixels (of the Y plane for NV12); `None` for MJPEG, whose
    /// rows are not stored.
    pub fn row_bytes(self, width: u32) -> Option<usize> {
        let w = width as usize;
        match self {
            PixelFormat::Yuyv | PixelFormat::Uyvy => Some(2 * w),
            PixelFormat::Nv12 | PixelFormat::Grey => Some(w),
            PixelFormat::Rgb24 | PixelFormat::Bgr24 => Some(3 * w),
            PixelFormat::Mjpeg => None,
        }
    }

    /// Rows of bytes a frame of `height` pixels holds: `height`, or `height * 3 / 2` for
    /// NV12 (the chroma plane follows the luma plane).
    fn rows(self, height: u32) -> usize {
        match self {
            PixelFormat::Nv12 => height as usize + height as usize / 2,
            _ => height as usize,
        }
    }

    /// The format named by a raw frame file's extension: `yuyv`, `uyvy`, `nv12`, `rgb`
    /// (RGB24), `bgr` (BGR24), `grey` (or `gray`), `mjpg`; case-insensitive.
    pub fn from_extension(ext: &str) -> Option<PixelFormat> {
        Some(match ext.to_ascii_lowercase().as_str() {
            "yuyv" => PixelFormat::Yuyv,
            "uyvy" => PixelFormat::Uyvy,
            "nv12" => PixelFormat::Nv12,
            "rgb" => PixelFormat::Rgb24,
            "bgr" => PixelFormat::Bgr24,
            "grey" | "gray" => PixelFormat::Grey,
            "mjpg" => PixelFormat::Mjpeg,
            _ => return None,
        })
    }

    /// The extension raw frame files of this format get (the one [`PixelFormat::from_extension`]
    /// reads back).
    pub fn extension(self) -> &'static str {
        match self {
            PixelFormat::Yuyv => "yuyv",
            PixelFormat::Uyvy => "uyvy",
            PixelFormat::Nv12 => "nv12",
            PixelFormat::Rgb24 => "rgb",
            PixelFormat::Bgr24 => "bgr",
            PixelFormat::Grey => "grey",
            PixelFormat::Mjpeg => "mjpg",
        }
    }

    /// Whether the format needs an even width (4:2:2 and 4:2:0 share chroma across pairs).
    pub fn needs_even_width(self) -> bool {
        matches!(self, PixelFormat::Yuyv | PixelFormat::Uyvy | PixelFormat::Nv12)
    }

    /// Whether the format needs an even height (4:2:0 shares chroma across row pairs).
    pub fn needs_even_height(self) -> bool {
        self == PixelFormat::Nv12
    }
}

impl fmt::Display for PixelFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let code = self.fourcc();
        // Every fourcc above is ASCII.
        f.write_str(std::str::from_utf8(&code).unwrap_or("????"))
    }
}

/// The YCbCr matrix of a YUV frame: which luma weights (`Kr`, `Kb`) the camera encoded with.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum YuvMatrix {
    /// ITU-R BT.601 (`Kr` 0.299, `Kb` 0.114): SDTV, JPEG/JFIF, and what UVC cameras and most
    /// sensors report for their YUV modes.
    #[default]
    Bt601,
    /// ITU-R BT.709 (`Kr` 0.2126, `Kb` 0.0722): HDTV, what HDMI capture and some ISPs send.
    Bt709,
    /// ITU-R BT.2020, non-constant luminance (`Kr` 0.2627, `Kb` 0.0593).
    Bt2020,
    /// SMPTE 240M (`Kr` 0.212, `Kb` 0.087), an early HDTV encoding V4L2 still names.
    Smpte240m,
}

impl YuvMatrix {
    /// The luma weights `(Kr, Kb)`.
    pub fn kr_kb(self) -> (f64, f64) {
        match self {
            YuvMatrix::Bt601 => (0.299, 0.114),
            YuvMatrix::Bt709 => (0.2126, 0.0722),
            YuvMatrix::Bt2020 => (0.2627, 0.0593),
            YuvMatrix::Smpte240m => (0.212, 0.087),
        }
    }
}

/// Whether YUV values use the full byte or the "studio" range (Y 16..=235, U and V
/// 16..=240).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum YuvRange {
    /// Y 16..=235, chroma 16..=240 (V4L2 `V4L2_QUANTIZATION_LIM_RANGE`, the default for
    /// YUV formats).
    #[default]
    Limited,
    /// 0..=255 (V4L2 `V4L2_QUANTIZATION_FULL_RANGE`; JFIF).
    Full,
}

/// How a YUV frame's bytes map to RGB: matrix and range. The default, BT.601 limited range,
/// is what V4L2 implies for YUV formats of an SDTV or sRGB colorspace; a V4L2 source sets
/// what the driver reports for the negotiated format. RGB, grey and MJPEG frames ignore it
/// (JPEG is JFIF: BT.601, full range, as its decoder converts it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct YuvColor {
    /// The matrix.
    pub matrix: YuvMatrix,
    /// The range.
    pub range: YuvRange,
}

impl YuvColor {
    /// BT.601, limited range: the default.
    pub const BT601_LIMITED: YuvColor = YuvColor { matrix: YuvMatrix::Bt601, range: YuvRange::Limited };

    /// Every encoding, for listings and tests.
    pub const ALL: [YuvColor; 8] = {
        use YuvMatrix::*;
        use YuvRange::*;
        const fn c(matrix: YuvMatrix, range: YuvRange) -> YuvColor {
            YuvColor { matrix, range }
        }
        [
            c(Bt601, Limited),
            c(Bt601, Full),
            c(Bt709, Limited),
            c(Bt709, Full),
            c(Bt2020, Limited),
            c(Bt2020, Full),
            c(Smpte240m, Limited),
            c(Smpte240m, Full),
        ]
    };

    /// The configuration name: `bt601-limited`, `bt709-full`, ...
    pub fn name(self) -> &'static str {
        use YuvMatrix::*;
        use YuvRange::*;
        match (self.matrix, self.range) {
            (Bt601, Limited) => "bt601-limited",
            (Bt601, Full) => "bt601-full",
            (Bt709, Limited) => "bt709-limited",
            (Bt709, Full) => "bt709-full",
            (Bt2020, Limited) => "bt2020-limited",
            (Bt2020, Full) => "bt2020-full",
            (Smpte240m, Limited) => "smpte240m-limited",
            (Smpte240m, Full) => "smpte240m-full",
        }
    }

    /// The encoding a [`YuvColor::name`] names.
    pub fn from_name(name: &str) -> Option<YuvColor> {
        YuvColor::ALL.into_iter().find(|c| c.name() == name)
    }
}

impl fmt::Display for YuvColor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One camera frame, borrowed from the capture buffer.
#[derive(Clone, Copy, Debug)]
pub struct Frame<'a> {
    /// The frame's bytes: exactly the bytes the camera wrote (V4L2 `bytesused`).
    pub data: &'a [u8],
    /// Pixel layout of `data`.
    pub format: PixelFormat,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Bytes from one row to the next (V4L2 `bytesperline`, for NV12 both planes'); `None`
    /// for rows packed without padding. Ignored for MJPEG.
    pub stride: Option<usize>,
    /// The YCbCr encoding of a YUV frame (YUYV, UYVY, NV12); ignored for the others.
    pub color: YuvColor,
}

impl<'a> Frame<'a> {
    /// A frame with rows packed without padding.
    pub fn new(data: &'a [u8], format: PixelFormat, width: u32, height: u32) -> Frame<'a> {
        Frame { data, format, width, height, stride: None, color: YuvColor::BT601_LIMITED }
    }

    /// The same frame with its YUV values encoded as `color`.
    pub fn with_color(self, color: YuvColor) -> Frame<'a> {
        Frame { color, ..self }
    }

    /// The same frame with rows `stride` bytes apart.
    pub fn with_stride(self, stride: usize) -> Frame<'a> {
        Frame { stride: Some(stride), ..self }
    }

    /// Checks the size against the format, and the length against the size, without
    /// reading any pixel. For MJPEG only the size and the JPEG start marker are checked
    /// here; the header is read when the frame is decoded.
    pub fn validate(&self) -> Result<(), FrameError> {
        self.row_stride().map(|_| ())
    }

    /// Validates and returns the distance between rows in bytes (0 for MJPEG).
    pub(crate) fn row_stride(&self) -> Result<usize, FrameError> {
        check_geometry(self.format, self.width, self.height)?;
        let Some(row) = self.format.row_bytes(self.width) else {
            if self.data.len() < 2 || self.data[..2] != [0xff, 0xd8] {
                return Err(FrameError::Jpeg(JpegFault::NotJpeg));
            }
            return Ok(0);
        };
        let rows = self.format.rows(self.height);
        let got = self.data.len();
        match self.stride {
            None => {
                // row * rows < 3 * 16384 * 24576 fits in usize on 32-bit targets.
                let expected = row * rows;
                if got != expected {
                    return Err(self.wrong_length(expected));
                }
                Ok(row)
            }
            Some(stride) => {
                if stride < row {
                    return Err(FrameError::StrideTooShort { format: self.format, stride, min: row });
                }
                let expected = stride.saturating_mul(rows);
                // The last row's padding may be left out (some drivers do).
                let min = stride.saturating_mul(rows - 1).saturating_add(row);
                if got < min || got > expected {
                    return Err(self.wrong_length(expected));
                }
                Ok(stride)
            }
        }
    }

    fn wrong_length(&self, expected: usize) -> FrameError {
        FrameError::WrongLength {
            format: self.format,
            width: self.width,
            height: self.height,
            expected,
            got: self.data.len(),
        }
    }
}

/// A raw camera frame file is named `<anything>.<W>x<H>.<format>` (format as in
/// [`PixelFormat::from_extension`]) and holds the bytes a V4L2 buffer held (`bytesused` of
/// them), rows packed without padding: e.g. `frame-0001.640x480.yuyv`. Returns the format and
/// size such a name gives, `None` for any other name.
pub fn raw_frame_kind(path: &std::path::Path) -> Option<(PixelFormat, u32, u32)> {
    let name = path.file_name()?.to_str()?;
    let mut parts = name.rsplitn(3, '.');
    let format = PixelFormat::from_extension(parts.next()?)?;
    let (w, h) = parts.next()?.split_once('x')?;
    parts.next()?;
    Some((format, w.parse().ok()?, h.parse().ok()?))
}

/// The end of a raw frame file's name for a frame: `<W>x<H>.<format>` (see
/// [`raw_frame_kind`]).
pub fn raw_frame_suffix(format: PixelFormat, width: u32, height: u32) -> String {
    format!("{width}x{height}.{}", format.extension())
}

impl Frame<'_> {
    /// The frame's bytes with rows packed without padding (as raw frame files hold them),
    /// after validating it. MJPEG frames are copied as they are.
    pub fn packed(&self, out: &mut Vec<u8>) -> Result<(), FrameError> {
        let stride = self.row_stride()?;
        out.clear();
        match self.format.row_bytes(self.width) {
            Some(row) if stride != row => {
                for r in 0..self.format.rows(self.height) {
                    out.extend_from_slice(&self.data[r * stride..][..row]);
                }
            }
            _ => out.extend_from_slice(self.data),
        }
        Ok(())
    }
}

/// Whether `path` names something the frame readers take: an image file (png, jpg, jpeg,
/// bmp, ppm) or a raw frame file (see [`raw_frame_kind`]).
pub fn is_frame_file(path: &std::path::Path) -> bool {
    raw_frame_kind(path).is_some()
        || path.extension().and_then(|e| e.to_str()).is_some_and(|e| {
            matches!(e.to_ascii_lowercase().as_str(), "png" | "jpg" | "jpeg" | "bmp" | "ppm")
        })
}

/// Refuses a frame larger than the buffers allocated at start-up.
pub(crate) fn check_max(width: u32, height: u32, max_width: u32, max_height: u32) -> Result<(), FrameError> {
    if width > max_width || height > max_height {
        return Err(FrameError::TooLarge { width, height, max_width, max_height });
    }
    Ok(())
}

/// Zero, odd (where the format needs even) and oversized dimensions.
pub(crate) fn check_geometry(format: PixelFormat, width: u32, height: u32) -> Result<(), FrameError> {
    if width == 0 || height == 0 {
        return Err(FrameError::ZeroSize { width, height });
    }
    if width > MAX_SIDE || height > MAX_SIDE {
        return Err(FrameError::TooLarge { width, height, max_width: MAX_SIDE, max_height: MAX_SIDE });
    }
    if (format.needs_even_width() && !width.is_multiple_of(2))
        || (format.needs_even_height() && !height.is_multiple_of(2))
    {
        return Err(FrameError::OddSize { format, width, height });
    }
    Ok(())
}

/// What is wrong with a JPEG frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JpegFault {
    /// The data does not start with a JPEG start-of-image marker.
    NotJpeg,
    /// The data ends before the image does (a partial USB transfer, a cut file).
    Truncated,
    /// A header or the entropy-coded data is malformed.
    Corrupt,
    /// A valid JPEG the decoder does not handle (e.g. lossless or 12-bit).
    Unsupported,
}

impl fmt::Display for JpegFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            JpegFault::NotJpeg => "no JPEG start marker",
            JpegFault::Truncated => "truncated",
            JpegFault::Corrupt => "corrupt",
            JpegFault::Unsupported => "unsupported JPEG variant",
        })
    }
}

/// Why a frame was refused. `Copy` and allocation-free: a bad frame costs no more than a
/// good one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// Width or height is zero.
    ZeroSize {
        /// Declared width.
        width: u32,
        /// Declared height.
        height: u32,
    },
    /// A chroma-subsampled format with an odd width (YUYV, UYVY, NV12) or height (NV12).
    OddSize {
        /// The format.
        format: PixelFormat,
        /// Declared width.
        width: u32,
        /// Declared height.
        height: u32,
    },
    /// Larger than the configured maximum (or than [`MAX_SIDE`]).
    TooLarge {
        /// Frame width.
        width: u32,
        /// Frame height.
        height: u32,
        /// Largest width accepted.
        max_width: u32,
        /// Largest height accepted.
        max_height: u32,
    },
    /// The row stride is shorter than one row of pixels.
    StrideTooShort {
        /// The format.
        format: PixelFormat,
        /// Declared stride in bytes.
        stride: usize,
        /// Bytes of one row.
        min: usize,
    },
    /// The data length does not match the format and size.
    WrongLength {
        /// The format.
        format: PixelFormat,
        /// Declared width.
        width: u32,
        /// Declared height.
        height: u32,
        /// Bytes the format and size call for (with a stride: up to the last row's padding,
        /// which may be left out).
        expected: usize,
        /// Bytes given.
        got: usize,
    },
    /// An MJPEG frame that does not decode.
    Jpeg(JpegFault),
    /// An MJPEG frame whose image size is not the declared one.
    JpegSize {
        /// Declared width.
        declared_width: u32,
        /// Declared height.
        declared_height: u32,
        /// Width in the JPEG header.
        width: u32,
        /// Height in the JPEG header.
        height: u32,
    },
    /// The region of interest does not lie inside the frame (or is empty).
    RoiOutside {
        /// The region.
        roi: Roi,
        /// Frame width.
        width: u32,
        /// Frame height.
        height: u32,
    },
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            FrameError::ZeroSize { width, height } => write!(f, "frame size {width}x{height} is empty"),
            FrameError::OddSize { format, width, height } => {
                write!(f, "{format} frame {width}x{height}: chroma subsampling needs an even size")
            }
            FrameError::TooLarge { width, height, max_width, max_height } => {
                write!(f, "frame {width}x{height} exceeds the maximum {max_width}x{max_height}")
            }
            FrameError::StrideTooShort { format, stride, min } => {
                write!(f, "{format} frame: stride {stride} bytes is shorter than a row ({min} bytes)")
            }
            FrameError::WrongLength { format, width, height, expected, got } => {
                write!(f, "{format} frame {width}x{height}: {got} bytes, expected {expected}")
            }
            FrameError::Jpeg(fault) => write!(f, "MJPEG frame: {fault}"),
            FrameError::JpegSize { declared_width, declared_height, width, height } => {
                write!(f, "MJPEG frame is {width}x{height}, declared {declared_width}x{declared_height}")
            }
            FrameError::RoiOutside { roi, width, height } => write!(
                f,
                "region {}x{} at ({}, {}) is not inside the {width}x{height} frame",
                roi.width, roi.height, roi.x, roi.y
            ),
        }
    }
}

impl std::error::Error for FrameError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_frame_names_round_trip_and_packing_drops_the_padding() {
        for format in PixelFormat::ALL {
            let name = format!("x.{}", raw_frame_suffix(format, 640, 480));
            assert_eq!(raw_frame_kind(std::path::Path::new(&name)), Some((format, 640, 480)), "{name}");
        }
        let padded = [1u8, 2, 3, 4, 0, 0, 5, 6, 7, 8];
        let mut out = Vec::new();
        Frame::new(&padded, PixelFormat::Grey, 4, 2).with_stride(6).packed(&mut out).unwrap();
        assert_eq!(out, [1, 2, 3, 4, 5, 6, 7, 8]);
        Frame::new(&padded[..8], PixelFormat::Grey, 4, 2).packed(&mut out).unwrap();
        assert_eq!(out, padded[..8]);
        assert!(Frame::new(&padded[..7], PixelFormat::Grey, 4, 2).packed(&mut out).is_err());
    }

    #[test]
    fn lengths_strides_and_sizes() {
        let buf = vec![0u8; 4 * 2 * 2];
        assert_eq!(Frame::new(&buf, PixelFormat::Yuyv, 4, 2).validate(), Ok(()));
        assert_eq!(
            Frame::new(&buf[1..], PixelFormat::Yuyv, 4, 2).validate(),
            Err(FrameError::WrongLength {
                format: PixelFormat::Yuyv,
                width: 4,
                height: 2,
                expected: 16,
                got: 15
            })
        );
        assert!(matches!(
            Frame::new(&buf, PixelFormat::Yuyv, 3, 2).validate(),
            Err(FrameError::OddSize { .. })
        ));
        assert!(matches!(
            Frame::new(&buf, PixelFormat::Nv12, 4, 3).validate(),
            Err(FrameError::OddSize { .. })
        ));
        assert!(matches!(
            Frame::new(&buf, PixelFormat::Grey, 0, 3).validate(),
            Err(FrameError::ZeroSize { .. })
        ));
        // NV12 4x2: 8 luma + 4 chroma bytes.
        assert_eq!(Frame::new(&buf[..12], PixelFormat::Nv12, 4, 2).validate(), Ok(()));
        // Stride 6 for 4-pixel grey rows, last row's padding omitted: 6 + 4 bytes.
        assert_eq!(Frame::new(&buf[..10], PixelFormat::Grey, 4, 2).with_stride(6).validate(), Ok(()));
        assert_eq!(Frame::new(&buf[..12], PixelFormat::Grey, 4, 2).with_stride(6).validate(), Ok(()));
        assert!(Frame::new(&buf[..13], PixelFormat::Grey, 4, 2).with_stride(6).validate().is_err());
        assert!(matches!(
            Frame::new(&buf, PixelFormat::Rgb24, 4, 1).with_stride(11).validate(),
            Err(FrameError::StrideTooShort { min: 12, .. })
        ));
        assert_eq!(
            Frame::new(&buf, PixelFormat::Mjpeg, 4, 2).validate(),
            Err(FrameError::Jpeg(JpegFault::NotJpeg))
        );
        assert!(matches!(
            Frame::new(&buf, PixelFormat::Grey, MAX_SIDE + 1, 1).validate(),
            Err(FrameError::TooLarge { .. })
        ));
    }

    #[test]
    fn fourcc_round_trip() {
        for format in PixelFormat::ALL {
            assert_eq!(PixelFormat::from_fourcc(format.fourcc()), Some(format));
        }
        assert_eq!(PixelFormat::from_fourcc(*b"H264"), None);
        assert_eq!(PixelFormat::Nv12.to_string(), "NV12");
    }
}
