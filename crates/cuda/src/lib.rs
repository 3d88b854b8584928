//! encdec-cuda
