//! [`CudaBackend`]: the `Backend` trait on one CUDA device.
//!
//! Every method first checks each argument's device, dtype, contiguity and
//! shape, in the order and with the errors of the CPU backend
//! (`crates/cpu/src/backend.rs`, the reference; shapes and ranges through the
//! same `encdec_core::checks`), then enqueues kernels of
//! `crate::ops` on the backend's one stream. Only `download` and `topk` wait
//! for the device. u32 tensors (ids, kv_index, beam indices) keep a host copy
//! (`CudaBuffer::ids`), so range checks of ids need no device read.
//!
//! Dtypes: activations f32, or f16/bf16 half activations where
//! `Backend::activation_dtype` says (below): `linear*`, `attention` and `norm`
//! read and write them (x, q/k/v, out). `linear` and `embedding` weights f32, f16, bf16 or
//! int8 (per-row scales); norm weights and biases f32, f16 or bf16 (non-f32 ones
//! are converted on the device once per call, as the CPU backend does).
//!
//! KV caches: [`Backend::kv_cache_dtype`] is the attention operand dtype for
//! f16/bf16 models (`write_rows` rounds the f32 steps into them) and f32
//! otherwise; `ENCDEC_CUDA_KV_F32=1`, read when the backend is created, keeps
//! f32 caches for half models too.
//!
//! Half activations: [`Backend::activation_dtype`] is likewise the operand
//! dtype of f16/bf16 models: their encoders store q/k/v, the attention output
//! and the FFN's inner activations in it. The tensor-core GEMM and attention
//! round exactly those tensors to that dtype when they read them, so their
//! results do not change and the bytes halve; `ENCDEC_CUDA_ACT_F32=1` (read
//! at creation) keeps f32 activations.
//!
//! Recording (CUDA graphs, `crate::graph`): the methods that cross to or from
//! the host check [`Driver::host_guard`] first, so they fail with a clear
//! error while recording instead of breaking the stream capture.

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;

use cudarc::driver::{sys::CUdevice_attribute, CudaContext};
use encdec_core::checks::{self, same_count};
use encdec_core::profile::DevicePeaks;
use encdec_core::{
    Activation, AttentionParams, Backend, DType, Device, DeviceTimestamp, Error, HostStorage,
    NormKind, Result, Storage, Tensor,
};
use half::{bf16, f16};

use crate::driver::{Driver, Mark};
use crate::graph::Graph;
use crate::launch::Dev;
use crate::memory::{cuda_err, Block, CudaBuffer, MemoryStats, Pool};
use crate::module::Kernels;
use crate::ops::attention::{AttentionPath, AttnArgs};
use crate::ops::gemm::{Epilogue, GemmPath, WeightPtr};
use crate::ops::{self, topk};
use crate::staging::Staging;
use crate::{driver_present, info_of, DeviceInfo};

/// The CUDA backend of one device. A clone shares the device (context,
/// stream, allocator, kernels) and starts with the kernel-path choices of the
/// original; changing them on one handle does not affect another.
#[derive(Debug)]
pub struct CudaBackend {
    dev: Arc<Dev>,
    knobs: Knobs,
}

impl Clone for CudaBackend {
    fn clone(&self) -> Self {
        CudaBackend {
            dev: self.dev.clone(),
            knobs: Knobs {
                gemm: AtomicU8::new(self.knobs.gemm.load(Ordering::Relaxed)),
                attention: AtomicU8::new(self.knobs.attention.load(Ordering::Relaxed)),
                kv_f32: AtomicBool::new(self.knobs.kv_f32.load(Ordering::Relaxed)),
                act_f32: AtomicBool::new(self.knobs.act_f32.load(Ordering::Relaxed)),
            },
        }
    }
}

#[derive(Debug, Default)]
struct Knobs {
    gemm: AtomicU8,
    attention: AtomicU8,
    /// f32 KV caches for half models (`ENCDEC_CUDA_KV_F32=1` at creation).
    kv_f32: AtomicBool,
    /// f32 activations for half models (`ENCDEC_CUDA_ACT_F32=1` at creation).
    act_f32: AtomicBool,
}

