//! Tensors: a shape and strides over shared storage.
//!
//! Views (`narrow`, `transpose`, `reshape` of a contiguous tensor) share the
//! storage through an `Arc`; writing needs the storage uniquely owned, which the
//! borrow checker and `Arc::get_mut` enforce together.

use std::any::Any;
use std::sync::Arc;

use half::{bf16, f16};

use crate::shape::Dims;
use crate::{DType, Device, Error, Result, Shape};

/// Host memory of one tensor.
#[derive(Debug, Clone)]
pub enum HostStorage {
    F32(Vec<f32>),
    F16(Vec<f16>),
    BF16(Vec<bf16>),
    /// int8 values with one f32 scale per row of the last two dims' row axis.
    I8 {
        data: Vec<i8>,
        scales: Vec<f32>,
    },
    U32(Vec<u32>),
}

impl HostStorage {
    pub fn dtype(&self) -> DType {
        match self {
            HostStorage::F32(_) => DType::F32,
            HostStorage::F16(_) => DType::F16,
            HostStorage::BF16(_) => DType::BF16,
            HostStorage::I8 { .. } => DType::I8,
            HostStorage::U32(_) => DType::U32,
        }
    }
    pub fn len(&self) -> usize {
        match self {
            HostStorage::F32(v) => v.len(),
            HostStorage::F16(v) => v.len(),
            HostStorage::BF16(v) => v.len(),
            HostStorage::I8 { data, .. } => data.len(),
            HostStorage::U32(v) => v.len(),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn zeros(dtype: DType, n: usize, rows: usize) -> Self {
        match dtype {
            DType::F32 => HostStorage::F32(vec![0.0; n]),
            DType::F16 => HostStorage::F16(vec![f16::ZERO; n]),
            DType::BF16 => HostStorage::BF16(vec![bf16::ZERO; n]),
            DType::I8 => HostStorage::I8 {
                data: vec![0; n],
                scales: vec![0.0; rows],
            },
            DType::U32 => HostStorage::U32(vec![0; n]),
        }
    }
    /// Element `i` as f32 (int8 values are dequantised with the scale of row `i / row_len`).
    #[inline]
    pub fn get_f32(&self, i: usize, row_len: usize) -> f32 {
        match self {
            HostStorage::F32(v) => v[i],
            HostStorage::F16(v) => v[i].to_f32(),
            HostStorage::BF16(v) => v[i].to_f32(),
            HostStorage::I8 { data, scales } => data[i] as f32 * scales[i / row_len.max(1)],
            HostStorage::U32(v) => v[i] as f32,
        }
    }
}

/// Memory owned by a device backend; the backend downcasts it to its own type.
pub trait DeviceBuffer: std::fmt::Debug + Send + Sync {
    fn as_any(&self) -> &dyn Any;
    fn as_any_mut(&mut self) -> &mut dyn Any;
    fn device(&self) -> Device;
    fn dtype(&self) -> DType;
    /// The device address of the first element (the default: this buffer
    /// object's, unique while it lives).
    fn address(&self) -> usize {
        self as *const Self as *const u8 as usize
    }
    /// Elements held.
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[derive(Debug)]
pub enum Storage {
    Host(HostStorage),
    Device(Box<dyn DeviceBuffer>),
}

impl Storage {
    pub fn device(&self) -> Device {
        match self {
            Storage::Host(_) => Device::Cpu,
            Storage::Device(b) => b.device(),
        }
    }
    pub fn dtype(&self) -> DType {
        match self {
            Storage::Host(h) => h.dtype(),
            Storage::Device(b) => b.dtype(),
        }
    }
}

/// An n-dimensional array: shape, strides (in elements) and offset over storage.
#[derive(Debug, Clone)]
pub struct Tensor {
    storage: Arc<Storage>,
    shape: Shape,
    strides: Dims,
    offset: usize,
}

impl Tensor {
    /// A contiguous tensor over `storage`.
    pub fn from_storage(storage: Storage, shape: impl Into<Shape>) -> Result<Self> {
        let shape = shape.into();
        let len = match &storage {
            Storage::Host(h) => h.len(),
            Storage::Device(b) => b.len(),
        };
        if len != shape.elem_count() {
            return Err(Error::Invalid(format!(
                "storage of {len} elements cannot have shape {:?}",
                shape.dims()
            )));
        }
        let strides = shape.contiguous_strides();
        Ok(Tensor {
            storage: Arc::new(storage),
            shape,
            strides,
            offset: 0,
        })
    }
    pub fn from_host(h: HostStorage, shape: impl Into<Shape>) -> Result<Self> {
        Self::from_storage(Storage::Host(h), shape)
    }
    pub fn from_f32(data: Vec<f32>, shape: impl Into<Shape>) -> Result<Self> {
        Self::from_host(HostStorage::F32(data), shape)
    }
    pub fn from_f16(data: Vec<f16>, shape: impl Into<Shape>) -> Result<Self> {
        Self::from_host(HostStorage::F16(data), shape)
    }
    pub fn from_bf16(data: Vec<bf16>, shape: impl Into<Shape>) -> Result<Self> {
        Self::from_host(HostStorage::BF16(data), shape)
    }
    pub fn from_u32(data: Vec<u32>, shape: impl Into<Shape>) -> Result<Self> {
        Self::from_host(HostStorage::U32(data), shape)
    }
    /// int8 matrix `[rows, cols]` (or more dims; rows = all but the last) with one scale per row.
    pub fn from_i8(data: Vec<i8>, scales: Vec<f32>, shape: impl Into<Shape>) -> Result<Self> {
        let shape: Shape = shape.into();
        let cols = shape.dims().last().copied().unwrap_or(1).max(1);
        if scales.len() * cols != shape.elem_count() {
            return Err(Error::Invalid(format!(
                "int8 tensor of shape {:?} needs {} scales, got {}",
                shape.dims(),
                shape.elem_count() / cols,
                scales.len()
            )));
        }
        Self::from_host(HostStorage::I8 { data, scales }, shape)
    }
    /// A zero-filled host tensor.
    pub fn zeros(shape: impl Into<Shape>, dtype: DType) -> Self {
        let shape: Shape = shape.into();
        let n = shape.elem_count();
        let cols = shape.dims().last().copied().unwrap_or(1).max(1);
        let strides = shape.contiguous_strides();
        Tensor {
            storage: Arc::new(Storage::Host(HostStorage::zeros(dtype, n, n / cols))),
            shape,
            strides,
            offset: 0,
        }
    }

    pub fn shape(&self) -> &Shape {
        &self.shape
    }
    pub fn dims(&self) -> &[usize] {
        self.shape.dims()
    }
    pub fn dim(&self, i: usize) -> usize {
        self.shape.dims()[i]
    }
    pub fn rank(&self) -> usize {
        self.shape.rank()
    }
    pub fn elem_count(&self) -> usize {
        self.shape.elem_count()
    }
    pub fn strides(&self) -> &[usize] {
        &self.strides
    }
    pub fn offset(&self) -> usize {
        self.offset
    }
    pub fn dtype(&self) -> DType {
        self.storage.dtype()
    }
    pub fn device(&self) -> Device {
        self.storage.device()
    }
    pub fn storage(&self) -> &Storage {
        &self.storage
    }
    /// Mutable storage; fails while a view shares it.
    pub fn storage_mut(&mut self, op: &'static str) -> Result<&mut Storage> {
        Arc::get_mut(&mut self.storage).ok_or(Error::SharedOutput { op })
    }
    /// Where the tensor's first element lives (host or device memory). Two
    /// live tensors with the same address, shape and strides view the same
    /// elements: a recorded decode step ([`crate::CapturedGraph`]) stays valid
    /// while the addresses of its tensors do.
    pub fn address(&self) -> usize {
        let base = match &*self.storage {
            Storage::Host(HostStorage::F32(v)) => v.as_ptr() as usize,
            Storage::Host(HostStorage::F16(v)) => v.as_ptr() as usize,
            Storage::Host(HostStorage::BF16(v)) => v.as_ptr() as usize,
            Storage::Host(HostStorage::I8 { data, .. }) => data.as_ptr() as usize,
            Storage::Host(HostStorage::U32(v)) => v.as_ptr() as usize,
            Storage::Device(b) => b.address(),
        };
        base + self.offset * self.dtype().size_in_bytes()
    }
    pub fn is_contiguous(&self) -> bool {
        let mut expected = 1;
        for (&d, &s) in self.shape.dims().iter().zip(self.strides.iter()).rev() {
            if d != 1 && s != expected {
                return false;
            }
            expected *= d;
        }
        true
    }
    /// Rows when viewed as a matrix `[elem_count / last_dim, last_dim]`.
    pub fn rows(&self) -> usize {
        let cols = self.dims().last().copied().unwrap_or(1);
        self.elem_count().checked_div(cols).unwrap_or(0)
    }
    pub fn cols(&self) -> usize {
        self.dims().last().copied().unwrap_or(1)
    }

    /// View of `len` entries of dimension `dim` starting at `start`.
    pub fn narrow(&self, dim: usize, start: usize, len: usize) -> Result<Tensor> {
        if dim >= self.rank() || start + len > self.dim(dim) {
            return Err(Error::Invalid(format!(
                "narrow(dim {dim}, {start}..{}) out of range for shape {:?}",
                start + len,
                self.dims()
            )));
        }
        let mut t = self.clone();
        t.offset += start * self.strides[dim];
        t.shape.0[dim] = len;
        Ok(t)
    }
    /// View with two dimensions swapped.
    pub fn transpose(&self, a: usize, b: usize) -> Result<Tensor> {
        if a >= self.rank() || b >= self.rank() {
            return Err(Error::Invalid(format!(
                "transpose({a}, {b}) out of range for rank {}",
                self.rank()
            )));
        }
        let mut t = self.clone();
        t.shape.0.swap(a, b);
        t.strides.swap(a, b);
        Ok(t)
    }
    /// Same data, new shape; the tensor must be contiguous.
    pub fn reshape(&self, shape: impl Into<Shape>) -> Result<Tensor> {
        let shape: Shape = shape.into();
        if shape.elem_count() != self.elem_count() {
            return Err(Error::ShapeMismatch {
                op: "reshape",
                lhs: self.dims().to_vec(),
                rhs: shape.dims().to_vec(),
            });
        }
        if !self.is_contiguous() {
            return Err(Error::NotContiguous { op: "reshape" });
        }
        let mut t = self.clone();
        t.strides = shape.contiguous_strides();
        t.shape = shape;
        Ok(t)
    }
    /// Reshape in place (keeps ownership, so the tensor stays writable).
    pub fn reshape_in_place(&mut self, shape: impl Into<Shape>) -> Result<()> {
        let shape: Shape = shape.into();
        if shape.elem_count() != self.elem_count() || !self.is_contiguous() {
            return Err(Error::ShapeMismatch {
                op: "reshape_in_place",
                lhs: self.dims().to_vec(),
                rhs: shape.dims().to_vec(),
            });
        }
        self.strides = shape.contiguous_strides();
        self.shape = shape;
        Ok(())
    }

    pub fn host(&self) -> Result<&HostStorage> {
        match &*self.storage {
            Storage::Host(h) => Ok(h),
            Storage::Device(b) => Err(Error::WrongDevice {
                op: "host access",
                got: b.device().to_string(),
                want: "cpu".into(),
            }),
        }
    }
    pub fn host_mut(&mut self, op: &'static str) -> Result<&mut HostStorage> {
        match self.storage_mut(op)? {
            Storage::Host(h) => Ok(h),
            Storage::Device(b) => Err(Error::WrongDevice {
                op,
                got: b.device().to_string(),
                want: "cpu".into(),
            }),
        }
    }
    /// The contiguous f32 elements of this (host, contiguous) tensor.
    pub fn as_f32(&self) -> Result<&[f32]> {
        self.require_contiguous("as_f32")?;
        match self.host()? {
            HostStorage::F32(v) => Ok(&v[self.offset..self.offset + self.elem_count()]),
            h => Err(Error::DTypeMismatch {
                op: "as_f32",
                lhs: h.dtype(),
                rhs: DType::F32,
            }),
        }
    }
    pub fn as_f32_mut(&mut self) -> Result<&mut [f32]> {
        self.require_contiguous("as_f32_mut")?;
        let (o, n) = (self.offset, self.elem_count());
        match self.host_mut("as_f32_mut")? {
            HostStorage::F32(v) => Ok(&mut v[o..o + n]),
            h => Err(Error::DTypeMismatch {
                op: "as_f32_mut",
                lhs: h.dtype(),
                rhs: DType::F32,
            }),
        }
    }
    pub fn as_u32(&self) -> Result<&[u32]> {
        self.require_contiguous("as_u32")?;
        match self.host()? {
            HostStorage::U32(v) => Ok(&v[self.offset..self.offset + self.elem_count()]),
            h => Err(Error::DTypeMismatch {
                op: "as_u32",
                lhs: h.dtype(),
                rhs: DType::U32,
            }),
        }
    }
    pub fn require_contiguous(&self, op: &'static str) -> Result<()> {
        if self.is_contiguous() {
            Ok(())
        } else {
            Err(Error::NotContiguous { op })
        }
    }

    /// Flat storage index of each element in row-major order of the view.
    pub fn strided_indices(&self) -> impl Iterator<Item = usize> + '_ {
        let dims = self.dims().to_vec();
        let n = self.elem_count();
        let mut idx = vec![0usize; dims.len()];
        let mut pos = self.offset;
        let mut left = n;
        std::iter::from_fn(move || {
            if left == 0 {
                return None;
            }
            let cur = pos;
            left -= 1;
            for d in (0..dims.len()).rev() {
                idx[d] += 1;
                pos += self.strides[d];
                if idx[d] < dims[d] {
                    break;
                }
                pos -= self.strides[d] * dims[d];
                idx[d] = 0;
            }
            Some(cur)
        })
    }

    /// All elements as f32 in row-major order of the view (host tensors only).
    pub fn to_f32_vec(&self) -> Result<Vec<f32>> {
        let h = self.host()?;
        let row_len = match h {
            // Scales are per row of the underlying storage, whose row length is the
            // contiguous last dimension.
            HostStorage::I8 { data, scales } => data.len() / scales.len().max(1),
            _ => 1,
        };
        if self.is_contiguous() {
            let o = self.offset;
            if let HostStorage::F32(v) = h {
                return Ok(v[o..o + self.elem_count()].to_vec());
            }
            return Ok((o..o + self.elem_count())
                .map(|i| h.get_f32(i, row_len))
                .collect());
        }
        Ok(self
            .strided_indices()
            .map(|i| h.get_f32(i, row_len))
            .collect())
    }
    /// All elements as u32 ids in row-major order (host u32 tensors only).
    pub fn to_u32_vec(&self) -> Result<Vec<u32>> {
        match self.host()? {
            HostStorage::U32(v) => Ok(self.strided_indices().map(|i| v[i]).collect()),
            h => Err(Error::DTypeMismatch {
                op: "to_u32_vec",
                lhs: h.dtype(),
                rhs: DType::U32,
            }),
        }
    }
    /// A contiguous host copy (no copy if already contiguous and at offset 0 of a same-size storage).
    pub fn contiguous(&self) -> Result<Tensor> {
        if self.is_contiguous() {
            return Ok(self.clone());
        }
        let h = self.host()?;
        let out = match h {
            HostStorage::F32(v) => HostStorage::F32(self.strided_indices().map(|i| v[i]).collect()),
            HostStorage::F16(v) => HostStorage::F16(self.strided_indices().map(|i| v[i]).collect()),
            HostStorage::BF16(v) => {
                HostStorage::BF16(self.strided_indices().map(|i| v[i]).collect())
            }
            HostStorage::U32(v) => HostStorage::U32(self.strided_indices().map(|i| v[i]).collect()),
            HostStorage::I8 { .. } => {
                return Err(Error::UnsupportedDType {
                    op: "contiguous",
                    dtype: DType::I8,
                    device: "cpu".into(),
                })
            }
        };
        Tensor::from_host(out, self.shape)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn views_share_storage_and_index_correctly() {
        let t = Tensor::from_f32((0..24).map(|x| x as f32).collect(), [2, 3, 4]).unwrap();
        let n = t.narrow(1, 1, 2).unwrap();
        assert_eq!(n.dims(), &[2, 2, 4]);
        assert!(!n.is_contiguous());
        let v = n.to_f32_vec().unwrap();
        assert_eq!(&v[..4], &[4.0, 5.0, 6.0, 7.0]);
        assert_eq!(&v[8..12], &[16.0, 17.0, 18.0, 19.0]);
        let tr = t.transpose(1, 2).unwrap();
        assert_eq!(tr.dims(), &[2, 4, 3]);
        let v = tr.to_f32_vec().unwrap();
        assert_eq!(&v[..3], &[0.0, 4.0, 8.0]);
        let c = tr.contiguous().unwrap();
        assert!(c.is_contiguous());
        assert_eq!(c.to_f32_vec().unwrap(), v);
    }

    #[test]
    fn writing_a_shared_tensor_is_refused() {
        let mut t = Tensor::zeros([2, 2], DType::F32);
        let view = t.narrow(0, 0, 1).unwrap();
        assert!(t.as_f32_mut().is_err());
        drop(view);
        assert!(t.as_f32_mut().is_ok());
    }

    #[test]
    fn int8_elements_dequantise_with_their_row_scale() {
        let t = Tensor::from_i8(vec![1, 2, 3, 4], vec![0.5, 2.0], [2, 2]).unwrap();
        assert_eq!(t.to_f32_vec().unwrap(), vec![0.5, 1.0, 6.0, 8.0]);
        assert!(Tensor::from_i8(vec![1, 2, 3, 4], vec![0.5], [2, 2]).is_err());
    }
}
