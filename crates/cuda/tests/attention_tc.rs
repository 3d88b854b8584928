//! kernels/attention_tc.cu (flash attention on tensor cores, f16/bf16 operands,
//! f32 accumulation; issue 5) against the CPU backend's attention.
//!
//! Cases: Tq and kv_len in {1, 7, 63, 65, 130, 257} (edges of the 64-row query
//! block and the 64-key tile), head_dim 64 and 128, several heads, B > 1 with
//! kv_index (beams sharing K/V rows, reordered), key masks with padding and a
//! fully masked kv row (uniform over kv_len, also under a causal limit), causal
//! with q_offset (also more queries than keys), a position_bias tensor, T5's
//! relative bias from the bucket table (bidirectional and causal), q/k/v as
//! strided views of fused projections (16 B aligned rows: cp.async path;
//! misaligned rows: element-wise path), f16 and bf16. Outputs start as NaN.
//! Two references per case, both the CPU's f32 op:
//! - on the f32 inputs (the op's meaning): rel L2 < 1e-2 (issue 5), per
//!   element 4e-2 + 4e-2 |ref|;
//! - on q/k/v already rounded to the operand dtype: what is left is the
//!   rounding of the probabilities to f16/bf16 before P.V and the f32
//!   summation order, so rel L2 < 5e-4 (f16) / 3e-3 (bf16) (measured on the
//!   emulator: 1.5e-4 / 1.2e-3; against the f32 op 3.7e-4 / 3.2e-3) — a
//!   fragment or pipeline bug that moves a few products fails here even when
//!   it hides under 1e-2.
//!
//! Then the dispatch: `AttentionPath::Auto` gives the tensor-core result bit
//! for bit for Tq > 1 with f16/bf16 operands, and the f32 tiled kernel's result
//! bit for bit with F32 operands (f32 models stay on the exact kernels).

mod common;

