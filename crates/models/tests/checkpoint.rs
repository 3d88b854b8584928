//! Safetensors loading: dtype conversions, sharding, HF name variants, and one test
//! per kind of bad input, each asserting on the message the user will read.

use std::path::Path;

use encdec_core::{bf16, f16, DType, HostStorage, Tensor};
use encdec_models::safetensors::{save, serialize};
use encdec_models::{Checkpoint, ModelConfig, ModelError, StoredDType, VarBuilder};

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
}

/// A safetensors file from a hand-written header and data section.
fn raw_file(header: &str, data: &[u8]) -> Vec<u8> {
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out
}

fn write(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes).expect("write");
}

fn open_err(bytes: &[u8]) -> String {
    let d = tmp();
    write(&d.path().join("model.safetensors"), bytes);
    match Checkpoint::open(d.path()) {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

fn values(n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| ((i * 37 % 23) as f32 - 11.0) * 0.173)
        .collect()
}

#[test]
fn f32_checkpoint_loads_in_every_dtype() {
    let d = tmp();
    let w = Tensor::from_f32(values(12), [3, 4]).unwrap();
    let b = Tensor::from_f32(values(4), [4]).unwrap();
    let bias = Tensor::from_f32(values(5), [1, 5]).unwrap();
    save(
        d.path().join("model.safetensors"),
        &[
            ("model.w", &w),
            ("model.b", &b),
            ("final_logits_bias", &bias),
        ],
    )
    .unwrap();
    let ck = Checkpoint::open(d.path()).unwrap();
    assert_eq!(ck.names(), vec!["final_logits_bias", "model.b", "model.w"]);
    assert_eq!(ck.shape("model.w").unwrap(), &[3, 4]);
    assert_eq!(ck.stored_dtype("model.w").unwrap(), StoredDType::F32);
    assert_eq!(ck.metadata().get("format").map(String::as_str), Some("pt"));

    let x = values(12);
    let t = ck.load("model.w", DType::F32).unwrap();
    assert_eq!(t.dims(), &[3, 4]);
    assert_eq!(t.to_f32_vec().unwrap(), x);

    let t = ck.load("model.w", DType::F16).unwrap();
    assert_eq!(t.dtype(), DType::F16);
    let want: Vec<f32> = x.iter().map(|&v| f16::from_f32(v).to_f32()).collect();
    assert_eq!(t.to_f32_vec().unwrap(), want);

    let t = ck.load("model.w", DType::BF16).unwrap();
    assert_eq!(t.dtype(), DType::BF16);
    let want: Vec<f32> = x.iter().map(|&v| bf16::from_f32(v).to_f32()).collect();
    assert_eq!(t.to_f32_vec().unwrap(), want);

    let t = ck.load("model.w", DType::I8).unwrap();
    assert_eq!(t.dtype(), DType::I8);
    let HostStorage::I8 { scales, .. } = t.host().unwrap() else {
        panic!("int8 storage expected")
    };
    assert_eq!(scales.len(), 3);
    for (i, (got, want)) in t.to_f32_vec().unwrap().iter().zip(&x).enumerate() {
        assert!(
            (got - want).abs() <= scales[i / 4] * 0.5 + 1e-6,
            "{i}: {got} vs {want}"
        );
    }
    // 1-D tensors and single-row tensors stay f32 under int8.
    let t = ck.load("model.b", DType::I8).unwrap();
    assert_eq!(t.dtype(), DType::F32);
    assert_eq!(t.to_f32_vec().unwrap(), values(4));
    assert_eq!(
        ck.load("final_logits_bias", DType::I8).unwrap().dtype(),
        DType::F32
    );
    // u32 is not a weight dtype.
    let e = ck.load("model.w", DType::U32).unwrap_err().to_string();
    assert!(e.contains("model.w") && e.contains("u32"), "{e}");
}

#[test]
fn f16_and_bf16_checkpoints_load_exactly() {
    let d = tmp();
    let h: Vec<f16> = values(6).into_iter().map(f16::from_f32).collect();
    let b: Vec<bf16> = values(6).into_iter().map(bf16::from_f32).collect();
    let th = Tensor::from_f16(h.clone(), [2, 3]).unwrap();
    let tb = Tensor::from_bf16(b.clone(), [2, 3]).unwrap();
    save(
        d.path().join("model.safetensors"),
        &[("h", &th), ("b", &tb)],
    )
    .unwrap();
    let ck = Checkpoint::open(d.path()).unwrap();
    assert_eq!(ck.stored_dtype("h").unwrap(), StoredDType::F16);
    assert_eq!(ck.stored_dtype("b").unwrap(), StoredDType::BF16);
    let hf: Vec<f32> = h.iter().map(|x| x.to_f32()).collect();
    let bf: Vec<f32> = b.iter().map(|x| x.to_f32()).collect();
    assert_eq!(ck.load("h", DType::F32).unwrap().to_f32_vec().unwrap(), hf);
    assert_eq!(ck.load("b", DType::F32).unwrap().to_f32_vec().unwrap(), bf);
    match ck.load("h", DType::F16).unwrap().host().unwrap() {
        HostStorage::F16(v) => assert_eq!(v, &h),
        other => panic!("{:?}", other.dtype()),
    }
    match ck.load("b", DType::BF16).unwrap().host().unwrap() {
        HostStorage::BF16(v) => assert_eq!(v, &b),
        other => panic!("{:?}", other.dtype()),
    }
    // Cross conversions go through f32.
    let hb: Vec<f32> = hf.iter().map(|&v| bf16::from_f32(v).to_f32()).collect();
    assert_eq!(ck.load("h", DType::BF16).unwrap().to_f32_vec().unwrap(), hb);
}

#[test]
fn files_of_the_reference_implementation_read_and_ours_are_valid_for_it() {
    use safetensors::tensor::{serialize as st_serialize, Dtype, TensorView};
    let d = tmp();
    let a: Vec<u8> = values(6).iter().flat_map(|v| v.to_le_bytes()).collect();
    let b: Vec<u8> = values(4)
        .iter()
        .flat_map(|&v| f16::from_f32(v).to_bits().to_le_bytes())
        .collect();
    let views = vec![
        ("a", TensorView::new(Dtype::F32, vec![2, 3], &a).unwrap()),
        ("b", TensorView::new(Dtype::F16, vec![4], &b).unwrap()),
    ];
    let bytes = st_serialize(views, &None).unwrap();
    write(&d.path().join("model.safetensors"), &bytes);
    let ck = Checkpoint::open(d.path()).unwrap();
    assert_eq!(
        ck.load("a", DType::F32).unwrap().to_f32_vec().unwrap(),
        values(6)
    );
    let want: Vec<f32> = values(4)
        .iter()
        .map(|&v| f16::from_f32(v).to_f32())
        .collect();
    assert_eq!(
        ck.load("b", DType::F32).unwrap().to_f32_vec().unwrap(),
        want
    );

    let t = Tensor::from_f32(values(6), [3, 2]).unwrap();
    let ours = serialize(&[("x", &t), ("y", &t)]).unwrap();
    let st = safetensors::SafeTensors::deserialize(&ours).unwrap();
    assert_eq!(st.tensor("y").unwrap().shape(), &[3, 2]);
}

fn write_sharded(dir: &Path) {
    let a = Tensor::from_f32(values(4), [2, 2]).unwrap();
    let b = Tensor::from_f32(values(3), [3]).unwrap();
    save(
        dir.join("model-00001-of-00002.safetensors"),
        &[("model.a", &a)],
    )
    .unwrap();
    save(
        dir.join("model-00002-of-00002.safetensors"),
        &[("model.b", &b)],
    )
    .unwrap();
    let index = r#"{"metadata": {"total_size": 28}, "weight_map": {
        "model.a": "model-00001-of-00002.safetensors",
        "model.b": "model-00002-of-00002.safetensors"}}"#;
    write(&dir.join("model.safetensors.index.json"), index.as_bytes());
}

