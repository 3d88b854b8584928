//! The `Backend` trait: every op the models use.
//!
//! Ops write into caller-owned outputs, so a decode loop can reuse its buffers
//! and allocate nothing per step. Matrices are row-major. Unless an op says
//! otherwise its tensor arguments must be contiguous and live on the backend's
//! device; a backend returns an error naming the op, dtype and device for any
//! combination it does not support.
//!
//! Activations are f32 on the CPU; a device backend may run them in f16/bf16
//! (accumulating in f32). Weights may be f32, f16, bf16 or int8 (per-row scales).

use crate::{DType, Device, HostStorage, Result, Tensor};

/// Pointwise nonlinearities, named as in HF configs (`activation_function`, `dense_act_fn`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Activation {
    Relu,
    /// erf form: `x * 0.5 * (1 + erf(x / sqrt 2))` (HF "gelu").
    Gelu,
    /// tanh form: HF "gelu_new" / "gelu_pytorch_tanh".
    GeluTanh,
    /// `x * sigmoid(x)` (HF "silu" / "swish").
    Silu,
    Identity,
}

impl Activation {
    /// The HF config name of an activation, or None if we do not implement it.
    pub fn from_hf_name(name: &str) -> Option<Self> {
        match name {
            "relu" => Some(Activation::Relu),
            "gelu" => Some(Activation::Gelu),
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Some(Activation::GeluTanh),
            "silu" | "swish" => Some(Activation::Silu),
            "linear" | "identity" => Some(Activation::Identity),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NormKind {
    /// `(x - mean) / sqrt(var + eps) * w + b`.
    LayerNorm,
    /// T5's: `x / sqrt(mean(x^2) + eps) * w`, no mean subtraction, no bias.
    RmsNorm,
}

/// Multi-head attention of queries `[B, Tq, H*D]` over keys/values `[Bkv, Tcap, H*D]`.
///
/// Heads are interleaved in the last dimension exactly as the q/k/v projections
/// produce them, so no transpose is needed. Scores are
/// `scale * q·k + position_bias[h, i, j] + key_mask[kv_row, j]`, with `j < kv_len`
/// and, if `causal`, `j <= q_offset + i`. With `relative_bias` instead of
/// `position_bias`, `position_bias[h, i, j]` is `table[bucket(j - (q_offset + i)), h]`
/// ([`relative_position_bucket`]), computed by the backend.
#[derive(Debug, Clone, Copy)]
pub struct AttentionParams<'a> {
    pub num_heads: usize,
    pub head_dim: usize,
    /// Multiplies `q·k` (1/sqrt(D) for BART; 1.0 for T5, whose weights absorb it).
    pub scale: f32,
    pub causal: bool,
    /// Absolute position of the first query (decoder steps attend to a prefix).
    pub q_offset: usize,
    /// Keys used: the first `kv_len` of the `Tcap` slots (a cache may be larger).
    pub kv_len: usize,
    /// Additive f32 mask `[Bkv, Tcap]` (0 = keep, f32::MIN = padding), per kv row.
    pub key_mask: Option<&'a Tensor>,
    /// Additive f32 bias `[H, Tq, kv_len]` shared by the batch (T5 relative positions).
    pub position_bias: Option<&'a Tensor>,
    /// T5's relative position bias, looked up in its bucket table by the backend
    /// (no `[H, Tq, kv_len]` tensor). Mutually exclusive with `position_bias`.
    pub relative_bias: Option<RelativeBiasSpec<'a>>,
    /// u32 `[B]`: kv row each query row reads. Beams of one source share that
    /// source's encoder K/V through it. None means row b reads row b.
    pub kv_index: Option<&'a Tensor>,
    /// The precision the backend may round q, k, v and the softmax probabilities
    /// to (products and sums stay f32): `F32` = exact f32 attention (what every
    /// backend does without this permission); `F16`/`BF16` lets the CUDA backend
    /// use its tensor-core kernel. Models set it from the dtype their weights
    /// were loaded in. The CPU backend ignores it (always f32).
    pub operand_dtype: DType,
}

/// T5's relative position bias as its bucket table: the bias of query position
/// `qp = q_offset + i` and key `j` in head `h` is
/// `table[relative_position_bucket(j - qp, bidirectional, num_buckets, max_distance), h]`,
/// HF's `T5Attention.compute_bias`.
#[derive(Debug, Clone, Copy)]
pub struct RelativeBiasSpec<'a> {
    /// f32 `[num_buckets, H]` (HF's `relative_attention_bias.weight`), on the backend.
    pub table: &'a Tensor,
    pub num_buckets: usize,
    pub max_distance: usize,
    /// true for the encoder (keys on both sides), false for the decoder (causal).
    pub bidirectional: bool,
}

impl RelativeBiasSpec<'_> {
    /// Exact offsets below this distance (per direction), log-spaced buckets above.
    pub fn max_exact(&self) -> usize {
        relative_max_exact(self.bidirectional, self.num_buckets)
    }
    /// The f32 `ln(max_distance / max_exact)` [`relative_position_bucket`] divides by.
    pub fn log_ratio(&self) -> f32 {
        relative_log_ratio(self.max_distance, self.max_exact())
    }
}

