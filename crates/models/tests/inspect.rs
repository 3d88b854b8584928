//! `inspect_dir`: a config and a checkpoint validated against each other from the
//! headers alone.

use std::path::Path;

use encdec_core::Tensor;
use encdec_models::safetensors::save;
use encdec_models::{inspect_dir, ModelConfig, ModelError};

const TINY_T5: &str = r#"{"model_type": "t5", "d_model": 8, "d_kv": 4, "num_heads": 2, "d_ff": 16,
    "num_layers": 2, "num_decoder_layers": 1, "vocab_size": 11, "relative_attention_num_buckets": 4,
    "feed_forward_proj": "gated-gelu", "tie_word_embeddings": false}"#;

const TINY_BART: &str = r#"{"model_type": "mbart", "d_model": 8, "encoder_attention_heads": 2,
    "decoder_attention_heads": 2, "encoder_layers": 1, "decoder_layers": 2, "encoder_ffn_dim": 12,
    "decoder_ffn_dim": 12, "vocab_size": 10, "max_position_embeddings": 6}"#;

/// Writes config.json and a checkpoint holding `cfg`'s required tensors, renamed by
/// `rename` (None drops a tensor), plus `extra` tensors.
fn write_model(
    dir: &Path,
    json: &str,
    rename: impl Fn(&str) -> Option<String>,
    extra: &[(&str, Vec<usize>)],
) {
    std::fs::write(dir.join("config.json"), json).unwrap();
    let cfg = ModelConfig::from_json_str(json).unwrap();
    let mut tensors: Vec<(String, Tensor)> = Vec::new();
    for (name, shape) in cfg.expected_tensors() {
        if let Some(n) = rename(&name) {
            tensors.push((n, Tensor::zeros(shape, encdec_core::DType::F16)));
        }
    }
    for (n, shape) in extra {
        tensors.push((
            n.to_string(),
            Tensor::zeros(shape.clone(), encdec_core::DType::F32),
        ));
    }
    let refs: Vec<(&str, &Tensor)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    save(dir.join("model.safetensors"), &refs).unwrap();
}

#[test]
fn a_matching_checkpoint_validates() {
    let d = tempfile::tempdir().unwrap();
    write_model(d.path(), TINY_T5, |n| Some(n.to_string()), &[]);
    let (info, report) = inspect_dir(d.path()).unwrap();
    assert_eq!(info.model_type, "t5");
    assert_eq!(
        (
            info.encoder_layers,
            info.decoder_layers,
            info.d_model,
            info.heads
        ),
        (2, 1, 8, 2)
    );
    assert_eq!(
        report.tensors,
        ModelConfig::from_json_str(TINY_T5)
            .unwrap()
            .expected_tensors()
            .len()
    );
    assert_eq!(report.stored_dtypes.get("F16"), Some(&report.tensors));
    assert_eq!(report.stored_bytes, 2 * info.params);
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);
}

#[test]
fn extra_tensors_are_warnings_and_optional_ones_are_checked() {
    let d = tempfile::tempdir().unwrap();
    write_model(
        d.path(),
        TINY_BART,
        |n| Some(n.to_string()),
        &[
            ("final_logits_bias", vec![1, 10]),
            ("model.encoder.version", vec![1]),
        ],
    );
    let (_, report) = inspect_dir(d.path()).unwrap();
    assert_eq!(report.warnings.len(), 1, "{:?}", report.warnings);
    assert!(report.warnings[0].contains("model.encoder.version"));

    let d = tempfile::tempdir().unwrap();
    write_model(
        d.path(),
        TINY_BART,
        |n| Some(n.to_string()),
        &[("final_logits_bias", vec![1, 9])],
    );
    let e = inspect_dir(d.path()).unwrap_err().to_string();
    assert!(
        e.contains("final_logits_bias") && e.contains("[1, 10]") && e.contains("[1, 9]"),
        "{e}"
    );
}

#[test]
fn hf_prefix_variants_are_accepted() {
    // Saved from MBartModel: no `model.` prefix, embeddings under encoder.embed_tokens.
    let d = tempfile::tempdir().unwrap();
    write_model(
        d.path(),
        TINY_BART,
        |n| {
            let n = n.strip_prefix("model.").unwrap_or(n);
            Some(if n == "shared.weight" {
                "encoder.embed_tokens.weight".into()
            } else {
                n.to_string()
            })
        },
        &[],
    );
    let (_, report) = inspect_dir(d.path()).unwrap();
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);
    assert!(report.aliased.contains(&(
        "model.shared.weight".into(),
        "encoder.embed_tokens.weight".into()
    )));
}

#[test]
fn a_missing_tensor_is_named() {
    let d = tempfile::tempdir().unwrap();
    let gone = "decoder.block.0.layer.2.DenseReluDense.wi_1.weight";
    write_model(
        d.path(),
        TINY_T5,
        |n| (n != gone).then(|| n.to_string()),
        &[],
    );
    let e = inspect_dir(d.path()).unwrap_err();
    assert!(matches!(e, ModelError::MissingTensor { .. }));
    let e = e.to_string();
    assert!(e.contains(gone) && e.contains("model.safetensors"), "{e}");

    // A checkpoint of another architecture: the first missing tensor plus a count.
    let d = tempfile::tempdir().unwrap();
    write_model(d.path(), TINY_BART, |n| Some(n.to_string()), &[]);
    std::fs::write(d.path().join("config.json"), TINY_T5).unwrap();
    let e = inspect_dir(d.path()).unwrap_err().to_string();
    assert!(
        e.contains("shared.weight") || e.contains("encoder.block.0"),
        "{e}"
    );
    assert!(
        e.contains("more missing") && e.contains("T5ForConditionalGeneration"),
        "{e}"
    );
}

#[test]
fn a_wrong_shape_names_both_shapes() {
    let d = tempfile::tempdir().unwrap();
    let json = TINY_T5.replace("\"d_ff\": 16", "\"d_ff\": 32");
    write_model(d.path(), TINY_T5, |n| Some(n.to_string()), &[]);
    std::fs::write(d.path().join("config.json"), json).unwrap();
    let e = inspect_dir(d.path()).unwrap_err();
    assert!(matches!(e, ModelError::ShapeMismatch { .. }));
    let e = e.to_string();
    assert!(
        e.contains("DenseReluDense") && e.contains("[32, 8]") && e.contains("[16, 8]"),
        "{e}"
    );
}

#[test]
fn tied_config_with_a_stored_lm_head_is_noted() {
    let d = tempfile::tempdir().unwrap();
    let json = TINY_T5.replace("false", "true");
    write_model(
        d.path(),
        &json,
        |n| Some(n.to_string()),
        &[("lm_head.weight", vec![11, 8])],
    );
    let (_, report) = inspect_dir(d.path()).unwrap();
    assert!(
        report.warnings.iter().any(|w| w.contains("lm_head.weight")),
        "{:?}",
        report.warnings
    );
}
