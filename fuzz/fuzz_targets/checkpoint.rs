//! The checkpoint readers (npz = zip of npy, safetensors) on arbitrary bytes, through the same
//! `Checkpoint::open` as `bit-tool import`: a clear error or arrays, never a panic or an
//! allocation beyond the budgets. The first byte picks the container.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

fn dir() -> &'static tempfile::TempDir {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir_in("/dev/shm").or_else(|_| tempfile::tempdir()).unwrap())
}

fuzz_target!(|input: &[u8]| {
    let [kind, bytes @ ..] = input else { return };
    let name = if kind % 2 == 0 { "ckpt.npz" } else { "ckpt.safetensors" };
    let path = dir().path().join(name);
    std::fs::write(&path, bytes).unwrap();
    let _ = bit_tools::checkpoint::Checkpoint::open(&path);
});
