//! Linux GPIO character devices (`/dev/gpiochipN`, uAPI v1 through gpio-cdev).
//!
//! - Pure lookup, testable anywhere: [`resolve_chip`] (by path, name or label) and [`resolve_line`]
//!   (by offset or line name).
//! - Thin wrappers over the kernel: [`list_chips`], [`find_chip`], [`line_names`], [`find_line`],
//!   [`open_output`], [`open_input`].
//! - [`spawn_edge_trigger`]: a thread that turns kernel edge events into debounced triggers.
//!
//! Lines are requested without the kernel's `ACTIVE_LOW` flag: values and edges seen here are
//! physical, and `active_low` is applied in software ([`TriggerConfig`], [`OutputRule`](super::OutputRule)),
//! so the meaning of `edge` does not depend on how a kernel treats active-low edge requests.

use std::collections::BTreeSet;
use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use gpio_cdev::{Chip, EventRequestFlags, EventType, Line, LineEventHandle, LineRequestFlags};
use linux_embedded_hal::CdevPin;
use log::{debug, info, trace, warn};

use super::{
    Backoff, Clock, Debouncer, GpioError, MonotonicClock, Press, STOP_CHECK_INTERVAL, TriggerConfig,
    TriggerLatch, TriggerSource, sleep_unless_stopped,
};

/// A GPIO chip as the kernel describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChipInfo {
    /// Device path it was found at, e.g. `/dev/gpiochip0` (may be a compatibility symlink such as
    /// `/dev/gpiochip4 -> gpiochip0` on a Raspberry Pi 5).
    pub path: PathBuf,
    /// Kernel name, e.g. `gpiochip0`.
    pub name: String,
    /// Kernel label, e.g. `pinctrl-rp1` (may be empty).
    pub label: String,
    /// Number of lines.
    pub num_lines: u32,
}

impl fmt::Display for ChipInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} [{}] ({} lines) at {}", self.name, self.label, self.num_lines, self.path.display())
    }
}

impl ChipInfo {
    /// Whether `path` is the device's own node (`/dev/<name>`), not an alias.
    fn is_canonical(&self) -> bool {
        self.path.file_name().is_some_and(|f| f == self.name.as_str())
    }
}

/// Finds the chip that `spec` names, in this order:
///
/// 1. a path (contains `/`), compared with [`ChipInfo::path`] as written;
/// 2. a kernel name such as `gpiochip4` (a bare number `4` means `gpiochip4`);
/// 3. a device node file name: on a Raspberry Pi 5 with a current kernel, `gpiochip4` is a symlink to
///    `gpiochip0` (`pinctrl-rp1`), kept for old configurations;
/// 4. a label such as `pinctrl-rp1` (exact match). Use this: chip numbers change between kernels.
///
/// The same chip seen through several nodes (symlinks) counts once; the canonical node is returned.
/// Several different chips with the label is an error ([`GpioError::AmbiguousChip`]). If nothing
/// matches, the error lists the chips found.
pub fn resolve_chip<'a>(chips: &'a [ChipInfo], spec: &str) -> Result<&'a ChipInfo, GpioError> {
    let spec = spec.trim();
    let numbered;
    let name = if !spec.is_empty() && spec.bytes().all(|b| b.is_ascii_digit()) {
        numbered = format!("gpiochip{spec}");
        numbered.as_str()
    } else {
        spec
    };
    let found = if spec.contains('/') {
        chips.iter().find(|c| c.path == Path::new(spec))
    } else {
        let by_name = pick(chips.iter().filter(|c| c.name == name), spec)?;
        let by_node = || chips.iter().find(|c| c.path.file_name().is_some_and(|f| f == name));
        match by_name.or_else(by_node) {
            Some(c) => Some(c),
            None if spec.is_empty() => None,
            None => pick(chips.iter().filter(|c| c.label == spec), spec)?,
        }
    };
    found.ok_or_else(|| GpioError::ChipNotFound { spec: spec.to_owned(), found: describe_chips(chips) })
}

