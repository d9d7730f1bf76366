//! A dense row-major `f32` array: the unit every checkpoint reader produces.

/// A named checkpoint array in row-major (C) order.
#[derive(Clone, Debug, PartialEq)]
pub struct Array {
    /// Dimensions, outermost first.
    pub shape: Vec<usize>,
    /// `shape.iter().product()` values, row-major.
    pub data: Vec<f32>,
}

impl Array {
    /// Wraps `data` with `shape`; panics if the element count differs (a programming error:
    /// readers check sizes against the file before calling this).
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Array {
        assert_eq!(
            shape.iter().product::<usize>(),
            data.len(),
            "array of shape {shape:?} needs {} values",
            shape.iter().product::<usize>()
        );
        Array { shape, data }
    }

    /// Returns the array with its axes permuted: axis `i` of the result is axis `perm[i]` of
    /// `self` (numpy's `transpose(perm)`).
    pub fn permuted(&self, perm: &[usize]) -> Array {
        assert_eq!(perm.len(), self.shape.len(), "permutation rank");
        let rank = self.shape.len();
        let src_strides = strides(&self.shape);
        let shape: Vec<usize> = perm.iter().map(|&p| self.shape[p]).collect();
        let stride_in_src: Vec<usize> = perm.iter().map(|&p| src_strides[p]).collect();
        let mut data = Vec::with_capacity(self.data.len());
        let mut index = vec![0usize; rank];
        for _ in 0..self.data.len() {
            let offset: usize = index.iter().zip(&stride_in_src).map(|(i, s)| i * s).sum();
            data.push(self.data[offset]);
            for axis in (0..rank).rev() {
                index[axis] += 1;
                if index[axis] < shape[axis] {
                    break;
                }
                index[axis] = 0;
            }
        }
        Array { shape, data }
    }

    /// HWIO (TensorFlow/JAX kernels, as in the official npz) to OIHW (ONNX, PyTorch).
    pub fn hwio_to_oihw(&self) -> Array {
        self.permuted(&[3, 2, 0, 1])
    }

    /// OIHW to HWIO.
    pub fn oihw_to_hwio(&self) -> Array {
        self.permuted(&[2, 3, 1, 0])
    }
}

/// Row-major strides of `shape`, in elements.
pub fn strides(shape: &[usize]) -> Vec<usize> {
    let mut strides = vec![1usize; shape.len()];
    for axis in (0..shape.len().saturating_sub(1)).rev() {
        strides[axis] = strides[axis + 1] * shape[axis + 1];
    }
    strides
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hwio_oihw_round_trip_and_index_mapping() {
        let (h, w, i, o) = (2, 3, 4, 5);
        let data: Vec<f32> = (0..h * w * i * o).map(|v| v as f32).collect();
        let hwio = Array::new(vec![h, w, i, o], data);
        let oihw = hwio.hwio_to_oihw();
        assert_eq!(oihw.shape, vec![o, i, h, w]);
        for (oo, ii, hh, ww) in [(0, 0, 0, 0), (4, 3, 1, 2), (2, 1, 0, 1)] {
            let src = hwio.data[((hh * w + ww) * i + ii) * o + oo];
            let dst = oihw.data[((oo * i + ii) * h + hh) * w + ww];
            assert_eq!(src, dst, "element o{oo} i{ii} h{hh} w{ww}");
        }
        assert_eq!(oihw.oihw_to_hwio(), hwio);
    }
}
