//! Decode steps recorded once and replayed (CUDA graphs, `RecordedSteps`),
//! model by model: the T5 (plain; gated FFN: t5-v1_1, first test) and BART
//! fixtures stepped by hand on a backend of their own, against the CPU
//! backend stepping the same tokens. Each step's
//! logits match the CPU's (TOL_LOGITS of e2e.rs) while the counters show the
//! schedule: a set of buffers runs op by op the first time, is recorded the
//! second (the recording's replay computes that step), and replays after;
//! with two rows swapped every step (`select_rows`, as beam search does) the
//! two sets of caches get a recording each. Replays at later positions are
//! what check that positions are read on the device: a recording at
//! position 1 replayed at 2, 3, ... with a frozen position would attend over
//! the wrong prefix and write the wrong cache row.

mod common;

use std::path::PathBuf;
use std::sync::Arc;

use common::*;
use encdec_core::testing::Tol;
use encdec_core::{Backend, DType, Tensor};
use encdec_generate::{DecoderState, Seq2SeqModel};

const TOL_LOGITS: Tol = Tol {
    rel_l2: 1e-5,
    abs: 1e-4,
    rel: 1e-4,
};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures")
        .join(name)
}

fn load(dir: &std::path::Path, be: Arc<dyn Backend>) -> Box<dyn Seq2SeqModel> {
    encdec_models::load_model(dir, be, DType::F32)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .model
}

fn counts(s: &DecoderState) -> (u64, u64, u64) {
    (
        s.recorded.unrecorded,
        s.recorded.recorded,
        s.recorded.replayed,
    )
}

/// Steps `rows` rows for `steps` steps on both backends, swapping the rows
/// before each step after the first when `swap`; returns the GPU state's
/// counters after each step.
fn step_both(
    name: &str,
    gpu: Arc<dyn Backend>,
    rows: usize,
    steps: usize,
    swap: bool,
    f: &mut Failures,
) -> Vec<(u64, u64, u64)> {
    let dir = fixture(name);
    let mc = load(&dir, Arc::new(encdec_cpu::CpuBackend::with_threads(1)));
    let mg = load(&dir, gpu);
    let source = vec![5u32, 6, 7, 8, 9, 2];
    let (ec, eg) = (
        mc.encode(std::slice::from_ref(&source)).unwrap(),
        mg.encode(std::slice::from_ref(&source)).unwrap(),
    );
    let of_row = vec![0u32; rows];
    let mut sc = mc.start(&ec, &of_row, steps + 1).unwrap();
    let mut sg = mg.start(&eg, &of_row, steps + 1).unwrap();
    let v = mc.spec().vocab_size;
    let (mut lc, mut lg) = (
        Tensor::zeros([rows, v], DType::F32),
        Tensor::zeros([rows, v], DType::F32),
    );
    let mut tokens = vec![mc.spec().decoder_start_token_id; rows];
    let order: Vec<u32> = (0..rows as u32).rev().collect();
    let mut seen = Vec::new();
    for step in 0..steps {
        if swap && step > 0 {
            mc.select_rows(&mut sc, &order).unwrap();
            mg.select_rows(&mut sg, &order).unwrap();
            tokens.reverse();
        }
        mc.step(&ec, &mut sc, &tokens, &mut lc).unwrap();
        if let Err(e) = mg.step(&eg, &mut sg, &tokens, &mut lg) {
            f.push(format!("{name} step {step}: {e}"));
            return seen;
        }
        let (want, got) = (lc.to_f32_vec().unwrap(), lg.to_f32_vec().unwrap());
        f.check(
            &format!("{name} rows={rows} swap={swap} step {step}"),
            &got,
            &want,
            TOL_LOGITS,
        );
        seen.push(counts(&sg));
        // Distinct tokens per row, from the CPU's logits: rows diverge.
        for (r, t) in tokens.iter_mut().enumerate() {
            let row = &want[r * v..(r + 1) * v];
            let best = (0..v)
                .filter(|&i| i as u32 != *t)
                .max_by(|&a, &b| row[a].total_cmp(&row[b]))
                .unwrap_or(0);
            *t = (best as u32 + r as u32) % v as u32;
        }
    }
    seen
}

/// A backend of the test's own that records steps, or None after printing
/// why the test is skipped (no device or emulator, the CPU stand-in, which
/// does not record, or recording turned off).
fn recorder(test: &str) -> Option<Arc<dyn Backend>> {
    if std::env::var("ENCDEC_CUDA_GRAPHS").as_deref() == Ok("0") {
        eprintln!("SKIP {test}: ENCDEC_CUDA_GRAPHS=0");
        return None;
    }
    match private_gpu() {
        Some(g) => Some(Arc::new(g)),
        None => {
            eprintln!("SKIP {test}: no CUDA device or emulator (the CPU stand-in does not record)");
            None
        }
    }
}

