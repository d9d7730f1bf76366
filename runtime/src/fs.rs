//! Writing files so that nothing is ever half-written: the one implementation `bit-tool`
//! (models, checkpoints, frames, reports) and the daemon (saved frames) both use.

use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// The prefix of every temporary file [`write_atomically`] creates (`.<prefix><random>.tmp`
/// beside the target), so that whoever owns a directory can recognise and remove the ones a
/// crash left behind.
pub const TEMP_PREFIX: &str = ".bit-partial-";
/// Their suffix.
pub const TEMP_SUFFIX: &str = ".tmp";

/// Writes `bytes` to `path` with permissions `mode` (independent of the umask): a temporary
/// file in the same directory is written, synced, given its mode and renamed over `path`,
/// then the directory is synced. A reader (or a power cut) sees the old file or the whole new
/// one, never part of it; on failure the temporary file is removed and `path` is untouched.
pub fn write_atomically(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::Builder::new().prefix(TEMP_PREFIX).suffix(TEMP_SUFFIX).tempfile_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().set_permissions(std::fs::Permissions::from_mode(mode))?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    // The rename is durable once the directory is; a directory that cannot be opened for
    // syncing (some filesystems) still got the rename.
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Whether `name` is a temporary file of [`write_atomically`].
pub fn is_temp_name(name: &str) -> bool {
    name.starts_with(TEMP_PREFIX) && name.ends_with(TEMP_SUFFIX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_appears_whole_with_its_mode_and_no_temporary_stays() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("model.onnx");
        std::fs::write(&p, b"old").unwrap();
        write_atomically(&p, b"new contents", 0o640).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"new contents");
        assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o640);
        let names: Vec<_> = std::fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, ["model.onnx"]);
    }

    #[test]
    fn a_failed_write_leaves_the_old_file() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("sub");
        std::fs::create_dir(&p).unwrap();
        // Renaming a file over a directory fails after the temporary was written.
        assert!(write_atomically(&p, b"x", 0o644).is_err());
        assert!(p.is_dir());
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 1, "the temporary was removed");
        assert!(is_temp_name(".bit-partial-a1b2c3.tmp") && !is_temp_name("frame.jpg"));
    }
}
