//! A memory budget for model graphs, checked before tract allocates: a model file is untrusted
//! input, and a few hundred bytes of ONNX can declare a tensor of any size (a `ConstantOfShape`
//! of `[1, 3, 100000, 100000]` is 120 GB), which tract would allocate while analysing or
//! constant-folding the graph and abort the process on.
//!
//! Two checks, because tract evaluates constant subgraphs in two places:
//! - [`check_proto`], before tract parses the graph: the ops whose output size is fixed by
//!   constant inputs (`ConstantOfShape`, `Expand`, `Tile`, `Range`) and every initializer's
//!   declared dimensions. tract's analysis evaluates nodes with constant inputs, so these are
//!   refused on the protobuf.
//! - [`check_typed`], after typing and before optimization: every value whose shape is then
//!   known (all of them, once the input is fixed to `[1, 3, size, size]`), however the graph
//!   computes it (`Pad`, `Resize`, broadcasting, ...).
//!
//! The budget is per tensor: [`MAX_TENSOR_BYTES`]. BiT's largest value is far below it (at 480 x
//! 480 the stem's output is 1 x 64 x 240 x 240 f32, 15 MB; the largest weight, a 2048 x 1000
//! head, 8 MB).

use tract_onnx::pb;
use tract_onnx::pb::tensor_proto::DataType;
use tract_onnx::prelude::*;

use crate::proto;

/// The largest tensor a model may declare or compute, in bytes.
pub const MAX_TENSOR_BYTES: u64 = 1 << 30;

fn refuse(what: &str, shape: &dyn std::fmt::Debug, bytes: Option<u64>) -> TractError {
    let size =
        bytes.map_or_else(|| "more than 2^64 bytes".to_string(), |b| format!("{:.1} GB", b as f64 / 1e9));
    TractError::msg(format!(
        "{what} would make a tensor of shape {shape:?} ({size}), beyond the {} GiB a model may use for one \
         tensor: refused before allocating",
        MAX_TENSOR_BYTES >> 30
    ))
}

/// Bytes of `dims` elements of `elem_bytes` each; None on overflow or a negative dimension.
fn bytes_of(dims: &[i64], elem_bytes: u64) -> Option<u64> {
    dims.iter().try_fold(elem_bytes, |n, &d| n.checked_mul(u64::try_from(d).ok()?))
}

fn elem_bytes(data_type: i32) -> u64 {
    match DataType::try_from(data_type) {
        Ok(DataType::Uint8 | DataType::Int8 | DataType::Bool) => 1,
        Ok(DataType::Float16 | DataType::Bfloat16 | DataType::Uint16 | DataType::Int16) => 2,
        Ok(DataType::Float | DataType::Int32 | DataType::Uint32) => 4,
        _ => 8,
    }
}

/// The int64 values of `name` when it is an initializer or the output of a `Constant` node.
fn const_i64(graph: &pb::GraphProto, name: &str) -> Option<Vec<i64>> {
    if let Some(values) = proto::i64_initializer(graph, name) {
        return Some(values);
    }
    let node = graph.node.iter().find(|n| n.op_type == "Constant" && n.output.iter().any(|o| o == name))?;
    proto::attr(node, "value")?.t.as_ref().and_then(proto::tensor_i64)
}

/// Refuses ops and initializers whose size, fixed by constants, is over the budget.
pub fn check_proto(model: &pb::ModelProto) -> TractResult<()> {
    let Some(graph) = model.graph.as_ref() else { return Ok(()) };
    for t in &graph.initializer {
        let bytes = bytes_of(&t.dims, elem_bytes(t.data_type));
        if bytes.is_none_or(|b| b > MAX_TENSOR_BYTES) {
            return Err(refuse(&format!("initializer '{}'", t.name), &t.dims, bytes));
        }
    }
    for node in &graph.node {
        let input = |i: usize| node.input.get(i).and_then(|name| const_i64(graph, name));
        let what = || format!("node '{}' ({})", node.name, node.op_type);
        let (shape, elem) = match node.op_type.as_str() {
            "Constant" => match proto::attr(node, "value").and_then(|a| a.t.as_ref()) {
                Some(t) => (Some(t.dims.clone()), elem_bytes(t.data_type)),
                None => (None, 0),
            },
            "ConstantOfShape" => {
                let elem = proto::attr(node, "value")
                    .and_then(|a| a.t.as_ref())
                    .map_or(4, |t| elem_bytes(t.data_type));
                (input(0), elem)
            }
            // The output is at least the requested shape (broadcasting only widens).
            "Expand" => (input(1), 4),
            "Tile" => {
                let input_dims =
                    node.input.first().and_then(|n| proto::initializer(graph, n)).map(|t| t.dims.clone());
                let repeats = input(1);
                let shape = match (input_dims, repeats) {
                    (Some(dims), Some(reps)) if dims.len() == reps.len() => {
                        Some(dims.iter().zip(&reps).map(|(d, r)| d.saturating_mul(*r)).collect())
                    }
                    (_, reps) => reps,
                };
                (shape, 4)
            }
            "Range" => match (input(0), input(1), input(2)) {
                (Some(start), Some(limit), Some(delta))
                    if start.len() == 1 && limit.len() == 1 && delta.len() == 1 && delta[0] != 0 =>
                {
                    let span = i128::from(limit[0]) - i128::from(start[0]);
                    let count =
                        (span + i128::from(delta[0]) - delta[0].signum() as i128) / i128::from(delta[0]);
                    (Some(vec![i64::try_from(count.max(0)).unwrap_or(i64::MAX)]), 8)
                }
                _ => (None, 8),
            },
            _ => (None, 0),
        };
        if let Some(shape) = shape {
            let bytes = bytes_of(&shape, elem);
            if bytes.is_none_or(|b| b > MAX_TENSOR_BYTES) {
                return Err(refuse(&what(), &shape, bytes));
            }
        }
    }
    Ok(())
}

/// Refuses a typed graph in which any value with a known shape is over the budget.
pub fn check_typed(model: &TypedModel) -> TractResult<()> {
    for node in model.nodes() {
        for (slot, output) in node.outputs.iter().enumerate() {
            let fact = &output.fact;
            let Some(dims) = fact.shape.as_concrete() else { continue };
            let dims: Vec<i64> = dims.iter().map(|&d| d as i64).collect();
            let bytes = bytes_of(&dims, fact.datum_type.size_of() as u64);
            if bytes.is_none_or(|b| b > MAX_TENSOR_BYTES) {
                let what = format!("node '{}' ({}) output {slot}", node.name, node.op().name());
                return Err(refuse(&what, &dims, bytes));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_overflow_and_negative_dims_count_as_too_large() {
        assert_eq!(bytes_of(&[1, 3, 224, 224], 4), Some(602_112));
        assert_eq!(bytes_of(&[i64::MAX, 4], 4), None);
        assert_eq!(bytes_of(&[-1, 4], 4), None);
        assert_eq!(bytes_of(&[], 8), Some(8));
    }
}
