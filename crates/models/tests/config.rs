//! config.json parsing: the real configs in ../shared/data/configs, the catalogue's
//! agreement with them, derived architecture facts, and the errors for configs we
//! cannot run.

use std::path::PathBuf;

use encdec_core::{Activation, NormKind};
use encdec_models::{catalogue, ModelConfig, ModelError, PositionKind};

fn shared_configs() -> Option<PathBuf> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/configs");
    if p.is_dir() {
        Some(p)
    } else {
        println!("SKIP: {} is absent", p.display());
        None
    }
}

fn parse(json: &str) -> ModelConfig {
    ModelConfig::from_json_str(json).unwrap_or_else(|e| panic!("{e}"))
}

fn err(json: &str) -> String {
    match ModelConfig::from_json_str(json) {
        Ok(c) => panic!("expected an error, parsed {c:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn catalogue_matches_the_real_configs() {
    let Some(dir) = shared_configs() else { return };
    for name in ["t5-small", "bart-large-cnn"] {
        let path = dir.join(name).join("config.json");
        let real: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let ours: serde_json::Value =
            serde_json::from_str(catalogue::entry(name).unwrap().json).unwrap();
        assert_eq!(
            ours,
            real,
            "catalogue/{name}.json differs from {}",
            path.display()
        );
        let from_dir = ModelConfig::from_dir(dir.join(name)).unwrap();
        let from_cat = catalogue::get(name).unwrap();
        assert_eq!(from_dir.info(), from_cat.info());
    }
}

#[test]
fn real_t5_small_config() {
    let Some(dir) = shared_configs() else { return };
    let cfg = ModelConfig::from_dir(dir.join("t5-small")).unwrap();
    assert_eq!(cfg.model_type(), "t5");
    assert_eq!(cfg.num_parameters(), 60_506_624);
    assert_eq!(cfg.decoder_start_token_id(), Some(0));
    assert_eq!(cfg.eos_token_ids(), vec![1]);
    assert_eq!(cfg.pad_token_id(), Some(0));
    let t5 = cfg.as_t5().unwrap();
    assert_eq!(
        (t5.d_model, t5.d_kv, t5.d_ff, t5.num_heads),
        (512, 64, 2048, 8)
    );
    assert_eq!((t5.num_layers, t5.num_decoder_layers), (6, 6));
    assert_eq!(t5.relative_attention_max_distance, 128);
    let a = t5.arch();
    assert_eq!(a.activation, Activation::Relu);
    assert!(!a.gated_ffn && a.tied_lm_head && a.scale_decoder_outputs);
    assert_eq!(a.norm, NormKind::RmsNorm);
    assert_eq!(a.norm_eps, 1e-6);
    let info = cfg.info();
    assert_eq!(info.architecture, "T5ForConditionalGeneration");
    assert_eq!(info.bytes_f32, 4 * 60_506_624);
    assert_eq!(info.bytes_f16, 2 * 60_506_624);
    assert!(info.bytes_int8 < info.bytes_f16 && info.bytes_int8 > 60_506_624);
}

#[test]
fn real_bart_large_cnn_config() {
    let Some(dir) = shared_configs() else { return };
    let cfg = ModelConfig::from_dir(dir.join("bart-large-cnn")).unwrap();
    assert_eq!(cfg.num_parameters(), 406_290_432);
    assert_eq!(cfg.forced_bos_token_id(), Some(0));
    assert_eq!(cfg.forced_eos_token_id(), Some(2));
    assert_eq!(cfg.decoder_start_token_id(), Some(2));
    assert_eq!(cfg.bos_token_id(), Some(0));
    let a = cfg.as_bart().unwrap().arch();
    assert!(!a.pre_norm && a.layernorm_embedding && !a.final_layer_norm && a.final_logits_bias);
    assert_eq!(a.positions, PositionKind::Learned { offset: 2 });
    assert_eq!(a.embed_scale, 1.0);
    assert_eq!(a.activation, Activation::Gelu);
    assert!(a.tied_lm_head && a.shared_embeddings);
    assert_eq!(a.target_vocab_size, 50264);
    let names: Vec<String> = cfg.expected_tensors().into_iter().map(|(n, _)| n).collect();
    assert!(names.contains(&"model.encoder.embed_positions.weight".to_string()));
    assert!(!names.contains(&"lm_head.weight".to_string()));
}

#[test]
fn family_facts_per_model_type() {
    let flan = catalogue::get("flan-t5-small").unwrap();
    let a = flan.as_t5().unwrap().arch();
    assert_eq!(a.activation, Activation::GeluTanh);
    assert!(a.gated_ffn && !a.tied_lm_head && !a.scale_decoder_outputs);
    assert!(flan
        .expected_tensors()
        .iter()
        .any(|(n, _)| n == "lm_head.weight"));

    let mt5 = catalogue::get("mt5-small").unwrap();
    let a = mt5.as_t5().unwrap().arch();
    assert!(a.gated_ffn && !a.tied_lm_head && !a.scale_decoder_outputs);
    assert_eq!(mt5.info().architecture, "MT5ForConditionalGeneration");

    let t5_3b = catalogue::get("t5-3b").unwrap();
    assert_eq!(t5_3b.as_t5().unwrap().arch().inner_dim, 4096);

    let mbart = catalogue::get("mbart-large-50").unwrap();
    let a = mbart.as_bart().unwrap().arch();
    assert!(a.pre_norm && a.layernorm_embedding && a.final_layer_norm && a.final_logits_bias);
    assert_eq!(a.embed_scale, 32.0);

    let peg = catalogue::get("pegasus-cnn_dailymail").unwrap();
    let a = peg.as_bart().unwrap().arch();
    assert!(a.pre_norm && !a.layernorm_embedding && a.final_layer_norm);
    assert_eq!(a.positions, PositionKind::Sinusoidal);
    assert_eq!(a.activation, Activation::Relu);
    assert_eq!(peg.decoder_start_token_id(), Some(0));
    // Sinusoidal tables are parameters HF counts but checkpoints may omit.
    assert!(peg
        .optional_tensors()
        .iter()
        .any(|(n, _)| n == "model.encoder.embed_positions.weight"));

    let marian = catalogue::get("opus-mt-en-de").unwrap();
    let a = marian.as_bart().unwrap().arch();
    assert!(!a.pre_norm && !a.layernorm_embedding && !a.final_layer_norm && a.final_logits_bias);
    assert_eq!(a.activation, Activation::Silu);
    assert!((a.embed_scale - 512f32.sqrt()).abs() < 1e-6);
    assert_eq!(marian.decoder_start_token_id(), Some(58100));
    assert_eq!(marian.pad_token_id(), Some(58100));

    for name in ["m2m100_418M", "nllb-200-distilled-600M"] {
        let c = catalogue::get(name).unwrap();
        let a = c.as_bart().unwrap().arch();
        assert!(a.pre_norm && !a.layernorm_embedding && a.final_layer_norm && !a.final_logits_bias);
        assert_eq!(
            a.positions,
            PositionKind::SinusoidalFairseq { padding_idx: 1 }
        );
        assert_eq!(a.activation, Activation::Relu);
        assert_eq!(a.embed_scale, 32.0);
        assert_eq!(c.model_type(), "m2m_100");
        assert_eq!(c.forced_eos_token_id(), None);
    }
}

#[test]
fn model_type_defaults_are_hf_defaults() {
    let mt5 = parse(r#"{"model_type": "mt5"}"#);
    let c = mt5.as_t5().unwrap();
    assert_eq!(
        (
            c.vocab_size,
            c.d_ff,
            c.num_layers,
            c.num_decoder_layers,
            c.num_heads
        ),
        (250112, 1024, 8, 8, 6)
    );
    assert_eq!(c.feed_forward_proj, "gated-gelu");
    assert_eq!(mt5.decoder_start_token_id(), Some(0));

    let t5 = parse(r#"{"model_type": "t5", "num_layers": 3}"#);
    assert_eq!(t5.as_t5().unwrap().num_decoder_layers, 3);
    // T5 without decoder_start_token_id starts with pad.
    assert_eq!(t5.decoder_start_token_id(), Some(0));

    let m = parse(r#"{"model_type": "marian"}"#);
    assert_eq!(m.as_bart().unwrap().vocab_size, 58101);
    assert_eq!(
        (m.pad_token_id(), m.eos_token_ids(), m.bos_token_id()),
        (Some(58100), vec![0], None)
    );
    let p = parse(r#"{"model_type": "pegasus"}"#);
    assert_eq!(
        (p.pad_token_id(), p.eos_token_ids(), p.forced_eos_token_id()),
        (Some(0), vec![1], Some(1))
    );
    let mb = parse(r#"{"model_type": "mbart"}"#);
    assert_eq!(mb.decoder_start_token_id(), None);
    let n = parse(r#"{"model_type": "m2m_100"}"#);
    let b = n.as_bart().unwrap();
    assert!(b.scale_embedding && b.activation_function == "relu" && b.vocab_size == 128112);

    // Explicit nulls are kept as None; list-valued eos ids are accepted.
    let c = parse(r#"{"model_type": "bart", "forced_eos_token_id": null, "eos_token_id": [2, 3]}"#);
    assert_eq!(c.forced_eos_token_id(), None);
    assert_eq!(c.eos_token_ids(), vec![2, 3]);

    // HF aliases (attribute_map).
    let c = parse(
        r#"{"model_type": "bart", "num_hidden_layers": 3, "hidden_size": 64, "num_attention_heads": 4}"#,
    );
    let b = c.as_bart().unwrap();
    assert_eq!(
        (b.encoder_layers, b.d_model, b.encoder_attention_heads),
        (3, 64, 4)
    );
}

#[test]
fn stored_dense_act_fn_overrides_feed_forward_proj() {
    let c = parse(
        r#"{"model_type": "t5", "feed_forward_proj": "gated-gelu", "dense_act_fn": "relu", "is_gated_act": false}"#,
    );
    let a = c.as_t5().unwrap().arch();
    assert_eq!(a.activation, Activation::Relu);
    assert!(!a.gated_ffn);
    let c = parse(r#"{"model_type": "t5", "feed_forward_proj": "gated-silu"}"#);
    let a = c.as_t5().unwrap().arch();
    assert_eq!(a.activation, Activation::Silu);
    assert!(a.gated_ffn);
    // transformers 5 writes scale_decoder_outputs; it wins over tie_word_embeddings.
    let c = parse(
        r#"{"model_type": "t5", "tie_word_embeddings": true, "scale_decoder_outputs": false}"#,
    );
    assert!(!c.as_t5().unwrap().arch().scale_decoder_outputs);
}

#[test]
fn unknown_and_missing_model_types_list_the_supported_ones() {
    let e = err(r#"{"model_type": "nllb-moe"}"#);
    assert!(
        e.contains("nllb-moe") && e.contains("t5, mt5, bart, mbart, pegasus, marian, m2m_100"),
        "{e}"
    );
    let e = err(r#"{"d_model": 3}"#);
    assert!(e.contains("model_type") && e.contains("m2m_100"), "{e}");
    let e = err(r#"{"model_type": 5}"#);
    assert!(e.contains("must be a string"), "{e}");
}

#[test]
fn invalid_json_names_the_line() {
    let e = err("{\n  \"model_type\": \"t5\",\n  \"d_model\": 512,,\n}");
    assert!(e.contains("invalid JSON") && e.contains("line 3"), "{e}");
    let e = err("{\n  \"model_type\": \"t5\",\n  \"d_model\": \"wide\"\n}");
    assert!(
        e.contains("invalid JSON") && e.contains("line 3") && e.contains("wide"),
        "{e}"
    );
    let e = err("[1]");
    assert!(e.contains("not a JSON object"), "{e}");
}

#[test]
fn settings_we_do_not_run_are_errors() {
    let e = err(r#"{"model_type": "bart", "activation_function": "mish"}"#);
    assert!(
        e.contains("activation_function") && e.contains("mish") && e.contains("supported"),
        "{e}"
    );
    let e = err(r#"{"model_type": "t5", "feed_forward_proj": "gated-relu6"}"#);
    assert!(
        e.contains("feed_forward_proj") && e.contains("relu6"),
        "{e}"
    );
    let e = err(r#"{"model_type": "t5", "feed_forward_proj": "double-gated-gelu"}"#);
    assert!(e.contains("gated-{ACT}"), "{e}");
    let e = err(r#"{"model_type": "bart", "normalize_before": true}"#);
    assert!(
        e.contains("normalize_before") && e.contains("BartForConditionalGeneration"),
        "{e}"
    );
    let e = err(r#"{"model_type": "pegasus", "static_position_embeddings": false}"#);
    assert!(e.contains("static_position_embeddings"), "{e}");
    let e = err(r#"{"model_type": "mbart", "add_final_layer_norm": false}"#);
    assert!(e.contains("add_final_layer_norm"), "{e}");
    let e = err(r#"{"model_type": "bart", "add_bias_logits": true}"#);
    assert!(e.contains("add_bias_logits"), "{e}");
    let e = err(r#"{"model_type": "bart", "share_encoder_decoder_embeddings": false}"#);
    assert!(
        e.contains("share_encoder_decoder_embeddings") && e.contains("Marian"),
        "{e}"
    );
    let e = err(r#"{"model_type": "bart", "d_model": 100, "encoder_attention_heads": 16}"#);
    assert!(e.contains("divisible"), "{e}");
    let e = err(r#"{"model_type": "t5", "d_model": 0}"#);
    assert!(e.contains("d_model must be positive"), "{e}");
    let e = err(r#"{"model_type": "bart", "num_hidden_layers": 3, "encoder_layers": 4}"#);
    assert!(
        e.contains("num_hidden_layers") && e.contains("encoder_layers"),
        "{e}"
    );
    let e = err(r#"{"model_type": "t5", "is_encoder_decoder": false}"#);
    assert!(e.contains("is_encoder_decoder"), "{e}");
}

#[test]
fn marian_with_separate_embeddings() {
    let c = parse(
        r#"{"model_type": "marian", "share_encoder_decoder_embeddings": false, "vocab_size": 100,
            "decoder_vocab_size": 80, "d_model": 16, "encoder_attention_heads": 2,
            "decoder_attention_heads": 2, "encoder_layers": 1, "decoder_layers": 1,
            "encoder_ffn_dim": 8, "decoder_ffn_dim": 8, "max_position_embeddings": 10}"#,
    );
    let a = c.as_bart().unwrap().arch();
    assert!(!a.shared_embeddings && a.tied_lm_head);
    assert_eq!(a.target_vocab_size, 80);
    let t = c.expected_tensors();
    assert!(t.contains(&("model.decoder.embed_tokens.weight".into(), vec![80, 16])));
    assert!(t.contains(&("model.encoder.embed_tokens.weight".into(), vec![100, 16])));
    assert!(!t.iter().any(|(n, _)| n == "model.shared.weight"));
    assert!(c
        .optional_tensors()
        .contains(&("final_logits_bias".into(), vec![1, 80])));
}

#[test]
fn from_dir_errors_name_the_directory() {
    let d = tempfile::tempdir().unwrap();
    let e = ModelConfig::from_dir(d.path()).unwrap_err();
    assert!(matches!(e, ModelError::MissingConfig { .. }));
    let e = e.to_string();
    assert!(
        e.contains("no config.json") && e.contains(&d.path().display().to_string()),
        "{e}"
    );
    let missing = d.path().join("absent");
    let e = ModelConfig::from_dir(&missing).unwrap_err().to_string();
    assert!(
        e.contains("cannot read model directory") && e.contains("absent"),
        "{e}"
    );
    let file = d.path().join("file");
    std::fs::write(&file, b"x").unwrap();
    let e = ModelConfig::from_dir(&file).unwrap_err().to_string();
    assert!(e.contains("not a directory"), "{e}");
    std::fs::write(d.path().join("config.json"), b"{\"model_type\": \"gpt2\"}").unwrap();
    let e = ModelConfig::from_dir(d.path()).unwrap_err().to_string();
    assert!(e.contains("config.json") && e.contains("gpt2"), "{e}");
}
