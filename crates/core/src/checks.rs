//! Argument checks that every backend makes the same way: shapes, lengths,
//! ranks and index ranges, which do not depend on where the data lives.
//!
//! A backend still checks device, dtype and contiguity itself (that needs its
//! storage) and calls these in between, in the order the CPU backend (the
//! reference) does, so every backend reports the same error, variant and
//! message, for the same bad call. Nothing here allocates unless it returns an
//! error: these run on every op of a decode step.

use crate::backend::RelativeBiasSpec;
use crate::{AttentionParams, DType, Error, NormKind, Result, Shape, Tensor};

/// `op`'s [`Error::ShapeMismatch`] between `lhs` and `rhs`.
pub fn shape_mismatch(op: &'static str, lhs: &[usize], rhs: &[usize]) -> Error {
    Error::ShapeMismatch {
        op,
        lhs: lhs.to_vec(),
        rhs: rhs.to_vec(),
    }
}

/// `a` and `b` hold the same number of elements in rows of the same length.
pub fn same_count(op: &'static str, a: &Tensor, b: &Tensor) -> Result<()> {
    if a.elem_count() != b.elem_count() || a.cols() != b.cols() {
        return Err(shape_mismatch(op, a.dims(), b.dims()));
    }
    Ok(())
}

/// `a` and `b` have the same dims and dtype (a copy between them is exact).
pub fn same_shape_and_dtype(op: &'static str, a: &Tensor, b: &Tensor) -> Result<()> {
    if a.dims() != b.dims() {
        return Err(shape_mismatch(op, a.dims(), b.dims()));
    }
    if a.dtype() != b.dtype() {
        return Err(Error::DTypeMismatch {
            op,
            lhs: a.dtype(),
            rhs: b.dtype(),
        });
    }
    Ok(())
}

/// The `[.., C]` rule of add/mul_assign: y has x's rows of C, or is one row of C.
pub fn broadcast(op: &'static str, x: &Tensor, y: &Tensor) -> Result<()> {
    let same_rows = y.elem_count() == x.elem_count();
    if y.cols() == x.cols() && (same_rows || y.elem_count() == x.cols()) {
        Ok(())
    } else {
        Err(shape_mismatch(op, x.dims(), y.dims()))
    }
}

/// A bias or norm weight holds `n` elements.
pub fn vector_len(op: &'static str, t: &Tensor, n: usize) -> Result<()> {
    if t.elem_count() != n {
        return Err(shape_mismatch(op, t.dims(), &[n]));
    }
    Ok(())
}

/// An int8 weight view starts at a quantised row and its rows are whole ones
/// (`quantised_row_len` long), so each row has exactly one scale. Returns the
/// row length.
pub fn int8_weight_rows(op: &'static str, t: &Tensor, quantised_row_len: usize) -> Result<usize> {
    let cols = t.cols().max(1);
    if quantised_row_len != cols || t.offset() % cols != 0 {
        return Err(Error::Invalid(format!(
            "{op}: int8 weight view {:?} does not cover whole quantised rows",
            t.dims()
        )));
    }
    Ok(cols)
}

/// The last element of a strided view lies within `storage_len` elements
/// (strided views are read in place, so a bad stride would read out of bounds).
pub fn view_in_bounds(op: &'static str, t: &Tensor, storage_len: usize) -> Result<()> {
    if t.elem_count() == 0 {
        return Ok(());
    }
    let (d, s) = (t.dims(), t.strides());
    let last = t.offset() + d.iter().zip(s).map(|(&d, &s)| (d - 1) * s).sum::<usize>();
    if last >= storage_len {
        return Err(Error::Invalid(format!(
            "{op}: view {d:?} with strides {s:?} overruns its storage"
        )));
    }
    Ok(())
}

/// An attention input: `[batch, time, heads*head_dim]`, contiguous in the last
/// dim (batch and time may be strided), within its storage.
pub fn attention_view(op: &'static str, t: &Tensor, storage_len: usize) -> Result<()> {
    let (d, s) = (t.dims(), t.strides());
    if d.len() != 3 {
        return Err(Error::Invalid(format!(
            "{op}: expected a rank-3 tensor [batch, time, heads*head_dim], got {d:?}"
        )));
    }
    if d[2] > 1 && s[2] != 1 {
        return Err(Error::NotContiguous { op });
    }
    view_in_bounds(op, t, storage_len)
}