fn relative_max_exact(bidirectional: bool, num_buckets: usize) -> usize {
    if bidirectional {
        num_buckets / 2 / 2
    } else {
        num_buckets / 2
    }
}

fn relative_log_ratio(max_distance: usize, max_exact: usize) -> f32 {
    (max_distance as f64 / max_exact as f64).ln() as f32
}

/// The bucket of a relative position `key - query`, exactly as HF
/// `T5Attention._relative_position_bucket` computes it: half the buckets (per
/// direction when bidirectional) are exact offsets, the rest log-spaced up to
/// `max_distance`. The log branch is evaluated in f32 with the same op order as
/// torch (`log(n / max_exact) / ln(max_distance / max_exact) * (buckets - max_exact)`,
/// truncated), so bucket boundaries land where HF's do. The CUDA kernels
/// (`attn_rel_bucket` in `kernels/common.cuh`) compute the same steps.
pub fn relative_position_bucket(
    relative_position: i64,
    bidirectional: bool,
    num_buckets: usize,
    max_distance: usize,
) -> usize {
    let mut nb = num_buckets as i64;
    let mut bucket = 0i64;
    let n = if bidirectional {
        nb /= 2;
        if relative_position > 0 {
            bucket += nb;
        }
        relative_position.abs()
    } else {
        (-relative_position).max(0)
    };
    let max_exact = relative_max_exact(bidirectional, num_buckets) as i64;
    if n < max_exact {
        return (bucket + n) as usize;
    }
    let denom = relative_log_ratio(max_distance, max_exact as usize);
    let x = (n as f32 / max_exact as f32).ln() / denom * (nb - max_exact) as f32;
    // (`as` saturates; the clamp keeps odd configs such as max_distance < max_exact in range)
    let x = (x as i64).clamp(-(1 << 30), 1 << 30);
    let large = (max_exact + x).min(nb - 1).max(0);
    (bucket + large) as usize
}

/// `dst[..] = src[..]` between host tensors of one shape and dtype (f32, u32);
/// `src` may be a strided view, `dst` must be contiguous.
/// An unused slot of [`Backend::repetition_penalty`]'s index.
pub const PENALTY_INDEX_UNUSED: u32 = u32::MAX;

/// `out` (f16 or bf16, `y`'s element count, contiguous) = `y` (f32 `[M, N]`)
/// rounded to nearest even: [`Backend::write_rows`]'s conversion, so the
/// default half-out linears round as the backends' own kernels do.
fn round_into<B: Backend + ?Sized>(backend: &B, y: &Tensor, out: &mut Tensor) -> Result<()> {
    crate::checks::linear_activation("linear", "out", out)?;
    let dims = out.dims().to_vec();
    let (m, n) = (y.dim(0), y.dim(1));
    out.reshape_in_place([1, m, n])?;
    let r = backend.write_rows(&y.reshape([1, m, n])?, out, 0);
    out.reshape_in_place(dims)?;
    r
}

