//! The daemon's configuration parser and checker on arbitrary text: a problem list or a
//! configuration, never a panic (numeric ranges, paths, tables of the wrong type).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let Ok(text) = std::str::from_utf8(input) else { return };
    let _ = camera_classifier::config::Config::parse(text, std::path::Path::new("/nonexistent/fuzz/config.toml"));
});
