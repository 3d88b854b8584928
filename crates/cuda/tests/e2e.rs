//! End to end: the tiny fixtures of `tests/fixtures/` (T5 family and BART
//! family) loaded on the CUDA backend and on the CPU backend, run through the
//! same `Generator` (on CUDA the search runs on the device, on the CPU on the
//! host: `Generator::search_stats` is checked): greedy ids identical for every golden case, alone and as
//! one padded batch, beam search (4 beams: index_select and shared encoder K/V)
//! identical, seeded top-k sampling of the padded batch identical (the device
//! sends each row's top-k + 1, the host warps and draws), and first-step logits within rel L2 1e-5 / per element
//! 1e-4 * max(|ref|, 1) in f32 — also with f16 and bf16 weights on the FP32-FMA
//! GEMM (`GemmPath::Tiled`), which both backends widen to the same f32 values.
//! With f16/bf16 weights on `GemmPath::Auto`, linears of more than 8 rows run
//! on tensor cores with activations rounded to the weight dtype
//! (kernels/gemm_tc.cu): logits within `TOL_LOGITS_TC` (rel L2 1e-2). Half
//! models keep half K/V caches on the device (the CPU keeps f32): with them,
//! logits after 1 and 4 steps within `TOL_LOGITS_HALF_KV` (rel L2 1e-2); the
//! strict bounds above hold with the caches kept f32.
//! The fixtures' head_dim (8-16) is below what kernels/attention_tc.cu runs,
//! so the t5 and bart fixture configs are also widened to head_dim 64 with
//! random weights: with f16/bf16 weights their encoder attention takes the
//! tensor-core kernel on `AttentionPath::Auto` (`operand_dtype` set by the
//! model), and the logits stay within `TOL_LOGITS_TC` of the CPU's. There every
//! encoder linear (70 rows) and attention runs on tensor cores, which round
//! their inputs to the weight dtype: the encoder's half activations (the
//! default, `Backend::activation_dtype`) give the same logits, bit for bit, as
//! f32 ones.
//!
//! Fixtures are found at `$ENCDEC_FIXTURES`, else `tests/fixtures` of this
//! workspace, else `./tests/fixtures` (a test binary run from a copy of the repo).

mod common;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use common::*;
use encdec_core::testing::Tol;
use encdec_core::{Backend, DType, Device, Tensor};
use encdec_cuda::{AttentionPath, GemmPath};
use encdec_generate::{GenerationConfig, GenerationOverrides, Generator, Seq2SeqModel};
use serde_json::Value;

/// T5 family and BART family fixtures (the first two are the brief's minimum).
const FIXTURES: [&str; 8] = [
    "t5", "bart", "t5-v1_1", "mt5", "marian", "mbart", "pegasus", "m2m100",
];

const TOL_LOGITS: Tol = Tol {
    rel_l2: 1e-5,
    abs: 1e-4,
    rel: 1e-4,
};

/// First-step logits with f16/bf16 weights on tensor cores: every linear of
/// more than 8 rows rounds its activations to the weight dtype, the CPU does
/// not (the bound of kernels/gemm_tc.cu's own test, rel L2 1e-2). Per element
/// the error follows the logits' scale (|logit| up to ~18 here), not each
/// element's size: abs 0.1 (on the emulator, bf16: rel L2 <= 5e-3, max abs 0.037).
const TOL_LOGITS_TC: Tol = Tol {
    rel_l2: 1e-2,
    abs: 0.1,
    rel: 2e-2,
};

/// Logits of a half model whose K/V caches are half too (the CUDA backend's
/// default, `Backend::kv_cache_dtype`), against the CPU's f32 caches: every
/// cached K/V value is rounded to f16 (2^-11 relative) or bf16 (2^-8), and the
/// error grows through the layers: on the emulator bf16 caches moved BART's
/// logits by rel L2 up to 1.01e-2 (max abs 0.082), f16 ones far less.
const TOL_LOGITS_HALF_KV: Tol = Tol {
    rel_l2: 2e-2,
    abs: 0.15,
    rel: 2e-2,
};

fn fixtures_root() -> Option<PathBuf> {
    let cands = [
        std::env::var_os("ENCDEC_FIXTURES").map(PathBuf::from),
        Some(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")),
        std::env::current_dir()
            .ok()
            .map(|d| d.join("tests/fixtures")),
    ];
    cands
        .into_iter()
        .flatten()
        .find(|p| p.join("t5/config.json").is_file())
}

fn cases(dir: &std::path::Path) -> Vec<Vec<u32>> {
    let text = std::fs::read_to_string(dir.join("golden.json")).unwrap();
    let g: Value = serde_json::from_str(&text).unwrap();
    g["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            c["input_ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap() as u32)
                .collect()
        })
        .collect()
}