/// [`step_both`] for each fixture, then the counters against `want`.
fn check_schedule(
    g: &Arc<dyn Backend>,
    names: &[&str],
    (rows, swap): (usize, bool),
    want: &[(u64, u64, u64)],
    what: &str,
) {
    let mut f = Failures::default();
    for name in names {
        let seen = step_both(name, g.clone(), rows, want.len(), swap, &mut f);
        if seen != want {
            f.push(format!("{name}: counters {seen:?}, expected {want:?}"));
        }
    }
    f.finish(what);
}

#[test]
fn one_set_of_buffers_is_recorded_on_its_second_step_and_replayed_after() {
    let Some(g) = recorder("one_set_of_buffers_is_recorded_on_its_second_step_and_replayed_after")
    else {
        return;
    };
    // t5-v1_1: the gated FFN (linear_gated) recorded and replayed too.
    let want = [
        (1, 0, 0),
        (1, 1, 0),
        (1, 1, 1),
        (1, 1, 2),
        (1, 1, 3),
        (1, 1, 4),
    ];
    check_schedule(
        &g,
        &["t5", "bart", "t5-v1_1"],
        (1, false),
        &want,
        "recorded steps",
    );
}

#[test]
fn swapped_caches_get_a_recording_each() {
    let Some(g) = recorder("swapped_caches_get_a_recording_each") else {
        return;
    };
    // Buffers A, B, A, B, ...: each seen, then recorded, then replayed.
    let want = [
        (1, 0, 0),
        (2, 0, 0),
        (2, 1, 0),
        (2, 2, 0),
        (2, 2, 1),
        (2, 2, 2),
        (2, 2, 3),
        (2, 2, 4),
    ];
    check_schedule(&g, &["t5", "bart"], (2, true), &want, "swapped caches");
}

/// Greedy, beam search and top-k sampling on the backend with the search's
/// ops recorded with each step (`step_on_backend_then`): the replays'
/// candidates give the CPU's ids (a replay without its search ops would hand
/// back the recording step's candidates; sampling is seeded, and the CPU
/// draws from its full rows).
#[test]
fn search_ops_replay_with_the_step() {
    use encdec_generate::{GenerationConfig, GenerationOverrides, Generator};
    let Some(g) = recorder("search_ops_replay_with_the_step") else {
        return;
    };
    let mut f = Failures::default();
    for name in ["t5", "bart"] {
        let dir = fixture(name);
        let mc = load(&dir, Arc::new(encdec_cpu::CpuBackend::with_threads(1)));
        let mg = load(&dir, g.clone());
        // The statistics / top-K are recorded with the step, after the staged
        // edits: none, EOS banned every step (min_new_tokens), and the
        // repetition penalty on the rows' history (with and without bans).
        for (beams, min_new, penalty, top_k) in [
            (1, None, None, None),
            (3, None, None, None),
            (1, Some(10), None, None),
            (3, Some(10), None, None),
            (1, None, Some(1.3), None),
            (3, Some(10), Some(0.8), None),
            (1, None, None, Some(10)),
            (1, Some(10), Some(1.3), Some(50)),
        ] {
            let over = GenerationOverrides {
                num_beams: Some(beams),
                do_sample: Some(top_k.is_some()),
                top_k,
                seed: Some(11),
                max_new_tokens: Some(10),
                min_new_tokens: min_new,
                repetition_penalty: penalty,
                ..Default::default()
            };
            let cfg = GenerationConfig::from_checkpoint(&dir, &over).unwrap();
            let sources = vec![vec![5u32, 6, 7, 8, 9, 2]];
            let run = |m: &dyn Seq2SeqModel| {
                let mut gen = Generator::new(m, cfg.clone()).unwrap();
                let out = gen.generate(&sources, None).unwrap();
                (out[0][0].ids.clone(), gen.search_stats())
            };
            let ((want, _), (got, st)) = (run(&*mc), run(&*mg));
            if got != want {
                f.push(format!(
                    "{name} beams={beams} min_new={min_new:?} penalty={penalty:?} top_k={top_k:?}: ids {got:?}, CPU {want:?}"
                ));
            }
            if st.replayed_steps == 0 || st.backend_steps == 0 {
                f.push(format!(
                    "{name} beams={beams} min_new={min_new:?} penalty={penalty:?} top_k={top_k:?}: no replayed device search: {st:?}"
                ));
            }
        }
    }
    f.finish("search ops replayed");
}