/// One chip out of `matches`, which may list a chip several times (through symlinks): `None` if
/// empty, an error if they are different chips.
fn pick<'a>(
    matches: impl Iterator<Item = &'a ChipInfo>,
    spec: &str,
) -> Result<Option<&'a ChipInfo>, GpioError> {
    let matches: Vec<&ChipInfo> = matches.collect();
    let names: BTreeSet<&str> = matches.iter().map(|c| c.name.as_str()).collect();
    if names.len() > 1 {
        let candidates = dedup(matches.into_iter()).iter().map(ToString::to_string).collect::<Vec<_>>();
        return Err(GpioError::AmbiguousChip { spec: spec.to_owned(), candidates: candidates.join(", ") });
    }
    Ok(matches.iter().find(|c| c.is_canonical()).or(matches.first()).copied())
}

/// One entry per chip (by kernel name), preferring the canonical node, in order of first appearance.
fn dedup<'a>(chips: impl Iterator<Item = &'a ChipInfo>) -> Vec<&'a ChipInfo> {
    let mut out: Vec<&ChipInfo> = Vec::new();
    for c in chips {
        match out.iter_mut().find(|o| o.name == c.name) {
            Some(o) if c.is_canonical() && !o.is_canonical() => *o = c,
            Some(_) => {}
            None => out.push(c),
        }
    }
    out
}

fn describe_chips(chips: &[ChipInfo]) -> String {
    if chips.is_empty() {
        return "none (is /dev/gpiochip* present and readable?)".to_owned();
    }
    dedup(chips.iter()).iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
}

/// How a line is named in the configuration (`line = 17` or `line = "GPIO17"`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Deserialize)]
#[serde(untagged)]
pub enum LineSpec {
    /// Line offset within the chip (on a Raspberry Pi: the BCM GPIO number).
    Offset(u32),
    /// Line name as the kernel reports it (`gpioinfo`), e.g. `GPIO17` or `PR.04`.
    Name(String),
}

impl FromStr for LineSpec {
    type Err = GpioError;

    /// A decimal number is an offset; anything else (not blank) is a name.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        if t.is_empty() {
            return Err(GpioError::Parse {
                what: "GPIO line",
                value: s.to_owned(),
                expected: "a line offset or a line name",
            });
        }
        if !t.bytes().all(|b| b.is_ascii_digit()) {
            return Ok(LineSpec::Name(t.to_owned()));
        }
        t.parse().map(LineSpec::Offset).map_err(|_| GpioError::Parse {
            what: "GPIO line offset",
            value: s.to_owned(),
            expected: "a number below 2^32",
        })
    }
}

impl fmt::Display for LineSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LineSpec::Offset(o) => write!(f, "offset {o}"),
            LineSpec::Name(n) => write!(f, "{n:?}"),
        }
    }
}

/// Why a line could not be resolved on a chip.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    /// The offset is not a line of the chip.
    #[error("line offset {offset} does not exist (the chip has {count} lines)")]
    OffsetOutOfRange {
        /// The configured offset.
        offset: u32,
        /// Number of lines of the chip.
        count: usize,
    },
    /// No line has the name.
    #[error("no line is named {name:?}; line names include {sample}{hint}")]
    NameNotFound {
        /// The configured name.
        name: String,
        /// A few line names of the chip.
        sample: String,
        /// Extra advice (may be empty).
        hint: String,
    },
    /// Several lines have the name.
    #[error("{count} lines are named {name:?} (offsets {offsets}); use an offset")]
    Ambiguous {
        /// The configured name.
        name: String,
        /// How many lines have it.
        count: usize,
        /// Their offsets, comma separated.
        offsets: String,
    },
}

/// How many line names an error message lists.
const NAME_SAMPLE: usize = 12;

