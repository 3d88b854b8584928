//! Launchers of `kernels/attention.cu` (tiled, any Tq),
//! `kernels/attention_tc.cu` (tensor cores, f16/bf16 operands, head_dim 64/128)
//! and `kernels/decode_attention.cu` (key axis split across blocks, then combined).
//! K/V may be f32, f16 or bf16 (half KV caches): the tiled and split kernels
//! have a variant per K/V dtype; the tensor-core kernel reads f32 q/k/v, or
//! q, k and v all of the operand dtype as they are (half activations,
//! `attention_tc_*_hx_*`). Only the tensor-core kernel writes a half out; for
//! the others the launcher writes f32 into pooled scratch and casts it.

use encdec_core::{DType, Error, Result};

use crate::launch::{kargs, Dev, KArg};
use crate::module::Family;

/// `AttnArgs` of `kernels/common.cuh` (`#[repr(C)]`, passed by value).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub(crate) struct AttnArgs {
    pub q: u64,
    pub k: u64,
    pub v: u64,
    pub out: u64,
    pub key_mask: u64,
    pub pos_bias: u64,
    pub kv_index: u64,
    /// f32 `[rel_buckets, heads]` or 0 (T5's relative position bias table).
    pub rel_table: u64,
    /// u32 `[2]` `(q_offset, kv_len)` read by the kernels, or 0 (`attention_at`).
    pub positions: u64,
    pub q_sb: i64,
    pub q_st: i64,
    pub k_sb: i64,
    pub k_st: i64,
    pub v_sb: i64,
    pub v_st: i64,
    pub batch: i32,
    pub tq: i32,
    pub heads: i32,
    pub head_dim: i32,
    pub tcap: i32,
    pub kv_len: i32,
    pub causal: i32,
    pub q_offset: i32,
    pub scale: f32,
    pub rel_buckets: i32,
    pub rel_max_distance: i32,
    pub rel_bidirectional: i32,
    /// `RelativeBiasSpec::log_ratio()`: the f32 `ln(max_distance / max_exact)`.
    pub rel_log_ratio: f32,
    /// out's dtype as `OUT_*` of common.cuh (0 f32, 1 f16, 2 bf16): only the
    /// tensor-core kernel writes a half out; the launcher gives the others f32.
    pub out_dt: i32,
}
// SAFETY: #[repr(C)] with the field order and types of `struct AttnArgs`.
unsafe impl KArg for AttnArgs {}

/// Which attention kernel runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttentionPath {
    /// Split-KV (flash-decoding) for Tq = 1; for Tq > 1 the tensor-core kernel
    /// when the call allows f16/bf16 operands (`AttentionParams::operand_dtype`),
    /// K/V are f32, head_dim is 64 or 128 and the device is sm_80+; else tiled.
    Auto,
    /// Always the tiled kernel.
    Tiled,
    /// Always split-KV + combine.
    SplitKv,
    /// Always the tensor-core kernel (any Tq); an error where it cannot run
    /// (f32 operands, f16/bf16 K/V, head_dim not 64/128, below sm_80). For
    /// tests and benches.
    TensorCore,
}

/// `AttnArgs::out_dt` codes (`OUT_*` of common.cuh).
pub(crate) const OUT_F32: i32 = 0;
pub(crate) const OUT_F16: i32 = 1;
pub(crate) const OUT_BF16: i32 = 2;

/// Head dims `attention_tc.cu` is instantiated for.
pub(crate) const TC_HEAD_DIMS: [usize; 2] = [64, 128];
/// Query rows per block of `attention_tc.cu` (4 warps x 16) and keys per tile.
const TC_BQ: usize = 64;
const TC_BK: usize = 64;

/// Largest head_dim the kernels hold in registers.
pub(crate) const MAX_HEAD_DIM: usize = 256;

/// Warps (query rows) per block of the tiled kernel; threads per split block.
const WARPS: usize = 4;

fn variant(d: usize) -> usize {
    match d {
        0..=32 => 0,
        33..=64 => 1,
        65..=128 => 2,
        _ => 3,
    }
}

