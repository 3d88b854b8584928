//! encdec-models
