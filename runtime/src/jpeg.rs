//! MJPEG frames to RGB8 in a buffer allocated once.
//!
//! The decoder is `zune-jpeg` (what the `image` crate decodes JPEG with, so a frame decodes
//! exactly as the same file does through [`crate::load_image`]). It writes into a caller
//! buffer (`decode_into`), but allocates internally for every image: its decoder state,
//! per-component coefficient and row buffers, and the upsampler scratch. Those allocations
//! are the dependency's, counted separately from the runtime's own (see the allocation
//! test); the RGB image itself lives in this module's scratch buffer.
//!
//! `zune-jpeg` has no reduced-scale (DCT-domain) decode. `jpeg-decoder` has one
//! (`Decoder::scale`, 1/2 to 1/8), but returns a new `Vec` per image, and a DCT-domain
//! downscale is an area filter, not the bilinear resize the models were evaluated with.
//!
//! Strict mode is on: a truncated frame (a partial USB transfer) is an error instead of an
//! image whose lower part is grey. A panic inside the decoder (none was found by the
//! property tests, but it parses untrusted bytes) is caught and reported as a corrupt frame.

use zune_core::bytestream::{ZByteIoError, ZCursor};
use zune_core::colorspace::ColorSpace;
use zune_core::options::DecoderOptions;
use zune_jpeg::JpegDecoder;
use zune_jpeg::errors::DecodeErrors;

use crate::frame::{FrameError, JpegFault, MAX_SIDE};

/// The decoded-image buffer for frames up to a maximum size.
#[derive(Debug)]
pub(crate) struct JpegScratch {
    rgb: Vec<u8>,
    max_width: u32,
    max_height: u32,
}

impl JpegScratch {
    /// Allocates `3 * max_width * max_height` bytes (zeroed by the allocator, so the pages
    /// are only backed once a frame of that size is decoded).
    pub(crate) fn new(max_width: u32, max_height: u32) -> JpegScratch {
        JpegScratch { rgb: vec![0; 3 * max_width as usize * max_height as usize], max_width, max_height }
    }

    /// Decodes `data`, declared as `width` x `height`, to packed RGB8 rows of `3 * width`
    /// bytes.
    pub(crate) fn decode(&mut self, data: &[u8], width: u32, height: u32) -> Result<&[u8], FrameError> {
        if data.len() < 2 || data[..2] != [0xff, 0xd8] {
            return Err(FrameError::Jpeg(JpegFault::NotJpeg));
        }
        let options = DecoderOptions::default()
            .set_strict_mode(true)
            .set_max_width(MAX_SIDE as usize)
            .set_max_height(MAX_SIDE as usize)
            .jpeg_set_out_colorspace(ColorSpace::RGB);
        let mut decoder = JpegDecoder::new_with_options(ZCursor::new(data), options);
        let headers = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| decoder.decode_headers()));
        headers.map_err(|_| FrameError::Jpeg(JpegFault::Corrupt))?.map_err(fault)?;
        let (w, h) = decoder.dimensions().ok_or(FrameError::Jpeg(JpegFault::Corrupt))?;
        if (w, h) != (width as usize, height as usize) {
            return Err(FrameError::JpegSize {
                declared_width: width,
                declared_height: height,
                width: w as u32,
                height: h as u32,
            });
        }
        let need = 3 * w * h;
        if decoder.output_buffer_size() != Some(need) {
            // Not 8-bit output with three channels: nothing a camera sends.
            return Err(FrameError::Jpeg(JpegFault::Unsupported));
        }
        crate::frame::check_max(width, height, self.max_width, self.max_height)?;
        let out = &mut self.rgb[..need];
        // A decoder bug on some malformed stream must not take the service down: a panic
        // inside it is one more corrupt frame. (No cost when nothing panics.)
        let decoded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| decoder.decode_into(out)));
        match decoded {
            Ok(result) => result.map_err(fault)?,
            Err(_) => return Err(FrameError::Jpeg(JpegFault::Corrupt)),
        }
        Ok(out)
    }
}

/// The decoder's error (which may hold a formatted `String`, already allocated by it) as a
/// fault kind.
fn fault(e: DecodeErrors) -> FrameError {
    FrameError::Jpeg(match e {
        DecodeErrors::ExhaustedData
        | DecodeErrors::IoErrors(ZByteIoError::NotEnoughBytes(..))
        | DecodeErrors::FormatStatic("Premature end of buffer") => JpegFault::Truncated,
        DecodeErrors::IllegalMagicBytes(_) => JpegFault::NotJpeg,
        DecodeErrors::Unsupported(_) => JpegFault::Unsupported,
        _ => JpegFault::Corrupt,
    })
}
