//! Raw V4L2 bindings: `v4l2-sys-mit` 0.3.0 with the output of its build script committed, one file
//! per supported target, instead of running bindgen (which needs libclang and, for cross builds, the
//! target's sysroot) on every build.
//!
//! Each file is what the published crate's `build.rs` (bindgen 0.65.1 on `wrapper.h`, i.e.
//! `<linux/videodev2.h>`) generated for that target against Debian 12's headers (linux-libc-dev 6.1,
//! glibc 2.36; the cross targets with `--sysroot=/usr/<triple>`). `regenerate.sh` reproduces them.
//! Struct layouts differ between targets (`timeval` and pointers in `v4l2_buffer`, for example), so a
//! target without its own file is refused at compile time rather than given another target's layout.
//! bindgen's layout tests (`bindgen_test_layout_*`, the sizes, alignments and field offsets clang
//! computed from the C headers) are kept: `cargo test -p v4l2-sys-mit --target <t>` checks them
//! against the layouts rustc gives the Rust definitions, on each target (CI runs them under qemu).
#![allow(clippy::all)]
#![allow(deref_nullptr)]
#![allow(non_camel_case_types)]
#![allow(non_snake_case)]
#![allow(non_upper_case_globals)]
#![allow(unknown_lints)]

#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
include!("bindings/x86_64.rs");

#[cfg(all(target_os = "linux", target_arch = "aarch64"))]
include!("bindings/aarch64.rs");

#[cfg(all(target_os = "linux", target_arch = "arm", target_pointer_width = "32"))]
include!("bindings/armv7.rs");

#[cfg(not(all(
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64", target_arch = "arm")
)))]
compile_error!(
    "v4l2-sys-mit (third_party): no committed V4L2 bindings for this target; \
     generate them with third_party/v4l2-sys-mit/regenerate.sh <target triple>"
);
