//! Picks the capture pixel format and frame size from what a V4L2 camera enumerates.
//!
//! [`negotiate`] is a pure function: the caller enumerates the device (formats, frame sizes
//! and, where the driver reports them, frame intervals), converts that into [`FormatOffer`]s
//! and gets back one [`Choice`] or a [`NegotiateError`] whose message names what the camera
//! offers. No I/O and no v4l types are involved.
//!
//! The rules, in order:
//!
//! 1. [`Request::fourcc`] restricts the search to that one format; it must be offered and
//!    be in [`supported`].
//! 2. [`Request::size`] restricts the search to that exact size: a discrete size equal to it
//!    or a stepwise range that contains it on its step grid.
//! 3. Otherwise each offered size (each stepwise range: see [`SizeRange::candidate`]) is a
//!    candidate. It is *big enough* when it is at least [`Request::min_width`] x
//!    [`Request::min_height`], and *fast enough* when no rate was asked for, the rate is not
//!    known, or its fastest rate reaches [`Request::fps`] within [`FPS_TOLERANCE`].
//! 4. Candidates rank by, in order: `GREY` only when no colour format has a candidate at all
//!    (it loses colour); big and fast enough, then big enough but too slow, then too small
//!    but fast enough, then the rest; format rank in [`supported`]; smallest area for big
//!    enough candidates, largest area for too small ones (the least upscaling); the first
//!    enumerated. So a raw format wins over MJPEG whenever it has a size that is big (and
//!    fast) enough, and a big enough MJPEG size beats a raw format whose sizes are all too
//!    small. When nothing is big enough, the best format's largest size is taken (its largest
//!    fast enough size, if a rate was asked for and it has one) and [`Choice::upscaled`] is
//!    set; a big enough size that is too slow is taken over upscaling, with
//!    [`Choice::too_slow`] set.
//! 5. Sizes a driver lists more than once count once; their fastest rate is the fastest
//!    listed for any of the copies.

use std::fmt;

use bit_runtime::PixelFormat;

/// A V4L2 four-character pixel format code, as the bytes of `v4l2_fourcc` in order, e.g.
/// `*b"YUYV"`.
pub type FourCc = [u8; 4];

/// The V4L2 codes a runtime pixel format arrives under, preferred first: `MJPG` from UVC
/// cameras and `JPEG` from the Raspberry Pi's legacy bcm2835-v4l2 driver are the same
/// per-frame JFIF images. The match is exhaustive: a new [`PixelFormat`] does not compile
/// until it is placed here and in [`preference`], so every format the runtime reads is
/// negotiable.
pub const fn v4l2_codes(format: PixelFormat) -> &'static [FourCc] {
    const YUYV: &[FourCc] = &[*b"YUYV"];
    const UYVY: &[FourCc] = &[*b"UYVY"];
    const NV12: &[FourCc] = &[*b"NV12"];
    const RGB3: &[FourCc] = &[*b"RGB3"];
    const BGR3: &[FourCc] = &[*b"BGR3"];
    const GREY: &[FourCc] = &[*b"GREY"];
    const JPEG: &[FourCc] = &[*b"MJPG", *b"JPEG"];
    match format {
        PixelFormat::Yuyv => YUYV,
        PixelFormat::Uyvy => UYVY,
        PixelFormat::Nv12 => NV12,
        PixelFormat::Rgb24 => RGB3,
        PixelFormat::Bgr24 => BGR3,
        PixelFormat::Grey => GREY,
        PixelFormat::Mjpeg => JPEG,
    }
}

/// Where a format ranks in negotiation, lower first: raw colour formats (no decoding), then
/// JPEG streams, and `GREY` last: it loses colour, so [`negotiate`] uses it only when no
/// colour format is usable.
pub const fn preference(format: PixelFormat) -> u8 {
    match format {
        PixelFormat::Yuyv => 0,
        PixelFormat::Nv12 => 1,
        PixelFormat::Uyvy => 2,
        PixelFormat::Rgb24 => 3,
        PixelFormat::Bgr24 => 4,
        PixelFormat::Mjpeg => 5,
        PixelFormat::Grey => 6,
    }
}

/// The V4L2 codes the runtime can read, best first, derived from [`PixelFormat::ALL`] by
/// [`preference`] and [`v4l2_codes`]. Everything else (raw Bayer such as `RG10`/`RGGB`/
/// `BA81`, `H264`, planar `YU12`, `NV21`, `NV16`, `422P`, 32-bit `BGR4`/`XR24`, `YVYU`,
/// `VYUY`, ...) is not readable.
pub fn supported() -> &'static [FourCc] {
    static CODES: std::sync::OnceLock<Vec<FourCc>> = std::sync::OnceLock::new();
    CODES.get_or_init(|| {
        let mut formats = PixelFormat::ALL.to_vec();
        formats.sort_by_key(|&f| preference(f));
        formats.into_iter().flat_map(|f| v4l2_codes(f).iter().copied()).collect()
    })
}

/// The runtime format a V4L2 code delivers, if it reads it.
pub fn pixel_format(code: FourCc) -> Option<PixelFormat> {
    PixelFormat::ALL.into_iter().find(|&f| v4l2_codes(f).contains(&code))
}

/// Relative tolerance on frame rates: a size whose fastest rate is within 1% below the
/// requested rate counts as fast enough (29.97 fps satisfies a request for 30).
pub const FPS_TOLERANCE: f32 = 0.01;

const GREY: FourCc = *b"GREY";

/// Where a format's [`supported`] rank puts it: lower is better, `None` when unreadable.
fn rank_of(fourcc: FourCc) -> Option<usize> {
    supported().iter().position(|&code| code == fourcc)
}

