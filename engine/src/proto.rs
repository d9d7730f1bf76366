//! ONNX protobuf helpers: reading a model file, and the attribute, initializer and graph
//! queries every rewrite needs. One copy, used by the runtime's load-time rewrites and by
//! `bit-tool`'s import, quantization and fine-tuning.

use std::path::Path;

pub use tract_onnx::pb;
use tract_onnx::pb::attribute_proto::AttributeType;
use tract_onnx::pb::tensor_proto::DataType;

/// Why a model file could not be read as ONNX.
#[derive(Debug)]
pub enum ReadError {
    /// The file could not be read.
    Io(std::io::Error),
    /// The bytes are not an ONNX `ModelProto`.
    Decode(prost::DecodeError),
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::Io(_) => f.write_str("cannot read the file"),
            ReadError::Decode(_) => f.write_str("not a readable ONNX model"),
        }
    }
}

impl std::error::Error for ReadError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ReadError::Io(e) => Some(e),
            ReadError::Decode(e) => Some(e),
        }
    }
}

/// Reads and decodes the model at `path`. Decoding from the slice (not a reader) avoids a
/// second in-memory copy of the file.
pub fn read(path: &Path) -> Result<pb::ModelProto, ReadError> {
    let bytes = std::fs::read(path).map_err(ReadError::Io)?;
    decode(&bytes)
}

/// Decodes a `ModelProto` from bytes.
pub fn decode(bytes: &[u8]) -> Result<pb::ModelProto, ReadError> {
    <pb::ModelProto as prost::Message>::decode(bytes).map_err(ReadError::Decode)
}

/// The value of metadata entry `key`, if present.
pub fn metadata<'m>(model: &'m pb::ModelProto, key: &str) -> Option<&'m str> {
    model.metadata_props.iter().find(|e| e.key == key).map(|e| e.value.as_str())
}

/// The default-domain opset the model imports (0 if none).
pub fn opset(model: &pb::ModelProto) -> i64 {
    model.opset_import.iter().find(|o| o.domain.is_empty()).map_or(0, |o| o.version)
}

/// A node's attribute `name`.
pub fn attr<'n>(node: &'n pb::NodeProto, name: &str) -> Option<&'n pb::AttributeProto> {
    node.attribute.iter().find(|a| a.name == name)
}

/// A node's integer-list attribute (`None` if absent).
pub fn ints_attr(node: &pb::NodeProto, name: &str) -> Option<Vec<i64>> {
    attr(node, name).map(|a| a.ints.clone())
}

/// A node's string attribute (`None` if absent).
pub fn string_attr<'n>(node: &'n pb::NodeProto, name: &str) -> Option<&'n [u8]> {
    attr(node, name).map(|a| a.s.as_slice())
}

/// An integer attribute, `default` if absent.
pub fn int_attr(node: &pb::NodeProto, name: &str, default: i64) -> i64 {
    attr(node, name).map_or(default, |a| a.i)
}

/// A float attribute, `default` if absent.
pub fn float_attr(node: &pb::NodeProto, name: &str, default: f32) -> f32 {
    attr(node, name).map_or(default, |a| a.f)
}

