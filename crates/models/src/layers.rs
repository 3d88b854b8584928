//! Building blocks shared by the architecture files: weights loaded by HF name onto
//! a backend, scratch buffers that are reallocated only when their shape changes,
//! and the plumbing of `Seq2SeqModel` that does not depend on the architecture
//! (source padding, cross-attention K/V, decoder state, step scratch, beam
//! reordering). What differs per family (norms, positions, FFN) stays in its file.

use encdec_core::{
    Activation, AttentionParams, Backend, DType, Device, HostStorage, RangeGuard, Tensor,
};
use encdec_generate::{DecoderState, EncoderOutput, Seq2SeqModel, Then};

use crate::error::{ModelError, Result};
use crate::var_builder::VarBuilder;

/// `y = x W^T + b` with W in HF's `[out, in]` layout.
#[derive(Debug, Clone)]
pub struct Linear {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
}

impl Linear {
    /// Loads `{name}.weight` `[out, inp]` as `dtype` (int8 quantises per output row)
    /// and, if `with_bias`, `{name}.bias` `[out]` in f32.
    pub fn load(
        vb: &VarBuilder,
        name: &str,
        out: usize,
        inp: usize,
        with_bias: bool,
        dtype: DType,
        backend: &dyn Backend,
    ) -> Result<Self> {
        let weight = load_weight(vb, &format!("{name}.weight"), &[out, inp], dtype, backend)?;
        let bias = if with_bias {
            Some(load_f32(vb, &format!("{name}.bias"), &[out], backend)?)
        } else {
            None
        };
        Ok(Linear { weight, bias })
    }

    /// A linear layer over an already loaded weight (a tied lm_head).
    pub fn from_weight(weight: Tensor, bias: Option<Tensor>) -> Self {
        Linear { weight, bias }
    }

    pub fn out_features(&self) -> usize {
        self.weight.dim(0)
    }

    pub fn in_features(&self) -> usize {
        self.weight.dim(1)
    }

    pub fn forward(
        &self,
        backend: &dyn Backend,
        x: &Tensor,
        out: &mut Tensor,
    ) -> encdec_core::Result<()> {
        backend.linear(x, &self.weight, self.bias.as_ref(), out)
    }

    /// `out += x Wᵀ + b`: a sublayer's output added to the residual stream
    /// (the backend may fuse the add into the GEMM's epilogue).
    pub fn forward_add(
        &self,
        backend: &dyn Backend,
        x: &Tensor,
        out: &mut Tensor,
    ) -> encdec_core::Result<()> {
        backend.linear_add(x, &self.weight, self.bias.as_ref(), out)
    }

    /// `out = act(x Wᵀ + b)` (the backend may fuse the activation into the GEMM).
    pub fn forward_act(
        &self,
        backend: &dyn Backend,
        x: &Tensor,
        act: Activation,
        out: &mut Tensor,
    ) -> encdec_core::Result<()> {
        backend.linear_act(x, &self.weight, self.bias.as_ref(), act, out)
    }

    /// `out = act(x Wᵀ) * (x Uᵀ)` with `self` the gate and `up` the up
    /// projection (a gated FFN; the backend may run both GEMMs in one kernel).
    /// Neither may have a bias (T5's have none).
    pub fn forward_gated(
        &self,
        backend: &dyn Backend,
        up: &Linear,
        x: &Tensor,
        act: Activation,
        out: &mut Tensor,
    ) -> encdec_core::Result<()> {
        if self.bias.is_some() || up.bias.is_some() {
            return Err(encdec_core::Error::Invalid(
                "linear_gated: the gate and up projections take no bias".into(),
            ));
        }
        backend.linear_gated(x, &self.weight, &up.weight, act, out)
    }
}

/// Loads a matrix as `dtype` onto the backend after checking its shape.
pub fn load_weight(
    vb: &VarBuilder,
    name: &str,
    shape: &[usize],
    dtype: DType,
    backend: &dyn Backend,
) -> Result<Tensor> {
    let t = vb.get(name, shape, dtype)?;
    Ok(backend.upload(&t)?)
}

/// Loads a vector or table in f32 (norm weights, biases, position tables).
pub fn load_f32(
    vb: &VarBuilder,
    name: &str,
    shape: &[usize],
    backend: &dyn Backend,
) -> Result<Tensor> {
    load_weight(vb, name, shape, DType::F32, backend)
}

/// Rejects a weight dtype no model loads into (`what` names the weights).
pub fn check_weight_dtype(what: &str, dtype: DType) -> Result<()> {
    if dtype == DType::U32 {
        return Err(ModelError::UnsupportedTarget {
            tensor: what.into(),
            dtype,
            reason: "weights load as f32, f16, bf16 or int8".into(),
        });
    }
    Ok(())
}

/// The dtype of token-embedding tables for weights in `dtype`: int8 is for
/// matmuls, the embedding gather keeps a float table.
pub fn embedding_dtype(dtype: DType) -> DType {
    if dtype == DType::I8 {
        DType::F16
    } else {
        dtype
    }
}

/// The `lm_head` weight `shape` (`[vocab, d]`): `lm_head.weight` when the
/// checkpoint's own is to be used (`untied`), else the token embedding `embedding`,
/// reloaded from `tied_name` in `dtype` when that is not the embedding's dtype (int8).
#[allow(clippy::too_many_arguments)]
pub fn lm_head_weight(
    vb: &VarBuilder,
    untied: bool,
    embedding: &Tensor,
    tied_name: &str,
    shape: &[usize],
    dtype: DType,
    backend: &dyn Backend,
) -> Result<Tensor> {
    if untied {
        load_weight(vb, "lm_head.weight", shape, dtype, backend)
    } else if embedding_dtype(dtype) == dtype {
        Ok(embedding.clone())
    } else {
        load_weight(vb, tied_name, shape, dtype, backend)
    }
}

