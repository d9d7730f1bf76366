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

/// Refuses to write `output` over one of `inputs`: the same file by device and inode, however it is
/// spelled (a relative path, a symlink, a hard link). A directory input covers the files directly
/// in it. An output that does not exist yet cannot be an input. The error names both paths.
pub fn ensure_not_an_input(output: &Path, inputs: &[&Path]) -> io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let Ok(out) = std::fs::metadata(output) else { return Ok(()) };
    let same = |m: &std::fs::Metadata| m.dev() == out.dev() && m.ino() == out.ino();
    for input in inputs {
        let Ok(meta) = std::fs::metadata(input) else { continue };
        let clash = if meta.is_dir() {
            std::fs::read_dir(input)?
                .flatten()
                .find(|e| std::fs::metadata(e.path()).is_ok_and(|m| same(&m)))
                .map(|e| e.path())
        } else {
            same(&meta).then(|| input.to_path_buf())
        };
        if let Some(clash) = clash {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{} is the input {}: writing it would replace what is being read; choose another output",
                    output.display(),
                    clash.display()
                ),
            ));
        }
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

    #[test]
    fn an_output_that_is_an_input_is_refused_however_it_is_spelled() {
        let d = tempfile::tempdir().unwrap();
        let model = d.path().join("model.onnx");
        std::fs::write(&model, b"float").unwrap();
        let link = d.path().join("link.onnx");
        std::os::unix::fs::symlink(&model, &link).unwrap();
        let hard = d.path().join("hard.onnx");
        std::fs::hard_link(&model, &hard).unwrap();
        let dotted = d.path().join(".").join("model.onnx");
        for out in [&model, &link, &hard, &dotted] {
            let e = ensure_not_an_input(out, &[Path::new("/nonexistent"), &model]).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
            assert!(e.to_string().contains("is the input") && e.to_string().contains("model.onnx"), "{e}");
        }
        // A file of an input directory.
        let e = ensure_not_an_input(&model, &[d.path()]).unwrap_err();
        assert!(e.to_string().contains("model.onnx"), "{e}");
        // A new file, or another existing one, is fine.
        let other = d.path().join("int8.onnx");
        ensure_not_an_input(&other, &[&model]).unwrap();
        std::fs::write(&other, b"old int8").unwrap();
        ensure_not_an_input(&other, &[&model]).unwrap();
        assert_eq!(std::fs::read(&model).unwrap(), b"float");
    }
}