use common::*;
use encdec_core::backend::RelativeBiasSpec;
use encdec_core::testing::{random_normal, Tol};
use encdec_core::{AttentionParams, Backend, DType, Tensor};
use encdec_cuda::AttentionPath;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Bias {
    None,
    /// `position_bias` `[H, Tq, kv_len]`.
    Pos,
    /// T5's bucket table, bidirectional (32 buckets, max distance 128).
    RelBi,
    /// T5's bucket table, causal direction (32 buckets, max distance 128).
    RelCausal,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Layout {
    /// q `[B, Tq, HD]`, k, v `[Bkv, Tcap, HD]`.
    Contiguous,
    /// q a view at column 4 of `[B, Tq, HD + 8]`; k, v the halves of `[Bkv, Tcap, 2 HD]`
    /// (16 B aligned rows: the cp.async path).
    Fused,
    /// q at column 3 of `[B, Tq, HD + 3]`; k, v at columns 2 and 2 + HD of
    /// `[Bkv, Tcap, 2 HD + 2]` (misaligned rows: element-wise loads).
    Misaligned,
}

#[derive(Debug, Clone, Copy)]
struct Case {
    name: &'static str,
    batch: usize,
    bkv: usize,
    beams: Option<&'static [u32]>,
    tq: usize,
    tcap: usize,
    kv_len: usize,
    causal: bool,
    q_offset: usize,
    mask: bool,
    bias: Bias,
    layout: Layout,
    heads: usize,
    head_dim: usize,
}

#[rustfmt::skip]
const CASES: [Case; 12] = [
    Case { name: "encoder 7", batch: 2, bkv: 2, beams: None, tq: 7, tcap: 7, kv_len: 7, causal: false, q_offset: 0, mask: true, bias: Bias::Pos, layout: Layout::Contiguous, heads: 2, head_dim: 64 },
    Case { name: "encoder 63, T5 bias", batch: 1, bkv: 1, beams: None, tq: 63, tcap: 63, kv_len: 63, causal: false, q_offset: 0, mask: true, bias: Bias::RelBi, layout: Layout::Fused, heads: 2, head_dim: 128 },
    Case { name: "encoder 65, fully masked row", batch: 3, bkv: 3, beams: None, tq: 65, tcap: 65, kv_len: 65, causal: false, q_offset: 0, mask: true, bias: Bias::None, layout: Layout::Misaligned, heads: 3, head_dim: 64 },
    Case { name: "encoder 130, T5 bias", batch: 2, bkv: 2, beams: None, tq: 130, tcap: 130, kv_len: 130, causal: false, q_offset: 0, mask: true, bias: Bias::RelBi, layout: Layout::Fused, heads: 2, head_dim: 64 },
    Case { name: "cross 257, beams", batch: 4, bkv: 2, beams: Some(&[1, 0, 1, 0]), tq: 7, tcap: 260, kv_len: 257, causal: false, q_offset: 0, mask: true, bias: Bias::None, layout: Layout::Fused, heads: 2, head_dim: 64 },
    Case { name: "cross 130, beams reordered, D 128", batch: 3, bkv: 3, beams: Some(&[2, 0, 2]), tq: 65, tcap: 130, kv_len: 130, causal: false, q_offset: 0, mask: true, bias: Bias::Pos, layout: Layout::Misaligned, heads: 1, head_dim: 128 },
    Case { name: "decoder prefill 65, T5 bias", batch: 2, bkv: 2, beams: None, tq: 65, tcap: 70, kv_len: 65, causal: true, q_offset: 0, mask: false, bias: Bias::RelCausal, layout: Layout::Fused, heads: 2, head_dim: 64 },
    Case { name: "causal q_offset 70", batch: 1, bkv: 1, beams: None, tq: 63, tcap: 140, kv_len: 130, causal: true, q_offset: 70, mask: false, bias: Bias::Pos, layout: Layout::Contiguous, heads: 2, head_dim: 128 },
    Case { name: "decoder prefill 257, T5 bias", batch: 1, bkv: 1, beams: None, tq: 257, tcap: 257, kv_len: 257, causal: true, q_offset: 0, mask: true, bias: Bias::RelCausal, layout: Layout::Contiguous, heads: 1, head_dim: 64 },
    Case { name: "one query", batch: 2, bkv: 2, beams: None, tq: 1, tcap: 64, kv_len: 63, causal: true, q_offset: 62, mask: false, bias: Bias::RelBi, layout: Layout::Fused, heads: 2, head_dim: 64 },
    Case { name: "causal, fully masked row, q_offset", batch: 2, bkv: 2, beams: None, tq: 7, tcap: 20, kv_len: 20, causal: true, q_offset: 5, mask: true, bias: Bias::Pos, layout: Layout::Contiguous, heads: 1, head_dim: 64 },
    Case { name: "more queries than keys", batch: 1, bkv: 1, beams: None, tq: 130, tcap: 7, kv_len: 7, causal: true, q_offset: 0, mask: false, bias: Bias::None, layout: Layout::Fused, heads: 2, head_dim: 128 },
];

/// Additive mask [bkv, tcap]: ~20% padding (f32::MIN); with 2+ kv rows the
/// second one fully masked.
fn mask(seed: u64, bkv: usize, tcap: usize) -> Vec<f32> {
    let mut m: Vec<f32> = random_normal(seed, bkv * tcap, 1.0)
        .iter()
        .map(|&v| if v > 0.85 { f32::MIN } else { 0.0 })
        .collect();
    if bkv >= 2 {
        m[tcap..2 * tcap].fill(f32::MIN);
    }
    m
}

/// `v` rounded to `dtype` and back (the CPU backend's cast: round to nearest even).
fn rounded(v: &[f32], dtype: DType) -> Vec<f32> {
    let t = host_as(v.to_vec(), &[v.len()], dtype);
    cpu().cast(&t, DType::F32).unwrap().to_f32_vec().unwrap()
}

fn rel_l2(got: &[f32], want: &[f32]) -> f64 {
    let (mut num, mut den) = (0.0f64, 0.0f64);
    for (&a, &b) in got.iter().zip(want) {
        let d = a as f64 - b as f64;
        num += d * d;
        den += (b as f64) * (b as f64);
    }
    if got.iter().any(|x| !x.is_finite()) {
        return f64::INFINITY;
    }
    (num / den.max(1e-300)).sqrt()
}

const TOL_F32: Tol = Tol {
    rel_l2: 1e-2,
    abs: 4e-2,
    rel: 4e-2,
};

fn tol_rounded(dtype: DType) -> Tol {
    if dtype == DType::F16 {
        Tol {
            rel_l2: 5e-4,
            abs: 5e-3,
            rel: 5e-3,
        }
    } else {
        Tol {
            rel_l2: 3e-3,
            abs: 2e-2,
            rel: 2e-2,
        }
    }
}

/// Host inputs of one case (f32), as base tensors and the views the op reads.
struct Inputs {
    qb: Vec<f32>,
    qb_shape: [usize; 3],
    q_col: usize,
    kvb: Vec<f32>,
    kvb_shape: [usize; 3],
    k_col: usize,
    v_col: usize,
}

fn inputs(c: &Case, seed: u64) -> Inputs {
    let hd = c.heads * c.head_dim;
    let (q_extra, q_col, kv_w, k_col, v_col) = match c.layout {
        Layout::Contiguous => (0, 0, hd, 0, 0),
        Layout::Fused => (8, 4, 2 * hd, 0, hd),
        Layout::Misaligned => (3, 3, 2 * hd + 2, 2, 2 + hd),
    };
    let qb_shape = [c.batch, c.tq, hd + q_extra];
    let kvb_shape = [c.bkv, c.tcap, kv_w];
    // Contiguous: k and v are separate tensors; the "base" holds k then v.
    let n_kv = c.bkv * c.tcap * kv_w * if c.layout == Layout::Contiguous { 2 } else { 1 };
    Inputs {
        qb: random_normal(seed, qb_shape.iter().product(), 1.0),
        qb_shape,
        q_col,
        kvb: random_normal(seed + 1, n_kv, 1.0),
        kvb_shape,
        k_col,
        v_col,
    }
}

/// q, k, v views of `inp` (values possibly rounded) on backend `be`.
fn views(
    be: &dyn Backend,
    c: &Case,
    inp: &Inputs,
    round: Option<DType>,
) -> (Tensor, Tensor, Tensor) {
    views_as(be, c, inp, round, DType::F32)
}

/// [`views`] stored as `dtype` (f16/bf16: half activations, each value rounded
/// to nearest even).
fn views_as(
    be: &dyn Backend,
    c: &Case,
    inp: &Inputs,
    round: Option<DType>,
    dtype: DType,
) -> (Tensor, Tensor, Tensor) {
    let hd = c.heads * c.head_dim;
    let r = |v: &[f32]| match round {
        Some(dt) => rounded(v, dt),
        None => v.to_vec(),
    };
    let qb = be
        .upload(&host_as(r(&inp.qb), &inp.qb_shape, dtype))
        .unwrap();
    let q = qb.narrow(2, inp.q_col, hd).unwrap();
    let kv = r(&inp.kvb);
    if c.layout == Layout::Contiguous {
        let n = kv.len() / 2;
        let k = be
            .upload(&host_as(kv[..n].to_vec(), &inp.kvb_shape, dtype))
            .unwrap();
        let v = be
            .upload(&host_as(kv[n..].to_vec(), &inp.kvb_shape, dtype))
            .unwrap();
        (q, k, v)
    } else {
        let kvb = be.upload(&host_as(kv, &inp.kvb_shape, dtype)).unwrap();
        (
            q,
            kvb.narrow(2, inp.k_col, hd).unwrap(),
            kvb.narrow(2, inp.v_col, hd).unwrap(),
        )
    }
}

/// The optional inputs of a case on backend `be`: mask, position bias, bucket table, kv_index.
struct Extras {
    mask: Option<Tensor>,
    pos: Option<Tensor>,
    table: Option<Tensor>,
    index: Option<Tensor>,
}

fn extras(be: &dyn Backend, c: &Case, seed: u64) -> Extras {
    let up = |t: Tensor| be.upload(&t).unwrap();
    Extras {
        mask: c
            .mask
            .then(|| up(host(mask(seed + 2, c.bkv, c.tcap), &[c.bkv, c.tcap]))),
        pos: (c.bias == Bias::Pos).then(|| {
            up(host(
                random_normal(seed + 3, c.heads * c.tq * c.kv_len, 2.0),
                &[c.heads, c.tq, c.kv_len],
            ))
        }),
        table: matches!(c.bias, Bias::RelBi | Bias::RelCausal).then(|| {
            up(host(
                random_normal(seed + 4, 32 * c.heads, 2.0),
                &[32, c.heads],
            ))
        }),
        index: c
            .beams
            .map(|b| up(Tensor::from_u32(b.to_vec(), [b.len()]).unwrap())),
    }
}

fn params<'a>(c: &Case, e: &'a Extras, operand_dtype: DType) -> AttentionParams<'a> {
    AttentionParams {
        num_heads: c.heads,
        head_dim: c.head_dim,
        scale: 1.0 / (c.head_dim as f32).sqrt(),
        causal: c.causal,
        q_offset: c.q_offset,
        kv_len: c.kv_len,
        key_mask: e.mask.as_ref(),
        position_bias: e.pos.as_ref(),
        relative_bias: e.table.as_ref().map(|table| RelativeBiasSpec {
            table,
            num_buckets: 32,
            max_distance: 128,
            bidirectional: c.bias == Bias::RelBi,
        }),
        kv_index: e.index.as_ref(),
        operand_dtype,
    }
}