/// Formats a fourcc for messages: its four characters, with non-printable bytes escaped
/// (`YUYV`, `Y10 `, `\x00\x00\x00\x00`).
pub fn fourcc_str(code: FourCc) -> String {
    code.escape_ascii().to_string()
}

/// Parses a fourcc written as text (a config value such as `MJPG`): one to four ASCII
/// characters, padded with spaces on the right as V4L2 does (`Y10` is `Y10 `). Case matters
/// (`pRAA` is not `PRAA`). `None` for empty, longer or non-ASCII text.
pub fn parse_fourcc(text: &str) -> Option<FourCc> {
    let bytes = text.as_bytes();
    if bytes.is_empty() || bytes.len() > 4 || !text.is_ascii() {
        return None;
    }
    let mut code = *b"    ";
    code[..bytes.len()].copy_from_slice(bytes);
    Some(code)
}

/// Frame sizes a format offers, as `VIDIOC_ENUM_FRAMESIZES` reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SizeRange {
    /// One fixed size.
    Discrete {
        /// Width in pixels.
        width: u32,
        /// Height in pixels.
        height: u32,
    },
    /// Every size `min + k * step` (per dimension) up to the maximum. V4L2's "continuous"
    /// ranges are stepwise ranges with steps of 1. A step of 0 is read as 1, a maximum below
    /// the minimum as the minimum.
    Stepwise {
        /// Smallest width.
        min_width: u32,
        /// Largest width.
        max_width: u32,
        /// Width increment.
        step_width: u32,
        /// Smallest height.
        min_height: u32,
        /// Largest height.
        max_height: u32,
        /// Height increment.
        step_height: u32,
    },
}

/// One dimension of a stepwise range, normalized: `step >= 1`, `top` is the largest value on
/// the grid that does not exceed the maximum.
#[derive(Debug, Clone, Copy)]
struct Axis {
    min: u32,
    step: u32,
    top: u32,
}

impl Axis {
    fn new(min: u32, max: u32, step: u32) -> Axis {
        let step = step.max(1);
        let max = max.max(min);
        let top = min + (max - min) / step * step;
        Axis { min, step, top }
    }

    /// Smallest grid value `>= target`, clamped to `top`.
    fn at_least(self, target: u32) -> u32 {
        if target <= self.min {
            return self.min;
        }
        let steps = (target - self.min).div_ceil(self.step);
        let value = u64::from(self.min) + u64::from(steps) * u64::from(self.step);
        u32::try_from(value).map_or(self.top, |value| value.min(self.top))
    }

    fn contains(self, value: u32) -> bool {
        value >= self.min && value <= self.top && (value - self.min).is_multiple_of(self.step)
    }
}

/// A [`SizeRange`] ready for arithmetic.
enum Shape {
    Fixed(u32, u32),
    Grid(Axis, Axis),
}

impl SizeRange {
    fn shape(&self) -> Shape {
        match *self {
            SizeRange::Discrete { width, height } => Shape::Fixed(width, height),
            SizeRange::Stepwise { min_width, max_width, step_width, min_height, max_height, step_height } => {
                Shape::Grid(
                    Axis::new(min_width, max_width, step_width),
                    Axis::new(min_height, max_height, step_height),
                )
            }
        }
    }

    /// Whether `width` x `height` is one of the sizes offered: equal to a discrete size, or
    /// inside a stepwise range and on its step grid.
    pub fn contains(&self, width: u32, height: u32) -> bool {
        match self.shape() {
            Shape::Fixed(w, h) => (w, h) == (width, height),
            Shape::Grid(x, y) => x.contains(width) && y.contains(height),
        }
    }

    /// The largest size offered (for a stepwise range, the largest size on its grid).
    pub fn largest(&self) -> (u32, u32) {
        match self.shape() {
            Shape::Fixed(width, height) => (width, height),
            Shape::Grid(x, y) => (x.top, y.top),
        }
    }

    /// The size [`negotiate`] considers from this range for a frame of at least
    /// `min_width` x `min_height`.
    ///
    /// A discrete size is itself. For a stepwise range it is the smallest size on the grid
    /// that is at least the minimum in both dimensions; when the range cannot reach that in
    /// either dimension, it is the range's largest size (which is then too small).
    pub fn candidate(&self, min_width: u32, min_height: u32) -> (u32, u32) {
        match self.shape() {
            Shape::Fixed(width, height) => (width, height),
            Shape::Grid(x, y) => {
                let (width, height) = (x.at_least(min_width), y.at_least(min_height));
                if width >= min_width && height >= min_height { (width, height) } else { (x.top, y.top) }
            }
        }
    }
}

impl fmt::Display for SizeRange {
    /// `640x480` for a discrete size, `32x32-2592x1944 step 2/2` for a range.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            SizeRange::Discrete { width, height } => write!(f, "{width}x{height}"),
            SizeRange::Stepwise { min_width, max_width, step_width, min_height, max_height, step_height } => {
                write!(f, "{min_width}x{min_height}-{max_width}x{max_height} step {step_width}/{step_height}")
            }
        }
    }
}

/// One entry of a format's frame size enumeration.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SizeOffer {
    /// The size or range of sizes.
    pub range: SizeRange,
    /// The fastest frame rate enumerated for it (`VIDIOC_ENUM_FRAMEINTERVALS`: the shortest
    /// interval, as frames per second), `None` when the driver reports none.
    pub max_fps: Option<f32>,
}

/// One pixel format the camera enumerates (`VIDIOC_ENUM_FMT`) with its frame sizes.
#[derive(Debug, Clone, PartialEq)]
pub struct FormatOffer {
    /// The format's fourcc.
    pub fourcc: FourCc,
    /// The driver's description (`YUYV 4:2:2`, `Motion-JPEG`), used in messages.
    pub description: String,
    /// The frame sizes, in enumeration order.
    pub sizes: Vec<SizeOffer>,
}

