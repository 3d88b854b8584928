//! kernels/attention.cu (tiled, online softmax) and kernels/decode_attention.cu
//! (split-KV + combine) against the CPU backend, exactly per `AttentionParams`:
//! scale, causal with q_offset (also past kv_len), kv_len < Tcap, key_mask per
//! kv row (padding, and a fully masked row, which is uniform over kv_len),
//! position_bias [H, Tq, kv_len], T5's relative bias from its bucket table
//! (bidirectional and causal, computed in the kernels; also bit-for-bit against
//! the same kernels given the materialised bias), kv_index (beams sharing encoder K/V), q/k/v
//! as strided views of fused projections, head_dim in {8, 33, 64, 100, 128, 256}.
//! Every case runs through the Auto, Tiled and SplitKv paths.
//! Tolerance `TOL_REDUCE` (rel L2 1e-5, abs 1e-5 + rel 1e-4): f32 online
//! softmax against the CPU's two-pass f32 softmax.

mod common;

use common::*;
use encdec_core::backend::{relative_position_bucket, RelativeBiasSpec};
use encdec_core::testing::random_normal;
use encdec_core::{AttentionParams, Backend, DType, Tensor};
use encdec_cuda::AttentionPath;

#[derive(Debug, Clone, Copy)]
struct Case {
    name: &'static str,
    batch: usize,
    bkv: usize,
    /// kv row of each batch row, when beams share rows.
    beams: Option<&'static [u32]>,
    tq: usize,
    tcap: usize,
    kv_len: usize,
    causal: bool,
    q_offset: usize,
    mask: bool,
}

#[rustfmt::skip]
const CASES: [Case; 9] = [
    Case { name: "encoder", batch: 3, bkv: 3, beams: None, tq: 7, tcap: 7, kv_len: 7, causal: false, q_offset: 0, mask: true },
    Case { name: "encoder long", batch: 2, bkv: 2, beams: None, tq: 70, tcap: 70, kv_len: 70, causal: false, q_offset: 0, mask: true },
    Case { name: "decoder prefill", batch: 2, bkv: 2, beams: None, tq: 33, tcap: 40, kv_len: 33, causal: true, q_offset: 0, mask: false },
    Case { name: "decode step", batch: 3, bkv: 3, beams: None, tq: 1, tcap: 50, kv_len: 37, causal: true, q_offset: 36, mask: false },
    Case { name: "cross decode, beams", batch: 4, bkv: 2, beams: Some(&[0, 0, 1, 1]), tq: 1, tcap: 300, kv_len: 300, causal: false, q_offset: 0, mask: true },
    Case { name: "cross, beams reordered", batch: 4, bkv: 3, beams: Some(&[2, 0, 2, 1]), tq: 5, tcap: 129, kv_len: 129, causal: false, q_offset: 0, mask: true },
    Case { name: "long decode", batch: 1, bkv: 1, beams: None, tq: 1, tcap: 1024, kv_len: 1000, causal: true, q_offset: 999, mask: false },
    Case { name: "causal past kv_len", batch: 2, bkv: 2, beams: None, tq: 4, tcap: 12, kv_len: 10, causal: true, q_offset: 8, mask: true },
    Case { name: "causal, fewer keys than queries", batch: 1, bkv: 1, beams: None, tq: 5, tcap: 3, kv_len: 3, causal: true, q_offset: 0, mask: true },
];

const DIMS: [(usize, usize); 6] = [(1, 8), (2, 64), (3, 33), (2, 128), (1, 256), (4, 100)];

/// Additive mask [bkv, tcap]: ~20% padding (f32::MIN), and with 2+ kv rows the
/// second row fully masked.
fn mask(seed: u64, bkv: usize, tcap: usize) -> Vec<f32> {
    let r = random_normal(seed, bkv * tcap, 1.0);
    let mut m: Vec<f32> = r
        .iter()
        .map(|&v| if v > 0.85 { f32::MIN } else { 0.0 })
        .collect();
    if bkv >= 2 {
        m[tcap..2 * tcap].fill(f32::MIN);
    }
    m
}