/// Finds the offset of the line `spec` names among `lines` (`(offset, name)` for every line of a chip,
/// as [`line_names`] returns them).
///
/// An offset must be one of the chip's lines. A name is matched exactly, and failing that ignoring
/// ASCII case; it must be unique. Names differ between kernels (older Raspberry Pi 4 kernels call
/// BCM 2 `SDA1` and BCM 4 `GPIO_GCLK`, newer ones `GPIO2` and `GPIO4`; one Pi 5 image used `PIN3`…),
/// while the offset stays the BCM number, so the error for a missing `GPIO<n>` suggests offset `n`.
pub fn resolve_line(lines: &[(u32, Option<String>)], spec: &LineSpec) -> Result<u32, LineError> {
    let name = match spec {
        LineSpec::Offset(offset) => {
            return if lines.iter().any(|(o, _)| o == offset) {
                Ok(*offset)
            } else {
                Err(LineError::OffsetOutOfRange { offset: *offset, count: lines.len() })
            };
        }
        LineSpec::Name(name) => name.trim(),
    };
    let named = |exact: bool| -> Vec<u32> {
        lines
            .iter()
            .filter(|(_, n)| {
                n.as_deref().is_some_and(|n| if exact { n == name } else { n.eq_ignore_ascii_case(name) })
            })
            .map(|(o, _)| *o)
            .collect()
    };
    let mut offsets = named(true);
    if offsets.is_empty() {
        offsets = named(false);
    }
    match offsets[..] {
        [offset] => Ok(offset),
        [] => Err(LineError::NameNotFound {
            name: name.to_owned(),
            sample: name_sample(lines),
            hint: name_hint(lines, name),
        }),
        _ => Err(LineError::Ambiguous {
            name: name.to_owned(),
            count: offsets.len(),
            offsets: offsets.iter().map(u32::to_string).collect::<Vec<_>>().join(", "),
        }),
    }
}

fn name_sample(lines: &[(u32, Option<String>)]) -> String {
    let meaningful = |n: &&str| !n.is_empty() && *n != "-" && !n.eq_ignore_ascii_case("unnamed");
    let names: Vec<&str> = lines.iter().filter_map(|(_, n)| n.as_deref()).filter(meaningful).collect();
    if names.is_empty() {
        return "none (the lines are unnamed: use an offset)".to_owned();
    }
    let mut sample = names.iter().take(NAME_SAMPLE).map(|n| format!("{n:?}")).collect::<Vec<_>>().join(", ");
    if names.len() > NAME_SAMPLE {
        sample.push_str(&format!(" and {} more", names.len() - NAME_SAMPLE));
    }
    sample
}

fn name_hint(lines: &[(u32, Option<String>)], name: &str) -> String {
    let number = name
        .get(..4)
        .filter(|p| p.eq_ignore_ascii_case("gpio"))
        .and_then(|_| name[4..].parse::<u32>().ok())
        .filter(|_| name[4..].bytes().all(|b| b.is_ascii_digit()));
    match number {
        Some(n) if lines.iter().any(|(o, _)| *o == n) => {
            let current = lines.iter().find(|(o, _)| *o == n).and_then(|(_, name)| name.as_deref());
            let called = current.map(|c| format!(", named {c:?} here")).unwrap_or_default();
            format!(
                "; if this is a Raspberry Pi, the line offset is the BCM number: use offset {n}{called} \
                 (line names differ between kernels)"
            )
        }
        _ => "; or configure the line by offset".to_owned(),
    }
}

fn cdev_err(context: impl Into<String>) -> impl FnOnce(gpio_cdev::Error) -> GpioError {
    let context = context.into();
    move |source| GpioError::Cdev { context, source }
}

fn chip_info(chip: &Chip) -> ChipInfo {
    ChipInfo {
        path: chip.path().to_path_buf(),
        name: chip.name().to_owned(),
        label: chip.label().to_owned(),
        num_lines: chip.num_lines(),
    }
}