fn load(dir: &std::path::Path, be: Arc<dyn Backend>, dtype: DType) -> Box<dyn Seq2SeqModel> {
    encdec_models::load_model(dir, be, dtype)
        .unwrap_or_else(|e| panic!("{}: load as {dtype}: {e}", dir.display()))
        .model
}

fn first_step_logits(m: &dyn Seq2SeqModel, ids: &[u32]) -> Vec<f32> {
    step_logits(m, ids, &[])
}

/// The logits after the decoder start token and then `then`, one step each
/// (so the self-attention reads cached rows written at earlier positions).
fn step_logits(m: &dyn Seq2SeqModel, ids: &[u32], then: &[u32]) -> Vec<f32> {
    let enc = m.encode(&[ids.to_vec()]).unwrap();
    let mut state = m.start(&enc, &[0], 1 + then.len()).unwrap();
    let mut logits = Tensor::zeros([1, m.spec().vocab_size], DType::F32);
    let start = m.spec().decoder_start_token_id;
    m.step(&enc, &mut state, &[start], &mut logits).unwrap();
    for &t in then {
        m.step(&enc, &mut state, &[t], &mut logits).unwrap();
    }
    logits.to_f32_vec().unwrap()
}

fn config(dir: &std::path::Path, beams: usize) -> GenerationConfig {
    let over = GenerationOverrides {
        num_beams: Some(beams),
        do_sample: Some(false),
        max_new_tokens: Some(24),
        ..Default::default()
    };
    GenerationConfig::from_checkpoint(dir, &over).unwrap()
}

fn sampling_config(dir: &std::path::Path) -> GenerationConfig {
    let over = GenerationOverrides {
        num_beams: Some(1),
        do_sample: Some(true),
        top_k: Some(20),
        temperature: Some(0.8),
        seed: Some(5),
        max_new_tokens: Some(24),
        ..Default::default()
    };
    GenerationConfig::from_checkpoint(dir, &over).unwrap()
}

fn ids_of(m: &dyn Seq2SeqModel, cfg: &GenerationConfig, sources: &[Vec<u32>]) -> Vec<Vec<u32>> {
    let mut g = Generator::new(m, cfg.clone()).unwrap();
    let ids = g
        .generate(sources, None)
        .unwrap()
        .into_iter()
        .map(|h| h[0].ids.clone())
        .collect();
    // On the device the search runs there (the CPU reference searches on the host).
    let st = g.search_stats();
    if m.backend().device() != Device::Cpu {
        assert!(st.backend_steps > 0 && st.host_steps == 0, "{st:?}");
        RECORDED.fetch_add(st.recorded_steps, Ordering::Relaxed);
        REPLAYED.fetch_add(st.replayed_steps, Ordering::Relaxed);
    } else {
        assert_eq!(st.backend_steps + st.fallback_steps, 0, "{st:?}");
        assert_eq!(st.recorded_steps + st.replayed_steps, 0, "{st:?}");
    }
    ids
}

/// Decode steps of the device's generations recorded / replayed (CUDA graphs).
static RECORDED: AtomicU64 = AtomicU64::new(0);
static REPLAYED: AtomicU64 = AtomicU64::new(0);

/// One test at a time on the shared backend: a recorded decode step takes
/// every op queued on the device while it records.
fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