/// What the classifier needs from the camera.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Request {
    /// Smallest useful frame width (usually the model's input width); smaller frames are
    /// upscaled.
    pub min_width: u32,
    /// Smallest useful frame height.
    pub min_height: u32,
    /// Use this format only (from the configuration); `None` picks the best by rank.
    pub fourcc: Option<FourCc>,
    /// Use this exact size only (from the configuration); `None` picks one from the minimum.
    pub size: Option<(u32, u32)>,
    /// Frame rate wanted; `None` (or a value that is not a positive number) for any rate.
    pub fps: Option<f32>,
}

/// The negotiated capture format.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Choice {
    /// Pixel format to set.
    pub fourcc: FourCc,
    /// Frame width to set.
    pub width: u32,
    /// Frame height to set.
    pub height: u32,
    /// Fastest rate enumerated for this size (for duplicates, the fastest of the copies);
    /// `None` when unknown.
    pub max_fps: Option<f32>,
    /// The frame is smaller than the request's minimum in some dimension (no offered size
    /// was big enough, or the forced size is smaller), so frames get upscaled.
    pub upscaled: bool,
    /// A rate was requested and [`Choice::max_fps`] falls short of it (nothing big enough,
    /// or the forced size, reaches it).
    pub too_slow: bool,
}

impl Choice {
    /// Checks the pixel format the driver actually applied (`VIDIOC_S_FMT` may replace the
    /// requested one). Some nodes list formats they cannot deliver with the sensor behind
    /// them: a Raspberry Pi unicam node lists YUYV and RGB but streams only what a raw CSI
    /// sensor sends (Bayer), so the driver swaps the format at set-format time.
    pub fn check_applied(&self, applied: FourCc) -> Result<(), NegotiateError> {
        if applied == self.fourcc {
            Ok(())
        } else {
            Err(NegotiateError::FormatNotApplied { chosen: self.fourcc, applied })
        }
    }
}

/// Why no capture format could be picked. Messages name what the camera offers.
#[derive(Debug, Clone, PartialEq)]
pub enum NegotiateError {
    /// The device enumerated no formats at all.
    NoFormats,
    /// None of the offered formats is in [`supported`].
    NoReadableFormat {
        /// Every offered format with its description, in enumeration order.
        offered: Vec<(FourCc, String)>,
    },
    /// The requested format is not one the runtime can read.
    UnreadableFormat {
        /// The format asked for.
        requested: FourCc,
        /// The formats the camera offers.
        offered: Vec<FourCc>,
    },
    /// The requested format is readable but the camera does not offer it.
    FormatNotOffered {
        /// The format asked for.
        requested: FourCc,
        /// The formats the camera offers.
        offered: Vec<FourCc>,
    },
    /// No format considered offers the requested size.
    SizeNotOffered {
        /// Requested width.
        width: u32,
        /// Requested height.
        height: u32,
        /// Each format considered (the requested one, or every readable one) with its
        /// sizes, duplicates removed.
        offered: Vec<(FourCc, Vec<SizeRange>)>,
    },
    /// The formats considered enumerate no frame sizes.
    NoSizes {
        /// The formats considered.
        formats: Vec<FourCc>,
    },
    /// The driver applied another pixel format than the one chosen (see
    /// [`Choice::check_applied`]).
    FormatNotApplied {
        /// The format [`negotiate`] chose and the caller set.
        chosen: FourCc,
        /// The format the driver reported back.
        applied: FourCc,
    },
}

/// Hint for cameras that only deliver formats the runtime cannot read.
const UNREADABLE_HINT: &str = "raw Bayer CSI sensors need libcamera's V4L2 compatibility layer on a \
    Raspberry Pi (run under libcamerify, which preloads v4l2-compat.so) or nvarguscamerasrc \
    (Argus) on a Jetson; H264-only nodes are not readable either (a USB camera's other \
    /dev/video node usually offers MJPG or YUYV)";

fn quoted_list(codes: &[FourCc]) -> String {
    codes.iter().map(|&code| format!("'{}'", fourcc_str(code))).collect::<Vec<_>>().join(", ")
}

