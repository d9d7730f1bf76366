//! Tests of the Linux side without hardware: lookup on `gpiodetect`/`gpioinfo` dumps of real boards
//! (transcribed from /work/shared/reference/gpio-boards.md), timestamp mapping, and the edge-event
//! loop driven by a scripted event source and a fake clock.

use super::*;
use crate::gpio::{Edge, FakeClock, Pending};
use std::collections::BTreeSet;
use std::io::Write;
use std::sync::Mutex;
use std::time::Instant;

const fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

const fn us(n: u64) -> Duration {
    Duration::from_micros(n)
}

fn chip(path: &str, name: &str, label: &str, num_lines: u32) -> ChipInfo {
    ChipInfo { path: PathBuf::from(path), name: name.into(), label: label.into(), num_lines }
}

/// Raspberry Pi 4, kernel 6.6.47 (WiringPi issue 280).
fn pi4_chips() -> Vec<ChipInfo> {
    vec![
        chip("/dev/gpiochip0", "gpiochip0", "pinctrl-bcm2711", 58),
        chip("/dev/gpiochip1", "gpiochip1", "raspberrypi-exp-gpio", 8),
    ]
}

/// Raspberry Pi 5, kernel 6.6.20: RP1 is gpiochip4.
fn pi5_old_chips() -> Vec<ChipInfo> {
    vec![
        chip("/dev/gpiochip0", "gpiochip0", "gpio-brcmstb@107d508500", 32),
        chip("/dev/gpiochip1", "gpiochip1", "gpio-brcmstb@107d508520", 4),
        chip("/dev/gpiochip2", "gpiochip2", "gpio-brcmstb@107d517c00", 17),
        chip("/dev/gpiochip3", "gpiochip3", "gpio-brcmstb@107d517c20", 6),
        chip("/dev/gpiochip4", "gpiochip4", "pinctrl-rp1", 54),
    ]
}

/// Raspberry Pi 5, kernel 6.6.47 (raspberrypi/linux PR 6144): RP1 is gpiochip0, and
/// `/dev/gpiochip4 -> gpiochip0` is a symlink, which `list_chips` sees as a chip named gpiochip0.
/// Sorted by path as `list_chips` returns them.
fn pi5_new_chips() -> Vec<ChipInfo> {
    vec![
        chip("/dev/gpiochip0", "gpiochip0", "pinctrl-rp1", 54),
        chip("/dev/gpiochip10", "gpiochip10", "gpio-brcmstb@107d508500", 32),
        chip("/dev/gpiochip11", "gpiochip11", "gpio-brcmstb@107d508520", 4),
        chip("/dev/gpiochip12", "gpiochip12", "gpio-brcmstb@107d517c00", 17),
        chip("/dev/gpiochip13", "gpiochip13", "gpio-brcmstb@107d517c20", 6),
        chip("/dev/gpiochip4", "gpiochip0", "pinctrl-rp1", 54),
    ]
}

/// Jetson Nano, L4T R32.
fn jetson_nano_chips() -> Vec<ChipInfo> {
    vec![
        chip("/dev/gpiochip0", "gpiochip0", "tegra-gpio", 256),
        chip("/dev/gpiochip1", "gpiochip1", "max77620-gpio", 8),
    ]
}

/// Jetson Orin Nano/NX, JetPack 6, with a USB FTDI adapter.
fn jetson_orin_chips() -> Vec<ChipInfo> {
    vec![
        chip("/dev/gpiochip0", "gpiochip0", "tegra234-gpio", 164),
        chip("/dev/gpiochip1", "gpiochip1", "tegra234-gpio-aon", 32),
        chip("/dev/gpiochip2", "gpiochip2", "ftdi-cbus", 4),
    ]
}

fn resolved<'a>(chips: &'a [ChipInfo], spec: &str) -> &'a ChipInfo {
    resolve_chip(chips, spec).unwrap_or_else(|e| panic!("{spec:?}: {e}"))
}

fn path_of(chips: &[ChipInfo], spec: &str) -> String {
    resolved(chips, spec).path.display().to_string()
}

#[test]
fn chip_lookup_on_pi4() {
    let chips = pi4_chips();
    assert_eq!(path_of(&chips, "pinctrl-bcm2711"), "/dev/gpiochip0");
    assert_eq!(path_of(&chips, "/dev/gpiochip0"), "/dev/gpiochip0");
    assert_eq!(path_of(&chips, "gpiochip1"), "/dev/gpiochip1");
    assert_eq!(path_of(&chips, "0"), "/dev/gpiochip0");
    assert_eq!(path_of(&chips, " raspberrypi-exp-gpio "), "/dev/gpiochip1");
    let err = resolve_chip(&chips, "pinctrl-rp1").unwrap_err();
    assert_eq!(
        err.to_string(),
        "no GPIO chip matches \"pinctrl-rp1\" (by path, name or label); chips found: \
         gpiochip0 [pinctrl-bcm2711] (58 lines) at /dev/gpiochip0, \
         gpiochip1 [raspberrypi-exp-gpio] (8 lines) at /dev/gpiochip1"
    );
    assert!(matches!(resolve_chip(&chips, "/dev/gpiochip9"), Err(GpioError::ChipNotFound { .. })));
    assert!(matches!(resolve_chip(&chips, ""), Err(GpioError::ChipNotFound { .. })));
    // Labels match exactly, not by prefix.
    assert!(resolve_chip(&chips, "pinctrl").is_err());
}