pub fn host_copy(src: &Tensor, dst: &mut Tensor, op: &'static str) -> Result<()> {
    crate::checks::same_shape_and_dtype(op, src, dst)?;
    dst.require_contiguous(op)?;
    let (o, n) = (dst.offset(), dst.elem_count());
    let contiguous = src.is_contiguous();
    match (src.host()?, dst.host_mut(op)?) {
        (HostStorage::F32(a), HostStorage::F32(b)) if contiguous => {
            let so = src.offset();
            b[o..o + n].copy_from_slice(&a[so..so + n]);
        }
        (HostStorage::U32(a), HostStorage::U32(b)) if contiguous => {
            let so = src.offset();
            b[o..o + n].copy_from_slice(&a[so..so + n]);
        }
        (HostStorage::F32(a), HostStorage::F32(b)) => {
            for (d, i) in b[o..o + n].iter_mut().zip(src.strided_indices()) {
                *d = a[i];
            }
        }
        (HostStorage::U32(a), HostStorage::U32(b)) => {
            for (d, i) in b[o..o + n].iter_mut().zip(src.strided_indices()) {
                *d = a[i];
            }
        }
        (h, _) => {
            return Err(crate::Error::Invalid(format!(
                "{op}: {} tensors are not supported (f32, u32)",
                h.dtype()
            )))
        }
    }
    Ok(())
}

/// A point in a device's queue of work (a CUDA event), made by
/// [`Backend::device_timestamp`]; only the backend that made it reads it.
pub struct DeviceTimestamp(Box<dyn std::any::Any + Send + Sync>);

impl DeviceTimestamp {
    pub fn new<T: std::any::Any + Send + Sync>(mark: T) -> Self {
        DeviceTimestamp(Box::new(mark))
    }
    pub fn downcast_ref<T: std::any::Any>(&self) -> Option<&T> {
        self.0.downcast_ref()
    }
}

impl std::fmt::Debug for DeviceTimestamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DeviceTimestamp")
    }
}

/// Ops a backend recorded between [`Backend::begin_capture`] and
/// [`Backend::end_capture`] (a CUDA graph), run again by [`Backend::replay`];
/// dropping it frees what the recording reserved. Only the backend that made
/// it reads it.
pub struct CapturedGraph(Box<dyn std::any::Any + Send + Sync>);

impl CapturedGraph {
    pub fn new<T: std::any::Any + Send + Sync>(graph: T) -> Self {
        CapturedGraph(Box::new(graph))
    }
    pub fn downcast_ref<T: std::any::Any>(&self) -> Option<&T> {
        self.0.downcast_ref()
    }
}

impl std::fmt::Debug for CapturedGraph {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CapturedGraph")
    }
}

/// Device memory held by a backend ([`Backend::device_memory`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeviceMemory {
    /// Bytes in live tensors now.
    pub in_use_bytes: usize,
    /// Most bytes in live tensors at once since the last reset.
    pub peak_in_use_bytes: usize,
    /// Bytes held from the driver (in use, or cached for reuse).
    pub reserved_bytes: usize,
}

pub trait Backend: Send + Sync + std::fmt::Debug {
    fn device(&self) -> Device;
    /// Human-readable description (ISA or GPU name).
    fn describe(&self) -> String;
    /// Runs `f` where this backend's ops run best. The CPU backend runs it on a
    /// thread of its pool, so each op's parallel split forks locally instead of
    /// being handed to the pool from outside (which costs a wake-up per op and,
    /// in rayon's injector queue, an allocation every few dozen ops).
    fn run_scoped(&self, f: &mut (dyn FnMut() + Send)) {
        f()
    }
    /// Waits until every op queued so far has finished (a no-op where ops run
    /// synchronously). The profiler calls it around each op of an asynchronous
    /// device so that an op's time is its own, not its launch's.
    fn synchronize(&self) -> Result<()> {
        Ok(())
    }
    /// Opens a named range for an external profiler's timeline (NVTX on CUDA,
    /// seen by Nsight Systems / Nsight Compute); ranges nest and are closed by
    /// [`Backend::range_pop`] on the same thread. A no-op unless a profiler is
    /// attached; it never allocates then.
    fn range_push(&self, _name: &str) {}
    /// Closes the innermost range [`Backend::range_push`] opened on this thread.
    fn range_pop(&self) {}
    /// The device memory this backend holds for tensors; None where tensors
    /// live in host memory (the process's resident size tells there).
    fn device_memory(&self) -> Option<DeviceMemory> {
        None
    }
    /// Starts a new peak for [`DeviceMemory::peak_in_use_bytes`].
    fn reset_peak_device_memory(&self) {}
    /// The device's theoretical peaks for ops on `dtype` weights (the
    /// profiler's "% of peak"); None where the caller measures them (the CPU).
    fn device_peaks(&self, _dtype: DType) -> Option<crate::profile::DevicePeaks> {
        None
    }
    /// Marks the current end of the device's queue without waiting (a CUDA
    /// event), so that the device's own clock can time the work between two
    /// marks. None where ops run synchronously on the host: the wall clock
    /// around a call is its time there.
    fn device_timestamp(&self) -> Result<Option<DeviceTimestamp>> {
        Ok(None)
    }
    /// Device nanoseconds from `start` to `end` (both made by this backend,
    /// `start` first); waits until the device has reached `end`.
    fn device_elapsed_ns(&self, start: &DeviceTimestamp, end: &DeviceTimestamp) -> Result<u64> {
        let _ = (start, end);
        Err(crate::Error::Invalid(format!(
            "{} has no device timer",
            self.describe()
        )))
    }