// ---- per op ----------------------------------------------------------------

/// Ids convert to nothing else, and nothing converts to ids.
pub fn cast(from: DType, to: DType) -> Result<()> {
    if (from == DType::U32) != (to == DType::U32) {
        return Err(Error::Invalid(format!(
            "cast: cannot convert {from} to {to} (ids convert to nothing else)"
        )));
    }
    Ok(())
}

/// `src [B, T, C]` fits into `dst [B, Tcap, C]` from row `start`; same dtype,
/// or f32 into f16/bf16 (a converting KV-cache write). Returns `[B, T, Tcap, C]`.
pub fn write_rows(src: &Tensor, dst: &Tensor, start: usize) -> Result<[usize; 4]> {
    const OP: &str = "write_rows";
    let (s, d) = (src.dims(), dst.dims());
    if s.len() != 3 || d.len() != 3 || s[0] != d[0] || s[2] != d[2] {
        return Err(shape_mismatch(OP, s, d));
    }
    let (batch, t, tcap, c) = (s[0], s[1], d[1], s[2]);
    if start + t > tcap {
        return Err(Error::Invalid(format!(
            "write_rows: rows {start}..{} do not fit a cache of {tcap} (src {s:?}, dst {d:?})",
            start + t
        )));
    }
    let converting = src.dtype() == DType::F32 && matches!(dst.dtype(), DType::F16 | DType::BF16);
    if !converting {
        same_dtype(OP, src, dst)?;
    }
    Ok([batch, t, tcap, c])
}

/// The `(q_offset, kv_len)` of a host u32 `[2]` positions tensor
/// ([`Backend::attention_at`](crate::Backend::attention_at)).
pub fn positions(t: &Tensor) -> Result<(usize, usize)> {
    if t.dtype() != DType::U32 || t.dims() != [2] {
        return Err(Error::Invalid(format!(
            "positions must be u32 [2] (q_offset, kv_len), got {} {:?}",
            t.dtype(),
            t.dims()
        )));
    }
    let v = match t.host()? {
        crate::HostStorage::U32(v) => v,
        h => {
            return Err(Error::DTypeMismatch {
                op: "positions",
                lhs: h.dtype(),
                rhs: DType::U32,
            })
        }
    };
    // Rank 1: no index vector to allocate (the decode loop reads it every step).
    let at = |i: usize| v[t.offset() + i * t.strides()[0]] as usize;
    Ok((at(0), at(1)))
}

/// `params` with the q_offset and kv_len of the host positions tensor `t`.
pub fn attention_at<'a>(p: &AttentionParams<'a>, t: &Tensor) -> Result<AttentionParams<'a>> {
    if p.position_bias.is_some() {
        return Err(Error::Invalid(
            "attention_at: position_bias depends on kv_len; use relative_bias".into(),
        ));
    }
    let (q_offset, kv_len) = positions(t)?;
    Ok(AttentionParams {
        q_offset,
        kv_len,
        ..*p
    })
}

/// `dst` is `index.len()` rows of `src`'s shape, same dtype, and every index
/// names a row of `src`.
pub fn index_select(src: &Tensor, index: &[u32], dst: &Tensor) -> Result<()> {
    const OP: &str = "index_select";
    let (s, d) = (src.dims(), dst.dims());
    if s.is_empty() || d.len() != s.len() || s[1..] != d[1..] || d[0] != index.len() {
        return Err(shape_mismatch(OP, s, d));
    }
    same_dtype(OP, src, dst)?;
    if let Some(&bad) = index.iter().find(|&&i| i as usize >= s[0]) {
        return Err(Error::Invalid(format!(
            "index_select: index {bad} is out of range for {} rows (src {s:?})",
            s[0]
        )));
    }
    Ok(())
}

fn same_dtype(op: &'static str, a: &Tensor, b: &Tensor) -> Result<()> {
    if a.dtype() != b.dtype() {
        return Err(Error::DTypeMismatch {
            op,
            lhs: a.dtype(),
            rhs: b.dtype(),
        });
    }
    Ok(())
}