impl CudaBackend {
    /// Opens device `ordinal`. Kernels are compiled (or read from the disk
    /// cache) at first use; call [`preload`](Self::preload) to do it now.
    pub fn new(ordinal: usize) -> Result<Self> {
        if !driver_present() {
            return Err(Error::NoCudaDevice(
                "the CUDA driver library (libcuda.so) was not found; install the NVIDIA driver or use --device cpu".into(),
            ));
        }
        let ctx = CudaContext::new(ordinal)
            .map_err(|e| Error::NoCudaDevice(format!("cannot open cuda:{ordinal}: {e}")))?;
        // SAFETY: this crate never hands cudarc a CudaSlice; all memory is raw
        // device pointers used on the one stream below, so the per-slice events
        // cudarc would record have nothing to order.
        unsafe { ctx.disable_event_tracking() };
        let stream = ctx.new_stream().map_err(|e| cuda_err("create stream", e))?;
        let info = info_of(&ctx)?;
        let max_smem_optin = ctx
            .attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN)
            .map_or(48 * 1024, |v| v.max(48 * 1024) as u32);
        let kernels = Kernels::new(ctx.clone(), info.compute_capability);
        let drv = Arc::new(Driver::cuda(ctx, stream));
        Ok(Self::with_driver(drv, Some(kernels), info, max_smem_optin))
    }

    /// A backend whose "device" is the CPU emulator of `kernels/*.cu` at
    /// `lib_path` (built by `scripts/build-cuda-emu.sh`): the same kernels,
    /// launched with the same arguments, on host memory. For testing the
    /// kernels on a machine without a GPU; slow.
    pub fn emulated(lib_path: &str) -> Result<Self> {
        let drv = Arc::new(Driver::emu(lib_path)?);
        let info = DeviceInfo {
            ordinal: 0,
            name: format!("CPU emulation of the CUDA kernels ({lib_path})"),
            total_memory_bytes: 0,
            compute_capability: (0, 0),
            multiprocessors: 4,
            clock_khz: 0,
            memory_clock_khz: 0,
            memory_bus_bits: 0,
        };
        Ok(Self::with_driver(drv, None, info, 1 << 18))
    }

    fn with_driver(
        drv: Arc<Driver>,
        kernels: Option<Kernels>,
        info: DeviceInfo,
        max_smem_optin: u32,
    ) -> Self {
        CudaBackend {
            dev: Arc::new(Dev {
                pool: Pool::new(drv.clone()),
                staging: Staging::new(drv.clone()),
                drv,
                kernels,
                info,
                max_smem_optin,
            }),
            knobs: Knobs {
                kv_f32: AtomicBool::new(std::env::var("ENCDEC_CUDA_KV_F32").as_deref() == Ok("1")),
                act_f32: AtomicBool::new(
                    std::env::var("ENCDEC_CUDA_ACT_F32").as_deref() == Ok("1"),
                ),
                ..Knobs::default()
            },
        }
    }

    /// Whether this backend runs on the CPU emulator.
    pub fn is_emulated(&self) -> bool {
        self.dev.drv.is_emulated()
    }

    /// Compiles or loads every kernel module now (a compile error surfaces
    /// here instead of at the first op); returns how each module was obtained.
    pub fn preload(&self) -> Result<Vec<String>> {
        self.dev.bind()?;
        match &self.dev.kernels {
            Some(k) => k.load_all(),
            None => Ok(vec!["all kernels: built into the CPU emulator".into()]),
        }
    }

    pub fn info(&self) -> &DeviceInfo {
        &self.dev.info
    }

    /// The CUDA stream every op of this backend runs on (None on the
    /// emulator), for work another library queues in order with ours.
    pub fn cu_stream(&self) -> Option<cudarc::driver::sys::CUstream> {
        match &*self.dev.drv {
            Driver::Cuda { stream, .. } => Some(stream.cu_stream()),
            Driver::Emu(_) => None,
        }
    }

    /// Counters of the caching allocator.
    pub fn memory_stats(&self) -> MemoryStats {
        self.dev.pool.stats()
    }

    /// Chooses the `linear` kernels (tests and benches use this to cover both).
    pub fn set_gemm_path(&self, p: GemmPath) {
        self.knobs.gemm.store(p as u8, Ordering::Relaxed);
    }

    /// Whether half models get f32 KV caches ([`Backend::kv_cache_dtype`]);
    /// a model reads it when it encodes or starts decoding. Tests compare
    /// both; `ENCDEC_CUDA_KV_F32=1` sets it when the backend is created.
    pub fn set_kv_f32_caches(&self, on: bool) {
        self.knobs.kv_f32.store(on, Ordering::Relaxed);
    }

    /// Whether half models keep f32 activations ([`Backend::activation_dtype`]);
    /// a model reads it when it encodes. Tests compare both;
    /// `ENCDEC_CUDA_ACT_F32=1` sets it when the backend is created.
    pub fn set_f32_activations(&self, on: bool) {
        self.knobs.act_f32.store(on, Ordering::Relaxed);
    }

    /// Chooses the attention kernels (tests and benches use this to cover both).
    pub fn set_attention_path(&self, p: AttentionPath) {
        self.knobs.attention.store(p as u8, Ordering::Relaxed);
    }

    fn gemm_path(&self) -> GemmPath {
        match self.knobs.gemm.load(Ordering::Relaxed) {
            1 => GemmPath::Tiled,
            _ => GemmPath::Auto,
        }
    }

    fn attention_path(&self) -> AttentionPath {
        match self.knobs.attention.load(Ordering::Relaxed) {
            1 => AttentionPath::Tiled,
            2 => AttentionPath::SplitKv,
            3 => AttentionPath::TensorCore,
            _ => AttentionPath::Auto,
        }
    }

    // ---- argument checks ---------------------------------------------------

    fn label(&self) -> String {
        self.dev.info.label()
    }

    fn unsupported(&self, op: &'static str, dtype: DType) -> Error {
        Error::UnsupportedDType {
            op,
            dtype,
            device: self.label(),
        }
    }

    /// The buffer of a tensor of this device.
    fn buf<'a>(&self, t: &'a Tensor, op: &'static str) -> Result<&'a CudaBuffer> {
        match t.storage() {
            Storage::Host(_) => Err(Error::WrongDevice {
                op,
                got: "cpu".into(),
                want: self.label(),
            }),
            Storage::Device(b) => match b.as_any().downcast_ref::<CudaBuffer>() {
                Some(c) if c.ordinal == self.dev.info.ordinal => Ok(c),
                _ => Err(Error::WrongDevice {
                    op,
                    got: b.device().to_string(),
                    want: self.label(),
                }),
            },
        }
    }

    /// The buffer of an output tensor: of this device and uniquely owned.
    fn buf_mut<'a>(&self, t: &'a mut Tensor, op: &'static str) -> Result<&'a mut CudaBuffer> {
        self.buf(t, op)?;
        match t.storage_mut(op)? {
            Storage::Device(b) => b
                .as_any_mut()
                .downcast_mut::<CudaBuffer>()
                .ok_or_else(|| Error::Invalid(format!("{op}: not a CUDA buffer"))),
            Storage::Host(_) => Err(Error::WrongDevice {
                op,
                got: "cpu".into(),
                want: self.label(),
            }),
        }
    }

    /// Address of a contiguous f32 tensor.
    fn f32_in(&self, t: &Tensor, op: &'static str) -> Result<u64> {
        let b = self.buf(t, op)?;
        t.require_contiguous(op)?;
        if b.dtype != DType::F32 {
            return Err(self.unsupported(op, b.dtype));
        }
        Ok(b.ptr_at(t.offset()))
    }

    /// Address of a contiguous, uniquely owned f32 tensor (an output).
    fn f32_out(&self, t: &mut Tensor, op: &'static str) -> Result<u64> {
        let p = self.f32_in(t, op)?;
        t.storage_mut(op)?;
        Ok(p)
    }

    /// Address and host copy of a contiguous u32 tensor. Range checks use
    /// the host copy when an op is recorded; replays do not check again
    /// (`crate::graph`: the caller validates what it uploads).
    fn u32_in<'a>(&self, t: &'a Tensor, op: &'static str) -> Result<(u64, &'a [u32])> {
        let b = self.buf(t, op)?;
        t.require_contiguous(op)?;
        if b.dtype != DType::U32 {
            return Err(Error::DTypeMismatch {
                op,
                lhs: b.dtype,
                rhs: DType::U32,
            });
        }
        let ids = b.ids.as_deref().ok_or_else(|| {
            Error::Invalid(format!(
                "{op}: this u32 tensor was written on the device (topk_into) and has no \
                     host copy to check its values against; copy it to the host and back to \
                     use it as ids or an index"
            ))
        })?;
        let o = t.offset();
        Ok((b.ptr_at(o), &ids[o..o + t.elem_count()]))
    }

    /// Attention; `positions` is the address of u32 `(q_offset, kv_len)` the
    /// kernels read instead of `p`'s (whose values are checked here), or 0.
    fn attention_impl(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        p: &AttentionParams,
        positions: u64,
        out: &mut Tensor,
    ) -> Result<()> {
        const OP: &str = "attention";
        // K/V may be half (KV caches): the kernels widen them; checks::attention
        // requires k and v of one dtype. q may be half too (half activations).
        const FLOAT: &[DType] = &[DType::F32, DType::F16, DType::BF16];
        let (qp, q_sb, q_st) = self.view3(q, OP, FLOAT)?;
        let (kp, k_sb, k_st) = self.view3(k, OP, FLOAT)?;
        let (vp, v_sb, v_st) = self.view3(v, OP, FLOAT)?;
        let shape = checks::attention(q, k, v, p)?;
        let path = self.attention_path();
        if q.dtype() != DType::F32
            && !ops::attention::reads_half_q(
                &self.dev,
                p.operand_dtype,
                q.dtype(),
                k.dtype(),
                p.head_dim,
                shape.tq,
                path,
            )
        {
            // The kernel that runs reads an f32 q: widen it (exactly) first.
            let q32 = self.cast(q, DType::F32)?;
            return self.attention_impl(&q32, k, v, p, positions, out);
        }
        let (batch, tq, tcap) = (shape.batch, shape.tq, shape.tcap);
        // Each optional input: its device and dtype first, then its shape.
        let key_mask = p.key_mask.map(|m| self.f32_in(m, OP)).transpose()?;
        shape.check_key_mask(p.key_mask)?;
        let position_bias = p.position_bias.map(|b| self.f32_in(b, OP)).transpose()?;
        shape.check_position_bias(p.position_bias)?;
        let rel_table = p
            .relative_bias
            .map(|r| self.f32_in(r.table, OP))
            .transpose()?;
        shape.check_relative_bias(p.relative_bias.as_ref(), p.position_bias)?;
        let kv_index = p.kv_index.map(|ix| self.u32_in(ix, OP)).transpose()?;
        shape.check_kv_index(p.kv_index.zip(kv_index.map(|(_, ids)| ids)))?;
        shape.check_out(out)?;
        let (op, out_dtype) = self.linear_out(OP, out)?;
        i32_fits(
            OP,
            &[batch, tq, p.num_heads, p.head_dim, tcap, p.q_offset + tq],
        )?;
        let rel = p.relative_bias;
        if let Some(r) = rel {
            i32_fits(OP, &[r.num_buckets, r.max_distance])?;
        }
        let args = AttnArgs {
            q: qp,
            k: kp,
            v: vp,
            out: op,
            key_mask: key_mask.unwrap_or(0),
            pos_bias: position_bias.unwrap_or(0),
            kv_index: kv_index.map_or(0, |(ptr, _)| ptr),
            rel_table: rel_table.unwrap_or(0),
            positions,
            q_sb: q_sb as i64,
            q_st: q_st as i64,
            k_sb: k_sb as i64,
            k_st: k_st as i64,
            v_sb: v_sb as i64,
            v_st: v_st as i64,
            batch: batch as i32,
            tq: tq as i32,
            heads: p.num_heads as i32,
            head_dim: p.head_dim as i32,
            tcap: tcap as i32,
            // With positions the kernels read both values when they run: the
            // launch carries the cache's bound (what a recording must fit).
            kv_len: if positions != 0 { tcap } else { p.kv_len } as i32,
            causal: p.causal as i32,
            q_offset: if positions != 0 { 0 } else { p.q_offset } as i32,
            scale: p.scale,
            rel_buckets: rel.map_or(0, |r| r.num_buckets as i32),
            rel_max_distance: rel.map_or(0, |r| r.max_distance as i32),
            rel_bidirectional: rel.is_some_and(|r| r.bidirectional) as i32,
            rel_log_ratio: rel.map_or(0.0, |r| r.log_ratio()),
            out_dt: match out_dtype {
                DType::F16 => ops::attention::OUT_F16,
                DType::BF16 => ops::attention::OUT_BF16,
                _ => ops::attention::OUT_F32,
            },
        };
        self.dev.bind()?;
        ops::attention::attention(
            &self.dev,
            &args,
            p.operand_dtype,
            q.dtype(),
            k.dtype(),
            path,
        )
    }

    /// `write_rows` at `start`, or at the u32 the kernel reads at `start_at`
    /// (`start` is then that u32's value now, which the host checks).
    fn write_rows_impl(
        &self,
        src: &Tensor,
        dst: &mut Tensor,
        start: usize,
        start_at: u64,
    ) -> Result<()> {
        const OP: &str = "write_rows";
        let sb = self.buf(src, OP)?;
        self.buf(dst, OP)?;
        let [batch, t, tcap, c] = checks::write_rows(src, dst, start)?;
        if src.dtype() == DType::I8 {
            return Err(self.unsupported(OP, DType::I8));
        }
        dst.require_contiguous(OP)?;
        self.dev.bind()?;
        // Rows with a contiguous last dim are read in place (a fused QKV
        // projection's K and V views); other views are gathered first.
        let (sp, src_strides, _tmp) = if src.strides()[2] == 1 {
            let st = src.strides();
            (sb.ptr_at(src.offset()), [st[0], st[1]], None)
        } else {
            let (p, tmp) = self.contiguous_ptr(src, sb, OP)?;
            (p, [t * c, c], tmp)
        };
        let src_ids: Option<Vec<u32>> = sb
            .ids
            .as_ref()
            .map(|ids| src.strided_indices().map(|i| ids[i]).collect());
        let (sd, dd) = (src.dtype(), dst.dtype());
        let dof = dst.offset();
        let db = self.buf_mut(dst, OP)?;
        ops::copy::write_rows(
            &self.dev,
            sd,
            dd,
            sp,
            db.ptr_at(dof),
            batch,
            t,
            tcap,
            c,
            src_strides,
            // The kernel reads the start at `start_at` when it runs.
            if start_at != 0 { 0 } else { start },
            start_at,
        )?;
        if let (Some(v), Some(ids)) = (src_ids, db.ids.as_mut()) {
            for bi in 0..batch {
                for ti in 0..t {
                    let from = (bi * t + ti) * c;
                    let to = dof + (bi * tcap + start + ti) * c;
                    ids[to..to + c].copy_from_slice(&v[from..from + c]);
                }
            }
        }
        Ok(())
    }

    /// A vector of `n` f32/f16/bf16 values as an f32 address (converted into
    /// the returned temporary block when not f32).
    fn vec_f32(&self, t: &Tensor, n: usize, op: &'static str) -> Result<(u64, Option<Block>)> {
        let b = self.buf(t, op)?;
        t.require_contiguous(op)?;
        checks::vector_len(op, t, n)?;
        match b.dtype {
            DType::F32 => Ok((b.ptr_at(t.offset()), None)),
            DType::F16 | DType::BF16 => {
                let tmp = self.dev.alloc(n * 4)?;
                ops::elementwise::cast(
                    &self.dev,
                    b.dtype,
                    DType::F32,
                    b.ptr_at(t.offset()),
                    tmp.ptr,
                    n,
                )?;
                Ok((tmp.ptr, Some(tmp)))
            }
            d => Err(self.unsupported(op, d)),
        }
    }

    /// A contiguous `[rows, cols]` weight matrix as the GEMM reads it.
    fn weights(&self, t: &Tensor, op: &'static str) -> Result<WeightPtr> {
        let b = self.buf(t, op)?;
        t.require_contiguous(op)?;
        let o = t.offset();
        Ok(match b.dtype {
            DType::F32 => WeightPtr::F32(b.ptr_at(o)),
            DType::F16 => WeightPtr::F16(b.ptr_at(o)),
            DType::BF16 => WeightPtr::BF16(b.ptr_at(o)),
            DType::I8 => {
                let cols = checks::int8_weight_rows(op, t, b.len / b.rows.max(1))?;
                WeightPtr::I8 {
                    data: b.ptr_at(o),
                    scales: b.scale_ptr_at(o / cols),
                }
            }
            DType::U32 => return Err(self.unsupported(op, DType::U32)),
        })
    }

    /// A rank-3 view of one of `dtypes` with a contiguous last dim: (address of
    /// its first element, batch stride, time stride in elements), checked to lie
    /// within its buffer.
    fn view3(&self, t: &Tensor, op: &'static str, dtypes: &[DType]) -> Result<(u64, usize, usize)> {
        let b = self.buf(t, op)?;
        if !dtypes.contains(&b.dtype) {
            return Err(self.unsupported(op, b.dtype));
        }
        checks::attention_view(op, t, b.len)?;
        let s = t.strides();
        Ok((b.ptr_at(t.offset()), s[0], s[1]))
    }

    /// A contiguous copy of a non-contiguous view (not int8), as a new block.
    fn gather(&self, t: &Tensor, b: &CudaBuffer, op: &'static str) -> Result<Block> {
        if b.dtype == DType::I8 {
            return Err(Error::NotContiguous { op });
        }
        let es = b.dtype.size_in_bytes();
        let blk = self.dev.alloc(t.elem_count() * es)?;
        ops::copy::gather(&self.dev, es, t, b.data.ptr, blk.ptr)?;
        Ok(blk)
    }

    /// Address of the elements of `t` in row-major order: the tensor itself
    /// when contiguous, else a gathered copy (kept alive by the returned block).
    fn contiguous_ptr(
        &self,
        t: &Tensor,
        b: &CudaBuffer,
        op: &'static str,
    ) -> Result<(u64, Option<Block>)> {
        if t.is_contiguous() {
            Ok((b.ptr_at(t.offset()), None))
        } else {
            let blk = self.gather(t, b, op)?;
            Ok((blk.ptr, Some(blk)))
        }
    }

    fn memset0(&self, ptr: u64, bytes: usize) -> Result<()> {
        // SAFETY: `ptr` is the start of a live block of at least `bytes` bytes.
        unsafe { self.dev.drv.memset0(ptr, bytes) }
    }

    fn htod<T>(&self, src: &[T]) -> Result<Block> {
        let blk = self.dev.alloc(std::mem::size_of_val(src))?;
        // SAFETY: the block holds size_of_val(src) bytes.
        unsafe { self.dev.drv.htod(blk.ptr, src)? };
        Ok(blk)
    }

    /// Copies `dst.len()` elements from `src` to the host (then waits).
    fn dtoh<T>(&self, dst: &mut [T], src: u64, op: &str) -> Result<()> {
        // SAFETY: `src` addresses at least size_of_val(dst) bytes of a live block.
        unsafe { self.dev.drv.dtoh(dst, src, op) }
    }

    /// Address and dtype of a linear's contiguous `x` (`what` "x") or `out`:
    /// f32, f16 or bf16 (half activations, `Backend::activation_dtype`).
    fn linear_x(&self, op: &'static str, what: &str, x: &Tensor) -> Result<(u64, DType)> {
        let b = self.buf(x, op)?;
        checks::linear_activation(op, what, x)?;
        x.require_contiguous(op)?;
        Ok((b.ptr_at(x.offset()), b.dtype))
    }

    /// [`linear_x`](Self::linear_x) of a uniquely owned output.
    fn linear_out(&self, op: &'static str, out: &mut Tensor) -> Result<(u64, DType)> {
        let p = self.linear_x(op, "out", out)?;
        out.storage_mut(op)?;
        Ok(p)
    }

    /// `linear` / `linear_act` / `linear_add`: checks (errors named `op`),
    /// then the GEMM with its epilogue fused (`ops::gemm::linear`).
    fn linear_with(
        &self,
        op: &'static str,
        x: &Tensor,
        w: &Tensor,
        bias: Option<&Tensor>,
        epilogue: Epilogue,
        out: &mut Tensor,
    ) -> Result<()> {
        let (xp, xdt) = self.linear_x(op, "x", x)?;
        let [m, n, k] = checks::linear_weight(x, w)?;
        let wp = self.weights(w, op)?;
        self.dev.bind()?;
        let (bp, _btmp) = match bias {
            Some(b) => self.vec_f32(b, n, op)?,
            None => (0, None),
        };
        checks::linear_out(x, n, out)?;
        // linear_add's out is the f32 residual stream.
        let (outp, odt) = match epilogue {
            Epilogue::Accumulate => (self.f32_out(out, op)?, DType::F32),
            Epilogue::Store(_) => self.linear_out(op, out)?,
        };
        ops::gemm::linear(
            &self.dev,
            xp,
            xdt,
            wp,
            bp,
            outp,
            odt,
            m,
            n,
            k,
            epilogue,
            self.gemm_path(),
        )
    }

    fn dtod(&self, dst: u64, src: u64, bytes: usize) -> Result<()> {
        // SAFETY: both addresses start live blocks of at least `bytes` bytes.
        unsafe { self.dev.drv.dtod(dst, src, bytes) }
    }

    fn tensor(
        &self,
        shape: &[usize],
        dtype: DType,
        data: Block,
        scales: Option<(Block, usize)>,
        ids: Option<Vec<u32>>,
    ) -> Result<Tensor> {
        let len = shape.iter().product();
        let (scales, rows) = match scales {
            Some((b, r)) => (Some(b), r),
            None => (None, 0),
        };
        let buf = CudaBuffer {
            data,
            scales,
            rows,
            ids,
            len,
            dtype,
            ordinal: self.dev.info.ordinal,
        };
        Tensor::from_storage(Storage::Device(Box::new(buf)), shape)
    }

    /// Norm weight and bias as f32 addresses (0: no bias), with temporaries.
    fn norm_params(
        &self,
        op: &'static str,
        kind: NormKind,
        weight: &Tensor,
        bias: Option<&Tensor>,
        c: usize,
    ) -> Result<(u64, u64, [Option<Block>; 2])> {
        let (w, wt) = self.vec_f32(weight, c, op)?;
        let (b, bt) = match checks::norm_bias(op, kind, bias)? {
            Some(b) => self.vec_f32(b, c, op)?,
            None => (0, None),
        };
        Ok((w, b, [wt, bt]))
    }
}