#[test]
fn chip_lookup_on_pi5_before_the_renumbering() {
    let chips = pi5_old_chips();
    assert_eq!(path_of(&chips, "pinctrl-rp1"), "/dev/gpiochip4");
    assert_eq!(path_of(&chips, "gpiochip4"), "/dev/gpiochip4");
    assert_eq!(path_of(&chips, "4"), "/dev/gpiochip4");
    assert_eq!(resolved(&chips, "gpiochip0").label, "gpio-brcmstb@107d508500");
}

#[test]
fn chip_lookup_on_pi5_after_the_renumbering() {
    let chips = pi5_new_chips();
    // The label finds the same chip on both kernels; the symlink does not make it ambiguous, and the
    // canonical node is used.
    assert_eq!(path_of(&chips, "pinctrl-rp1"), "/dev/gpiochip0");
    assert_eq!(path_of(&chips, "gpiochip0"), "/dev/gpiochip0");
    // An old configuration naming gpiochip4 reaches RP1 through the compatibility symlink.
    let old = resolved(&chips, "gpiochip4");
    assert_eq!((old.path.to_str(), old.label.as_str()), (Some("/dev/gpiochip4"), "pinctrl-rp1"));
    assert_eq!(resolved(&chips, "/dev/gpiochip4").label, "pinctrl-rp1");
    assert_eq!(resolved(&chips, "gpiochip10").label, "gpio-brcmstb@107d508500");
    // The canonical node wins whatever the listing order.
    let mut reversed = chips.clone();
    reversed.reverse();
    assert_eq!(path_of(&reversed, "pinctrl-rp1"), "/dev/gpiochip0");
    // Error listings show each chip once.
    let err = resolve_chip(&chips, "pinctrl-bcm2711").unwrap_err().to_string();
    assert_eq!(err.matches("pinctrl-rp1").count(), 1, "{err}");
    assert!(err.contains("gpiochip13 [gpio-brcmstb@107d517c20] (6 lines) at /dev/gpiochip13"), "{err}");
}

#[test]
fn chip_lookup_on_jetsons() {
    let nano = jetson_nano_chips();
    assert_eq!(path_of(&nano, "tegra-gpio"), "/dev/gpiochip0");
    assert_eq!(path_of(&nano, "max77620-gpio"), "/dev/gpiochip1");
    let orin = jetson_orin_chips();
    assert_eq!(path_of(&orin, "tegra234-gpio"), "/dev/gpiochip0");
    assert_eq!(path_of(&orin, "tegra234-gpio-aon"), "/dev/gpiochip1");
    assert_eq!(path_of(&orin, "ftdi-cbus"), "/dev/gpiochip2");
    assert!(resolve_chip(&orin, "tegra-gpio").is_err());
}

#[test]
fn two_different_chips_with_one_label_are_ambiguous() {
    let mut chips = jetson_orin_chips();
    chips.push(chip("/dev/gpiochip3", "gpiochip3", "ftdi-cbus", 4));
    let err = resolve_chip(&chips, "ftdi-cbus").unwrap_err();
    assert!(matches!(err, GpioError::AmbiguousChip { .. }));
    assert_eq!(
        err.to_string(),
        "GPIO chip \"ftdi-cbus\" is ambiguous, several chips match: \
         gpiochip2 [ftdi-cbus] (4 lines) at /dev/gpiochip2, gpiochip3 [ftdi-cbus] (4 lines) at /dev/gpiochip3; \
         use a path or name"
    );
    // A name still picks one.
    assert_eq!(path_of(&chips, "gpiochip3"), "/dev/gpiochip3");
}

#[test]
fn no_chips_at_all() {
    let err = resolve_chip(&[], "pinctrl-rp1").unwrap_err().to_string();
    assert!(err.ends_with("chips found: none (is /dev/gpiochip* present and readable?)"), "{err}");
}

fn named(names: &[&str]) -> Vec<(u32, Option<String>)> {
    names.iter().enumerate().map(|(i, n)| (i as u32, Some((*n).to_owned()))).collect()
}