/// f32, f16 or bf16: the dtypes an activation (a linear's x or out, an
/// attention operand) may have.
pub fn is_float(dtype: DType) -> bool {
    matches!(dtype, DType::F32 | DType::F16 | DType::BF16)
}

/// A linear's `x` (`what` = "x") or `out` is f32, f16 or bf16.
pub fn linear_activation(op: &'static str, what: &str, t: &Tensor) -> Result<()> {
    if !is_float(t.dtype()) {
        return Err(Error::Invalid(format!(
            "{op}: {what} must be f32, f16 or bf16, got {}",
            t.dtype()
        )));
    }
    Ok(())
}

/// `w` is `[N, K]` for x `[.., K]`. Returns `[M, N, K]`, M the rows of x.
pub fn linear_weight(x: &Tensor, w: &Tensor) -> Result<[usize; 3]> {
    let (m, k) = (x.rows(), x.cols());
    if w.rank() != 2 || w.dim(1) != k {
        return Err(shape_mismatch("linear", x.dims(), w.dims()));
    }
    Ok([m, w.dim(0), k])
}

/// `linear_gated`: `w_gate` and `w_up` are both `[N, K]` for x `[.., K]`, of
/// one dtype. Returns `[M, N, K]`.
pub fn linear_gated(x: &Tensor, w_gate: &Tensor, w_up: &Tensor) -> Result<[usize; 3]> {
    const OP: &str = "linear_gated";
    if w_gate.dims() != w_up.dims() {
        return Err(shape_mismatch(OP, w_gate.dims(), w_up.dims()));
    }
    if w_gate.dtype() != w_up.dtype() {
        return Err(Error::DTypeMismatch {
            op: OP,
            lhs: w_gate.dtype(),
            rhs: w_up.dtype(),
        });
    }
    linear_weight(x, w_gate)
}

/// `out` holds x's rows of `n`.
pub fn linear_out(x: &Tensor, n: usize, out: &Tensor) -> Result<()> {
    if out.elem_count() != x.rows() * n || out.cols() != n {
        let mut want = x.dims().to_vec();
        if let Some(last) = want.last_mut() {
            *last = n;
        }
        return Err(shape_mismatch("linear", out.dims(), &want));
    }
    Ok(())
}

/// a `[B, M, K]`, b `[B, K, N]`, out `[B, M, N]`. Returns `[B, M, K, N]`.
pub fn batched_matmul(a: &Tensor, b: &Tensor, out: &Tensor) -> Result<[usize; 4]> {
    const OP: &str = "batched_matmul";
    let (ad, bd) = (a.dims(), b.dims());
    if ad.len() != 3 || bd.len() != 3 || ad[0] != bd[0] || ad[2] != bd[1] {
        return Err(shape_mismatch(OP, ad, bd));
    }
    let (batch, m, k, n) = (ad[0], ad[1], ad[2], bd[2]);
    if out.dims() != [batch, m, n] {
        return Err(shape_mismatch(OP, out.dims(), &[batch, m, n]));
    }
    Ok([batch, m, k, n])
}

/// The bias to use: T5's RMS norm has none, so one given with it is an error.
pub fn norm_bias<'a>(
    op: &'static str,
    kind: NormKind,
    bias: Option<&'a Tensor>,
) -> Result<Option<&'a Tensor>> {
    match (kind, bias) {
        (NormKind::RmsNorm, Some(_)) => Err(Error::Invalid(format!(
            "{op}: RMS norm takes no bias (T5LayerNorm has none)"
        ))),
        (_, bias) => Ok(bias),
    }
}

/// The table is `[vocab, dim]`. Returns dim.
pub fn embedding_table(table: &Tensor) -> Result<usize> {
    if table.rank() != 2 {
        return Err(Error::Invalid(format!(
            "embedding: table must be [vocab, dim], got {:?}",
            table.dims()
        )));
    }
    Ok(table.dim(1))
}

/// `out` holds one row of `dim` per id.
pub fn embedding_out(ids: &Tensor, dim: usize, out: &Tensor) -> Result<()> {
    if out.elem_count() != ids.elem_count() * dim || out.cols() != dim {
        let mut want = ids.dims().to_vec();
        want.push(dim);
        return Err(shape_mismatch("embedding", out.dims(), &want));
    }
    Ok(())
}

