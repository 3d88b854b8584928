//! `attention_at` and `write_rows_at`: the kernels read `(q_offset, kv_len)` /
//! the start row from a u32 tensor on the device, which a recorded decode step
//! (a CUDA graph) needs because its launch arguments are frozen. One positions
//! tensor is refilled with `copy_from_host` and the same calls run at several
//! positions, as a replayed step would. Checked against the CPU op at the same
//! positions (every path; `TOL_REDUCE`, or `tol_tc` for f16 operands) and
//! bit-for-bit against the device's own `attention` with the positions as
//! arguments where both run the same kernel with the same launch (Tiled,
//! TensorCore; SplitKv plans its splits for the whole cache instead).

mod common;

use common::*;
use encdec_core::backend::RelativeBiasSpec;
use encdec_core::testing::random_normal;
use encdec_core::{AttentionParams, Backend, DType, Tensor};
use encdec_cuda::AttentionPath;

fn positions(q_offset: usize, kv_len: usize) -> Tensor {
    Tensor::from_u32(vec![q_offset as u32, kv_len as u32], [2]).unwrap()
}

/// Decoder self-attention over a cache of `tcap` rows at several steps: Tq
/// rows at q_offset attend to kv_len = q_offset + tq keys, causal, T5's
/// relative bias (causal buckets), a key mask and beams (kv_index), or not;
/// over f32 caches and half-precision (f16/bf16) ones, which the CPU op
/// widens (so TOL_REDUCE, as f32). With half K/V, Auto is offered the tensor
/// cores (operand dtype) and must not take them (they read f32 K/V only).
#[test]
fn attention_at_matches_the_cpu_at_every_position() {
    let g = gpu_or_skip!("attention_at_matches_the_cpu_at_every_position");
    let mut f = Failures::default();
    // (batch, tq, tcap, heads, head_dim, relative bias, mask + beams)
    let cases = [
        (3usize, 1usize, 37usize, 2usize, 64usize, true, false),
        (4, 1, 150, 3, 33, false, true),
        (2, 1, 300, 1, 128, true, true),
        (2, 5, 40, 2, 64, true, false),
        (1, 3, 19, 4, 8, false, true),
    ];
    for (kv_dtype, (ci, &(b, tq, tcap, h, d, rel, masked))) in [DType::F32, DType::F16, DType::BF16]
        .into_iter()
        .flat_map(|dt| cases.iter().enumerate().map(move |c| (dt, c)))
    {
        let hd = h * d;
        let seed = 700 + ci as u64 * 10;
        let qh = host(random_normal(seed, b * tq * hd, 1.0), &[b, tq, hd]);
        let kv = |s| {
            host_as(
                random_normal(s, b * tcap * hd, 1.0),
                &[b, tcap, hd],
                kv_dtype,
            )
        };
        let (kh, vh) = (kv(seed + 1), kv(seed + 2));
        let (qd, kd, vd) = (up(&g, &qh), up(&g, &kh), up(&g, &vh));
        let th = host(random_normal(seed + 3, 32 * h, 2.0), &[32, h]);
        let td = up(&g, &th);
        let mh = masked.then(|| {
            let mut m = vec![0.0f32; b * tcap];
            for (i, v) in m.iter_mut().enumerate() {
                if i % 7 == 3 {
                    *v = f32::MIN;
                }
            }
            host(m, &[b, tcap])
        });
        let md = mh.as_ref().map(|m| up(&g, m));
        let beams: Vec<u32> = (0..b as u32).rev().collect();
        let ih = masked.then(|| Tensor::from_u32(beams.clone(), [b]).unwrap());
        let id = ih.as_ref().map(|i| up(&g, i));
        let spec = |table| RelativeBiasSpec {
            table,
            num_buckets: 32,
            max_distance: 128,
            bidirectional: false,
        };
        let params = |mask, ix, table, q_offset, kv_len, operand_dtype| AttentionParams {
            num_heads: h,
            head_dim: d,
            scale: if rel { 1.0 } else { 1.0 / (d as f32).sqrt() },
            causal: true,
            q_offset,
            kv_len,
            key_mask: mask,
            position_bias: None,
            relative_bias: if rel { Some(spec(table)) } else { None },
            kv_index: ix,
            operand_dtype,
        };
        let mut pos_d = up(&g, &positions(0, tq));
        let steps = [0, 1, tcap / 2, tcap - tq];
        for &q_offset in &steps {
            let kv_len = q_offset + tq;
            g.copy_from_host(&positions(q_offset, kv_len), &mut pos_d)
                .unwrap();
            let mut want = Tensor::zeros([b, tq, hd], DType::F32);
            cpu()
                .attention(
                    &qh,
                    &kh,
                    &vh,
                    &params(mh.as_ref(), ih.as_ref(), &th, q_offset, kv_len, DType::F32),
                    &mut want,
                )
                .unwrap();
            let want = want.to_f32_vec().unwrap();
            let half_kv = kv_dtype != DType::F32;
            let tc = tq > 1 && (d == 64 || d == 128) && !half_kv;
            let mut paths = vec![
                (
                    AttentionPath::Auto,
                    if half_kv { kv_dtype } else { DType::F32 },
                ),
                (AttentionPath::Tiled, DType::F32),
                (AttentionPath::SplitKv, DType::F32),
            ];
            if tc {
                paths.push((AttentionPath::TensorCore, DType::F16));
            }
            for (path, operand) in paths {
                g.set_attention_path(path);
                let what = format!(
                    "{kv_dtype} K/V, case {ci} (b={b} tq={tq} tcap={tcap} H={h} D={d} rel={rel} \
                     masked={masked}) q_offset={q_offset} path={path:?}"
                );
                // The host view of the positions is deliberately stale: the
                // backend must use the tensor's values.
                let stale = params(md.as_ref(), id.as_ref(), &td, 0, tq, operand);
                let mut got = poisoned(&g, &[b, tq, hd]);
                if let Err(e) = g.attention_at(&qd, &kd, &vd, &stale, &pos_d, &mut got) {
                    f.push(format!("{what}: {e}"));
                    continue;
                }
                let got = down(&g, &got);
                let tol = if path == AttentionPath::TensorCore {
                    tol_tc(d)
                } else {
                    TOL_REDUCE
                };
                f.check(&what, &got, &want, tol);
                // (Auto with half K/V and Tq > 1: the tiled kernel, bit for bit)
                let tiled_auto = path == AttentionPath::Auto && half_kv && tq > 1;
                if matches!(path, AttentionPath::Tiled | AttentionPath::TensorCore) || tiled_auto {
                    let direct = params(md.as_ref(), id.as_ref(), &td, q_offset, kv_len, operand);
                    let mut same = poisoned(&g, &[b, tq, hd]);
                    match g.attention(&qd, &kd, &vd, &direct, &mut same) {
                        Ok(()) => f.exact(&format!("{what} vs attention"), &got, &down(&g, &same)),
                        Err(e) => f.push(format!("{what} (attention): {e}")),
                    }
                }
            }
        }
    }
    f.finish("attention_at");
}

