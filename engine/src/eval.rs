//! One ONNX node evaluated by tract on constant inputs: what `bit-tool import` uses to fold
//! the constant subgraphs of an export whose ops its own exact evaluator does not cover
//! (`ConstantOfShape`, `Slice`, `Transpose`, ...).
//!
//! The node becomes a model of its own: its inputs are initializers, its outputs the graph's
//! outputs, the opsets and IR version those of the model it comes from. tract parses, types
//! and runs it with no input, through the same loader as every model ([`crate::ops::onnx`]),
//! the memory budget checked on the protobuf and on the typed graph ([`crate::budget`]), and
//! a panic inside tract caught as an error.

use tract_onnx::pb;
use tract_onnx::prelude::*;

/// Ops whose outputs are random: never evaluated at import, whatever their inputs.
/// (`Dropout` is random only in training mode, but stays too: tract drops it at load.)
pub const NONDETERMINISTIC: &[&str] = &[
    "RandomNormal",
    "RandomNormalLike",
    "RandomUniform",
    "RandomUniformLike",
    "Multinomial",
    "Bernoulli",
    "Dropout",
];

/// Evaluates `node` on `inputs` (initializers named as the node's inputs; every non-empty
/// input must be one), with the model's `opset_import` and `ir_version`. Returns one tensor
/// per non-empty output name, in order.
pub fn eval_node(
    framework: &tract_onnx::Onnx,
    node: &pb::NodeProto,
    inputs: Vec<pb::TensorProto>,
    opset_import: &[pb::OperatorSetIdProto],
    ir_version: i64,
) -> TractResult<Vec<Tensor>> {
    if NONDETERMINISTIC.contains(&node.op_type.as_str()) {
        return Err(TractError::msg("its output is random: never folded"));
    }
    let outputs: Vec<pb::ValueInfoProto> = node
        .output
        .iter()
        .filter(|o| !o.is_empty())
        .map(|o| pb::ValueInfoProto { name: o.clone(), ..Default::default() })
        .collect();
    if outputs.is_empty() {
        return Err(TractError::msg("the node has no output"));
    }
    let model = pb::ModelProto {
        ir_version,
        opset_import: opset_import.to_vec(),
        graph: Some(pb::GraphProto {
            name: "constant".into(),
            node: vec![node.clone()],
            initializer: inputs,
            output: outputs,
            ..Default::default()
        }),
        ..Default::default()
    };
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| eval_model(framework, &model))).unwrap_or_else(
        |panic| Err(TractError::msg(format!("tract panicked: {}", crate::session::panic_message(&panic)))),
    )
}

fn eval_model(framework: &tract_onnx::Onnx, model: &pb::ModelProto) -> TractResult<Vec<Tensor>> {
    crate::budget::check_proto(model)?;
    let typed = framework.model_for_proto_model(model)?.into_typed()?;
    crate::budget::check_typed(&typed)?;
    let outputs = typed.into_runnable()?.run(tvec![])?;
    Ok(outputs.into_iter().map(|v| v.into_tensor()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn i64s(name: &str, dims: &[i64], v: &[i64]) -> pb::TensorProto {
        pb::TensorProto {
            name: name.into(),
            dims: dims.to_vec(),
            data_type: pb::tensor_proto::DataType::Int64 as i32,
            raw_data: v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            ..Default::default()
        }
    }

    fn opsets() -> Vec<pb::OperatorSetIdProto> {
        vec![pb::OperatorSetIdProto { domain: String::new(), version: 17 }]
    }

    #[test]
    fn a_slice_with_negative_steps_reverses() {
        let node = pb::NodeProto {
            name: "flip".into(),
            op_type: "Slice".into(),
            input: ["x", "starts", "ends", "axes", "steps"].map(String::from).to_vec(),
            output: vec!["y".into()],
            ..Default::default()
        };
        let inputs = vec![
            i64s("x", &[3, 2], &[1, 2, 3, 4, 5, 6]),
            i64s("starts", &[1], &[-1]),
            i64s("ends", &[1], &[-i64::MAX]),
            i64s("axes", &[1], &[0]),
            i64s("steps", &[1], &[-1]),
        ];
        let out = eval_node(&crate::ops::onnx(), &node, inputs, &opsets(), 8).unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].datum_type(), i64::datum_type());
        assert_eq!(out[0].shape(), &[3, 2]);
        assert_eq!(out[0].try_as_plain_ram().unwrap().as_slice::<i64>().unwrap(), &[5, 6, 3, 4, 1, 2]);
    }

    #[test]
    fn unknown_and_random_ops_are_errors_not_panics() {
        let unknown = pb::NodeProto {
            name: "n".into(),
            op_type: "NoSuchOp".into(),
            input: vec!["x".into()],
            output: vec!["y".into()],
            ..Default::default()
        };
        let e = eval_node(&crate::ops::onnx(), &unknown, vec![i64s("x", &[1], &[1])], &opsets(), 8);
        assert!(e.is_err());
        let random = pb::NodeProto { op_type: "RandomNormal".into(), input: vec![], ..unknown };
        let e = eval_node(&crate::ops::onnx(), &random, vec![], &opsets(), 8).unwrap_err();
        assert!(e.to_string().contains("random"), "{e}");
    }
}