#[test]
fn sharded_checkpoints_load_through_the_index() {
    let d = tmp();
    write_sharded(d.path());
    let ck = Checkpoint::open(d.path()).unwrap();
    assert_eq!(ck.files().len(), 2);
    assert_eq!(ck.names(), vec!["model.a", "model.b"]);
    assert_eq!(
        ck.load("model.b", DType::F32)
            .unwrap()
            .to_f32_vec()
            .unwrap(),
        values(3)
    );
    assert!(ck
        .file_of("model.b")
        .unwrap()
        .ends_with("model-00002-of-00002.safetensors"));
    assert!(ck.index_file().is_some());
}

#[test]
fn an_index_pointing_to_a_missing_shard_names_it() {
    let d = tmp();
    write_sharded(d.path());
    std::fs::remove_file(d.path().join("model-00002-of-00002.safetensors")).unwrap();
    let e = Checkpoint::open(d.path()).unwrap_err();
    assert!(matches!(e, ModelError::MissingShard { .. }), "{e:?}");
    let e = e.to_string();
    assert!(
        e.contains("model-00002-of-00002.safetensors")
            && e.contains("model.b")
            && e.contains("index.json"),
        "{e}"
    );
}

#[test]
fn an_index_that_misplaces_a_tensor_is_rejected() {
    let d = tmp();
    write_sharded(d.path());
    let index = r#"{"weight_map": {"model.a": "model-00002-of-00002.safetensors",
                                   "model.b": "model-00002-of-00002.safetensors"}}"#;
    write(
        &d.path().join("model.safetensors.index.json"),
        index.as_bytes(),
    );
    let e = Checkpoint::open(d.path()).unwrap_err().to_string();
    assert!(
        e.contains("model.a") && e.contains("does not hold it"),
        "{e}"
    );
}