fn i32_fits(op: &'static str, vals: &[usize]) -> Result<()> {
    if vals.iter().any(|&v| v > i32::MAX as usize) {
        return Err(Error::Invalid(format!(
            "{op}: sizes {vals:?} exceed the kernels' 32-bit range"
        )));
    }
    Ok(())
}

impl Backend for CudaBackend {
    fn device(&self) -> Device {
        Device::Cuda(self.dev.info.ordinal)
    }

    fn synchronize(&self) -> Result<()> {
        self.dev.drv.host_guard("synchronize")?;
        self.dev.bind()?;
        self.dev.sync("synchronize")
    }

    fn range_push(&self, name: &str) {
        crate::nvtx::range_push(name);
    }

    fn range_pop(&self) {
        crate::nvtx::range_pop();
    }

    fn device_memory(&self) -> Option<encdec_core::DeviceMemory> {
        let s = self.dev.pool.stats();
        Some(encdec_core::DeviceMemory {
            in_use_bytes: s.in_use_bytes,
            peak_in_use_bytes: s.peak_in_use_bytes,
            reserved_bytes: s.reserved_bytes,
        })
    }

    fn reset_peak_device_memory(&self) {
        self.dev.pool.reset_peak();
    }

    fn device_peaks(&self, dtype: DType) -> Option<DevicePeaks> {
        self.dev.info.peaks(dtype)
    }