/// Pi 4 `gpioinfo`, older kernel names (rpidmx512 gpio_rasppi.h), all 58 lines.
fn pi4_old_lines() -> Vec<(u32, Option<String>)> {
    named(&[
        "ID_SDA",
        "ID_SCL",
        "SDA1",
        "SCL1",
        "GPIO_GCLK",
        "GPIO5",
        "GPIO6",
        "SPI_CE1_N",
        "SPI_CE0_N",
        "SPI_MISO",
        "SPI_MOSI",
        "SPI_SCLK",
        "GPIO12",
        "GPIO13",
        "TXD1",
        "RXD1",
        "GPIO16",
        "GPIO17",
        "GPIO18",
        "GPIO19",
        "GPIO20",
        "GPIO21",
        "GPIO22",
        "GPIO23",
        "GPIO24",
        "GPIO25",
        "GPIO26",
        "GPIO27",
        "RGMII_MDIO",
        "RGMIO_MDC",
        "CTS0",
        "RTS0",
        "TXD0",
        "RXD0",
        "SD1_CLK",
        "SD1_CMD",
        "SD1_DATA0",
        "SD1_DATA1",
        "SD1_DATA2",
        "SD1_DATA3",
        "PWM0_MISO",
        "PWM1_MOSI",
        "STATUS_LED_G_CLK",
        "SPIFLASH_CE_N",
        "SDA0",
        "SCL0",
        "RGMII_RXCLK",
        "RGMII_RXCTL",
        "RGMII_RXD0",
        "RGMII_RXD1",
        "RGMII_RXD2",
        "RGMII_RXD3",
        "RGMII_TXCLK",
        "RGMII_TXCTL",
        "RGMII_TXD0",
        "RGMII_TXD1",
        "RGMII_TXD2",
        "RGMII_TXD3",
    ])
}

/// Pi 400 `gpioinfo`, newer kernel names (avrdude PR 1973), lines 0..=33 of 58 as excerpted.
fn pi400_new_lines() -> Vec<(u32, Option<String>)> {
    let mut names = vec!["ID_SDA".to_owned(), "ID_SCL".to_owned()];
    names.extend((2..=27).map(|n| format!("GPIO{n}")));
    names.extend(["RGMII_MDIO", "RGMIO_MDC", "CTS0", "RTS0", "TXD0", "RXD0"].map(String::from));
    names.into_iter().enumerate().map(|(i, n)| (i as u32, Some(n))).collect()
}

/// Pi 5 `gpioinfo 4`, pinctrl-rp1, all 54 lines (rpi-lgpio docs).
fn pi5_rp1_lines() -> Vec<(u32, Option<String>)> {
    let mut names = vec!["ID_SDA".to_owned(), "ID_SCL".to_owned()];
    names.extend((2..=27).map(|n| format!("GPIO{n}")));
    names.extend(
        [
            "PCIE_RP1_WAKE",
            "FAN_TACH",
            "HOST_SDA",
            "HOST_SCL",
            "ETH_RST_N",
            "-",
            "CD0_IO0_MICCLK",
            "CD0_IO0_MICDAT0",
            "RP1_PCIE_CLKREQ_N",
            "-",
            "CD0_SDA",
            "CD0_SCL",
            "CD1_SDA",
            "CD1_SCL",
            "USB_VBUS_EN",
            "USB_OC_N",
            "RP1_STAT_LED",
            "FAN_PWM",
            "CD1_IO0_MICCLK",
            "2712_WAKE",
            "CD1_IO1_MICDAT1",
            "EN_MAX_USB_CUR",
            "-",
            "-",
            "-",
            "-",
        ]
        .map(String::from),
    );
    assert_eq!(names.len(), 54);
    names.into_iter().enumerate().map(|(i, n)| (i as u32, Some(n))).collect()
}

/// Pi 5 "PIN<header pin>" naming (ofxGPIO issue 37, /sys/kernel/debug/gpio, gpio-399 = offset 0).
fn pi5_pin_named_lines() -> Vec<(u32, Option<String>)> {
    named(&[
        "ID_SD", "ID_SC", "PIN3", "PIN5", "PIN7", "PIN29", "PIN31", "PIN26", "PIN24", "PIN21", "PIN19",
        "PIN23", "PIN32", "PIN33", "PIN8", "PIN10", "PIN36", "PIN11", "PIN12", "PIN35", "PIN38", "PIN40",
        "PIN15", "PIN16", "PIN18", "PIN22", "PIN37",
    ])
}

/// A chip of `count` lines named only at `names` (the rest unnamed).
fn sparse(count: u32, names: &[(u32, &str)]) -> Vec<(u32, Option<String>)> {
    (0..count).map(|o| (o, names.iter().find(|(n, _)| *n == o).map(|(_, s)| (*s).to_owned()))).collect()
}

/// Jetson Nano 2GB `gpioinfo /dev/gpiochip0 | grep -v unnamed`: 256 lines, these named.
fn jetson_nano_lines() -> Vec<(u32, Option<String>)> {
    sparse(
        256,
        &[
            (12, "SPI1_MOSI"),
            (13, "SPI1_MISO"),
            (14, "SPI1_SCK"),
            (15, "SPI1_CS0"),
            (16, "SPI0_MOSI"),
            (17, "SPI0_MISO"),
            (18, "SPI0_SCK"),
            (19, "SPI0_CS0"),
            (20, "SPI0_CS1"),
            (38, "GPIO13"),
            (50, "UART1_RTS"),
            (51, "UART1_CTS"),
            (76, "I2S0_FS"),
            (77, "I2S0_DIN"),
            (78, "I2S0_DOUT"),
            (79, "I2S0_SCLK"),
            (149, "GPIO01"),
            (168, "GPIO07"),
            (194, "GPIO12"),
            (200, "GPIO11"),
            (216, "GPIO09"),
            (232, "SPI1_CS1"),
        ],
    )
}

