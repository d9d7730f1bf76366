//! The BiT (ResNet-v2, GroupNorm, weight standardization) network as a typed structure,
//! built from any [`Checkpoint`] layout, with every shape checked against the architecture
//! inferred from the keys.

use crate::checkpoint::{Checkpoint, Layout, Slot};
use crate::error::ImportError;
use crate::tensor::Array;

/// Channel counts of the four blocks at width x1 (bottleneck width; outputs are 4x).
pub const BASE_MID: [usize; 4] = [64, 128, 256, 512];
/// Stride of each block's first unit.
pub const BLOCK_STRIDE: [usize; 4] = [1, 2, 2, 2];
/// GroupNorm groups everywhere in BiT.
pub const GN_GROUPS: usize = 32;
/// GroupNorm epsilon everywhere in BiT.
pub const GN_EPS: f32 = 1e-5;

/// A convolution kernel, OIHW, with the checkpoint key it came from.
#[derive(Clone, Debug)]
pub struct Conv {
    /// The array name in the source checkpoint.
    pub key: String,
    /// Kernel, `[cout, cin, kh, kw]`.
    pub weight: Array,
}

/// GroupNorm affine parameters.
#[derive(Clone, Debug)]
pub struct GroupNorm {
    /// Per-channel scale.
    pub gamma: Vec<f32>,
    /// Per-channel shift.
    pub beta: Vec<f32>,
}

/// One pre-activation bottleneck unit.
#[derive(Clone, Debug)]
pub struct Unit {
    /// GroupNorm before `conv1` (on the unit input).
    pub gn1: GroupNorm,
    /// 1x1, cin -> cmid.
    pub conv1: Conv,
    /// GroupNorm before `conv2`.
    pub gn2: GroupNorm,
    /// 3x3, cmid -> cmid, carries the unit's stride.
    pub conv2: Conv,
    /// GroupNorm before `conv3`.
    pub gn3: GroupNorm,
    /// 1x1, cmid -> cout.
    pub conv3: Conv,
    /// 1x1 projection shortcut (first unit of a block), applied to relu(gn1(x)).
    pub proj: Option<Conv>,
    /// 1 or 2.
    pub stride: usize,
}

/// Architecture hyper-parameters, inferred from a checkpoint's keys and shapes.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Arch {
    /// Units per block, e.g. `[3, 4, 6, 3]` for R50.
    pub depths: Vec<usize>,
    /// Width factor (x1, x3, x4).
    pub width: usize,
    /// Classes of the head.
    pub num_classes: usize,
}

impl Arch {
    /// Conventional name, e.g. `R50x1`; depths that match no published model are listed.
    pub fn name(&self) -> String {
        let layers = 2 + 3 * self.depths.iter().sum::<usize>();
        let standard = matches!(self.depths.as_slice(), [3, 4, 6, 3] | [3, 4, 23, 3] | [3, 8, 36, 3]);
        if standard {
            format!("R{layers}x{}", self.width)
        } else {
            let d: Vec<String> = self.depths.iter().map(|d| d.to_string()).collect();
            format!("R{layers}x{} (depths {})", self.width, d.join(","))
        }
    }

    /// Root output channels.
    pub fn root_channels(&self) -> usize {
        64 * self.width
    }

    /// Bottleneck width of block `b` (0-based).
    pub fn mid(&self, b: usize) -> usize {
        BASE_MID[b] * self.width
    }

    /// Output channels of block `b` (0-based).
    pub fn out(&self, b: usize) -> usize {
        4 * self.mid(b)
    }

    /// Features before the head.
    pub fn features(&self) -> usize {
        self.out(3)
    }
}

/// A whole BiT network's parameters, kernels OIHW.
#[derive(Clone, Debug)]
pub struct BitWeights {
    /// Depths, width, classes.
    pub arch: Arch,
    /// The layout the weights were read from.
    pub layout: Layout,
    /// Weight-standardization epsilon of the source.
    pub ws_eps: f32,
    /// Whether [`BitWeights::fold_weight_standardization`] has been applied.
    pub ws_folded: bool,
    /// 7x7/2 root convolution.
    pub root: Conv,
    /// `blocks[b][u]`.
    pub blocks: Vec<Vec<Unit>>,
    /// GroupNorm before the head.
    pub final_gn: GroupNorm,
    /// Head weight `[num_classes, features]`.
    pub head_weight: Array,
    /// Head bias `[num_classes]`.
    pub head_bias: Vec<f32>,
}

