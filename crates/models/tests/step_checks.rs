//! `Seq2SeqModel::step`'s own checks, on the T5 and BART fixtures (CPU).

/// A step refuses what would make its ops read or write out of bounds, also
/// when its ops are replayed from a recording without their own checks:
/// token ids past the vocabulary, a full KV cache, a token count that is
/// not the state's rows. Each refusal leaves the state usable.
#[test]
fn steps_refuse_bad_tokens_and_a_full_cache() {
    for name in ["t5", "bart"] {
        let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/fixtures")
            .join(name);
        let be: std::sync::Arc<dyn encdec_core::Backend> =
            std::sync::Arc::new(encdec_cpu::CpuBackend::with_threads(1));
        let m = encdec_models::load_model(&dir, be, encdec_core::DType::F32)
            .unwrap()
            .model;
        let v = m.spec().vocab_size;
        let enc = m.encode(&[vec![5, 6, 2]]).unwrap();
        let mut state = m.start(&enc, &[0], 2).unwrap();
        let mut logits = encdec_core::Tensor::zeros([1, v], encdec_core::DType::F32);
        let e = m
            .step(&enc, &mut state, &[v as u32], &mut logits)
            .unwrap_err()
            .to_string();
        assert!(e.contains("out of range for the vocabulary"), "{name}: {e}");
        let e = m
            .step(&enc, &mut state, &[1, 2], &mut logits)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("2 tokens for a decoder state of 1 rows"),
            "{name}: {e}"
        );
        let start = m.spec().decoder_start_token_id;
        m.step(&enc, &mut state, &[start], &mut logits).unwrap();
        m.step(&enc, &mut state, &[3], &mut logits).unwrap();
        let e = m
            .step(&enc, &mut state, &[3], &mut logits)
            .unwrap_err()
            .to_string();
        assert!(e.contains("KV cache is full"), "{name}: {e}");
    }
}
