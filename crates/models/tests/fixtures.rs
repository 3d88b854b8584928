//! Tiny random checkpoints written by transformers' own `save_pretrained`
//! (`tools/param_counts.py --fixtures`): every one validates against its config, and
//! our loader reads the same values as the reference safetensors implementation.

use std::path::{Path, PathBuf};

use encdec_core::DType;
use encdec_models::{inspect_dir, Checkpoint, ModelConfig, VarBuilder};

const FIXTURES: &[&str] = &[
    "tiny-t5",
    "tiny-t5-sharded",
    "tiny-flan-t5",
    "tiny-mt5",
    "tiny-bart",
    "tiny-mbart",
    "tiny-pegasus",
    "tiny-marian",
    "tiny-m2m100",
];

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// Values of `name` as the `safetensors` crate reads them (F32 fixtures).
fn reference_values(dir: &Path, file: &Path, name: &str) -> Vec<f32> {
    let bytes = std::fs::read(dir.join(file)).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let t = st.tensor(name).unwrap();
    assert_eq!(t.dtype(), safetensors::Dtype::F32);
    t.data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

#[test]
fn every_fixture_validates_against_its_config() {
    for name in FIXTURES {
        let dir = fixture(name);
        let (info, report) = inspect_dir(&dir).unwrap_or_else(|e| panic!("{name}: {e}"));
        let cfg = ModelConfig::from_dir(&dir).unwrap();
        // Only the stored-lm_head note of transformers-5-saved flan/mT5 may appear.
        for w in &report.warnings {
            assert!(
                w.contains("lm_head.weight") && report.stored_lm_head,
                "{name}: {w}"
            );
        }
        let lm_head = if report.stored_lm_head {
            (cfg.info().vocab_size * cfg.info().d_model) as u64
        } else {
            0
        };
        assert_eq!(info.params, cfg.num_parameters() + lm_head, "{name}");
    }
}

#[test]
fn loaded_values_match_the_reference_reader() {
    for name in FIXTURES {
        let dir = fixture(name);
        let ck = Checkpoint::open(&dir).unwrap();
        for t in ck.names() {
            let file = ck.file_of(t).unwrap().to_path_buf();
            let want = reference_values(&dir, &file, t);
            let got = ck.load(t, DType::F32).unwrap().to_f32_vec().unwrap();
            assert_eq!(got, want, "{name}: {t}");
        }
    }
}

#[test]
fn sharded_and_single_file_hold_the_same_tensors() {
    let a = Checkpoint::open(fixture("tiny-t5")).unwrap();
    let b = Checkpoint::open(fixture("tiny-t5-sharded")).unwrap();
    let by_index =
        Checkpoint::open(fixture("tiny-t5-sharded").join("model.safetensors.index.json")).unwrap();
    assert_eq!(by_index.names(), b.names());
    let by_file = Checkpoint::open(fixture("tiny-t5").join("model.safetensors")).unwrap();
    assert_eq!(by_file.names(), a.names());
    assert_eq!(b.files().len(), 2);
    assert_eq!(a.names(), b.names());
    for t in a.names() {
        assert_eq!(
            a.load(t, DType::F32).unwrap().to_f32_vec().unwrap(),
            b.load(t, DType::F32).unwrap().to_f32_vec().unwrap(),
            "{t}"
        );
    }
}

#[test]
fn a_var_builder_walks_hf_names_with_config_shapes() {
    let dir = fixture("tiny-bart");
    let cfg = ModelConfig::from_dir(&dir).unwrap();
    let ck = Checkpoint::open(&dir).unwrap();
    let b = cfg.as_bart().unwrap();
    let d = b.d_model;
    let vb = VarBuilder::new(&ck).pp("model");
    let layer = vb.pp("encoder").pp("layers").pp(1);
    let q = layer
        .pp("self_attn")
        .pp("q_proj")
        .get("weight", &[d, d], DType::BF16)
        .unwrap();
    assert_eq!(q.dtype(), DType::BF16);
    let fc1 = layer
        .get("fc1.weight", &[b.encoder_ffn_dim, d], DType::I8)
        .unwrap();
    assert_eq!(fc1.dtype(), DType::I8);
    // Tied: no lm_head stored; the embedding is model.shared.
    assert!(!VarBuilder::new(&ck).has("lm_head.weight"));
    let emb = vb
        .get("shared.weight", &[b.vocab_size, d], DType::F32)
        .unwrap();
    assert_eq!(emb.dims(), &[b.vocab_size, d]);
    let bias = VarBuilder::new(&ck)
        .get_opt("final_logits_bias", &[1, b.vocab_size], DType::F32)
        .unwrap();
    assert!(bias.is_some());
}
