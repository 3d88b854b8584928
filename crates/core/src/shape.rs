//! Tensor shapes, kept inline: making a view (narrow, reshape, a clone for
//! upload) must not touch the heap, or the decode loop would allocate every step.

use std::fmt;
use std::ops::{Deref, DerefMut};

/// Most dimensions a tensor can have (models use at most 4).
pub const MAX_RANK: usize = 6;

/// Up to [`MAX_RANK`] sizes or strides, stored inline.
#[derive(Clone, Copy, Default)]
pub struct Dims {
    len: usize,
    d: [usize; MAX_RANK],
}

impl Dims {
    /// `d` inline; panics past [`MAX_RANK`] dimensions (input from files is
    /// checked against it before a tensor is made).
    pub fn new(d: &[usize]) -> Self {
        assert!(
            d.len() <= MAX_RANK,
            "a tensor has at most {MAX_RANK} dimensions, got {}",
            d.len()
        );
        let mut out = Dims {
            len: d.len(),
            d: [0; MAX_RANK],
        };
        out.d[..d.len()].copy_from_slice(d);
        out
    }
}

impl Deref for Dims {
    type Target = [usize];
    fn deref(&self) -> &[usize] {
        &self.d[..self.len]
    }
}
impl DerefMut for Dims {
    fn deref_mut(&mut self) -> &mut [usize] {
        &mut self.d[..self.len]
    }
}
impl PartialEq for Dims {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}
impl Eq for Dims {}
impl std::hash::Hash for Dims {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        (**self).hash(state)
    }
}
impl fmt::Debug for Dims {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        (**self).fmt(f)
    }
}

/// Dimensions of a tensor, outermost first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Shape(pub Dims);

impl Shape {
    pub fn dims(&self) -> &[usize] {
        &self.0
    }
    pub fn rank(&self) -> usize {
        self.0.len()
    }
    pub fn elem_count(&self) -> usize {
        self.0.iter().product()
    }
    /// Row-major (C) strides in elements.
    pub fn contiguous_strides(&self) -> Dims {
        let mut strides = self.0;
        let n = strides.len();
        if n > 0 {
            strides[n - 1] = 1;
        }
        for i in (0..n.saturating_sub(1)).rev() {
            strides[i] = strides[i + 1] * self.0[i + 1];
        }
        strides
    }
}

impl From<&[usize]> for Shape {
    fn from(d: &[usize]) -> Self {
        Shape(Dims::new(d))
    }
}
impl From<&Vec<usize>> for Shape {
    fn from(d: &Vec<usize>) -> Self {
        Shape(Dims::new(d))
    }
}
impl From<Vec<usize>> for Shape {
    fn from(d: Vec<usize>) -> Self {
        Shape(Dims::new(&d))
    }
}
impl<const N: usize> From<[usize; N]> for Shape {
    fn from(d: [usize; N]) -> Self {
        Shape(Dims::new(&d))
    }
}
impl<const N: usize> From<&[usize; N]> for Shape {
    fn from(d: &[usize; N]) -> Self {
        Shape(Dims::new(d))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strides_are_row_major_and_views_compare_by_their_dims() {
        let s = Shape::from([2, 3, 4]);
        assert_eq!(&*s.contiguous_strides(), &[12, 4, 1]);
        assert_eq!(Shape::from([5]).contiguous_strides().len(), 1);
        assert_eq!(Shape::from(vec![]).elem_count(), 1);
        assert_eq!(Shape::from([2, 3]), Shape::from(vec![2, 3]));
        assert_ne!(Shape::from([2, 3]), Shape::from([2, 3, 1]));
        assert_eq!(format!("{:?}", Shape::from([2, 3]).0), "[2, 3]");
    }
}
