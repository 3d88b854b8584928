//! Building blocks shared by the architecture files: weights loaded by HF name onto
//! a backend, and scratch buffers that are reallocated only when their shape changes.

use encdec_core::{Backend, DType, HostStorage, Tensor};
use encdec_generate::{DecoderState, EncoderOutput};

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