    fn device_timestamp(&self) -> Result<Option<DeviceTimestamp>> {
        self.dev.drv.host_guard("device_timestamp")?;
        self.dev.bind()?;
        Ok(Some(DeviceTimestamp::new(self.dev.drv.mark()?)))
    }

    fn device_elapsed_ns(&self, start: &DeviceTimestamp, end: &DeviceTimestamp) -> Result<u64> {
        self.dev.drv.host_guard("device_elapsed_ns")?;
        match (start.downcast_ref::<Mark>(), end.downcast_ref::<Mark>()) {
            (Some(a), Some(b)) => {
                self.dev.bind()?;
                a.elapsed_ns(b)
            }
            _ => Err(Error::Invalid(
                "device_elapsed_ns: timestamps not made by a CUDA backend".into(),
            )),
        }
    }

    fn begin_capture(&self) -> Result<bool> {
        // Loading a module while the stream records is not allowed (the
        // load may synchronise): load every kernel first (once per process).
        self.dev.bind()?;
        if let Some(k) = &self.dev.kernels {
            k.load_all()?;
        }
        Graph::begin(&self.dev)?;
        Ok(true)
    }

    fn end_capture(&self) -> Result<encdec_core::CapturedGraph> {
        Graph::end(&self.dev)
    }

    fn replay(&self, graph: &encdec_core::CapturedGraph) -> Result<()> {
        Graph::replay(&self.dev, graph)
    }

