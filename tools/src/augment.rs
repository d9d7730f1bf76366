//! `bit-tool augment`: more frames from a few photos (random crops, scales and flips), so
//! that calibration and held-out sets can be made disjoint and large enough.

use std::path::{Path, PathBuf};

use rand::{RngExt, SeedableRng};

use crate::error::ImportError;
use crate::onnx::write_atomically;
use crate::quantize::list_images;

/// Writes `count` augmented frames of `width` x `height` from the images in `from` into
/// `out` (created if needed), named `<source>_<n>.png`. Deterministic in `seed`.
pub fn augment(
    from: &Path,
    out: &Path,
    count: usize,
    seed: u64,
    width: u32,
    height: u32,
) -> Result<Vec<PathBuf>, ImportError> {
    let sources = list_images(from)?;
    if sources.is_empty() {
        return Err(ImportError::Unsupported {
            path: from.to_owned(),
            key: String::new(),
            detail: "no images to augment".into(),
        });
    }
    std::fs::create_dir_all(out).map_err(|source| ImportError::Io { path: out.to_owned(), source })?;
    let images: Vec<(String, image::RgbImage)> = sources
        .iter()
        .map(|p| {
            let img = bit_runtime::load_image(p).map_err(|e| ImportError::Corrupt {
                path: p.clone(),
                key: String::new(),
                detail: e.to_string(),
            })?;
            let stem = p.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
            Ok((stem, img))
        })
        .collect::<Result<_, ImportError>>()?;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut written = Vec::with_capacity(count);
    for n in 0..count {
        let (stem, img) = &images[n % images.len()];
        let crop = random_crop(img, 0.3, &mut rng);
        let mut frame = image::imageops::resize(&crop, width, height, image::imageops::FilterType::Triangle);
        if rng.random_bool(0.5) {
            image::imageops::flip_horizontal_in_place(&mut frame);
        }
        let path = out.join(format!("{stem}_{n:04}.png"));
        let mut png = Vec::new();
        frame
            .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
            .map_err(|e| ImportError::Io { path: path.clone(), source: std::io::Error::other(e) })?;
        write_atomically(&path, &png)?;
        written.push(path);
    }
    Ok(written)
}

/// A random crop of `min_area`..100% of the image's area with aspect 3:4 to 4:3, anywhere in
/// the image (at least 8 pixels a side where the image has them).
pub fn random_crop(
    img: &image::RgbImage,
    min_area: f64,
    rng: &mut rand_chacha::ChaCha8Rng,
) -> image::RgbImage {
    let (w, h) = (img.width() as f64, img.height() as f64);
    let area = rng.random_range(min_area..1.0) * w * h;
    let aspect: f64 = rng.random_range((3.0f64 / 4.0).ln()..(4.0f64 / 3.0).ln()).exp();
    let cw = (area * aspect).sqrt().max(8.0).min(w);
    let ch = (area / aspect).sqrt().max(8.0).min(h);
    let x = rng.random_range(0.0..=(w - cw));
    let y = rng.random_range(0.0..=(h - ch));
    image::imageops::crop_imm(img, x as u32, y as u32, cw as u32, ch as u32).to_image()
}