#[test]
fn write_rows_at_writes_the_row_the_tensor_names() {
    let g = gpu_or_skip!("write_rows_at_writes_the_row_the_tensor_names");
    let (b, tcap, c) = (3, 11, 37);
    let mut want = host(random_normal(1, b * tcap * c, 1.0), &[b, tcap, c]);
    let mut got = up(&g, &want);
    let mut pos_d = up(&g, &positions(0, 1));
    for (i, start) in [0usize, 4, 10, 5].into_iter().enumerate() {
        let src = host(random_normal(10 + i as u64, b * c, 1.0), &[b, 1, c]);
        g.copy_from_host(&positions(start, start + 1), &mut pos_d)
            .unwrap();
        g.write_rows_at(&up(&g, &src), &mut got, &pos_d).unwrap();
        cpu().write_rows(&src, &mut want, start).unwrap();
        check_exact(
            &format!("write_rows_at start={start}"),
            &down(&g, &got),
            &want.to_f32_vec().unwrap(),
        );
    }
    // A start whose rows do not fit is refused on the host, like write_rows.
    g.copy_from_host(&positions(tcap, tcap + 1), &mut pos_d)
        .unwrap();
    let src = up(&g, &host(vec![1.0; b * c], &[b, 1, c]));
    let e = g.write_rows_at(&src, &mut got, &pos_d).unwrap_err();
    assert!(e.to_string().contains("do not fit"), "{e}");
    // Positions of the wrong shape or dtype.
    let three = up(&g, &Tensor::from_u32(vec![0, 1, 2], [3]).unwrap());
    assert!(g.write_rows_at(&src, &mut got, &three).is_err());
    let floats = up(&g, &host(vec![0.0, 1.0], &[2]));
    assert!(g.write_rows_at(&src, &mut got, &floats).is_err());
}

#[test]
fn attention_at_refuses_what_attention_refuses() {
    let g = gpu_or_skip!("attention_at_refuses_what_attention_refuses");
    let (b, tq, tcap, h, d) = (1, 1, 8, 2, 8);
    let q = up(
        &g,
        &host(random_normal(1, b * tq * h * d, 1.0), &[b, tq, h * d]),
    );
    let k = up(
        &g,
        &host(random_normal(2, b * tcap * h * d, 1.0), &[b, tcap, h * d]),
    );
    let mut out = poisoned(&g, &[b, tq, h * d]);
    let p = AttentionParams {
        num_heads: h,
        head_dim: d,
        scale: 1.0,
        causal: true,
        q_offset: 0,
        kv_len: 1,
        key_mask: None,
        position_bias: None,
        relative_bias: None,
        kv_index: None,
        operand_dtype: DType::F32,
    };
    // kv_len past the cache.
    let over = up(&g, &positions(tcap, tcap + 1));
    let e = g.attention_at(&q, &k, &k, &p, &over, &mut out).unwrap_err();
    assert!(e.to_string().contains("kv_len"), "{e}");
    // A position bias, whose shape would depend on kv_len.
    let pb = up(&g, &host(vec![0.0; h * tq], &[h, tq, 1]));
    let ok = up(&g, &positions(0, 1));
    let with_bias = AttentionParams {
        position_bias: Some(&pb),
        ..p
    };
    let e = g
        .attention_at(&q, &k, &k, &with_bias, &ok, &mut out)
        .unwrap_err();
    assert!(e.to_string().contains("position_bias"), "{e}");
    // Positions of the wrong shape.
    let three = up(&g, &Tensor::from_u32(vec![0, 1, 2], [3]).unwrap());
    assert!(g.attention_at(&q, &k, &k, &p, &three, &mut out).is_err());
    g.attention_at(&q, &k, &k, &p, &ok, &mut out).unwrap();
}