    // ---- recorded steps (CUDA graphs) ---------------------------------------
    /// Starts recording the ops that follow instead of running them, so that a
    /// decode step recorded once can be run again with one launch
    /// ([`Backend::replay`]). Returns false, recording nothing, where the
    /// backend cannot record (the CPU): its ops then run as usual.
    ///
    /// While recording, nothing an op computes can be read: ops that cross to
    /// or from the host (upload, download, the host copies, topk to the host,
    /// synchronize, timestamps) fail. Scalar arguments are frozen into the
    /// recording, so what changes between replays must come from backend
    /// tensors the caller refills before each replay ([`Backend::attention_at`],
    /// [`Backend::write_rows_at`], ids). Buffers the recorded ops allocate stay
    /// reserved for the recording until it is dropped; the tensors the caller
    /// passed must stay where they are while it replays ([`Tensor::address`]).
    fn begin_capture(&self) -> Result<bool> {
        Ok(false)
    }
    /// Ends the recording a `begin_capture` returning true started; call it
    /// also when an op failed in between (it then returns an error). Ops run
    /// as usual afterwards.
    fn end_capture(&self) -> Result<CapturedGraph> {
        Err(crate::Error::Invalid(format!(
            "{}: no recording in progress",
            self.describe()
        )))
    }
    /// Queues a recording this backend made, like any op (no wait).
    fn replay(&self, graph: &CapturedGraph) -> Result<()> {
        let _ = graph;
        Err(crate::Error::Invalid(format!(
            "{} cannot replay recorded ops",
            self.describe()
        )))
    }