/// Every GPIO chip under `/dev` (`gpiochip*`, including symlinked aliases), sorted by path. Chips that
/// cannot be opened (e.g. no permission) are left out with a warning.
pub fn list_chips() -> Result<Vec<ChipInfo>, GpioError> {
    let (chips, unopenable) = scan_chips()?;
    for problem in unopenable {
        warn!("GPIO: cannot open {problem}");
    }
    Ok(chips)
}

/// The chips that could be opened, and `path (error)` for those that could not.
fn scan_chips() -> Result<(Vec<ChipInfo>, Vec<String>), GpioError> {
    let io_err = |source| GpioError::Io { context: "listing /dev/gpiochip*".into(), source };
    let mut paths = Vec::new();
    for entry in std::fs::read_dir("/dev").map_err(io_err)? {
        let entry = entry.map_err(io_err)?;
        if entry.file_name().to_string_lossy().starts_with("gpiochip") {
            paths.push(entry.path());
        }
    }
    paths.sort();
    let mut chips = Vec::new();
    let mut unopenable = Vec::new();
    for path in paths {
        match Chip::new(&path) {
            Ok(chip) => chips.push(chip_info(&chip)),
            Err(e) => unopenable.push(format!("{} ({e})", path.display())),
        }
    }
    Ok((chips, unopenable))
}

/// Finds the chip that `spec` names among the chips under `/dev` (see [`resolve_chip`]). A path that
/// is not among them (e.g. a udev symlink not named `gpiochip*`) is opened directly. If no chip
/// matches, the error also names the chips that could not be opened (typically: no permission).
pub fn find_chip(spec: &str) -> Result<ChipInfo, GpioError> {
    let (chips, unopenable) = scan_chips()?;
    match resolve_chip(&chips, spec) {
        Ok(info) => {
            if info.label != spec.trim() {
                debug!(
                    "GPIO: chip {spec:?} is {info}; chip numbers can change between kernels, the label {:?} \
                     does not",
                    info.label
                );
            }
            Ok(info.clone())
        }
        Err(e) if spec.contains('/') && Path::new(spec.trim()).exists() => {
            debug!("GPIO: {e}; opening {spec:?} directly");
            open(Path::new(spec.trim())).map(|chip| chip_info(&chip))
        }
        Err(GpioError::ChipNotFound { spec, mut found }) if !unopenable.is_empty() => {
            found.push_str(&format!("; could not open {}", unopenable.join(", ")));
            Err(GpioError::ChipNotFound { spec, found })
        }
        Err(e) => Err(e),
    }
}

fn open(path: &Path) -> Result<Chip, GpioError> {
    Chip::new(path).map_err(cdev_err(format!("opening GPIO chip {}", path.display())))
}

/// `(offset, name)` of every line of `chip`.
pub fn line_names(chip: &Chip) -> Result<Vec<(u32, Option<String>)>, GpioError> {
    chip.lines()
        .map(|line| {
            let info = line.info().map_err(cdev_err(format!("reading GPIO line {} info", line.offset())))?;
            Ok((line.offset(), info.name().map(str::to_owned)))
        })
        .collect()
}

/// The line of `chip` that `spec` names (see [`resolve_line`]), with its name.
pub fn find_line(chip: &mut Chip, spec: &LineSpec) -> Result<(Line, Option<String>), GpioError> {
    let names = line_names(chip)?;
    let describe = format!("{} ({} [{}])", chip.path().display(), chip.name(), chip.label());
    let offset =
        resolve_line(&names, spec).map_err(|source| GpioError::Line { chip: describe.clone(), source })?;
    let name = names.into_iter().find(|(o, _)| *o == offset).and_then(|(_, n)| n);
    let line = chip.get_line(offset).map_err(cdev_err(format!("GPIO line {offset} of {describe}")))?;
    Ok((line, name))
}

/// `line 17 "GPIO17"`, or `line 216 (unnamed)`.
fn describe_line(line: &Line, name: Option<&str>) -> String {
    match name {
        Some(name) => format!("line {} {name:?}", line.offset()),
        None => format!("line {} (unnamed)", line.offset()),
    }
}