/// A sublayer's input and the residual stream its output projection adds to
/// ([`Linear::forward_add`]): two tensors in a pre-LN block (reads `x =
/// norm(h)`, adds to `h`), one in a post-LN block (the stream is the input;
/// the add comes after every read of it).
pub enum Residual<'a> {
    PreNorm {
        input: &'a Tensor,
        stream: &'a mut Tensor,
    },
    PostNorm(&'a mut Tensor),
}

impl<'a> Residual<'a> {
    /// `x` and `h` as `stream` says: `Hidden`, input `x` and stream `h`;
    /// `Input`, `x` for both.
    pub fn of(stream: Stream, h: &'a mut Tensor, x: &'a mut Tensor) -> Self {
        match stream {
            Stream::Hidden => Residual::PreNorm {
                input: x,
                stream: h,
            },
            Stream::Input => Residual::PostNorm(x),
        }
    }

    pub fn input(&self) -> &Tensor {
        match self {
            Residual::PreNorm { input, .. } => input,
            Residual::PostNorm(x) => x,
        }
    }

    pub fn stream(&mut self) -> &mut Tensor {
        match self {
            Residual::PreNorm { stream, .. } => stream,
            Residual::PostNorm(x) => x,
        }
    }
}

/// Which of a block's two `[.., d]` tensors `h`, `x` holds the residual
/// stream: `Hidden` (`h`, pre-LN: sublayers read `x = norm(h)`) or `Input`
/// (`x`, post-LN: sublayers read the stream, `h` is scratch for the norm).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Hidden,
    Input,
}

impl Stream {
    pub fn of(pre_norm: bool) -> Self {
        if pre_norm {
            Stream::Hidden
        } else {
            Stream::Input
        }
    }
}

/// q/k/v/o projections of one attention block; q/k/v map `d_model` to `inner`
/// (heads x head_dim, not always `d_model`: T5), o maps back.
#[derive(Debug, Clone)]
pub struct Attention {
    pub q: Linear,
    pub k: Linear,
    pub v: Linear,
    pub o: Linear,
}

impl Attention {
    /// Loads the projections named `[q, k, v, o]` under `vb`.
    pub fn load(
        vb: &VarBuilder,
        [q, k, v, o]: [&str; 4],
        d: usize,
        inner: usize,
        with_bias: bool,
        dtype: DType,
        be: &dyn Backend,
    ) -> Result<Self> {
        Ok(Attention {
            q: Linear::load(vb, q, inner, d, with_bias, dtype, be)?,
            k: Linear::load(vb, k, inner, d, with_bias, dtype, be)?,
            v: Linear::load(vb, v, inner, d, with_bias, dtype, be)?,
            o: Linear::load(vb, o, d, inner, with_bias, dtype, be)?,
        })
    }
}

/// A self-attention block with its q, k and v projections fused into one
/// `[3 inner, d]` weight (q rows, then k, then v; each loaded by its HF name and
/// concatenated at load; biases likewise): one GEMM reads the input once and
/// fills the GPU better than three narrow ones (at a decode step, one GEMV
/// streams 3x the bytes per launch). q, k, v are column views of its output.
#[derive(Debug, Clone)]
pub struct SelfAttention {
    pub qkv: Linear,
    pub o: Linear,
    inner: usize,
}

impl SelfAttention {
    /// Loads the projections named `[q, k, v, o]` under `vb`, q/k/v fused.
    pub fn load(
        vb: &VarBuilder,
        [q, k, v, o]: [&str; 4],
        d: usize,
        inner: usize,
        with_bias: bool,
        dtype: DType,
        be: &dyn Backend,
    ) -> Result<Self> {
        let load = |suffix: &str, shape: &[usize], dtype: DType| -> Result<Tensor> {
            let parts = [q, k, v]
                .iter()
                .map(|n| vb.get(&format!("{n}.{suffix}"), shape, dtype))
                .collect::<Result<Vec<_>>>()?;
            Ok(be.upload(&concat_rows(&parts)?)?)
        };
        let weight = load("weight", &[inner, d], dtype)?;
        let bias = if with_bias {
            Some(load("bias", &[inner], DType::F32)?)
        } else {
            None
        };
        Ok(SelfAttention {
            qkv: Linear::from_weight(weight, bias),
            o: Linear::load(vb, o, d, inner, with_bias, dtype, be)?,
            inner,
        })
    }

    /// The q, k and v column views of a `[.., 3 inner]` projection.
    pub fn split(&self, qkv: &Tensor) -> encdec_core::Result<[Tensor; 3]> {
        let (last, n) = (qkv.rank() - 1, self.inner);
        Ok([
            qkv.narrow(last, 0, n)?,
            qkv.narrow(last, n, n)?,
            qkv.narrow(last, 2 * n, n)?,
        ])
    }

    /// Self-attention of the input over itself (the encoder), added to the
    /// stream: `stream += o(attend(q x, k x, v x))`.
    pub fn forward(
        &self,
        be: &dyn Backend,
        io: &mut Residual,
        params: &AttentionParams,
        buf: &mut AttentionBuffers,
    ) -> encdec_core::Result<()> {
        self.qkv.forward(be, io.input(), &mut buf.qkv)?;
        let [q, k, v] = self.split(&buf.qkv)?;
        be.attention(&q, &k, &v, params, &mut buf.a)?;
        drop((q, k, v));
        self.o.forward_add(be, &buf.a, io.stream())
    }
}