    // ---- memory -------------------------------------------------------------
    /// A zero-filled tensor on this backend.
    fn zeros(&self, shape: &[usize], dtype: DType) -> Result<Tensor>;
    /// Copy a host tensor onto this backend (a clone of the handle on the CPU).
    fn upload(&self, t: &Tensor) -> Result<Tensor>;
    /// Copy a tensor of this backend to the host.
    fn download(&self, t: &Tensor) -> Result<Tensor>;
    /// Copy the host tensor `src` into `dst`, a contiguous tensor of this
    /// backend with the same shape and dtype (f32, u32), keeping `dst`'s memory:
    /// a decode loop's step inputs stay where its kernels read them, and no
    /// step allocates. The default serves host-resident tensors.
    fn copy_from_host(&self, src: &Tensor, dst: &mut Tensor) -> Result<()> {
        host_copy(src, dst, "copy_from_host")
    }
    /// Copy `src`, a tensor of this backend, into the contiguous host tensor
    /// `dst` of the same shape and dtype (f32, u32), without allocating.
    fn copy_to_host(&self, src: &Tensor, dst: &mut Tensor) -> Result<()> {
        host_copy(src, dst, "copy_to_host")
    }
    /// [`copy_to_host`](Self::copy_to_host) of each `(src, dst)` pair, waiting
    /// for the device once for all of them (a decode step's search results:
    /// one round trip instead of one per buffer). The default copies one by one.
    fn copy_to_host_all(&self, copies: &mut [(&Tensor, &mut Tensor)]) -> Result<()> {
        for (src, dst) in copies.iter_mut() {
            self.copy_to_host(src, dst)?;
        }
        Ok(())
    }
    /// Convert to `dtype`; to int8 it quantises per row (absmax / 127).
    fn cast(&self, t: &Tensor, dtype: DType) -> Result<Tensor>;
    /// `dst[b, start + t, :] = src[b, t, :]` for src `[B, T, C]`, dst `[B, Tcap, C]`
    /// (writes decoder steps into a KV cache). Same dtypes copy bits; an f32
    /// `src` into an f16 or bf16 `dst` is rounded as [`cast`](Self::cast) to
    /// that dtype rounds (to nearest even, NaN stays NaN), so a half-precision
    /// cache takes f32 projections without a cast tensor per step. Other dtype
    /// pairs are an error.
    fn write_rows(&self, src: &Tensor, dst: &mut Tensor, start: usize) -> Result<()>;
    /// [`Backend::write_rows`] at `start = positions[0]`, read when the op runs
    /// (`positions` as in [`Backend::attention_at`]), so that a recorded decode
    /// step writes each replay's row. The default reads `positions` on the
    /// host (a copy; test doubles only).
    fn write_rows_at(&self, src: &Tensor, dst: &mut Tensor, positions: &Tensor) -> Result<()> {
        let host = self.download(positions)?;
        let (start, _) = crate::checks::positions(&host)?;
        self.write_rows(src, dst, start)
    }
    /// The dtype a model should store its attention K/V caches in, given its
    /// attention operand dtype ([`AttentionParams::operand_dtype`]: F32 for
    /// f32/int8 models, F16/BF16 for half models). Caches are written with
    /// [`write_rows`](Self::write_rows), which converts f32 steps to it. The
    /// default keeps f32 caches.
    fn kv_cache_dtype(&self, operand: DType) -> DType {
        let _ = operand;
        DType::F32
    }
    /// The dtype a model should store the encoder's intermediate activations
    /// in (the normalised sublayer input of a pre-LN block, q/k/v, the
    /// attention output, the FFN's inner activations), given its attention
    /// operand dtype as for [`kv_cache_dtype`](Self::kv_cache_dtype). The
    /// residual stream stays f32. A backend answers F16/BF16 only where its
    /// consumers of those tensors (tensor-core GEMMs and attention) round them
    /// to that type anyway, so that storing them rounded halves their bytes
    /// without changing those consumers' results. The default keeps f32.
    fn activation_dtype(&self, operand: DType) -> DType {
        let _ = operand;
        DType::F32
    }
    /// `dst[i] = src[index[i]]` along dim 0 (beam reordering). `index` is u32.
    fn index_select(&self, src: &Tensor, index: &Tensor, dst: &mut Tensor) -> Result<()>;