/// Orin NX/Nano (JetPack 6) gpiochip0, 164 lines; the header lines as excerpted from the Seeed dump
/// (the real chip names every line PA.00 … PAG.07).
fn jetson_orin_lines() -> Vec<(u32, Option<String>)> {
    sparse(
        164,
        &[
            (41, "PG.06"),
            (43, "PH.00"),
            (50, "PH.07"),
            (51, "PI.00"),
            (52, "PI.01"),
            (53, "PI.02"),
            (85, "PN.01"),
            (105, "PQ.05"),
            (106, "PQ.06"),
            (112, "PR.04"),
            (113, "PR.05"),
            (122, "PY.00"),
            (123, "PY.01"),
            (124, "PY.02"),
            (125, "PY.03"),
            (126, "PY.04"),
            (133, "PZ.03"),
            (134, "PZ.04"),
            (135, "PZ.05"),
            (136, "PZ.06"),
            (137, "PZ.07"),
            (144, "PAC.06"),
        ],
    )
}

fn name(n: &str) -> LineSpec {
    LineSpec::Name(n.to_owned())
}

#[test]
fn line_lookup_on_pi4_with_old_names() {
    let lines = pi4_old_lines();
    assert_eq!(resolve_line(&lines, &name("GPIO17")), Ok(17));
    assert_eq!(resolve_line(&lines, &name("SDA1")), Ok(2));
    assert_eq!(resolve_line(&lines, &name("gpio_gclk")), Ok(4));
    assert_eq!(resolve_line(&lines, &LineSpec::Offset(4)), Ok(4));
    assert_eq!(resolve_line(&lines, &LineSpec::Offset(57)), Ok(57));
    assert_eq!(
        resolve_line(&lines, &LineSpec::Offset(58)),
        Err(LineError::OffsetOutOfRange { offset: 58, count: 58 })
    );
    // BCM 4 is GPIO4 on new kernels but GPIO_GCLK here: the error says what to do.
    let err = resolve_line(&lines, &name("GPIO4")).unwrap_err();
    assert_eq!(
        err.to_string(),
        "no line is named \"GPIO4\"; line names include \"ID_SDA\", \"ID_SCL\", \"SDA1\", \"SCL1\", \
         \"GPIO_GCLK\", \"GPIO5\", \"GPIO6\", \"SPI_CE1_N\", \"SPI_CE0_N\", \"SPI_MISO\", \"SPI_MOSI\", \
         \"SPI_SCLK\" and 46 more; if this is a Raspberry Pi, the line offset is the BCM number: use offset 4, \
         named \"GPIO_GCLK\" here (line names differ between kernels)"
    );
}

#[test]
fn line_lookup_on_pi400_and_pi5_with_new_names() {
    let pi400 = pi400_new_lines();
    assert_eq!(resolve_line(&pi400, &name("GPIO4")), Ok(4));
    assert_eq!(resolve_line(&pi400, &name("GPIO2")), Ok(2));
    assert_eq!(resolve_line(&pi400, &name("ID_SDA")), Ok(0));
    let rp1 = pi5_rp1_lines();
    assert_eq!(resolve_line(&rp1, &name("GPIO17")), Ok(17));
    assert_eq!(resolve_line(&rp1, &name("FAN_PWM")), Ok(45));
    assert_eq!(resolve_line(&rp1, &LineSpec::Offset(27)), Ok(27));
    let err = resolve_line(&rp1, &name("-")).unwrap_err();
    assert_eq!(
        err,
        LineError::Ambiguous { name: "-".into(), count: 6, offsets: "33, 37, 50, 51, 52, 53".into() }
    );
    assert_eq!(err.to_string(), "6 lines are named \"-\" (offsets 33, 37, 50, 51, 52, 53); use an offset");
}

#[test]
fn line_lookup_on_pi5_with_header_pin_names() {
    let lines = pi5_pin_named_lines();
    assert_eq!(resolve_line(&lines, &name("PIN11")), Ok(17));
    assert_eq!(resolve_line(&lines, &LineSpec::Offset(17)), Ok(17));
    let err = resolve_line(&lines, &name("GPIO17")).unwrap_err().to_string();
    assert!(
        err.ends_with("use offset 17, named \"PIN11\" here (line names differ between kernels)"),
        "{err}"
    );
}