impl BitWeights {
    /// Builds the network from a checkpoint, inferring depths, width and classes from its
    /// keys and checking every array's shape.
    pub fn from_checkpoint(ckpt: &Checkpoint) -> Result<BitWeights, ImportError> {
        let layout = ckpt.layout;
        let path = &ckpt.path;
        let shape_err = |key: &str, expected: Vec<usize>, found: &[usize]| ImportError::Shape {
            path: path.clone(),
            key: key.to_owned(),
            expected,
            found: found.to_vec(),
        };

        // Depths: the highest unit number seen in each block; blocks must be 1..=4.
        let mut depths = [0usize; 4];
        for key in ckpt.arrays.keys() {
            if let Some((block, unit)) = layout.unit_of(key) {
                if !(1..=4).contains(&block) || unit == 0 {
                    return Err(ImportError::UnknownLayout {
                        path: path.clone(),
                        detail: format!("array '{key}' names block {block} unit {unit}; BiT has blocks 1-4"),
                    });
                }
                depths[block - 1] = depths[block - 1].max(unit);
            }
        }
        if let Some(b) = depths.iter().position(|&d| d == 0) {
            return Err(ImportError::MissingKey {
                path: path.clone(),
                key: layout.key(Slot::Conv { block: b + 1, unit: 1, part: 0 }),
            });
        }

        // The width factor comes from the root's output channels (64 per unit of width).
        let (root_key, root) = ckpt.slot(Slot::RootConv)?;
        let root_out = match (root.shape.len(), layout.kernels_hwio()) {
            (4, true) => root.shape[3],
            (4, false) => root.shape[0],
            _ => 0,
        };
        if root_out == 0 || !root_out.is_multiple_of(64) {
            return Err(shape_err(&root_key, oihw_as_stored(layout, &[64, 3, 7, 7]), &root.shape));
        }
        let width = root_out / 64;
        let (head_key, head) = ckpt.slot(Slot::HeadWeight)?;
        let num_classes = match layout {
            Layout::Npz => *head.shape.last().unwrap_or(&0),
            _ => *head.shape.first().unwrap_or(&0),
        };
        let arch = Arch { depths: depths.to_vec(), width, num_classes };
        if num_classes == 0 {
            return Err(shape_err(&head_key, vec![1, 1, arch.features(), 1], &head.shape));
        }

        // Every array must be used: a leftover one means a network this code would build wrong.
        let used = std::cell::RefCell::new(std::collections::BTreeSet::new());
        let conv = |slot: Slot, cout: usize, cin: usize, k: usize| -> Result<Conv, ImportError> {
            let (key, array) = ckpt.slot(slot)?;
            used.borrow_mut().insert(key.clone());
            let expected = oihw_as_stored(layout, &[cout, cin, k, k]);
            if array.shape != expected {
                return Err(shape_err(&key, expected, &array.shape));
            }
            Ok(Conv { weight: to_oihw(layout, array), key })
        };
        let vector = |slot: Slot, len: usize| -> Result<Vec<f32>, ImportError> {
            let (key, array) = ckpt.slot(slot)?;
            used.borrow_mut().insert(key.clone());
            if array.shape != [len] {
                return Err(shape_err(&key, vec![len], &array.shape));
            }
            Ok(array.data.clone())
        };
        let gn = |gamma: Slot, beta: Slot, c: usize| -> Result<GroupNorm, ImportError> {
            Ok(GroupNorm { gamma: vector(gamma, c)?, beta: vector(beta, c)? })
        };

        let root = conv(Slot::RootConv, arch.root_channels(), 3, 7)?;
        let mut blocks = Vec::with_capacity(4);
        let mut cin = arch.root_channels();
        for b in 0..4 {
            let (block, mid, out) = (b + 1, arch.mid(b), arch.out(b));
            let mut units = Vec::with_capacity(depths[b]);
            for u in 0..depths[b] {
                let unit = u + 1;
                let unit_cin = if u == 0 { cin } else { out };
                let unit_gn = |part, c| {
                    gn(
                        Slot::Gn { block, unit, part, beta: false },
                        Slot::Gn { block, unit, part, beta: true },
                        c,
                    )
                };
                let proj = if u == 0 { Some(conv(Slot::Proj { block }, out, unit_cin, 1)?) } else { None };
                units.push(Unit {
                    gn1: unit_gn(0, unit_cin)?,
                    conv1: conv(Slot::Conv { block, unit, part: 0 }, mid, unit_cin, 1)?,
                    gn2: unit_gn(1, mid)?,
                    conv2: conv(Slot::Conv { block, unit, part: 1 }, mid, mid, 3)?,
                    gn3: unit_gn(2, mid)?,
                    conv3: conv(Slot::Conv { block, unit, part: 2 }, out, mid, 1)?,
                    proj,
                    stride: if u == 0 { BLOCK_STRIDE[b] } else { 1 },
                });
            }
            blocks.push(units);
            cin = out;
        }
        let final_gn = gn(Slot::FinalGn { beta: false }, Slot::FinalGn { beta: true }, arch.features())?;

        let features = arch.features();
        let head_expected = match layout {
            Layout::Npz => vec![1, 1, features, num_classes],
            Layout::Transformers => vec![num_classes, features],
            Layout::Timm | Layout::BitPytorch => vec![num_classes, features, 1, 1],
        };
        if head.shape != head_expected {
            return Err(shape_err(&head_key, head_expected, &head.shape));
        }
        let head_weight = match layout {
            Layout::Npz => Array::new(vec![features, num_classes], head.data.clone()).permuted(&[1, 0]),
            _ => Array::new(vec![num_classes, features], head.data.clone()),
        };
        let head_bias = vector(Slot::HeadBias, num_classes)?;
        let mut used = used.into_inner();
        used.insert(head_key);
        let leftover: Vec<&String> = ckpt.arrays.keys().filter(|k| !used.contains(*k)).collect();
        if !leftover.is_empty() {
            return Err(ImportError::UnknownLayout {
                path: path.clone(),
                detail: format!(
                    "{} array(s) that a BiT {} has no place for: {}",
                    leftover.len(),
                    arch.name(),
                    leftover.iter().take(5).map(|k| k.as_str()).collect::<Vec<_>>().join(", ")
                ),
            });
        }

        Ok(BitWeights {
            arch,
            layout,
            ws_eps: layout.ws_eps(),
            ws_folded: false,
            root,
            blocks,
            final_gn,
            head_weight,
            head_bias,
        })
    }