/// The `attention_tc.cu` kernel for `operand` (F16/BF16), q dtype `q` and K/V
/// dtype `kv` and head_dim `d`, or why there is none: f32 q/k/v (rounded as
/// staged), or q, k, v all of the operand dtype (read as they are).
fn tc_kernel(
    dev: &Dev,
    operand: DType,
    q: DType,
    kv: DType,
    d: usize,
) -> std::result::Result<&'static str, String> {
    let hx = q == operand && kv == operand;
    if !hx && (q != DType::F32 || kv != DType::F32) {
        // Its loaders take f32 tiles or tiles of the operand type; half K/V
        // with an f32 q go to the tiled kernel instead (Auto).
        return Err(format!(
            "the tensor-core attention reads f32 q/k/v or q/k/v of the operand dtype, \
             not q {q} with k/v {kv} (use Auto or Tiled)"
        ));
    }
    if dev.kernels.is_some() && dev.info.compute_capability.0 < 8 {
        return Err(format!(
            "the tensor-core attention needs sm_80+, {} is sm_{}{}",
            dev.info.label(),
            dev.info.compute_capability.0,
            dev.info.compute_capability.1
        ));
    }
    match (operand, d, hx) {
        (DType::F16, 64, false) => Ok("attention_tc_f16_d64"),
        (DType::F16, 128, false) => Ok("attention_tc_f16_d128"),
        (DType::BF16, 64, false) => Ok("attention_tc_bf16_d64"),
        (DType::BF16, 128, false) => Ok("attention_tc_bf16_d128"),
        (DType::F16, 64, true) => Ok("attention_tc_f16_hx_d64"),
        (DType::F16, 128, true) => Ok("attention_tc_f16_hx_d128"),
        (DType::BF16, 64, true) => Ok("attention_tc_bf16_hx_d64"),
        (DType::BF16, 128, true) => Ok("attention_tc_bf16_hx_d128"),
        (DType::F16 | DType::BF16, _, _) => Err(format!(
            "the tensor-core attention supports head_dim {TC_HEAD_DIMS:?}, not {d}"
        )),
        _ => Err(format!(
            "the tensor-core attention needs f16/bf16 operands (operand_dtype {operand:?})"
        )),
    }
}

/// Dynamic shared memory of the tensor-core kernel: f32 inputs, an f32 K/V
/// stage and one f16/bf16 tile each (rows of d + 8); half inputs, two tiles
/// each; plus the mask and relative bias of a tile.
fn tc_smem(d: usize, half_inputs: bool) -> usize {
    let tiles = if half_inputs {
        4 * TC_BK * (d + 8) * 2
    } else {
        2 * TC_BK * d * 4 + 2 * TC_BK * (d + 8) * 2
    };
    tiles + (TC_BK + TC_BQ + TC_BK) * 4
}

/// The tensor-core kernel `attention` runs for these dtypes, `tq` query rows
/// and `path`, if any (Auto falls back where it cannot run, also on a device
/// whose shared-memory opt-in is below the kernel's); TensorCore: an error
/// where it cannot.
fn tc_choice(
    dev: &Dev,
    operand: DType,
    q: DType,
    kv: DType,
    d: usize,
    tq: usize,
    path: AttentionPath,
) -> Result<Option<(&'static str, usize)>> {
    let with_smem = |name| (name, tc_smem(d, q != DType::F32));
    match path {
        AttentionPath::Auto if tq > 1 => Ok(tc_kernel(dev, operand, q, kv, d)
            .ok()
            .map(with_smem)
            .filter(|&(_, smem)| smem <= dev.max_smem_optin as usize)),
        AttentionPath::TensorCore => tc_kernel(dev, operand, q, kv, d)
            .map(|n| Some(with_smem(n)))
            .map_err(|why| {
                Error::Invalid(format!(
                    "attention (AttentionPath::TensorCore) on {}: {why}",
                    dev.info.label()
                ))
            }),
        _ => Ok(None),
    }
}

/// Whether [`attention`] reads a half q as it is: the tensor-core kernel runs
/// on q, k, v of the operand dtype. Otherwise the caller widens a half q first
/// (every other kernel reads f32 q).
pub(crate) fn reads_half_q(
    dev: &Dev,
    operand: DType,
    q: DType,
    kv: DType,
    d: usize,
    tq: usize,
    path: AttentionPath,
) -> bool {
    q != DType::F32 && matches!(tc_choice(dev, operand, q, kv, d, tq, path), Ok(Some(_)))
}