/// An integer-list attribute.
pub fn ints(name: &str, ints: Vec<i64>) -> pb::AttributeProto {
    pb::AttributeProto { name: name.into(), ints, r#type: AttributeType::Ints as i32, ..Default::default() }
}

/// An integer attribute.
pub fn int(name: &str, i: i64) -> pb::AttributeProto {
    pb::AttributeProto { name: name.into(), i, r#type: AttributeType::Int as i32, ..Default::default() }
}

/// A float attribute.
pub fn float(name: &str, f: f32) -> pb::AttributeProto {
    pb::AttributeProto { name: name.into(), f, r#type: AttributeType::Float as i32, ..Default::default() }
}

/// The initializer named `name`.
pub fn initializer<'g>(graph: &'g pb::GraphProto, name: &str) -> Option<&'g pb::TensorProto> {
    graph.initializer.iter().find(|t| t.name == name)
}

/// A scalar (every dimension 1) initializer's value as f32: float, uint8 or int8 tensors.
pub fn scalar_initializer(graph: &pb::GraphProto, name: &str) -> Option<f32> {
    let t = initializer(graph, name)?;
    if !t.dims.iter().all(|&d| d == 1) {
        return None;
    }
    let dt = DataType::try_from(t.data_type).ok()?;
    match (dt, t.raw_data.as_slice()) {
        (DataType::Float, [a, b, c, d]) => Some(f32::from_le_bytes([*a, *b, *c, *d])),
        (DataType::Float, []) => t.float_data.first().copied().filter(|_| t.float_data.len() == 1),
        (DataType::Uint8, [v]) => Some(*v as f32),
        (DataType::Int8, [v]) => Some(*v as i8 as f32),
        (DataType::Uint8 | DataType::Int8, []) => {
            t.int32_data.first().map(|&v| v as f32).filter(|_| t.int32_data.len() == 1)
        }
        _ => None,
    }
}

/// An int64 initializer's values.
pub fn i64_initializer(graph: &pb::GraphProto, name: &str) -> Option<Vec<i64>> {
    tensor_i64(initializer(graph, name)?)
}

/// An int64 tensor's values (raw or typed data).
pub fn tensor_i64(t: &pb::TensorProto) -> Option<Vec<i64>> {
    if t.data_type != DataType::Int64 as i32 {
        return None;
    }
    if t.raw_data.is_empty() {
        return Some(t.int64_data.clone());
    }
    let chunks = t.raw_data.chunks_exact(8);
    if !chunks.remainder().is_empty() {
        return None;
    }
    Some(chunks.map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes"))).collect())
}

/// How many nodes read the value `name`.
pub fn readers(graph: &pb::GraphProto, name: &str) -> usize {
    graph.node.iter().filter(|n| n.input.iter().any(|i| i == name)).count()
}

/// Whether `name` is one of the graph's outputs.
pub fn is_output(graph: &pb::GraphProto, name: &str) -> bool {
    graph.output.iter().any(|o| o.name == name)
}

/// Whether a rewrite may remove the value `name`: one reader and not a graph output.
pub fn sole_reader(graph: &pb::GraphProto, name: &str) -> bool {
    readers(graph, name) == 1 && !is_output(graph, name)
}

/// The index of the node producing `name`.
pub fn producer(graph: &pb::GraphProto, name: &str) -> Option<usize> {
    graph.node.iter().position(|n| n.output.iter().any(|o| o == name))
}

/// A graph output (or extra output) of element type f32 and unknown shape.
pub fn f32_value_info(name: &str) -> pb::ValueInfoProto {
    pb::ValueInfoProto {
        name: name.into(),
        r#type: Some(pb::TypeProto {
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type: DataType::Float as i32,
                shape: None,
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tensor(name: &str, data_type: DataType, dims: Vec<i64>, raw: Vec<u8>) -> pb::TensorProto {
        pb::TensorProto {
            name: name.into(),
            data_type: data_type as i32,
            dims,
            raw_data: raw,
            ..Default::default()
        }
    }

    #[test]
    fn initializers_read_as_their_types_say() {
        let graph = pb::GraphProto {
            initializer: vec![
                tensor("f", DataType::Float, vec![1], 2.5f32.to_le_bytes().to_vec()),
                tensor("u", DataType::Uint8, vec![], vec![200]),
                tensor("i", DataType::Int8, vec![1, 1], vec![0xff]),
                tensor(
                    "v",
                    DataType::Float,
                    vec![2],
                    [1f32, 2.0].iter().flat_map(|f| f.to_le_bytes()).collect(),
                ),
                tensor(
                    "l",
                    DataType::Int64,
                    vec![2],
                    [3i64, -4].iter().flat_map(|f| f.to_le_bytes()).collect(),
                ),
                tensor("bad", DataType::Int64, vec![1], vec![1, 2, 3]),
            ],
            ..Default::default()
        };
        assert_eq!(scalar_initializer(&graph, "f"), Some(2.5));
        assert_eq!(scalar_initializer(&graph, "u"), Some(200.0));
        assert_eq!(scalar_initializer(&graph, "i"), Some(-1.0));
        assert_eq!(scalar_initializer(&graph, "v"), None, "not a scalar");
        assert_eq!(scalar_initializer(&graph, "missing"), None);
        assert_eq!(i64_initializer(&graph, "l"), Some(vec![3, -4]));
        assert_eq!(i64_initializer(&graph, "f"), None, "wrong type");
        assert_eq!(i64_initializer(&graph, "bad"), None, "truncated");
    }

    #[test]
    fn graph_queries_count_readers_and_outputs() {
        let node = |op: &str, i: &[&str], o: &str| pb::NodeProto {
            op_type: op.into(),
            input: i.iter().map(|s| s.to_string()).collect(),
            output: vec![o.into()],
            ..Default::default()
        };
        let graph = pb::GraphProto {
            node: vec![node("Relu", &["x"], "a"), node("Add", &["a", "a"], "b"), node("Relu", &["a"], "c")],
            output: vec![f32_value_info("c")],
            ..Default::default()
        };
        assert_eq!(readers(&graph, "a"), 2);
        assert!(!sole_reader(&graph, "a"));
        assert_eq!(readers(&graph, "b"), 0);
        assert!(!sole_reader(&graph, "b"), "an unread value is not a sole reader's");
        assert!(is_output(&graph, "c") && !sole_reader(&graph, "c"));
        assert_eq!(producer(&graph, "b"), Some(1));
        assert_eq!(producer(&graph, "x"), None);
    }

    #[test]
    fn read_errors_name_their_cause_once() {
        let d = std::env::temp_dir().join(format!("bit-engine-proto-{}", std::process::id()));
        std::fs::write(&d, b"\xff\xff\xff not protobuf").unwrap();
        let e = read(&d).unwrap_err();
        std::fs::remove_file(&d).unwrap();
        assert_eq!(e.to_string(), "not a readable ONNX model");
        assert!(std::error::Error::source(&e).is_some());
        let missing = read(Path::new("/nonexistent/model.onnx")).unwrap_err();
        assert!(matches!(missing, ReadError::Io(_)));
    }
}
