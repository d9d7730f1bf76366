//! The patched packing writers of the vendored tract-linalg (`third_party/README.md`): im2col
//! feeds them whole input rows through `write_slice`, which now copies one panel segment at a
//! time instead of falling back to per-element writes at every panel boundary. Both writers
//! must put every element where the matmul kernels expect it, whatever the slice lengths.
//! The expected offsets are written out here from the layouts' definitions.

use tract_linalg::pack::{PackedFormat, PackedI8K4, PackingWriter};
use tract_onnx::prelude::*;

const SENTINEL: i8 = -99;

/// A distinct value for each (k, mn), never the sentinel.
fn value(k: usize, m: usize) -> i8 {
    ((k * 31 + m * 7) % 200) as i8 - 90
}

/// Feeds the k-outer sequence (for each k, every mn) through `write_slice` in chunks whose
/// lengths cycle through `chunks` (0 means: one element at a time through `write`).
fn feed<W: PackingWriter<i8>>(w: &mut W, k: usize, mn: usize, chunks: &[usize]) {
    let all: Vec<i8> = (0..k).flat_map(|kk| (0..mn).map(move |m| value(kk, m))).collect();
    let mut at = 0;
    for &c in chunks.iter().cycle() {
        if at == all.len() {
            break;
        }
        if c == 0 {
            w.write(all[at]);
            at += 1;
        } else {
            let end = (at + c).min(all.len());
            w.write_slice(&all[at..end]);
            at = end;
        }
    }
}

const CHUNKINGS: &[&[usize]] = &[&[0], &[1], &[3, 0, 5], &[7], &[16], &[17, 2], &[54, 0, 0], &[56], &[1000]];

/// Feeds a `k` x `mn` matrix through the writer `make` builds over a fresh buffer, once per
/// slicing in [`CHUNKINGS`], and checks the buffer against `offset(k, mn)`: every element where
/// the layout puts it, nothing else touched.
fn check_writer<W: PackingWriter<i8>>(
    what: &str,
    (k, mn, len): (usize, usize, usize),
    make: impl Fn(*mut i8) -> W,
    offset: impl Fn(usize, usize) -> usize,
) {
    let mut expected = vec![SENTINEL; len];
    for kk in 0..k {
        for m in 0..mn {
            expected[offset(kk, m)] = value(kk, m);
        }
    }
    for chunks in CHUNKINGS {
        let mut buf = vec![SENTINEL; len];
        feed(&mut make(buf.as_mut_ptr()), k, mn, chunks);
        assert_eq!(buf, expected, "{what} k {k} mn {mn} chunks {chunks:?}");
    }
}

#[test]
fn k_outer_writer_places_every_element_for_any_slicing() {
    for r in [4usize, 8, 16, 32] {
        let format = PackedFormat { dt: i8::datum_type(), r, alignment_bytes: 16, end_padding_record: 0 };
        for k in [1usize, 2, 5, 9, 27, 64] {
            for mn in [1, r - 1, r, r + 1, 3 * r + 5, 49, 56] {
                let panel_len = format.single_panel_len(k);
                check_writer(
                    &format!("PackedFormat r {r}"),
                    (k, mn, mn.div_ceil(r) * panel_len),
                    |ptr| format.write_with_k_outer(ptr, k, mn),
                    |kk, m| (m / r) * panel_len + kk * r + m % r,
                );
            }
        }
    }
}

#[test]
fn k_outer_k4_writer_places_every_element_for_any_slicing() {
    for r in [8usize, 16] {
        let format = PackedI8K4::new(r);
        for k in [1usize, 3, 4, 5, 9, 27, 64] {
            for mn in [1, r - 1, r, r + 1, 3 * r + 5, 56] {
                let panel_len = format.single_panel_len(k);
                check_writer(
                    &format!("PackedI8K4 r {r}"),
                    (k, mn, mn.div_ceil(r) * panel_len),
                    |ptr| format.write_with_k_outer(ptr, k, mn),
                    |kk, m| (m / r) * panel_len + (kk / 4) * r * 4 + (m % r) * 4 + kk % 4,
                );
            }
        }
    }
}

/// `PackedI8K4::pack_view` (how tract packs a 1x1 convolution's activations) interleaves full
/// panels of mn-contiguous rows with SIMD in the patched copy; every layout position must hold
/// the source element, and K and mn padding must be zero, for contiguous and strided views.
#[test]
fn k4_pack_view_places_every_element() {
    for r in [8usize, 16] {
        let format = PackedI8K4::new(r);
        for k in [1usize, 3, 4, 7, 64] {
            for mn in [1, r - 1, r, 2 * r + 3, 49, 196] {
                let data: Vec<i8> = (0..k * mn).map(|i| value(i / mn, i % mn)).collect();
                // [k, mn] row-major (mn contiguous) and its transpose [mn, k] viewed with k first.
                let kmn = Tensor::from_shape(&[k, mn], &data).unwrap();
                let mnk = kmn.clone().permute_axes(&[1, 0]).unwrap();
                for (what, t, k_axis, mn_axis) in [("k x mn", &kmn, 0, 1), ("mn x k", &mnk, 1, 0)] {
                    let packed = format.pack_view(&t.view(), k_axis, mn_axis).unwrap();
                    let panel_len = format.single_panel_len(k);
                    for p in 0..mn.div_ceil(r) {
                        let ptr = packed.panel_bytes(p, None).unwrap();
                        let panel = unsafe { std::slice::from_raw_parts(ptr as *const i8, panel_len) };
                        for (off, &got) in panel.iter().enumerate() {
                            let (kb, l, kr) = (off / (4 * r), off % (4 * r) / 4, off % 4);
                            let (kk, m) = (kb * 4 + kr, p * r + l);
                            let want = if kk < k && m < mn { value(kk, m) } else { 0 };
                            assert_eq!(got, want, "{what}: r {r} k {k} mn {mn} panel {p} offset {off}");
                        }
                    }
                }
            }
        }
    }
}
