//! Writing ONNX models: a small graph builder over tract-onnx's protobuf types, and the
//! float BiT graph built with it.

use std::path::Path;

use prost::Message;
use tract_onnx::pb;

use crate::bit::{BitWeights, Conv, GN_EPS, GN_GROUPS, GroupNorm};
use crate::error::ImportError;

/// Opset of the written models: 21 is the first whose `GroupNormalization` takes
/// per-channel scale and bias, which is what BiT's GroupNorm has.
pub const OPSET: i64 = 21;
/// ONNX IR version matching opset 21.
pub const IR_VERSION: i64 = 10;
/// Name of the image input, `[1, 3, height, width]`, f32.
pub const INPUT: &str = "input";
/// Name of the logits output, `[1, classes]`, f32.
pub const LOGITS: &str = "logits";

/// Accumulates nodes and initializers of one ONNX graph.
#[derive(Default)]
pub struct GraphBuilder {
    nodes: Vec<pb::NodeProto>,
    initializers: Vec<pb::TensorProto>,
    inputs: Vec<pb::ValueInfoProto>,
    outputs: Vec<pb::ValueInfoProto>,
}

/// An attribute value for [`GraphBuilder::node`].
pub enum Attr {
    /// One integer.
    Int(i64),
    /// A list of integers.
    Ints(Vec<i64>),
    /// One float.
    Float(f32),
    /// A tensor (`Constant`'s `value`, `ConstantOfShape`'s fill value).
    Tensor(Box<pb::TensorProto>),
}

impl GraphBuilder {
    /// Adds an f32 initializer and returns its name.
    pub fn f32_const(&mut self, name: &str, dims: &[usize], data: &[f32]) -> String {
        assert_eq!(dims.iter().product::<usize>(), data.len(), "initializer {name}");
        let raw: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.raw_const(name, dims, pb::tensor_proto::DataType::Float, raw)
    }

    /// Adds an i64 initializer and returns its name.
    pub fn i64_const(&mut self, name: &str, dims: &[usize], data: &[i64]) -> String {
        let raw: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.raw_const(name, dims, pb::tensor_proto::DataType::Int64, raw)
    }

    /// Adds an initializer from little-endian bytes of `data_type`.
    pub fn raw_const(
        &mut self,
        name: &str,
        dims: &[usize],
        data_type: pb::tensor_proto::DataType,
        raw: Vec<u8>,
    ) -> String {
        self.initializers.push(pb::TensorProto {
            name: name.to_owned(),
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: data_type as i32,
            raw_data: raw,
            ..Default::default()
        });
        name.to_owned()
    }

    /// Adds a node with one output named `name`, returns that output.
    pub fn node(&mut self, op: &str, name: &str, inputs: &[&str], attrs: Vec<(&str, Attr)>) -> String {
        self.node_with_output(op, name, inputs, attrs, name)
    }

    /// Takes the nodes added so far.
    pub fn take_nodes(&mut self) -> Vec<pb::NodeProto> {
        std::mem::take(&mut self.nodes)
    }

    /// Takes the initializers added so far.
    pub fn take_initializers(&mut self) -> Vec<pb::TensorProto> {
        std::mem::take(&mut self.initializers)
    }

    /// Adds a node named `name` whose one output is `output`; returns `output`.
    pub fn node_with_output(
        &mut self,
        op: &str,
        name: &str,
        inputs: &[&str],
        attrs: Vec<(&str, Attr)>,
        output: &str,
    ) -> String {
        use pb::attribute_proto::AttributeType;
        let attribute = attrs
            .into_iter()
            .map(|(key, value)| {
                let mut a = pb::AttributeProto { name: key.to_owned(), ..Default::default() };
                match value {
                    Attr::Int(i) => {
                        a.i = i;
                        a.r#type = AttributeType::Int as i32;
                    }
                    Attr::Ints(v) => {
                        a.ints = v;
                        a.r#type = AttributeType::Ints as i32;
                    }
                    Attr::Float(f) => {
                        a.f = f;
                        a.r#type = AttributeType::Float as i32;
                    }
                    Attr::Tensor(t) => {
                        a.t = Some(*t);
                        a.r#type = AttributeType::Tensor as i32;
                    }
                }
                a
            })
            .collect();
        self.nodes.push(pb::NodeProto {
            name: name.to_owned(),
            op_type: op.to_owned(),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![output.to_owned()],
            attribute,
            ..Default::default()
        });
        output.to_owned()
    }

    /// Declares a graph input (`Err` dims are symbolic names).
    pub fn input(&mut self, name: &str, elem: pb::tensor_proto::DataType, dims: &[Result<i64, &str>]) {
        self.inputs.push(value_info(name, elem, dims));
    }

    /// Declares a graph output.
    pub fn output(&mut self, name: &str, elem: pb::tensor_proto::DataType, dims: &[Result<i64, &str>]) {
        self.outputs.push(value_info(name, elem, dims));
    }

    /// The finished model with `metadata` as `metadata_props`.
    pub fn into_model(self, graph_name: &str, metadata: &[(String, String)]) -> pb::ModelProto {
        pb::ModelProto {
            ir_version: IR_VERSION,
            opset_import: vec![pb::OperatorSetIdProto { domain: String::new(), version: OPSET }],
            producer_name: "bit-tool".into(),
            producer_version: env!("CARGO_PKG_VERSION").into(),
            graph: Some(pb::GraphProto {
                name: graph_name.to_owned(),
                node: self.nodes,
                initializer: self.initializers,
                input: self.inputs,
                output: self.outputs,
                ..Default::default()
            }),
            metadata_props: metadata
                .iter()
                .map(|(k, v)| pb::StringStringEntryProto { key: k.clone(), value: v.clone() })
                .collect(),
            ..Default::default()
        }
    }
}