fn cpu_attention(c: &Case, inp: &Inputs, seed: u64, round: Option<DType>) -> Vec<f32> {
    let be: &dyn Backend = cpu();
    let (q, k, v) = views(be, c, inp, round);
    let e = extras(be, c, seed);
    let mut out = Tensor::zeros([c.batch, c.tq, c.heads * c.head_dim], DType::F32);
    be.attention(&q, &k, &v, &params(c, &e, DType::F32), &mut out)
        .unwrap();
    out.to_f32_vec().unwrap()
}

/// Runs `c` on the device with `path` and `operand` into a NaN-filled output.
fn device_attention(
    g: &Dut,
    c: &Case,
    inp: &Inputs,
    seed: u64,
    operand: DType,
    path: AttentionPath,
) -> Result<Vec<f32>, String> {
    let (q, k, v) = views(&**g, c, inp, None);
    let e = extras(&**g, c, seed);
    g.set_attention_path(path);
    let mut out = poisoned(g, &[c.batch, c.tq, c.heads * c.head_dim]);
    g.attention(&q, &k, &v, &params(c, &e, operand), &mut out)
        .map_err(|e| e.to_string())?;
    Ok(down(g, &out))
}

#[test]
fn attention_tc_matches_cpu_for_f16_and_bf16() {
    let g = gpu_or_skip!("attention_tc_matches_cpu_for_f16_and_bf16");
    if g.cuda.is_none() {
        eprintln!("NOTE attention_tc_matches_cpu_for_f16_and_bf16: the CPU stands in; only the harness is checked");
    }
    let mut f = Failures::default();
    for dtype in [DType::F16, DType::BF16] {
        let (mut worst32, mut worst_r) = (0.0f64, 0.0f64);
        for (ci, c) in CASES.iter().enumerate() {
            let seed = 9000 + 10 * ci as u64;
            let inp = inputs(c, seed);
            let want32 = cpu_attention(c, &inp, seed, None);
            let want_r = cpu_attention(c, &inp, seed, Some(dtype));
            let what = format!("attention_tc {} ({c:?}) {dtype:?}", c.name);
            let got = match device_attention(&g, c, &inp, seed, dtype, AttentionPath::TensorCore) {
                Ok(v) => v,
                Err(e) => {
                    f.push(format!("{what}: {e}"));
                    continue;
                }
            };
            let (e32, er) = (rel_l2(&got, &want32), rel_l2(&got, &want_r));
            eprintln!(
                "{:<40} {dtype:?}: rel L2 {e32:.2e} vs f32, {er:.2e} vs rounded q/k/v",
                c.name
            );
            worst32 = worst32.max(e32);
            worst_r = worst_r.max(er);
            f.check(&format!("{what} vs the f32 op"), &got, &want32, TOL_F32);
            if g.cuda.is_some() {
                f.check(
                    &format!("{what} vs the op on rounded q/k/v"),
                    &got,
                    &want_r,
                    tol_rounded(dtype),
                );
            }
        }
        eprintln!("worst {dtype:?}: rel L2 {worst32:.2e} vs f32, {worst_r:.2e} vs rounded q/k/v");
    }
    f.finish("attention_tc");
}

