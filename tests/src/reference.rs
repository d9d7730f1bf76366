//! A plain forward pass of BiT written for the tests, independent of tract and of the tool's
//! graph builder: it reads the raw arrays of an official-layout checkpoint by their names,
//! standardizes the HWIO kernels at run time, and uses direct convolution loops with f64
//! accumulation. Slow (seconds for R50x1 at 224) and obviously correct is the point.

use std::collections::BTreeMap;

use bit_tools::tensor::Array;

/// A feature map `[c, h, w]`.
#[derive(Clone, Debug)]
pub struct Map {
    /// Channels.
    pub c: usize,
    /// Height.
    pub h: usize,
    /// Width.
    pub w: usize,
    /// `c * h * w` values.
    pub data: Vec<f32>,
}

/// Raw arrays by official npz name.
pub struct Reference<'a> {
    arrays: &'a BTreeMap<String, Array>,
    /// Weight-standardization epsilon (1e-10 for the official checkpoints).
    pub ws_eps: f64,
}

impl<'a> Reference<'a> {
    /// Wraps the arrays of an official-layout checkpoint.
    pub fn new(arrays: &'a BTreeMap<String, Array>, ws_eps: f64) -> Self {
        Reference { arrays, ws_eps }
    }

    fn get(&self, key: &str) -> &Array {
        self.arrays.get(key).unwrap_or_else(|| panic!("reference: no array {key}"))
    }

    /// Logits for one `[3, size, size]` input.
    pub fn logits(&self, input: &[f32], size: usize) -> Vec<f32> {
        let x = Map { c: 3, h: size, w: size, data: input.to_vec() };
        let x = self.conv(&x, "resnet/root_block/standardized_conv2d/kernel", 2, 3);
        let x = max_pool_3x3_s2(&zero_pad1(&x));
        let mut x = x;
        for block in 1..=4 {
            let stride = if block == 1 { 1 } else { 2 };
            let mut unit = 1;
            while self.arrays.contains_key(&format!("resnet/block{block}/unit{unit:02}/a/group_norm/gamma")) {
                let p = format!("resnet/block{block}/unit{unit:02}");
                let s = if unit == 1 { stride } else { 1 };
                let pre = relu(self.gn(&x, &format!("{p}/a/group_norm")));
                let proj_key = format!("{p}/a/proj/standardized_conv2d/kernel");
                let shortcut = if self.arrays.contains_key(&proj_key) {
                    self.conv(&pre, &proj_key, s, 0)
                } else {
                    x.clone()
                };
                let h = self.conv(&pre, &format!("{p}/a/standardized_conv2d/kernel"), 1, 0);
                let h = relu(self.gn(&h, &format!("{p}/b/group_norm")));
                let h = self.conv(&h, &format!("{p}/b/standardized_conv2d/kernel"), s, 1);
                let h = relu(self.gn(&h, &format!("{p}/c/group_norm")));
                let mut h = self.conv(&h, &format!("{p}/c/standardized_conv2d/kernel"), 1, 0);
                for (a, b) in h.data.iter_mut().zip(&shortcut.data) {
                    *a += *b;
                }
                x = h;
                unit += 1;
            }
        }
        let x = relu(self.gn(&x, "resnet/group_norm"));
        let plane = x.h * x.w;
        let pooled: Vec<f64> = (0..x.c)
            .map(|c| x.data[c * plane..(c + 1) * plane].iter().map(|&v| v as f64).sum::<f64>() / plane as f64)
            .collect();
        let kernel = self.get("resnet/head/conv2d/kernel");
        let bias = self.get("resnet/head/conv2d/bias");
        let classes = kernel.shape[3];
        (0..classes)
            .map(|o| {
                let dot: f64 =
                    pooled.iter().enumerate().map(|(c, &f)| f * kernel.data[c * classes + o] as f64).sum();
                (dot + bias.data[o] as f64) as f32
            })
            .collect()
    }