/// Every id names a row of a table of `vocab` rows.
pub fn embedding_ids(ids: &[u32], vocab: usize) -> Result<()> {
    if let Some(&bad) = ids.iter().find(|&&i| i as usize >= vocab) {
        return Err(Error::Invalid(format!(
            "embedding: token id {bad} is out of range for a vocabulary of {vocab}"
        )));
    }
    Ok(())
}

/// `k` is at most the row length of x.
pub fn topk(x: &Tensor, k: usize) -> Result<()> {
    let c = x.cols();
    if k > c {
        return Err(Error::Invalid(format!(
            "topk: k {k} exceeds the row length {c} (x {:?})",
            x.dims()
        )));
    }
    Ok(())
}

/// `topk_into`: k <= the row length, outputs `[rows, k]` (u32 ids, f32 values).
pub fn topk_into(x: &Tensor, k: usize, ids: &Tensor, vals: &Tensor) -> Result<()> {
    topk(x, k)?;
    let want = [x.rows(), k];
    for (t, dtype) in [(ids, DType::U32), (vals, DType::F32)] {
        if t.dims() != want {
            return Err(Error::ShapeMismatch {
                op: "topk_into",
                lhs: t.dims().to_vec(),
                rhs: want.to_vec(),
            });
        }
        if t.dtype() != dtype {
            return Err(Error::DTypeMismatch {
                op: "topk_into",
                lhs: t.dtype(),
                rhs: dtype,
            });
        }
    }
    if x.dtype() != DType::F32 {
        return Err(Error::DTypeMismatch {
            op: "topk_into",
            lhs: x.dtype(),
            rhs: DType::F32,
        });
    }
    Ok(())
}

/// `scatter_fill`: every index within `x`.
pub fn scatter_fill(x: &Tensor, index: &[u32]) -> Result<()> {
    let n = x.elem_count();
    if let Some(&bad) = index.iter().find(|&&i| i as usize >= n) {
        return Err(Error::Invalid(format!(
            "scatter_fill: index {bad} is out of range for x {:?} ({n} elements)",
            x.dims()
        )));
    }
    Ok(())
}

/// `repetition_penalty`: every index entry in range of x or
/// [`crate::backend::PENALTY_INDEX_UNUSED`].
pub fn repetition_penalty(x: &Tensor, index: &[u32]) -> Result<()> {
    let n = x.elem_count();
    let unused = crate::backend::PENALTY_INDEX_UNUSED;
    if let Some(&bad) = index.iter().find(|&&i| i != unused && i as usize >= n) {
        return Err(Error::Invalid(format!(
            "repetition_penalty: index {bad} is out of range for x {:?} ({n} elements)",
            x.dims()
        )));
    }
    Ok(())
}

/// The reference of `repetition_penalty` (HF's
/// `RepetitionPenaltyLogitsProcessor` on the given positions), after
/// [`repetition_penalty`] checked `index`.
pub fn apply_repetition_penalty(x: &mut [f32], index: &[u32], penalty: f32) {
    for &i in index {
        if i == crate::backend::PENALTY_INDEX_UNUSED {
            continue;
        }
        let s = x[i as usize];
        x[i as usize] = if s < 0.0 { s * penalty } else { s / penalty };
    }
}

/// `softmax_stats`: f32 x, f32 out `[rows, 2]`.
pub fn softmax_stats(x: &Tensor, out: &Tensor) -> Result<()> {
    let want = [x.rows(), 2];
    if out.dims() != want {
        return Err(Error::ShapeMismatch {
            op: "softmax_stats",
            lhs: out.dims().to_vec(),
            rhs: want.to_vec(),
        });
    }
    for t in [x, out] {
        if t.dtype() != DType::F32 {
            return Err(Error::DTypeMismatch {
                op: "softmax_stats",
                lhs: t.dtype(),
                rhs: DType::F32,
            });
        }
    }
    Ok(())
}

// ---- attention -------------------------------------------------------------

/// The sizes of an attention call whose q, k and v agree (from [`attention`]),
/// and the checks of its optional inputs and its output against them.
#[derive(Debug, Clone, Copy)]
pub struct AttentionShape {
    pub batch: usize,
    pub tq: usize,
    /// Rows of k/v (sources); query rows map onto them through `kv_index`.
    pub bkv: usize,
    /// Key slots of k/v, of which the first `kv_len` are used.
    pub tcap: usize,
    heads: usize,
    kv_len: usize,
    q: Shape,
    k: Shape,
}

