//! Candle-style path building over a [`Checkpoint`].
//!
//! `vb.pp("encoder").pp("block").pp(0).get("layer.0.layer_norm.weight", &[d], DType::F32)`
//! loads `encoder.block.0.layer.0.layer_norm.weight`, checks its shape against the
//! one the config implies, and names both shapes when they differ.

use std::fmt::Display;

use encdec_core::{DType, Tensor};

use crate::error::{ModelError, Result};
use crate::safetensors::Checkpoint;

/// A checkpoint plus a dotted name prefix.
#[derive(Debug, Clone)]
pub struct VarBuilder<'a> {
    ckpt: &'a Checkpoint,
    prefix: String,
}

impl<'a> VarBuilder<'a> {
    pub fn new(ckpt: &'a Checkpoint) -> Self {
        VarBuilder {
            ckpt,
            prefix: String::new(),
        }
    }

    /// A builder whose names are `<prefix>.<s>` (`pp` = push prefix).
    pub fn pp(&self, s: impl Display) -> Self {
        VarBuilder {
            ckpt: self.ckpt,
            prefix: self.path(&s.to_string()),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn checkpoint(&self) -> &'a Checkpoint {
        self.ckpt
    }

    /// The full name of `name` under this prefix.
    pub fn path(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.prefix)
        }
    }

    /// Whether the checkpoint has `name` (alternate HF spellings included, see
    /// [`Checkpoint::resolve`]).
    pub fn has(&self, name: &str) -> bool {
        self.ckpt.has(&self.path(name))
    }

    /// The stored shape of `name`.
    pub fn shape(&self, name: &str) -> Result<&'a [usize]> {
        self.ckpt.shape(&self.path(name))
    }

    /// Loads `name` as `dtype` after checking its shape is `expected`.
    pub fn get(&self, name: &str, expected: &[usize], dtype: DType) -> Result<Tensor> {
        let full = self.path(name);
        self.check_shape(&full, expected)?;
        self.ckpt.load(&full, dtype)
    }

    /// Like [`VarBuilder::get`], but `Ok(None)` when the tensor is absent.
    pub fn get_opt(&self, name: &str, expected: &[usize], dtype: DType) -> Result<Option<Tensor>> {
        if self.has(name) {
            self.get(name, expected, dtype).map(Some)
        } else {
            Ok(None)
        }
    }

    fn check_shape(&self, full: &str, expected: &[usize]) -> Result<()> {
        let actual = self.ckpt.shape(full)?;
        if actual != expected {
            return Err(ModelError::ShapeMismatch {
                name: full.to_string(),
                file: self.ckpt.file_of(full)?.to_path_buf(),
                expected: expected.to_vec(),
                actual: actual.to_vec(),
            });
        }
        Ok(())
    }
}
