//! [`CpuBackend`]: the `Backend` trait on host memory.
//!
//! Every method checks devices, dtypes, contiguity and shapes first (shapes and
//! ranges through `encdec_core::checks`, which every backend shares) and returns
//! an `encdec_core::Error` naming the op (never panics on bad input), then runs
//! the op of [`crate::ops`] for the ISA of [`crate::isa::active`] inside the
//! backend's own rayon pool.
//!
//! Dtypes: activations are f32, except that `linear*`, `attention` and `norm`
//! also read (x, q/k/v) and write (out) f16/bf16 half activations, as their exact
//! f32 widening and the f32 result rounded (`Backend::activation_dtype` stays f32
//! here: the CPU models keep f32 activations). Weights of `linear` and `embedding` may be f32,
//! f16, bf16 or int8; norm weights and biases may be f32, f16 or bf16 (non-f32
//! ones are converted to f32 once per call, so models should keep them f32).

use std::borrow::Cow;
use std::cell::Cell;
use std::sync::Arc;

thread_local! {
    /// The relative-bias rows of the last attention call on this thread.
    static REL_BIAS_ROWS: Cell<Vec<f32>> = const { Cell::new(Vec::new()) };
    /// The GEMM results `linear_gated` (gate and up, `2 * M * N`) and
    /// `linear_add` (`M * N`) combine, kept for the next call so a decode step
    /// allocates nothing.
    static PRODUCT_SCRATCH: Cell<Vec<f32>> = const { Cell::new(Vec::new()) };
}

use encdec_core::checks::{self, same_count};
use encdec_core::{
    Activation, AttentionParams, Backend, DType, Device, Error, HostStorage, NormKind, Result,
    Storage, Tensor,
};
use half::slice::HalfFloatSliceExt;

use crate::isa;
use crate::ops::attention::{self, Attn, View3};
use crate::ops::gemm::{self, Weights};
use crate::ops::{
    activation, cast, copy, elementwise, embedding, matmul, norm, par, softmax, topk,
};

const CPU: &str = "cpu";

/// The CPU backend: SIMD ops (AVX-512 / AVX2 / NEON, chosen at run time) on a
/// rayon thread pool of its own.
#[derive(Debug, Clone)]
pub struct CpuBackend {
    pool: Option<Arc<rayon::ThreadPool>>,
    threads: usize,
}

impl Default for CpuBackend {
    fn default() -> Self {
        Self::new()
    }
}

impl CpuBackend {
    /// A backend with one thread per available core.
    pub fn new() -> Self {
        Self::with_threads(0)
    }

    /// A backend with `n` threads (`0`: one per available core). If the pool
    /// cannot be started the ops run on rayon's global pool instead.
    pub fn with_threads(n: usize) -> Self {
        Self::try_with_threads(n).unwrap_or_else(|_| CpuBackend {
            pool: None,
            threads: rayon::current_num_threads(),
        })
    }

    /// As [`with_threads`](Self::with_threads), but an error if the pool cannot start.
    pub fn try_with_threads(n: usize) -> Result<Self> {
        let n = if n == 0 {
            std::thread::available_parallelism().map_or(1, |p| p.get())
        } else {
            n
        };
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .thread_name(|i| format!("encdec-cpu-{i}"))
            .build()
            .map_err(|e| Error::Invalid(format!("cpu backend: cannot start {n} threads: {e}")))?;
        Ok(CpuBackend {
            pool: Some(Arc::new(pool)),
            threads: n,
        })
    }

    /// Threads the ops use.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Runs `f` inside the backend's thread pool.
    ///
    /// Every op does this itself, but entering the pool from outside costs a
    /// thread hand-off (microseconds) per op; a caller that runs many small
    /// ops (a decode step) can wrap them all in one `install`, after which the
    /// ops run inline on the pool's thread.
    pub fn install<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        match &self.pool {
            Some(p) => p.install(f),
            None => f(),
        }
    }

    /// Runs an op of `par_size` (the measure its parallel split compares with
    /// [`par::PAR_MIN_ELEMS`]): inline when it will run on one thread anyway
    /// (no hand-off), else inside the pool.
    fn run<R: Send>(&self, par_size: usize, f: impl FnOnce() -> R + Send) -> R {
        match &self.pool {
            Some(p) if par_size > par::PAR_MIN_ELEMS => p.install(f),
            _ => f(),
        }
    }
}

// ---- argument checks -------------------------------------------------------

fn host<'a>(t: &'a Tensor, op: &'static str) -> Result<&'a HostStorage> {
    match t.storage() {
        Storage::Host(h) => Ok(h),
        Storage::Device(b) => Err(Error::WrongDevice {
            op,
            got: b.device().to_string(),
            want: CPU.into(),
        }),
    }
}

fn unsupported(op: &'static str, dtype: DType) -> Error {
    Error::UnsupportedDType {
        op,
        dtype,
        device: CPU.into(),
    }
}

/// The f32 elements of a contiguous host tensor.
fn f32_in<'a>(t: &'a Tensor, op: &'static str) -> Result<&'a [f32]> {
    let h = host(t, op)?;
    t.require_contiguous(op)?;
    match h {
        HostStorage::F32(v) => Ok(&v[t.offset()..t.offset() + t.elem_count()]),
        h => Err(unsupported(op, h.dtype())),
    }
}

/// The f32 elements of a contiguous, uniquely owned host tensor, writable.
fn f32_out<'a>(t: &'a mut Tensor, op: &'static str) -> Result<&'a mut [f32]> {
    host(t, op)?;
    t.require_contiguous(op)?;
    let (o, n) = (t.offset(), t.elem_count());
    match t.host_mut(op)? {
        HostStorage::F32(v) => Ok(&mut v[o..o + n]),
        h => Err(unsupported(op, h.dtype())),
    }
}

thread_local! {
    /// A half-out norm's f32 result before rounding (reused per thread).
    static NORM_SCRATCH: std::cell::Cell<Vec<f32>> = const { std::cell::Cell::new(Vec::new()) };
}

/// Runs `f` on `len` floats of this thread's [`NORM_SCRATCH`].
fn with_norm_scratch<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    let mut scratch = NORM_SCRATCH.with(|c| c.take());
    scratch.resize(len, 0.0);
    let r = f(&mut scratch[..len]);
    NORM_SCRATCH.with(|c| c.set(scratch));
    r
}

/// `out` (f16 or bf16, contiguous, `src.len()` elements) = `src` rounded to
/// nearest even, as `cast` rounds.
fn round_out(src: &[f32], out: &mut Tensor, op: &'static str) -> Result<()> {
    out.require_contiguous(op)?;
    let (o, n) = (out.offset(), out.elem_count());
    match out.host_mut(op)? {
        HostStorage::F16(v) => v[o..o + n].convert_from_f32_slice(src),
        HostStorage::BF16(v) => v[o..o + n].convert_from_f32_slice(src),
        h => return Err(unsupported(op, h.dtype())),
    }
    Ok(())
}

/// The u32 elements of a contiguous, uniquely owned host tensor, writable.
fn u32_out<'a>(t: &'a mut Tensor, op: &'static str) -> Result<&'a mut [u32]> {
    host(t, op)?;
    t.require_contiguous(op)?;
    let (o, n) = (t.offset(), t.elem_count());
    match t.host_mut(op)? {
        HostStorage::U32(v) => Ok(&mut v[o..o + n]),
        h => Err(Error::DTypeMismatch {
            op,
            lhs: h.dtype(),
            rhs: DType::U32,
        }),
    }
}

/// The u32 elements of a contiguous host tensor.
fn u32_in<'a>(t: &'a Tensor, op: &'static str) -> Result<&'a [u32]> {
    let h = host(t, op)?;
    t.require_contiguous(op)?;
    match h {
        HostStorage::U32(v) => Ok(&v[t.offset()..t.offset() + t.elem_count()]),
        h => Err(Error::DTypeMismatch {
            op,
            lhs: h.dtype(),
            rhs: DType::U32,
        }),
    }
}

/// A vector of `n` f32/f16/bf16 values as f32 (borrowed when already f32).
fn vec_f32<'a>(t: &'a Tensor, n: usize, op: &'static str) -> Result<Cow<'a, [f32]>> {
    let h = host(t, op)?;
    t.require_contiguous(op)?;
    checks::vector_len(op, t, n)?;
    let r = t.offset()..t.offset() + n;
    Ok(match h {
        HostStorage::F32(v) => Cow::Borrowed(&v[r]),
        HostStorage::F16(v) => {
            let mut o = vec![0.0; n];
            v[r].convert_to_f32_slice(&mut o);
            Cow::Owned(o)
        }
        HostStorage::BF16(v) => {
            let mut o = vec![0.0; n];
            v[r].convert_to_f32_slice(&mut o);
            Cow::Owned(o)
        }
        h => return Err(unsupported(op, h.dtype())),
    })
}

/// A contiguous `[rows, cols]` weight matrix as the GEMM reads it.
fn weights<'a>(t: &'a Tensor, op: &'static str) -> Result<Weights<'a>> {
    let h = host(t, op)?;
    t.require_contiguous(op)?;
    let (o, n) = (t.offset(), t.elem_count());
    Ok(match h {
        HostStorage::F32(v) => Weights::F32(&v[o..o + n]),
        HostStorage::F16(v) => Weights::F16(&v[o..o + n]),
        HostStorage::BF16(v) => Weights::BF16(&v[o..o + n]),
        HostStorage::I8 { data, scales } => {
            let cols = checks::int8_weight_rows(op, t, data.len() / scales.len().max(1))?;
            Weights::I8 {
                data: &data[o..o + n],
                scales: &scales[o / cols..(o + n) / cols],
            }
        }
        HostStorage::U32(_) => return Err(unsupported(op, DType::U32)),
    })
}

