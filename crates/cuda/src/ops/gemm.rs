//! Launchers of `kernels/gemm.cu`, `kernels/gemm_tc.cu` and `kernels/gemm_i8_tc.cu`.
//!
//! `linear` picks, for [`GemmPath::Auto`]: the GEMV for M <= 8 (int8 weights
//! stay weight-only there); above it, on compute capability >= 8.0, the
//! tensor-core kernels: `linear_tc_*` for f16/bf16 weights (activations rounded
//! to the weight type) and `linear_i8_tc` for int8 weights (W8A8: activations
//! quantised per row by `quantize_i8_f32` into a scratch buffer first); the
//! FP32-FMA tiled kernel for f32 weights and below sm_80. `linear_gated` (a
//! gated FFN's two up projections and `act(gate) * up`) takes the same path
//! choice, each with a gated kernel of its own (one launch, no temporaries).
//! On the f16/bf16 tensor-core path both split K ([`split_k`]) when the output
//! tiles are fewer than the SMs (decode steps): the kernel writes per-chunk f32
//! sums to a pooled scratch block and `splitk_reduce_f32` /
//! `splitk_reduce_gated_f32` add them and apply the epilogue (two launches).
//!
//! Half activations (`Backend::activation_dtype`): x may be f32, f16 or bf16
//! and out f32, f16 or bf16. Every kernel rounds a half out in its epilogue
//! (`out_dt`, common.cuh's `store_out`). An x in the weight's half type goes
//! to the tensor-core kernels as it is (`linear_tc_*_hx`: the bits of the f32
//! kernel on the widened x, half the reads), a half x to the W8A8 path's
//! quantiser as it is (`quantize_i8_f16/bf16` widen exactly); every other half
//! x (the GEMV, the FP32-FMA kernels, x of the other half type) is widened into
//! a pooled f32 scratch block by `cast_*_f32` first.

use encdec_core::{Activation, DType, Error, Result};

use crate::launch::{grid_for, kargs, Dev};
use crate::memory::Block;
use crate::module::Family;

const F: Family = Family::Gemm;

/// A weight matrix on the device, by dtype (int8 with its row scales).
#[derive(Debug, Clone, Copy)]
pub(crate) enum WeightPtr {
    F32(u64),
    F16(u64),
    BF16(u64),
    I8 { data: u64, scales: u64 },
}

impl WeightPtr {
    /// (data, row scales or 0, kernel-name suffix).
    fn parts(self) -> (u64, u64, &'static str) {
        match self {
            WeightPtr::F32(p) => (p, 0, "f32"),
            WeightPtr::F16(p) => (p, 0, "f16"),
            WeightPtr::BF16(p) => (p, 0, "bf16"),
            WeightPtr::I8 { data, scales } => (data, scales, "i8"),
        }
    }
}

/// Which kernel `linear` uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GemmPath {
    /// GEMV for M <= 8; above it tensor cores (sm_80+) for f16/bf16 weights and
    /// for int8 weights (W8A8: per-row int8 activations), the tiled GEMM otherwise.
    Auto,
    /// Always the FP32-FMA tiled GEMM (f32 products of the widened weights;
    /// int8 weight-only, activations stay f32).
    Tiled,
}

/// Most rows the GEMV kernel serves (`GEMV_MAX_M`).
pub(crate) const GEMV_MAX_M: usize = 8;

/// Block tile of `linear_tc_*` (`TC_BM` x `TC_BN`) and its threads.
const TC_BM: usize = 64;
const TC_BN: usize = 128;
const TC_THREADS: u32 = 256;
/// K step of `linear_tc_*` (`TC_BK`): split-K chunks are multiples of it.
const TC_BK: usize = 32;
/// Split-K: chunks of at least this many k, at most this many splits.
const SPLITK_MIN_CHUNK: usize = 256;
const SPLITK_MAX: usize = 16;
/// Block tile of `linear_i8_tc` (`I8TC_BM` x `I8TC_BN`), 256 threads.
const I8TC_BM: usize = 64;
const I8TC_BN: usize = 128;