#[test]
fn fixtures_generate_the_cpu_backends_ids() {
    let _one = one_at_a_time();
    let g = gpu_or_skip!("fixtures_generate_the_cpu_backends_ids");
    let Some(root) = fixtures_root() else {
        panic!("tests/fixtures not found (set ENCDEC_FIXTURES)");
    };
    let cpu_be: Arc<dyn Backend> = Arc::new(encdec_cpu::CpuBackend::new());
    let mut f = Failures::default();
    for name in FIXTURES {
        let dir = root.join(name);
        if !dir.join("config.json").is_file() {
            f.push(format!("{name}: fixture missing at {}", dir.display()));
            continue;
        }
        let srcs = cases(&dir);
        let mc = load(&dir, cpu_be.clone(), DType::F32);
        let mg = load(&dir, g.be.clone(), DType::F32);
        for (i, ids) in srcs.iter().enumerate() {
            f.check(
                &format!("{name} case {i} first-step logits (f32)"),
                &first_step_logits(&*mg, ids),
                &first_step_logits(&*mc, ids),
                TOL_LOGITS,
            );
        }
        for beams in [1, 4] {
            let cfg = config(&dir, beams);
            // One source at a time, then all as one padded batch.
            for (i, ids) in srcs.iter().enumerate() {
                let (want, got) = (
                    ids_of(&*mc, &cfg, std::slice::from_ref(ids)),
                    ids_of(&*mg, &cfg, std::slice::from_ref(ids)),
                );
                if want != got {
                    f.push(format!(
                        "{name} case {i} beams={beams}: ids differ\n got  {got:?}\n want {want:?}"
                    ));
                }
            }
            let (want, got) = (ids_of(&*mc, &cfg, &srcs), ids_of(&*mg, &cfg, &srcs));
            if want != got {
                f.push(format!(
                    "{name} batch beams={beams}: ids differ\n got  {got:?}\n want {want:?}"
                ));
            }
        }
        // Seeded top-k sampling: the device's candidates, warped and drawn
        // from on the host, against the CPU's draws from its full rows.
        let cfg = sampling_config(&dir);
        let (want, got) = (ids_of(&*mc, &cfg, &srcs), ids_of(&*mg, &cfg, &srcs));
        if want != got {
            f.push(format!(
                "{name} batch top-k sampling: ids differ\n got  {got:?}\n want {want:?}"
            ));
        }
    }
    // The generations' decode steps were recorded and replayed (unless off;
    // a generation that ends within two steps records nothing).
    if g.cuda.is_some() && std::env::var("ENCDEC_CUDA_GRAPHS").as_deref() != Ok("0") {
        let (rec, rep) = (
            RECORDED.load(Ordering::Relaxed),
            REPLAYED.load(Ordering::Relaxed),
        );
        if rec == 0 || rep == 0 {
            f.push(format!(
                "steps recorded {rec}, replayed {rep}: no CUDA graph ran"
            ));
        }
        eprintln!("NOTE decode steps recorded {rec}, replayed {rep}");
    }
    f.finish("fixtures");
}

#[test]
fn half_precision_weights_give_the_cpu_backends_logits() {
    let _one = one_at_a_time();
    let g = gpu_or_skip!("half_precision_weights_give_the_cpu_backends_logits");
    let Some(root) = fixtures_root() else {
        panic!("tests/fixtures not found (set ENCDEC_FIXTURES)");
    };
    let cpu_be: Arc<dyn Backend> = Arc::new(encdec_cpu::CpuBackend::new());
    let mut f = Failures::default();
    for name in ["t5", "bart"] {
        let dir = root.join(name);
        let srcs = cases(&dir);
        let config = encdec_models::ModelConfig::from_dir(&dir).expect("config");
        for dtype in [DType::F16, DType::BF16] {
            // T5 asked for in f16 loads bf16 on a GPU (`weight_dtype_for`): the CPU
            // reference takes the weights the device model really has.
            let (device_dtype, _) = encdec_models::weight_dtype_for(&config, g.be.device(), dtype);
            let mc = load(&dir, cpu_be.clone(), device_dtype);
            let mg = load(&dir, g.be.clone(), dtype);
            // f32 caches (the GEMM paths alone), then the device's half caches
            for (f32_caches, then) in [
                (true, &[][..]),
                (false, &[][..]),
                (false, &[7u32, 9, 4][..]),
            ] {
                g.set_kv_f32_caches(f32_caches);
                for (i, ids) in srcs.iter().enumerate().take(3) {
                    let want = step_logits(&*mc, ids, then);
                    for (path, tol) in [
                        (GemmPath::Tiled, TOL_LOGITS),
                        (GemmPath::Auto, TOL_LOGITS_TC),
                    ] {
                        g.set_gemm_path(path);
                        let tol = if f32_caches { tol } else { TOL_LOGITS_HALF_KV };
                        f.check(
                            &format!(
                                "{name} case {i} logits after {} steps ({dtype} weights, {path:?}, f32 caches: {f32_caches})",
                                1 + then.len()
                            ),
                            &step_logits(&*mg, ids, then),
                            &want,
                            tol,
                        );
                    }
                }
            }
        }
        g.set_gemm_path(GemmPath::Auto);
        g.set_kv_f32_caches(false);
    }
    f.finish("half-precision weights");
}