/// Host tensors of one dtype and trailing shape stacked along dim 0 (int8
/// rows keep their scales).
pub fn concat_rows(parts: &[Tensor]) -> encdec_core::Result<Tensor> {
    let Some(first) = parts.first() else {
        return Err(invalid("concat_rows: no tensors".into()));
    };
    let mut dims = first.dims().to_vec();
    dims[0] = parts.iter().map(|p| p.dim(0)).sum();
    let mut out = HostStorage::zeros(first.dtype(), 0, 0);
    for p in parts {
        if p.dims()[1..] != first.dims()[1..] {
            return Err(encdec_core::Error::ShapeMismatch {
                op: "concat_rows",
                lhs: first.dims().to_vec(),
                rhs: p.dims().to_vec(),
            });
        }
        let p = p.contiguous()?;
        let (off, n) = (p.offset(), p.elem_count());
        let cols = p.cols().max(1);
        let (row0, rows) = (off / cols, n / cols);
        match (&mut out, p.host()?) {
            (HostStorage::F32(o), HostStorage::F32(h)) => o.extend_from_slice(&h[off..off + n]),
            (HostStorage::F16(o), HostStorage::F16(h)) => o.extend_from_slice(&h[off..off + n]),
            (HostStorage::BF16(o), HostStorage::BF16(h)) => o.extend_from_slice(&h[off..off + n]),
            (HostStorage::U32(o), HostStorage::U32(h)) => o.extend_from_slice(&h[off..off + n]),
            (HostStorage::I8 { data, scales }, HostStorage::I8 { data: d, scales: s }) => {
                data.extend_from_slice(&d[off..off + n]);
                scales.extend_from_slice(&s[row0..row0 + rows]);
            }
            (_, h) => {
                return Err(encdec_core::Error::DTypeMismatch {
                    op: "concat_rows",
                    lhs: first.dtype(),
                    rhs: h.dtype(),
                })
            }
        }
    }
    Tensor::from_host(out, dims)
}

/// The buffers of one attention sublayer: a self-attention's fused q/k/v
/// projection `[.., 3 inner]`, a cross-attention's queries `[.., inner]` and
/// the attention output `[.., inner]`.
#[derive(Debug)]
pub struct AttentionBuffers {
    pub qkv: Tensor,
    pub q: Tensor,
    pub a: Tensor,
}

impl AttentionBuffers {
    /// A self-attention's buffers for `rows` of width `inner`, in `dtype`
    /// ([`Backend::activation_dtype`]; the encoder, sized once per call).
    pub fn self_attention(
        backend: &dyn Backend,
        rows: &[usize],
        inner: usize,
        dtype: DType,
    ) -> encdec_core::Result<Self> {
        let shape = |w: usize| [rows, &[w]].concat();
        Ok(AttentionBuffers {
            qkv: backend.zeros(&shape(3 * inner), dtype)?,
            q: empty_f32(),
            a: backend.zeros(&shape(inner), dtype)?,
        })
    }

    fn empty() -> Self {
        AttentionBuffers {
            qkv: empty_f32(),
            q: empty_f32(),
            a: empty_f32(),
        }
    }

    /// f32 buffers `[rows, 1, ..]` (a decode step) of width `inner`.
    fn ensure(
        &mut self,
        backend: &dyn Backend,
        rows: usize,
        inner: usize,
    ) -> encdec_core::Result<()> {
        ensure_f32(backend, &mut self.qkv, &[rows, 1, 3 * inner])?;
        ensure_f32(backend, &mut self.q, &[rows, 1, inner])?;
        ensure_f32(backend, &mut self.a, &[rows, 1, inner])
    }
}

/// The attention operand precision a model loaded with `weight_dtype` allows
/// (`AttentionParams::operand_dtype`): f16 weights -> F16, bf16 -> BF16; f32 and
/// int8 models keep exact f32 attention.
pub fn attention_operand_dtype(weight_dtype: DType) -> DType {
    match weight_dtype {
        DType::F16 => DType::F16,
        DType::BF16 => DType::BF16,
        _ => DType::F32,
    }
}

/// Attention over `kv_len` keys with heads of `head_dim`, queries from `q_offset`,
/// operands allowed in `operand_dtype` ([`attention_operand_dtype`]); no mask,
/// bias or kv_index (the caller sets those it needs).
pub fn attention_params<'a>(
    num_heads: usize,
    head_dim: usize,
    scale: f32,
    q_offset: usize,
    kv_len: usize,
    causal: bool,
    operand_dtype: DType,
) -> AttentionParams<'a> {
    AttentionParams {
        num_heads,
        head_dim,
        scale,
        causal,
        q_offset,
        kv_len,
        key_mask: None,
        position_bias: None,
        relative_bias: None,
        kv_index: None,
        operand_dtype,
    }
}

/// Makes `buf` an f32 tensor of `shape` on `backend`, reallocating only when the
/// shape differs (decode steps with a fixed number of rows allocate nothing).
pub fn ensure_f32(
    backend: &dyn Backend,
    buf: &mut Tensor,
    shape: &[usize],
) -> encdec_core::Result<()> {
    if buf.dims() != shape || buf.dtype() != DType::F32 || buf.device() != backend.device() {
        *buf = backend.zeros(shape, DType::F32)?;
    }
    Ok(())
}

/// An empty f32 placeholder for a scratch buffer that [`ensure_f32`] sizes later.
pub fn empty_f32() -> Tensor {
    Tensor::zeros([0], DType::F32)
}

/// Makes `buf` a backend tensor of `shape` and `dtype`, reallocating only when
/// either differs.
pub fn ensure_like(
    backend: &dyn Backend,
    buf: &mut Tensor,
    shape: &[usize],
    dtype: DType,
) -> encdec_core::Result<()> {
    if buf.dims() != shape || buf.dtype() != dtype || buf.device() != backend.device() {
        *buf = backend.zeros(shape, dtype)?;
    }
    Ok(())
}

/// Copies the host tensor `host` into `on_backend` (sized like it, allocated
/// only when the shape changes) and returns a handle to it: per-step inputs
/// reuse one buffer instead of an upload's new one.
pub fn copy_to_backend(
    be: &dyn Backend,
    host: &Tensor,
    on_backend: &mut Tensor,
) -> encdec_core::Result<Tensor> {
    ensure_like(be, on_backend, host.dims(), host.dtype())?;
    be.copy_from_host(host, on_backend)?;
    Ok(on_backend.clone())
}