    // ---- dense --------------------------------------------------------------
    /// `out[m, n] = sum_k x[m, k] * w[n, k] + bias[n]` with w in HF's `[out, in]` layout.
    /// x may have any leading dims (flattened to M rows).
    ///
    /// Half activations ([`activation_dtype`](Self::activation_dtype)): `x` may
    /// be f32, f16 or bf16 and `out` f32, f16 or bf16, for any weight dtype (the
    /// same holds for [`linear_act`](Self::linear_act) and
    /// [`linear_gated`](Self::linear_gated); [`linear_add`](Self::linear_add)
    /// takes a half `x` but its `out`, the residual stream, is f32). A half `x`
    /// is read as its exact f32 widening, so the result is the f32 op's on
    /// `cast(x, F32)`; a half `out` receives that f32 result (bias and
    /// activation included) rounded to nearest even as [`cast`](Self::cast)
    /// rounds. Other dtypes are an error.
    fn linear(&self, x: &Tensor, w: &Tensor, bias: Option<&Tensor>, out: &mut Tensor)
        -> Result<()>;
    /// `out = act(linear(x, w, bias))`: an FFN's up projection. A backend may
    /// fuse the activation into the GEMM's epilogue; the result equals
    /// [`Backend::linear`] then [`Backend::activation`] (the default).
    fn linear_act(
        &self,
        x: &Tensor,
        w: &Tensor,
        bias: Option<&Tensor>,
        act: Activation,
        out: &mut Tensor,
    ) -> Result<()> {
        if out.dtype() == DType::F32 {
            self.linear(x, w, bias, out)?;
            return self.activation(out, act);
        }
        let [m, n, _] = crate::checks::linear_weight(x, w)?;
        crate::checks::linear_out(x, n, out)?;
        let mut y = self.zeros(&[m, n], DType::F32)?;
        self.linear(x, w, bias, &mut y)?;
        self.activation(&mut y, act)?;
        round_into(self, &y, out)
    }
    /// `out = act(linear(x, w_gate)) * linear(x, w_up)`: a gated FFN's up
    /// projections (T5 v1.1 / Flan-T5 / mT5 `wi_0`, `wi_1`). No biases (T5's
    /// gated FFN has none). `w_gate` and `w_up` are `[N, K]` of one dtype;
    /// differing shapes or dtypes are an error. The result equals two
    /// [`Backend::linear`]s then [`Backend::gated_activation`] on the same
    /// backend. The default does exactly that and allocates two `[M, N]`
    /// temporaries per call: only test doubles should rely on it.
    fn linear_gated(
        &self,
        x: &Tensor,
        w_gate: &Tensor,
        w_up: &Tensor,
        act: Activation,
        out: &mut Tensor,
    ) -> Result<()> {
        let [m, n, _] = crate::checks::linear_gated(x, w_gate, w_up)?;
        crate::checks::linear_out(x, n, out)?;
        let mut gate = self.zeros(&[m, n], DType::F32)?;
        let mut up = self.zeros(&[m, n], DType::F32)?;
        self.linear(x, w_gate, None, &mut gate)?;
        self.linear(x, w_up, None, &mut up)?;
        // out may have any leading dims: gated_activation compares counts and rows.
        if out.dtype() == DType::F32 {
            return self.gated_activation(&gate, &up, act, out);
        }
        let mut y = self.zeros(&[m, n], DType::F32)?;
        self.gated_activation(&gate, &up, act, &mut y)?;
        round_into(self, &y, out)
    }
    /// `out += linear(x, w, bias)`: a sublayer's output projection added to the
    /// residual stream `out` (the GEMM's residual epilogue). A backend may fuse
    /// the add into the GEMM; the result equals [`Backend::linear`] into a
    /// temporary then [`Backend::add_assign`] on the same backend. The default
    /// does exactly that and allocates the temporary per call: only test
    /// doubles should rely on it.
    fn linear_add(
        &self,
        x: &Tensor,
        w: &Tensor,
        bias: Option<&Tensor>,
        out: &mut Tensor,
    ) -> Result<()> {
        let [m, n, _] = crate::checks::linear_weight(x, w)?;
        crate::checks::linear_out(x, n, out)?;
        let mut y = self.zeros(&[m, n], DType::F32)?;
        self.linear(x, w, bias, &mut y)?;
        // out may have any leading dims: add_assign compares counts.
        let y = y.reshape(out.dims())?;
        self.add_assign(out, &y)
    }
    /// `out[b] = a[b] @ b[b]` for a `[B, M, K]`, b `[B, K, N]`; b may be a strided view.
    fn batched_matmul(&self, a: &Tensor, b: &Tensor, out: &mut Tensor) -> Result<()>;

    // ---- normalisation ------------------------------------------------------
    /// `out = norm(x)` row-wise over the last dim. `x` is f32; `out` is f32,
    /// or f16/bf16 (a pre-LN sublayer's input as a half activation,
    /// [`activation_dtype`](Self::activation_dtype)): the f32 result rounded
    /// to nearest even as [`cast`](Self::cast) rounds. Likewise for
    /// [`add_norm`](Self::add_norm)'s `out` (its residual stays f32).
    fn norm(
        &self,
        kind: NormKind,
        x: &Tensor,
        weight: &Tensor,
        bias: Option<&Tensor>,
        eps: f32,
        out: &mut Tensor,
    ) -> Result<()>;
    /// Fused residual: `residual += x; out = norm(residual)` in one pass.
    #[allow(clippy::too_many_arguments)]
    fn add_norm(
        &self,
        kind: NormKind,
        x: &Tensor,
        residual: &mut Tensor,
        weight: &Tensor,
        bias: Option<&Tensor>,
        eps: f32,
        out: &mut Tensor,
    ) -> Result<()>;

