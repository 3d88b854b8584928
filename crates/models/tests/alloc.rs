//! A real model's decode loop allocates nothing per step: a generation of 40
//! tokens makes exactly as many heap allocations as one of 8 (encoder, cache and
//! scratch are allocated once, up front), for greedy, beam (searched on the host,
//! and on the backend: `Generator::set_search_on_backend`) and sampling, on a T5
//! (plain and gated-FFN v1.1) and a BART fixture with f32, bf16 and int8 weights, on a 2-thread CPU backend. Counted by a global allocator
//! over all threads.

mod common;

use std::sync::Arc;

use encdec_core::testing::CountingAlloc;
use encdec_core::{Backend, DType};
use encdec_generate::{GenerationConfig, GenerationOverrides, Generator, Seq2SeqModel};
use encdec_models::build_model;

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

fn allocations(
    model: &dyn Seq2SeqModel,
    over: &GenerationOverrides,
    on_backend: bool,
    new_tokens: usize,
) -> usize {
    let mut over = over.clone();
    over.max_new_tokens = Some(new_tokens);
    over.min_new_tokens = Some(new_tokens);
    let cfg = GenerationConfig::from_values(&serde_json::json!({}), &over).expect("config");
    let sources: Vec<Vec<u32>> = vec![vec![5, 6, 7, 8, 9, 2], vec![10, 11, 2], vec![12, 2]];
    let mut gen = Generator::new(model, cfg).expect("generator");
    gen.set_search_on_backend(Some(on_backend));
    let before = CountingAlloc::count();
    let out = gen.generate(&sources, None).expect("generate");
    let after = CountingAlloc::count();
    if on_backend {
        let st = gen.search_stats();
        assert!(st.backend_steps > 0 && st.host_steps == 0, "{st:?}");
    }
    for h in out.iter().flatten() {
        assert_eq!(h.ids.len(), new_tokens, "every row runs to the end");
    }
    after - before
}

#[test]
fn decode_steps_allocate_nothing() {
    let backend: Arc<dyn Backend> = Arc::new(encdec_cpu::CpuBackend::with_threads(2));
    let beam4 = GenerationOverrides {
        num_beams: Some(4),
        num_return_sequences: Some(2),
        ..Default::default()
    };
    let modes = [
        ("greedy", GenerationOverrides::default(), false),
        ("beam 4", beam4.clone(), false),
        // search on the backend (the CPU backend here): bans, top-k, statistics
        (
            "greedy, search on the backend",
            GenerationOverrides::default(),
            true,
        ),
        ("beam 4, search on the backend", beam4, true),
        (
            "sample",
            GenerationOverrides {
                do_sample: Some(true),
                top_k: Some(20),
                top_p: Some(0.9),
                seed: Some(1),
                ..Default::default()
            },
            false,
        ),
    ];
    let mut failures = Vec::new();
    for (name, dtype) in [
        ("t5", DType::F32),
        ("bart", DType::F32),
        ("t5", DType::BF16),
        ("bart", DType::I8),
        // Gated FFN (linear_gated): its scratch is reused across steps.
        ("t5-v1_1", DType::F32),
        ("t5-v1_1", DType::I8),
    ] {
        let (cfg, ckpt) = common::open_fixture(name);
        let (model, _) = build_model(&cfg, &ckpt, backend.clone(), dtype).expect(name);
        for (mode, over, on_backend) in &modes {
            let mut over = over.clone();
            over.decoder_start_token_id = Some(model.spec().decoder_start_token_id);
            over.eos_token_id = Some(model.spec().eos_token_id.clone());
            over.pad_token_id = Some(model.spec().pad_token_id);
            // Warm-up: one-time lazy setup.
            allocations(model.as_ref(), &over, *on_backend, 8);
            // Which pool thread runs which op varies, and a thread's first op makes
            // its one-time scratch, so a pair may be retried: an allocation per
            // step would add 32 or more to every pair.
            let mut seen = Vec::new();
            let ok = (0..4).any(|_| {
                let short = allocations(model.as_ref(), &over, *on_backend, 8);
                let long = allocations(model.as_ref(), &over, *on_backend, 40);
                seen.push((short, long));
                short == long
            });
            let what =
                format!("{name} {dtype:?} {mode}: allocations (8 steps, 40 steps): {seen:?}");
            eprintln!("{what}");
            if !ok {
                failures.push(what);
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