/// Makes `buf` a host u32 tensor of `n` values, reallocating only when the length
/// changes, and returns its values.
pub fn host_u32(buf: &mut Tensor, n: usize) -> encdec_core::Result<&mut [u32]> {
    if buf.dims() != [n] || buf.dtype() != DType::U32 {
        *buf = Tensor::zeros([n], DType::U32);
    }
    match buf.host_mut("host_u32")? {
        HostStorage::U32(v) => Ok(v),
        h => Err(encdec_core::Error::DTypeMismatch {
            op: "host_u32",
            lhs: h.dtype(),
            rhs: DType::U32,
        }),
    }
}

pub fn invalid(msg: String) -> encdec_core::Error {
    encdec_core::Error::Invalid(msg)
}

/// Checks what `Seq2SeqModel::start` receives against the encoder output.
pub fn check_start(
    model: &str,
    enc: &EncoderOutput,
    source_of_row: &[u32],
    decoder_layers: usize,
) -> encdec_core::Result<()> {
    if let Some(&bad) = source_of_row.iter().find(|&&r| r as usize >= enc.sources) {
        return Err(invalid(format!(
            "{model} start: decoder row reads source {bad} but the encoder output has {}",
            enc.sources
        )));
    }
    if enc.cross_k.len() != decoder_layers || enc.cross_v.len() != decoder_layers {
        return Err(invalid(format!(
            "{model} start: encoder output has cross K/V for {} layers, the decoder has {}",
            enc.cross_k.len(),
            decoder_layers
        )));
    }
    Ok(())
}

/// Sources right-padded to the longest one (at least one position, so that an
/// all-empty batch still runs) with an additive key mask.
#[derive(Debug)]
pub struct PaddedSources {
    /// `[rows * len]`, padded with the pad token as HF tokenizers pad, so that
    /// even the states at pad positions equal HF's.
    pub ids: Vec<u32>,
    /// `[rows * len]`: 0 on tokens, `f32::MIN` on padding.
    pub key_mask: Vec<f32>,
    pub lengths: Vec<usize>,
    pub rows: usize,
    pub len: usize,
}

impl PaddedSources {
    pub fn new(model: &str, sources: &[Vec<u32>], pad: u32) -> encdec_core::Result<Self> {
        let rows = sources.len();
        if rows == 0 {
            return Err(invalid(format!("{model} encode: no sources")));
        }
        let lengths: Vec<usize> = sources.iter().map(Vec::len).collect();
        let len = lengths.iter().copied().max().unwrap_or(0).max(1);
        let mut ids = vec![pad; rows * len];
        let mut key_mask = vec![f32::MIN; rows * len];
        for (r, src) in sources.iter().enumerate() {
            ids[r * len..r * len + src.len()].copy_from_slice(src);
            key_mask[r * len..r * len + src.len()].fill(0.0);
        }
        Ok(PaddedSources {
            ids,
            key_mask,
            lengths,
            rows,
            len,
        })
    }
}

/// The encoder output over `hidden` `[sources, src_len, d]`, with the
/// cross-attention K/V of every decoder layer (`cross`) projected here, once per
/// source, and stored as `cache_dtype` ([`Backend::kv_cache_dtype`]): the beams
/// of a source share them through `kv_index`.
pub fn encoder_output<'a>(
    backend: &dyn Backend,
    hidden: Tensor,
    key_mask: Tensor,
    lengths: Vec<usize>,
    cross: impl ExactSizeIterator<Item = &'a Attention>,
    cache_dtype: DType,
) -> encdec_core::Result<EncoderOutput> {
    let (sources, src_len) = (hidden.dim(0), hidden.dim(1));
    let mut cross_k = Vec::with_capacity(cross.len());
    let mut cross_v = Vec::with_capacity(cross.len());
    // A half out receives the f32 projection rounded (as a cast would).
    let project = |w: &Linear| -> encdec_core::Result<Tensor> {
        let mut y = backend.zeros(&[sources, src_len, w.out_features()], cache_dtype)?;
        w.forward(backend, &hidden, &mut y)?;
        Ok(y)
    };
    for attn in cross {
        cross_k.push(project(&attn.k)?);
        cross_v.push(project(&attn.v)?);
    }
    Ok(EncoderOutput {
        sources,
        src_len,
        hidden,
        key_mask,
        lengths,
        cross_k,
        cross_v,
    })
}

/// A decoder state whose self-attention caches (`[rows, capacity, width]` per
/// layer, `cache_dtype`: each step's f32 K/V are rounded into them) are
/// allocated once, here, with an empty [`StepScratch<X>`].
pub fn new_decoder_state<X: Default + Send + Sync + 'static>(
    backend: &dyn Backend,
    source_of_row: &[u32],
    capacity: usize,
    layers: usize,
    width: usize,
    cache_dtype: DType,
) -> encdec_core::Result<DecoderState> {
    let rows = source_of_row.len();
    let shape = [rows, capacity, width];
    let mut self_k = Vec::with_capacity(layers);
    let mut self_v = Vec::with_capacity(layers);
    for _ in 0..layers {
        self_k.push(backend.zeros(&shape, cache_dtype)?);
        self_v.push(backend.zeros(&shape, cache_dtype)?);
    }
    let kv_index = backend.upload(&Tensor::from_u32(source_of_row.to_vec(), [rows])?)?;
    Ok(DecoderState {
        rows,
        capacity,
        len: 0,
        self_k,
        self_v,
        kv_index,
        scratch: Some(Box::new(StepScratch::<X>::new(layers))),
        recorded: Default::default(),
    })
}