fn dims_i32(op: &str, dims: &[usize]) -> Result<()> {
    if dims.iter().any(|&d| d > i32::MAX as usize) {
        return Err(Error::Invalid(format!(
            "{op}: dimensions {dims:?} exceed the kernels' 32-bit range"
        )));
    }
    Ok(())
}

/// Split-K for `linear_tc_*` / `linear_gated_tc_*`: `(splits, k_chunk)` when
/// the output tiles alone leave SMs idle (a decode step: M of 9..64 rows, a
/// 1024 x 1024 projection is 8 blocks on 132 SMs). Blocks are counted with the
/// linear kernel's 64 x 128 tile for both kernels, so `linear_gated` splits
/// exactly like the two `linear`s it equals bit for bit. splits =
/// min(ceil(SMs / blocks) (1-2 blocks per SM), K / 256, 16), then k_chunk =
/// ceil(K / splits) rounded up to TC_BK and splits = ceil(K / k_chunk) (no
/// empty chunk); None below 2. Depends only on M, N, K and the device.
/// `ENCDEC_CUDA_SPLITK=0` turns split-K off (read once), so that a GPU session
/// can time decode steps with and without it (scripts/gpu-check.sh).
fn split_k(dev: &Dev, m: usize, n: usize, k: usize) -> Option<(usize, usize)> {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    if !*ON.get_or_init(|| std::env::var("ENCDEC_CUDA_SPLITK").as_deref() != Ok("0")) {
        return None;
    }
    let blocks = n.div_ceil(TC_BN) * m.div_ceil(TC_BM);
    let sms = dev.info.multiprocessors;
    if blocks >= sms {
        return None;
    }
    let splits = sms
        .div_ceil(blocks)
        .min(k / SPLITK_MIN_CHUNK)
        .min(SPLITK_MAX);
    if splits < 2 {
        return None;
    }
    let k_chunk = k.div_ceil(splits).next_multiple_of(TC_BK);
    let splits = k.div_ceil(k_chunk);
    (splits >= 2).then_some((splits, k_chunk))
}

/// The kernels' `out_dt` code (common.cuh's `OUT_*`).
fn out_code(op: &str, dt: DType) -> Result<i32> {
    match dt {
        DType::F32 => Ok(0),
        DType::F16 => Ok(1),
        DType::BF16 => Ok(2),
        d => Err(Error::Invalid(format!(
            "{op}: out must be f32, f16 or bf16, got {d}"
        ))),
    }
}

/// x as f32: itself when f32, else widened (exactly) into a pooled scratch
/// block, which the caller keeps until its launches are queued.
fn widened(dev: &Dev, x: u64, x_dt: DType, m: usize, k: usize) -> Result<(u64, Option<Block>)> {
    if x_dt == DType::F32 {
        return Ok((x, None));
    }
    let blk = dev.alloc(m * k * 4)?;
    super::elementwise::cast(dev, x_dt, DType::F32, x, blk.ptr, m * k)?;
    Ok((blk.ptr, Some(blk)))
}

/// What a linear kernel does with its result (every path fuses it into the
/// epilogue: the bits of the unfused ops, one pass over `out` less).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Epilogue {
    /// `out = act(v)`.
    Store(Activation),
    /// `out += v` (`Backend::linear_add`, the residual epilogue).
    Accumulate,
}