    /// Convolution with the HWIO kernel at `key`, standardized here, symmetric zero padding.
    fn conv(&self, x: &Map, key: &str, stride: usize, pad: usize) -> Map {
        let k = self.get(key);
        let (kh, kw, cin, cout) = (k.shape[0], k.shape[1], k.shape[2], k.shape[3]);
        assert_eq!(cin, x.c, "{key}: input channels");
        // Standardize per output channel over (kh, kw, cin), biased variance.
        let mut w = vec![0f64; kh * kw * cin * cout];
        for o in 0..cout {
            let vals: Vec<f64> = (0..kh * kw * cin).map(|i| k.data[i * cout + o] as f64).collect();
            let n = vals.len() as f64;
            let mean = vals.iter().sum::<f64>() / n;
            let var = vals.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
            let inv = 1.0 / (var + self.ws_eps).sqrt();
            for (i, v) in vals.iter().enumerate() {
                w[i * cout + o] = (v - mean) * inv;
            }
        }
        let oh = (x.h + 2 * pad - kh) / stride + 1;
        let ow = (x.w + 2 * pad - kw) / stride + 1;
        let mut out = vec![0f32; cout * oh * ow];
        let mut acc = vec![0f64; oh * ow];
        for o in 0..cout {
            acc.iter_mut().for_each(|a| *a = 0.0);
            for i in 0..cin {
                let plane = &x.data[i * x.h * x.w..(i + 1) * x.h * x.w];
                for dy in 0..kh {
                    for dx in 0..kw {
                        let wv = w[((dy * kw + dx) * cin + i) * cout + o];
                        for oy in 0..oh {
                            let iy = (oy * stride + dy) as isize - pad as isize;
                            if iy < 0 || iy >= x.h as isize {
                                continue;
                            }
                            let row = &plane[iy as usize * x.w..(iy as usize + 1) * x.w];
                            let arow = &mut acc[oy * ow..(oy + 1) * ow];
                            for (ox, a) in arow.iter_mut().enumerate() {
                                let ix = (ox * stride + dx) as isize - pad as isize;
                                if ix >= 0 && ix < x.w as isize {
                                    *a += wv * row[ix as usize] as f64;
                                }
                            }
                        }
                    }
                }
            }
            for (d, a) in out[o * oh * ow..(o + 1) * oh * ow].iter_mut().zip(&acc) {
                *d = *a as f32;
            }
        }
        Map { c: cout, h: oh, w: ow, data: out }
    }

    /// GroupNorm, 32 groups, eps 1e-5, biased variance, per-channel affine from `scope`.
    fn gn(&self, x: &Map, scope: &str) -> Map {
        let gamma = self.get(&format!("{scope}/gamma"));
        let beta = self.get(&format!("{scope}/beta"));
        let groups = 32;
        let per = x.c / groups * x.h * x.w;
        let plane = x.h * x.w;
        let mut out = x.clone();
        for g in 0..groups {
            let vals = &x.data[g * per..(g + 1) * per];
            let mean = vals.iter().map(|&v| v as f64).sum::<f64>() / per as f64;
            let var = vals.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / per as f64;
            let inv = 1.0 / (var + 1e-5).sqrt();
            for (i, o) in out.data[g * per..(g + 1) * per].iter_mut().enumerate() {
                let c = g * (x.c / groups) + i / plane;
                *o = (((*o as f64 - mean) * inv) * gamma.data[c] as f64 + beta.data[c] as f64) as f32;
            }
        }
        out
    }
}

fn relu(mut x: Map) -> Map {
    x.data.iter_mut().for_each(|v| *v = v.max(0.0));
    x
}

fn zero_pad1(x: &Map) -> Map {
    let (h, w) = (x.h + 2, x.w + 2);
    let mut data = vec![0f32; x.c * h * w];
    for c in 0..x.c {
        for y in 0..x.h {
            let src = &x.data[(c * x.h + y) * x.w..(c * x.h + y + 1) * x.w];
            data[(c * h + y + 1) * w + 1..(c * h + y + 1) * w + 1 + x.w].copy_from_slice(src);
        }
    }
    Map { c: x.c, h, w, data }
}

fn max_pool_3x3_s2(x: &Map) -> Map {
    let (oh, ow) = ((x.h - 3) / 2 + 1, (x.w - 3) / 2 + 1);
    let mut data = Vec::with_capacity(x.c * oh * ow);
    for c in 0..x.c {
        for oy in 0..oh {
            for ox in 0..ow {
                let mut m = f32::NEG_INFINITY;
                for dy in 0..3 {
                    for dx in 0..3 {
                        m = m.max(x.data[(c * x.h + oy * 2 + dy) * x.w + ox * 2 + dx]);
                    }
                }
                data.push(m);
            }
        }
    }
    Map { c: x.c, h: oh, w: ow, data }
}