/// An output line as [`open_output`] returns it, for an [`OutputDriver`](super::OutputDriver).
pub type OutputLine = CdevPin;

/// Requests a line of `chip` as an output, initially inactive (physically high when `active_low`),
/// for an [`OutputDriver`](super::OutputDriver) with the same `active_low`. `consumer` is the label
/// `gpioinfo` shows (the kernel keeps 31 bytes).
pub fn open_output(
    chip: &ChipInfo,
    line: &LineSpec,
    active_low: bool,
    consumer: &str,
) -> Result<OutputLine, GpioError> {
    let mut handle = open(&chip.path)?;
    let (line, name) = find_line(&mut handle, line)?;
    let what = format!("output {} on {chip}", describe_line(&line, name.as_deref()));
    let handle = line
        .request(LineRequestFlags::OUTPUT, u8::from(active_low), consumer)
        .map_err(cdev_err(format!("requesting {what} (is it used by another program or driver?)")))?;
    let pin = CdevPin::new(handle).map_err(cdev_err(format!("reading back {what}")))?;
    info!("GPIO: {what}, active {}", if active_low { "low" } else { "high" });
    Ok(pin)
}

/// Requests a line of `chip` as an input without edge events, e.g. for a
/// [`PolledTrigger`](super::PolledTrigger) where the chip cannot deliver edge events.
pub fn open_input(chip: &ChipInfo, line: &LineSpec, consumer: &str) -> Result<CdevPin, GpioError> {
    let mut handle = open(&chip.path)?;
    let (line, name) = find_line(&mut handle, line)?;
    let what = format!("input {} on {chip}", describe_line(&line, name.as_deref()));
    let handle = line
        .request(LineRequestFlags::INPUT, 0, consumer)
        .map_err(cdev_err(format!("requesting {what} (is it used by another program or driver?)")))?;
    let pin = CdevPin::new(handle).map_err(cdev_err(format!("reading back {what}")))?;
    info!("GPIO: {what}");
    Ok(pin)
}

/// Longest wait for an event: bounds how late a stop request or a resync is noticed.
const MAX_WAIT: Duration = STOP_CHECK_INTERVAL;
/// How often the line level is re-read while idle, to recover from events the kernel dropped (its
/// per-line queue holds 16).
const RESYNC_INTERVAL: Duration = Duration::from_millis(500);
/// A session that ran this long without an error resets the retry backoff.
const HEALTHY_AFTER: Duration = Duration::from_secs(10);