    fn describe(&self) -> String {
        let i = &self.dev.info;
        format!(
            "cuda:{} ({}, sm_{}{}, {} SMs, {:.1} GiB)",
            i.ordinal,
            i.name,
            i.compute_capability.0,
            i.compute_capability.1,
            i.multiprocessors,
            i.total_memory_bytes as f64 / (1u64 << 30) as f64
        )
    }

    // ---- memory ---------------------------------------------------------

    fn zeros(&self, shape: &[usize], dtype: DType) -> Result<Tensor> {
        self.dev.bind()?;
        let n: usize = shape.iter().product();
        let cols = shape.last().copied().unwrap_or(1).max(1);
        let data = self.dev.alloc(n * dtype.size_in_bytes())?;
        self.memset0(data.ptr, n * dtype.size_in_bytes())?;
        let scales = if dtype == DType::I8 {
            let rows = n / cols;
            let s = self.dev.alloc(rows * 4)?;
            self.memset0(s.ptr, rows * 4)?;
            Some((s, rows))
        } else {
            None
        };
        let ids = (dtype == DType::U32).then(|| vec![0u32; n]);
        self.tensor(shape, dtype, data, scales, ids)
    }

    fn upload(&self, t: &Tensor) -> Result<Tensor> {
        const OP: &str = "upload";
        if let Storage::Device(_) = t.storage() {
            // Already here: a clone of the handle, as the CPU backend does for its own.
            self.buf(t, OP)?;
            return Ok(t.clone());
        }
        self.dev.drv.host_guard(OP)?;
        self.dev.bind()?;
        let n = t.elem_count();
        if let HostStorage::I8 { data, scales } = t.host()? {
            t.require_contiguous(OP)?;
            let cols = t.cols().max(1);
            let srow = data.len() / scales.len().max(1);
            let o = t.offset();
            if srow != cols || o % cols != 0 {
                return Err(Error::Invalid(format!(
                    "upload: int8 view {:?} does not cover whole quantised rows",
                    t.dims()
                )));
            }
            let rows = n / cols;
            let d = self.htod(&data[o..o + n])?;
            let s = self.htod(&scales[o / cols..o / cols + rows])?;
            return self.tensor(t.dims(), DType::I8, d, Some((s, rows)), None);
        }
        let c = t.contiguous()?;
        let o = c.offset();
        let (blk, ids) = match c.host()? {
            HostStorage::F32(v) => (self.htod(&v[o..o + n])?, None),
            HostStorage::F16(v) => (self.htod(&v[o..o + n])?, None),
            HostStorage::BF16(v) => (self.htod(&v[o..o + n])?, None),
            HostStorage::U32(v) => (self.htod(&v[o..o + n])?, Some(v[o..o + n].to_vec())),
            HostStorage::I8 { .. } => return Err(Error::NotContiguous { op: OP }),
        };
        self.tensor(t.dims(), c.dtype(), blk, None, ids)
    }

    fn copy_from_host(&self, src: &Tensor, dst: &mut Tensor) -> Result<()> {
        const OP: &str = "copy_from_host";
        // Before the ids' host copy changes.
        self.dev.drv.host_guard(OP)?;
        checks::same_shape_and_dtype(OP, src, dst)?;
        dst.require_contiguous(OP)?;
        src.require_contiguous(OP)?;
        self.dev.bind()?;
        let (so, n) = (src.offset(), src.elem_count());
        let o = dst.offset();
        let b = self.buf_mut(dst, OP)?;
        let ptr = b.ptr_at(o);
        match src.host()? {
            // SAFETY: `dst` is contiguous with `n` elements from `ptr`.
            HostStorage::F32(v) => unsafe { self.dev.staging.upload(ptr, &v[so..so + n], OP) },
            HostStorage::U32(v) => {
                let ids = &v[so..so + n];
                // A tensor topk_into wrote has no host copy: this upload
                // makes one again (once; then it is kept in step).
                let len = b.len;
                let mirror = b.ids.get_or_insert_with(|| vec![0; len]);
                mirror[o..o + n].copy_from_slice(ids);
                // SAFETY: as above.
                unsafe { self.dev.staging.upload(ptr, ids, OP) }
            }
            h => Err(Error::Invalid(format!(
                "{OP}: {} tensors are not supported (f32, u32)",
                h.dtype()
            ))),
        }
    }

    fn copy_to_host(&self, src: &Tensor, dst: &mut Tensor) -> Result<()> {
        const OP: &str = "copy_to_host";
        self.dev.drv.host_guard(OP)?;
        checks::same_shape_and_dtype(OP, src, dst)?;
        dst.require_contiguous(OP)?;
        let b = self.buf(src, OP)?;
        self.dev.bind()?;
        let (ptr, _tmp) = self.contiguous_ptr(src, b, OP)?;
        let (o, n) = (dst.offset(), dst.elem_count());
        match dst.host_mut(OP)? {
            // SAFETY: `ptr` addresses `n` contiguous elements of src's dtype.
            HostStorage::F32(v) => unsafe { self.dev.staging.download(&mut v[o..o + n], ptr, OP) },
            // SAFETY: as above.
            HostStorage::U32(v) => unsafe { self.dev.staging.download(&mut v[o..o + n], ptr, OP) },
            h => Err(Error::Invalid(format!(
                "{OP}: {} tensors are not supported (f32, u32)",
                h.dtype()
            ))),
        }
    }