/// Decode-step buffers, kept in `DecoderState::scratch` and reused while the
/// number of rows stays the same; `X` holds what one architecture adds (its
/// FFN buffers, position ids or bias row).
#[derive(Debug)]
pub struct StepScratch<X> {
    /// u32 `[rows]`: the tokens of the step (host), and on the backend.
    ids: Tensor,
    ids_on_backend: Tensor,
    /// u32 `[2]`: the step's `(q_offset, kv_len)` (host), and on the backend,
    /// where the self-attention reads them (`attention_at`), so that a
    /// recorded step replays at every position.
    positions: Tensor,
    positions_on_backend: Tensor,
    /// `(rows, capacity, sources, src_len)` the state's recordings were made
    /// for: another shape reallocates this scratch, which they must not outlive.
    recorded_shape: Option<[usize; 4]>,
    /// `[rows, 1, d]`: the residual stream and the sublayers' input, as
    /// [`Stream`] says (`h` then is the norm's scratch, post-LN).
    pub h: Tensor,
    pub x: Tensor,
    attn: AttentionBuffers,
    /// Logits on the device (non-CPU backends only).
    logits: Tensor,
    reorder: CacheReorder,
    /// Set only while computing a cross-attention map.
    capture: Option<CrossCapture>,
    pub extra: X,
}

impl<X: Default + Send + Sync + 'static> StepScratch<X> {
    fn new(layers: usize) -> Self {
        StepScratch {
            ids: Tensor::zeros([0], DType::U32),
            ids_on_backend: Tensor::zeros([0], DType::U32),
            positions: Tensor::zeros([0], DType::U32),
            positions_on_backend: Tensor::zeros([0], DType::U32),
            recorded_shape: None,
            h: empty_f32(),
            x: empty_f32(),
            attn: AttentionBuffers::empty(),
            logits: empty_f32(),
            reorder: CacheReorder::new(layers),
            capture: None,
            extra: X::default(),
        }
    }

    /// The scratch `start` left in `state`, or a fresh one for a state made elsewhere.
    fn take(state: &mut DecoderState) -> Box<Self> {
        match state.scratch.take().map(|b| b.downcast::<Self>()) {
            Some(Ok(s)) => s,
            _ => Box::new(Self::new(state.self_k.len())),
        }
    }

    /// Where the scratch in `state` keeps its [`CrossCapture`].
    fn capture_slot(state: &mut DecoderState) -> Option<&mut Option<CrossCapture>> {
        let sc = state.scratch.as_mut()?.downcast_mut::<Self>()?;
        Some(&mut sc.capture)
    }
}

impl<X> StepScratch<X> {
    /// Sizes the shared buffers for `rows` rows of width `d` (attention: `inner`).
    pub fn ensure(
        &mut self,
        be: &dyn Backend,
        rows: usize,
        d: usize,
        inner: usize,
    ) -> encdec_core::Result<()> {
        for t in [&mut self.h, &mut self.x] {
            ensure_f32(be, t, &[rows, 1, d])?;
        }
        self.attn.ensure(be, rows, inner)
    }

    /// Copies the step's inputs to the backend, before its ops run (or replay):
    /// the token ids, and `(pos, pos + 1)` as the self-attention's
    /// `(q_offset, kv_len)` for the step at position `pos`.
    pub fn stage_inputs(
        &mut self,
        be: &dyn Backend,
        tokens: &[u32],
        pos: usize,
    ) -> encdec_core::Result<()> {
        host_u32(&mut self.ids, tokens.len())?.copy_from_slice(tokens);
        drop(copy_to_backend(be, &self.ids, &mut self.ids_on_backend)?);
        let at = u32::try_from(pos + 1)
            .map_err(|_| invalid(format!("decoder position {pos} does not fit u32")))?;
        host_u32(&mut self.positions, 2)?.copy_from_slice(&[at - 1, at]);
        drop(copy_to_backend(
            be,
            &self.positions,
            &mut self.positions_on_backend,
        )?);
        Ok(())
    }

    /// The step's token ids on the backend, as [`StepScratch::stage_inputs`]
    /// left them (a handle: drop it before the next step).
    pub fn step_ids(&self) -> Tensor {
        self.ids_on_backend.clone()
    }

    /// Decoder self-attention sublayer, `stream += o(attend(q x, cache))`: the
    /// step's K/V go into row `q_offset` of the layer's cache, and attend over
    /// `kv_len` rows, both read on the backend from the staged positions
    /// (`params` holds the host's view of them, for the profiler).
    #[allow(clippy::too_many_arguments)]
    pub fn self_attention(
        &mut self,
        be: &dyn Backend,
        attn: &SelfAttention,
        cache_k: &mut Tensor,
        cache_v: &mut Tensor,
        params: &AttentionParams,
        stream: Stream,
    ) -> encdec_core::Result<()> {
        let b = &mut self.attn;
        let at = &self.positions_on_backend;
        attn.qkv.forward(be, &self.x, &mut b.qkv)?;
        // Views of the one projection: the caches take k and v in place.
        let [q, k, v] = attn.split(&b.qkv)?;
        be.write_rows_at(&k, cache_k, at)?;
        be.write_rows_at(&v, cache_v, at)?;
        be.attention_at(&q, cache_k, cache_v, params, at, &mut b.a)?;
        drop((q, k, v));
        let mut io = Residual::of(stream, &mut self.h, &mut self.x);
        attn.o.forward_add(be, &b.a, io.stream())
    }

    /// Decoder cross-attention sublayer of `layer`, `stream += o(attend(q x,
    /// encoder K/V))` over the K/V [`encoder_output`] projected; the queries go
    /// to a capture, if set.
    pub fn cross_attention(
        &mut self,
        be: &dyn Backend,
        attn: &Attention,
        enc: &EncoderOutput,
        layer: usize,
        params: &AttentionParams,
        stream: Stream,
    ) -> encdec_core::Result<()> {
        let b = &mut self.attn;
        attn.q.forward(be, &self.x, &mut b.q)?;
        if let Some(c) = self.capture.as_mut() {
            c.record(be, layer, &b.q)?;
        }
        be.attention(
            &b.q,
            &enc.cross_k[layer],
            &enc.cross_v[layer],
            params,
            &mut b.a,
        )?;
        let mut io = Residual::of(stream, &mut self.h, &mut self.x);
        attn.o.forward_add(be, &b.a, io.stream())
    }