/// `out[m, n] = act(x[m, :] . w[n, :] (* scale[n]) + bias[n])`, or `+=` that
/// without an activation ([`Epilogue`]); `bias` 0 for none. x is `x_dt` and
/// out `out_dt` (f32, f16 or bf16; f32 with [`Epilogue::Accumulate`]).
#[allow(clippy::too_many_arguments)]
pub(crate) fn linear(
    dev: &Dev,
    x: u64,
    x_dt: DType,
    w: WeightPtr,
    bias: u64,
    out: u64,
    out_dt: DType,
    m: usize,
    n: usize,
    k: usize,
    epilogue: Epilogue,
    path: GemmPath,
) -> Result<()> {
    let (act, accumulate) = match epilogue {
        Epilogue::Store(act) => (act, 0i32),
        Epilogue::Accumulate => (Activation::Identity, 1i32),
    };
    let oc = out_code("linear", out_dt)?;
    if accumulate == 1 && oc != 0 {
        return Err(Error::Invalid(format!(
            "linear_add: out (the residual stream) must be f32, got {out_dt}"
        )));
    }
    if m == 0 || n == 0 {
        return Ok(());
    }
    let act_code = super::elementwise::act_code(act);
    dims_i32("linear", &[m, n, k])?;
    let gemv = path == GemmPath::Auto && m <= GEMV_MAX_M;
    let (mi, ni, ki) = (m as i32, n as i32, k as i32);
    // mma.sync bf16 and cp.async need sm_80 (the emulator reports (0, 0)).
    let tensor_cores = dev.kernels.is_none() || dev.info.compute_capability.0 >= 8;
    if path == GemmPath::Auto && !gemv && tensor_cores {
        let tc = match (w, x_dt) {
            (WeightPtr::F16(p), DType::F16) => Some((p, "linear_tc_f16_hx")),
            (WeightPtr::BF16(p), DType::BF16) => Some((p, "linear_tc_bf16_hx")),
            (WeightPtr::F16(p), _) => Some((p, "linear_tc_f16")),
            (WeightPtr::BF16(p), _) => Some((p, "linear_tc_bf16")),
            _ => None,
        };
        if let Some((wp, name)) = tc {
            // The _hx kernels read x as it is; the others take f32.
            let (x, _wide) = if name.ends_with("_hx") {
                (x, None)
            } else {
                widened(dev, x, x_dt, m, k)?
            };
            let (gx, gy) = (n.div_ceil(TC_BN) as u32, m.div_ceil(TC_BM) as u32);
            let Some((splits, k_chunk)) = split_k(dev, m, n, k) else {
                let (kc, nop) = (0i32, 0u64);
                return dev.launch(
                    Family::GemmTc,
                    name,
                    (gx, gy, 1),
                    TC_THREADS,
                    0,
                    &mut kargs![x, wp, bias, out, mi, ni, ki, act_code, accumulate, kc, nop, oc],
                );
            };
            // Split-K: f32 partial sums [splits, M, N] in a pooled scratch block
            // (back to the pool after both launches are queued, as in W8A8),
            // then the reduce with the epilogue.
            let ws = dev.alloc(splits * m * n * 4)?;
            let (pp, kc, sz) = (ws.ptr, k_chunk as i32, splits as i32);
            let (ident, none) = (super::elementwise::act_code(Activation::Identity), 0i32);
            dev.launch(
                Family::GemmTc,
                name,
                (gx, gy, splits as u32),
                TC_THREADS,
                0,
                &mut kargs![x, wp, bias, out, mi, ni, ki, ident, none, kc, pp, oc],
            )?;
            return dev.launch(
                Family::GemmTc,
                "splitk_reduce_f32",
                (grid_for(m * n, 256), 1, 1),
                256,
                0,
                &mut kargs![pp, bias, out, mi, ni, sz, act_code, accumulate, oc],
            );
        }
        if let WeightPtr::I8 { data, scales } = w {
            // W8A8: x -> per-row int8 + f32 scales (kernels/elementwise.cu), then
            // the int8 tensor-core GEMM with both scales and the bias fused. The
            // scratch blocks go back to the pool after the launches are queued
            // (one stream: later users run after these kernels).
            // A half x is quantised as it is (its exact widening's qx, sx).
            let qx = dev.alloc(m * k)?;
            let sx = dev.alloc(m * 4)?;
            super::elementwise::quantize(dev, x_dt, x, qx.ptr, sx.ptr, m, k)?;
            let grid = (n.div_ceil(I8TC_BN) as u32, m.div_ceil(I8TC_BM) as u32, 1);
            let (qp, sp) = (qx.ptr, sx.ptr);
            return dev.launch(
                Family::GemmI8Tc,
                "linear_i8_tc",
                grid,
                TC_THREADS,
                0,
                &mut kargs![qp, sp, data, scales, bias, out, mi, ni, ki, act_code, accumulate, oc],
            );
        }
    }
    let (x, _wide) = widened(dev, x, x_dt, m, k)?;
    let (wp, scales, suffix) = w.parts();
    let name: &'static str = match (gemv, suffix) {
        (true, "f32") => "gemv_f32",
        (true, "f16") => "gemv_f16",
        (true, "bf16") => "gemv_bf16",
        (true, _) => "gemv_i8",
        (false, "f32") => "linear_f32",
        (false, "f16") => "linear_f16",
        (false, "bf16") => "linear_bf16",
        (false, _) => "linear_i8",
    };
    let grid = if gemv {
        (n.div_ceil(8) as u32, 1, 1)
    } else {
        (n.div_ceil(64) as u32, m.div_ceil(64) as u32, 1)
    };
    dev.launch(
        F,
        name,
        grid,
        256,
        0,
        &mut kargs![x, wp, scales, bias, out, mi, ni, ki, act_code, accumulate, oc],
    )
}