const ATTN: &str = "attention";

/// q `[B, Tq, H*D]`, k and v `[Bkv, Tcap, H*D]`, `kv_len` in `1..=Tcap`.
/// q is f32, f16 or bf16; k and v are f32, f16 or bf16, both the same
/// (half-precision KV caches and activations: the backends widen each element
/// exactly to f32).
/// Expects rank-3 inputs (see [`attention_view`]).
pub fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    p: &AttentionParams,
) -> Result<AttentionShape> {
    let (qt, kt, vt) = (q.dtype(), k.dtype(), v.dtype());
    if !is_float(qt) || kt != vt || !is_float(kt) {
        return Err(Error::Invalid(format!(
            "attention: q must be f32, f16 or bf16 and k, v both f32, f16 or bf16 \
             (the same dtype), got q {qt}, k {kt}, v {vt}"
        )));
    }
    let hd = p.num_heads * p.head_dim;
    let (qd, kd) = (q.dims(), k.dims());
    if hd == 0 {
        return Err(Error::Invalid(format!(
            "attention: {} heads of dim {}",
            p.num_heads, p.head_dim
        )));
    }
    if qd[2] != hd || kd[2] != hd {
        return Err(shape_mismatch(ATTN, qd, kd));
    }
    if v.dims() != kd {
        return Err(shape_mismatch(ATTN, kd, v.dims()));
    }
    let (batch, tq, bkv, tcap) = (qd[0], qd[1], kd[0], kd[1]);
    if p.kv_len == 0 || p.kv_len > tcap {
        return Err(Error::Invalid(format!(
            "attention: kv_len {} must be in 1..={tcap} (k {kd:?})",
            p.kv_len
        )));
    }
    Ok(AttentionShape {
        batch,
        tq,
        bkv,
        tcap,
        heads: p.num_heads,
        kv_len: p.kv_len,
        q: *q.shape(),
        k: *k.shape(),
    })
}

impl AttentionShape {
    /// The key mask is one row of `Tcap` per kv row.
    pub fn check_key_mask(&self, mask: Option<&Tensor>) -> Result<()> {
        match mask {
            Some(m) if m.elem_count() != self.bkv * self.tcap || m.cols() != self.tcap => {
                Err(shape_mismatch(ATTN, m.dims(), &[self.bkv, self.tcap]))
            }
            _ => Ok(()),
        }
    }

    /// The position bias is `[H, Tq, kv_len]`.
    pub fn check_position_bias(&self, bias: Option<&Tensor>) -> Result<()> {
        let want = [self.heads, self.tq, self.kv_len];
        match bias {
            Some(b) if b.dims() != want => Err(shape_mismatch(ATTN, b.dims(), &want)),
            _ => Ok(()),
        }
    }

    /// The relative bias table is `[num_buckets, H]` with `num_buckets >= 2` and
    /// `max_distance >= 1`, and comes without a `position_bias`.
    pub fn check_relative_bias(
        &self,
        rel: Option<&RelativeBiasSpec>,
        position_bias: Option<&Tensor>,
    ) -> Result<()> {
        let Some(r) = rel else { return Ok(()) };
        if position_bias.is_some() {
            return Err(Error::Invalid(
                "attention: position_bias and relative_bias are mutually exclusive (give one)"
                    .to_string(),
            ));
        }
        if r.num_buckets < 2 || r.max_distance == 0 {
            return Err(Error::Invalid(format!(
                "attention: relative_bias needs num_buckets >= 2 and max_distance >= 1 (got {} and {})",
                r.num_buckets, r.max_distance
            )));
        }
        let want = [r.num_buckets, self.heads];
        if r.table.dims() != want {
            return Err(shape_mismatch(ATTN, r.table.dims(), &want));
        }
        Ok(())
    }