    /// `logits = lm_head(x)`: into `logits` (on the backend), or with None
    /// into the scratch's device buffer that [`run_step`] copies to the host.
    pub fn project_logits(
        &mut self,
        be: &dyn Backend,
        lm_head: &Linear,
        logits: Option<&mut Tensor>,
    ) -> encdec_core::Result<()> {
        match logits {
            Some(l) => lm_head.forward(be, &self.x, l),
            None => lm_head.forward(be, &self.x, &mut self.logits),
        }
    }
}

/// Runs the ops of a decode step, `body(state, scratch, logits)`, after the
/// model staged the step's inputs ([`StepScratch::stage_inputs`]): through the
/// state's recordings where the backend records ([`RecordedSteps`]: a CUDA
/// graph per set of buffers, replayed with one launch), else op by op.
/// `body` gets `Some(logits)` when `logits` lives on the backend (search on
/// the backend, or the CPU), else None: it then projects into a device buffer
/// and the logits are copied to the host after the step. `then` (search ops on
/// the backend's logits) runs after `body`, recorded with it.
///
/// [`RecordedSteps`]: encdec_generate::RecordedSteps
pub fn run_step<X>(
    be: &dyn Backend,
    enc: &EncoderOutput,
    state: &mut DecoderState,
    sc: &mut StepScratch<X>,
    logits: &mut Tensor,
    mut then: Option<Then<'_>>,
    mut body: impl FnMut(
        &mut DecoderState,
        &mut StepScratch<X>,
        Option<&mut Tensor>,
    ) -> encdec_core::Result<()>,
) -> encdec_core::Result<()> {
    let direct = be.device() == Device::Cpu || logits.device() == be.device();
    if !direct {
        ensure_f32(be, &mut sc.logits, logits.dims())?;
    }
    if then.is_some() && !direct {
        return Err(invalid(
            "step_on_backend_then: the logits must live on the model's backend".into(),
        ));
    }
    if sc.capture.is_some() {
        // A cross-attention map reads each layer's queries on the host.
        body(state, sc, direct.then_some(&mut *logits))?;
        if let Some((f, _)) = then.as_mut() {
            f(be, logits)?;
        }
    } else {
        let shape = [state.rows, state.capacity, enc.sources, enc.src_len];
        if sc.recorded_shape != Some(shape) {
            state.recorded.clear();
            sc.recorded_shape = Some(shape);
        }
        let mut recorded = std::mem::take(&mut state.recorded);
        let key = recorded.key_mut();
        key.extend_from_slice(&shape);
        key.push(enc.key_mask.address());
        key.extend(enc.cross_k.iter().chain(&enc.cross_v).map(Tensor::address));
        key.extend(
            state
                .self_k
                .iter()
                .chain(&state.self_v)
                .map(Tensor::address),
        );
        key.push(state.kv_index.address());
        key.push(if direct {
            logits.address()
        } else {
            sc.logits.address()
        });
        if let Some((_, then_key)) = &then {
            key.extend_from_slice(then_key);
        }
        let ran = recorded.run(be, || {
            body(state, sc, direct.then_some(&mut *logits))?;
            match then.as_mut() {
                Some((f, _)) => f(be, logits),
                None => Ok(()),
            }
        });
        state.recorded = recorded;
        ran?;
    }
    if !direct {
        be.copy_to_host(&sc.logits, logits)?;
    }
    Ok(())
}

/// [`Seq2SeqModel::step_on_backend`]'s logits must live on the model's backend.
pub fn check_logits_on_backend(
    model: &str,
    backend: &dyn Backend,
    logits: &Tensor,
) -> encdec_core::Result<()> {
    if logits.device() != backend.device() {
        return Err(invalid(format!(
            "{model} step_on_backend: logits on {}, the model's backend is {}",
            logits.device(),
            backend.device()
        )));
    }
    Ok(())
}

/// [`Seq2SeqModel::step`] around a model's own step `f`: checks the tokens, the
/// room left in the cache and the logits shape, lends `f` the step scratch, and
/// counts the token once `f` succeeds.
pub fn decode_step<X: Default + Send + Sync + 'static>(
    model: &str,
    state: &mut DecoderState,
    tokens: &[u32],
    logits: &mut Tensor,
    vocab_size: usize,
    f: impl FnOnce(&mut DecoderState, &mut StepScratch<X>, &mut Tensor) -> encdec_core::Result<()>,
) -> encdec_core::Result<()> {
    let r = tokens.len();
    if r != state.rows {
        return Err(invalid(format!(
            "{model} step: {r} tokens for a decoder state of {} rows",
            state.rows
        )));
    }
    if state.len >= state.capacity {
        return Err(invalid(format!(
            "{model} step: the KV cache is full ({} tokens)",
            state.capacity
        )));
    }
    // Checked here, not only by the embedding op: a replayed step (a CUDA
    // graph) reads the ids without the op's host check.
    if let Some(&bad) = tokens.iter().find(|&&t| t as usize >= vocab_size) {
        return Err(invalid(format!(
            "{model} step: token id {bad} is out of range for the vocabulary ({vocab_size})"
        )));
    }
    if logits.dims() != [r, vocab_size] {
        return Err(invalid(format!(
            "{model} step: logits buffer has shape {:?}, expected [{r}, {vocab_size}]",
            logits.dims()
        )));
    }
    let mut sc = StepScratch::<X>::take(state);
    let res = f(state, &mut sc, logits);
    state.scratch = Some(sc);
    res?;
    state.len += 1;
    Ok(())
}

/// [`Seq2SeqModel::select_rows`]: keeps decoder rows `rows` of every cache of
/// `state` (`width` = per-row K/V width) with the spare buffers of its scratch.
pub fn select_rows<X: Default + Send + Sync + 'static>(
    model: &str,
    backend: &dyn Backend,
    state: &mut DecoderState,
    rows: &[u32],
    width: usize,
) -> encdec_core::Result<()> {
    if rows_unchanged(state, rows, model)? {
        return Ok(());
    }
    let mut sc = StepScratch::<X>::take(state);
    let res = sc.reorder.apply(backend, state, rows, width);
    state.scratch = Some(sc);
    res
}