/// `Auto` takes the tensor-core kernel exactly when the call allows f16/bf16
/// operands and Tq > 1; f32 calls (f32 and int8 models) get today's kernels.
#[test]
fn auto_path_takes_tensor_cores_only_when_allowed() {
    let g = gpu_or_skip!("auto_path_takes_tensor_cores_only_when_allowed");
    let Some(_) = g.cuda.as_ref() else {
        eprintln!(
            "SKIP auto_path_takes_tensor_cores_only_when_allowed: no CUDA backend under test"
        );
        return;
    };
    let mut f = Failures::default();
    for ci in [0usize, 6, 9] {
        let c = &CASES[ci];
        let seed = 7000 + ci as u64;
        let inp = inputs(c, seed);
        let run = |operand, path| device_attention(&g, c, &inp, seed, operand, path).unwrap();
        let auto_f32 = run(DType::F32, AttentionPath::Auto);
        let exact_path = if c.tq == 1 {
            AttentionPath::SplitKv
        } else {
            AttentionPath::Tiled
        };
        f.exact(
            &format!("{} Auto F32 vs {exact_path:?}", c.name),
            &auto_f32,
            &run(DType::F32, exact_path),
        );
        for dtype in [DType::F16, DType::BF16] {
            let auto = run(dtype, AttentionPath::Auto);
            let want = if c.tq > 1 {
                run(dtype, AttentionPath::TensorCore)
            } else {
                run(DType::F32, AttentionPath::SplitKv)
            };
            f.exact(&format!("{} Auto {dtype:?}", c.name), &auto, &want);
        }
    }
    f.finish("auto path");
}

