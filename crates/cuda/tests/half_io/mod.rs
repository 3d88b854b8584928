//! Half activations of the linear ops on the device (`Backend::activation_dtype`),
//! shared by tests/gemm_tc.rs and tests/gemm.rs.
//!
//! The contract: a half x is read as its exact f32 widening and a half out
//! receives the f32 result rounded as `cast` rounds. So for x in f32/f16/bf16
//! and out in f32/f16/bf16, [`check`] compares bit for bit the op on the half
//! x into a half out with the same op on the device's own widening
//! (`cast(x, F32)`) into an f32 out, then the device's `cast(out, half)`: the
//! same kernel path on both sides (the path depends on M, N, K and the weight
//! dtype only), so any difference is the half load or the half store.
//! Outputs start as NaN and a NaN in a result never passes.

#![allow(dead_code)]

use encdec_core::{Activation, DType, Tensor};

use crate::common::{down, host, host_as, poisoned_as, up, Dut, Failures};

pub const FLOATS: [DType; 3] = [DType::F32, DType::F16, DType::BF16];

/// The linear op under test.
#[derive(Debug, Clone, Copy)]
pub enum Op {
    Linear,
    Act(Activation),
    /// `linear_gated` with the second weight as the up projection.
    Gated(Activation),
    /// `linear_add` onto a residual (out f32 only; a half out is an error).
    Add,
}

/// Operands of one case (device tensors; `wu` for [`Op::Gated`]).
pub struct Case<'a> {
    pub m: usize,
    pub k: usize,
    pub n: usize,
    pub w: &'a Tensor,
    pub wu: Option<&'a Tensor>,
    pub bias: Option<&'a Tensor>,
    /// x's values (f32, `[m, k]`), rounded to each x dtype on the host.
    pub x: &'a [f32],
    /// The residual of [`Op::Add`] (`[m, n]`).
    pub residual: &'a [f32],
    /// Places x at this many elements into its buffer (a view whose rows are
    /// not 16-byte aligned when odd: the kernels' element-wise loads).
    pub x_offset: usize,
}

impl Case<'_> {
    /// x as a device tensor of `dtype` (a view `x_offset` elements in).
    fn x_dev(&self, g: &Dut, dtype: DType) -> Tensor {
        let (m, k, o) = (self.m, self.k, self.x_offset);
        let mut v = vec![0.5f32; o];
        v.extend_from_slice(self.x);
        let t = up(g, &host_as(v, &[o + m * k], dtype));
        t.narrow(0, o, m * k).unwrap().reshape([m, k]).unwrap()
    }

    fn run(&self, g: &Dut, op: Op, x: &Tensor, out: &mut Tensor) -> encdec_core::Result<()> {
        match op {
            Op::Linear => g.linear(x, self.w, self.bias, out),
            Op::Act(a) => g.linear_act(x, self.w, self.bias, a, out),
            Op::Gated(a) => g.linear_gated(x, self.w, self.wu.unwrap_or(self.w), a, out),
            Op::Add => g.linear_add(x, self.w, self.bias, out),
        }
    }

    /// An output of `dtype`: NaN, or the residual for [`Op::Add`].
    fn out(&self, g: &Dut, op: Op, dtype: DType) -> Tensor {
        match op {
            Op::Add => up(
                g,
                &host_as(self.residual.to_vec(), &[self.m, self.n], dtype),
            ),
            _ => poisoned_as(g, &[self.m, self.n], dtype),
        }
    }
}

/// Every x dtype and out dtype of `op` on `c`, bit for bit against the op on
/// the widened x then the device cast (see the module doc).
pub fn check(g: &Dut, f: &mut Failures, what: &str, c: &Case, op: Op) {
    let x32 = c.x_dev(g, DType::F32);
    for xdt in FLOATS {
        let x = if xdt == DType::F32 {
            x32.clone()
        } else {
            c.x_dev(g, xdt)
        };
        // An f32 x is its own reference: the GEMV sums an x view that is not
        // 16 B aligned in another order than an aligned copy (its element-wise
        // path), so a cast copy would not be the same input.
        let xw = if xdt == DType::F32 {
            x.clone()
        } else {
            g.cast(&x, DType::F32).unwrap()
        };
        let mut want32 = c.out(g, op, DType::F32);
        if let Err(e) = c.run(g, op, &xw, &mut want32) {
            f.push(format!("{what} {op:?} x={xdt}: reference: {e}"));
            continue;
        }
        for odt in FLOATS {
            let what = format!("{what} {op:?} x={xdt} out={odt}");
            let mut got = c.out(g, op, odt);
            let r = c.run(g, op, &x, &mut got);
            if matches!(op, Op::Add) && odt != DType::F32 {
                if r.is_ok() {
                    f.push(format!("{what}: a half residual must be an error"));
                }
                continue;
            }
            if let Err(e) = r {
                f.push(format!("{what}: {e}"));
                continue;
            }
            let want = if odt == DType::F32 {
                want32.clone()
            } else {
                g.cast(&want32, odt).unwrap()
            };
            let (got, want) = (down(g, &got), down(g, &want));
            if let Some(i) = got.iter().position(|v| v.is_nan()) {
                f.push(format!("{what}: NaN at {i} (unwritten or lost)"));
                continue;
            }
            f.exact(&what, &got, &want);
        }
    }
}

/// Every op of a case with both weights (gate = `w`, up = `wu`).
pub fn check_all(g: &Dut, f: &mut Failures, what: &str, c: &Case) {
    for op in [
        Op::Linear,
        Op::Act(Activation::Gelu),
        Op::Gated(Activation::Silu),
        Op::Add,
    ] {
        check(g, f, what, c, op);
    }
}

/// Random host data for a case: (x, residual).
pub fn data(seed: u64, m: usize, k: usize, n: usize) -> (Vec<f32>, Vec<f32>) {
    use encdec_core::testing::random_normal;
    (
        random_normal(seed, m * k, 1.5),
        random_normal(seed + 1, m * n, 1.0),
    )
}

/// `[n]` bias on the device.
pub fn bias(g: &Dut, seed: u64, n: usize) -> Tensor {
    up(g, &host(encdec_core::testing::random_vec(seed, n), &[n]))
}

/// [`check_all`] on random data from `seed`: x and a residual ([`data`]), a
/// bias, and gate and up weights `[n, k]` of `wdt`; x `x_offset` elements into
/// its buffer.
#[allow(clippy::too_many_arguments)]
pub fn check_random(
    g: &Dut,
    f: &mut Failures,
    what: &str,
    seed: u64,
    [m, k, n]: [usize; 3],
    wdt: DType,
    x_offset: usize,
) {
    use encdec_core::testing::random_normal;
    let (x, residual) = data(seed, m, k, n);
    let bias = bias(g, seed + 2, n);
    let w = up(
        g,
        &host_as(random_normal(seed + 3, n * k, 0.2), &[n, k], wdt),
    );
    let wu = up(
        g,
        &host_as(random_normal(seed + 4, n * k, 0.2), &[n, k], wdt),
    );
    let c = Case {
        m,
        k,
        n,
        w: &w,
        wu: Some(&wu),
        bias: Some(&bias),
        x: &x,
        residual: &residual,
        x_offset,
    };
    check_all(g, f, what, &c);
}