/// Whether `rows` keeps every row of `state` in place (nothing to reorder).
fn rows_unchanged(state: &DecoderState, rows: &[u32], model: &str) -> encdec_core::Result<bool> {
    if let Some(&bad) = rows.iter().find(|&&i| i as usize >= state.rows) {
        return Err(invalid(format!(
            "{model} select_rows: row {bad} is out of range for {} rows",
            state.rows
        )));
    }
    Ok(rows.len() == state.rows && rows.iter().enumerate().all(|(i, &r)| r as usize == i))
}

/// Second self-attention caches and kv_index that `select_rows` gathers into and
/// then swaps with the live ones, so beam reordering allocates nothing while the
/// number of rows stays the same.
#[derive(Debug)]
struct CacheReorder {
    /// u32 `[rows]`: the kept rows (host), and on the backend.
    select: Tensor,
    select_on_backend: Tensor,
    spare_k: Vec<Tensor>,
    spare_v: Vec<Tensor>,
    spare_index: Tensor,
}

impl CacheReorder {
    fn new(layers: usize) -> Self {
        CacheReorder {
            select: Tensor::zeros([0], DType::U32),
            select_on_backend: Tensor::zeros([0], DType::U32),
            spare_k: vec![empty_f32(); layers],
            spare_v: vec![empty_f32(); layers],
            spare_index: Tensor::zeros([0], DType::U32),
        }
    }

    /// Keeps decoder rows `rows` (validated by [`rows_unchanged`]) of every cache
    /// of `state` (`width` = per-row K/V width) and of its kv_index.
    fn apply(
        &mut self,
        backend: &dyn Backend,
        state: &mut DecoderState,
        rows: &[u32],
        width: usize,
    ) -> encdec_core::Result<()> {
        let n = rows.len();
        host_u32(&mut self.select, n)?.copy_from_slice(rows);
        let idx = copy_to_backend(backend, &self.select, &mut self.select_on_backend)?;
        let shape = [n, state.capacity, width];
        for l in 0..state.self_k.len() {
            let dtype = state.self_k[l].dtype();
            ensure_like(backend, &mut self.spare_k[l], &shape, dtype)?;
            backend.index_select(&state.self_k[l], &idx, &mut self.spare_k[l])?;
            std::mem::swap(&mut state.self_k[l], &mut self.spare_k[l]);
            ensure_like(backend, &mut self.spare_v[l], &shape, dtype)?;
            backend.index_select(&state.self_v[l], &idx, &mut self.spare_v[l])?;
            std::mem::swap(&mut state.self_v[l], &mut self.spare_v[l]);
        }
        ensure_like(backend, &mut self.spare_index, &[n], DType::U32)?;
        backend.index_select(&state.kv_index, &idx, &mut self.spare_index)?;
        std::mem::swap(&mut state.kv_index, &mut self.spare_index);
        state.rows = n;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ensure_reuses_a_buffer_of_the_same_shape() {
        let be = encdec_cpu::CpuBackend::with_threads(1);
        let mut buf = empty_f32();
        ensure_f32(&be, &mut buf, &[2, 3]).unwrap();
        buf.as_f32_mut().unwrap()[0] = 7.0;
        ensure_f32(&be, &mut buf, &[2, 3]).unwrap();
        assert_eq!(
            buf.as_f32().unwrap()[0],
            7.0,
            "same shape must keep the buffer"
        );
        ensure_f32(&be, &mut buf, &[3, 3]).unwrap();
        assert_eq!(buf.dims(), &[3, 3]);
    }

    #[test]
    fn concat_rows_stacks_rows_with_their_int8_scales() {
        let be = encdec_cpu::CpuBackend::with_threads(1);
        let a = Tensor::from_f32(vec![1.0, -2.0, 3.0, 0.5], [2, 2]).unwrap();
        let b = Tensor::from_f32(vec![4.0, 5.0, -6.0, 7.0, 8.0, 9.0], [3, 2]).unwrap();
        let f = concat_rows(&[a.clone(), b.clone()]).unwrap();
        assert_eq!(f.dims(), &[5, 2]);
        let both = [a.to_f32_vec().unwrap(), b.to_f32_vec().unwrap()].concat();
        assert_eq!(f.to_f32_vec().unwrap(), both);
        // int8 per-row quantisation of the parts equals that of the stacked rows.
        let (qa, qb) = (
            be.cast(&a, DType::I8).unwrap(),
            be.cast(&b, DType::I8).unwrap(),
        );
        let q = concat_rows(&[qa, qb]).unwrap();
        let want = be
            .cast(&Tensor::from_f32(both, [5, 2]).unwrap(), DType::I8)
            .unwrap();
        assert_eq!(q.to_f32_vec().unwrap(), want.to_f32_vec().unwrap());
        for dt in [DType::F16, DType::BF16] {
            let h = concat_rows(&[be.cast(&a, dt).unwrap(), be.cast(&b, dt).unwrap()]).unwrap();
            assert_eq!((h.dtype(), h.dims()), (dt, &[5usize, 2][..]));
        }
        // Parts of other widths or dtypes are refused.
        let c = Tensor::from_f32(vec![1.0; 3], [1, 3]).unwrap();
        assert!(concat_rows(&[a.clone(), c]).is_err());
        assert!(concat_rows(&[a.clone(), be.cast(&b, DType::F16).unwrap()]).is_err());
        assert!(concat_rows(&[]).is_err());
    }
}

/// The cross-attention queries of one decoder layer, recorded step by step while
/// a model computes its cross-attention map (`--attention-map`).
#[derive(Debug)]
pub struct CrossCapture {
    pub layer: usize,
    /// `[steps, H*D]`, appended each step.
    pub queries: Vec<f32>,
}

impl CrossCapture {
    /// Keep the queries `q` (`[1, 1, H*D]`) if `layer` is the one recorded.
    pub fn record(
        &mut self,
        be: &dyn Backend,
        layer: usize,
        q: &Tensor,
    ) -> encdec_core::Result<()> {
        if layer == self.layer {
            self.queries.extend_from_slice(be.download(q)?.as_f32()?);
        }
        Ok(())
    }
}

/// Shape of the attention a model computes: what `cross_attention` needs.
pub struct AttentionShape {
    pub layers: usize,
    pub heads: usize,
    pub head_dim: usize,
    /// Multiplies `q·k`.
    pub scale: f32,
}

/// [`Seq2SeqModel::cross_attention`] for the models of this crate: teacher-force
/// `target` one step at a time with a capture in the step scratch
/// (`StepScratch<X>`), then
/// `softmax(scale q·k + mask)` per head against the cached encoder K.
pub fn teacher_forced_cross_attention<X: Default + Send + Sync + 'static>(
    model: &dyn Seq2SeqModel,
    shape: &AttentionShape,
    source: &[u32],
    target: &[u32],
    layer: Option<usize>,
) -> encdec_core::Result<(usize, Tensor)> {
    if shape.layers == 0 {
        return Err(invalid("the model has no decoder layers".into()));
    }
    let layer = layer.unwrap_or(shape.layers - 1);
    if layer >= shape.layers {
        return Err(invalid(format!(
            "decoder layer {layer} asked for, but the model has {} (0..={})",
            shape.layers,
            shape.layers - 1
        )));
    }
    if target.is_empty() {
        return Err(invalid("cross-attention of an empty target".into()));
    }
    let be = model.backend();
    let enc = model.encode(&[source.to_vec()])?;
    let mut state = model.start(&enc, &[0], target.len())?;
    let slot = StepScratch::<X>::capture_slot;
    let Some(capture) = slot(&mut state) else {
        return Err(invalid("the decoder state has no step scratch".into()));
    };
    *capture = Some(CrossCapture {
        layer,
        queries: Vec::new(),
    });
    let mut logits = Tensor::zeros([1, model.spec().vocab_size], DType::F32);
    for &t in target {
        model.step(&enc, &mut state, &[t], &mut logits)?;
    }
    let queries = slot(&mut state)
        .and_then(Option::take)
        .map(|c| c.queries)
        .unwrap_or_default();
    let inner = shape.heads * shape.head_dim;
    if queries.len() != target.len() * inner {
        return Err(invalid(format!(
            "recorded {} query values, expected {} x {inner}",
            queries.len(),
            target.len()
        )));
    }
    // (f16/bf16 caches widen to the f32 values the kernels read)
    let keys = be.download(&enc.cross_k[layer])?.to_f32_vec()?;
    let mask = be.download(&enc.key_mask)?;
    let probs = attention_probs(&queries, &keys, mask.as_f32()?, shape);
    let (t, s) = (target.len(), enc.src_len);
    Ok((layer, Tensor::from_f32(probs, [shape.heads, t, s])?))
}

