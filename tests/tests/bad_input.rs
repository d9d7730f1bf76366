//! Bad input to import and classify: every error names the file and the key or shape, and
//! no output file (or temporary file) is left behind.

use std::path::{Path, PathBuf};

use bit_tools::synth::{synth_arrays, write_npz, write_safetensors};
use bit_tools::tensor::Array;
use bit_tools::{Arch, ImportOptions, Layout};

fn small() -> Arch {
    Arch { depths: vec![1, 1, 1, 1], width: 1, num_classes: 4 }
}

/// Imports `ckpt` into a fresh directory; returns the error text and checks that the
/// directory is still empty.
fn import_error(ckpt: &Path) -> String {
    let out_dir = tempfile::tempdir().unwrap();
    let out = out_dir.path().join("model.onnx");
    // As the CLI prints it: the error and its causes, `{:#}`.
    let err =
        bit_tools::import_checkpoint(ckpt, &out, &ImportOptions::default()).expect_err("import must fail");
    let err = format!("{:#}", anyhow::Error::new(err));
    let left: Vec<PathBuf> = std::fs::read_dir(out_dir.path()).unwrap().map(|e| e.unwrap().path()).collect();
    assert!(left.is_empty(), "failed import left {left:?}");
    assert!(err.contains(&ckpt.display().to_string()), "error does not name the file: {err}");
    err
}

fn good_npz(dir: &Path) -> PathBuf {
    let path = dir.join("good.npz");
    bit_tools::synth::write_synthetic(&path, &small(), 3, Layout::Npz, None).unwrap();
    path
}

#[test]
fn truncated_npz() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(good_npz(dir.path())).unwrap();
    let path = dir.path().join("truncated.npz");
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let err = import_error(&path);
    assert!(err.contains("corrupt"), "{err}");
}

#[test]
fn corrupt_array_data_in_npz() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = std::fs::read(good_npz(dir.path())).unwrap();
    // Flip bytes well inside the stored data: the zip CRC of that entry no longer matches.
    let mid = bytes.len() / 3;
    for b in &mut bytes[mid..mid + 64] {
        *b ^= 0x5a;
    }
    let path = dir.path().join("corrupt.npz");
    std::fs::write(&path, &bytes).unwrap();
    let err = import_error(&path);
    assert!(err.contains("corrupt at 'resnet/"), "error names the damaged array: {err}");
}

#[test]
fn missing_array() {
    let dir = tempfile::tempdir().unwrap();
    let missing = "resnet/block3/unit01/b/group_norm/beta";
    let arrays: Vec<(String, Array)> =
        synth_arrays(&small(), 3, Layout::Npz).into_iter().filter(|(k, _)| k != missing).collect();
    let path = dir.path().join("missing.npz");
    write_npz(&path, &arrays).unwrap();
    let err = import_error(&path);
    assert!(err.contains(&format!("missing array '{missing}'")), "{err}");
}

#[test]
fn misshaped_array() {
    let dir = tempfile::tempdir().unwrap();
    let key = "resnet/block2/unit01/b/standardized_conv2d/kernel";
    let arrays: Vec<(String, Array)> = synth_arrays(&small(), 3, Layout::Npz)
        .into_iter()
        .map(|(k, a)| {
            if k == key { (k, Array::new(vec![3, 3, 128, 64], vec![0.5; 3 * 3 * 128 * 64])) } else { (k, a) }
        })
        .collect();
    let path = dir.path().join("misshaped.npz");
    write_npz(&path, &arrays).unwrap();
    let err = import_error(&path);
    assert!(
        err.contains(key) && err.contains("[3, 3, 128, 64]") && err.contains("[3, 3, 128, 128]"),
        "{err}"
    );
}

#[test]
fn unknown_layouts_and_formats() {
    let dir = tempfile::tempdir().unwrap();
    let foreign = vec![("conv1/kernel".to_owned(), Array::new(vec![2], vec![1.0, 2.0]))];
    let npz = dir.path().join("foreign.npz");
    write_npz(&npz, &foreign).unwrap();
    assert!(import_error(&npz).contains("unknown layout"));

    let st = dir.path().join("foreign.safetensors");
    write_safetensors(&st, &foreign).unwrap();
    let err = import_error(&st);
    assert!(err.contains("unknown layout") && err.contains("stem.conv.weight"), "{err}");

    let text = dir.path().join("notes.npz");
    std::fs::write(&text, "these are not weights").unwrap();
    assert!(import_error(&text).contains("unknown checkpoint format"));

    let missing = dir.path().join("does-not-exist.npz");
    let err = import_error(&missing);
    assert_eq!(err.matches("No such file").count(), 1, "the OS error is printed once: {err}");
}