/// A rank-3 f32 host view with a contiguous last dim, checked to lie within its storage.
fn view3<'a>(t: &'a Tensor, op: &'static str) -> Result<View3<'a>> {
    let h = host(t, op)?;
    let v = match h {
        HostStorage::F32(v) => v,
        h => return Err(unsupported(op, h.dtype())),
    };
    checks::attention_view(op, t, v.len())?;
    let s = t.strides();
    Ok(View3 {
        data: v,
        off: t.offset(),
        sb: s[0],
        st: s[1],
    })
}

// ---- the trait -------------------------------------------------------------

impl CpuBackend {
    /// `linear` (`add` false) and `linear_add` (`add`: `out += ..`), errors
    /// named `op`. The add goes through a reused buffer, `linear` then
    /// `add_assign` (so the same bits): the GEMM's store-or-accumulate split
    /// over K blocks would add the residual in another order.
    fn linear_into(
        &self,
        op: &'static str,
        x: &Tensor,
        w: &Tensor,
        bias: Option<&Tensor>,
        out: &mut Tensor,
        add: bool,
    ) -> Result<()> {
        self.linear_act_into(op, x, w, bias, None, out, add)
    }

    /// [`linear_into`](Self::linear_into), then `act` on the f32 result when
    /// given (not with `add`): `linear_act`'s bits, before a half out rounds.
    #[allow(clippy::too_many_arguments)]
    fn linear_act_into(
        &self,
        op: &'static str,
        x: &Tensor,
        w: &Tensor,
        bias: Option<&Tensor>,
        act: Option<Activation>,
        out: &mut Tensor,
        add: bool,
    ) -> Result<()> {
        linear_io_dtypes(op, x, out)?;
        let [m, n, k] = checks::linear_weight(x, w)?;
        let wv = weights(w, op)?;
        let b = bias.map(|b| vec_f32(b, n, op)).transpose()?;
        checks::linear_out(x, n, out)?;
        if add && out.dtype() != DType::F32 {
            return Err(Error::Invalid(format!(
                "{op}: out (the residual stream) must be f32, got {}",
                out.dtype()
            )));
        }
        // The sum for `add` goes through a scratch part of its own.
        let extra = if add { m * n } else { 0 };
        self.linear_io(op, x, out, extra, |xs, o, y| {
            let isa = isa::active();
            if !add {
                self.install(|| gemm::gemm(m, n, k, xs, wv, b.as_deref(), o));
                if let Some(act) = act {
                    self.run(o.len(), || activation::activation(isa, act, o));
                }
                return;
            }
            self.install(|| gemm::gemm(m, n, k, xs, wv, b.as_deref(), y));
            self.run(o.len(), || elementwise::add_assign(isa, o, y));
        })
    }

    /// Runs `f(x, out, scratch)` on f32 slices: `x` itself when f32, else
    /// widened exactly into this thread's product scratch; `out` itself when
    /// f32, else a scratch part rounded into it afterwards (to nearest even, as
    /// `cast`); `scratch` `extra` more floats. Half activations
    /// (`Backend::activation_dtype`), one reused buffer for all three.
    fn linear_io(
        &self,
        op: &'static str,
        x: &Tensor,
        out: &mut Tensor,
        extra: usize,
        f: impl FnOnce(&[f32], &mut [f32], &mut [f32]),
    ) -> Result<()> {
        let (xo, xn) = (x.offset(), x.elem_count());
        let (oo, on) = (out.offset(), out.elem_count());
        let xh = host(x, op)?;
        let x_len = if xh.dtype() == DType::F32 { 0 } else { xn };
        let o_len = if out.dtype() == DType::F32 { 0 } else { on };
        let oh = out.host_mut(op)?;
        with_product_scratch(x_len + o_len + extra, |s| {
            let (xbuf, rest) = s.split_at_mut(x_len);
            let (obuf, ebuf) = rest.split_at_mut(o_len);
            let xs: &[f32] = match xh {
                HostStorage::F32(v) => &v[xo..xo + xn],
                HostStorage::F16(v) => {
                    self.run(xn, || cast::f16_to_f32(&v[xo..xo + xn], xbuf));
                    xbuf
                }
                HostStorage::BF16(v) => {
                    self.run(xn, || cast::bf16_to_f32(&v[xo..xo + xn], xbuf));
                    xbuf
                }
                h => return Err(unsupported(op, h.dtype())),
            };
            match oh {
                HostStorage::F32(v) => f(xs, &mut v[oo..oo + on], ebuf),
                HostStorage::F16(v) => {
                    f(xs, obuf, ebuf);
                    self.run(on, || cast::f32_to_f16(obuf, &mut v[oo..oo + on]));
                }
                HostStorage::BF16(v) => {
                    f(xs, obuf, ebuf);
                    self.run(on, || cast::f32_to_bf16(obuf, &mut v[oo..oo + on]));
                }
                h => return Err(unsupported(op, h.dtype())),
            }
            Ok(())
        })
    }
}

/// A linear's `x` and `out` are contiguous host tensors of f32, f16 or bf16.
fn linear_io_dtypes(op: &'static str, x: &Tensor, out: &Tensor) -> Result<()> {
    host(x, op)?;
    host(out, op)?;
    checks::linear_activation(op, "x", x)?;
    checks::linear_activation(op, "out", out)?;
    x.require_contiguous(op)?;
    out.require_contiguous(op)
}

/// Runs `f` on `len` floats of this thread's [`PRODUCT_SCRATCH`] (contents
/// unspecified), then keeps the buffer unless it is huge (as the GEMM's
/// packing buffers: a long prefill's is not kept).
fn with_product_scratch<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    let mut scratch = PRODUCT_SCRATCH.with(|c| c.take());
    if scratch.len() < len {
        scratch.resize(len, 0.0);
    }
    let r = f(&mut scratch[..len]);
    if scratch.len() * 4 <= 64 << 20 {
        PRODUCT_SCRATCH.with(|c| c.set(scratch));
    }
    r
}

impl Backend for CpuBackend {
    fn device(&self) -> Device {
        Device::Cpu
    }

    fn run_scoped(&self, f: &mut (dyn FnMut() + Send)) {
        self.install(f)
    }

    fn describe(&self) -> String {
        let mut feats = vec![match isa::active() {
            isa::Isa::Avx512 => "avx512",
            isa::Isa::Avx2 => "avx2",
            isa::Isa::Neon => "neon",
            isa::Isa::Scalar => "scalar",
        }];
        if isa::active() == isa::Isa::Avx512 {
            if isa::has_avx512_vnni() {
                feats.push("vnni");
            }
            if isa::has_avx512_bf16() {
                feats.push("bf16");
            }
        }
        let t = self.threads;
        format!(
            "cpu ({}; {t} thread{})",
            feats.join(", "),
            if t == 1 { "" } else { "s" }
        )
    }

    // ---- memory ---------------------------------------------------------

    fn zeros(&self, shape: &[usize], dtype: DType) -> Result<Tensor> {
        Ok(Tensor::zeros(shape, dtype))
    }

    fn upload(&self, t: &Tensor) -> Result<Tensor> {
        host(t, "upload")?;
        Ok(t.clone())
    }

    fn download(&self, t: &Tensor) -> Result<Tensor> {
        host(t, "download")?;
        Ok(t.clone())
    }

    fn cast(&self, t: &Tensor, dtype: DType) -> Result<Tensor> {
        const OP: &str = "cast";
        let h = host(t, OP)?;
        let from = h.dtype();
        checks::cast(from, dtype)?;
        if from == DType::I8 {
            t.require_contiguous(OP)?;
        }
        let src = t.contiguous()?;
        let h = host(&src, OP)?;
        let n = src.elem_count();
        let o = src.offset();
        let cols = src.cols().max(1);
        let rows = n / cols;
        let isa = isa::active();
        // Everything as f32 first, unless the source already is (or the target is the source dtype).
        let as_f32 = |h: &HostStorage| -> Vec<f32> {
            let mut f = vec![0.0f32; n];
            match h {
                HostStorage::F32(v) => f.copy_from_slice(&v[o..o + n]),
                HostStorage::F16(v) => cast::f16_to_f32(&v[o..o + n], &mut f),
                HostStorage::BF16(v) => cast::bf16_to_f32(&v[o..o + n], &mut f),
                HostStorage::I8 { data, scales } => {
                    let so = o / cols;
                    cast::dequantize_i8(&data[o..o + n], &scales[so..so + rows], cols, &mut f)
                }
                HostStorage::U32(_) => {}
            }
            f
        };
        let out = self.run(n, || match (h, dtype) {
            (HostStorage::F32(v), DType::F32) => HostStorage::F32(v[o..o + n].to_vec()),
            (HostStorage::F16(v), DType::F16) => HostStorage::F16(v[o..o + n].to_vec()),
            (HostStorage::BF16(v), DType::BF16) => HostStorage::BF16(v[o..o + n].to_vec()),
            (HostStorage::U32(v), _) => HostStorage::U32(v[o..o + n].to_vec()),
            (HostStorage::I8 { data, scales }, DType::I8) => HostStorage::I8 {
                data: data[o..o + n].to_vec(),
                scales: scales[o / cols..o / cols + rows].to_vec(),
            },
            (h, DType::I8) => {
                let mut data = vec![0i8; n];
                let mut scales = vec![0.0f32; rows];
                match h {
                    HostStorage::F32(v) => {
                        cast::quantize_i8(isa, &v[o..o + n], cols, &mut data, &mut scales)
                    }
                    HostStorage::F16(v) => cast::quantize_i8_from(
                        isa,
                        &v[o..o + n],
                        cols,
                        &mut data,
                        &mut scales,
                        |s, d| s.convert_to_f32_slice(d),
                    ),
                    HostStorage::BF16(v) => cast::quantize_i8_from(
                        isa,
                        &v[o..o + n],
                        cols,
                        &mut data,
                        &mut scales,
                        |s, d| s.convert_to_f32_slice(d),
                    ),
                    _ => {}
                }
                HostStorage::I8 { data, scales }
            }
            (h, DType::F32) => HostStorage::F32(as_f32(h)),
            (h, DType::F16) => {
                let f = as_f32(h);
                let mut d = vec![half::f16::ZERO; n];
                cast::f32_to_f16(&f, &mut d);
                HostStorage::F16(d)
            }
            (h, DType::BF16) => {
                let f = as_f32(h);
                let mut d = vec![half::bf16::ZERO; n];
                cast::f32_to_bf16(&f, &mut d);
                HostStorage::BF16(d)
            }
            // Float -> u32 was refused above.
            (_, DType::U32) => HostStorage::U32(Vec::new()),
        });
        Tensor::from_host(out, *src.shape())
    }