#[test]
fn attention_matches_cpu_on_every_case_and_path() {
    let g = gpu_or_skip!("attention_matches_cpu_on_every_case_and_path");
    let mut f = Failures::default();
    for (ci, c) in CASES.iter().enumerate() {
        for &(h, d) in &DIMS {
            let hd = h * d;
            let seed = (ci * 100 + d) as u64;
            // q as a narrowed view of [B, Tq, HD + 3]; k, v as halves of a fused [Bkv, Tcap, 2 HD].
            let qb = host(
                random_normal(seed, c.batch * c.tq * (hd + 3), 1.0),
                &[c.batch, c.tq, hd + 3],
            );
            let kvb = host(
                random_normal(seed + 1, c.bkv * c.tcap * 2 * hd, 1.0),
                &[c.bkv, c.tcap, 2 * hd],
            );
            let (qh, kh, vh) = (
                qb.narrow(2, 3, hd).unwrap(),
                kvb.narrow(2, 0, hd).unwrap(),
                kvb.narrow(2, hd, hd).unwrap(),
            );
            let (qbd, kvbd) = (up(&g, &qb), up(&g, &kvb));
            let (qd, kd, vd) = (
                qbd.narrow(2, 3, hd).unwrap(),
                kvbd.narrow(2, 0, hd).unwrap(),
                kvbd.narrow(2, hd, hd).unwrap(),
            );
            let mh = c
                .mask
                .then(|| host(mask(seed + 2, c.bkv, c.tcap), &[c.bkv, c.tcap]));
            let md = mh.as_ref().map(|m| up(&g, m));
            let ih = c
                .beams
                .map(|b| Tensor::from_u32(b.to_vec(), [b.len()]).unwrap());
            let id = ih.as_ref().map(|i| up(&g, i));
            for with_bias in [false, true] {
                let bh = with_bias.then(|| {
                    host(
                        random_normal(seed + 3, h * c.tq * c.kv_len, 2.0),
                        &[h, c.tq, c.kv_len],
                    )
                });
                let bd = bh.as_ref().map(|b| up(&g, b));
                let scale = if with_bias {
                    1.0
                } else {
                    1.0 / (d as f32).sqrt()
                };
                let params = |mask, bias, ix| AttentionParams {
                    num_heads: h,
                    head_dim: d,
                    scale,
                    causal: c.causal,
                    q_offset: c.q_offset,
                    kv_len: c.kv_len,
                    key_mask: mask,
                    position_bias: bias,
                    relative_bias: None,
                    kv_index: ix,
                    operand_dtype: DType::F32,
                };
                let mut want = Tensor::zeros([c.batch, c.tq, hd], DType::F32);
                cpu()
                    .attention(
                        &qh,
                        &kh,
                        &vh,
                        &params(mh.as_ref(), bh.as_ref(), ih.as_ref()),
                        &mut want,
                    )
                    .unwrap();
                let want = want.to_f32_vec().unwrap();
                for path in [
                    AttentionPath::Auto,
                    AttentionPath::Tiled,
                    AttentionPath::SplitKv,
                ] {
                    g.set_attention_path(path);
                    let what = format!(
                        "attention {} ({c:?}) H={h} D={d} bias={with_bias} path={path:?}",
                        c.name
                    );
                    let mut got = poisoned(&g, &[c.batch, c.tq, hd]);
                    match g.attention(
                        &qd,
                        &kd,
                        &vd,
                        &params(md.as_ref(), bd.as_ref(), id.as_ref()),
                        &mut got,
                    ) {
                        Ok(()) => f.check(&what, &down(&g, &got), &want, TOL_REDUCE),
                        Err(e) => f.push(format!("{what}: {e}")),
                    }
                }
            }
        }
    }
    f.finish("attention");
}