/// `softmax_s(scale · q[t,h]·k[s,h] + mask[s])` for q `[T, H*D]`, k `[S, H*D]`,
/// mask `[S]`: `[H, T, S]`, accumulated in f64 (an inspection tool, not a kernel).
fn attention_probs(q: &[f32], k: &[f32], mask: &[f32], shape: &AttentionShape) -> Vec<f32> {
    let (h_n, d) = (shape.heads, shape.head_dim);
    let inner = h_n * d;
    let (t_n, s_n) = (q.len() / inner, mask.len());
    let mut out = vec![0f32; h_n * t_n * s_n];
    let mut row = vec![0f64; s_n];
    for h in 0..h_n {
        for t in 0..t_n {
            let qv = &q[t * inner + h * d..t * inner + (h + 1) * d];
            for (s, r) in row.iter_mut().enumerate() {
                let kv = &k[s * inner + h * d..s * inner + (h + 1) * d];
                let dot: f64 = qv.iter().zip(kv).map(|(&a, &b)| a as f64 * b as f64).sum();
                *r = dot * shape.scale as f64 + mask[s] as f64;
            }
            let max = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let sum: f64 = row.iter().map(|&x| (x - max).exp()).sum();
            let dst = &mut out[(h * t_n + t) * s_n..(h * t_n + t + 1) * s_n];
            for (o, &x) in dst.iter_mut().zip(&row) {
                *o = ((x - max).exp() / sum) as f32;
            }
        }
    }
    out
}

/// Names of the per-layer profiler ranges (`encoder.layer.N`, `decoder.layer.N`),
/// made once at load so that opening a range in the decode loop allocates nothing.
#[derive(Debug, Clone, Default)]
pub(crate) struct LayerRanges {
    encoder: Vec<String>,
    decoder: Vec<String>,
}

impl LayerRanges {
    pub(crate) fn new(encoder_layers: usize, decoder_layers: usize) -> Self {
        let names = |side: &str, n: usize| (0..n).map(|i| format!("{side}.layer.{i}")).collect();
        LayerRanges {
            encoder: names("encoder", encoder_layers),
            decoder: names("decoder", decoder_layers),
        }
    }

    /// Opens encoder layer `i`'s range until the guard drops.
    pub(crate) fn encoder<'a>(&'a self, be: &'a dyn Backend, i: usize) -> RangeGuard<'a> {
        RangeGuard::open(
            be,
            self.encoder.get(i).map_or("encoder.layer", String::as_str),
        )
    }

    /// Opens decoder layer `i`'s range until the guard drops.
    pub(crate) fn decoder<'a>(&'a self, be: &'a dyn Backend, i: usize) -> RangeGuard<'a> {
        RangeGuard::open(
            be,
            self.decoder.get(i).map_or("decoder.layer", String::as_str),
        )
    }
}
