//! Helpers shared by the CLI integration tests.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Output;

/// `tests/fixtures/<name>`: the tiny trained checkpoints.
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// The run failed with one line on stderr that contains every needle, and no panic.
pub fn assert_one_line_error(out: &Output, needles: &[&str]) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "expected failure, stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "panic: {stderr}");
    assert_eq!(
        stderr.trim_end().lines().count(),
        1,
        "not one line: {stderr}"
    );
    for n in needles {
        assert!(stderr.contains(n), "{n:?} not in: {stderr}");
    }
}

/// Simple English the copy-trained fixtures handle.
pub const SENTENCES: &[&str] = &[
    "the small house",
    "the large house",
    "Every child should learn to read a good book.",
    "the dog ran home",
    "the people of the small town walk along the river.",
    "yes",
    "the water is warm and the light is good.",
];