    /// One wait for all copies (the search's candidates, ids and statistics
    /// of a step), through the pinned download buffer; contiguous f32/u32
    /// sources (others go one by one).
    fn copy_to_host_all(&self, copies: &mut [(&Tensor, &mut Tensor)]) -> Result<()> {
        const OP: &str = "copy_to_host";
        self.dev.drv.host_guard(OP)?;
        let batchable = copies.len() <= crate::staging::MAX_BATCH
            && copies
                .iter()
                .all(|(s, _)| s.is_contiguous() && matches!(s.dtype(), DType::F32 | DType::U32));
        if !batchable {
            for (src, dst) in copies.iter_mut() {
                self.copy_to_host(src, dst)?;
            }
            return Ok(());
        }
        let mut parts: [(&mut [u8], u64); crate::staging::MAX_BATCH] =
            std::array::from_fn(|_| (&mut [][..], 0));
        for ((src, dst), part) in copies.iter_mut().zip(parts.iter_mut()) {
            checks::same_shape_and_dtype(OP, src, dst)?;
            dst.require_contiguous(OP)?;
            let ptr = self.buf(src, OP)?.ptr_at(src.offset());
            let (o, n) = (dst.offset(), dst.elem_count());
            let bytes: &mut [u8] = match dst.host_mut(OP)? {
                // SAFETY: the f32/u32 elements o..o + n of the host vector,
                // viewed as their bytes (no padding, any bit pattern valid).
                HostStorage::F32(v) => unsafe {
                    std::slice::from_raw_parts_mut(v[o..o + n].as_mut_ptr() as *mut u8, n * 4)
                },
                // SAFETY: as above.
                HostStorage::U32(v) => unsafe {
                    std::slice::from_raw_parts_mut(v[o..o + n].as_mut_ptr() as *mut u8, n * 4)
                },
                h => {
                    return Err(Error::Invalid(format!(
                        "{OP}: {} tensors are not supported (f32, u32)",
                        h.dtype()
                    )))
                }
            };
            *part = (bytes, ptr);
        }
        self.dev.bind()?;
        // SAFETY: each source is a live contiguous tensor of its destination's size.
        unsafe {
            self.dev
                .staging
                .download_all(&mut parts[..copies.len()], OP)
        }
    }

    fn download(&self, t: &Tensor) -> Result<Tensor> {
        const OP: &str = "download";
        self.dev.drv.host_guard(OP)?;
        let b = self.buf(t, OP)?;
        self.dev.bind()?;
        let n = t.elem_count();
        if b.dtype == DType::I8 {
            t.require_contiguous(OP)?;
            let cols = t.cols().max(1);
            let o = t.offset();
            if o % cols != 0 {
                return Err(Error::Invalid(format!(
                    "download: int8 view {:?} does not cover whole quantised rows",
                    t.dims()
                )));
            }
            let mut data = vec![0i8; n];
            let mut scales = vec![0f32; n / cols];
            self.dtoh(&mut data, b.ptr_at(o), OP)?;
            self.dtoh(&mut scales, b.scale_ptr_at(o / cols), OP)?;
            return Tensor::from_i8(data, scales, *t.shape());
        }
        let (src, _tmp) = self.contiguous_ptr(t, b, OP)?;
        let h = match b.dtype {
            DType::F32 => {
                let mut v = vec![0f32; n];
                self.dtoh(&mut v, src, OP)?;
                HostStorage::F32(v)
            }
            DType::F16 => {
                let mut v = vec![f16::ZERO; n];
                self.dtoh(&mut v, src, OP)?;
                HostStorage::F16(v)
            }
            DType::BF16 => {
                let mut v = vec![bf16::ZERO; n];
                self.dtoh(&mut v, src, OP)?;
                HostStorage::BF16(v)
            }
            DType::U32 => {
                let mut v = vec![0u32; n];
                self.dtoh(&mut v, src, OP)?;
                HostStorage::U32(v)
            }
            DType::I8 => unreachable!("handled above"),
        };
        Tensor::from_host(h, *t.shape())
    }

    fn cast(&self, t: &Tensor, dtype: DType) -> Result<Tensor> {
        const OP: &str = "cast";
        let b = self.buf(t, OP)?;
        let from = b.dtype;
        checks::cast(from, dtype)?;
        self.dev.bind()?;
        let n = t.elem_count();
        let cols = t.cols().max(1);
        let rows = n / cols;
        let o = t.offset();
        if from == DType::I8 {
            t.require_contiguous(OP)?;
            if o % cols != 0 || b.len / b.rows.max(1) != cols {
                return Err(Error::Invalid(format!(
                    "cast: int8 view {:?} does not cover whole quantised rows",
                    t.dims()
                )));
            }
        }
        let (src, _tmp) = if from == DType::I8 {
            (b.ptr_at(o), None)
        } else {
            self.contiguous_ptr(t, b, OP)?
        };
        let out_bytes = n * dtype.size_in_bytes();
        let dst = self.dev.alloc(out_bytes)?;
        let dims = t.dims();
        match (from, dtype) {
            (DType::I8, DType::I8) => {
                self.dtod(dst.ptr, src, n)?;
                let s = self.dev.alloc(rows * 4)?;
                self.dtod(s.ptr, b.scale_ptr_at(o / cols), rows * 4)?;
                self.tensor(dims, dtype, dst, Some((s, rows)), None)
            }
            (DType::I8, to) => {
                ops::elementwise::dequantize(
                    &self.dev,
                    to,
                    src,
                    b.scale_ptr_at(o / cols),
                    dst.ptr,
                    n,
                    cols,
                )?;
                self.tensor(dims, dtype, dst, None, None)
            }
            (from, DType::I8) => {
                let s = self.dev.alloc(rows * 4)?;
                ops::elementwise::quantize(&self.dev, from, src, dst.ptr, s.ptr, rows, cols)?;
                self.tensor(dims, dtype, dst, Some((s, rows)), None)
            }
            (from, to) if from == to => {
                self.dtod(dst.ptr, src, out_bytes)?;
                let ids = match (&b.ids, to) {
                    (Some(ids), DType::U32) => Some(t.strided_indices().map(|i| ids[i]).collect()),
                    _ => None,
                };
                self.tensor(dims, dtype, dst, None, ids)
            }
            (from, to) => {
                ops::elementwise::cast(&self.dev, from, to, src, dst.ptr, n)?;
                self.tensor(dims, dtype, dst, None, None)
            }
        }
    }

    fn write_rows(&self, src: &Tensor, dst: &mut Tensor, start: usize) -> Result<()> {
        self.write_rows_impl(src, dst, start, 0)
    }

    /// Half models keep half K/V caches (half the bytes each decode step's
    /// attention reads); `ENCDEC_CUDA_KV_F32=1` keeps them f32.
    fn kv_cache_dtype(&self, operand: DType) -> DType {
        match operand {
            DType::F16 | DType::BF16 if !self.knobs.kv_f32.load(Ordering::Relaxed) => operand,
            _ => DType::F32,
        }
    }

    /// Half models store the encoder's intermediate activations in their
    /// operand dtype (the tensor-core kernels round them to it anyway);
    /// `ENCDEC_CUDA_ACT_F32=1` keeps them f32.
    fn activation_dtype(&self, operand: DType) -> DType {
        match operand {
            DType::F16 | DType::BF16 if !self.knobs.act_f32.load(Ordering::Relaxed) => operand,
            _ => DType::F32,
        }
    }

    /// The kernel reads `start` from `positions` (so a recorded step replays
    /// at any row); the host checks the value `positions` holds now.
    fn write_rows_at(&self, src: &Tensor, dst: &mut Tensor, positions: &Tensor) -> Result<()> {
        const OP: &str = "write_rows_at";
        let (pp, pos) = self.u32_in(positions, OP)?;
        if pos.len() != 2 {
            return Err(Error::Invalid(format!(
                "{OP}: positions must be u32 [2] (q_offset, kv_len), got {:?}",
                positions.dims()
            )));
        }
        self.write_rows_impl(src, dst, pos[0] as usize, pp)
    }

