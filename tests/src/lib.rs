//! Helpers for the end-to-end tests.
pub fn placeholder() {}
