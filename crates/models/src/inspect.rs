//! Checking a checkpoint against its config without loading any data, for
//! `encdec info --model DIR` and before a model is built.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::config::{ModelConfig, ModelInfo};
use crate::error::{ModelError, Result};
use crate::safetensors::Checkpoint;

/// What [`validate_checkpoint`] found besides errors.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ValidationReport {
    /// The safetensors files (shards in index order).
    pub files: Vec<PathBuf>,
    /// Tensors stored.
    pub tensors: usize,
    /// Bytes of tensor data stored.
    pub stored_bytes: u64,
    /// Stored dtype (`"F32"`, `"BF16"`, ...) -> number of tensors.
    pub stored_dtypes: BTreeMap<String, usize>,
    /// Expected names found under an alternate HF spelling: (expected, stored).
    pub aliased: Vec<(String, String)>,
    /// Unexpected extra tensors and other things worth a look; never fatal.
    pub warnings: Vec<String>,
    /// config.json says `lm_head` is tied but the checkpoint stores its own
    /// `lm_head.weight` (flan-t5 / mT5 saved by transformers 5, which always writes
    /// `tie_word_embeddings: true`); the model then has one more `[vocab, d_model]`
    /// parameter than the config alone implies.
    pub stored_lm_head: bool,
}

/// Checks every tensor `cfg` implies against `ckpt`'s headers: a missing required
/// tensor is an error naming it (and how many more are missing), a wrong shape an
/// error with both shapes, an unloadable stored dtype an error; extra tensors are
/// listed as warnings.
pub fn validate_checkpoint(cfg: &ModelConfig, ckpt: &Checkpoint) -> Result<ValidationReport> {
    let mut report = ValidationReport {
        files: ckpt.files().into_iter().map(Path::to_path_buf).collect(),
        tensors: ckpt.len(),
        ..Default::default()
    };
    for name in ckpt.names() {
        let info = ckpt.info(name)?;
        report.stored_bytes += info.byte_len() as u64;
        *report
            .stored_dtypes
            .entry(info.dtype.to_string())
            .or_default() += 1;
    }
    // Presence first: a checkpoint of another architecture should read as "missing
    // tensors", not as a shape mismatch on the one name both happen to share.
    let specs = cfg.tensor_specs();
    let missing: Vec<&str> = specs
        .iter()
        .filter(|s| s.required && !ckpt.has(&s.name))
        .map(|s| s.name.as_str())
        .collect();
    if let Some(first) = missing.first() {
        let note = match missing.len() {
            1 => String::new(),
            n => format!(
                " ({} more missing: {}{}); is this checkpoint a {}?",
                n - 1,
                missing[1..]
                    .iter()
                    .take(3)
                    .copied()
                    .collect::<Vec<_>>()
                    .join(", "),
                if n > 4 { ", ..." } else { "" },
                cfg.architecture()
            ),
        };
        return Err(ModelError::MissingTensor {
            name: first.to_string(),
            searched: ckpt.searched(),
            note,
        });
    }
    let mut used: BTreeSet<&str> = BTreeSet::new();
    for spec in specs {
        let Some(stored) = ckpt.resolve(&spec.name) else {
            continue;
        };
        used.insert(stored);
        if stored != spec.name {
            report.aliased.push((spec.name.clone(), stored.to_string()));
        }
        let info = ckpt.info(stored)?;
        if info.shape != spec.shape {
            return Err(ModelError::ShapeMismatch {
                name: stored.to_string(),
                file: ckpt.file_of(stored)?.to_path_buf(),
                expected: spec.shape,
                actual: info.shape.clone(),
            });
        }
        if !info.dtype.is_loadable() {
            return Err(ModelError::UnsupportedDType {
                path: ckpt.file_of(stored)?.to_path_buf(),
                tensor: stored.to_string(),
                dtype: info.dtype.to_string(),
                hint: " (loadable: F32, F16, BF16)".into(),
            });
        }
        if spec.name == "lm_head.weight" && !spec.required {
            report.stored_lm_head = true;
            report.warnings.push(format!(
                "config.json ties lm_head to the token embeddings but the checkpoint also stores \
                 {stored}; use it (a no-op if it equals the embeddings; if it differs, transformers \
                 unties them too)"
            ));
        }
    }
    let extras: Vec<&str> = ckpt
        .names()
        .into_iter()
        .filter(|n| !used.contains(n))
        .collect();
    for name in &extras {
        let info = ckpt.info(name)?;
        report.warnings.push(format!(
            "unexpected tensor {name} ({} {:?}) is not used by {}",
            info.dtype,
            info.shape,
            cfg.architecture()
        ));
    }
    Ok(report)
}

/// Reads `<dir>/config.json` and the safetensors headers (no tensor data) and
/// validates them against each other. The parameter count and sizes include an
/// `lm_head.weight` the checkpoint stores although config.json ties it.
pub fn inspect_dir(dir: impl AsRef<Path>) -> Result<(ModelInfo, ValidationReport)> {
    let dir = dir.as_ref();
    let cfg = ModelConfig::from_dir(dir)?;
    let ckpt = Checkpoint::open(dir)?;
    let report = validate_checkpoint(&cfg, &ckpt)?;
    let mut info = cfg.info();
    if report.stored_lm_head {
        if let Some(spec) = cfg
            .tensor_specs()
            .into_iter()
            .find(|s| s.name == "lm_head.weight")
        {
            info.params += spec.elem_count();
            info.bytes_f32 += spec.bytes(encdec_core::DType::F32);
            info.bytes_f16 += spec.bytes(encdec_core::DType::F16);
            info.bytes_int8 += spec.bytes(encdec_core::DType::I8);
        }
    }
    Ok((info, report))
}