#[test]
fn attention_checks_its_arguments_like_the_cpu() {
    let g = gpu_or_skip!("attention_checks_its_arguments_like_the_cpu");
    let (b, tq, tk, h, d) = (2, 3, 5, 2, 4);
    let q = up(
        &g,
        &host(random_normal(1, b * tq * h * d, 1.0), &[b, tq, h * d]),
    );
    let k = up(
        &g,
        &host(random_normal(2, b * tk * h * d, 1.0), &[b, tk, h * d]),
    );
    let v = up(
        &g,
        &host(random_normal(3, b * tk * h * d, 1.0), &[b, tk, h * d]),
    );
    let mut out = g.zeros(&[b, tq, h * d], DType::F32).unwrap();
    let ok = AttentionParams {
        num_heads: h,
        head_dim: d,
        scale: 0.5,
        causal: false,
        q_offset: 0,
        kv_len: tk,
        key_mask: None,
        position_bias: None,
        relative_bias: None,
        kv_index: None,
        operand_dtype: DType::F32,
    };
    g.attention(&q, &k, &v, &ok, &mut out).unwrap();
    assert!(g
        .attention(
            &q,
            &k,
            &v,
            &AttentionParams {
                kv_len: tk + 1,
                ..ok
            },
            &mut out
        )
        .is_err());
    assert!(g
        .attention(&q, &k, &v, &AttentionParams { head_dim: 3, ..ok }, &mut out)
        .is_err());
    let ix = up(&g, &Tensor::from_u32(vec![0, 2], [2]).unwrap());
    let e = g
        .attention(
            &q,
            &k,
            &v,
            &AttentionParams {
                kv_index: Some(&ix),
                ..ok
            },
            &mut out,
        )
        .unwrap_err()
        .to_string();
    assert!(e.contains("kv_index 2"), "{e}");
    let m = up(&g, &host(vec![0.0; b * (tk - 1)], &[b, tk - 1]));
    assert!(g
        .attention(
            &q,
            &k,
            &v,
            &AttentionParams {
                key_mask: Some(&m),
                ..ok
            },
            &mut out
        )
        .is_err());
    let pb = up(&g, &host(vec![0.0; h * tq * (tk - 1)], &[h, tq, tk - 1]));
    assert!(g
        .attention(
            &q,
            &k,
            &v,
            &AttentionParams {
                position_bias: Some(&pb),
                ..ok
            },
            &mut out
        )
        .is_err());
    // Host tensors are refused with the devices named (the CPU stand-in takes them).
    if g.cuda.is_some() {
        let qh = host(vec![0.0; b * tq * h * d], &[b, tq, h * d]);
        let e = g
            .attention(&qh, &k, &v, &ok, &mut out)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("attention") && e.contains("cpu") && e.contains("cuda"),
            "{e}"
        );
    }
    // A transposed (last dim strided) k is refused.
    let kt = k.transpose(1, 2).unwrap();
    assert!(g.attention(&q, &kt, &v, &ok, &mut out).is_err());
}

