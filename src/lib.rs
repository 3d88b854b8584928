//! encdec: facade over the workspace crates.