    /// `kv_index` (the tensor and its ids) names one kv row per query row;
    /// without it each query row reads its own kv row, so there must be enough.
    pub fn check_kv_index(&self, kv_index: Option<(&Tensor, &[u32])>) -> Result<()> {
        match kv_index {
            Some((ix, ids)) => {
                if ids.len() != self.batch {
                    return Err(shape_mismatch(ATTN, ix.dims(), &[self.batch]));
                }
                if let Some(&bad) = ids.iter().find(|&&r| r as usize >= self.bkv) {
                    return Err(Error::Invalid(format!(
                        "attention: kv_index {bad} is out of range for {} kv rows",
                        self.bkv
                    )));
                }
                Ok(())
            }
            None if self.batch > self.bkv => {
                Err(shape_mismatch(ATTN, self.q.dims(), self.k.dims()))
            }
            None => Ok(()),
        }
    }

    /// The output has q's shape and is f32, f16 or bf16.
    pub fn check_out(&self, out: &Tensor) -> Result<()> {
        if out.dims() != self.q.dims() {
            return Err(shape_mismatch(ATTN, out.dims(), self.q.dims()));
        }
        if !is_float(out.dtype()) {
            return Err(Error::Invalid(format!(
                "attention: out must be f32, f16 or bf16, got {}",
                out.dtype()
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(shape: &[usize]) -> Tensor {
        Tensor::zeros(shape, DType::F32)
    }

    #[test]
    fn a_view_may_end_at_its_storage_but_not_past_it() {
        // [2, 3, 4] with the batch stride of a cache of 5 rows: last element 20 + 8 + 3 = 31.
        let cache = t(&[2, 5, 4]);
        let v = cache.narrow(1, 0, 3).unwrap();
        assert!(view_in_bounds("op", &v, 32).is_ok());
        let e = view_in_bounds("op", &v, 31).unwrap_err().to_string();
        assert_eq!(
            e,
            "op: view [2, 3, 4] with strides [20, 4, 1] overruns its storage"
        );
        assert!(view_in_bounds("op", &t(&[0, 4]), 0).is_ok());
        let e = attention_view("attention", &t(&[3, 4]), 12).unwrap_err();
        assert!(e.to_string().contains("expected a rank-3 tensor"), "{e}");
        let tr = cache.transpose(1, 2).unwrap();
        let e = attention_view("attention", &tr, 40).unwrap_err();
        assert!(matches!(e, Error::NotContiguous { op: "attention" }), "{e}");
    }

    #[test]
    fn errors_name_the_op_and_what_is_wrong() {
        let e = write_rows(&t(&[2, 3, 4]), &t(&[2, 5, 4]), 3).unwrap_err();
        assert_eq!(
            e.to_string(),
            "write_rows: rows 3..6 do not fit a cache of 5 (src [2, 3, 4], dst [2, 5, 4])"
        );
        // f32 steps may be rounded into a half cache; nothing else converts.
        let z = |dt| Tensor::zeros(&[2, 5, 4][..], dt);
        for dt in [DType::F16, DType::BF16] {
            assert!(write_rows(&t(&[2, 3, 4]), &z(dt), 2).is_ok());
        }
        for (s, d) in [
            (DType::F16, DType::F32),
            (DType::BF16, DType::F16),
            (DType::F32, DType::I8),
            (DType::F32, DType::U32),
        ] {
            let e = write_rows(&Tensor::zeros(&[2, 3, 4][..], s), &z(d), 0).unwrap_err();
            assert_eq!(
                e.to_string(),
                format!("write_rows: dtype mismatch: {s} vs {d}")
            );
        }
        let e = index_select(&t(&[2, 4]), &[0, 2], &t(&[2, 4])).unwrap_err();
        assert_eq!(
            e.to_string(),
            "index_select: index 2 is out of range for 2 rows (src [2, 4])"
        );
        let e = linear_weight(&t(&[2, 3]), &t(&[2, 4])).unwrap_err();
        assert!(
            matches!(e, Error::ShapeMismatch { op: "linear", .. }),
            "{e}"
        );
        let e = norm_bias("add_norm", NormKind::RmsNorm, Some(&t(&[3]))).unwrap_err();
        assert_eq!(
            e.to_string(),
            "add_norm: RMS norm takes no bias (T5LayerNorm has none)"
        );
        assert!(cast(DType::U32, DType::F32).is_err() && cast(DType::F16, DType::I8).is_ok());
        let e = broadcast("add_assign", &t(&[2, 3]), &t(&[2])).unwrap_err();
        assert_eq!(e.to_string(), "add_assign: shape mismatch: [2, 3] vs [2]");
    }
}
