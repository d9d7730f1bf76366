//! Run-time selection of the SIMD build of a kernel.

/// Runs `f` compiled for AVX2 where the CPU has it (x86_64 only; NEON is baseline on aarch64).
/// Everything `f` calls must be `#[inline(always)]` to be compiled with it. FMA stays off, so
/// the results are bit-identical to the baseline build (and to the ARM builds).
#[inline(always)]
pub fn dispatch<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        #[target_feature(enable = "avx2")]
        unsafe fn avx2<R>(f: impl FnOnce() -> R) -> R {
            f()
        }
        // SAFETY: the CPU has AVX2 (checked above), the only requirement of `avx2`.
        return unsafe { avx2(f) };
    }
    f()
}

/// Sum of `f(v)` over a slice in eight independent lanes (vectorizable, and closer to
/// pairwise summation than one running total).
#[inline(always)]
pub fn lane_sum<T: Copy + Into<f32>>(values: &[T], f: impl Fn(f32) -> f32) -> f32 {
    let mut lanes = [0f32; 8];
    let chunks = values.chunks_exact(8);
    let rest = chunks.remainder();
    for chunk in chunks {
        for (l, v) in lanes.iter_mut().zip(chunk) {
            *l += f((*v).into());
        }
    }
    lanes.iter().sum::<f32>() + rest.iter().map(|v| f((*v).into())).sum::<f32>()
}

#[cfg(test)]
mod tests {
    #[test]
    fn lane_sum_is_the_sum() {
        let v: Vec<u8> = (0..=200).collect();
        assert_eq!(super::lane_sum(&v, |x| x), (0..=200).sum::<u32>() as f32);
        assert_eq!(super::dispatch(|| super::lane_sum(&v[..5], |x| x * x)), 30.0);
    }
}