/// Runs attention; `a` is fully checked by the caller. `operand` is the call's
/// `AttentionParams::operand_dtype` (the rounding it allows); `q` the dtype of
/// q (F32, or half where [`reads_half_q`] says so); `kv` the dtype of K and V
/// (F32, F16 or BF16, both the same: checked by the caller); `a.out_dt` out's.
pub(crate) fn attention(
    dev: &Dev,
    a: &AttnArgs,
    operand: DType,
    q: DType,
    kv: DType,
    path: AttentionPath,
) -> Result<()> {
    let (b, tq, h, d) = (
        a.batch as usize,
        a.tq as usize,
        a.heads as usize,
        a.head_dim as usize,
    );
    if b == 0 || tq == 0 {
        return Ok(());
    }
    if d > MAX_HEAD_DIM {
        return Err(Error::Invalid(format!(
            "attention: head_dim {d} > {MAX_HEAD_DIM} is not supported on {}",
            dev.info.label()
        )));
    }
    // Every kernel's grid has the batch (or batch x Tq, <= b when it fits) and
    // the heads in its y/z dims.
    if b > 65535 || h > 65535 {
        return Err(Error::Invalid(format!(
            "attention: batch {b} x heads {h} exceed the grid limits on {}",
            dev.info.label()
        )));
    }
    let tc = tc_choice(dev, operand, q, kv, d, tq, path)?;
    if tc.is_none() && q != DType::F32 {
        return Err(Error::Invalid(format!(
            "attention: a {q} q reaches only the tensor-core kernel (the caller widens it)"
        )));
    }
    if tc.is_none() && a.out_dt != OUT_F32 {
        // These kernels write f32: into pooled scratch, then rounded into out.
        let n = b * tq * h * d;
        let blk = dev.alloc(n * 4)?;
        let to = if a.out_dt == OUT_F16 {
            DType::F16
        } else {
            DType::BF16
        };
        let f32_args = AttnArgs {
            out: blk.ptr,
            out_dt: OUT_F32,
            ..*a
        };
        attention(dev, &f32_args, operand, q, kv, path)?;
        return super::elementwise::cast(dev, DType::F32, to, blk.ptr, a.out, n);
    }
    if let Some((name, tc_smem)) = tc {
        return dev.launch(
            Family::AttentionTc,
            name,
            (tq.div_ceil(TC_BQ) as u32, h as u32, b as u32),
            128,
            tc_smem as u32,
            &mut kargs![*a],
        );
    }
    let split = match path {
        AttentionPath::Auto => tq == 1,
        AttentionPath::Tiled | AttentionPath::TensorCore => false,
        AttentionPath::SplitKv => true,
    };
    if split && b * tq <= 65535 {
        return split_kv(dev, a, kv, b, tq, h, d);
    }
    let names = match kv {
        DType::F16 => [
            "attention_kvf16_d32",
            "attention_kvf16_d64",
            "attention_kvf16_d128",
            "attention_kvf16_d256",
        ],
        DType::BF16 => [
            "attention_kvbf16_d32",
            "attention_kvbf16_d64",
            "attention_kvbf16_d128",
            "attention_kvbf16_d256",
        ],
        _ => [
            "attention_f32_d32",
            "attention_f32_d64",
            "attention_f32_d128",
            "attention_f32_d256",
        ],
    };
    let smem = (32 * (d + 1) + 32 * d + WARPS * d) * 4;
    dev.launch(
        Family::Attention,
        names[variant(d)],
        (tq.div_ceil(WARPS) as u32, h as u32, b as u32),
        (WARPS * 32) as u32,
        smem as u32,
        &mut kargs![*a],
    )
}

/// Flash-decoding: partial softmax states per key split, then a combine kernel.
fn split_kv(
    dev: &Dev,
    a: &AttnArgs,
    kv: DType,
    b: usize,
    tq: usize,
    h: usize,
    d: usize,
) -> Result<()> {
    // Keys any query row attends to; with positions read on the device, any
    // of the cache's (a recorded step's launch must fit every replay).
    let kv_hi = if a.positions != 0 {
        a.tcap as usize
    } else if a.causal != 0 {
        (a.kv_len as usize).min(a.q_offset as usize + tq)
    } else {
        a.kv_len as usize
    };
    // Aim for >= 2 blocks per multiprocessor, with >= 128 keys (4 warps x 32) per split.
    let sms = dev.info.multiprocessors.max(1);
    let want = (2 * sms).div_ceil(b * tq * h).max(1);
    let splits = want.min(kv_hi.div_ceil(128)).clamp(1, 256);
    let keys_per_split = kv_hi.div_ceil(splits).div_ceil(32) * 32;
    let splits = kv_hi.div_ceil(keys_per_split).max(1);
    let slots = b * tq * h * splits;
    let pm = dev.alloc(slots * 4)?;
    let pl = dev.alloc(slots * 4)?;
    let po = dev.alloc(slots * d * 4)?;
    // The combine kernel reads V too (the uniform average of a fully masked row).
    let (names, combine) = match kv {
        DType::F16 => (
            [
                "attention_split_kvf16_d32",
                "attention_split_kvf16_d64",
                "attention_split_kvf16_d128",
                "attention_split_kvf16_d256",
            ],
            "attention_combine_kvf16",
        ),
        DType::BF16 => (
            [
                "attention_split_kvbf16_d32",
                "attention_split_kvbf16_d64",
                "attention_split_kvbf16_d128",
                "attention_split_kvbf16_d256",
            ],
            "attention_combine_kvbf16",
        ),
        _ => (
            [
                "attention_split_f32_d32",
                "attention_split_f32_d64",
                "attention_split_f32_d128",
                "attention_split_f32_d256",
            ],
            "attention_combine_f32",
        ),
    };
    let smem = (d + WARPS * d + 2 * WARPS) * 4;
    dev.launch(
        Family::DecodeAttention,
        names[variant(d)],
        (splits as u32, h as u32, (b * tq) as u32),
        (WARPS * 32) as u32,
        smem as u32,
        &mut kargs![*a, keys_per_split as i32, pm.ptr, pl.ptr, po.ptr],
    )?;
    dev.launch(
        Family::DecodeAttention,
        combine,
        (h as u32, (b * tq) as u32, 1),
        128,
        0,
        &mut kargs![*a, splits as i32, pm.ptr, pl.ptr, po.ptr],
    )
}