/// `out[m, n] = act(x[m, :] . wg[n, :] (* sg[n])) * (x[m, :] . wu[n, :] (* su[n]))`
/// (`Backend::linear_gated`), one kernel on every path: the GEMV for M <= 8,
/// the tensor-core kernels (f16/bf16; int8 W8A8 on one quantised x) above it,
/// the FP32-FMA tiled kernel otherwise. Each computes both sums as `linear`'s
/// kernel on that path does, and the epilogue as `gated_activation`: bit for bit
/// two [`linear`]s then `gated_activation` with the same path.
/// x is `x_dt` and out `out_dt` (f32, f16 or bf16), as for [`linear`].
#[allow(clippy::too_many_arguments)]
pub(crate) fn linear_gated(
    dev: &Dev,
    x: u64,
    x_dt: DType,
    wg: WeightPtr,
    wu: WeightPtr,
    out: u64,
    out_dt: DType,
    m: usize,
    n: usize,
    k: usize,
    act: Activation,
    path: GemmPath,
) -> Result<()> {
    let oc = out_code("linear_gated", out_dt)?;
    if m == 0 || n == 0 {
        return Ok(());
    }
    let act_code = super::elementwise::act_code(act);
    dims_i32("linear_gated", &[m, n, k])?;
    let gemv = path == GemmPath::Auto && m <= GEMV_MAX_M;
    let (mi, ni, ki) = (m as i32, n as i32, k as i32);
    let tensor_cores = dev.kernels.is_none() || dev.info.compute_capability.0 >= 8;
    // Both tiles of a gated block cover half as many output columns.
    let (tc_bn, i8tc_bn) = (TC_BN / 2, I8TC_BN / 2);
    if path == GemmPath::Auto && !gemv && tensor_cores {
        let tc = match (wg, wu, x_dt) {
            (WeightPtr::F16(g), WeightPtr::F16(u), DType::F16) => {
                Some((g, u, "linear_gated_tc_f16_hx"))
            }
            (WeightPtr::BF16(g), WeightPtr::BF16(u), DType::BF16) => {
                Some((g, u, "linear_gated_tc_bf16_hx"))
            }
            (WeightPtr::F16(g), WeightPtr::F16(u), _) => Some((g, u, "linear_gated_tc_f16")),
            (WeightPtr::BF16(g), WeightPtr::BF16(u), _) => Some((g, u, "linear_gated_tc_bf16")),
            _ => None,
        };
        if let Some((gp, up, name)) = tc {
            let (x, _wide) = if name.ends_with("_hx") {
                (x, None)
            } else {
                widened(dev, x, x_dt, m, k)?
            };
            let (gx, gy) = (n.div_ceil(tc_bn) as u32, m.div_ceil(TC_BM) as u32);
            // The split decision of `linear` (its tile), so the sums stay those
            // of two `linear`s.
            let Some((splits, k_chunk)) = split_k(dev, m, n, k) else {
                let (kc, nop) = (0i32, 0u64);
                return dev.launch(
                    Family::GemmTc,
                    name,
                    (gx, gy, 1),
                    TC_THREADS,
                    0,
                    &mut kargs![x, gp, up, out, mi, ni, ki, act_code, kc, nop, oc],
                );
            };
            // Split-K: gate and up sums [splits, M, 2N] (per row N gate sums,
            // then N up sums), then the reduce with gated_activation's epilogue.
            let ws = dev.alloc(splits * m * 2 * n * 4)?;
            let (pp, kc, sz) = (ws.ptr, k_chunk as i32, splits as i32);
            dev.launch(
                Family::GemmTc,
                name,
                (gx, gy, splits as u32),
                TC_THREADS,
                0,
                &mut kargs![x, gp, up, out, mi, ni, ki, act_code, kc, pp, oc],
            )?;
            return dev.launch(
                Family::GemmTc,
                "splitk_reduce_gated_f32",
                (grid_for(m * n, 256), 1, 1),
                256,
                0,
                &mut kargs![pp, out, mi, ni, sz, act_code, oc],
            );
        }
        if let (
            WeightPtr::I8 {
                data: gd,
                scales: gs,
            },
            WeightPtr::I8 {
                data: ud,
                scales: us,
            },
        ) = (wg, wu)
        {
            // W8A8 as in `linear`, x quantised once for both weights (the same
            // bits as quantising it for each).
            let qx = dev.alloc(m * k)?;
            let sx = dev.alloc(m * 4)?;
            super::elementwise::quantize(dev, x_dt, x, qx.ptr, sx.ptr, m, k)?;
            let grid = (n.div_ceil(i8tc_bn) as u32, m.div_ceil(I8TC_BM) as u32, 1);
            let (qp, sp) = (qx.ptr, sx.ptr);
            return dev.launch(
                Family::GemmI8Tc,
                "linear_gated_i8_tc",
                grid,
                TC_THREADS,
                0,
                &mut kargs![qp, sp, gd, gs, ud, us, out, mi, ni, ki, act_code, oc],
            );
        }
    }
    let (x, _wide) = widened(dev, x, x_dt, m, k)?;
    let ((gp, gs, suffix), (up, us, up_suffix)) = (wg.parts(), wu.parts());
    if suffix != up_suffix {
        return Err(Error::Invalid(
            "linear_gated: the gate and up weights differ in dtype".into(),
        ));
    }
    let name: &'static str = match (gemv, suffix) {
        (true, "f32") => "gemv_gated_f32",
        (true, "f16") => "gemv_gated_f16",
        (true, "bf16") => "gemv_gated_bf16",
        (true, _) => "gemv_gated_i8",
        (false, "f32") => "linear_gated_f32",
        (false, "f16") => "linear_gated_f16",
        (false, "bf16") => "linear_gated_bf16",
        (false, _) => "linear_gated_i8",
    };
    let grid = if gemv {
        (n.div_ceil(8) as u32, 1, 1)
    } else {
        // 64 x 32 outputs per block (32 gate + 32 up weight rows).
        (n.div_ceil(32) as u32, m.div_ceil(64) as u32, 1)
    };
    dev.launch(
        F,
        name,
        grid,
        256,
        0,
        &mut kargs![x, gp, gs, up, us, out, mi, ni, ki, act_code, oc],
    )
}

/// `out[b] = a[b] @ B[b]` with B element (b, k, n) at `b + b*sb + k*sk + n*sn`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn batched_matmul(
    dev: &Dev,
    a: u64,
    b: u64,
    out: u64,
    batch: usize,
    m: usize,
    n: usize,
    k: usize,
    strides: [usize; 3],
) -> Result<()> {
    if batch == 0 || m == 0 || n == 0 {
        return Ok(());
    }
    dims_i32("batched_matmul", &[m, n, k])?;
    let [sb, sk, sn] = strides.map(|s| s as i64);
    dev.launch(
        F,
        "batched_matmul_f32",
        (n.div_ceil(64) as u32, m.div_ceil(64) as u32, batch as u32),
        256,
        0,
        &mut kargs![a, b, out, m as i32, n as i32, k as i32, sb, sk, sn],
    )
}
