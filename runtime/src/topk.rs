//! Softmax and top-k in fixed-capacity containers: no allocation.

/// Largest `k` a [`TopK`] holds.
pub const MAX_TOP_K: usize = 16;

/// One class and its softmax probability.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Prediction {
    /// Class index.
    pub class: usize,
    /// Softmax probability over all classes.
    pub score: f32,
}

/// The best classes, best first.
pub type TopK = heapless::Vec<Prediction, MAX_TOP_K>;

/// The `k` largest logits (at most [`MAX_TOP_K`]) with their softmax probabilities, best
/// first; ties keep the lower class index first. NaN logits are never selected.
pub fn top_k(logits: &[f32], k: usize) -> TopK {
    let k = k.min(MAX_TOP_K).min(logits.len());
    let mut best: TopK = heapless::Vec::new();
    if k == 0 {
        return best;
    }
    let max = logits.iter().copied().filter(|v| !v.is_nan()).fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = logits.iter().filter(|v| !v.is_nan()).map(|&v| ((v - max) as f64).exp()).sum();
    for (class, &logit) in logits.iter().enumerate() {
        if logit.is_nan() {
            continue;
        }
        let full = best.len() == k;
        if full && logit <= logits[best[k - 1].class] {
            continue;
        }
        let at = best.iter().position(|p| logit > logits[p.class]).unwrap_or(best.len());
        if full {
            best.pop();
        }
        let score = (((logit - max) as f64).exp() / sum) as f32;
        // Capacity is guaranteed by the pop above.
        let _ = best.insert(at, Prediction { class, score });
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_sorting_and_softmax() {
        let logits: Vec<f32> = (0..1000).map(|i| ((i * 7919 % 1009) as f32 - 500.0) / 50.0).collect();
        let got = top_k(&logits, 5);
        let mut order: Vec<usize> = (0..logits.len()).collect();
        order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
        let denom: f64 = logits.iter().map(|&v| (v as f64).exp()).sum();
        assert_eq!(got.len(), 5);
        for (p, &class) in got.iter().zip(&order) {
            assert_eq!(p.class, class);
            let expected = ((logits[class] as f64).exp() / denom) as f32;
            assert!((p.score - expected).abs() < 1e-6, "{} vs {expected}", p.score);
        }
    }

    #[test]
    fn ties_nan_and_capacity() {
        let logits = [1.0, f32::NAN, 3.0, 3.0, -1.0];
        let got = top_k(&logits, 3);
        let classes: Vec<usize> = got.iter().map(|p| p.class).collect();
        assert_eq!(classes, vec![2, 3, 0]);
        assert_eq!(top_k(&logits, 100).len(), 4, "every non-NaN class, no more");
        assert!(top_k(&[], 5).is_empty());
        assert!(top_k(&logits, 0).is_empty());
    }
}