    fn index_select(&self, src: &Tensor, index: &Tensor, dst: &mut Tensor) -> Result<()> {
        const OP: &str = "index_select";
        let sb = self.buf(src, OP)?;
        self.buf(dst, OP)?;
        let (ip, idx) = self.u32_in(index, OP)?;
        checks::index_select(src, idx, dst)?;
        let (s, d) = (src.dims(), dst.dims());
        src.require_contiguous(OP)?;
        dst.require_contiguous(OP)?;
        let row: usize = s[1..].iter().product();
        let cols = src.cols().max(1);
        let (so, dof) = (src.offset(), dst.offset());
        let int8 = src.dtype() == DType::I8;
        if int8 && (so % cols != 0 || dof % cols != 0) {
            return Err(Error::Invalid(format!(
                "index_select: int8 views {s:?} / {d:?} do not cover whole quantised rows"
            )));
        }
        self.dev.bind()?;
        let es = src.dtype().size_in_bytes();
        let (sp, sscale) = (sb.ptr_at(so), sb.scale_ptr_at(so / cols));
        let db = self.buf_mut(dst, OP)?;
        ops::copy::index_select(&self.dev, es, sp, ip, db.ptr_at(dof), idx.len(), row)?;
        if int8 {
            ops::copy::index_select(
                &self.dev,
                4,
                sscale,
                ip,
                db.scale_ptr_at(dof / cols),
                idx.len(),
                row / cols,
            )?;
        }
        // The host copy of u32 ids follows, row by row (no allocation: beam
        // reordering runs this every step).
        if let (Some(src_ids), Some(ids)) = (sb.ids.as_ref(), db.ids.as_mut()) {
            for (r, &i) in idx.iter().enumerate() {
                let from = so + i as usize * row;
                ids[dof + r * row..dof + (r + 1) * row].copy_from_slice(&src_ids[from..from + row]);
            }
        }
        Ok(())
    }

    // ---- dense ----------------------------------------------------------

    fn linear(
        &self,
        x: &Tensor,
        w: &Tensor,
        bias: Option<&Tensor>,
        out: &mut Tensor,
    ) -> Result<()> {
        let epilogue = Epilogue::Store(Activation::Identity);
        self.linear_with("linear", x, w, bias, epilogue, out)
    }

    fn linear_act(
        &self,
        x: &Tensor,
        w: &Tensor,
        bias: Option<&Tensor>,
        act: Activation,
        out: &mut Tensor,
    ) -> Result<()> {
        self.linear_with("linear_act", x, w, bias, Epilogue::Store(act), out)
    }

    fn linear_add(
        &self,
        x: &Tensor,
        w: &Tensor,
        bias: Option<&Tensor>,
        out: &mut Tensor,
    ) -> Result<()> {
        self.linear_with("linear_add", x, w, bias, Epilogue::Accumulate, out)
    }

    fn linear_gated(
        &self,
        x: &Tensor,
        w_gate: &Tensor,
        w_up: &Tensor,
        act: Activation,
        out: &mut Tensor,
    ) -> Result<()> {
        const OP: &str = "linear_gated";
        let (xp, xdt) = self.linear_x(OP, "x", x)?;
        let [m, n, k] = checks::linear_gated(x, w_gate, w_up)?;
        let gp = self.weights(w_gate, OP)?;
        let up = self.weights(w_up, OP)?;
        checks::linear_out(x, n, out)?;
        let (outp, odt) = self.linear_out(OP, out)?;
        self.dev.bind()?;
        let path = self.gemm_path();
        ops::gemm::linear_gated(&self.dev, xp, xdt, gp, up, outp, odt, m, n, k, act, path)
    }

    fn batched_matmul(&self, a: &Tensor, b: &Tensor, out: &mut Tensor) -> Result<()> {
        const OP: &str = "batched_matmul";
        let ap = self.f32_in(a, OP)?;
        let [batch, m, k, n] = checks::batched_matmul(a, b, out)?;
        let bb = self.buf(b, OP)?;
        if bb.dtype != DType::F32 {
            return Err(self.unsupported(OP, bb.dtype));
        }
        checks::view_in_bounds(OP, b, bb.len)?;
        let s = b.strides();
        let bp = bb.ptr_at(b.offset());
        let op = self.f32_out(out, OP)?;
        self.dev.bind()?;
        ops::gemm::batched_matmul(&self.dev, ap, bp, op, batch, m, n, k, [s[0], s[1], s[2]])
    }

    // ---- normalisation --------------------------------------------------

    fn norm(
        &self,
        kind: NormKind,
        x: &Tensor,
        weight: &Tensor,
        bias: Option<&Tensor>,
        eps: f32,
        out: &mut Tensor,
    ) -> Result<()> {
        const OP: &str = "norm";
        let xp = self.f32_in(x, OP)?;
        let c = x.cols();
        self.dev.bind()?;
        let (w, b, _tmp) = self.norm_params(OP, kind, weight, bias, c)?;
        same_count(OP, out, x)?;
        let (o, odt) = self.linear_out(OP, out)?;
        ops::norm::norm(&self.dev, kind, xp, None, w, b, o, odt, x.rows(), c, eps)
    }

    fn add_norm(
        &self,
        kind: NormKind,
        x: &Tensor,
        residual: &mut Tensor,
        weight: &Tensor,
        bias: Option<&Tensor>,
        eps: f32,
        out: &mut Tensor,
    ) -> Result<()> {
        const OP: &str = "add_norm";
        let xp = self.f32_in(x, OP)?;
        let c = x.cols();
        self.dev.bind()?;
        let (w, b, _tmp) = self.norm_params(OP, kind, weight, bias, c)?;
        same_count(OP, residual, x)?;
        same_count(OP, out, x)?;
        let r = self.f32_out(residual, OP)?;
        let (o, odt) = self.linear_out(OP, out)?;
        ops::norm::norm(&self.dev, kind, xp, Some(r), w, b, o, odt, x.rows(), c, eps)
    }

    // ---- pointwise ------------------------------------------------------

    fn activation(&self, x: &mut Tensor, act: Activation) -> Result<()> {
        let xp = self.f32_out(x, "activation")?;
        self.dev.bind()?;
        ops::elementwise::activation(&self.dev, xp, x.elem_count(), act)
    }

    fn gated_activation(
        &self,
        gate: &Tensor,
        up: &Tensor,
        act: Activation,
        out: &mut Tensor,
    ) -> Result<()> {
        const OP: &str = "gated_activation";
        let g = self.f32_in(gate, OP)?;
        let u = self.f32_in(up, OP)?;
        same_count(OP, gate, up)?;
        same_count(OP, out, gate)?;
        let o = self.f32_out(out, OP)?;
        self.dev.bind()?;
        ops::elementwise::gated_activation(&self.dev, g, u, o, out.elem_count(), act)
    }