#[test]
fn line_lookup_on_jetsons() {
    let nano = jetson_nano_lines();
    assert_eq!(resolve_line(&nano, &name("UART1_RTS")), Ok(50)); // header pin 11
    assert_eq!(resolve_line(&nano, &name("GPIO13")), Ok(38)); // header pin 33
    assert_eq!(resolve_line(&nano, &LineSpec::Offset(216)), Ok(216)); // header pin 7
    let orin = jetson_orin_lines();
    assert_eq!(resolve_line(&orin, &name("PR.04")), Ok(112)); // header pin 11
    assert_eq!(resolve_line(&orin, &name("pac.06")), Ok(144)); // header pin 7
    let err = resolve_line(&orin, &name("UART1_RTS")).unwrap_err().to_string();
    assert_eq!(
        err,
        "no line is named \"UART1_RTS\"; line names include \"PG.06\", \"PH.00\", \"PH.07\", \"PI.00\", \
         \"PI.01\", \"PI.02\", \"PN.01\", \"PQ.05\", \"PQ.06\", \"PR.04\", \"PR.05\", \"PY.00\" and 10 more; \
         or configure the line by offset"
    );
}

#[test]
fn line_lookup_on_unnamed_lines() {
    let lines = sparse(8, &[]);
    assert_eq!(resolve_line(&lines, &LineSpec::Offset(7)), Ok(7));
    let err = resolve_line(&lines, &name("GPIO3")).unwrap_err().to_string();
    assert!(
        err.starts_with("no line is named \"GPIO3\"; line names include none (the lines are unnamed"),
        "{err}"
    );
}

#[test]
fn line_spec_parses_offsets_and_names() {
    assert_eq!("17".parse::<LineSpec>().unwrap(), LineSpec::Offset(17));
    assert_eq!(" GPIO17 ".parse::<LineSpec>().unwrap(), name("GPIO17"));
    assert_eq!("PAC.06".parse::<LineSpec>().unwrap(), name("PAC.06"));
    assert_eq!("+5".parse::<LineSpec>().unwrap(), name("+5"));
    assert!(matches!("".parse::<LineSpec>(), Err(GpioError::Parse { what: "GPIO line", .. })));
    assert!(matches!("99999999999".parse::<LineSpec>(), Err(GpioError::Parse { .. })));
    assert_eq!(LineSpec::Offset(4).to_string(), "offset 4");
    assert_eq!(name("GPIO4").to_string(), "\"GPIO4\"");
}

// ---- timestamp mapping ----

const REALTIME_2024: u64 = 1_717_000_000_000_000_000;

#[test]
fn mapping_keeps_kernel_spacing_and_never_exceeds_the_read_time() {
    // Kernel timestamps on CLOCK_MONOTONIC since boot (1000 s), our clock at 5 s.
    let mut m = TimestampMapper::default();
    let boot = 1_000_000_000_000u64;
    assert_eq!(m.map(boot, ms(5000) + us(400)), ms(5000) + us(400));
    // 10 ms later, read with more latency: the first estimate is kept.
    assert_eq!(m.map(boot + 10_000_000, ms(5010) + us(900)), ms(5010) + us(400));
    // Less latency improves the estimate.
    assert_eq!(m.map(boot + 20_000_000, ms(5020) + us(100)), ms(5020) + us(100));
    assert_eq!(m.map(boot + 30_000_000, ms(5030) + us(900)), ms(5030) + us(100));
    // Never decreasing: an out-of-order timestamp maps to the last time.
    assert_eq!(m.map(boot + 15_000_000, ms(5040)), ms(5030) + us(100));
}

#[test]
fn mapping_works_with_realtime_timestamps_and_detects_steps_back() {
    let mut m = TimestampMapper::default();
    assert_eq!(m.map(REALTIME_2024, ms(100) + us(50)), ms(100) + us(50));
    assert_eq!(m.map(REALTIME_2024 + 5_000_000, ms(105) + us(70)), ms(105) + us(50));
    // The wall clock is set back an hour: timestamps drop, the estimate restarts.
    let back = REALTIME_2024 - 3_600_000_000_000;
    assert_eq!(m.map(back, ms(200) + us(30)), ms(200) + us(30));
    assert_eq!(m.map(back + 1_000_000, ms(201) + us(90)), ms(201) + us(30));
    // Set forward an hour: the smaller offset is taken at once, and times stay within the read time.
    let fwd = REALTIME_2024 + 7_200_000_000_000;
    assert_eq!(m.map(fwd, ms(300)), ms(300));
}

// ---- the edge-event loop with a scripted event source ----

/// Scripted kernel: the line's physical edges on the fake clock's timeline, readable `latency` after
/// they happen, with kernel timestamps `kernel_offset` nanoseconds off the fake clock. The reader
/// thread is not scheduled from `stall_from` to `stall_until`: a wait that would end in that window
/// returns at its end.
struct FakeEvents {
    clock: Arc<FakeClock>,
    initial_high: bool,
    edges: Vec<(Duration, bool)>,
    /// Indexes of edges the kernel dropped (they change the level but are never delivered).
    dropped: BTreeSet<usize>,
    next: usize,
    latency: Duration,
    stall_from: Duration,
    stall_until: Duration,
    kernel_offset: i128,
    /// The next this many reads fail.
    failing_reads: usize,
}

