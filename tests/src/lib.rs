//! Shared helpers of the end-to-end tests: fixtures generated once per test process, the
//! sample images, and the plain reference forward pass.
#![deny(missing_docs)]

pub mod reference;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bit_tools::{Arch, Layout};

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ has a parent").to_owned()
}

/// The committed sample photos (see samples/images/LICENSES.md).
pub fn sample_images() -> Vec<PathBuf> {
    let mut images: Vec<PathBuf> = std::fs::read_dir(repo_root().join("samples/images"))
        .expect("samples/images")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "png" || e == "jpg"))
        .collect();
    images.sort();
    images
}

/// A synthetic checkpoint and the float model imported from it.
#[derive(Debug)]
pub struct ModelFixture {
    /// The official-layout checkpoint.
    pub checkpoint: PathBuf,
    /// The imported ONNX model.
    pub model: PathBuf,
    /// The architecture.
    pub arch: Arch,
}

static FIXTURES: Mutex<BTreeMap<String, Arc<ModelFixture>>> = Mutex::new(BTreeMap::new());

/// Writes (once per process) a random official-layout checkpoint of `arch` under `base/name`
/// and imports it. Deterministic in `seed`.
pub fn model_fixture(base: &Path, name: &str, arch: &Arch, seed: u64) -> Arc<ModelFixture> {
    let mut cache = FIXTURES.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(f) = cache.get(name) {
        return f.clone();
    }
    let dir = base.join(name);
    std::fs::create_dir_all(&dir).expect("fixture directory");
    let checkpoint = dir.join("checkpoint.npz");
    let model = dir.join("model.onnx");
    bit_tools::synth::write_synthetic(&checkpoint, arch, seed, Layout::Npz, None).expect("synth");
    bit_tools::import_checkpoint(&checkpoint, &model, &Default::default()).expect("import");
    let fixture = Arc::new(ModelFixture { checkpoint, model, arch: arch.clone() });
    cache.insert(name.to_owned(), fixture.clone());
    fixture
}

/// Whether `BIT_E2E_QUICK` asks for the short version of slow tests (CI sets it under qemu,
/// where the plain reference pass runs ~50x slower than native).
pub fn quick() -> bool {
    std::env::var_os("BIT_E2E_QUICK").is_some()
}

/// Largest absolute difference between two equally long slices.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "lengths differ");
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}