/// T5's relative bias looked up in the kernels from the bucket table
/// (`AttentionParams::relative_bias`): against the CPU op (TOL_REDUCE), and
/// bit-for-bit against the same kernel given the materialised `[H, Tq, kv_len]`
/// bias (the same f32 table entries must be added, so any bucket that differs
/// from HF's shows), on every case and path, bidirectional and causal buckets.
#[test]
fn relative_bias_from_the_table_matches_the_materialised_bias() {
    let g = gpu_or_skip!("relative_bias_from_the_table_matches_the_materialised_bias");
    let mut f = Failures::default();
    // (buckets, max distance): T5's; a small odd one; one with few exact buckets.
    let specs = [(32usize, 128usize), (10, 20), (6, 9)];
    for (ci, c) in CASES.iter().enumerate() {
        for &(h, d) in &[(2usize, 64usize), (3, 33), (1, 8)] {
            let hd = h * d;
            let seed = (ci * 100 + d) as u64 + 5000;
            let qh = host(
                random_normal(seed, c.batch * c.tq * hd, 1.0),
                &[c.batch, c.tq, hd],
            );
            let kh = host(
                random_normal(seed + 1, c.bkv * c.tcap * hd, 1.0),
                &[c.bkv, c.tcap, hd],
            );
            let vh = host(
                random_normal(seed + 2, c.bkv * c.tcap * hd, 1.0),
                &[c.bkv, c.tcap, hd],
            );
            let (qd, kd, vd) = (up(&g, &qh), up(&g, &kh), up(&g, &vh));
            let mh = c
                .mask
                .then(|| host(mask(seed + 3, c.bkv, c.tcap), &[c.bkv, c.tcap]));
            let md = mh.as_ref().map(|m| up(&g, m));
            let ih = c
                .beams
                .map(|b| Tensor::from_u32(b.to_vec(), [b.len()]).unwrap());
            let id = ih.as_ref().map(|i| up(&g, i));
            for (si, &(nb, maxd)) in specs.iter().enumerate() {
                // Alternate the direction so causal calls also get bidirectional buckets.
                let bidirectional = (si % 2 == 0) != c.causal;
                let table = random_normal(seed + 4 + si as u64, nb * h, 2.0);
                let th = host(table.clone(), &[nb, h]);
                let td = up(&g, &th);
                let mut dense = vec![0.0f32; h * c.tq * c.kv_len];
                for i in 0..c.tq {
                    for j in 0..c.kv_len {
                        let rel = j as i64 - (c.q_offset + i) as i64;
                        let bk = relative_position_bucket(rel, bidirectional, nb, maxd);
                        for hh in 0..h {
                            dense[(hh * c.tq + i) * c.kv_len + j] = table[bk * h + hh];
                        }
                    }
                }
                let bd = up(&g, &host(dense, &[h, c.tq, c.kv_len]));
                let base = AttentionParams {
                    num_heads: h,
                    head_dim: d,
                    scale: 1.0,
                    causal: c.causal,
                    q_offset: c.q_offset,
                    kv_len: c.kv_len,
                    key_mask: None,
                    position_bias: None,
                    relative_bias: None,
                    kv_index: None,
                    operand_dtype: DType::F32,
                };
                let spec = |table| RelativeBiasSpec {
                    table,
                    num_buckets: nb,
                    max_distance: maxd,
                    bidirectional,
                };
                let mut want = Tensor::zeros([c.batch, c.tq, hd], DType::F32);
                cpu()
                    .attention(
                        &qh,
                        &kh,
                        &vh,
                        &AttentionParams {
                            key_mask: mh.as_ref(),
                            relative_bias: Some(spec(&th)),
                            kv_index: ih.as_ref(),
                            ..base
                        },
                        &mut want,
                    )
                    .unwrap();
                let want = want.to_f32_vec().unwrap();
                for path in [
                    AttentionPath::Auto,
                    AttentionPath::Tiled,
                    AttentionPath::SplitKv,
                ] {
                    g.set_attention_path(path);
                    let what = format!(
                        "relative bias {} ({c:?}) H={h} D={d} buckets={nb} max_distance={maxd} \
                         bidirectional={bidirectional} path={path:?}",
                        c.name
                    );
                    let mut got = poisoned(&g, &[c.batch, c.tq, hd]);
                    let p = AttentionParams {
                        key_mask: md.as_ref(),
                        relative_bias: Some(spec(&td)),
                        kv_index: id.as_ref(),
                        ..base
                    };
                    if let Err(e) = g.attention(&qd, &kd, &vd, &p, &mut got) {
                        f.push(format!("{what}: {e}"));
                        continue;
                    }
                    let got = down(&g, &got);
                    f.check(&what, &got, &want, TOL_REDUCE);
                    let mut dense_out = poisoned(&g, &[c.batch, c.tq, hd]);
                    let p = AttentionParams {
                        key_mask: md.as_ref(),
                        position_bias: Some(&bd),
                        kv_index: id.as_ref(),
                        ..base
                    };
                    match g.attention(&qd, &kd, &vd, &p, &mut dense_out) {
                        Ok(()) => f.exact(
                            &format!("{what} vs materialised"),
                            &got,
                            &down(&g, &dense_out),
                        ),
                        Err(e) => f.push(format!("{what} (materialised): {e}")),
                    }
                }
            }
        }
    }
    // Both biases at once, or a table of the wrong shape: refused like on the CPU.
    let (b, tq, tk, h, d) = (1, 2, 3, 2, 4);
    let q = up(
        &g,
        &host(random_normal(1, b * tq * h * d, 1.0), &[b, tq, h * d]),
    );
    let k = up(
        &g,
        &host(random_normal(2, b * tk * h * d, 1.0), &[b, tk, h * d]),
    );
    let mut out = poisoned(&g, &[b, tq, h * d]);
    let table = up(&g, &host(vec![0.0; 8 * h], &[8, h]));
    let pb = up(&g, &host(vec![0.0; h * tq * tk], &[h, tq, tk]));
    let spec = RelativeBiasSpec {
        table: &table,
        num_buckets: 8,
        max_distance: 16,
        bidirectional: true,
    };
    let ok = AttentionParams {
        num_heads: h,
        head_dim: d,
        scale: 1.0,
        causal: false,
        q_offset: 0,
        kv_len: tk,
        key_mask: None,
        position_bias: None,
        relative_bias: Some(spec),
        kv_index: None,
        operand_dtype: DType::F32,
    };
    g.attention(&q, &k, &k, &ok, &mut out).unwrap();
    let both = AttentionParams {
        position_bias: Some(&pb),
        ..ok
    };
    let e = g
        .attention(&q, &k, &k, &both, &mut out)
        .unwrap_err()
        .to_string();
    assert!(e.contains("mutually exclusive"), "{e}");
    let bad = AttentionParams {
        relative_bias: Some(RelativeBiasSpec {
            num_buckets: 9,
            ..spec
        }),
        ..ok
    };
    assert!(g.attention(&q, &k, &k, &bad, &mut out).is_err());
    f.finish("relative bias");
}