impl FakeEvents {
    fn new(clock: &Arc<FakeClock>, initial_high: bool, edges: &[(u64, bool)]) -> Self {
        Self {
            clock: Arc::clone(clock),
            initial_high,
            edges: edges.iter().map(|&(t, high)| (ms(t), high)).collect(),
            dropped: BTreeSet::new(),
            next: 0,
            latency: us(250),
            stall_from: Duration::MAX,
            stall_until: Duration::ZERO,
            kernel_offset: 0,
            failing_reads: 0,
        }
    }

    fn skip_dropped(&mut self) {
        while self.dropped.contains(&self.next) {
            self.next += 1;
        }
    }

    fn ready_at(&mut self) -> Option<Duration> {
        self.skip_dropped();
        self.edges.get(self.next).map(|&(t, _)| t + self.latency)
    }
}

impl EdgeEvents for FakeEvents {
    fn wait(&mut self, timeout: Duration) -> io::Result<Readiness> {
        let now = self.clock.now();
        let ready = self.ready_at();
        let mut end = match ready {
            Some(r) if r <= now + timeout => r.max(now),
            _ => now + timeout,
        };
        if end > self.stall_from && now < self.stall_until {
            end = end.max(self.stall_until);
        }
        self.clock.set(end);
        Ok(if ready.is_some_and(|r| r <= end) { Readiness::Readable } else { Readiness::TimedOut })
    }

    fn read(&mut self) -> Result<RawEdge, gpio_cdev::Error> {
        if self.failing_reads > 0 {
            self.failing_reads -= 1;
            return Err(io::Error::other("injected read error").into());
        }
        self.skip_dropped();
        let (at, rising) = self.edges[self.next];
        self.next += 1;
        let timestamp_ns = u64::try_from(at.as_nanos() as i128 + self.kernel_offset).unwrap();
        Ok(RawEdge { timestamp_ns, rising })
    }

    fn level(&mut self) -> Result<bool, gpio_cdev::Error> {
        let now = self.clock.now();
        Ok(self.edges.iter().rfind(|(t, _)| *t <= now).map_or(self.initial_high, |(_, high)| *high))
    }
}

const RISING_20MS: TriggerConfig = TriggerConfig { edge: Edge::Rising, active_low: false, debounce: ms(20) };

fn press(began: Duration, confirmed: Duration) -> Press {
    Press { began_at: began, confirmed_at: confirmed, active: true }
}

/// Steps a session until the fake clock reaches `until`; returns the presses.
fn step_until(session: &mut EdgeSession<FakeEvents>, clock: &FakeClock, until: Duration) -> Vec<Press> {
    let mut presses = Vec::new();
    let mut steps = 0;
    while clock.now() < until {
        presses.extend(session.step(&clock).unwrap());
        steps += 1;
        assert!(steps < 100_000, "the session does not advance");
    }
    presses
}

/// Press, bounce, release, bounce, press: two presses stamped at their first edges (plus the read
/// latency of the first event, which fixes the clock offset).
const BOUNCY: [(u64, bool); 8] = [
    (100, true),
    (101, false),
    (103, true),
    (400, false),
    (401, true),
    (402, false),
    (700, true),
    (1200, false),
];

#[test]
fn kernel_edges_with_bounce_fire_once_per_press() {
    for kernel_offset in [0i128, REALTIME_2024 as i128, -500_000_000] {
        let clock = Arc::new(FakeClock::new(ms(1000)));
        let mut events = FakeEvents::new(&clock, false, &BOUNCY.map(|(t, h)| (t + 1000, h)));
        events.kernel_offset = kernel_offset;
        let mut s = EdgeSession::new(events, RISING_20MS, &clock, None).unwrap();
        let presses = step_until(&mut s, &clock, ms(3000));
        let l = us(250);
        assert_eq!(
            presses,
            [press(ms(1100) + l, ms(1123) + l), press(ms(1700) + l, ms(1720) + l)],
            "kernel offset {kernel_offset}"
        );
    }
}

#[test]
fn a_press_read_late_still_counts_by_kernel_timestamps() {
    let clock = Arc::new(FakeClock::new(ms(0)));
    // A prompt press/release fixes the clock offset; then the reader stalls until 1100 ms while a
    // 5 ms spike (1000-1005) and a 40 ms press (1030-1070) happen.
    let edges = [(100, true), (300, false), (1000, true), (1005, false), (1030, true), (1070, false)];
    let mut events = FakeEvents::new(&clock, false, &edges);
    events.stall_from = ms(1000);
    events.stall_until = ms(1100);
    let mut s = EdgeSession::new(events, RISING_20MS, &clock, None).unwrap();
    let l = us(250);
    let presses = step_until(&mut s, &clock, ms(1500));
    assert_eq!(presses, [press(ms(100) + l, ms(120) + l), press(ms(1030) + l, ms(1050) + l)]);
}