#[test]
fn pytorch_only_checkpoints_get_the_conversion_command() {
    let d = tmp();
    write(&d.path().join("pytorch_model.bin"), b"not really");
    write(&d.path().join("config.json"), b"{}");
    let e = Checkpoint::open(d.path()).unwrap_err();
    assert!(matches!(e, ModelError::NotSafetensors { .. }));
    let e = e.to_string();
    assert!(e.contains("pytorch_model.bin"), "{e}");
    assert!(
        e.contains("save_pretrained") && e.contains("safe_serialization=True"),
        "{e}"
    );
    assert!(e.contains(&d.path().display().to_string()), "{e}");

    let d = tmp();
    write(&d.path().join("tf_model.h5"), b"x");
    let e = Checkpoint::open(d.path()).unwrap_err().to_string();
    assert!(
        e.contains("from_tf=True") && e.contains("safe_serialization=True"),
        "{e}"
    );

    let d = tmp();
    write(&d.path().join("flax_model.msgpack"), b"x");
    let e = Checkpoint::open(d.path()).unwrap_err().to_string();
    assert!(e.contains("from_flax=True"), "{e}");

    let d = tmp();
    write(&d.path().join("model.ckpt"), b"x");
    let e = Checkpoint::open(d.path()).unwrap_err().to_string();
    assert!(e.contains("safe_serialization=True"), "{e}");
}

#[test]
fn a_directory_without_weights_lists_what_it_has() {
    let d = tmp();
    write(&d.path().join("config.json"), b"{}");
    let e = Checkpoint::open(d.path()).unwrap_err().to_string();
    assert!(
        e.contains("model.safetensors") && e.contains("config.json"),
        "{e}"
    );
    let e = Checkpoint::open(d.path().join("nope"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("cannot read model directory") && e.contains("nope"),
        "{e}"
    );
}

#[test]
fn a_truncated_file_reports_both_sizes() {
    let t = Tensor::from_f32(values(16), [4, 4]).unwrap();
    let bytes = serialize(&[("w", &t)]).unwrap();
    let cut = &bytes[..bytes.len() - 10];
    let e = open_err(cut);
    assert!(e.contains("truncated"), "{e}");
    assert!(
        e.contains(&bytes.len().to_string()) && e.contains(&cut.len().to_string()),
        "{e}"
    );
    // Cut inside the header.
    let e = open_err(&bytes[..20]);
    assert!(e.contains("truncated") && e.contains("20"), "{e}");
    // Shorter than the length field.
    let e = open_err(&bytes[..5]);
    assert!(
        e.contains("truncated") && e.contains("8 bytes") && e.contains("has 5"),
        "{e}"
    );
    let e = open_err(b"");
    assert!(e.contains("truncated"), "{e}");
}

#[test]
fn a_header_that_is_not_json_is_rejected() {
    let e = open_err(&raw_file("this is not json", &[]));
    assert!(
        e.contains("invalid safetensors header") && e.contains("not a JSON object"),
        "{e}"
    );
    let e = open_err(&raw_file("[1, 2]", &[]));
    assert!(e.contains("not a JSON object"), "{e}");
    // A huge length field: not a safetensors file at all.
    let mut junk = u64::MAX.to_le_bytes().to_vec();
    junk.extend_from_slice(b"{}");
    let e = open_err(&junk);
    assert!(e.contains("not a safetensors file"), "{e}");
    let e = open_err(&raw_file(
        r#"{"w": {"dtype": "F32", "shape": [1]}}"#,
        &[0; 4],
    ));
    assert!(
        e.contains("tensor w") && e.contains("malformed header entry"),
        "{e}"
    );
}

#[test]
fn offsets_that_lie_are_rejected() {
    // Span too small for dtype x shape.
    let e = open_err(&raw_file(
        r#"{"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 12]}}"#,
        &[0; 12],
    ));
    assert!(
        e.contains("tensor w") && e.contains("span 12 bytes") && e.contains("needs 16"),
        "{e}"
    );
    // Overlap.
    let e = open_err(&raw_file(
        r#"{"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
            "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}"#,
        &[0; 12],
    ));
    assert!(
        e.contains("tensor b") && e.contains("overlap tensor a"),
        "{e}"
    );
    // Gap.
    let e = open_err(&raw_file(
        r#"{"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
            "b": {"dtype": "F32", "shape": [1], "data_offsets": [8, 12]}}"#,
        &[0; 12],
    ));
    assert!(e.contains("tensor b") && e.contains("unaccounted"), "{e}");
    // Reversed.
    let e = open_err(&raw_file(
        r#"{"a": {"dtype": "F32", "shape": [0], "data_offsets": [4, 0]}}"#,
        &[0; 4],
    ));
    assert!(e.contains("end before they begin"), "{e}");
    // Out of bounds with consistent sizes: the file is truncated.
    let e = open_err(&raw_file(
        r#"{"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}"#,
        &[0; 8],
    ));
    assert!(e.contains("truncated"), "{e}");
    // Trailing garbage.
    let e = open_err(&raw_file(
        r#"{"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}"#,
        &[0; 9],
    ));
    assert!(e.contains("5 trailing bytes"), "{e}");
}

