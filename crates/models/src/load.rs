//! Building a runnable model from a checkpoint: the one place that maps a
//! `model_type` to its architecture file.

use std::path::Path;
use std::sync::Arc;

use encdec_core::{Backend, DType};
use encdec_generate::Seq2SeqModel;

use crate::bart::BartModel;
use crate::config::ModelConfig;
use crate::error::Result;
use crate::inspect::{validate_checkpoint, ValidationReport};
use crate::safetensors::Checkpoint;
use crate::t5::T5Model;

/// A model ready to generate, with what validation noticed on the way.
pub struct LoadedModel {
    pub config: ModelConfig,
    pub model: Box<dyn Seq2SeqModel>,
    pub report: ValidationReport,
}

/// Builds the model of `cfg` from `ckpt` with weights in `dtype`, after checking
/// every tensor name and shape against the config (so a bad checkpoint fails
/// before anything large is loaded).
pub fn build_model(
    cfg: &ModelConfig,
    ckpt: &Checkpoint,
    backend: Arc<dyn Backend>,
    dtype: DType,
) -> Result<(Box<dyn Seq2SeqModel>, ValidationReport)> {
    let report = validate_checkpoint(cfg, ckpt)?;
    let model: Box<dyn Seq2SeqModel> = match cfg {
        ModelConfig::T5(c) => Box::new(T5Model::load(c, ckpt, backend, dtype)?),
        ModelConfig::Bart(c) => Box::new(BartModel::load(c, ckpt, backend, dtype)?),
    };
    Ok((model, report))
}

/// Opens `dir` (config.json + safetensors) and builds its model.
pub fn load_model(dir: &Path, backend: Arc<dyn Backend>, dtype: DType) -> Result<LoadedModel> {
    let config = ModelConfig::from_dir(dir)?;
    let ckpt = Checkpoint::open(dir)?;
    let (model, report) = build_model(&config, &ckpt, backend, dtype)?;
    Ok(LoadedModel {
        config,
        model,
        report,
    })
}

/// A random-weight model with the exact shapes of `cfg` (for benchmarks).
pub fn random_model(
    cfg: &ModelConfig,
    seed: u64,
    backend: Arc<dyn Backend>,
    dtype: DType,
) -> Result<Box<dyn Seq2SeqModel>> {
    let ckpt = Checkpoint::random(cfg, seed);
    Ok(build_model(cfg, &ckpt, backend, dtype)?.0)
}
