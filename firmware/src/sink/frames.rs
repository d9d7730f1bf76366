//! Saved frames: the frames the feed's policy marks (triggered ones, or every n-th) written
//! as JPEG files by a worker thread (conversion, encoding and fsync never run in the frame
//! loop or on the sinks thread), keeping at most `max` of them.
//!
//! The saver manages only files it wrote: names of its own pattern
//! (`frame-<time>-<seq>-<label>.jpg`, see [`saved_name`]), regular files only, in a directory
//! that is not a symlink. Anything else in the directory is never counted or removed. Its
//! temporary files ([`bit_runtime::fs`]) are removed at start, so a kill during a save leaves
//! nothing behind for long. Files are group-readable (0640, the directory 0750), so that a
//! user in the daemon's group can collect them (for calibration or teaching) without root.

use std::collections::VecDeque;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Instant, SystemTime};

use super::{ResultSink, Worker};
use crate::feed::{Event, SharedFrame};
use crate::metrics::{Counter, Registry};
use crate::output::FrameJpeg;

/// Saves waiting for the writer at most (each holds a frame buffer of the loop's pool).
pub const QUEUE: usize = 2;

/// Mode of saved frames.
pub const FILE_MODE: u32 = 0o640;
/// Mode of the directory the saver creates.
pub const DIR_MODE: u32 = 0o750;

/// `frame-<time>-<seq>-<label>.jpg`: the time with `:` as `-` (file-name safe), the
/// classification's sequence number in 8 digits, the label with anything but ASCII letters,
/// digits and `-` as `_`, cut at 40 characters.
pub fn saved_name(time: SystemTime, seq: u64, label: &str) -> String {
    let stamp: String = humantime::format_rfc3339_millis(time)
        .to_string()
        .chars()
        .map(|c| if c == ':' { '-' } else { c })
        .collect();
    let label: String =
        label.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).take(40).collect();
    format!("frame-{stamp}-{seq:08}-{label}.jpg")
}

/// Whether `name` has the saver's own pattern: `frame-YYYY-MM-DDTHH-MM-SS.mmmZ-NNNNNNNN-…jpg`.
pub fn is_saved_name(name: &str) -> bool {
    let Some(rest) = name.strip_prefix("frame-").and_then(|r| r.strip_suffix(".jpg")) else { return false };
    let b = rest.as_bytes();
    // 2026-11-27T10-00-00.123Z-00000012-label
    let pattern = b"dddd-dd-ddTdd-dd-dd.dddZ-dddddddd-";
    b.len() > pattern.len()
        && pattern.iter().zip(b).all(|(p, c)| if *p == b'd' { c.is_ascii_digit() } else { p == c })
        && b[pattern.len()..].iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-' || *c == b'_')
}

/// The directory and the files the saver keeps.
pub struct FrameStore {
    dir: PathBuf,
    max: usize,
    kept: VecDeque<PathBuf>,
    encoder: FrameJpeg,
}

impl FrameStore {
    /// Opens (creating it, mode [`DIR_MODE`]) the directory `dir`, which must not be a
    /// symlink; takes stock of the frames it saved before (its own names, oldest first by
    /// name, which starts with the time), removing the oldest beyond `max` and its own
    /// temporary files.
    pub fn open(dir: &Path, max: usize, quality: u8) -> io::Result<FrameStore> {
        let ctx = |e: io::Error| io::Error::new(e.kind(), format!("frame directory {}: {e}", dir.display()));
        match std::fs::symlink_metadata(dir) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(ctx(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "is a symlink; give the real directory",
                )));
            }
            Ok(m) if !m.is_dir() => {
                return Err(ctx(io::Error::new(io::ErrorKind::InvalidInput, "is not a directory")));
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                std::fs::create_dir_all(dir).map_err(ctx)?;
                std::fs::set_permissions(dir, std::fs::Permissions::from_mode(DIR_MODE)).map_err(ctx)?;
            }
            Err(e) => return Err(ctx(e)),
        }
        let mut mine = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(ctx)? {
            let entry = entry.map_err(ctx)?;
            let Ok(name) = entry.file_name().into_string() else { continue };
            let regular = entry.file_type().is_ok_and(|t| t.is_file());
            if regular && bit_runtime::fs::is_temp_name(&name) {
                match std::fs::remove_file(entry.path()) {
                    Ok(()) => log::info!("removed {} (an interrupted save)", entry.path().display()),
                    Err(e) => log::warn!("removing {}: {e}", entry.path().display()),
                }
            } else if regular && is_saved_name(&name) {
                mine.push(entry.path());
            }
        }
        mine.sort();
        let mut store = FrameStore {
            dir: dir.to_owned(),
            max: max.max(1),
            kept: mine.into(),
            encoder: FrameJpeg::new(quality),
        };
        store.prune();
        Ok(store)
    }

    fn prune(&mut self) {
        while self.kept.len() > self.max {
            if let Some(old) = self.kept.pop_front()
                && let Err(e) = std::fs::remove_file(&old)
                && e.kind() != io::ErrorKind::NotFound
            {
                log::warn!("removing {}: {e}", old.display());
            }
        }
    }

    /// Saves `frame` (MJPEG frames as they came, raw frames encoded).
    pub fn save(
        &mut self,
        frame: &bit_runtime::Frame,
        time: SystemTime,
        seq: u64,
        label: &str,
    ) -> io::Result<PathBuf> {
        let path = self.dir.join(saved_name(time, seq, label));
        bit_runtime::fs::write_atomically(&path, self.encoder.encode(frame)?, FILE_MODE)?;
        self.kept.push_back(path.clone());
        self.prune();
        Ok(path)
    }

    /// Frames kept now.
    pub fn len(&self) -> usize {
        self.kept.len()
    }

    /// Whether none is kept.
    pub fn is_empty(&self) -> bool {
        self.kept.is_empty()
    }
}