impl fmt::Display for NegotiateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NegotiateError::NoFormats => write!(
                f,
                "the device enumerates no capture formats (is it a metadata or output node \
                 rather than the camera's capture node?)"
            ),
            NegotiateError::NoReadableFormat { offered } => {
                let offered = offered
                    .iter()
                    .map(|(code, description)| match description.is_empty() {
                        true => format!("'{}'", fourcc_str(*code)),
                        false => format!("'{}' ({description})", fourcc_str(*code)),
                    })
                    .collect::<Vec<_>>()
                    .join(", ");
                write!(
                    f,
                    "the camera offers no pixel format the classifier can read: it offers {offered}; \
                     readable formats are {}; {UNREADABLE_HINT}",
                    quoted_list(supported())
                )
            }
            NegotiateError::UnreadableFormat { requested, offered } => write!(
                f,
                "format '{}' was requested but the classifier cannot read it (readable formats are \
                 {}); the camera offers {}",
                fourcc_str(*requested),
                quoted_list(supported()),
                quoted_list(offered)
            ),
            NegotiateError::FormatNotOffered { requested, offered } => write!(
                f,
                "format '{}' was requested but the camera does not offer it; it offers {}",
                fourcc_str(*requested),
                quoted_list(offered)
            ),
            NegotiateError::SizeNotOffered { width, height, offered } => {
                let offered = offered
                    .iter()
                    .map(|(code, sizes)| {
                        let sizes = sizes.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ");
                        format!("'{}': {sizes}", fourcc_str(*code))
                    })
                    .collect::<Vec<_>>()
                    .join("; ");
                write!(f, "size {width}x{height} was requested but is not offered; offered sizes: {offered}")
            }
            NegotiateError::NoSizes { formats } => {
                write!(f, "the camera enumerates no frame sizes for {}", quoted_list(formats))
            }
            NegotiateError::FormatNotApplied { chosen, applied } => {
                write!(
                    f,
                    "the driver replaced pixel format '{}' with '{}' when setting the format",
                    fourcc_str(*chosen),
                    fourcc_str(*applied)
                )?;
                if rank_of(*applied).is_none() {
                    write!(f, ", which the classifier cannot read; {UNREADABLE_HINT}")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for NegotiateError {}

/// One size of one format that [`negotiate`] weighs.
#[derive(Debug, Clone, Copy)]
struct Candidate {
    fourcc: FourCc,
    rank: usize,
    /// Enumeration order, for ties.
    order: usize,
    width: u32,
    height: u32,
    max_fps: Option<f32>,
}

impl Candidate {
    fn area(&self) -> u64 {
        u64::from(self.width) * u64::from(self.height)
    }
}

fn fast_enough(max_fps: Option<f32>, wanted: Option<f32>) -> bool {
    match (max_fps, wanted) {
        (Some(have), Some(want)) => have >= want * (1.0 - FPS_TOLERANCE),
        _ => true,
    }
}

fn faster(a: Option<f32>, b: Option<f32>) -> Option<f32> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

/// Picks the capture format and frame size; see the [module documentation](self) for the
/// rules.
pub fn negotiate(offers: &[FormatOffer], request: &Request) -> Result<Choice, NegotiateError> {
    if offers.is_empty() {
        return Err(NegotiateError::NoFormats);
    }
    let mut offered: Vec<FourCc> = Vec::new();
    for offer in offers {
        if !offered.contains(&offer.fourcc) {
            offered.push(offer.fourcc);
        }
    }

    let formats: Vec<(&FormatOffer, usize)> = match request.fourcc {
        Some(requested) => {
            let Some(rank) = rank_of(requested) else {
                return Err(NegotiateError::UnreadableFormat { requested, offered });
            };
            if !offered.contains(&requested) {
                return Err(NegotiateError::FormatNotOffered { requested, offered });
            }
            offers.iter().filter(|offer| offer.fourcc == requested).map(|offer| (offer, rank)).collect()
        }
        None => {
            let readable: Vec<(&FormatOffer, usize)> =
                offers.iter().filter_map(|offer| Some((offer, rank_of(offer.fourcc)?))).collect();
            if readable.is_empty() {
                let mut listed: Vec<(FourCc, String)> = Vec::new();
                for offer in offers {
                    if !listed.iter().any(|(code, _)| *code == offer.fourcc) {
                        listed.push((offer.fourcc, offer.description.clone()));
                    }
                }
                return Err(NegotiateError::NoReadableFormat { offered: listed });
            }
            readable
        }
    };

    let wanted_fps = request.fps.filter(|fps| *fps > 0.0 && fps.is_finite());
    let mut candidates: Vec<Candidate> = Vec::new();
    for &(format, rank) in &formats {
        for size in &format.sizes {
            let (width, height) = match request.size {
                Some((width, height)) if size.range.contains(width, height) => (width, height),
                Some(_) => continue,
                None => size.range.candidate(request.min_width, request.min_height),
            };
            let duplicate = candidates
                .iter_mut()
                .find(|c| c.fourcc == format.fourcc && c.width == width && c.height == height);
            match duplicate {
                Some(existing) => existing.max_fps = faster(existing.max_fps, size.max_fps),
                None => candidates.push(Candidate {
                    fourcc: format.fourcc,
                    rank,
                    order: candidates.len(),
                    width,
                    height,
                    max_fps: size.max_fps,
                }),
            }
        }
    }

    let big_enough = |c: &Candidate| c.width >= request.min_width && c.height >= request.min_height;
    let best = candidates.iter().min_by_key(|c| {
        let big = big_enough(c);
        let area = i128::from(c.area());
        (
            c.fourcc == GREY,
            !big,
            !fast_enough(c.max_fps, wanted_fps),
            c.rank,
            if big { area } else { -area },
            c.order,
        )
    });

    let Some(best) = best else {
        let mut considered: Vec<FourCc> = Vec::new();
        for &(format, _) in &formats {
            if !considered.contains(&format.fourcc) {
                considered.push(format.fourcc);
            }
        }
        let Some((width, height)) = request.size else {
            return Err(NegotiateError::NoSizes { formats: considered });
        };
        let offered = considered
            .into_iter()
            .map(|code| {
                let mut sizes: Vec<SizeRange> = Vec::new();
                for &(format, _) in formats.iter().filter(|(format, _)| format.fourcc == code) {
                    for size in &format.sizes {
                        if !sizes.contains(&size.range) {
                            sizes.push(size.range);
                        }
                    }
                }
                (code, sizes)
            })
            .collect();
        return Err(NegotiateError::SizeNotOffered { width, height, offered });
    };

    Ok(Choice {
        fourcc: best.fourcc,
        width: best.width,
        height: best.height,
        max_fps: best.max_fps,
        upscaled: !big_enough(best),
        too_slow: !fast_enough(best.max_fps, wanted_fps),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn discrete(width: u32, height: u32, max_fps: Option<f32>) -> SizeOffer {
        SizeOffer { range: SizeRange::Discrete { width, height }, max_fps }
    }

    fn stepwise(min: (u32, u32), max: (u32, u32), step: (u32, u32)) -> SizeOffer {
        SizeOffer {
            range: SizeRange::Stepwise {
                min_width: min.0,
                max_width: max.0,
                step_width: step.0,
                min_height: min.1,
                max_height: max.1,
                step_height: step.1,
            },
            max_fps: None,
        }
    }

    fn format(code: &[u8; 4], sizes: Vec<SizeOffer>) -> FormatOffer {
        FormatOffer { fourcc: *code, description: format!("{} test", fourcc_str(*code)), sizes }
    }

    fn min(width: u32, height: u32) -> Request {
        Request { min_width: width, min_height: height, ..Request::default() }
    }

    fn pick(offers: &[FormatOffer], request: &Request) -> (FourCc, u32, u32) {
        let choice = negotiate(offers, request).unwrap();
        (choice.fourcc, choice.width, choice.height)
    }

    #[test]
    fn every_runtime_format_is_negotiable_and_codes_map_back() {
        for f in PixelFormat::ALL {
            let codes = v4l2_codes(f);
            assert!(!codes.is_empty());
            for &code in codes {
                assert!(supported().contains(&code), "{f}");
                assert_eq!(pixel_format(code), Some(f));
            }
        }
        assert_eq!(supported().len(), PixelFormat::ALL.len() + 1, "MJPEG has two codes");
        assert_eq!(supported().first(), Some(b"YUYV"));
        assert_eq!(supported().last(), Some(b"GREY"));
        assert_eq!(pixel_format(*b"RG10"), None);
    }

    #[test]
    fn supported_formats_in_rank_order() {
        let names: Vec<String> = supported().iter().map(|&code| fourcc_str(code)).collect();
        assert_eq!(names, ["YUYV", "NV12", "UYVY", "RGB3", "BGR3", "MJPG", "JPEG", "GREY"]);
        for unreadable in [b"RG10", b"RGGB", b"BA81", b"H264", b"YU12", b"NV21", b"BGR4", b"YVYU"] {
            assert_eq!(rank_of(*unreadable), None, "{}", fourcc_str(*unreadable));
        }
    }

    #[test]
    fn fourcc_text_round_trip() {
        assert_eq!(fourcc_str(*b"YUYV"), "YUYV");
        assert_eq!(fourcc_str(*b"Y10 "), "Y10 ");
        assert_eq!(fourcc_str([0, b'A', 0xff, b'\n']), "\\x00A\\xff\\n");
        assert_eq!(parse_fourcc("MJPG"), Some(*b"MJPG"));
        assert_eq!(parse_fourcc("Y10"), Some(*b"Y10 "));
        assert_eq!(parse_fourcc("pRAA"), Some(*b"pRAA"));
        assert_eq!(parse_fourcc(""), None);
        assert_eq!(parse_fourcc("MJPEG"), None);
        assert_eq!(parse_fourcc("ÄB"), None);
    }

    #[test]
    fn size_range_display() {
        assert_eq!(discrete(640, 480, None).range.to_string(), "640x480");
        assert_eq!(stepwise((32, 32), (2592, 1944), (2, 2)).range.to_string(), "32x32-2592x1944 step 2/2");
    }

    #[test]
    fn raw_wins_over_mjpeg_when_big_enough() {
        let offers = [
            format(b"MJPG", vec![discrete(640, 480, Some(30.0)), discrete(320, 240, Some(30.0))]),
            format(b"YUYV", vec![discrete(640, 480, Some(30.0)), discrete(320, 240, Some(30.0))]),
        ];
        assert_eq!(pick(&offers, &min(224, 224)), (*b"YUYV", 320, 240));
    }

    #[test]
    fn big_enough_mjpeg_beats_raw_whose_sizes_are_too_small() {
        let offers = [
            format(b"YUYV", vec![discrete(640, 480, None), discrete(800, 600, None)]),
            format(b"MJPG", vec![discrete(1280, 720, None), discrete(1920, 1080, None)]),
        ];
        let choice = negotiate(&offers, &min(1000, 700)).unwrap();
        assert_eq!((choice.fourcc, choice.width, choice.height), (*b"MJPG", 1280, 720));
        assert!(!choice.upscaled);
    }

    #[test]
    fn format_rank_decides_between_big_enough_formats() {
        let offers = [
            format(b"GREY", vec![discrete(320, 240, None)]),
            format(b"JPEG", vec![discrete(320, 240, None)]),
            format(b"MJPG", vec![discrete(320, 240, None)]),
            format(b"BGR3", vec![discrete(320, 240, None)]),
            format(b"RGB3", vec![discrete(320, 240, None)]),
            format(b"UYVY", vec![discrete(320, 240, None)]),
            format(b"NV12", vec![discrete(320, 240, None)]),
            format(b"YUYV", vec![discrete(320, 240, None)]),
        ];
        // Drop the winner each time: the next one in supported() wins.
        for (rank, &expected) in supported().iter().enumerate() {
            let remaining: Vec<FormatOffer> =
                offers.iter().filter(|f| rank_of(f.fourcc).unwrap() >= rank).cloned().collect();
            assert_eq!(pick(&remaining, &min(224, 224)).0, expected);
        }
    }

    #[test]
    fn smallest_big_enough_area_wins_and_ties_go_to_the_first_enumerated() {
        let offers = [format(
            b"YUYV",
            vec![
                discrete(1280, 720, None),
                discrete(640, 360, None),
                discrete(480, 480, None),
                discrete(320, 240, None),
            ],
        )];
        // 640x360 and 480x480 both have 230400 pixels; 640x360 is listed first.
        assert_eq!(pick(&offers, &min(300, 300)), (*b"YUYV", 640, 360));
        let swapped = [format(b"YUYV", vec![discrete(480, 480, None), discrete(640, 360, None)])];
        assert_eq!(pick(&swapped, &min(300, 300)), (*b"YUYV", 480, 480));
    }

    #[test]
    fn fps_filter_prefers_a_fast_enough_format() {
        let offers = [
            format(b"YUYV", vec![discrete(640, 480, Some(30.0)), discrete(1280, 720, Some(10.0))]),
            format(b"MJPG", vec![discrete(640, 480, Some(30.0)), discrete(1280, 720, Some(30.0))]),
        ];
        let no_fps = min(1280, 720);
        assert_eq!(pick(&offers, &no_fps), (*b"YUYV", 1280, 720));
        let fps30 = Request { fps: Some(30.0), ..no_fps };
        let choice = negotiate(&offers, &fps30).unwrap();
        assert_eq!((choice.fourcc, choice.width, choice.height), (*b"MJPG", 1280, 720));
        assert_eq!(choice.max_fps, Some(30.0));
        assert!(!choice.too_slow);
        // 10 fps is enough for a 10 fps request.
        assert_eq!(pick(&offers, &Request { fps: Some(10.0), ..no_fps }), (*b"YUYV", 1280, 720));
    }

    #[test]
    fn fps_tolerance_and_unknown_rates() {
        let offers = [
            format(b"YUYV", vec![discrete(640, 480, Some(29.97))]),
            format(b"MJPG", vec![discrete(640, 480, Some(60.0))]),
        ];
        assert_eq!(pick(&offers, &Request { fps: Some(30.0), ..min(640, 480) }).0, *b"YUYV");
        assert_eq!(pick(&offers, &Request { fps: Some(31.0), ..min(640, 480) }).0, *b"MJPG");
        // A size with no enumerated rate counts as fast enough.
        let unknown = [
            format(b"YUYV", vec![discrete(640, 480, None)]),
            format(b"MJPG", vec![discrete(640, 480, Some(60.0))]),
        ];
        let choice = negotiate(&unknown, &Request { fps: Some(60.0), ..min(640, 480) }).unwrap();
        assert_eq!((choice.fourcc, choice.max_fps, choice.too_slow), (*b"YUYV", None, false));
    }

    #[test]
    fn invalid_fps_means_no_rate_constraint() {
        let offers = [
            format(b"YUYV", vec![discrete(640, 480, Some(5.0))]),
            format(b"MJPG", vec![discrete(640, 480, Some(30.0))]),
        ];
        for fps in [0.0, -30.0, f32::NAN, f32::INFINITY] {
            let choice = negotiate(&offers, &Request { fps: Some(fps), ..min(640, 480) }).unwrap();
            assert_eq!(choice.fourcc, *b"YUYV", "fps {fps}");
            assert!(!choice.too_slow);
        }
    }

    #[test]
    fn big_but_slow_beats_small_but_fast() {
        let offers = [format(b"YUYV", vec![discrete(640, 480, Some(30.0)), discrete(1920, 1080, Some(5.0))])];
        let choice = negotiate(&offers, &Request { fps: Some(30.0), ..min(1280, 720) }).unwrap();
        assert_eq!((choice.width, choice.height), (1920, 1080));
        assert!(choice.too_slow);
        assert!(!choice.upscaled);
    }

    #[test]
    fn stepwise_rounds_up_to_the_grid_when_step_does_not_divide_min() {
        // Grid 33, 41, ..., 225, ... and 17, 25, ..., 225, ...
        let offers = [format(b"YUYV", vec![stepwise((33, 17), (801, 601), (8, 8))])];
        assert_eq!(pick(&offers, &min(224, 224)), (*b"YUYV", 225, 225));
        assert_eq!(pick(&offers, &min(225, 225)), (*b"YUYV", 225, 225));
        assert_eq!(pick(&offers, &min(226, 100)), (*b"YUYV", 233, 105));
        // Below the range's minimum: the minimum.
        assert_eq!(pick(&offers, &min(8, 8)), (*b"YUYV", 33, 17));
        assert_eq!(pick(&offers, &min(0, 0)), (*b"YUYV", 33, 17));
    }

    #[test]
    fn stepwise_step_one_is_exact() {
        let offers = [format(b"NV12", vec![stepwise((16, 16), (16376, 16376), (1, 1))])];
        assert_eq!(pick(&offers, &min(223, 225)), (*b"NV12", 223, 225));
    }

    #[test]
    fn stepwise_clamps_to_the_largest_size_on_the_grid() {
        // 32 + 96 * 8 = 800 is the last width on the grid below 803; 16 + 73 * 8 = 600.
        let offers = [format(b"NV12", vec![stepwise((32, 16), (803, 600), (8, 8))])];
        let choice = negotiate(&offers, &min(1024, 768)).unwrap();
        assert_eq!((choice.width, choice.height, choice.upscaled), (800, 600, true));
        assert_eq!(pick(&offers, &min(798, 599)), (*b"NV12", 800, 600));
        // Only one dimension too big: the range's largest size, not 800x104.
        let choice = negotiate(&offers, &min(1000, 100)).unwrap();
        assert_eq!((choice.width, choice.height, choice.upscaled), (800, 600, true));
        assert_eq!(offers[0].sizes[0].range.largest(), (800, 600));
    }

    #[test]
    fn degenerate_stepwise_ranges() {
        // Step 0 is read as 1; a maximum below the minimum as the minimum.
        let zero_step = stepwise((100, 100), (200, 200), (0, 0)).range;
        assert_eq!(zero_step.candidate(150, 151), (150, 151));
        assert!(zero_step.contains(199, 101));
        let inverted = stepwise((300, 200), (100, 100), (4, 4)).range;
        assert_eq!(inverted.candidate(10, 10), (300, 200));
        assert_eq!(inverted.candidate(400, 10), (300, 200));
        assert_eq!(inverted.largest(), (300, 200));
        assert!(inverted.contains(300, 200));
        assert!(!inverted.contains(304, 200));
        // Near u32::MAX the arithmetic does not overflow.
        let huge = stepwise((1, 1), (u32::MAX, u32::MAX), (u32::MAX / 2, 1)).range;
        assert_eq!(huge.candidate(u32::MAX, 5), (u32::MAX, 5));
        assert_eq!(huge.candidate(u32::MAX - 1, 5), (u32::MAX, 5));
    }

    #[test]
    fn nothing_big_enough_takes_the_largest_size_of_the_best_format() {
        let offers = [
            format(b"MJPG", vec![discrete(1920, 1080, Some(30.0))]),
            format(b"YUYV", vec![discrete(320, 240, Some(30.0)), discrete(1280, 720, Some(10.0))]),
        ];
        let choice = negotiate(&offers, &min(4000, 3000)).unwrap();
        assert_eq!((choice.fourcc, choice.width, choice.height), (*b"YUYV", 1280, 720));
        assert!(choice.upscaled);
        assert_eq!(choice.max_fps, Some(10.0));
        // With a rate asked for, the best format's largest size that is fast enough.
        let choice = negotiate(&offers, &Request { fps: Some(30.0), ..min(4000, 3000) }).unwrap();
        assert_eq!((choice.fourcc, choice.width, choice.height), (*b"YUYV", 320, 240));
        assert!(choice.upscaled && !choice.too_slow);
    }

    #[test]
    fn duplicate_sizes_do_not_matter() {
        let unique = [
            format(b"YUYV", vec![discrete(640, 480, Some(30.0)), discrete(800, 600, Some(15.0))]),
            format(b"MJPG", vec![discrete(800, 600, Some(30.0))]),
        ];
        let repeated = [
            format(
                b"YUYV",
                vec![
                    discrete(640, 480, Some(30.0)),
                    discrete(800, 600, Some(15.0)),
                    discrete(640, 480, Some(30.0)),
                    discrete(800, 600, Some(15.0)),
                ],
            ),
            format(b"MJPG", vec![discrete(800, 600, Some(30.0)), discrete(800, 600, Some(30.0))]),
        ];
        for request in [
            min(224, 224),
            min(800, 600),
            Request { fps: Some(30.0), ..min(800, 600) },
            min(2000, 2000),
            Request { size: Some((800, 600)), ..min(0, 0) },
        ] {
            assert_eq!(negotiate(&unique, &request), negotiate(&repeated, &request), "{request:?}");
        }
        // A copy listing a faster rate counts: the fastest rate of the copies.
        let mixed = [format(b"YUYV", vec![discrete(640, 480, Some(15.0)), discrete(640, 480, Some(30.0))])];
        let choice = negotiate(&mixed, &Request { fps: Some(30.0), ..min(640, 480) }).unwrap();
        assert_eq!((choice.max_fps, choice.too_slow), (Some(30.0), false));
        // The error lists each size once.
        let err = negotiate(&repeated, &Request { size: Some((1, 1)), ..min(0, 0) }).unwrap_err();
        assert_eq!(err.to_string().matches("640x480").count(), 1, "{err}");
    }

    #[test]
    fn forced_fourcc_is_used_even_when_ranked_lower() {
        let offers = [
            format(b"YUYV", vec![discrete(640, 480, None)]),
            format(b"MJPG", vec![discrete(640, 480, None), discrete(1280, 720, None)]),
        ];
        let request = Request { fourcc: Some(*b"MJPG"), ..min(224, 224) };
        assert_eq!(pick(&offers, &request), (*b"MJPG", 640, 480));
    }

    #[test]
    fn forced_fourcc_not_offered_or_unreadable() {
        let offers = [
            format(b"YUYV", vec![discrete(640, 480, None)]),
            format(b"H264", vec![discrete(640, 480, None)]),
        ];
        let err = negotiate(&offers, &Request { fourcc: Some(*b"NV12"), ..min(0, 0) }).unwrap_err();
        assert_eq!(
            err,
            NegotiateError::FormatNotOffered { requested: *b"NV12", offered: vec![*b"YUYV", *b"H264"] }
        );
        let text = err.to_string();
        assert!(text.starts_with("format 'NV12' was requested but the camera does not offer it"), "{text}");
        assert!(text.contains("'YUYV', 'H264'"), "{text}");

        let err = negotiate(&offers, &Request { fourcc: Some(*b"H264"), ..min(0, 0) }).unwrap_err();
        assert!(matches!(err, NegotiateError::UnreadableFormat { requested, .. } if requested == *b"H264"));
        let text = err.to_string();
        assert!(text.contains("'H264'") && text.contains("cannot read") && text.contains("'YUYV'"), "{text}");
    }

    #[test]
    fn forced_size_discrete_and_stepwise() {
        let offers = [
            format(b"YUYV", vec![discrete(640, 480, Some(30.0)), discrete(320, 240, Some(30.0))]),
            format(b"NV12", vec![stepwise((32, 32), (2592, 1944), (2, 2))]),
        ];
        let size = |w, h| Request { size: Some((w, h)), ..min(224, 224) };
        assert_eq!(pick(&offers, &size(640, 480)), (*b"YUYV", 640, 480));
        assert_eq!(pick(&offers, &size(1920, 1080)), (*b"NV12", 1920, 1080));
        // 1921 is not on the 2-pixel grid, 2594 above the range.
        for (w, h) in [(1921, 1080), (2594, 1944), (30, 30)] {
            let err = negotiate(&offers, &size(w, h)).unwrap_err();
            let NegotiateError::SizeNotOffered { width, height, .. } = err else { panic!("{err:?}") };
            assert_eq!((width, height), (w, h));
            let text = err.to_string();
            assert!(text.contains(&format!("size {w}x{h} was requested")), "{text}");
            assert!(text.contains("'YUYV': 640x480, 320x240; 'NV12': 32x32-2592x1944 step 2/2"), "{text}");
        }
        // A forced size below the minimum is used and flagged.
        let choice = negotiate(&offers, &Request { size: Some((320, 240)), ..min(640, 640) }).unwrap();
        assert_eq!((choice.width, choice.height, choice.upscaled), (320, 240, true));
    }

    #[test]
    fn forced_size_error_lists_only_the_forced_format() {
        let offers = [
            format(b"YUYV", vec![discrete(640, 480, None)]),
            format(b"MJPG", vec![discrete(1280, 720, None)]),
        ];
        let request = Request { fourcc: Some(*b"MJPG"), size: Some((640, 480)), ..min(0, 0) };
        let err = negotiate(&offers, &request).unwrap_err();
        assert_eq!(
            err,
            NegotiateError::SizeNotOffered {
                width: 640,
                height: 480,
                offered: vec![(*b"MJPG", vec![SizeRange::Discrete { width: 1280, height: 720 }])]
            }
        );
    }

    #[test]
    fn grey_only_when_no_colour_format_is_usable() {
        let offers = [
            format(b"GREY", vec![discrete(1920, 1080, Some(60.0))]),
            format(b"MJPG", vec![discrete(320, 240, Some(5.0))]),
        ];
        let choice = negotiate(&offers, &Request { fps: Some(30.0), ..min(640, 480) }).unwrap();
        assert_eq!(choice.fourcc, *b"MJPG");
        assert!(choice.upscaled && choice.too_slow);
        let grey_only = [format(b"GREY", vec![discrete(1920, 1080, None)]), format(b"H264", vec![])];
        assert_eq!(pick(&grey_only, &min(640, 480)), (*b"GREY", 1920, 1080));
        // A colour format without sizes does not keep GREY out.
        let sizeless = [format(b"YUYV", vec![]), format(b"GREY", vec![discrete(640, 480, None)])];
        assert_eq!(pick(&sizeless, &min(640, 480)).0, *b"GREY");
    }

    #[test]
    fn no_readable_format_lists_offers_and_hints() {
        let offers = [
            FormatOffer {
                fourcc: *b"RG10",
                description: "10-bit Bayer RGRG/GBGB".into(),
                sizes: vec![discrete(3264, 2464, Some(21.0))],
            },
            format(b"H264", vec![discrete(1920, 1080, Some(30.0))]),
            format(b"RG10", vec![]),
        ];
        let err = negotiate(&offers, &min(224, 224)).unwrap_err();
        let NegotiateError::NoReadableFormat { offered } = &err else { panic!("{err:?}") };
        assert_eq!(offered.iter().map(|(code, _)| *code).collect::<Vec<_>>(), [*b"RG10", *b"H264"]);
        let text = err.to_string();
        assert!(text.starts_with("the camera offers no pixel format the classifier can read"), "{text}");
        for needle in
            ["'RG10' (10-bit Bayer RGRG/GBGB)", "'H264' (H264 test)", "'YUYV'", "libcamerify", "v4l2-compat"]
        {
            assert!(text.contains(needle), "{needle}: {text}");
        }
        assert!(text.contains("nvarguscamerasrc") && text.contains("H264-only"), "{text}");
    }

    #[test]
    fn empty_offers_and_formats_without_sizes() {
        let err = negotiate(&[], &min(224, 224)).unwrap_err();
        assert_eq!(err, NegotiateError::NoFormats);
        assert!(err.to_string().starts_with("the device enumerates no capture formats"));

        let offers = [format(b"YUYV", vec![]), format(b"MJPG", vec![]), format(b"H264", vec![])];
        let err = negotiate(&offers, &min(224, 224)).unwrap_err();
        assert_eq!(err, NegotiateError::NoSizes { formats: vec![*b"YUYV", *b"MJPG"] });
        assert_eq!(err.to_string(), "the camera enumerates no frame sizes for 'YUYV', 'MJPG'");
    }

    #[test]
    fn check_applied_flags_a_swapped_format() {
        let offers = [format(b"YUYV", vec![stepwise((16, 16), (16376, 16376), (1, 1))])];
        let choice = negotiate(&offers, &min(224, 224)).unwrap();
        assert_eq!(choice.check_applied(*b"YUYV"), Ok(()));
        let err = choice.check_applied(*b"pBAA").unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("the driver replaced pixel format 'YUYV' with 'pBAA'"), "{text}");
        assert!(text.contains("libcamerify"), "{text}");
        let text = choice.check_applied(*b"MJPG").unwrap_err().to_string();
        assert!(!text.contains("libcamerify"), "{text}");
    }

    #[test]
    fn error_messages_are_lowercase_and_error_is_sendable() {
        fn assert_error<E: std::error::Error + Send + Sync + 'static>(_: &E) {}
        let errors = [
            NegotiateError::NoFormats,
            NegotiateError::NoReadableFormat { offered: vec![(*b"RG10", String::new())] },
            NegotiateError::UnreadableFormat { requested: *b"H264", offered: vec![*b"H264"] },
            NegotiateError::FormatNotOffered { requested: *b"NV12", offered: vec![*b"YUYV"] },
            NegotiateError::SizeNotOffered { width: 1, height: 1, offered: vec![] },
            NegotiateError::NoSizes { formats: vec![*b"YUYV"] },
            NegotiateError::FormatNotApplied { chosen: *b"YUYV", applied: *b"RG10" },
        ];
        for err in &errors {
            assert_error(err);
            let text = err.to_string();
            assert!(text.starts_with(|c: char| c.is_ascii_lowercase()), "{text}");
            assert!(!text.ends_with('.'), "{text}");
        }
    }
}
