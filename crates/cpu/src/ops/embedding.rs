//! Embedding gather: `out[i, :] = table[ids[i], :] * scale`, table f32, f16,
//! bf16 or int8 (`q * row_scale`), out f32.

use encdec_core::{Error, Result};
use half::slice::HalfFloatSliceExt;

use super::elementwise::scale_chunk;
use super::gemm::Weights;
use crate::isa::Isa;
use rayon::prelude::*;

/// Rows of a `Weights` table (all its dtypes hold `len / cols` rows).
pub fn table_rows(table: &Weights, cols: usize) -> usize {
    let len = match table {
        Weights::F32(v) => v.len(),
        Weights::F16(v) => v.len(),
        Weights::BF16(v) => v.len(),
        Weights::I8 { data, .. } => data.len(),
    };
    len.checked_div(cols).unwrap_or(0)
}

/// Element `(row, c)` of the table as f64.
fn elem(table: &Weights, cols: usize, row: usize, c: usize) -> f64 {
    let i = row * cols + c;
    match table {
        Weights::F32(v) => v[i] as f64,
        Weights::F16(v) => v[i].to_f64(),
        Weights::BF16(v) => v[i].to_f64(),
        Weights::I8 { data, scales } => data[i] as f64 * scales[row] as f64,
    }
}

/// Plain loops in f64. Panics on an id out of range (the reference trusts its input).
pub fn embedding_reference(ids: &[u32], table: Weights, cols: usize, scale: f32, out: &mut [f32]) {
    for (i, &id) in ids.iter().enumerate() {
        for c in 0..cols {
            out[i * cols + c] = (elem(&table, cols, id as usize, c) * scale as f64) as f32;
        }
    }
}

/// One output row: convert the table row to f32, then scale.
fn gather_row(isa: Isa, table: &Weights, cols: usize, id: usize, scale: f32, out: &mut [f32]) {
    let r = id * cols..(id + 1) * cols;
    match table {
        Weights::F32(v) => out.copy_from_slice(&v[r]),
        // `half` converts with F16C/NEON when the CPU has it.
        Weights::F16(v) => v[r].convert_to_f32_slice(out),
        Weights::BF16(v) => v[r].convert_to_f32_slice(out),
        Weights::I8 { data, scales } => {
            let s = scales[id];
            for (o, &q) in out.iter_mut().zip(&data[r]) {
                *o = q as f32 * s;
            }
        }
    }
    if scale != 1.0 {
        scale_chunk(isa, out, scale);
    }
}

/// Gathers rows of `table` (`[vocab, cols]`) into `out` (`ids.len() * cols`).
/// An id `>= vocab` is an error naming the id and the vocabulary size.
pub fn embedding(
    isa: Isa,
    ids: &[u32],
    table: Weights,
    cols: usize,
    scale: f32,
    out: &mut [f32],
) -> Result<()> {
    let vocab = table_rows(&table, cols);
    if let Some(&id) = ids.iter().find(|&&id| id as usize >= vocab) {
        return Err(Error::Invalid(format!(
            "embedding: token id {id} is out of range for a vocabulary of {vocab}"
        )));
    }
    if cols == 0 {
        return Ok(());
    }
    if super::par::worth_parallel(out.len()) {
        out.par_chunks_mut(cols)
            .zip(ids.par_iter())
            .for_each(|(o, &id)| gather_row(isa, &table, cols, id as usize, scale, o));
    } else {
        for (o, &id) in out.chunks_mut(cols).zip(ids) {
            gather_row(isa, &table, cols, id as usize, scale, o);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::isa;
    use encdec_core::testing::{compare, random_vec, Tol};
    use half::{bf16, f16};

    #[test]
    fn embedding_matches_reference_for_every_dtype_and_isa() {
        let (vocab, cols) = (37, 33);
        let t = random_vec(1, vocab * cols);
        let t16: Vec<f16> = t.iter().map(|&x| f16::from_f32(x)).collect();
        let tb: Vec<bf16> = t.iter().map(|&x| bf16::from_f32(x)).collect();
        let q: Vec<i8> = t.iter().map(|&x| (x * 127.0) as i8).collect();
        let sc = random_vec(2, vocab);
        let tables = [
            Weights::F32(&t),
            Weights::F16(&t16),
            Weights::BF16(&tb),
            Weights::I8 {
                data: &q,
                scales: &sc,
            },
        ];
        let ids = [0u32, 36, 5, 5, 17];
        for isa in isa::available() {
            for table in tables {
                for scale in [1.0f32, 22.627417] {
                    let mut want = vec![0.0; ids.len() * cols];
                    embedding_reference(&ids, table, cols, scale, &mut want);
                    let mut got = vec![f32::NAN; ids.len() * cols];
                    embedding(isa, &ids, table, cols, scale, &mut got).unwrap();
                    let w: Vec<f64> = want.iter().map(|&x| x as f64).collect();
                    compare(&format!("embedding {}", isa.name()), &got, &w, Tol::F32).unwrap();
                }
            }
        }
    }

    #[test]
    fn out_of_range_ids_are_an_error_naming_id_and_vocab() {
        let t = vec![0.0f32; 10 * 4];
        let mut out = vec![0.0; 8];
        let e = embedding(isa::active(), &[1, 10], Weights::F32(&t), 4, 1.0, &mut out)
            .unwrap_err()
            .to_string();
        assert!(e.contains("10") && e.contains("vocabulary of 10"), "{e}");
    }
}