    fn write_rows_at(&self, src: &Tensor, dst: &mut Tensor, positions: &Tensor) -> Result<()> {
        host(positions, "write_rows_at")?;
        let (start, _) = checks::positions(positions)?;
        self.write_rows(src, dst, start)
    }

    fn write_rows(&self, src: &Tensor, dst: &mut Tensor, start: usize) -> Result<()> {
        const OP: &str = "write_rows";
        host(src, OP)?;
        host(dst, OP)?;
        let [_, t, tcap, c] = checks::write_rows(src, dst, start)?;
        if src.dtype() == DType::I8 {
            return Err(unsupported(OP, DType::I8));
        }
        dst.require_contiguous(OP)?;
        // Rows with a contiguous last dim are read in place (a fused QKV
        // projection's K and V views); other views are copied first.
        let src = if src.strides()[2] == 1 {
            src.clone()
        } else {
            src.contiguous()?
        };
        let rows = copy::SrcRows {
            batch: src.dim(0),
            t,
            batch_stride: src.strides()[0],
            t_stride: src.strides()[1],
        };
        let (so, n) = (src.offset(), rows.span(c));
        let (dof, dn) = (dst.offset(), dst.elem_count());
        let sh = host(&src, OP)?;
        let dh = dst.host_mut(OP)?;
        self.run(src.elem_count(), || match (sh, dh) {
            (HostStorage::F32(a), HostStorage::F32(b)) => copy::write_rows_strided(
                &a[so..so + n],
                rows,
                &mut b[dof..dof + dn],
                tcap,
                c,
                start,
            ),
            (HostStorage::F16(a), HostStorage::F16(b)) => copy::write_rows_strided(
                &a[so..so + n],
                rows,
                &mut b[dof..dof + dn],
                tcap,
                c,
                start,
            ),
            (HostStorage::BF16(a), HostStorage::BF16(b)) => copy::write_rows_strided(
                &a[so..so + n],
                rows,
                &mut b[dof..dof + dn],
                tcap,
                c,
                start,
            ),
            (HostStorage::U32(a), HostStorage::U32(b)) => copy::write_rows_strided(
                &a[so..so + n],
                rows,
                &mut b[dof..dof + dn],
                tcap,
                c,
                start,
            ),
            // A half KV cache takes f32 steps (checks::write_rows allows these).
            (HostStorage::F32(a), HostStorage::F16(b)) => copy::write_rows_f32_to_half_strided(
                &a[so..so + n],
                rows,
                &mut b[dof..dof + dn],
                tcap,
                c,
                start,
            ),
            (HostStorage::F32(a), HostStorage::BF16(b)) => copy::write_rows_f32_to_half_strided(
                &a[so..so + n],
                rows,
                &mut b[dof..dof + dn],
                tcap,
                c,
                start,
            ),
            _ => {}
        });
        Ok(())
    }

    fn index_select(&self, src: &Tensor, index: &Tensor, dst: &mut Tensor) -> Result<()> {
        const OP: &str = "index_select";
        host(src, OP)?;
        host(dst, OP)?;
        let idx = u32_in(index, OP)?;
        checks::index_select(src, idx, dst)?;
        src.require_contiguous(OP)?;
        dst.require_contiguous(OP)?;
        let row: usize = src.dims()[1..].iter().product();
        let cols = src.cols().max(1);
        let (so, n) = (src.offset(), src.elem_count());
        let (dof, dn) = (dst.offset(), dst.elem_count());
        let sh = host(src, OP)?;
        let dh = dst.host_mut(OP)?;
        self.run(dn, || match (sh, dh) {
            (HostStorage::F32(a), HostStorage::F32(b)) => {
                copy::index_select(&a[so..so + n], row, idx, &mut b[dof..dof + dn])
            }
            (HostStorage::F16(a), HostStorage::F16(b)) => {
                copy::index_select(&a[so..so + n], row, idx, &mut b[dof..dof + dn])
            }
            (HostStorage::BF16(a), HostStorage::BF16(b)) => {
                copy::index_select(&a[so..so + n], row, idx, &mut b[dof..dof + dn])
            }
            (HostStorage::U32(a), HostStorage::U32(b)) => {
                copy::index_select(&a[so..so + n], row, idx, &mut b[dof..dof + dn])
            }
            (
                HostStorage::I8 {
                    data: a,
                    scales: sa,
                },
                HostStorage::I8 {
                    data: b,
                    scales: sb,
                },
            ) => {
                copy::index_select(&a[so..so + n], row, idx, &mut b[dof..dof + dn]);
                let (ss, ds) = (so / cols, dof / cols);
                copy::index_select(
                    &sa[ss..ss + n / cols],
                    row / cols,
                    idx,
                    &mut sb[ds..ds + dn / cols],
                );
            }
            _ => {}
        });
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
        self.linear_into("linear", x, w, bias, out, false)
    }

    fn linear_act(
        &self,
        x: &Tensor,
        w: &Tensor,
        bias: Option<&Tensor>,
        act: Activation,
        out: &mut Tensor,
    ) -> Result<()> {
        // linear then activation (the trait's default bits), on the f32 result
        // before a half out rounds it.
        self.linear_act_into("linear_act", x, w, bias, Some(act), out, false)
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
        linear_io_dtypes(OP, x, out)?;
        let [m, n, k] = checks::linear_gated(x, w_gate, w_up)?;
        let wg = weights(w_gate, OP)?;
        let wu = weights(w_up, OP)?;
        checks::linear_out(x, n, out)?;
        // The same two GEMMs and gating kernel as the unfused ops (so the same
        // bits), into a per-thread buffer reused across calls instead of two
        // fresh [M, N] tensors.
        self.linear_io(OP, x, out, 2 * m * n, |xs, o, scratch| {
            let (g, u) = scratch.split_at_mut(m * n);
            self.install(|| {
                gemm::gemm(m, n, k, xs, wg, None, g);
                gemm::gemm(m, n, k, xs, wu, None, u);
            });
            let isa = isa::active();
            self.run(o.len(), || activation::gated_activation(isa, act, g, u, o));
        })
    }

    fn linear_add(
        &self,
        x: &Tensor,
        w: &Tensor,
        bias: Option<&Tensor>,
        out: &mut Tensor,
    ) -> Result<()> {
        self.linear_into("linear_add", x, w, bias, out, true)
    }

    fn batched_matmul(&self, a: &Tensor, b: &Tensor, out: &mut Tensor) -> Result<()> {
        const OP: &str = "batched_matmul";
        let av = f32_in(a, OP)?;
        let [batch, m, k, n] = checks::batched_matmul(a, b, out)?;
        let bdata = match host(b, OP)? {
            HostStorage::F32(v) => &v[..],
            h => return Err(unsupported(OP, h.dtype())),
        };
        checks::view_in_bounds(OP, b, bdata.len())?;
        let s = b.strides();
        let bv = matmul::Strided {
            data: bdata,
            off: b.offset(),
            sb: s[0],
            sk: s[1],
            sn: s[2],
        };
        let o = f32_out(out, OP)?;
        let isa = isa::active();
        self.run(batch * m * n * k / 4, || {
            matmul::batched_matmul(isa, batch, m, k, n, av, bv, o)
        });
        Ok(())
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
        let xs = f32_in(x, OP)?;
        let c = x.cols();
        let (w, b) = norm_params(OP, kind, weight, bias, c)?;
        same_count(OP, out, x)?;
        if out.dtype() != DType::F32 {
            // A half out: the f32 result in a reused buffer, then rounded.
            checks::linear_activation(OP, "out", out)?;
            return with_norm_scratch(xs.len(), |o| {
                let isa = isa::active();
                self.run(xs.len(), || {
                    norm::norm(isa, kind, xs, &w, b.as_deref(), eps, o)
                });
                round_out(o, out, OP)
            });
        }
        let o = f32_out(out, OP)?;
        let isa = isa::active();
        self.run(xs.len(), || {
            norm::norm(isa, kind, xs, &w, b.as_deref(), eps, o)
        });
        Ok(())
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
        let xs = f32_in(x, OP)?;
        let c = x.cols();
        let (w, b) = norm_params(OP, kind, weight, bias, c)?;
        same_count(OP, residual, x)?;
        same_count(OP, out, x)?;
        if out.dtype() != DType::F32 {
            checks::linear_activation(OP, "out", out)?;
            let r = f32_out(residual, OP)?;
            return with_norm_scratch(xs.len(), |o| {
                let isa = isa::active();
                self.run(xs.len(), || {
                    norm::add_norm(isa, kind, xs, r, &w, b.as_deref(), eps, o)
                });
                round_out(o, out, OP)
            });
        }
        let r = f32_out(residual, OP)?;
        let o = f32_out(out, OP)?;
        let isa = isa::active();
        self.run(xs.len(), || {
            norm::add_norm(isa, kind, xs, r, &w, b.as_deref(), eps, o)
        });
        Ok(())
    }

    // ---- pointwise ------------------------------------------------------

    fn activation(&self, x: &mut Tensor, act: Activation) -> Result<()> {
        let xs = f32_out(x, "activation")?;
        let isa = isa::active();
        self.run(xs.len(), || activation::activation(isa, act, xs));
        Ok(())
    }

