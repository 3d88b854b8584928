//! Building blocks shared by the architecture files: weights loaded by HF name onto
//! a backend, and scratch buffers that are reallocated only when their shape changes.

use encdec_core::{Backend, DType, HostStorage, Tensor};
use encdec_generate::{DecoderState, EncoderOutput, Seq2SeqModel};

use crate::error::Result;
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

/// A decoder state whose self-attention caches (`[rows, capacity, width]` per
/// layer) are allocated once, here.
pub fn new_decoder_state(
    backend: &dyn Backend,
    source_of_row: &[u32],
    capacity: usize,
    layers: usize,
    width: usize,
    scratch: Box<dyn std::any::Any + Send + Sync>,
) -> encdec_core::Result<DecoderState> {
    let rows = source_of_row.len();
    let shape = [rows, capacity, width];
    let mut self_k = Vec::with_capacity(layers);
    let mut self_v = Vec::with_capacity(layers);
    for _ in 0..layers {
        self_k.push(backend.zeros(&shape, DType::F32)?);
        self_v.push(backend.zeros(&shape, DType::F32)?);
    }
    let kv_index = backend.upload(&Tensor::from_u32(source_of_row.to_vec(), [rows])?)?;
    Ok(DecoderState {
        rows,
        capacity,
        len: 0,
        self_k,
        self_v,
        kv_index,
        scratch: Some(scratch),
    })
}

/// Cross-attention K/V of every decoder layer over the encoder output `x`
/// `[sources, src_len, d]`, projected once per source.
pub fn project_cross_kv<'a>(
    backend: &dyn Backend,
    x: &Tensor,
    projections: impl ExactSizeIterator<Item = (&'a Linear, &'a Linear)>,
    shape: &[usize],
) -> encdec_core::Result<(Vec<Tensor>, Vec<Tensor>)> {
    let mut cross_k = Vec::with_capacity(projections.len());
    let mut cross_v = Vec::with_capacity(projections.len());
    for (k, v) in projections {
        let mut ck = backend.zeros(shape, DType::F32)?;
        let mut cv = backend.zeros(shape, DType::F32)?;
        k.forward(backend, x, &mut ck)?;
        v.forward(backend, x, &mut cv)?;
        cross_k.push(ck);
        cross_v.push(cv);
    }
    Ok((cross_k, cross_v))
}

/// Whether `rows` keeps every row of `state` in place (nothing to reorder).
pub fn rows_unchanged(
    state: &DecoderState,
    rows: &[u32],
    model: &str,
) -> encdec_core::Result<bool> {
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
pub struct CacheReorder {
    /// u32 `[rows]`: the kept rows (host).
    select: Tensor,
    spare_k: Vec<Tensor>,
    spare_v: Vec<Tensor>,
    spare_index: Tensor,
}

impl CacheReorder {
    pub fn new(layers: usize) -> Self {
        CacheReorder {
            select: Tensor::zeros([0], DType::U32),
            spare_k: vec![empty_f32(); layers],
            spare_v: vec![empty_f32(); layers],
            spare_index: Tensor::zeros([0], DType::U32),
        }
    }

    /// Keeps decoder rows `rows` (validated by [`rows_unchanged`]) of every cache
    /// of `state` (`width` = per-row K/V width) and of its kv_index.
    pub fn apply(
        &mut self,
        backend: &dyn Backend,
        state: &mut DecoderState,
        rows: &[u32],
        width: usize,
    ) -> encdec_core::Result<()> {
        let n = rows.len();
        host_u32(&mut self.select, n)?.copy_from_slice(rows);
        let idx = backend.upload(&self.select)?;
        let shape = [n, state.capacity, width];
        for l in 0..state.self_k.len() {
            ensure_f32(backend, &mut self.spare_k[l], &shape)?;
            backend.index_select(&state.self_k[l], &idx, &mut self.spare_k[l])?;
            std::mem::swap(&mut state.self_k[l], &mut self.spare_k[l]);
            ensure_f32(backend, &mut self.spare_v[l], &shape)?;
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

/// Where a model keeps its [`CrossCapture`]: a slot in its step scratch.
pub type CaptureSlot = fn(&mut DecoderState) -> Option<&mut Option<CrossCapture>>;

/// Shape of the attention a model computes: what `cross_attention` needs.
pub struct AttentionShape {
    pub layers: usize,
    pub heads: usize,
    pub head_dim: usize,
    /// Multiplies `q·k`.
    pub scale: f32,
}

/// [`Seq2SeqModel::cross_attention`] for the models of this crate: teacher-force
/// `target` one step at a time with a capture in the step scratch, then
/// `softmax(scale q·k + mask)` per head against the cached encoder K.
pub fn teacher_forced_cross_attention(
    model: &dyn Seq2SeqModel,
    shape: &AttentionShape,
    slot: CaptureSlot,
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
    let keys = be.download(&enc.cross_k[layer])?;
    let mask = be.download(&enc.key_mask)?;
    let probs = attention_probs(&queries, keys.as_f32()?, mask.as_f32()?, shape);
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
