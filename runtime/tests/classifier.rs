//! The Classifier end to end with a tiny model written by the test: same results as the
//! image path, every format, region of interest, threads, configuration checks, statistics.

mod common;

use bit_runtime::contract::{Preprocess, ResizeMode};
use bit_runtime::{
    Classifier, ClassifierConfig, Error, Frame, FramePreprocessor, LatencyStats, Model, PixelFormat, Roi,
    Stage,
};
use common::{CLASSES, frame_bytes, tiny_model};

fn setup(pre: &Preprocess) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = tiny_model(dir.path(), pre);
    (dir, path)
}

#[test]
fn rgb_frame_classifies_like_an_image() {
    let pre = Preprocess::bit_default(64);
    let (_dir, path) = setup(&pre);
    let mut classifier =
        Classifier::new(&path, &ClassifierConfig { top_k: 5, ..Default::default() }).unwrap();
    let mut model = Model::load(&path, &Default::default()).unwrap();
    let (w, h) = (160u32, 120u32);
    let rgb = frame_bytes(PixelFormat::Rgb24, w as usize, h as usize, None, 3);
    let best = classifier.classify(&Frame::new(&rgb, PixelFormat::Rgb24, w, h)).unwrap().top;
    let image = image::RgbImage::from_raw(w, h, rgb).unwrap();
    assert_eq!(classifier.input(), model.tensor_for_image(&image).as_slice());
    let (expected, _) = model.classify_image(&image, 5).unwrap();
    assert_eq!(best.len(), 5);
    for (a, b) in best.iter().zip(&expected) {
        assert_eq!(a.class, b.class);
        assert!((a.score - b.score).abs() < 1e-6, "{} vs {}", a.score, b.score);
    }
    assert_eq!(classifier.labels().len(), CLASSES);
    assert_eq!(classifier.input_replacements(), 0);
}

#[test]
fn every_format_classifies_and_is_timed() {
    let pre = Preprocess::bit_default(64);
    let (_dir, path) = setup(&pre);
    let mut classifier = Classifier::new(&path, &ClassifierConfig::default()).unwrap();
    let (w, h) = (640usize, 480usize);
    let mut firsts = Vec::new();
    let mut stats = LatencyStats::new();
    for format in PixelFormat::ALL {
        let data = frame_bytes(format, w, h, None, 7);
        let result = classifier.classify(&Frame::new(&data, format, w as u32, h as u32)).unwrap();
        stats.record_all(&result.timings);
        let best = result.top;
        assert_eq!(best.len(), 5, "{format}");
        assert!(best.windows(2).all(|p| p[0].score >= p[1].score), "{format}: best first");
        if format != PixelFormat::Grey {
            firsts.push(best[0].class);
        }
    }
    // The same scene in every colour format: conversion differences are far too small to
    // change the tiny model's decision (grey has lost the colour it decides on).
    assert!(firsts.iter().all(|&c| c == firsts[0]), "{firsts:?}");
    for stage in [Stage::Preprocess, Stage::Inference, Stage::Postprocess] {
        let s = stats.summary(stage).unwrap();
        assert_eq!(s.count, PixelFormat::ALL.len(), "{}", stage.name());
        assert!(s.max > std::time::Duration::ZERO, "{} was timed", stage.name());
    }
    // Capture and total are the caller's: the classifier leaves them at zero.
    for stage in [Stage::Capture, Stage::Total] {
        assert_eq!(stats.summary(stage).unwrap().max, std::time::Duration::ZERO, "{}", stage.name());
    }
}

#[test]
fn roi_and_resize_override_reach_the_tensor() {
    let pre = Preprocess::bit_default(64);
    let (_dir, path) = setup(&pre);
    let roi = Roi { x: 100, y: 50, width: 300, height: 200 };
    let resize = ResizeMode::CenterCrop { crop_fraction: 0.9 };
    let config = ClassifierConfig { roi: Some(roi), resize: Some(resize), ..Default::default() };
    let mut classifier = Classifier::new(&path, &config).unwrap();
    classifier.prepare(PixelFormat::Yuyv, 640, 480).unwrap();
    let data = frame_bytes(PixelFormat::Yuyv, 640, 480, None, 1);
    let frame = Frame::new(&data, PixelFormat::Yuyv, 640, 480);
    classifier.classify(&frame).unwrap();
    let mut manual = FramePreprocessor::new(&Preprocess { resize, ..pre }, 64, Some(roi), 640, 480);
    let mut expected = vec![0f32; 3 * 64 * 64];
    manual.fill(&frame, &mut expected).unwrap();
    assert_eq!(classifier.input(), expected.as_slice());
    assert_eq!(classifier.preprocessor().resizer().roi(), roi);
}

#[test]
fn two_threads_agree_with_one() {
    let pre = Preprocess::bit_default(96);
    let (_dir, path) = setup(&pre);
    let data = frame_bytes(PixelFormat::Nv12, 320, 240, None, 5);
    let frame = Frame::new(&data, PixelFormat::Nv12, 320, 240);
    let mut one = Classifier::new(&path, &ClassifierConfig { threads: 1, ..Default::default() }).unwrap();
    let mut two = Classifier::new(&path, &ClassifierConfig { threads: 2, ..Default::default() }).unwrap();
    assert_eq!(two.model().threads(), 2);
    let (a, b) = (one.classify(&frame).unwrap().top, two.classify(&frame).unwrap().top);
    for (p, q) in a.iter().zip(&b) {
        assert_eq!(p.class, q.class);
        assert!((p.score - q.score).abs() < 1e-5);
    }
}

#[test]
fn configuration_is_checked_before_loading() {
    let pre = Preprocess::bit_default(64);
    let (_dir, path) = setup(&pre);
    let field = |config: ClassifierConfig| match Classifier::new(&path, &config) {
        Err(Error::Config { field, .. }) => field,
        other => panic!("expected a configuration error, got {other:?}"),
    };
    assert_eq!(field(ClassifierConfig { top_k: 0, ..Default::default() }), "top_k");
    assert_eq!(field(ClassifierConfig { top_k: 17, ..Default::default() }), "top_k");
    assert_eq!(field(ClassifierConfig { max_width: 0, ..Default::default() }), "max_width");
    let roi = Roi { x: 1800, y: 0, width: 200, height: 100 };
    assert_eq!(field(ClassifierConfig { roi: Some(roi), ..Default::default() }), "roi");
    let resize = ResizeMode::CenterCrop { crop_fraction: 0.0 };
    assert_eq!(field(ClassifierConfig { resize: Some(resize), ..Default::default() }), "resize");
    let missing = Classifier::new(&path.with_extension("missing"), &ClassifierConfig::default());
    assert!(matches!(missing, Err(Error::Read { .. })), "{missing:?}");
}