#[test]
fn dropped_events_are_recovered_by_reading_the_level() {
    let clock = Arc::new(FakeClock::new(ms(0)));
    // The kernel dropped the release at 400 ms: without a resync the press at 900 ms would look like
    // a repeat of the level already seen and be lost.
    let edges = [(100, true), (400, false), (900, true), (1300, false)];
    let mut events = FakeEvents::new(&clock, false, &edges);
    events.dropped.insert(1);
    let mut s = EdgeSession::new(events, RISING_20MS, &clock, None).unwrap();
    let presses = step_until(&mut s, &clock, ms(2000));
    let l = us(250);
    assert_eq!(presses, [press(ms(100) + l, ms(120) + l), press(ms(900) + l, ms(920) + l)]);
}

#[test]
fn a_line_active_at_start_fires_nothing() {
    let clock = Arc::new(FakeClock::new(ms(0)));
    let events = FakeEvents::new(&clock, true, &[(500, false), (800, true)]);
    let mut s = EdgeSession::new(events, RISING_20MS, &clock, None).unwrap();
    let l = us(250);
    assert_eq!(step_until(&mut s, &clock, ms(1500)), [press(ms(800) + l, ms(820) + l)]);
}

#[test]
fn active_low_falling_edge_events() {
    let clock = Arc::new(FakeClock::new(ms(0)));
    let cfg = TriggerConfig { edge: Edge::Falling, active_low: true, debounce: ms(10) };
    // Pulled up; the button pulls the line low at 200 ms (with bounce) and releases it at 600 ms.
    let edges = [(200, false), (202, true), (204, false), (600, true)];
    let events = FakeEvents::new(&clock, true, &edges);
    let mut s = EdgeSession::new(events, cfg, &clock, None).unwrap();
    let l = us(250);
    assert_eq!(step_until(&mut s, &clock, ms(1000)), [press(ms(200) + l, ms(214) + l)]);
}

#[test]
fn a_carried_debouncer_reports_a_change_that_happened_while_the_line_was_released() {
    let clock = Arc::new(FakeClock::new(ms(0)));
    let cfg = TriggerConfig { debounce: Duration::ZERO, ..RISING_20MS };
    let old = Debouncer::new(&cfg, false, ms(0));
    clock.set(ms(50));
    // The line went high while no session existed.
    let events = FakeEvents::new(&clock, true, &[]);
    let mut s = EdgeSession::new(events, cfg, &clock, Some(old)).unwrap();
    assert_eq!(s.step(&clock).unwrap(), Some(press(ms(50), ms(50))));
    assert_eq!(s.step(&clock).unwrap(), None);
}

#[test]
fn waits_never_exceed_the_stop_check_interval_and_end_at_the_deadline() {
    struct Recorder {
        waits: Arc<Mutex<Vec<Duration>>>,
        inner: FakeEvents,
    }
    impl EdgeEvents for Recorder {
        fn wait(&mut self, timeout: Duration) -> io::Result<Readiness> {
            self.waits.lock().unwrap().push(timeout);
            self.inner.wait(timeout)
        }
        fn read(&mut self) -> Result<RawEdge, gpio_cdev::Error> {
            self.inner.read()
        }
        fn level(&mut self) -> Result<bool, gpio_cdev::Error> {
            self.inner.level()
        }
    }
    let clock = Arc::new(FakeClock::new(ms(0)));
    let waits = Arc::new(Mutex::new(Vec::new()));
    let inner = FakeEvents::new(&clock, false, &[(150, true)]);
    let mut s =
        EdgeSession::new(Recorder { waits: Arc::clone(&waits), inner }, RISING_20MS, &clock, None).unwrap();
    let mut presses = Vec::new();
    while clock.now() < ms(400) {
        presses.extend(s.step(&clock).unwrap());
    }
    assert_eq!(presses, [press(ms(150) + us(250), ms(170) + us(250))]);
    let waits = waits.lock().unwrap();
    assert!(waits.iter().all(|w| *w <= MAX_WAIT), "{waits:?}");
    // After the edge is read (at 150.25 ms), the next wait is exactly until the debounce deadline.
    assert!(waits.contains(&ms(20)), "{waits:?}");
}

#[test]
fn the_thread_loop_fires_the_latch_recovers_from_read_errors_and_stops() {
    let clock = Arc::new(FakeClock::new(ms(0)));
    let latch = TriggerLatch::new();
    let stop = AtomicBool::new(false);
    let reopened = Mutex::new(0);
    // The first session fails when it reads its first event; the re-requested one sees a press.
    let mut first = FakeEvents::new(&clock, false, &[(100, true)]);
    first.failing_reads = 1;
    let session = EdgeSession::new(first, RISING_20MS, &clock, None).unwrap();
    thread::scope(|scope| {
        let runner = scope.spawn(|| {
            let reopen = |carried: Option<Debouncer>| {
                *reopened.lock().unwrap() += 1;
                let at = clock.now().as_millis() as u64;
                let events = FakeEvents::new(&clock, false, &[(at + 100, true), (at + 300, false)]);
                EdgeSession::new(events, RISING_20MS, &clock, carried)
            };
            let backoff = Backoff::new(ms(1), ms(2));
            run_edge_trigger("test line", reopen, session, &clock, &latch, &stop, backoff);
        });
        let pending = latch.wait_timeout(Duration::from_secs(10));
        let stopped = Instant::now();
        stop.store(true, Ordering::Relaxed);
        runner.join().unwrap();
        assert!(stopped.elapsed() < ms(300));
        let p: Pending = pending.expect("the press reached the latch");
        assert_eq!((p.source, p.count), (TriggerSource::Gpio, 1));
    });
    assert_eq!(*reopened.lock().unwrap(), 1);
    assert_eq!(latch.take(), None);
}

