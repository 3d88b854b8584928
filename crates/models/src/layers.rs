//! Building blocks shared by the architecture files: weights loaded by HF name onto
//! a backend, and scratch buffers that are reallocated only when their shape changes.

use encdec_core::{Backend, DType, Tensor};

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
