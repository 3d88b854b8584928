//! encdec-generate