/// `AttentionPath::TensorCore` refuses what the kernel cannot do instead of
/// silently running another kernel.
#[test]
fn tensor_core_path_refuses_f32_operands_and_other_head_dims() {
    let g = gpu_or_skip!("tensor_core_path_refuses_f32_operands_and_other_head_dims");
    if g.cuda.is_none() {
        eprintln!("SKIP tensor_core_path_refuses_f32_operands_and_other_head_dims: no CUDA backend under test");
        return;
    }
    let c = Case {
        head_dim: 32,
        ..CASES[0]
    };
    let inp = inputs(&c, 1);
    let err = device_attention(&g, &c, &inp, 1, DType::F16, AttentionPath::TensorCore).unwrap_err();
    assert!(err.contains("head_dim") && err.contains("32"), "{err}");
    let c = CASES[0];
    let inp = inputs(&c, 1);
    let err = device_attention(&g, &c, &inp, 1, DType::F32, AttentionPath::TensorCore).unwrap_err();
    assert!(err.contains("f16/bf16"), "{err}");
    // Auto falls back to the f32 kernel for head_dim 32.
    let c = Case {
        head_dim: 32,
        ..CASES[0]
    };
    let inp = inputs(&c, 2);
    let got = device_attention(&g, &c, &inp, 2, DType::F16, AttentionPath::Auto).unwrap();
    check(
        "head_dim 32 on Auto",
        &got,
        &cpu_attention(&c, &inp, 2, None),
        TOL_REDUCE,
    );
}

/// Half activations: q, k, v stored in the operand dtype and a half out. On
/// the tensor-core path (Tq > 1) the kernel reads them as they are
/// (`attention_tc_*_hx_*`) and must give, bit for bit, the f32-input kernel on
/// the same (widened) values, which rounds them to the same halves; a half out
/// must be that f32 result rounded (the device cast), also from f32 inputs.
/// Tq = 1 (Auto: split-KV, q widened, half K/V) and the tiled kernel (half
/// inputs widened, half out through f32 scratch) give their f32 runs' bits too.
/// Every case's layouts run: aligned rows (16 B copies) and misaligned ones
/// (element-wise). Outputs start as NaN.
#[test]
fn half_inputs_and_outputs_give_the_f32_kernels_bits() {
    let g = gpu_or_skip!("half_inputs_and_outputs_give_the_f32_kernels_bits");
    let mut f = Failures::default();
    for dtype in [DType::F16, DType::BF16] {
        for (ci, c) in CASES.iter().enumerate() {
            let seed = 9500 + 10 * ci as u64;
            let inp = inputs(c, seed);
            let e = extras(&*g, c, seed);
            let p = params(c, &e, dtype);
            let shape = [c.batch, c.tq, c.heads * c.head_dim];
            let (q32, k32, v32) = views(&*g, c, &inp, Some(dtype));
            let (qh, kh, vh) = views_as(&*g, c, &inp, None, dtype);
            let paths: &[AttentionPath] = if c.tq > 1 {
                &[
                    AttentionPath::TensorCore,
                    AttentionPath::Auto,
                    AttentionPath::Tiled,
                ]
            } else {
                &[AttentionPath::Auto]
            };
            for &path in paths {
                g.set_attention_path(path);
                let what = format!("{} ({path:?}, {dtype:?})", c.name);
                let mut want = poisoned(&g, &shape);
                g.attention(&q32, &k32, &v32, &p, &mut want).unwrap();
                let mut got = poisoned(&g, &shape);
                if let Err(err) = g.attention(&qh, &kh, &vh, &p, &mut got) {
                    f.push(format!("{what}: half q/k/v: {err}"));
                    continue;
                }
                f.exact(
                    &format!("{what} half q/k/v, f32 out"),
                    &down(&g, &got),
                    &down(&g, &want),
                );
                let want_h = half_bits(&g, &g.cast(&want, dtype).unwrap());
                for (inputs, (q, k, v)) in [("half", (&qh, &kh, &vh)), ("f32", (&q32, &k32, &v32))]
                {
                    let mut got = poisoned_as(&g, &shape, dtype);
                    g.attention(q, k, v, &p, &mut got).unwrap();
                    if half_bits(&g, &got) != want_h {
                        f.push(format!("{what}: {inputs} q/k/v into a {dtype:?} out: not the f32 result rounded"));
                    }
                }
            }
        }
    }
    g.set_attention_path(AttentionPath::Auto);
    f.finish("half attention inputs and outputs");
}