/// Half-precision K/V (f16 and bf16 KV caches): the kernels widen each element
/// to f32, so the result is the f32 attention over the widened K/V, which is
/// what the CPU op computes on the same half tensors (TOL_REDUCE, as f32). Every
/// case (odd kv_len, causal, key mask with a fully masked row, beams through
/// kv_index), head dims 8/32/64/128 with 1-3 heads, no bias / position_bias /
/// T5's relative bias by case, K/V as strided halves of a fused half tensor, on
/// the Auto (the operand dtype allows tensor cores, which must not be taken:
/// Auto is bit for bit Tiled for Tq > 1), Tiled and SplitKv paths.
#[test]
fn half_kv_matches_the_cpu_on_the_widened_kv() {
    let g = gpu_or_skip!("half_kv_matches_the_cpu_on_the_widened_kv");
    let mut f = Failures::default();
    let dims = [(1usize, 8usize), (2, 32), (3, 64), (1, 128)];
    for kv_dtype in [DType::F16, DType::BF16] {
        for (ci, c) in CASES.iter().enumerate() {
            for &(h, d) in &dims {
                let hd = h * d;
                let seed = (ci * 100 + d) as u64 + 9000;
                let qh = host(
                    random_normal(seed, c.batch * c.tq * hd, 1.0),
                    &[c.batch, c.tq, hd],
                );
                // k, v as halves of a fused half [Bkv, Tcap, 2 HD] (strided views).
                let kvb = host_as(
                    random_normal(seed + 1, c.bkv * c.tcap * 2 * hd, 1.0),
                    &[c.bkv, c.tcap, 2 * hd],
                    kv_dtype,
                );
                let (kh, vh) = (
                    kvb.narrow(2, 0, hd).unwrap(),
                    kvb.narrow(2, hd, hd).unwrap(),
                );
                let (qd, kvbd) = (up(&g, &qh), up(&g, &kvb));
                let (kd, vd) = (
                    kvbd.narrow(2, 0, hd).unwrap(),
                    kvbd.narrow(2, hd, hd).unwrap(),
                );
                let mh = c
                    .mask
                    .then(|| host(mask(seed + 2, c.bkv, c.tcap), &[c.bkv, c.tcap]));
                let md = mh.as_ref().map(|m| up(&g, m));
                let ih = c
                    .beams
                    .map(|b| Tensor::from_u32(b.to_vec(), [b.len()]).unwrap());
                let id = ih.as_ref().map(|i| up(&g, i));
                // Bias by case: none, position_bias, relative bias (bidirectional unless causal).
                let bias = ci % 3;
                let bh = (bias == 1).then(|| {
                    host(
                        random_normal(seed + 3, h * c.tq * c.kv_len, 2.0),
                        &[h, c.tq, c.kv_len],
                    )
                });
                let bd = bh.as_ref().map(|b| up(&g, b));
                let th = (bias == 2).then(|| host(random_normal(seed + 4, 32 * h, 2.0), &[32, h]));
                let td = th.as_ref().map(|t| up(&g, t));
                let (rel_h, rel_d) = (
                    th.as_ref().map(|t| t5_bias(t, !c.causal)),
                    td.as_ref().map(|t| t5_bias(t, !c.causal)),
                );
                let params = |mask, pb, rel, ix, operand_dtype| AttentionParams {
                    num_heads: h,
                    head_dim: d,
                    scale: if bias == 0 {
                        1.0 / (d as f32).sqrt()
                    } else {
                        1.0
                    },
                    causal: c.causal,
                    q_offset: c.q_offset,
                    kv_len: c.kv_len,
                    key_mask: mask,
                    position_bias: pb,
                    relative_bias: rel,
                    kv_index: ix,
                    operand_dtype,
                };
                let mut want = Tensor::zeros([c.batch, c.tq, hd], DType::F32);
                cpu()
                    .attention(
                        &qh,
                        &kh,
                        &vh,
                        &params(mh.as_ref(), bh.as_ref(), rel_h, ih.as_ref(), DType::F32),
                        &mut want,
                    )
                    .unwrap();
                let want = want.to_f32_vec().unwrap();
                let mut tiled = None;
                for path in [
                    AttentionPath::Tiled,
                    AttentionPath::Auto,
                    AttentionPath::SplitKv,
                ] {
                    g.set_attention_path(path);
                    let what = format!(
                        "{kv_dtype} K/V {} ({c:?}) H={h} D={d} bias={bias} path={path:?}",
                        c.name
                    );
                    let mut got = poisoned(&g, &[c.batch, c.tq, hd]);
                    // Auto is told tensor cores would be fine for the operands.
                    let p = params(md.as_ref(), bd.as_ref(), rel_d, id.as_ref(), kv_dtype);
                    if let Err(e) = g.attention(&qd, &kd, &vd, &p, &mut got) {
                        f.push(format!("{what}: {e}"));
                        continue;
                    }
                    let got = down(&g, &got);
                    f.check(&what, &got, &want, TOL_REDUCE);
                    match (path, &tiled) {
                        (AttentionPath::Tiled, _) => tiled = Some(got),
                        (AttentionPath::Auto, Some(t)) if c.tq > 1 => {
                            f.exact(&format!("{what} vs Tiled"), &got, t)
                        }
                        _ => {}
                    }
                }
            }
        }
    }
    f.finish("half K/V attention");
}

