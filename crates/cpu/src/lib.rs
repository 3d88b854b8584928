//! encdec-cpu