#[test]
fn half_precision_models_with_head_dim_64_use_tensor_core_attention() {
    let _one = one_at_a_time();
    let g = gpu_or_skip!("half_precision_models_with_head_dim_64_use_tensor_core_attention");
    let Some(root) = fixtures_root() else {
        panic!("tests/fixtures not found (set ENCDEC_FIXTURES)");
    };
    let cpu_be: Arc<dyn Backend> = Arc::new(encdec_cpu::CpuBackend::new());
    let mut f = Failures::default();
    for (name, edits, dtype) in [
        ("t5", serde_json::json!({"d_kv": 64}), DType::BF16),
        (
            "bart",
            serde_json::json!({"d_model": 128, "encoder_attention_heads": 2, "decoder_attention_heads": 2}),
            DType::F16,
        ),
    ] {
        let text = std::fs::read_to_string(root.join(name).join("config.json")).unwrap();
        let mut v: Value = serde_json::from_str(&text).unwrap();
        for (k, x) in edits.as_object().unwrap() {
            v[k] = x.clone();
        }
        let cfg = encdec_models::ModelConfig::from_json_str(&v.to_string()).unwrap();
        let mc = encdec_models::random_model(&cfg, 7, cpu_be.clone(), dtype).unwrap();
        let mg = encdec_models::random_model(&cfg, 7, g.be.clone(), dtype).unwrap();
        // 70 source tokens: two query blocks and two key tiles of the kernel.
        let vocab = mc.spec().vocab_size as u32;
        let ids: Vec<u32> = (0..70u32).map(|i| 3 + (i * 7) % (vocab - 3)).collect();
        let want = first_step_logits(&*mc, &ids);
        // f32 caches and activations: the f32-attention run is then exact
        g.set_kv_f32_caches(true);
        g.set_f32_activations(true);
        g.set_gemm_path(GemmPath::Tiled);
        g.set_attention_path(AttentionPath::Tiled);
        let exact = first_step_logits(&*mg, &ids);
        f.check(
            &format!("{name} (head_dim 64, {dtype} weights) logits, f32 attention"),
            &exact,
            &want,
            TOL_LOGITS,
        );
        g.set_attention_path(AttentionPath::Auto);
        let tc = first_step_logits(&*mg, &ids);
        f.check(
            &format!("{name} (head_dim 64, {dtype} weights) logits, Auto attention"),
            &tc,
            &want,
            TOL_LOGITS_TC,
        );
        // The tensor-core kernel rounds q/k/v to the weight dtype: T5's logits
        // move by far more than the f32 kernels' reordering (rel L2 5e-4 vs ~1e-7
        // on the emulator). BART's post-LN residual stream with std-0.02 random
        // weights hides the attention almost entirely (2e-7), so only T5 can show
        // which kernel ran this way.
        let moved = rel_l2(&tc, &exact);
        eprintln!(
            "{name}: rel L2 of the logits, Auto (tensor cores) vs f32 attention: {moved:.1e}"
        );
        // The encoder's activations stored in the weight dtype (the default)
        // or in f32: with every encoder linear (70 rows) and attention on
        // tensor cores, which round them to it anyway, the same bits.
        g.set_gemm_path(GemmPath::Auto);
        g.set_f32_activations(true);
        let f32_activations = first_step_logits(&*mg, &ids);
        g.set_f32_activations(false);
        let half_activations = first_step_logits(&*mg, &ids);
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        if bits(&f32_activations) != bits(&half_activations) {
            f.push(format!(
                "{name} ({dtype} weights): logits with f32 encoder activations differ from \
                 half ones by rel L2 {:.1e}; want the same bits",
                rel_l2(&half_activations, &f32_activations)
            ));
        }
        if g.cuda.is_some() && name == "t5" && moved < 1e-5 {
            f.push(format!(
                "{name}: Auto's logits within rel L2 {moved:.1e} of the f32 attention's: \
                 the tensor-core attention was not used"
            ));
        }
        g.set_gemm_path(GemmPath::Auto);
        g.set_kv_f32_caches(false);
    }
    f.finish("tensor-core attention in a model");
}

fn rel_l2(got: &[f32], want: &[f32]) -> f64 {
    let (mut num, mut den) = (0.0f64, 0.0f64);
    for (&a, &b) in got.iter().zip(want) {
        num += (a as f64 - b as f64).powi(2);
        den += (b as f64).powi(2);
    }
    (num / den.max(1e-300)).sqrt()
}