/// Half K/V with an f32 q: the tensor-core path refuses them by name; mixed
/// K/V dtypes are refused on every path. A half q (half activations) is read
/// as its widening by the tiled and split kernels.
#[test]
fn half_kv_refusals() {
    let g = gpu_or_skip!("half_kv_refusals");
    let (b, tq, tk, h, d) = (1, 4, 9, 2, 64);
    let q = up(
        &g,
        &host(random_normal(1, b * tq * h * d, 1.0), &[b, tq, h * d]),
    );
    let kf = host(random_normal(2, b * tk * h * d, 1.0), &[b, tk, h * d]);
    let p = AttentionParams {
        num_heads: h,
        head_dim: d,
        scale: 0.125,
        causal: false,
        q_offset: 0,
        kv_len: tk,
        key_mask: None,
        position_bias: None,
        relative_bias: None,
        kv_index: None,
        operand_dtype: DType::F16,
    };
    let mut out = poisoned(&g, &[b, tq, h * d]);
    for dt in [DType::F16, DType::BF16] {
        let k = up(&g, &cpu().cast(&kf, dt).unwrap());
        if g.cuda.is_some() {
            g.set_attention_path(AttentionPath::TensorCore);
            let e = g.attention(&q, &k, &k, &p, &mut out).unwrap_err();
            assert!(
                matches!(e, encdec_core::Error::Invalid(_))
                    && e.to_string()
                        .contains("f32 q/k/v or q/k/v of the operand dtype")
                    && e.to_string().contains(&format!("k/v {dt}")),
                "{e}"
            );
        }
        for path in [
            AttentionPath::Auto,
            AttentionPath::Tiled,
            AttentionPath::SplitKv,
        ] {
            g.set_attention_path(path);
            let e = g
                .attention(&q, &k, &up(&g, &kf), &p, &mut out)
                .unwrap_err()
                .to_string();
            assert!(e.contains(&format!("k {dt}, v f32")), "{path:?}: {e}");
            // Auto with q/k/v of the operand dtype takes the tensor-core kernel
            // (tests/attention_tc.rs); these two widen q for their f32 loads.
            if path == AttentionPath::Auto {
                continue;
            }
            let qh = up(&g, &cpu().cast(&down_host(&g, &q), dt).unwrap());
            let mut got = poisoned(&g, &[b, tq, h * d]);
            g.attention(&qh, &k, &k, &p, &mut got).unwrap();
            let q32 = g.cast(&qh, DType::F32).unwrap();
            let mut want = poisoned(&g, &[b, tq, h * d]);
            g.attention(&q32, &k, &k, &p, &mut want).unwrap();
            assert_eq!(down(&g, &got), down(&g, &want), "{path:?}: half q");
        }
    }
}

fn t5_bias(table: &Tensor, bidirectional: bool) -> RelativeBiasSpec<'_> {
    RelativeBiasSpec {
        table,
        num_buckets: 32,
        max_distance: 128,
        bidirectional,
    }
}

fn down_host(g: &Dut, t: &Tensor) -> Tensor {
    host(down(g, t), t.dims())
}
