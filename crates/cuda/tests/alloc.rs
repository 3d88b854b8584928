//! The decode loop on the CUDA backend allocates nothing per step, on the host
//! or the device: a generation of 24 tokens makes as many host heap
//! allocations as one of 6, and the caching allocator hands out no new device
//! blocks once warm, for greedy, beam search and top-k sampling on the T5 (plain and gated
//! FFN: t5-v1_1) and BART fixtures,
//! with the search on the device (top-k candidates, softmax statistics and the
//! banned ids' logits are all that cross to the host).
//! (Host allocations are counted by a global allocator in this test binary; on
//! the emulator, the kernels' own C++ allocations are not the backend's.)

mod common;

use std::path::PathBuf;
use std::sync::Arc;

use encdec_core::testing::CountingAlloc;
use encdec_core::{Backend, DType};
use encdec_generate::{GenerationConfig, GenerationOverrides, Generator, Seq2SeqModel};

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures")
        .join(name)
}

fn allocations(
    model: &dyn Seq2SeqModel,
    over: &GenerationOverrides,
    new_tokens: usize,
) -> (usize, usize) {
    let mut over = over.clone();
    over.max_new_tokens = Some(new_tokens);
    over.min_new_tokens = Some(new_tokens);
    over.decoder_start_token_id = Some(model.spec().decoder_start_token_id);
    over.eos_token_id = Some(model.spec().eos_token_id.clone());
    over.pad_token_id = Some(model.spec().pad_token_id);
    let cfg = GenerationConfig::from_values(&serde_json::json!({}), &over).expect("config");
    let sources: Vec<Vec<u32>> = vec![vec![5, 6, 7, 8, 9, 2], vec![10, 11, 2]];
    let mut gen = Generator::new(model, cfg).expect("generator");
    let blocks = |be: &dyn Backend| be.device_memory().map_or(0, |m| m.reserved_bytes);
    let reserved = blocks(model.backend());
    let before = CountingAlloc::count();
    let out = gen.generate(&sources, None).expect("generate");
    let after = CountingAlloc::count();
    // the search ran on the device (only candidates crossed to the host)
    let st = gen.search_stats();
    assert!(
        st.backend_steps > 0 && st.host_steps == 0,
        "search on the device did not run: {st:?}"
    );
    // and the steps replayed their recording (CUDA graphs), unless turned off
    if std::env::var("ENCDEC_CUDA_GRAPHS").as_deref() != Ok("0") {
        assert!(
            st.replayed_steps > 0,
            "no decode step replayed a recording: {st:?}"
        );
    }
    for h in out.iter().flatten() {
        assert_eq!(h.ids.len(), new_tokens, "every row runs to the end");
    }
    (after - before, blocks(model.backend()) - reserved)
}

#[test]
fn decode_steps_allocate_nothing_on_the_device_backend() {
    let g = gpu_or_skip!("decode_steps_allocate_nothing_on_the_device_backend");
    if g.cuda.is_none() {
        // The CPU stand-in's forwarding allocates; the CPU backend's own
        // decode loop is checked by crates/models/tests/alloc.rs.
        eprintln!("NOTE decode_steps_allocate_nothing_on_the_device_backend: only the CUDA backend is checked here");
        return;
    }
    let modes = [
        ("greedy", GenerationOverrides::default()),
        (
            "beam 3",
            GenerationOverrides {
                num_beams: Some(3),
                ..Default::default()
            },
        ),
        (
            "top-k sampling, 2 samples",
            GenerationOverrides {
                num_beams: Some(1),
                do_sample: Some(true),
                top_k: Some(20),
                top_p: Some(0.9),
                temperature: Some(0.8),
                num_return_sequences: Some(2),
                seed: Some(3),
                ..Default::default()
            },
        ),
    ];
    let mut failures = Vec::new();
    // t5-v1_1: the gated FFN (linear_gated).
    for name in ["t5", "bart", "t5-v1_1"] {
        let be: Arc<dyn Backend> = g.be.clone();
        let model = encdec_models::load_model(&fixture(name), be, DType::F32)
            .unwrap_or_else(|e| panic!("{name}: {e}"))
            .model;
        for (mode, over) in &modes {
            // Warm-up of both lengths (the KV caches' sizes differ): kernels,
            // the pool's blocks of each size and the staging buffers.
            for _ in 0..2 {
                allocations(model.as_ref(), over, 24);
                allocations(model.as_ref(), over, 6);
            }
            // A free list of the pool may still grow once in a while (more
            // blocks of one size free at once than before), so a pair may be
            // retried: an allocation per step would add 18 or more to every pair.
            let mut seen = Vec::new();
            let ok = (0..3).any(|_| {
                let short = allocations(model.as_ref(), over, 6);
                let long = allocations(model.as_ref(), over, 24);
                seen.push((short, long));
                short.0 == long.0 && long.1 == 0
            });
            let what = format!(
                "{name} {mode}: (host allocations, new device bytes) for (6 steps, 24 steps): {seen:?}"
            );
            eprintln!("{what}");
            if !ok {
                failures.push(what);
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