/// Requests edge events on a line of `chip` and spawns a thread (`gpio-trigger`) that debounces them
/// and fires `latch` with [`TriggerSource::Gpio`] for every press, stamped with the press's
/// `began_at` on the daemon's clock ([`MonotonicClock`]). `consumer` is the label `gpioinfo` shows.
///
/// The chip and line are resolved and requested before this returns, so configuration errors (no such
/// chip or line, line busy, chip without interrupt support) are returned here; fall back to
/// [`open_input`] + [`spawn_polled_trigger`](super::spawn_polled_trigger) if wanted.
///
/// The thread:
/// - requests both edges (whatever [`Edge`](super::Edge) says: the debouncer must see releases) as
///   a physical-level input, and starts from the line's current level (a line already active at start
///   fires nothing);
/// - waits for events with `poll(2)` and a timeout of at most 100 ms, so it ends within about 100 ms
///   of `stop` being set (plus a backoff sleep slice, also at most 100 ms), and wakes at the
///   debouncer's deadline to confirm a stable level;
/// - times edges by their kernel timestamps mapped onto the daemon's clock (see below), and confirms
///   a stable level only after `poll(2)` timed out, i.e. when no event is queued;
/// - re-reads the level every 500 ms while idle, in case the kernel dropped events;
/// - logs chip and line at `info` once, presses at `debug`, each event at `trace`; on errors it logs
///   at `warn`, drops the line and requests it again after a backoff (100 ms doubling to 5 s), keeping
///   the debounce state. It never panics.
///
/// Kernel timestamps are CLOCK_MONOTONIC since Linux 5.7 and CLOCK_REALTIME before, so they are never
/// compared with the clock directly: the offset between the two is estimated as the smallest
/// `read time - timestamp` seen (the read time is always after the event), so a mapped edge time is
/// never earlier than the edge really was, and it is clamped to its read time. Intervals between
/// edges keep kernel precision; a CLOCK_REALTIME step back is detected (offset jump over 1 s).
pub fn spawn_edge_trigger(
    chip: &ChipInfo,
    line: &LineSpec,
    trigger: TriggerConfig,
    consumer: &str,
    latch: Arc<TriggerLatch>,
    stop: Arc<AtomicBool>,
) -> Result<JoinHandle<()>, GpioError> {
    let clock = MonotonicClock;
    let mut handle = open(&chip.path)?;
    let (line, name) = find_line(&mut handle, line)?;
    let what = format!("{} on {chip}", describe_line(&line, name.as_deref()));
    let consumer = consumer.to_owned();
    let session = request_events(&line, &consumer)
        .and_then(|events| EdgeSession::new(events, trigger, &clock, None))
        .map_err(cdev_err(format!("requesting edge events on {what} (busy, or no interrupt support?)")))?;
    let level = if session.debouncer.level() { "active" } else { "inactive" };
    info!("GPIO trigger: {what}, {trigger}; the line is {level}");
    let run = move || {
        let reopen = |carried| EdgeSession::new(request_events(&line, &consumer)?, trigger, &clock, carried);
        let backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        run_edge_trigger(&what, reopen, session, &clock, &latch, &stop, backoff);
    };
    thread::Builder::new()
        .name("gpio-trigger".into())
        .spawn(run)
        .map_err(|source| GpioError::Io { context: "spawning the GPIO trigger thread".into(), source })
}

fn request_events(line: &Line, consumer: &str) -> Result<LineEventHandle, gpio_cdev::Error> {
    line.events(LineRequestFlags::INPUT, EventRequestFlags::BOTH_EDGES, consumer)
}

/// The loop of the edge trigger thread: steps `session`, fires `latch`, and on errors drops the
/// session and calls `reopen` (with the debounce state) after a backoff, until `stop`.
fn run_edge_trigger<E: EdgeEvents, C: Clock>(
    what: &str,
    mut reopen: impl FnMut(Option<Debouncer>) -> Result<EdgeSession<E>, gpio_cdev::Error>,
    session: EdgeSession<E>,
    clock: &C,
    latch: &TriggerLatch,
    stop: &AtomicBool,
    mut backoff: Backoff,
) {
    let mut session = Some(session);
    // Debounce state of a session that failed, carried into the next one so that a level change
    // during the outage still counts.
    let mut carried: Option<Debouncer> = None;
    while !stop.load(Ordering::Relaxed) {
        let s = match session.as_mut() {
            Some(s) => s,
            None => match reopen(carried.clone()) {
                Ok(s) => {
                    info!("GPIO trigger: {what}: requested again");
                    carried = None;
                    session.insert(s)
                }
                Err(e) => {
                    let delay = backoff.next_delay();
                    warn!("GPIO trigger: requesting {what} failed: {e}; retrying in {delay:?}");
                    sleep_unless_stopped(delay, stop);
                    continue;
                }
            },
        };
        match s.step(clock) {
            Ok(press) => {
                if let Some(press) = press {
                    latch.fire(TriggerSource::Gpio, press.began_at);
                    debug!("GPIO trigger: {press:?}");
                }
                if clock.now().saturating_sub(s.opened_at) >= HEALTHY_AFTER {
                    backoff.reset();
                }
            }
            Err(e) => {
                let delay = backoff.next_delay();
                warn!("GPIO trigger: {what}: {e}; requesting the line again in {delay:?}");
                carried = session.take().map(|s| s.debouncer);
                sleep_unless_stopped(delay, stop);
            }
        }
    }
    debug!("GPIO trigger: {what}: stopped");
}