#[test]
fn the_thread_loop_keeps_retrying_a_line_that_cannot_be_requested() {
    let clock = Arc::new(FakeClock::new(ms(0)));
    let latch = TriggerLatch::new();
    let stop = AtomicBool::new(false);
    let attempts = Mutex::new(0);
    let mut first = FakeEvents::new(&clock, false, &[(10, true)]);
    first.failing_reads = 1;
    let session = EdgeSession::new(first, RISING_20MS, &clock, None).unwrap();
    thread::scope(|scope| {
        let runner = scope.spawn(|| {
            let reopen = |_: Option<Debouncer>| -> Result<EdgeSession<FakeEvents>, gpio_cdev::Error> {
                *attempts.lock().unwrap() += 1;
                Err(io::Error::other("chip gone").into())
            };
            run_edge_trigger("test line", reopen, session, &clock, &latch, &stop, Backoff::new(ms(1), ms(4)));
        });
        let start = Instant::now();
        while *attempts.lock().unwrap() < 5 && start.elapsed() < Duration::from_secs(10) {
            thread::sleep(ms(1));
        }
        stop.store(true, Ordering::Relaxed);
        runner.join().unwrap();
    });
    assert!(*attempts.lock().unwrap() >= 5);
    assert_eq!(latch.take(), None);
}

// ---- poll(2) on a real file descriptor ----

#[test]
fn wait_readable_times_out_reports_data_and_hangups() {
    let (reader, mut writer) = io::pipe().unwrap();
    let fd = reader.as_raw_fd();
    let start = Instant::now();
    assert_eq!(wait_readable(fd, ms(30)).unwrap(), Readiness::TimedOut);
    assert!(start.elapsed() >= ms(30));
    // Sub-millisecond timeouts round up instead of spinning with 0.
    assert_eq!(wait_readable(fd, us(1)).unwrap(), Readiness::TimedOut);
    writer.write_all(b"x").unwrap();
    assert_eq!(wait_readable(fd, ms(1000)).unwrap(), Readiness::Readable);
    drop(writer);
    // Data still buffered: readable (with POLLHUP).
    assert_eq!(wait_readable(fd, ms(1000)).unwrap(), Readiness::Readable);
    let mut buf = [0u8; 1];
    io::Read::read_exact(&mut &reader, &mut buf).unwrap();
    // Hung up and empty: an error, so the loop re-requests the line.
    let err = wait_readable(fd, ms(1000)).unwrap_err();
    assert!(err.to_string().contains("revents"), "{err}");
}

// ---- the kernel wrappers, on whatever machine runs the tests ----

#[test]
fn listing_chips_works_with_or_without_gpio_hardware() {
    let chips = list_chips().unwrap();
    assert!(chips.iter().all(|c| c.path.to_string_lossy().starts_with("/dev/gpiochip")), "{chips:?}");
    assert!(chips.windows(2).all(|w| w[0].path < w[1].path));
}

#[test]
fn a_missing_chip_fails_with_the_lookup_error() {
    let err = find_chip("no-such-gpio-chip-label").unwrap_err();
    assert!(
        matches!(&err, GpioError::ChipNotFound { spec, .. } if spec == "no-such-gpio-chip-label"),
        "{err}"
    );
}

#[test]
fn a_path_that_is_not_a_gpio_chip_fails_cleanly() {
    let err = find_chip("/dev/null").unwrap_err();
    assert!(
        matches!(&err, GpioError::Cdev { context, .. } if context == "opening GPIO chip /dev/null"),
        "{err}"
    );
    // A ChipInfo that does not lead to a chip: every opener reports it, nothing is spawned.
    let bogus = chip("/dev/null", "gpiochip0", "pinctrl-bcm2711", 58);
    let is_open_error =
        |e: &GpioError| matches!(e, GpioError::Cdev { context, .. } if context.contains("/dev/null"));
    let stop = Arc::new(AtomicBool::new(false));
    let latch = Arc::new(TriggerLatch::new());
    let spawned = spawn_edge_trigger(&bogus, &LineSpec::Offset(17), RISING_20MS, "test", latch, stop);
    assert!(spawned.as_ref().is_err_and(is_open_error), "{:?}", spawned.err());
    let out = open_output(&bogus, &LineSpec::Offset(27), true, "test");
    assert!(out.as_ref().is_err_and(is_open_error), "{:?}", out.err());
    let input = open_input(&bogus, &name("GPIO17"), "test");
    assert!(input.as_ref().is_err_and(is_open_error), "{:?}", input.err());
}