    fn gated_activation(
        &self,
        gate: &Tensor,
        up: &Tensor,
        act: Activation,
        out: &mut Tensor,
    ) -> Result<()> {
        const OP: &str = "gated_activation";
        let g = f32_in(gate, OP)?;
        let u = f32_in(up, OP)?;
        same_count(OP, gate, up)?;
        same_count(OP, out, gate)?;
        let o = f32_out(out, OP)?;
        let isa = isa::active();
        self.run(o.len(), || activation::gated_activation(isa, act, g, u, o));
        Ok(())
    }

    fn add_assign(&self, x: &mut Tensor, y: &Tensor) -> Result<()> {
        const OP: &str = "add_assign";
        let ys = f32_in(y, OP)?;
        checks::broadcast(OP, x, y)?;
        let xs = f32_out(x, OP)?;
        let isa = isa::active();
        self.run(xs.len(), || elementwise::add_assign(isa, xs, ys));
        Ok(())
    }

    fn mul_assign(&self, x: &mut Tensor, y: &Tensor) -> Result<()> {
        const OP: &str = "mul_assign";
        let ys = f32_in(y, OP)?;
        checks::broadcast(OP, x, y)?;
        let xs = f32_out(x, OP)?;
        let isa = isa::active();
        self.run(xs.len(), || elementwise::mul_assign(isa, xs, ys));
        Ok(())
    }

    fn scale(&self, x: &mut Tensor, s: f32) -> Result<()> {
        let xs = f32_out(x, "scale")?;
        let isa = isa::active();
        self.run(xs.len(), || elementwise::scale(isa, xs, s));
        Ok(())
    }

    fn scatter_fill(&self, x: &mut Tensor, index: &Tensor, value: f32) -> Result<()> {
        const OP: &str = "scatter_fill";
        let idx = u32_in(index, OP)?;
        checks::scatter_fill(x, idx)?;
        let xs = f32_out(x, OP)?;
        for &i in idx {
            xs[i as usize] = value;
        }
        Ok(())
    }

    fn repetition_penalty(&self, x: &mut Tensor, index: &Tensor, penalty: f32) -> Result<()> {
        const OP: &str = "repetition_penalty";
        let idx = u32_in(index, OP)?;
        checks::repetition_penalty(x, idx)?;
        checks::apply_repetition_penalty(f32_out(x, OP)?, idx, penalty);
        Ok(())
    }

    fn embedding(&self, ids: &Tensor, table: &Tensor, scale: f32, out: &mut Tensor) -> Result<()> {
        const OP: &str = "embedding";
        let id = u32_in(ids, OP)?;
        let c = checks::embedding_table(table)?;
        let tv = weights(table, OP)?;
        checks::embedding_out(ids, c, out)?;
        let o = f32_out(out, OP)?;
        let isa = isa::active();
        self.run(o.len(), || embedding::embedding(isa, id, tv, c, scale, o))
    }

    // ---- attention ------------------------------------------------------

    fn attention_at(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        p: &AttentionParams,
        positions: &Tensor,
        out: &mut Tensor,
    ) -> Result<()> {
        host(positions, "attention_at")?;
        let p = checks::attention_at(p, positions)?;
        self.attention(q, k, v, &p, out)
    }

    fn attention(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        p: &AttentionParams,
        out: &mut Tensor,
    ) -> Result<()> {
        const OP: &str = "attention";
        let half = |t: &Tensor| matches!(t.dtype(), DType::F16 | DType::BF16);
        if half(q) || half(k) || half(v) || half(out) {
            // Half inputs (a half KV cache, half activations): widen them to f32
            // (exact) and run the f32 op; a half out gets that result rounded.
            // This allocates f32 copies per call; the CPU models keep f32 caches
            // and activations.
            for t in [q, k, v] {
                checks::attention_view(OP, t, host(t, OP)?.len())?;
            }
            checks::attention(q, k, v, p)?.check_out(out)?; // k and v of one dtype
            let widen = |t: &Tensor| {
                if half(t) {
                    self.cast(t, DType::F32)
                } else {
                    Ok(t.clone())
                }
            };
            let (q32, k32, v32) = (widen(q)?, widen(k)?, widen(v)?);
            if !half(out) {
                return self.attention(&q32, &k32, &v32, p, out);
            }
            let mut o32 = Tensor::zeros(out.dims(), DType::F32);
            self.attention(&q32, &k32, &v32, p, &mut o32)?;
            return round_out(o32.as_f32()?, out, OP);
        }
        let (qv, kv, vv) = (view3(q, OP)?, view3(k, OP)?, view3(v, OP)?);
        let shape = checks::attention(q, k, v, p)?;
        // Each optional input: its device and dtype first, then its shape.
        let key_mask = p.key_mask.map(|m| f32_in(m, OP)).transpose()?;
        shape.check_key_mask(p.key_mask)?;
        let position_bias = p.position_bias.map(|b| f32_in(b, OP)).transpose()?;
        shape.check_position_bias(p.position_bias)?;
        let rel_table = p.relative_bias.map(|r| f32_in(r.table, OP)).transpose()?;
        shape.check_relative_bias(p.relative_bias.as_ref(), p.position_bias)?;
        let kv_index = p.kv_index.map(|ix| u32_in(ix, OP)).transpose()?;
        shape.check_kv_index(p.kv_index.zip(kv_index))?;
        shape.check_out(out)?;
        let a = Attn {
            batch: shape.batch,
            tq: shape.tq,
            heads: p.num_heads,
            head_dim: p.head_dim,
            tcap: shape.tcap,
            kv_len: p.kv_len,
            scale: p.scale,
            causal: p.causal,
            q_offset: p.q_offset,
            q: qv,
            k: kv,
            v: vv,
            key_mask,
            position_bias,
            relative_bias: None,
            kv_index,
        };
        let o = f32_out(out, OP)?;
        let isa = isa::active();
        let (Some(r), Some(table)) = (p.relative_bias, rel_table) else {
            self.run(attention::par_size(&a), || attention::attention(isa, &a, o));
            return Ok(());
        };
        // The bias rows by relative position, in this thread's reused buffer (a
        // decode step allocates nothing once it has grown).
        let mut rows = REL_BIAS_ROWS.with(|c| c.take());
        attention::relative_bias_rows(
            table,
            p.num_heads,
            r.num_buckets,
            r.max_distance,
            r.bidirectional,
            p.q_offset,
            shape.tq,
            p.kv_len,
            &mut rows,
        );
        let a = Attn {
            relative_bias: Some(&rows),
            ..a
        };
        self.run(attention::par_size(&a), || attention::attention(isa, &a, o));
        REL_BIAS_ROWS.with(|c| c.set(rows));
        Ok(())
    }

    // ---- search ---------------------------------------------------------

    fn softmax(&self, x: &mut Tensor) -> Result<()> {
        let c = x.cols();
        let xs = f32_out(x, "softmax")?;
        let isa = isa::active();
        self.run(xs.len(), || softmax::softmax(isa, xs, c));
        Ok(())
    }

    fn log_softmax(&self, x: &mut Tensor) -> Result<()> {
        let c = x.cols();
        let xs = f32_out(x, "log_softmax")?;
        let isa = isa::active();
        self.run(xs.len(), || softmax::log_softmax(isa, xs, c));
        Ok(())
    }

    fn topk(&self, x: &Tensor, k: usize) -> Result<(Vec<u32>, Vec<f32>)> {
        const OP: &str = "topk";
        let xs = f32_in(x, OP)?;
        let c = x.cols();
        checks::topk(x, k)?;
        let isa = isa::active();
        Ok(self.run(xs.len(), || topk::topk(isa, xs, c, k)))
    }

    fn topk_into(
        &self,
        x: &Tensor,
        k: usize,
        ids_out: &mut Tensor,
        vals_out: &mut Tensor,
    ) -> Result<()> {
        const OP: &str = "topk_into";
        checks::topk_into(x, k, ids_out, vals_out)?;
        let xs = f32_in(x, OP)?;
        let c = x.cols();
        let isa = isa::active();
        if k > topk::INSERT_MAX_K {
            let (i, v) = self.run(xs.len(), || topk::topk(isa, xs, c, k));
            u32_out(ids_out, OP)?.copy_from_slice(&i);
            f32_out(vals_out, OP)?.copy_from_slice(&v);
            return Ok(());
        }
        let ids = u32_out(ids_out, OP)?;
        let vals = f32_out(vals_out, OP)?;
        topk::topk_into(isa, xs, c, ids, vals);
        Ok(())
    }

    fn softmax_stats(&self, x: &Tensor, out: &mut Tensor) -> Result<()> {
        const OP: &str = "softmax_stats";
        checks::softmax_stats(x, out)?;
        let xs = f32_in(x, OP)?;
        let c = x.cols();
        let o = f32_out(out, OP)?;
        softmax::softmax_stats(isa::active(), xs, c, o);
        Ok(())
    }
}