/// One kernel edge event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct RawEdge {
    /// Kernel timestamp, nanoseconds (CLOCK_MONOTONIC or CLOCK_REALTIME).
    timestamp_ns: u64,
    /// Rising (low → high) or falling.
    rising: bool,
}

/// A source of edge events: the kernel's line event handle, or a script in tests.
trait EdgeEvents {
    /// Waits up to `timeout` for an event to be readable.
    fn wait(&mut self, timeout: Duration) -> io::Result<Readiness>;
    /// Reads one event (blocks if none is readable).
    fn read(&mut self) -> Result<RawEdge, gpio_cdev::Error>;
    /// The physical level of the line now.
    fn level(&mut self) -> Result<bool, gpio_cdev::Error>;
}

impl EdgeEvents for LineEventHandle {
    fn wait(&mut self, timeout: Duration) -> io::Result<Readiness> {
        wait_readable(self.as_raw_fd(), timeout)
    }

    fn read(&mut self) -> Result<RawEdge, gpio_cdev::Error> {
        let event = self.get_event()?;
        Ok(RawEdge { timestamp_ns: event.timestamp(), rising: event.event_type() == EventType::RisingEdge })
    }

    fn level(&mut self) -> Result<bool, gpio_cdev::Error> {
        // Requested without ACTIVE_LOW: the value is the physical level.
        Ok(self.get_value()? != 0)
    }
}

/// One edge-event request on the line and the state that goes with it.
#[derive(Debug)]
struct EdgeSession<E> {
    events: E,
    trigger: TriggerConfig,
    debouncer: Debouncer,
    mapper: TimestampMapper,
    /// A press to report before waiting for events.
    carried: Option<Press>,
    opened_at: Duration,
    last_resync: Duration,
}

impl<E: EdgeEvents> EdgeSession<E> {
    /// Starts `debouncer` (or a new one) from the line's current level. A press that this level
    /// completes (for a carried debouncer) is returned by the first [`step`](Self::step).
    fn new<C: Clock>(
        mut events: E,
        trigger: TriggerConfig,
        clock: &C,
        debouncer: Option<Debouncer>,
    ) -> Result<Self, gpio_cdev::Error> {
        let active = trigger.is_active(events.level()?);
        let now = clock.now();
        let (debouncer, carried) = match debouncer {
            Some(mut d) => {
                let press = d.edge(now, active);
                (d, press)
            }
            None => (Debouncer::new(&trigger, active, now), None),
        };
        let mapper = TimestampMapper::default();
        Ok(Self { events, trigger, debouncer, mapper, carried, opened_at: now, last_resync: now })
    }

    /// Waits for one event (or until the debouncer's deadline, at most [`MAX_WAIT`]) and handles it.
    fn step<C: Clock>(&mut self, clock: &C) -> Result<Option<Press>, GpioError> {
        if let Some(press) = self.carried.take() {
            return Ok(Some(press));
        }
        let now = clock.now();
        let wait = self.debouncer.next_deadline().map_or(MAX_WAIT, |d| d.saturating_sub(now)).min(MAX_WAIT);
        let ready = self
            .events
            .wait(wait)
            .map_err(|source| GpioError::Io { context: "waiting for GPIO events".into(), source })?;
        match ready {
            Readiness::Interrupted => Ok(None),
            Readiness::Readable => {
                let edge = self.events.read().map_err(cdev_err("reading a GPIO event"))?;
                let read_at = clock.now();
                let at = self.mapper.map(edge.timestamp_ns, read_at);
                trace!(
                    "GPIO trigger: {} edge, kernel timestamp {} ns, at {at:?} (read at {read_at:?})",
                    if edge.rising { "rising" } else { "falling" },
                    edge.timestamp_ns,
                );
                Ok(self.debouncer.edge(at, self.trigger.is_active(edge.rising)))
            }
            Readiness::TimedOut => {
                // Nothing is queued: the level seen last has held until now.
                let now = clock.now();
                let mut press = self.debouncer.poll(now);
                if self.debouncer.next_deadline().is_none()
                    && now.saturating_sub(self.last_resync) >= RESYNC_INTERVAL
                {
                    self.last_resync = now;
                    let high = self.events.level().map_err(cdev_err("reading the GPIO line level"))?;
                    let active = self.trigger.is_active(high);
                    if active != self.debouncer.level() {
                        debug!(
                            "GPIO trigger: the line is physically {} unlike the last event: resynced",
                            u8::from(high)
                        );
                        let resynced = self.debouncer.edge(now, active);
                        press = press.or(resynced);
                    }
                }
                Ok(press)
            }
        }
    }
}