    // ---- pointwise ----------------------------------------------------------
    fn activation(&self, x: &mut Tensor, act: Activation) -> Result<()>;
    /// `out = act(gate) * up` (T5 v1.1 gated-GELU, gated SiLU).
    fn gated_activation(
        &self,
        gate: &Tensor,
        up: &Tensor,
        act: Activation,
        out: &mut Tensor,
    ) -> Result<()>;
    /// `x += y`; y may be a row vector broadcast over x's rows.
    fn add_assign(&self, x: &mut Tensor, y: &Tensor) -> Result<()>;
    /// `x *= y` elementwise; y may be a row vector broadcast over x's rows.
    fn mul_assign(&self, x: &mut Tensor, y: &Tensor) -> Result<()>;
    /// `x *= s`.
    fn scale(&self, x: &mut Tensor, s: f32) -> Result<()>;
    /// `x[index[i]] = value` for every i: `index` (u32, on this backend) holds
    /// flat positions into the contiguous `x` (repeats allowed). Search on the
    /// backend bans ids with it (`value` = -inf). The default goes through the
    /// host (it allocates).
    fn scatter_fill(&self, x: &mut Tensor, index: &Tensor, value: f32) -> Result<()> {
        let idx = self.download(index)?;
        crate::checks::scatter_fill(x, idx.as_u32()?)?;
        let mut h = self.download(x)?.contiguous()?;
        let v = h.as_f32_mut()?;
        for &i in idx.as_u32()? {
            v[i as usize] = value;
        }
        self.copy_from_host(&h, x)
    }
    /// HF's repetition penalty at flat positions of the contiguous `x`: for
    /// every entry `i` of `index` (u32, on this backend), `x[i] = x[i] < 0 ?
    /// x[i] * penalty : x[i] / penalty`. Entries equal to
    /// [`PENALTY_INDEX_UNUSED`] are skipped (padding, so that a recorded
    /// step's launch does not change); the others must be distinct (each is
    /// penalised once per occurrence). Search on the backend applies
    /// `--repetition-penalty` with it. The default goes through the host (it
    /// allocates).
    fn repetition_penalty(&self, x: &mut Tensor, index: &Tensor, penalty: f32) -> Result<()> {
        let idx = self.download(index)?;
        crate::checks::repetition_penalty(x, idx.as_u32()?)?;
        let mut h = self.download(x)?.contiguous()?;
        crate::checks::apply_repetition_penalty(h.as_f32_mut()?, idx.as_u32()?, penalty);
        self.copy_from_host(&h, x)
    }
    /// `out[i, :] = table[ids[i], :] * scale` (ids u32).
    fn embedding(&self, ids: &Tensor, table: &Tensor, scale: f32, out: &mut Tensor) -> Result<()>;

    // ---- attention ----------------------------------------------------------
    /// Scaled dot-product attention ([`AttentionParams`]). `q` is f32, f16 or
    /// bf16; `k` and `v` are f32, f16 or bf16, both the same; `out` is f32, f16
    /// or bf16. Half inputs are read as their exact f32 widening (the result is
    /// the op's on the widened tensors) and a half `out` receives the f32 result
    /// rounded to nearest even, as [`cast`](Self::cast) rounds.
    fn attention(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        params: &AttentionParams,
        out: &mut Tensor,
    ) -> Result<()>;

    /// [`Backend::attention`] at positions read when the op runs: `positions`
    /// is u32 `[2]` = `(q_offset, kv_len)` on this backend and replaces
    /// `params.q_offset` and `params.kv_len`, so that a recorded decode step
    /// attends over each replay's prefix. kv_len must not exceed the cache's
    /// `Tcap` (a device that cannot check it when the op runs clamps it), and
    /// `params.position_bias`, whose shape depends on kv_len, must be None.
    /// The default reads `positions` on the host (a copy; test doubles only).
    fn attention_at(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        params: &AttentionParams,
        positions: &Tensor,
        out: &mut Tensor,
    ) -> Result<()> {
        let host = self.download(positions)?;
        let p = crate::checks::attention_at(params, &host)?;
        self.attention(q, k, v, &p, out)
    }

