//! encdec-core