/// Norm weight and bias as f32 vectors of `c` elements.
#[allow(clippy::type_complexity)]
fn norm_params<'a>(
    op: &'static str,
    kind: NormKind,
    weight: &'a Tensor,
    bias: Option<&'a Tensor>,
    c: usize,
) -> Result<(Cow<'a, [f32]>, Option<Cow<'a, [f32]>>)> {
    let w = vec_f32(weight, c, op)?;
    let b = checks::norm_bias(op, kind, bias)?
        .map(|b| vec_f32(b, c, op))
        .transpose()?;
    Ok((w, b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::gemm::gemm_reference;
    use encdec_core::testing::{compare, random_normal, random_vec, Tol};
    use half::{bf16, f16};

    fn t(v: Vec<f32>, shape: &[usize]) -> Tensor {
        Tensor::from_f32(v, shape).unwrap()
    }
    fn f64s(v: &[f32]) -> Vec<f64> {
        v.iter().map(|&x| x as f64).collect()
    }

    #[test]
    fn describe_names_isa_and_threads() {
        let b = CpuBackend::with_threads(2);
        let d = b.describe();
        assert!(d.starts_with("cpu ("), "{d}");
        assert!(d.ends_with("; 2 threads)"), "{d}");
        assert_eq!(b.device(), Device::Cpu);
        assert!(CpuBackend::with_threads(1)
            .describe()
            .ends_with("1 thread)"));
    }

    /// A half `out` of norm / add_norm receives the f32 result rounded as
    /// `cast` rounds; the residual stays the same f32 sum.
    #[test]
    fn norms_into_a_half_out_round_the_f32_result() {
        let be = CpuBackend::with_threads(2);
        for (rows, cols) in [(1, 7), (3, 130), (17, 1024)] {
            let mut xv = random_normal(rows as u64, rows * cols, 3.0);
            // ties and values past f16's range
            xv[0] = 70000.0;
            let x = t(xv, &[rows, cols]);
            let r0 = t(random_normal(9, rows * cols, 1.0), &[rows, cols]);
            let w = t(random_vec(2, cols), &[cols]);
            let b = t(random_vec(3, cols), &[cols]);
            for kind in [NormKind::LayerNorm, NormKind::RmsNorm] {
                let bias = (kind == NormKind::LayerNorm).then_some(&b);
                let mut want = t(vec![0.0; rows * cols], &[rows, cols]);
                be.norm(kind, &x, &w, bias, 1e-6, &mut want).unwrap();
                let (mut r_want, mut want_add) = (
                    be.cast(&r0, DType::F32).unwrap(),
                    t(vec![0.0; rows * cols], &[rows, cols]),
                );
                be.add_norm(kind, &x, &mut r_want, &w, bias, 1e-6, &mut want_add)
                    .unwrap();
                for dt in [DType::F16, DType::BF16] {
                    let what = format!("{kind:?} {rows}x{cols} {dt}");
                    let mut got = Tensor::zeros([rows, cols], dt);
                    be.norm(kind, &x, &w, bias, 1e-6, &mut got).unwrap();
                    let want_h = be.cast(&want, dt).unwrap();
                    assert_eq!(bits(&got), bits(&want_h), "norm {what}");
                    let (mut r, mut got) = (
                        be.cast(&r0, DType::F32).unwrap(),
                        Tensor::zeros([rows, cols], dt),
                    );
                    be.add_norm(kind, &x, &mut r, &w, bias, 1e-6, &mut got)
                        .unwrap();
                    assert_eq!(
                        bits(&got),
                        bits(&be.cast(&want_add, dt).unwrap()),
                        "add_norm {what}"
                    );
                    assert_eq!(r.to_f32_vec().unwrap(), r_want.to_f32_vec().unwrap());
                }
                let mut bad = Tensor::zeros([rows, cols], DType::U32);
                assert!(be.norm(kind, &x, &w, bias, 1e-6, &mut bad).is_err());
            }
        }
    }

    /// The bits of an f16 / bf16 host tensor.
    fn bits(t: &Tensor) -> Vec<u16> {
        match t.host().unwrap() {
            HostStorage::F16(v) => v.iter().map(|x| x.to_bits()).collect(),
            HostStorage::BF16(v) => v.iter().map(|x| x.to_bits()).collect(),
            h => panic!("not half: {}", h.dtype()),
        }
    }

    #[test]
    fn linear_gated_equals_two_linears_then_gated_activation() {
        let be = CpuBackend::with_threads(2);
        let acts = [
            Activation::Relu,
            Activation::Gelu,
            Activation::GeluTanh,
            Activation::Silu,
            Activation::Identity,
        ];
        for (m, k, n) in [(1, 8, 5), (3, 33, 17), (7, 64, 130), (70, 20, 33)] {
            let seed = (m * 1000 + k * 10 + n) as u64;
            let x = t(random_normal(seed, m * k, 1.0), &[1, m, k]);
            let wg = t(random_normal(seed + 1, n * k, 0.3), &[n, k]);
            let wu = t(random_normal(seed + 2, n * k, 0.3), &[n, k]);
            for dt in [DType::F32, DType::F16, DType::BF16, DType::I8] {
                let (wg, wu) = (be.cast(&wg, dt).unwrap(), be.cast(&wu, dt).unwrap());
                for act in acts {
                    let mut got = t(vec![f32::NAN; m * n], &[1, m, n]);
                    be.linear_gated(&x, &wg, &wu, act, &mut got).unwrap();
                    let (mut g, mut u) = (
                        be.zeros(&[m, n], DType::F32).unwrap(),
                        be.zeros(&[m, n], DType::F32).unwrap(),
                    );
                    be.linear(&x, &wg, None, &mut g).unwrap();
                    be.linear(&x, &wu, None, &mut u).unwrap();
                    let mut want = be.zeros(&[1, m, n], DType::F32).unwrap();
                    be.gated_activation(&g, &u, act, &mut want).unwrap();
                    let (got, want) = (got.as_f32().unwrap(), want.as_f32().unwrap());
                    let same = got
                        .iter()
                        .zip(want)
                        .all(|(a, b)| a.to_bits() == b.to_bits());
                    assert!(same, "m {m} k {k} n {n} {dt} {act:?}: {got:?} vs {want:?}");
                }
            }
        }
        // Shapes and dtypes of the two weights must agree; out must fit.
        let x = t(vec![0.0; 6], &[2, 3]);
        let w = t(vec![0.0; 12], &[4, 3]);
        let mut out = t(vec![0.0; 8], &[2, 4]);
        let w5 = t(vec![0.0; 15], &[5, 3]);
        assert!(be
            .linear_gated(&x, &w, &w5, Activation::Relu, &mut out)
            .is_err());
        let w16 = be.cast(&w, DType::F16).unwrap();
        assert!(be
            .linear_gated(&x, &w, &w16, Activation::Relu, &mut out)
            .is_err());
        let mut bad = t(vec![0.0; 10], &[2, 5]);
        assert!(be
            .linear_gated(&x, &w, &w, Activation::Relu, &mut bad)
            .is_err());
        be.linear_gated(&x, &w, &w, Activation::Relu, &mut out)
            .unwrap();
    }

    #[test]
    fn repetition_penalty_follows_hf_at_the_given_positions_only() {
        use encdec_core::backend::PENALTY_INDEX_UNUSED;
        let be = CpuBackend::with_threads(1);
        let x0 = vec![2.0, -2.0, 0.0, 3.0, -0.5, 1.0];
        let idx = Tensor::from_u32(vec![0, 1, 2, 4, PENALTY_INDEX_UNUSED], [5]).unwrap();
        let mut x = t(x0.clone(), &[2, 3]);
        be.repetition_penalty(&mut x, &idx, 2.0).unwrap();
        // positive / penalty, negative * penalty (HF), zero stays, 3 and 5 untouched
        assert_eq!(x.as_f32().unwrap(), &[1.0, -4.0, 0.0, 3.0, -1.0, 1.0]);
        let mut y = t(x0.clone(), &[2, 3]);
        let bad = Tensor::from_u32(vec![1, 6], [2]).unwrap();
        assert!(be.repetition_penalty(&mut y, &bad, 2.0).is_err());
        assert_eq!(
            y.as_f32().unwrap(),
            &x0[..],
            "a refused call changes nothing"
        );
    }

    #[test]
    fn linear_add_equals_linear_then_add_assign() {
        let be = CpuBackend::with_threads(2);
        // Row counts on both sides of the GEMV / packed-GEMM split, odd K and N.
        for (m, k, n) in [
            (1, 8, 5),
            (3, 33, 17),
            (7, 64, 130),
            (70, 20, 33),
            (9, 300, 7),
        ] {
            let seed = (m * 1000 + k * 10 + n) as u64;
            let x = t(random_normal(seed, m * k, 1.0), &[1, m, k]);
            let w = t(random_normal(seed + 1, n * k, 0.3), &[n, k]);
            let bias = t(random_normal(seed + 2, n, 1.0), &[n]);
            let residual = random_normal(seed + 3, m * n, 2.0);
            for dt in [DType::F32, DType::F16, DType::BF16, DType::I8] {
                let w = be.cast(&w, dt).unwrap();
                for b in [None, Some(&bias)] {
                    let mut got = t(residual.clone(), &[1, m, n]);
                    be.linear_add(&x, &w, b, &mut got).unwrap();
                    let mut y = be.zeros(&[1, m, n], DType::F32).unwrap();
                    be.linear(&x, &w, b, &mut y).unwrap();
                    let mut want = t(residual.clone(), &[1, m, n]);
                    be.add_assign(&mut want, &y).unwrap();
                    let (got, want) = (got.as_f32().unwrap(), want.as_f32().unwrap());
                    let same = got
                        .iter()
                        .zip(want)
                        .all(|(a, b)| a.to_bits() == b.to_bits());
                    let bias = b.is_some();
                    assert!(
                        same,
                        "m {m} k {k} n {n} {dt} bias {bias}: {got:?} vs {want:?}"
                    );
                    // The residual really is added (not overwritten).
                    assert_ne!(got, y.as_f32().unwrap(), "m {m} k {k} n {n} {dt}");
                }
            }
        }
        // out must fit; a failed call leaves it as it was.
        let x = t(vec![1.0; 6], &[2, 3]);
        let w = t(vec![1.0; 12], &[4, 3]);
        let mut bad = t(vec![5.0; 10], &[2, 5]);
        assert!(be.linear_add(&x, &w, None, &mut bad).is_err());
        assert!(bad.as_f32().unwrap().iter().all(|&v| v == 5.0));
        let w_bad = t(vec![0.0; 8], &[4, 2]);
        let mut out = t(vec![5.0; 8], &[2, 4]);
        assert!(be.linear_add(&x, &w_bad, None, &mut out).is_err());
        be.linear_add(&x, &w, None, &mut out).unwrap();
        assert!(out.as_f32().unwrap().iter().all(|&v| v == 8.0));
    }

    #[test]
    fn linear_runs_gemm_for_every_weight_dtype() {
        let be = CpuBackend::with_threads(2);
        let (m, k, n) = (5, 33, 17);
        let x = random_normal(1, m * k, 1.0);
        let w = random_normal(2, n * k, 0.2);
        let bias = random_vec(3, n);
        let w16: Vec<f16> = w.iter().map(|&v| f16::from_f32(v)).collect();
        let wb: Vec<bf16> = w.iter().map(|&v| bf16::from_f32(v)).collect();
        let wt = t(w.clone(), &[n, k]);
        let wi8 = be.cast(&wt, DType::I8).unwrap();
        let ws = [
            wt.clone(),
            Tensor::from_f16(w16, [n, k]).unwrap(),
            Tensor::from_bf16(wb, [n, k]).unwrap(),
            wi8,
        ];
        let xt = t(x.clone(), &[1, m, k]);
        let bt = t(bias.clone(), &[n]);
        for wt in &ws {
            let mut out = be.zeros(&[1, m, n], DType::F32).unwrap();
            be.linear(&xt, wt, Some(&bt), &mut out).unwrap();
            let wf = wt.to_f32_vec().unwrap();
            let mut want = vec![0.0; m * n];
            gemm_reference(m, n, k, &x, Weights::F32(&wf), Some(&bias), &mut want);
            // The int8 GEMM quantises activations too (u8 per row): half-precision tolerance.
            let tol = if wt.dtype() == DType::I8 {
                Tol::HALF
            } else {
                Tol::F32
            };
            compare(
                &format!("linear {}", wt.dtype()),
                out.as_f32().unwrap(),
                &f64s(&want),
                tol,
            )
            .unwrap();
        }
        // A narrowed weight (rows 3..10 of w) works for f32 and int8.
        let wn = ws[3].narrow(0, 3, 7).unwrap();
        let mut out = be.zeros(&[m, 7], DType::F32).unwrap();
        be.linear(&t(x.clone(), &[m, k]), &wn, None, &mut out)
            .unwrap();
        let wf = wn.to_f32_vec().unwrap();
        let mut want = vec![0.0; m * 7];
        gemm_reference(m, 7, k, &x, Weights::F32(&wf), None, &mut want);
        compare(
            "linear narrow int8",
            out.as_f32().unwrap(),
            &f64s(&want),
            Tol::HALF,
        )
        .unwrap();
    }

    #[test]
    fn bad_shapes_and_dtypes_are_errors_not_panics() {
        let be = CpuBackend::with_threads(1);
        let x = t(vec![0.0; 6], &[2, 3]);
        let w = t(vec![0.0; 8], &[2, 4]);
        let mut out = be.zeros(&[2, 2], DType::F32).unwrap();
        let e = be.linear(&x, &w, None, &mut out).unwrap_err();
        assert!(
            matches!(e, Error::ShapeMismatch { op: "linear", .. }),
            "{e}"
        );
        let mut bad_out = be.zeros(&[2, 5], DType::F32).unwrap();
        let w = t(vec![0.0; 6], &[2, 3]);
        assert!(be.linear(&x, &w, None, &mut bad_out).is_err());
        let ids = Tensor::from_u32(vec![1, 2], [2]).unwrap();
        let e = be.linear(&ids, &w, None, &mut out).unwrap_err();
        assert!(
            e.to_string().contains("linear") && e.to_string().contains("u32"),
            "{e}"
        );

        // Norm: weight of the wrong length, RMS with a bias, f16 x.
        let wn = t(vec![1.0; 4], &[4]);
        let mut o = be.zeros(&[2, 3], DType::F32).unwrap();
        assert!(be
            .norm(NormKind::LayerNorm, &x, &wn, None, 1e-5, &mut o)
            .is_err());
        let w3 = t(vec![1.0; 3], &[3]);
        assert!(be
            .norm(NormKind::RmsNorm, &x, &w3, Some(&w3), 1e-6, &mut o)
            .is_err());
        let xh = be.cast(&x, DType::F16).unwrap();
        let e = be
            .norm(NormKind::RmsNorm, &xh, &w3, None, 1e-6, &mut o)
            .unwrap_err();
        assert!(
            matches!(
                e,
                Error::UnsupportedDType {
                    op: "norm",
                    dtype: DType::F16,
                    ..
                }
            ),
            "{e}"
        );
        // f16 norm weights are accepted.
        let w3h = be.cast(&w3, DType::F16).unwrap();
        be.norm(NormKind::RmsNorm, &x, &w3h, None, 1e-6, &mut o)
            .unwrap();

        // A shared output is refused.
        let mut shared = be.zeros(&[2, 3], DType::F32).unwrap();
        let view = shared.clone();
        let e = be.scale(&mut shared, 2.0).unwrap_err();
        assert!(matches!(e, Error::SharedOutput { .. }), "{e}");
        drop(view);

        // Broadcast rules.
        let mut xm = t(vec![1.0; 6], &[2, 3]);
        assert!(be.add_assign(&mut xm, &t(vec![1.0; 3], &[3])).is_ok());
        assert!(be.add_assign(&mut xm, &t(vec![1.0; 2], &[2])).is_err());
        assert!(be.mul_assign(&mut xm, &t(vec![2.0; 6], &[1, 2, 3])).is_ok());
        assert!(be.mul_assign(&mut xm, &t(vec![2.0; 6], &[3, 2])).is_err());

        // Embedding id out of range.
        let table = t(vec![0.0; 12], &[4, 3]);
        let mut eo = be.zeros(&[2, 3], DType::F32).unwrap();
        let ids = Tensor::from_u32(vec![1, 4], [2]).unwrap();
        let e = be
            .embedding(&ids, &table, 1.0, &mut eo)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("token id 4") && e.contains("vocabulary of 4"),
            "{e}"
        );

        // write_rows past the cache, index_select out of range.
        let src = t(vec![0.0; 2 * 3 * 4], &[2, 3, 4]);
        let mut cache = be.zeros(&[2, 5, 4], DType::F32).unwrap();
        assert!(be.write_rows(&src, &mut cache, 3).is_err());
        be.write_rows(&src, &mut cache, 2).unwrap();
        let ix = Tensor::from_u32(vec![0, 2], [2]).unwrap();
        let mut sel = be.zeros(&[2, 5, 4], DType::F32).unwrap();
        assert!(be.index_select(&cache, &ix, &mut sel).is_err());

        // topk with k past the row, softmax of u32.
        assert!(be.topk(&x, 4).is_err());
        let mut u = Tensor::from_u32(vec![1, 2, 3], [3]).unwrap();
        assert!(be.softmax(&mut u).is_err());
        // cast between ids and floats.
        assert!(be.cast(&u, DType::F32).is_err());
    }

    #[test]
    fn relative_bias_through_the_backend() {
        use encdec_core::backend::{relative_position_bucket, RelativeBiasSpec};
        let be = CpuBackend::with_threads(3);
        let (b, tq, tk, h, d, nb, md) = (2, 5, 11, 3, 8, 16, 20);
        let q = t(random_vec(1, b * tq * h * d), &[b, tq, h * d]);
        let k = t(random_vec(2, b * tk * h * d), &[b, tk, h * d]);
        let v = t(random_vec(3, b * tk * h * d), &[b, tk, h * d]);
        let table = t(random_normal(4, nb * h, 1.0), &[nb, h]);
        let tv = table.as_f32().unwrap().to_vec();
        for (causal, q_offset, bi) in [(false, 0, true), (true, 6, false), (true, 0, true)] {
            let mut dense = vec![0.0; h * tq * tk];
            for i in 0..tq {
                for j in 0..tk {
                    let bk = relative_position_bucket(j as i64 - (q_offset + i) as i64, bi, nb, md);
                    for hh in 0..h {
                        dense[(hh * tq + i) * tk + j] = tv[bk * h + hh];
                    }
                }
            }
            let pb = t(dense, &[h, tq, tk]);
            let spec = RelativeBiasSpec {
                table: &table,
                num_buckets: nb,
                max_distance: md,
                bidirectional: bi,
            };
            let base = AttentionParams {
                num_heads: h,
                head_dim: d,
                scale: 1.0,
                causal,
                q_offset,
                kv_len: tk,
                key_mask: None,
                position_bias: Some(&pb),
                relative_bias: None,
                kv_index: None,
                operand_dtype: DType::F32,
            };
            let mut want = be.zeros(&[b, tq, h * d], DType::F32).unwrap();
            be.attention(&q, &k, &v, &base, &mut want).unwrap();
            let rel = AttentionParams {
                position_bias: None,
                relative_bias: Some(spec),
                ..base
            };
            let mut got = be.zeros(&[b, tq, h * d], DType::F32).unwrap();
            be.attention(&q, &k, &v, &rel, &mut got).unwrap();
            assert_eq!(got.as_f32().unwrap(), want.as_f32().unwrap());
            // Both at once, a table of the wrong shape, too few buckets: errors.
            let both = AttentionParams {
                relative_bias: Some(spec),
                ..base
            };
            let e = be.attention(&q, &k, &v, &both, &mut got).unwrap_err();
            assert!(e.to_string().contains("mutually exclusive"), "{e}");
            let bad_table = t(vec![0.0; nb * (h + 1)], &[nb, h + 1]);
            let bad = AttentionParams {
                relative_bias: Some(RelativeBiasSpec {
                    table: &bad_table,
                    ..spec
                }),
                ..rel
            };
            assert!(be.attention(&q, &k, &v, &bad, &mut got).is_err());
            let bad = AttentionParams {
                relative_bias: Some(RelativeBiasSpec {
                    num_buckets: 1,
                    ..spec
                }),
                ..rel
            };
            assert!(be.attention(&q, &k, &v, &bad, &mut got).is_err());
        }
    }

    #[test]
    fn attention_checks_its_arguments() {
        let be = CpuBackend::with_threads(1);
        let (b, tq, tk, h, d) = (2, 3, 5, 2, 4);
        let q = t(random_vec(1, b * tq * h * d), &[b, tq, h * d]);
        let k = t(random_vec(2, b * tk * h * d), &[b, tk, h * d]);
        let v = t(random_vec(3, b * tk * h * d), &[b, tk, h * d]);
        let mut out = be.zeros(&[b, tq, h * d], DType::F32).unwrap();
        let ok = AttentionParams {
            num_heads: h,
            head_dim: d,
            scale: 0.5,
            causal: false,
            q_offset: 0,
            kv_len: tk,
            key_mask: None,
            position_bias: None,
            relative_bias: None,
            kv_index: None,
            operand_dtype: DType::F32,
        };
        be.attention(&q, &k, &v, &ok, &mut out).unwrap();
        let bad = AttentionParams {
            kv_len: tk + 1,
            ..ok
        };
        assert!(be.attention(&q, &k, &v, &bad, &mut out).is_err());
        let bad = AttentionParams { head_dim: 3, ..ok };
        assert!(be.attention(&q, &k, &v, &bad, &mut out).is_err());
        let ix = Tensor::from_u32(vec![0, 2], [2]).unwrap();
        let bad = AttentionParams {
            kv_index: Some(&ix),
            ..ok
        };
        let e = be
            .attention(&q, &k, &v, &bad, &mut out)
            .unwrap_err()
            .to_string();
        assert!(e.contains("kv_index 2"), "{e}");
        let m = t(vec![0.0; b * (tk - 1)], &[b, tk - 1]);
        let bad = AttentionParams {
            key_mask: Some(&m),
            ..ok
        };
        assert!(be.attention(&q, &k, &v, &bad, &mut out).is_err());
        let pb = t(vec![0.0; h * tq * tk], &[h, tq, tk]);
        let good = AttentionParams {
            position_bias: Some(&pb),
            ..ok
        };
        be.attention(&q, &k, &v, &good, &mut out).unwrap();
        let pb = t(vec![0.0; h * tq * (tk - 1)], &[h, tq, tk - 1]);
        let bad = AttentionParams {
            position_bias: Some(&pb),
            ..ok
        };
        assert!(be.attention(&q, &k, &v, &bad, &mut out).is_err());
        // Beams: 4 query rows sharing 2 kv rows.
        let q4 = t(random_vec(4, 4 * tq * h * d), &[4, tq, h * d]);
        let mut o4 = be.zeros(&[4, tq, h * d], DType::F32).unwrap();
        assert!(be.attention(&q4, &k, &v, &ok, &mut o4).is_err());
        let ix = Tensor::from_u32(vec![0, 0, 1, 1], [4]).unwrap();
        let beams = AttentionParams {
            kv_index: Some(&ix),
            ..ok
        };
        be.attention(&q4, &k, &v, &beams, &mut o4).unwrap();
        // A transposed (last dim strided) k is refused.
        let kt = k.transpose(1, 2).unwrap();
        assert!(be.attention(&q, &kt, &v, &ok, &mut out).is_err());
    }

    #[test]
    fn attention_on_half_kv_is_attention_on_widened_kv() {
        let be = CpuBackend::with_threads(2);
        let (b, tq, tcap, h, d) = (2, 3, 9, 2, 8);
        let q = t(random_vec(1, b * tq * h * d), &[b, tq, h * d]);
        let k = t(random_vec(2, b * tcap * h * d), &[b, tcap, h * d]);
        let v = t(random_vec(3, b * tcap * h * d), &[b, tcap, h * d]);
        let mut mask = vec![0.0; b * tcap];
        mask[1] = f32::MIN;
        let mask = t(mask, &[b, tcap]);
        let mask6 = t(vec![0.0; b * 6], &[b, 6]);
        for dt in [DType::F16, DType::BF16] {
            let (kh, vh) = (be.cast(&k, dt).unwrap(), be.cast(&v, dt).unwrap());
            // The whole cache, and a narrowed view of it (batch stride Tcap rows).
            let views = [
                (kh.clone(), vh.clone(), &mask),
                (
                    kh.narrow(1, 1, 6).unwrap(),
                    vh.narrow(1, 1, 6).unwrap(),
                    &mask6,
                ),
            ];
            for (kv, vv, m) in &views {
                let n = kv.dims()[1];
                let (kw, vw) = (
                    be.cast(kv, DType::F32).unwrap(),
                    be.cast(vv, DType::F32).unwrap(),
                );
                for causal in [false, true] {
                    let p = AttentionParams {
                        num_heads: h,
                        head_dim: d,
                        scale: 0.35,
                        causal,
                        q_offset: 2,
                        kv_len: n - 1,
                        key_mask: Some(m),
                        position_bias: None,
                        relative_bias: None,
                        kv_index: None,
                        operand_dtype: DType::F32,
                    };
                    let mut want = be.zeros(&[b, tq, h * d], DType::F32).unwrap();
                    be.attention(&q, &kw, &vw, &p, &mut want).unwrap();
                    let mut got = be.zeros(&[b, tq, h * d], DType::F32).unwrap();
                    be.attention(&q, kv, vv, &p, &mut got).unwrap();
                    let bits = |x: &Tensor| -> Vec<u32> {
                        x.as_f32().unwrap().iter().map(|f| f.to_bits()).collect()
                    };
                    assert_eq!(
                        bits(&got),
                        bits(&want),
                        "{dt} causal {causal} k {:?}",
                        kv.dims()
                    );
                }
            }
            // k and v of different dtypes are refused by name.
            let p = AttentionParams {
                num_heads: h,
                head_dim: d,
                scale: 0.35,
                causal: false,
                q_offset: 0,
                kv_len: tcap,
                key_mask: None,
                position_bias: None,
                relative_bias: None,
                kv_index: None,
                operand_dtype: DType::F32,
            };
            let mut out = be.zeros(&[b, tq, h * d], DType::F32).unwrap();
            let e = be
                .attention(&q, &kh, &v, &p, &mut out)
                .unwrap_err()
                .to_string();
            assert!(e.contains(&format!("k {dt}, v f32")), "{e}");
            // A half q (half activations) is read as its widening; a half out
            // gets the f32 result rounded, as `cast` rounds.
            let qh = be.cast(&q, dt).unwrap();
            let (q32, k32, v32) = (
                be.cast(&qh, DType::F32).unwrap(),
                be.cast(&kh, DType::F32).unwrap(),
                be.cast(&vh, DType::F32).unwrap(),
            );
            let mut want = be.zeros(&[b, tq, h * d], DType::F32).unwrap();
            be.attention(&q32, &k32, &v32, &p, &mut want).unwrap();
            let mut got = be.zeros(&[b, tq, h * d], DType::F32).unwrap();
            be.attention(&qh, &kh, &vh, &p, &mut got).unwrap();
            assert_eq!(
                got.to_f32_vec().unwrap(),
                want.to_f32_vec().unwrap(),
                "{dt} q"
            );
            for out_dt in [DType::F16, DType::BF16] {
                let mut got = be.zeros(&[b, tq, h * d], out_dt).unwrap();
                be.attention(&qh, &kh, &vh, &p, &mut got).unwrap();
                let want_h = be.cast(&want, out_dt).unwrap();
                assert_eq!(bits(&got), bits(&want_h), "{dt} q, {out_dt} out");
                // f32 inputs into a half out
                let mut got = be.zeros(&[b, tq, h * d], out_dt).unwrap();
                be.attention(&q32, &k32, &v32, &p, &mut got).unwrap();
                assert_eq!(bits(&got), bits(&want_h), "f32 in, {out_dt} out");
            }
            let mut bad = be.zeros(&[b, tq, h * d], DType::U32).unwrap();
            assert!(be.attention(&qh, &kh, &vh, &p, &mut bad).is_err());
        }
    }

    #[test]
    fn cast_round_trips_and_quantises_per_row() {
        let be = CpuBackend::with_threads(2);
        let x = t(random_normal(5, 6 * 10, 1.0), &[6, 10]);
        for dt in [DType::F16, DType::BF16, DType::F32] {
            let y = be.cast(&x, dt).unwrap();
            assert_eq!(y.dtype(), dt);
            assert_eq!(y.dims(), x.dims());
            let back = be.cast(&y, DType::F32).unwrap();
            compare(
                &format!("cast {dt}"),
                &back.to_f32_vec().unwrap(),
                &f64s(&x.to_f32_vec().unwrap()),
                Tol::HALF,
            )
            .unwrap();
            let q = be.cast(&y, DType::I8).unwrap();
            match q.host().unwrap() {
                HostStorage::I8 { data, scales } => {
                    assert_eq!(data.len(), 60);
                    assert_eq!(scales.len(), 6);
                    assert!(data.iter().any(|&v| v == 127 || v == -127));
                }
                _ => panic!("not int8"),
            }
            let dq = be.cast(&q, DType::F32).unwrap().to_f32_vec().unwrap();
            compare(
                "int8 round trip",
                &dq,
                &f64s(&x.to_f32_vec().unwrap()),
                Tol::HALF,
            )
            .unwrap();
        }
        // A cast result is uniquely owned (writable), even to the same dtype.
        let mut y = be.cast(&x, DType::F32).unwrap();
        be.scale(&mut y, 2.0).unwrap();
        // A non-contiguous source.
        let tr = x.transpose(0, 1).unwrap();
        let c = be.cast(&tr, DType::F16).unwrap();
        assert_eq!(c.dims(), &[10, 6]);
        assert_eq!(
            c.to_f32_vec().unwrap()[1],
            f16::from_f32(x.to_f32_vec().unwrap()[10]).to_f32()
        );
    }

    /// The bits of a half tensor's elements.
    fn half_bits(x: &Tensor) -> Vec<u16> {
        match x.host().unwrap() {
            HostStorage::F16(v) => v.iter().map(|h| h.to_bits()).collect(),
            HostStorage::BF16(v) => v.iter().map(|h| h.to_bits()).collect(),
            h => panic!("not half: {}", h.dtype()),
        }
    }

    #[test]
    fn converting_kv_writes_round_as_cast() {
        let be = CpuBackend::with_threads(2);
        // Ties (f16 at 1 + 2^-11, 1 + 3 * 2^-11, subnormal 2^-25, 3 * 2^-25; bf16
        // at 1 + 2^-8, 1 + 3 * 2^-8), NaNs with payloads, infinities, values past
        // f16's range (65519 rounds down, 65520 up to inf) and f32's extremes.
        let special = [
            1.0 + 2f32.powi(-11),
            1.0 + 3.0 * 2f32.powi(-11),
            2f32.powi(-25),
            3.0 * 2f32.powi(-25),
            1.0 + 2f32.powi(-8),
            -(1.0 + 3.0 * 2f32.powi(-8)),
            f32::NAN,
            -f32::NAN,
            f32::from_bits(0x7f80_0001),
            f32::from_bits(0xffc1_2345),
            f32::INFINITY,
            f32::NEG_INFINITY,
            65519.0,
            65520.0,
            -1.0e6,
            f32::MAX,
            f32::MIN_POSITIVE,
            -0.0,
        ];
        let poison = |dt: DType, n: usize| match dt {
            DType::F16 => HostStorage::F16(vec![f16::from_bits(0x5a5a); n]),
            _ => HostStorage::BF16(vec![bf16::from_bits(0x5a5a); n]),
        };
        // The second shape is big enough for the pool's parallel path.
        for (b, t_, tcap, c, start) in [(3, 5, 9, 7, 2), (3, 41, 50, 601, 7), (2, 1, 4, 18, 3)] {
            let mut v = random_normal(7, b * t_ * c, 3.0);
            v[..special.len()].copy_from_slice(&special);
            let src = t(v, &[b, t_, c]);
            for dt in [DType::F16, DType::BF16] {
                let fresh = || Tensor::from_host(poison(dt, b * tcap * c), [b, tcap, c]).unwrap();
                let mut want = fresh();
                be.write_rows(&be.cast(&src, dt).unwrap(), &mut want, start)
                    .unwrap();
                let mut got = fresh();
                be.write_rows(&src, &mut got, start).unwrap();
                assert_eq!(half_bits(&got), half_bits(&want), "{dt} {b}x{t_}x{c}");
                let pos = Tensor::from_u32(vec![start as u32, (start + t_) as u32], [2]).unwrap();
                let mut at = fresh();
                be.write_rows_at(&src, &mut at, &pos).unwrap();
                assert_eq!(half_bits(&at), half_bits(&want), "at {dt} {b}x{t_}x{c}");
                // Rows outside start..start + T keep the poison.
                let w = half_bits(&want);
                for (i, &x) in w.iter().enumerate() {
                    let row = i / c % tcap;
                    if row < start || row >= start + t_ {
                        assert_eq!(x, 0x5a5a);
                    }
                }
            }
        }

        // Other pairs are refused before anything is written.
        let half_src = be.cast(&t(vec![1.0; 8], &[1, 2, 4]), DType::F16).unwrap();
        let mut cache = t(vec![7.0; 12], &[1, 3, 4]);
        let e = be.write_rows(&half_src, &mut cache, 0).unwrap_err();
        assert_eq!(e.to_string(), "write_rows: dtype mismatch: f16 vs f32");
        assert_eq!(cache.to_f32_vec().unwrap(), vec![7.0; 12]);
        let mut bf = Tensor::from_host(poison(DType::BF16, 12), [1, 3, 4]).unwrap();
        let e = be.write_rows(&half_src, &mut bf, 1).unwrap_err();
        assert!(matches!(e, Error::DTypeMismatch { .. }), "{e}");
        assert_eq!(half_bits(&bf), vec![0x5a5a; 12]);
        let mut q = be.cast(&t(vec![1.0; 12], &[1, 3, 4]), DType::I8).unwrap();
        let e = be
            .write_rows(&t(vec![2.0; 8], &[1, 2, 4]), &mut q, 0)
            .unwrap_err();
        assert_eq!(e.to_string(), "write_rows: dtype mismatch: f32 vs int8");
        assert!(q.to_f32_vec().unwrap().iter().all(|&x| x == 1.0));
        // The CPU's attention is exact f32: its caches stay f32.
        for dt in [DType::F32, DType::F16, DType::BF16] {
            assert_eq!(be.kv_cache_dtype(dt), DType::F32);
        }
    }

    #[test]
    fn kv_cache_writes_and_beam_reorders() {
        let be = CpuBackend::with_threads(2);
        let mut cache = be.zeros(&[3, 6, 4], DType::F32).unwrap();
        let step = t((0..12).map(|x| x as f32).collect(), &[3, 1, 4]);
        be.write_rows(&step, &mut cache, 2).unwrap();
        let c = cache.to_f32_vec().unwrap();
        assert_eq!(&c[2 * 4..3 * 4], &[0.0, 1.0, 2.0, 3.0]);
        assert_eq!(&c[(6 + 2) * 4..(6 + 3) * 4], &[4.0, 5.0, 6.0, 7.0]);
        let ix = Tensor::from_u32(vec![1, 1, 0], [3]).unwrap();
        let mut re = be.zeros(&[3, 6, 4], DType::F32).unwrap();
        be.index_select(&cache, &ix, &mut re).unwrap();
        let r = re.to_f32_vec().unwrap();
        assert_eq!(&r[..24], &c[24..48]);
        assert_eq!(&r[24..48], &c[24..48]);
        assert_eq!(&r[48..], &c[..24]);
        // int8 rows carry their scales.
        let q = be
            .cast(&t(random_vec(9, 3 * 8), &[3, 8]), DType::I8)
            .unwrap();
        let mut qs = be.zeros(&[3, 8], DType::I8).unwrap();
        be.index_select(&q, &ix, &mut qs).unwrap();
        let (qv, qsv) = (q.to_f32_vec().unwrap(), qs.to_f32_vec().unwrap());
        assert_eq!(&qsv[..8], &qv[8..16]);
        assert_eq!(&qsv[16..], &qv[..8]);
    }

    #[test]
    fn ops_through_the_trait_match_references() {
        let be = CpuBackend::with_threads(2);
        let (rows, c) = (7, 100);
        let x = random_normal(1, rows * c, 1.0);
        let w = random_vec(2, c);
        let xt = t(x.clone(), &[rows, c]);
        let wt = t(w.clone(), &[c]);
        let mut out = be.zeros(&[rows, c], DType::F32).unwrap();
        be.norm(NormKind::RmsNorm, &xt, &wt, None, 1e-6, &mut out)
            .unwrap();
        let mut want = vec![0.0; rows * c];
        norm::rms_norm_reference(&x, &w, 1e-6, &mut want);
        compare("rms_norm", out.as_f32().unwrap(), &f64s(&want), Tol::F32).unwrap();

        let mut res = t(random_vec(3, rows * c), &[rows, c]);
        let mut r_want = res.to_f32_vec().unwrap();
        be.add_norm(
            NormKind::LayerNorm,
            &xt,
            &mut res,
            &wt,
            Some(&wt),
            1e-5,
            &mut out,
        )
        .unwrap();
        norm::add_norm_reference(
            NormKind::LayerNorm,
            &x,
            &mut r_want,
            &w,
            Some(&w),
            1e-5,
            &mut want,
        );
        compare("add_norm", out.as_f32().unwrap(), &f64s(&want), Tol::F32).unwrap();
        assert_eq!(res.to_f32_vec().unwrap(), r_want);

        let mut y = xt.clone().contiguous().unwrap();
        drop(xt);
        be.activation(&mut y, Activation::Gelu).unwrap();
        let mut want = x.clone();
        activation::activation_reference(Activation::Gelu, &mut want);
        compare("gelu", y.as_f32().unwrap(), &f64s(&want), Tol::F32).unwrap();

        let mut s = t(x.clone(), &[rows, c]);
        be.log_softmax(&mut s).unwrap();
        let mut want = x.clone();
        softmax::log_softmax_reference(&mut want, c);
        compare("log_softmax", s.as_f32().unwrap(), &f64s(&want), Tol::F32).unwrap();

        let (i, v) = be.topk(&t(x.clone(), &[rows, c]), 3).unwrap();
        assert_eq!((i, v), topk::topk_reference(&x, c, 3));

        let table = t(random_vec(4, 50 * c), &[50, c]);
        let ids = Tensor::from_u32(vec![3, 49, 0], [1, 3]).unwrap();
        let mut e = be.zeros(&[1, 3, c], DType::F32).unwrap();
        be.embedding(&ids, &table, 2.0, &mut e).unwrap();
        assert_eq!(
            e.to_f32_vec().unwrap()[c],
            table.to_f32_vec().unwrap()[49 * c] * 2.0
        );

        // batched_matmul with a transposed view as b.
        let a = t(random_vec(5, 2 * 3 * 4), &[2, 3, 4]);
        let bsrc = t(random_vec(6, 2 * 5 * 4), &[2, 5, 4]);
        let bt = bsrc.transpose(1, 2).unwrap();
        let mut o = be.zeros(&[2, 3, 5], DType::F32).unwrap();
        be.batched_matmul(&a, &bt, &mut o).unwrap();
        let bv = bt.contiguous().unwrap().to_f32_vec().unwrap();
        let mut want = vec![0.0; 30];
        matmul::batched_matmul_reference(
            2,
            3,
            4,
            5,
            &a.to_f32_vec().unwrap(),
            matmul::Strided {
                data: &bv,
                off: 0,
                sb: 20,
                sk: 5,
                sn: 1,
            },
            &mut want,
        );
        compare(
            "batched_matmul",
            o.as_f32().unwrap(),
            &f64s(&want),
            Tol::F32,
        )
        .unwrap();
    }
}