    // ---- search -------------------------------------------------------------
    /// Row-wise softmax over the last dim, in place.
    fn softmax(&self, x: &mut Tensor) -> Result<()>;
    /// Row-wise log-softmax over the last dim, in place.
    fn log_softmax(&self, x: &mut Tensor) -> Result<()>;
    /// The `k` largest entries of each row, largest first (ties: lower index
    /// first): `(indices, values)`, each `rows * k` long, on the host.
    fn topk(&self, x: &Tensor, k: usize) -> Result<(Vec<u32>, Vec<f32>)>;
    /// [`topk`](Self::topk) into tensors of this backend: u32 `ids_out` and f32
    /// `vals_out`, both contiguous `[rows, k]`, so that search on the device
    /// fetches only these small buffers (with [`copy_to_host`](Self::copy_to_host))
    /// and allocates nothing per step. The default goes through `topk` and
    /// `copy_from_host` (it allocates).
    fn topk_into(
        &self,
        x: &Tensor,
        k: usize,
        ids_out: &mut Tensor,
        vals_out: &mut Tensor,
    ) -> Result<()> {
        crate::checks::topk_into(x, k, ids_out, vals_out)?;
        let rows = x.rows();
        let (ids, vals) = self.topk(x, k)?;
        self.copy_from_host(&Tensor::from_u32(ids, [rows, k])?, ids_out)?;
        self.copy_from_host(&Tensor::from_f32(vals, [rows, k])?, vals_out)
    }
    /// The two numbers a row's softmax normalises with: f32 `out[r] =
    /// (max_r, sum_j e^(x[r, j] - max_r))` for `out` contiguous `[rows, 2]`
    /// (the row's log-sum-exp is `max + ln(sum)`). Device search uses it to
    /// score the chosen id without fetching the row. The default reads `x`
    /// on the host (it allocates).
    fn softmax_stats(&self, x: &Tensor, out: &mut Tensor) -> Result<()> {
        crate::checks::softmax_stats(x, out)?;
        let host = self.download(x)?.contiguous()?;
        let cols = x.cols();
        let mut stats = Vec::with_capacity(2 * x.rows());
        for row in host.as_f32()?.chunks(cols.max(1)).take(x.rows()) {
            let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let s: f64 = row.iter().map(|&v| f64::from(v - m).exp()).sum();
            stats.push(m);
            stats.push(s as f32);
        }
        self.copy_from_host(&Tensor::from_f32(stats, [x.rows(), 2])?, out)
    }
}

/// A profiler range ([`Backend::range_push`]) that is closed when dropped, also on
/// an early return through `?`.
pub struct RangeGuard<'a>(&'a dyn Backend);

impl<'a> RangeGuard<'a> {
    pub fn open(backend: &'a dyn Backend, name: &str) -> Self {
        backend.range_push(name);
        RangeGuard(backend)
    }
}

impl Drop for RangeGuard<'_> {
    fn drop(&mut self) {
        self.0.range_pop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_copy_fills_dst_in_place_and_rejects_mismatches() {
        let src = Tensor::from_f32((0..6).map(|i| i as f32).collect(), [2, 3]).unwrap();
        let mut dst = Tensor::zeros([3, 2], DType::F32);
        let before = std::ptr::from_ref(dst.as_f32().unwrap()).cast::<f32>();
        host_copy(&src.transpose(0, 1).unwrap(), &mut dst, "copy_to_host").unwrap();
        assert_eq!(dst.as_f32().unwrap(), [0.0, 3.0, 1.0, 4.0, 2.0, 5.0]);
        assert_eq!(before, dst.as_f32().unwrap().as_ptr(), "same memory");

        let ids = Tensor::from_u32(vec![7, 8, 9], [3]).unwrap();
        let mut into = Tensor::zeros([3], DType::U32);
        host_copy(&ids, &mut into, "copy_from_host").unwrap();
        assert_eq!(into.as_u32().unwrap(), [7, 8, 9]);

        let e = host_copy(&src, &mut dst, "copy_from_host").unwrap_err();
        assert!(e.to_string().contains("copy_from_host"), "{e}");
        let mut wrong_dtype = Tensor::zeros([3], DType::F32);
        assert!(host_copy(&ids, &mut wrong_dtype, "copy_to_host").is_err());
        let half = Tensor::zeros([2], DType::F16);
        let mut half_dst = Tensor::zeros([2], DType::F16);
        assert!(host_copy(&half, &mut half_dst, "copy_to_host").is_err());
    }
}
