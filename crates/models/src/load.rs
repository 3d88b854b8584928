//! Building a runnable model from a checkpoint: the one place that maps a
//! `model_type` to its architecture file.

use std::path::Path;
use std::sync::Arc;

use encdec_core::{Backend, DType, Device};
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
    let mut report = validate_checkpoint(cfg, ckpt)?;
    // The CLI tells the user (weight_dtype_for); a library caller finds it here.
    let (dtype, note) = weight_dtype_for(cfg, backend.device(), dtype);
    report.warnings.extend(note);
    let model: Box<dyn Seq2SeqModel> = match cfg {
        ModelConfig::T5(c) => Box::new(T5Model::load(c, ckpt, backend, dtype)?),
        ModelConfig::Bart(c) => Box::new(BartModel::load(c, ckpt, backend, dtype)?),
    };
    Ok((model, report))
}

/// The weight dtype a model of `cfg` loads in on `device` when `requested`.
///
/// T5-family activations exceed f16's range (65504) in real checkpoints (the FFN
/// outputs of T5 v1.1 / mT5 / Flan-T5 are the known case, and every engine that runs
/// them in f16 overflows). The CPU keeps activations in f32 whatever the weights, but
/// the GPU's tensor-core GEMM rounds activations to the weight dtype, so there a T5
/// model asked for in f16 loads as bf16 (same range as f32) and the note says so.
pub fn weight_dtype_for(
    cfg: &ModelConfig,
    device: Device,
    requested: DType,
) -> (DType, Option<String>) {
    let on_gpu = matches!(device, Device::Cuda(_));
    if on_gpu && requested == DType::F16 && matches!(cfg, ModelConfig::T5(_)) {
        return (
            DType::BF16,
            Some(
                "T5-family activations overflow f16 (max 65504) on a GPU, where activations \
                 are rounded to the weight dtype for the tensor cores: loading bf16 weights \
                 instead of f16"
                    .to_string(),
            ),
        );
    }
    (requested, None)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalogue;

    #[test]
    fn t5_on_a_gpu_loads_bf16_when_f16_is_asked_for() {
        let t5 = catalogue::get("flan-t5-small").expect("catalogue");
        let bart = catalogue::get("bart-large-cnn").expect("catalogue");
        let gpu = Device::Cuda(0);
        let (dt, note) = weight_dtype_for(&t5, gpu, DType::F16);
        assert_eq!(dt, DType::BF16);
        assert!(note.expect("a note").contains("overflow f16"));
        // Nothing else changes: f16 on the CPU (f32 activations), other dtypes,
        // and the BART family (activations within range).
        assert_eq!(
            weight_dtype_for(&t5, Device::Cpu, DType::F16),
            (DType::F16, None)
        );
        assert_eq!(weight_dtype_for(&t5, gpu, DType::F32), (DType::F32, None));
        assert_eq!(weight_dtype_for(&t5, gpu, DType::BF16), (DType::BF16, None));
        assert_eq!(weight_dtype_for(&bart, gpu, DType::F16), (DType::F16, None));
    }
}
