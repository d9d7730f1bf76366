//! Bad frames give typed errors, never panics, and leave the classifier working.

mod common;

use bit_runtime::contract::Preprocess;
use bit_runtime::{
    Classifier, ClassifierConfig, ClassifyError, Frame, FrameError, FramePreprocessor, JpegFault,
    PixelFormat, Roi, TopK,
};
use common::{frame_bytes, tiny_model};
use proptest::prelude::*;

/// What the error must be.
type Check = fn(&FrameError) -> bool;

fn classes(top: &TopK) -> Vec<(usize, u32)> {
    top.iter().map(|p| (p.class, p.score.to_bits())).collect()
}

#[test]
fn bad_frames_are_typed_errors_and_the_classifier_recovers() {
    let pre = Preprocess::bit_default(64);
    let dir = tempfile::tempdir().unwrap();
    let path = tiny_model(dir.path(), &pre);
    let config = ClassifierConfig { max_width: 1280, max_height: 720, ..Default::default() };
    let mut classifier = Classifier::new(&path, &config).unwrap();
    let good = frame_bytes(PixelFormat::Yuyv, 640, 480, None, 9);
    let good_frame = Frame::new(&good, PixelFormat::Yuyv, 640, 480);
    let baseline = classes(&classifier.classify(&good_frame).unwrap().top);
    let input_before = classifier.input().to_vec();

    let jpeg = frame_bytes(PixelFormat::Mjpeg, 320, 240, None, 2);
    // A marker in the middle of the entropy-coded data: structurally broken. (Scrambled
    // entropy-coded bytes alone often decode to a wrong picture: no decoder can tell.)
    let mut corrupt = jpeg.clone();
    let mid = corrupt.len() / 2;
    corrupt[mid..mid + 2].copy_from_slice(&[0xff, 0xd8]);
    let truncated = &jpeg[..jpeg.len() * 2 / 3];
    let big = frame_bytes(PixelFormat::Grey, 1920, 1080, None, 0);
    let mjpeg = PixelFormat::Mjpeg;
    let cases: Vec<(&str, Frame, Check)> = vec![
        ("short YUYV", Frame::new(&good[..good.len() - 1], PixelFormat::Yuyv, 640, 480), |e| {
            *e == FrameError::WrongLength {
                format: PixelFormat::Yuyv,
                width: 640,
                height: 480,
                expected: 614400,
                got: 614399,
            }
        }),
        ("YUYV declared as RGB", Frame::new(&good, PixelFormat::Rgb24, 640, 480), |e| {
            matches!(e, FrameError::WrongLength { expected: 921600, got: 614400, .. })
        }),
        ("zero width", Frame::new(&[], PixelFormat::Nv12, 0, 480), |e| {
            matches!(e, FrameError::ZeroSize { width: 0, .. })
        }),
        ("odd YUYV width", Frame::new(&good, PixelFormat::Yuyv, 639, 480), |e| {
            matches!(e, FrameError::OddSize { width: 639, .. })
        }),
        ("odd NV12 height", Frame::new(&good, PixelFormat::Nv12, 640, 479), |e| {
            matches!(e, FrameError::OddSize { height: 479, .. })
        }),
        ("larger than configured", Frame::new(&big, PixelFormat::Grey, 1920, 1080), |e| {
            matches!(e, FrameError::TooLarge { max_width: 1280, max_height: 720, .. })
        }),
        ("stride too short", Frame::new(&good, PixelFormat::Yuyv, 640, 480).with_stride(1000), |e| {
            matches!(e, FrameError::StrideTooShort { min: 1280, .. })
        }),
        ("not a JPEG", Frame::new(&good, mjpeg, 640, 480), |e| *e == FrameError::Jpeg(JpegFault::NotJpeg)),
        ("truncated JPEG", Frame::new(truncated, mjpeg, 320, 240), |e| {
            *e == FrameError::Jpeg(JpegFault::Truncated)
        }),
        ("corrupt JPEG", Frame::new(&corrupt, mjpeg, 320, 240), |e| {
            *e == FrameError::Jpeg(JpegFault::Corrupt)
        }),
        ("headers only", Frame::new(&jpeg[..200], mjpeg, 320, 240), |e| matches!(e, FrameError::Jpeg(_))),
        ("JPEG of another size", Frame::new(&jpeg, mjpeg, 640, 480), |e| {
            *e == FrameError::JpegSize { declared_width: 640, declared_height: 480, width: 320, height: 240 }
        }),
    ];
    for (name, frame, expected) in cases {
        match classifier.classify(&frame) {
            Err(ClassifyError::Frame(e)) => {
                assert!(expected(&e), "{name}: {e:?}");
                assert!(!e.to_string().is_empty());
            }
            other => panic!("{name}: {other:?}"),
        }
        assert_eq!(classifier.input(), input_before.as_slice(), "{name}: the tensor was touched");
        assert_eq!(classes(&classifier.classify(&good_frame).unwrap().top), baseline, "after {name}");
    }
    // A region of interest that a smaller frame does not contain.
    let config = ClassifierConfig { roi: Some(Roi { x: 400, y: 300, width: 200, height: 150 }), ..config };
    let mut with_roi = Classifier::new(&path, &config).unwrap();
    let small = frame_bytes(PixelFormat::Grey, 320, 240, None, 0);
    let err = with_roi.classify(&Frame::new(&small, PixelFormat::Grey, 320, 240)).unwrap_err();
    assert!(matches!(err, ClassifyError::Frame(FrameError::RoiOutside { width: 320, height: 240, .. })));
    with_roi.classify(&good_frame).unwrap();
}