fn value_info(
    name: &str,
    elem: pb::tensor_proto::DataType,
    dims: &[Result<i64, &str>],
) -> pb::ValueInfoProto {
    use pb::tensor_shape_proto::{Dimension, dimension::Value};
    let dim = dims
        .iter()
        .map(|d| Dimension {
            value: Some(match d {
                Ok(v) => Value::DimValue(*v),
                Err(s) => Value::DimParam(s.to_string()),
            }),
            ..Default::default()
        })
        .collect();
    pb::ValueInfoProto {
        name: name.to_owned(),
        r#type: Some(pb::TypeProto {
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type: elem as i32,
                shape: Some(pb::TensorShapeProto { dim }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Builds the float BiT graph: folded convolutions, `GroupNormalization` (opset 21,
/// per-channel affine), ReLU, Add, zero pad + 3x3/2 MaxPool, global average pool, 1x1 head.
///
/// Weight standardization must already be folded: the graph has plain convolutions.
pub fn bit_graph(weights: &BitWeights) -> GraphBuilder {
    assert!(weights.ws_folded, "fold weight standardization before building the graph");
    let mut g = GraphBuilder::default();
    let f32t = pb::tensor_proto::DataType::Float;
    g.input(INPUT, f32t, &[Ok(1), Ok(3), Err("height"), Err("width")]);

    let root = conv(&mut g, "root/conv", INPUT, &weights.root, 2, 3);
    let pads = g.i64_const("root/pad/pads", &[8], &[0, 0, 1, 1, 0, 0, 1, 1]);
    let padded = g.node("Pad", "root/pad", &[&root, &pads], vec![]);
    let mut x = g.node(
        "MaxPool",
        "root/pool",
        &[&padded],
        vec![("kernel_shape", Attr::Ints(vec![3, 3])), ("strides", Attr::Ints(vec![2, 2]))],
    );

    for (b, units) in weights.blocks.iter().enumerate() {
        for (u, unit) in units.iter().enumerate() {
            let p = format!("block{}/unit{:02}", b + 1, u + 1);
            let pre = gn_relu(&mut g, &format!("{p}/a"), &x, &unit.gn1);
            let shortcut = match &unit.proj {
                Some(proj) => conv(&mut g, &format!("{p}/a/proj"), &pre, proj, unit.stride, 0),
                None => x.clone(),
            };
            let h = conv(&mut g, &format!("{p}/a/conv"), &pre, &unit.conv1, 1, 0);
            let h = gn_relu(&mut g, &format!("{p}/b"), &h, &unit.gn2);
            let h = conv(&mut g, &format!("{p}/b/conv"), &h, &unit.conv2, unit.stride, 1);
            let h = gn_relu(&mut g, &format!("{p}/c"), &h, &unit.gn3);
            let h = conv(&mut g, &format!("{p}/c/conv"), &h, &unit.conv3, 1, 0);
            x = g.node("Add", &format!("{p}/add"), &[&h, &shortcut], vec![]);
        }
    }

    let x = gn_relu(&mut g, "head", &x, &weights.final_gn);
    let pooled = g.node("GlobalAveragePool", "head/pool", &[&x], vec![]);
    let classes = weights.arch.num_classes;
    let features = weights.arch.features();
    let w = g.f32_const("head/conv/weight", &[classes, features, 1, 1], &weights.head_weight.data);
    let bias = g.f32_const("head/conv/bias", &[classes], &weights.head_bias);
    let logits = g.node("Conv", "head/conv", &[&pooled, &w, &bias], vec![]);
    g.node("Flatten", LOGITS, &[&logits], vec![("axis", Attr::Int(1))]);
    g.output(LOGITS, f32t, &[Ok(1), Ok(classes as i64)]);
    g
}

fn conv(g: &mut GraphBuilder, name: &str, input: &str, conv: &Conv, stride: usize, pad: usize) -> String {
    let w = g.f32_const(&format!("{name}/weight"), &conv.weight.shape, &conv.weight.data);
    let k = conv.weight.shape[2] as i64;
    let (s, p) = (stride as i64, pad as i64);
    g.node(
        "Conv",
        name,
        &[input, &w],
        vec![
            ("kernel_shape", Attr::Ints(vec![k, k])),
            ("strides", Attr::Ints(vec![s, s])),
            ("pads", Attr::Ints(vec![p, p, p, p])),
        ],
    )
}

fn gn_relu(g: &mut GraphBuilder, name: &str, input: &str, gn: &GroupNorm) -> String {
    let c = gn.gamma.len();
    let scale = g.f32_const(&format!("{name}/gn/scale"), &[c], &gn.gamma);
    let bias = g.f32_const(&format!("{name}/gn/bias"), &[c], &gn.beta);
    let normed = g.node(
        "GroupNormalization",
        &format!("{name}/gn"),
        &[input, &scale, &bias],
        vec![("num_groups", Attr::Int(GN_GROUPS as i64)), ("epsilon", Attr::Float(GN_EPS))],
    );
    g.node("Relu", &format!("{name}/relu"), &[&normed], vec![])
}

/// Serializes `model` to `path` atomically: a temporary file in the same directory is
/// written, synced and renamed, so a failure never leaves a partial model behind.
pub fn write_model(model: &pb::ModelProto, path: &Path) -> Result<(), ImportError> {
    write_atomically(path, &model.encode_to_vec())
}

/// Writes `bytes` to `path` through a synced temporary file and a rename
/// ([`bit_runtime::fs::write_atomically`]), readable by everyone (0644: the daemon runs as a
/// dynamic user and reads the models).
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), ImportError> {
    bit_runtime::fs::write_atomically(path, bytes, 0o644)
        .map_err(|source| ImportError::Io { path: path.to_owned(), source })
}