#[test]
fn unsupported_dtypes_are_named() {
    let e = open_err(&raw_file(
        r#"{"w": {"dtype": "F17", "shape": [1], "data_offsets": [0, 4]}}"#,
        &[0; 4],
    ));
    assert!(
        e.contains("tensor w") && e.contains("F17") && e.contains("BF16"),
        "{e}"
    );
    // A known but unloadable dtype opens, and fails on load.
    let d = tmp();
    write(
        &d.path().join("model.safetensors"),
        &raw_file(
            r#"{"ids": {"dtype": "I64", "shape": [2], "data_offsets": [0, 16]}}"#,
            &[0; 16],
        ),
    );
    let ck = Checkpoint::open(d.path()).unwrap();
    assert_eq!(ck.stored_dtype("ids").unwrap(), StoredDType::I64);
    let e = ck.load("ids", DType::F32).unwrap_err().to_string();
    assert!(
        e.contains("tensor ids") && e.contains("I64") && e.contains("cannot load"),
        "{e}"
    );
}

#[test]
fn missing_tensors_and_wrong_shapes_name_everything() {
    let d = tmp();
    let w = Tensor::from_f32(values(6), [2, 3]).unwrap();
    save(
        d.path().join("model.safetensors"),
        &[("encoder.layers.0.fc1.weight", &w)],
    )
    .unwrap();
    let ck = Checkpoint::open(d.path()).unwrap();
    let e = ck
        .load("encoder.layers.0.fc2.weight", DType::F32)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("encoder.layers.0.fc2.weight") && e.contains("model.safetensors"),
        "{e}"
    );

    let vb = VarBuilder::new(&ck).pp("encoder").pp("layers").pp(0);
    assert_eq!(vb.path("fc1.weight"), "encoder.layers.0.fc1.weight");
    assert!(vb.has("fc1.weight") && !vb.has("fc2.weight"));
    let t = vb.get("fc1.weight", &[2, 3], DType::F32).unwrap();
    assert_eq!(t.dims(), &[2, 3]);
    let e = vb.get("fc1.weight", &[3, 2], DType::F32).unwrap_err();
    assert!(matches!(e, ModelError::ShapeMismatch { .. }));
    let e = e.to_string();
    assert!(
        e.contains("encoder.layers.0.fc1.weight") && e.contains("[3, 2]") && e.contains("[2, 3]"),
        "{e}"
    );
    assert!(vb
        .get_opt("fc2.weight", &[1], DType::F32)
        .unwrap()
        .is_none());
}