    fn add_assign(&self, x: &mut Tensor, y: &Tensor) -> Result<()> {
        const OP: &str = "add_assign";
        let yp = self.f32_in(y, OP)?;
        checks::broadcast(OP, x, y)?;
        let xp = self.f32_out(x, OP)?;
        self.dev.bind()?;
        ops::elementwise::add_assign(&self.dev, xp, yp, x.elem_count(), y.elem_count())
    }

    fn mul_assign(&self, x: &mut Tensor, y: &Tensor) -> Result<()> {
        const OP: &str = "mul_assign";
        let yp = self.f32_in(y, OP)?;
        checks::broadcast(OP, x, y)?;
        let xp = self.f32_out(x, OP)?;
        self.dev.bind()?;
        ops::elementwise::mul_assign(&self.dev, xp, yp, x.elem_count(), y.elem_count())
    }

    fn scale(&self, x: &mut Tensor, s: f32) -> Result<()> {
        let xp = self.f32_out(x, "scale")?;
        self.dev.bind()?;
        ops::elementwise::scale(&self.dev, xp, x.elem_count(), s)
    }

    fn scatter_fill(&self, x: &mut Tensor, index: &Tensor, value: f32) -> Result<()> {
        const OP: &str = "scatter_fill";
        let (ip, idx) = self.u32_in(index, OP)?;
        checks::scatter_fill(x, idx)?;
        let n = idx.len();
        let xp = self.f32_out(x, OP)?;
        self.dev.bind()?;
        ops::elementwise::scatter_fill(&self.dev, xp, ip, n, value)
    }

    fn repetition_penalty(&self, x: &mut Tensor, index: &Tensor, penalty: f32) -> Result<()> {
        const OP: &str = "repetition_penalty";
        let (ip, idx) = self.u32_in(index, OP)?;
        checks::repetition_penalty(x, idx)?;
        let n = idx.len();
        let xp = self.f32_out(x, OP)?;
        self.dev.bind()?;
        ops::elementwise::repetition_penalty(&self.dev, xp, ip, n, penalty)
    }

    fn embedding(&self, ids: &Tensor, table: &Tensor, scale: f32, out: &mut Tensor) -> Result<()> {
        const OP: &str = "embedding";
        let (ip, id) = self.u32_in(ids, OP)?;
        let c = checks::embedding_table(table)?;
        let tv = self.weights(table, OP)?;
        checks::embedding_out(ids, c, out)?;
        let o = self.f32_out(out, OP)?;
        checks::embedding_ids(id, table.dim(0))?;
        self.dev.bind()?;
        ops::embedding::embedding(&self.dev, ip, tv, o, id.len(), c, scale)
    }

    // ---- attention ------------------------------------------------------

    fn attention(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        p: &AttentionParams,
        out: &mut Tensor,
    ) -> Result<()> {
        self.attention_impl(q, k, v, p, 0, out)
    }

    /// The kernels read `(q_offset, kv_len)` from `positions` (so a recorded
    /// step replays at any position); the host checks the values it holds now.
    fn attention_at(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        params: &AttentionParams,
        positions: &Tensor,
        out: &mut Tensor,
    ) -> Result<()> {
        const OP: &str = "attention_at";
        let (pp, pos) = self.u32_in(positions, OP)?;
        if pos.len() != 2 {
            return Err(Error::Invalid(format!(
                "{OP}: positions must be u32 [2] (q_offset, kv_len), got {:?}",
                positions.dims()
            )));
        }
        if params.position_bias.is_some() {
            return Err(Error::Invalid(format!(
                "{OP}: position_bias depends on kv_len; use relative_bias"
            )));
        }
        let p = AttentionParams {
            q_offset: pos[0] as usize,
            kv_len: pos[1] as usize,
            ..*params
        };
        self.attention_impl(q, k, v, &p, pp, out)
    }

    // ---- search ---------------------------------------------------------

    fn softmax(&self, x: &mut Tensor) -> Result<()> {
        let c = x.cols();
        let xp = self.f32_out(x, "softmax")?;
        self.dev.bind()?;
        ops::softmax::softmax(&self.dev, xp, x.rows(), c, false)
    }

    fn log_softmax(&self, x: &mut Tensor) -> Result<()> {
        let c = x.cols();
        let xp = self.f32_out(x, "log_softmax")?;
        self.dev.bind()?;
        ops::softmax::softmax(&self.dev, xp, x.rows(), c, true)
    }

    fn topk(&self, x: &Tensor, k: usize) -> Result<(Vec<u32>, Vec<f32>)> {
        const OP: &str = "topk";
        self.dev.drv.host_guard(OP)?;
        let xp = self.f32_in(x, OP)?;
        let c = x.cols();
        checks::topk(x, k)?;
        let rows = x.elem_count().checked_div(c).unwrap_or(0);
        if k == 0 || rows == 0 {
            return Ok((Vec::new(), Vec::new()));
        }
        self.dev.bind()?;
        if k > topk::MAX_K || c > i32::MAX as usize || rows > u32::MAX as usize {
            let mut host = vec![0f32; rows * c];
            self.dtoh(&mut host, xp, OP)?;
            return Ok(topk::topk_host(&host, c, k));
        }
        topk::topk(&self.dev, xp, rows, c, k)
    }

    fn topk_into(
        &self,
        x: &Tensor,
        k: usize,
        ids_out: &mut Tensor,
        vals_out: &mut Tensor,
    ) -> Result<()> {
        const OP: &str = "topk_into";
        let xp = self.f32_in(x, OP)?;
        self.buf(ids_out, OP)?;
        self.buf(vals_out, OP)?;
        checks::topk_into(x, k, ids_out, vals_out)?;
        ids_out.require_contiguous(OP)?;
        let c = x.cols();
        let rows = x.rows();
        if k == 0 || rows == 0 {
            return Ok(());
        }
        let vp = self.f32_out(vals_out, OP)?;
        self.dev.bind()?;
        let io = ids_out.offset();
        if k > topk::MAX_K || c > i32::MAX as usize || rows > u32::MAX as usize {
            // Rare (k > 64): through the host, allocating.
            let (i, v) = self.topk(x, k)?;
            self.copy_from_host(&Tensor::from_f32(v, [rows, k])?, vals_out)?;
            return self.copy_from_host(&Tensor::from_u32(i, [rows, k])?, ids_out);
        }
        let ib = self.buf_mut(ids_out, OP)?;
        let ip = ib.ptr_at(io);
        topk::topk_into(&self.dev, xp, rows, c, k, ip, vp)?;
        // The ids are read on the host (copy_to_host), not used as an index on
        // the device: drop their host copy instead of waiting for the device
        // to refresh it (a wait per step; and a recording could not), so that
        // an index check can never trust stale ids. An upload restores it.
        ib.ids = None;
        Ok(())
    }

    fn softmax_stats(&self, x: &Tensor, out: &mut Tensor) -> Result<()> {
        const OP: &str = "softmax_stats";
        let xp = self.f32_in(x, OP)?;
        self.buf(out, OP)?;
        checks::softmax_stats(x, out)?;
        let op = self.f32_out(out, OP)?;
        self.dev.bind()?;
        ops::softmax::softmax_stats(&self.dev, xp, x.rows(), x.cols(), op)
    }
}