#[test]
fn extra_projection_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let arch = Arch { depths: vec![2, 1, 1, 1], ..small() };
    let mut arrays = synth_arrays(&arch, 3, Layout::Npz);
    arrays.push((
        "resnet/block1/unit02/a/proj/standardized_conv2d/kernel".to_owned(),
        Array::new(vec![1, 1, 256, 256], vec![0.0; 256 * 256]),
    ));
    let path = dir.path().join("extra.npz");
    write_npz(&path, &arrays).unwrap();
    let err = import_error(&path);
    assert!(err.contains("no place for: resnet/block1/unit02/a/proj"), "{err}");
}

#[test]
fn wrong_label_count() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = good_npz(dir.path());
    let out = dir.path().join("model.onnx");
    let options = ImportOptions { labels: Some(vec!["a".into(), "b".into()]), ..Default::default() };
    let err = bit_tools::import_checkpoint(&ckpt, &out, &options).unwrap_err().to_string();
    assert!(err.contains("4 classes but 2 labels"), "{err}");
    assert!(!out.exists());
}

#[test]
fn unreadable_image_and_model() {
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("photo.png");
    std::fs::write(&fake, b"\x89PNG\r\n\x1a\n truncated").unwrap();
    let err = bit_runtime::load_image(&fake).unwrap_err().to_string();
    assert!(err.contains("photo.png"), "{err}");

    let model = dir.path().join("model.onnx");
    std::fs::write(&model, b"not protobuf at all \xff\xff\xff").unwrap();
    let err = format!(
        "{:#}",
        anyhow::Error::new(bit_runtime::Model::load(&model, &Default::default()).unwrap_err())
    );
    assert!(err.contains("model.onnx") && err.contains("not a readable ONNX model"), "{err}");
    assert_eq!(err.matches("not a readable ONNX model").count(), 1, "{err}");
}

/// A zip holding `entries` (name, bytes), deflated or stored.
fn zip_of(path: &Path, entries: &[(&str, &[u8])], deflate: bool) {
    use std::io::Write;
    let method = if deflate { zip::CompressionMethod::Deflated } else { zip::CompressionMethod::Stored };
    let options = zip::write::SimpleFileOptions::default().compression_method(method).large_file(false);
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (name, bytes) in entries {
        zip.start_file(*name, options).unwrap();
        zip.write_all(bytes).unwrap();
    }
    std::fs::write(path, zip.finish().unwrap().into_inner()).unwrap();
}

/// An `.npy` version 1.0 blob with `header` as its dictionary, then `data`.
fn npy(header: &str, data: &[u8]) -> Vec<u8> {
    let mut dict = header.to_string();
    while !(10 + dict.len() + 1).is_multiple_of(64) {
        dict.push(' ');
    }
    dict.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(dict.len() as u16).to_le_bytes());
    out.extend_from_slice(dict.as_bytes());
    out.extend_from_slice(data);
    out
}

#[test]
fn an_npy_header_claiming_a_huge_shape_is_refused_before_allocating() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("huge-shape.npz");
    let key = "resnet/root_block/standardized_conv2d/kernel";
    let liar = npy("{'descr': '<f4', 'fortran_order': False, 'shape': (100000, 100000, 100000), }", &[0; 16]);
    let overflow =
        npy("{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296, 16), }", &[]);
    for blob in [liar, overflow] {
        zip_of(&path, &[(&format!("{key}.npy"), &blob)], false);
        let err = import_error(&path);
        assert!(err.contains(key) && err.contains("header's shape"), "{err}");
    }
}

#[test]
fn a_zip_bomb_is_refused_before_it_is_inflated() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bomb.npz");
    // 320 MB of zeros deflate to ~0.3 MB: beyond 16x the archive + 256 MiB.
    let zeros = vec![0u8; 320 << 20];
    zip_of(&path, &[("resnet/bomb.npy", &zeros)], true);
    let archive = std::fs::metadata(&path).unwrap().len();
    assert!(archive < 2 << 20, "the test's bomb is {archive} bytes");
    let err = import_error(&path);
    assert!(err.contains("resnet/bomb") && err.contains("zip bomb"), "{err}");
}