#[test]
fn hf_name_variants_resolve() {
    // A BART checkpoint saved from BartModel: no `model.` prefix, no `shared`.
    let d = tmp();
    let e = Tensor::from_f32(values(6), [3, 2]).unwrap();
    let w = Tensor::from_f32(values(4), [2, 2]).unwrap();
    save(
        d.path().join("model.safetensors"),
        &[
            ("encoder.embed_tokens.weight", &e),
            ("encoder.layers.0.fc1.weight", &w),
        ],
    )
    .unwrap();
    let ck = Checkpoint::open(d.path()).unwrap();
    let vb = VarBuilder::new(&ck).pp("model");
    assert_eq!(
        vb.get("shared.weight", &[3, 2], DType::F32)
            .unwrap()
            .to_f32_vec()
            .unwrap(),
        values(6)
    );
    assert!(vb.has("encoder.layers.0.fc1.weight"));
    assert_eq!(ck.resolve("model.decoder.embed_tokens.weight"), None);
    assert_eq!(ck.resolve("lm_head.weight"), None);
    // T5: shared.weight from decoder.embed_tokens.weight.
    let d = tmp();
    save(
        d.path().join("model.safetensors"),
        &[("decoder.embed_tokens.weight", &e)],
    )
    .unwrap();
    let ck = Checkpoint::open(d.path()).unwrap();
    assert_eq!(
        ck.resolve("shared.weight"),
        Some("decoder.embed_tokens.weight")
    );
}

#[test]
fn random_checkpoints_have_every_required_tensor() {
    let cfg = encdec_models::catalogue::get("t5-small").unwrap();
    let ck = Checkpoint::random(&cfg, 7);
    for (name, shape) in cfg.expected_tensors() {
        assert_eq!(ck.shape(&name).unwrap(), shape.as_slice(), "{name}");
    }
    let a = ck
        .load("encoder.block.0.layer.0.SelfAttention.q.weight", DType::F32)
        .unwrap();
    let b = ck
        .load("encoder.block.0.layer.0.SelfAttention.q.weight", DType::F32)
        .unwrap();
    let x = a.to_f32_vec().unwrap();
    assert_eq!(x, b.to_f32_vec().unwrap());
    let std = (x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32).sqrt();
    assert!((std - 0.02).abs() < 0.001, "{std}");
    let n = ck
        .load("encoder.final_layer_norm.weight", DType::BF16)
        .unwrap();
    assert!(n.to_f32_vec().unwrap().iter().all(|&v| v == 1.0));
    assert_eq!(
        ck.load("shared.weight", DType::I8).unwrap().dtype(),
        DType::I8
    );
    let report = encdec_models::validate_checkpoint(&cfg, &ck).unwrap();
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);
    let bart = ModelConfig::from_json_str(r#"{"model_type": "bart", "d_model": 8, "encoder_attention_heads": 2,
        "decoder_attention_heads": 2, "encoder_layers": 1, "decoder_layers": 1, "encoder_ffn_dim": 4,
        "decoder_ffn_dim": 4, "vocab_size": 10, "max_position_embeddings": 6}"#)
    .unwrap();
    let ck = Checkpoint::random(&bart, 1);
    let b = ck
        .load("model.encoder.layers.0.fc1.bias", DType::F32)
        .unwrap();
    assert!(b.to_f32_vec().unwrap().iter().all(|&v| v == 0.0));
    let ln = ck
        .load("model.encoder.layernorm_embedding.bias", DType::F32)
        .unwrap();
    assert!(ln.to_f32_vec().unwrap().iter().all(|&v| v == 0.0));
}

#[test]
fn trainer_state_files_are_not_mistaken_for_weights() {
    let d = tmp();
    write(&d.path().join("training_args.bin"), b"x");
    write(&d.path().join("optimizer.pt"), b"x");
    let e = Checkpoint::open(d.path()).unwrap_err();
    assert!(matches!(e, ModelError::NoCheckpoint { .. }), "{e:?}");
}

#[test]
fn a_single_file_wins_over_an_index_as_in_transformers() {
    let d = tmp();
    write_sharded(d.path());
    let t = Tensor::from_f32(values(2), [2]).unwrap();
    save(d.path().join("model.safetensors"), &[("only", &t)]).unwrap();
    let ck = Checkpoint::open(d.path()).unwrap();
    assert_eq!(ck.names(), vec!["only"]);
}

#[test]
fn tensors_of_too_many_dimensions_are_rejected_at_open() {
    let e = open_err(&raw_file(
        r#"{"w": {"dtype": "F32", "shape": [1, 1, 1, 1, 1, 1, 1], "data_offsets": [0, 4]}}"#,
        &[0; 4],
    ));
    assert!(
        e.contains("tensor w") && e.contains("7 dimensions") && e.contains("at most 6"),
        "{e}"
    );
}