    /// Every standardized convolution (all but the head), in network order.
    pub fn convs_mut(&mut self) -> impl Iterator<Item = &mut Conv> {
        std::iter::once(&mut self.root).chain(
            self.blocks
                .iter_mut()
                .flatten()
                .flat_map(|u| u.proj.iter_mut().chain([&mut u.conv1, &mut u.conv2, &mut u.conv3])),
        )
    }

    /// Replaces every kernel by its standardized form, once: per output channel over
    /// (cin, kh, kw), `(w - mean) / sqrt(var + eps)` with the biased variance, computed in
    /// f64. The network then computes exactly what the source did with plain convolutions.
    pub fn fold_weight_standardization(&mut self) {
        if self.ws_folded {
            return;
        }
        let eps = self.ws_eps as f64;
        for conv in self.convs_mut() {
            standardize_oihw(&mut conv.weight, eps);
        }
        self.ws_folded = true;
    }

    /// Number of parameters (kernels, GroupNorm affines, head), as BiT counts them.
    pub fn parameter_count(&mut self) -> usize {
        let convs: usize = self.convs_mut().map(|c| c.weight.data.len()).sum();
        let gns: usize = self
            .blocks
            .iter()
            .flatten()
            .map(|u| 2 * (u.gn1.gamma.len() + u.gn2.gamma.len() + u.gn3.gamma.len()))
            .sum::<usize>()
            + 2 * self.final_gn.gamma.len();
        convs + gns + self.head_weight.data.len() + self.head_bias.len()
    }
}

/// Standardizes an OIHW kernel in place, per output channel.
pub fn standardize_oihw(weight: &mut Array, eps: f64) {
    let cout = weight.shape[0];
    let per_out = weight.data.len() / cout;
    for chunk in weight.data.chunks_exact_mut(per_out) {
        let n = chunk.len() as f64;
        let mean = chunk.iter().map(|&v| v as f64).sum::<f64>() / n;
        let var = chunk.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
        let inv = 1.0 / (var + eps).sqrt();
        for v in chunk {
            *v = ((*v as f64 - mean) * inv) as f32;
        }
    }
}

fn to_oihw(layout: Layout, array: &Array) -> Array {
    if layout.kernels_hwio() && array.shape.len() == 4 { array.hwio_to_oihw() } else { array.clone() }
}

/// The stored shape of an OIHW kernel shape in `layout`.
fn oihw_as_stored(layout: Layout, oihw: &[usize]) -> Vec<usize> {
    if layout.kernels_hwio() { vec![oihw[2], oihw[3], oihw[1], oihw[0]] } else { oihw.to_vec() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standardized_channels_are_zero_mean_unit_variance() {
        let data: Vec<f32> = (0..2 * 3 * 3 * 3).map(|i| ((i * 37 % 11) as f32) * 0.1 - 0.3).collect();
        let mut w = Array::new(vec![2, 3, 3, 3], data);
        standardize_oihw(&mut w, 1e-10);
        for chunk in w.data.chunks(27) {
            let mean: f64 = chunk.iter().map(|&v| v as f64).sum::<f64>() / 27.0;
            let var: f64 = chunk.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / 27.0;
            assert!(mean.abs() < 1e-6, "mean {mean}");
            assert!((var - 1.0).abs() < 1e-5, "var {var}");
        }
    }

    #[test]
    fn arch_names() {
        let r50 = Arch { depths: vec![3, 4, 6, 3], width: 1, num_classes: 1000 };
        assert_eq!(r50.name(), "R50x1");
        let r101 = Arch { depths: vec![3, 4, 23, 3], width: 3, num_classes: 21843 };
        assert_eq!(r101.name(), "R101x3");
        let small = Arch { depths: vec![1, 1, 1, 1], width: 1, num_classes: 8 };
        assert_eq!(small.name(), "R14x1 (depths 1,1,1,1)");
    }
}