struct Job {
    frame: SharedFrame,
    time: SystemTime,
    seq: u64,
    label: String,
}

/// The frame-saving sink.
pub struct FrameSaver {
    worker: Worker<Job>,
}

impl FrameSaver {
    /// Starts the writer over `store`; registers `saved_frames_total`,
    /// `save_failures_total` and `saves_dropped_total`.
    pub fn start(mut store: FrameStore, metrics: &Registry) -> io::Result<FrameSaver> {
        let saved: Arc<Counter> = metrics.counter("saved_frames_total", "Frames saved to disk.");
        let failed: Arc<Counter> = metrics.counter("save_failures_total", "Frames whose saving failed.");
        let dropped =
            metrics.counter("saves_dropped_total", "Frames to save dropped because the disk fell behind.");
        let mut warn = crate::throttle::Throttle::new(std::time::Duration::from_secs(60));
        let worker =
            Worker::start("frame-saver", QUEUE, dropped, move |job: Job, _: &AtomicBool| {
                match store.save(&job.frame.frame(), job.time, job.seq, &job.label) {
                    Ok(path) => {
                        saved.inc();
                        log::debug!("saved {}", path.display());
                    }
                    Err(e) => {
                        failed.inc();
                        if let Some(held) = warn.allow(crate::monotonic_now()) {
                            log::warn!(
                                "saving frame {}: {e} ({held} more failures since the last warning)",
                                job.seq
                            );
                        }
                    }
                }
            })?;
        Ok(FrameSaver { worker })
    }
}

impl ResultSink for FrameSaver {
    fn name(&self) -> &'static str {
        "frame-saver"
    }

    fn on_event(&mut self, event: &Event) {
        let Some(frame) = event.frame.as_ref().filter(|_| event.frame_use.save) else { return };
        let r = &event.result;
        self.worker.push(Job { frame: frame.clone(), time: r.time, seq: r.seq, label: r.label().to_owned() });
    }

    fn shutdown(self: Box<Self>, deadline: Instant) {
        self.worker.shutdown(deadline);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bit_runtime::{Frame, PixelFormat};
    use std::time::Duration;

    #[test]
    fn names_round_trip_through_the_pattern() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_800_000_000_123);
        let name = saved_name(t, 12, "tiger cat/../x");
        assert_eq!(name, "frame-2027-01-15T08-00-00.123Z-00000012-tiger_cat____x.jpg");
        assert!(is_saved_name(&name));
        for other in
            ["IMG_0001.jpg", "frame-2027.jpg", "frame-2027-01-15T08-00-00.123Z-0000001-x.jpg", "notes.txt"]
        {
            assert!(!is_saved_name(other), "{other}");
        }
    }

    #[test]
    fn only_its_own_files_are_counted_and_pruned() {
        let d = tempfile::tempdir().unwrap();
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        // The user's own files, and an old saved frame, and an interrupted save.
        std::fs::write(d.path().join("0000-old.jpg"), b"the user's").unwrap();
        std::fs::write(d.path().join("holiday.jpg"), b"the user's").unwrap();
        std::fs::write(d.path().join(saved_name(t0, 0, "x")), b"saved earlier").unwrap();
        std::fs::write(d.path().join(".bit-partial-abc123.tmp"), b"half").unwrap();
        let mut store = FrameStore::open(d.path(), 2, 90).unwrap();
        assert_eq!(store.len(), 1, "its own frame, not the user's");
        assert!(!d.path().join(".bit-partial-abc123.tmp").exists(), "the interrupted save is removed");
        let yuyv = vec![128u8; 8 * 4 * 2];
        let frame = Frame::new(&yuyv, PixelFormat::Yuyv, 8, 4);
        let a = store.save(&frame, t0 + Duration::from_secs(1), 1, "a").unwrap();
        let b = store.save(&frame, t0 + Duration::from_secs(2), 2, "b").unwrap();
        assert!(!d.path().join(saved_name(t0, 0, "x")).exists(), "its oldest goes first");
        assert!(a.exists() && b.exists());
        assert!(d.path().join("0000-old.jpg").exists() && d.path().join("holiday.jpg").exists());
        assert_eq!(std::fs::metadata(&b).unwrap().permissions().mode() & 0o777, FILE_MODE);
        let img = image::open(&b).unwrap().to_rgb8();
        assert_eq!(img.dimensions(), (8, 4));
        // MJPEG frames are stored byte for byte.
        let jpeg = std::fs::read(&b).unwrap();
        let m = store
            .save(&Frame::new(&jpeg, PixelFormat::Mjpeg, 8, 4), t0 + Duration::from_secs(3), 3, "m")
            .unwrap();
        assert_eq!(std::fs::read(m).unwrap(), jpeg);
        assert_eq!(store.len(), 2);
    }

    #[test]
    fn a_symlinked_directory_is_refused_and_a_new_one_is_group_readable() {
        let d = tempfile::tempdir().unwrap();
        let real = d.path().join("real");
        std::fs::create_dir(&real).unwrap();
        std::fs::write(real.join("holiday.jpg"), b"x").unwrap();
        let link = d.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let e = FrameStore::open(&link, 1, 90).err().unwrap();
        assert!(e.to_string().contains("symlink"), "{e}");
        let fresh = d.path().join("a/b");
        FrameStore::open(&fresh, 1, 90).unwrap();
        assert_eq!(std::fs::metadata(&fresh).unwrap().permissions().mode() & 0o777, DIR_MODE);
    }
}