/// Outcome of waiting on a file descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Readiness {
    /// Data can be read.
    Readable,
    /// The timeout passed with nothing to read.
    TimedOut,
    /// A signal interrupted the wait; nothing is known.
    Interrupted,
}

/// Waits until `fd` is readable or `timeout` (rounded up to whole milliseconds) has passed.
fn wait_readable(fd: RawFd, timeout: Duration) -> io::Result<Readiness> {
    let millis = timeout.as_nanos().div_ceil(1_000_000);
    let millis = libc::c_int::try_from(millis).unwrap_or(libc::c_int::MAX);
    let mut pfd = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
    // SAFETY: `pfd` is a valid, initialized `pollfd` that lives across the call, and `nfds` = 1 matches
    // the single entry it points to; poll(2) only writes `revents` of that entry and keeps no pointer.
    // An invalid `fd` is reported through `POLLNVAL`, not undefined behaviour.
    let rc = unsafe { libc::poll(&mut pfd, 1, millis) };
    if rc < 0 {
        let e = io::Error::last_os_error();
        return if e.kind() == io::ErrorKind::Interrupted { Ok(Readiness::Interrupted) } else { Err(e) };
    }
    if rc == 0 {
        return Ok(Readiness::TimedOut);
    }
    if pfd.revents & libc::POLLIN != 0 {
        Ok(Readiness::Readable)
    } else {
        Err(io::Error::other(format!("poll on the GPIO event fd returned revents {:#x}", pfd.revents)))
    }
}

/// Maps kernel event timestamps (nanoseconds on CLOCK_MONOTONIC or CLOCK_REALTIME, depending on the
/// kernel) onto a [`Clock`] timeline, using only differences within each clock.
///
/// `read_at - timestamp` over-estimates the offset between the two clocks by the read latency, so the
/// smallest one seen is the best estimate and `timestamp + offset` is never before the real event
/// time. Mapped times never decrease and are never after the read time. A jump of the estimate by more
/// than [`TimestampMapper::STEP`] (CLOCK_REALTIME set back, or the reader stalled) restarts it.
#[derive(Debug, Default, Clone)]
struct TimestampMapper {
    offset_ns: Option<i128>,
    last: Duration,
}

impl TimestampMapper {
    const STEP: i128 = 1_000_000_000;

    fn map(&mut self, kernel_ns: u64, read_at: Duration) -> Duration {
        let ts = i128::from(kernel_ns);
        let read = read_at.as_nanos() as i128;
        let sample = read - ts;
        let offset = match self.offset_ns {
            Some(o) if sample <= o + Self::STEP => o.min(sample),
            _ => sample,
        };
        self.offset_ns = Some(offset);
        let low = self.last.min(read_at).as_nanos() as i128;
        let mapped = (ts + offset).clamp(low, read);
        // low <= mapped <= read, and both bounds came from Durations.
        let mapped = Duration::from_nanos(u64::try_from(mapped).unwrap_or(u64::MAX));
        self.last = mapped;
        mapped
    }
}

#[cfg(test)]
mod tests;