#[test]
fn a_zip_entry_that_inflates_beyond_its_declared_size_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("liar.npz");
    let key = "resnet/root_block/standardized_conv2d/kernel";
    let blob = npy("{'descr': '<f4', 'fortran_order': False, 'shape': (1024,), }", &[0x3f; 4096]);
    zip_of(&path, &[(&format!("{key}.npy"), &blob)], true);
    // Halve the uncompressed size in the local header (offset 22) and the central directory
    // (offset 24); the deflated data still inflates to the full blob.
    let mut bytes = std::fs::read(&path).unwrap();
    let real = (blob.len() as u32).to_le_bytes();
    let fake = (blob.len() as u32 / 2).to_le_bytes();
    for (signature, offset) in [(b"PK\x03\x04", 22), (b"PK\x01\x02", 24)] {
        let at = bytes.windows(4).position(|w| w == signature).unwrap() + offset;
        assert_eq!(bytes[at..at + 4], real, "the size field at {at}");
        bytes[at..at + 4].copy_from_slice(&fake);
    }
    std::fs::write(&path, &bytes).unwrap();
    let err = import_error(&path);
    // The zip crate notices while inflating (our own check after `take` is the second line).
    assert!(
        err.contains(key)
            && (err.contains("its zip header says") || err.contains("larger than its declared")),
        "{err}"
    );
}

/// A model file: input `x` [1, 3, 224, 224] f32 through `body`, which returns its output.
fn hostile_model(path: &Path, body: impl FnOnce(&mut bit_tools::onnx::GraphBuilder) -> String) {
    use bit_tools::onnx::GraphBuilder;
    use tract_onnx::pb::tensor_proto::DataType;
    let mut g = GraphBuilder::default();
    g.input("x", DataType::Float, &[Ok(1), Ok(3), Ok(224), Ok(224)]);
    let out = body(&mut g);
    g.output(&out, DataType::Float, &[]);
    let model = g.into_model("hostile", &[]);
    bit_tools::onnx::write_model(&model, path).unwrap();
}

fn load_error(path: &Path) -> String {
    let err =
        bit_runtime::Model::load(path, &Default::default()).expect_err("a hostile model must be refused");
    format!("{:#}", anyhow::Error::new(err))
}

#[test]
fn graphs_declaring_huge_tensors_are_refused_before_tract_allocates() {
    let dir = tempfile::tempdir().unwrap();
    // ConstantOfShape [1, 3, 100000, 100000] f32 (120 GB): tract's analysis would evaluate it.
    let path = dir.path().join("constant-of-shape.onnx");
    hostile_model(&path, |g| {
        let shape = g.i64_const("shape", &[4], &[1, 3, 100_000, 100_000]);
        let big = g.node("ConstantOfShape", "big", &[&shape], vec![]);
        g.node("Add", "y", &["x", &big], vec![])
    });
    let size = std::fs::metadata(&path).unwrap().len();
    let err = load_error(&path);
    assert!(err.contains("'big' (ConstantOfShape)") && err.contains("refused before allocating"), "{err}");
    assert!(err.contains("constant-of-shape.onnx"), "the error names the file: {err}");
    println!("{size}-byte model: {err}");

    // Expand to the same shape.
    let path = dir.path().join("expand.onnx");
    hostile_model(&path, |g| {
        let one = g.f32_const("one", &[1], &[1.0]);
        let shape = g.i64_const("shape", &[4], &[1, 3, 100_000, 100_000]);
        let big = g.node("Expand", "wide", &[&one, &shape], vec![]);
        g.node("Add", "y", &["x", &big], vec![])
    });
    assert!(load_error(&path).contains("'wide' (Expand)"));

    // An initializer whose declared dimensions overflow.
    let path = dir.path().join("initializer.onnx");
    hostile_model(&path, |g| {
        g.raw_const("w", &[1 << 40, 1 << 40], tract_onnx::pb::tensor_proto::DataType::Float, vec![0; 4]);
        g.node("Add", "y", &["x", "w"], vec![])
    });
    assert!(load_error(&path).contains("initializer 'w'"));

    // A Pad whose output only the typed graph knows: 1 x 3 x 200224 x 200224 f32.
    let path = dir.path().join("pad.onnx");
    hostile_model(&path, |g| {
        let pads = g.i64_const("pads", &[8], &[0, 0, 100_000, 100_000, 0, 0, 100_000, 100_000]);
        g.node("Pad", "padded", &["x", &pads], vec![])
    });
    let err = load_error(&path);
    assert!(err.contains("'padded'") && err.contains("[1, 3, 200224, 200224]"), "{err}");
}

#[test]
fn a_panic_inside_tract_is_an_error_not_a_crash() {
    // Found by the `onnx` fuzz target: a graph output that no node produces makes tract-onnx
    // 0.23.9 index a map with a missing key (src/model.rs:187).
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dangling-output.onnx");
    hostile_model(&path, |g| {
        g.node("Relu", "y", &["x"], vec![]);
        "nowhere".to_string()
    });
    let err = load_error(&path);
    assert!(err.contains("tract panicked while building the model"), "{err}");
    assert!(err.contains("dangling-output.onnx"), "the error names the file: {err}");
}
