//! The CPU guard of the 32-bit ARM build: it needs ARMv7 with NEON (Raspberry Pi 2 or newer).
//! The armhf package refuses to install elsewhere (its `preinst`); this check makes a binary
//! copied to such a board say so instead of dying on an illegal instruction later. (Rust's
//! armv7 target does not assume NEON, and tract picks its NEON kernels at run time, so the
//! process usually reaches `main` on an ARMv6 board; the check cannot help if it does not.)

/// Why the CPU described by `cpuinfo` (the text of `/proc/cpuinfo`) cannot run the 32-bit ARM
/// build, or `None` when it can. The ARM11 of the Pi Zero and Pi 1 reports "CPU architecture: 7"
/// (the CPUID scheme), so the decision is on NEON in `Features` (`asimd` on a 64-bit kernel).
pub fn arm32_unsupported(cpuinfo: &str) -> Option<String> {
    let features: Vec<&str> = cpuinfo
        .lines()
        .filter_map(|l| l.split_once(':').filter(|(k, _)| k.trim() == "Features").map(|(_, v)| v))
        .flat_map(str::split_whitespace)
        .collect();
    if features.iter().any(|f| *f == "neon" || *f == "asimd") {
        return None;
    }
    let model = cpuinfo
        .lines()
        .find_map(|l| l.split_once(':').filter(|(k, _)| k.trim() == "model name").map(|(_, v)| v.trim()))
        .unwrap_or("this CPU");
    Some(format!(
        "{model} has no NEON (Features: {}): this build needs an ARMv7 CPU with NEON, a Raspberry Pi 2 or newer",
        if features.is_empty() { "none listed".to_string() } else { features.join(" ") }
    ))
}

/// On 32-bit ARM, [`arm32_unsupported`] for this machine; elsewhere always `None`.
pub fn unsupported_cpu() -> Option<String> {
    if cfg!(target_arch = "arm") {
        // Unreadable (no procfs): nothing to say.
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").ok()?;
        return arm32_unsupported(&cpuinfo);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const PI_ZERO: &str = "processor\t: 0\nmodel name\t: ARMv6-compatible processor rev 7 (v6l)\n\
        BogoMIPS\t: 697.95\nFeatures\t: half thumb fastmult vfp edsp java tls \nCPU implementer\t: 0x41\n\
        CPU architecture: 7\nCPU variant\t: 0x0\nCPU part\t: 0xb76\n\nHardware\t: BCM2835\n";
    const PI_2: &str = "processor\t: 0\nmodel name\t: ARMv7 Processor rev 5 (v7l)\nBogoMIPS\t: 38.40\n\
        Features\t: half thumb fastmult vfp edsp neon vfpv3 tls vfpv4 idiva idivt vfpd32 lpae evtstrm \n\
        CPU implementer\t: 0x41\nCPU architecture: 7\nCPU part\t: 0xc07\n";
    const PI_4_ARM64_KERNEL: &str = "processor\t: 0\nBogoMIPS\t: 108.00\n\
        Features\t: fp asimd evtstrm crc32 cpuid\nCPU implementer\t: 0x41\nCPU architecture: 8\n";

    #[test]
    fn the_pi_zero_is_refused_by_name_and_newer_boards_pass() {
        let why = arm32_unsupported(PI_ZERO).expect("ARMv6 must be refused");
        assert!(
            why.contains("ARMv6-compatible processor") && why.contains("Raspberry Pi 2 or newer"),
            "{why}"
        );
        assert!(why.contains("half thumb fastmult vfp edsp java tls"), "{why}");
        assert_eq!(arm32_unsupported(PI_2), None);
        assert_eq!(arm32_unsupported(PI_4_ARM64_KERNEL), None);
        assert!(arm32_unsupported("").unwrap().contains("none listed"));
    }
}