fn any_format() -> impl Strategy<Value = PixelFormat> {
    prop::sample::select(PixelFormat::ALL.to_vec())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]

    /// Arbitrary bytes, sizes, strides and regions: `fill` returns, never panics; when it
    /// accepts a frame, every tensor value is finite.
    #[test]
    fn arbitrary_frames_never_panic(
        format in any_format(),
        width in 0u32..48,
        height in 0u32..48,
        stride in prop::option::of(0usize..200),
        data in prop::collection::vec(any::<u8>(), 0..3000),
        roi in prop::option::of((0u32..40, 0u32..40, 0u32..40, 0u32..40)),
        trim in 0usize..4,
        even in any::<bool>(),
    ) {
        // Chroma-subsampled formats need even sizes: make half the cases even.
        let (width, height) = if even { (width & !1, height & !1) } else { (width, height) };
        let roi = roi.map(|(x, y, width, height)| Roi { x, y, width, height });
        let mut p = FramePreprocessor::new(&Preprocess::bit_default(16), 16, roi, 40, 40);
        let mut out = vec![0f32; 3 * 16 * 16];
        // Half the cases get exactly the length the declared geometry needs, so that the
        // conversion itself runs on arbitrary bytes too.
        let mut data = data;
        if let (Some(row), false) = (format.row_bytes(width), trim == 0) {
            let rows = if format == PixelFormat::Nv12 { height as usize * 3 / 2 } else { height as usize };
            data.resize(stride.unwrap_or(row) * rows, 0x5a);
        }
        let mut frame = Frame::new(&data, format, width, height);
        if let Some(s) = stride {
            frame = frame.with_stride(s);
        }
        if p.fill(&frame, &mut out).is_ok() {
            prop_assert!(out.iter().all(|v| v.is_finite()));
        }
    }

    /// Valid JPEGs cut short or with bytes overwritten: an error or an image, never a panic.
    #[test]
    fn damaged_jpegs_never_panic(
        cut in 0usize..2000,
        hits in prop::collection::vec((any::<usize>(), any::<u8>()), 0..8),
        seed in 0usize..4,
    ) {
        let jpeg = frame_bytes(PixelFormat::Mjpeg, 48, 32, None, seed);
        let mut data = jpeg[..jpeg.len().saturating_sub(cut)].to_vec();
        for (at, byte) in hits {
            if !data.is_empty() {
                let i = at % data.len();
                data[i] = byte;
            }
        }
        let mut p = FramePreprocessor::new(&Preprocess::bit_default(16), 16, None, 64, 64);
        let mut out = vec![0f32; 3 * 16 * 16];
        let _ = p.fill(&Frame::new(&data, PixelFormat::Mjpeg, 48, 32), &mut out);
    }
}
