//! kernels/copy.cu and the memory ops against the CPU backend: zeros,
//! upload/download round trips (views included), write_rows into a KV cache
//! (f32 steps rounded into f16/bf16 caches too),
//! index_select (beam reordering, int8 rows with their scales), and the
//! caching allocator (a repeated step allocates nothing new). All exact.

mod common;

use common::*;
use encdec_core::testing::random_normal;
use encdec_core::{Backend, DType, HostStorage, Tensor};

#[test]
fn zeros_upload_download_round_trip() {
    let g = gpu_or_skip!("zeros_upload_download_round_trip");
    for dt in [DType::F32, DType::F16, DType::BF16, DType::I8, DType::U32] {
        let z = g.zeros(&[3, 5], dt).unwrap();
        assert_eq!((z.dtype(), z.dims()), (dt, &[3usize, 5][..]));
        assert_eq!(down(&g, &z), vec![0.0; 15], "zeros {dt}");
        assert_eq!(g.download(&z).unwrap().dtype(), dt);
    }
    let x = host(random_normal(1, 4 * 6 * 5, 1.0), &[4, 6, 5]);
    for dt in [DType::F32, DType::F16, DType::BF16, DType::I8] {
        let h = cpu().cast(&x, dt).unwrap();
        let d = up(&g, &h);
        assert_eq!(d.device(), g.device());
        let back = g.download(&d).unwrap();
        assert_eq!(back.dtype(), dt);
        check_exact(
            &format!("round trip {dt}"),
            &back.to_f32_vec().unwrap(),
            &h.to_f32_vec().unwrap(),
        );
    }
    // Views: a narrowed host tensor uploads as its elements; a transposed and a
    // narrowed device tensor download in their row-major order.
    let n = x.narrow(1, 2, 3).unwrap();
    check_exact(
        "upload narrow",
        &down(&g, &up(&g, &n)),
        &n.to_f32_vec().unwrap(),
    );
    let d = up(&g, &x);
    let views = [
        (d.narrow(1, 1, 4).unwrap(), x.narrow(1, 1, 4).unwrap()),
        (d.transpose(1, 2).unwrap(), x.transpose(1, 2).unwrap()),
        (d.narrow(0, 1, 2).unwrap(), x.narrow(0, 1, 2).unwrap()),
    ];
    for (dv, hv) in views {
        check_exact(
            &format!("download view {:?} strides {:?}", dv.dims(), dv.strides()),
            &down(&g, &dv),
            &hv.to_f32_vec().unwrap(),
        );
    }
    // An int8 view of whole rows.
    let q = cpu()
        .cast(&host(random_normal(2, 6 * 8, 1.0), &[6, 8]), DType::I8)
        .unwrap();
    let qn = q.narrow(0, 2, 3).unwrap();
    check_exact(
        "int8 narrow",
        &down(&g, &up(&g, &qn)),
        &qn.to_f32_vec().unwrap(),
    );
    // Ids.
    let ids = Tensor::from_u32(vec![5, 0, 7], [3]).unwrap();
    let back = g.download(&up(&g, &ids)).unwrap();
    assert_eq!(back.to_u32_vec().unwrap(), vec![5, 0, 7]);
}

#[test]
fn write_rows_matches_cpu() {
    let g = gpu_or_skip!("write_rows_matches_cpu");
    let mut f = Failures::default();
    for dt in [DType::F32, DType::F16, DType::BF16] {
        for &(b, t, tcap, c, start) in &[
            (1usize, 1usize, 1usize, 1usize, 0usize),
            (3, 1, 9, 64, 4),
            (2, 5, 7, 130, 2),
            (4, 17, 40, 512, 23),
        ] {
            let src = host_as(random_normal(3, b * t * c, 1.0), &[b, t, c], dt);
            let cache = host_as(random_normal(4, b * tcap * c, 1.0), &[b, tcap, c], dt);
            let mut want = cpu().cast(&cache, dt).unwrap();
            cpu().write_rows(&src, &mut want, start).unwrap();
            let mut got = up(&g, &cache);
            g.write_rows(&up(&g, &src), &mut got, start).unwrap();
            f.exact(
                &format!("write_rows {dt} b={b} t={t} tcap={tcap} c={c} start={start}"),
                &down(&g, &got),
                &want.to_f32_vec().unwrap(),
            );
            // A non-contiguous source: [b, t, c] as a transposed view of [b, c, t].
            let base = host_as(random_normal(5, b * t * c, 1.0), &[b, c, t], dt);
            let view = base.transpose(1, 2).unwrap();
            let mut want2 = cpu().cast(&cache, dt).unwrap();
            cpu().write_rows(&view, &mut want2, start).unwrap();
            let mut got2 = up(&g, &cache);
            g.write_rows(&up(&g, &base).transpose(1, 2).unwrap(), &mut got2, start)
                .unwrap();
            f.exact(
                &format!("write_rows strided {dt} b={b} t={t} c={c}"),
                &down(&g, &got2),
                &want2.to_f32_vec().unwrap(),
            );
            // Rows read in place: the middle third of [b, t, 3c] (a fused QKV
            // projection's K), against the same rows made contiguous.
            let wide = host_as(random_normal(6, b * t * 3 * c, 1.0), &[b, t, 3 * c], dt);
            let part = wide.narrow(2, c, c).unwrap().contiguous().unwrap();
            let mut want3 = cpu().cast(&cache, dt).unwrap();
            cpu().write_rows(&part, &mut want3, start).unwrap();
            let mut cpu3 = cpu().cast(&cache, dt).unwrap();
            cpu()
                .write_rows(&wide.narrow(2, c, c).unwrap(), &mut cpu3, start)
                .unwrap();
            let want3 = want3.to_f32_vec().unwrap();
            f.exact(
                &format!("cpu write_rows in place {dt} b={b} t={t} c={c}"),
                &cpu3.to_f32_vec().unwrap(),
                &want3,
            );
            let mut got3 = up(&g, &cache);
            g.write_rows(&up(&g, &wide).narrow(2, c, c).unwrap(), &mut got3, start)
                .unwrap();
            f.exact(
                &format!("write_rows in place {dt} b={b} t={t} c={c}"),
                &down(&g, &got3),
                &want3,
            );
        }
    }
    // Ids into a u32 cache keep their host copy in step (used by later checks).
    let mut cache = g.zeros(&[2, 4, 1], DType::U32).unwrap();
    let step = up(&g, &Tensor::from_u32(vec![7, 9], [2, 1, 1]).unwrap());
    g.write_rows(&step, &mut cache, 3).unwrap();
    assert_eq!(
        g.download(&cache).unwrap().to_u32_vec().unwrap(),
        vec![0, 0, 0, 7, 0, 0, 0, 9]
    );
    // The host copy of the ids follows (range checks read it): id 9 is out of
    // range for 8 rows.
    let ix = g.cast(&cache, DType::U32).unwrap().reshape([8]).unwrap();
    let src8 = g.zeros(&[8, 1], DType::F32).unwrap();
    let mut dst8 = g.zeros(&[8, 1], DType::F32).unwrap();
    let e = g
        .index_select(&src8, &ix, &mut dst8)
        .unwrap_err()
        .to_string();
    assert!(e.contains("index 9 is out of range"), "{e}");
    f.finish("write_rows");
}

/// A host half cache whose every element is the bits 0x5a5a (rows the write
/// must leave alone).
fn poisoned_half(shape: &[usize], dt: DType) -> Tensor {
    let n = shape.iter().product();
    let h = match dt {
        DType::F16 => HostStorage::F16(vec![half::f16::from_bits(0x5a5a); n]),
        _ => HostStorage::BF16(vec![half::bf16::from_bits(0x5a5a); n]),
    };
    Tensor::from_host(h, shape).unwrap()
}

#[test]
fn converting_write_rows_match_cpu() {
    let g = gpu_or_skip!("converting_write_rows_match_cpu");
    let mut f = Failures::default();
    // Ties of f16 (1 + 2^-11, 1 + 3 * 2^-11, subnormal 3 * 2^-25) and bf16
    // (1 + 2^-8, 1 + 3 * 2^-8), NaNs with payloads, infinities, past f16's range.
    let special = [
        1.0 + 2f32.powi(-11),
        1.0 + 3.0 * 2f32.powi(-11),
        2f32.powi(-25),
        3.0 * 2f32.powi(-25),
        1.0 + 2f32.powi(-8),
        -(1.0 + 3.0 * 2f32.powi(-8)),
        f32::NAN,
        f32::from_bits(0xffc1_2345),
        f32::from_bits(0x7f80_0001),
        f32::INFINITY,
        f32::NEG_INFINITY,
        65519.0,
        65520.0,
        -1.0e6,
        f32::MAX,
        -0.0,
    ];
    for dt in [DType::F16, DType::BF16] {
        for &(b, t, tcap, c, start) in &[
            (1usize, 1usize, 1usize, 1usize, 0usize),
            (3, 1, 9, 67, 4),
            (2, 5, 7, 131, 2),
            (4, 17, 40, 515, 23),
            (2, 3, 11, 18, 0),
        ] {
            let mut v = random_normal(6, b * t * c, 4.0);
            let k = special.len().min(v.len());
            v[..k].copy_from_slice(&special[..k]);
            let src = host(v, &[b, t, c]);
            let cache = poisoned_half(&[b, tcap, c], dt);
            let mut want = cpu().cast(&cache, dt).unwrap();
            cpu().write_rows(&src, &mut want, start).unwrap();
            let want = host_half_bits(&want);
            // Rows outside start..start + t keep the poison.
            for (i, &x) in want.iter().enumerate() {
                let row = i / c % tcap;
                assert!(row >= start && row < start + t || x == 0x5a5a);
            }
            let what = format!("{dt} b={b} t={t} tcap={tcap} c={c} start={start}");
            let dsrc = up(&g, &src);
            let mut got = up(&g, &cache);
            g.write_rows(&dsrc, &mut got, start).unwrap();
            if half_bits(&g, &got) != want {
                f.push(format!("write_rows f32 -> {what}: not bit-identical"));
            }
            // The start read on the device (recorded steps).
            let pos = up(
                &g,
                &Tensor::from_u32(vec![start as u32, (start + t) as u32], [2]).unwrap(),
            );
            let mut got = up(&g, &cache);
            g.write_rows_at(&dsrc, &mut got, &pos).unwrap();
            if half_bits(&g, &got) != want {
                f.push(format!("write_rows_at f32 -> {what}: not bit-identical"));
            }
            // The same rows read in place from the last third of [b, t, 3c].
            let mut wide = random_normal(7, b * t * 3 * c, 4.0);
            for (r, row) in src.to_f32_vec().unwrap().chunks(c).enumerate() {
                wide[r * 3 * c + 2 * c..(r + 1) * 3 * c].copy_from_slice(row);
            }
            let wide = up(&g, &host(wide, &[b, t, 3 * c]));
            let mut got = up(&g, &cache);
            g.write_rows_at(&wide.narrow(2, 2 * c, c).unwrap(), &mut got, &pos)
                .unwrap();
            if half_bits(&g, &got) != want {
                f.push(format!(
                    "write_rows_at in place f32 -> {what}: not bit-identical"
                ));
            }
        }
    }
    f.finish("converting write_rows");

    // Other pairs are refused and leave the cache as it was.
    let half_src = up(&g, &host_as(vec![1.0; 8], &[1, 2, 4], DType::F16));
    let mut cache = up(&g, &host(vec![7.0; 12], &[1, 3, 4]));
    let e = g.write_rows(&half_src, &mut cache, 0).unwrap_err();
    assert_eq!(e.to_string(), "write_rows: dtype mismatch: f16 vs f32");
    assert_eq!(down(&g, &cache), vec![7.0; 12]);
    let mut bf = up(&g, &poisoned_half(&[1, 3, 4], DType::BF16));
    assert!(g.write_rows(&half_src, &mut bf, 1).is_err());
    assert_eq!(half_bits(&g, &bf), vec![0x5a5a; 12]);

    // Half models get half caches unless ENCDEC_CUDA_KV_F32=1.
    let kv_f32 = std::env::var("ENCDEC_CUDA_KV_F32").as_deref() == Ok("1");
    for dt in [DType::F32, DType::F16, DType::BF16] {
        let want = if g.cuda.is_some() && !kv_f32 {
            dt
        } else {
            DType::F32
        };
        assert_eq!(g.kv_cache_dtype(dt), want, "kv_cache_dtype({dt})");
    }
}

#[test]
fn index_select_matches_cpu() {
    let g = gpu_or_skip!("index_select_matches_cpu");
    let mut f = Failures::default();
    let index = vec![2u32, 0, 2, 1, 3];
    let ih = Tensor::from_u32(index.clone(), [5]).unwrap();
    let id = up(&g, &ih);
    for dt in [DType::F32, DType::F16, DType::BF16, DType::I8] {
        for shape in [&[4usize, 1][..], &[4, 7], &[4, 3, 130], &[4, 9, 64]] {
            let mut dshape = shape.to_vec();
            dshape[0] = index.len();
            let n: usize = shape.iter().product();
            let src = host_as(random_normal(6, n, 1.0), shape, DType::F32);
            let src = if dt == DType::I8 {
                cpu().cast(&src, DType::I8).unwrap()
            } else {
                cpu().cast(&src, dt).unwrap()
            };
            let mut want = Tensor::zeros(&dshape[..], dt);
            cpu().index_select(&src, &ih, &mut want).unwrap();
            let mut got = g.zeros(&dshape, dt).unwrap();
            g.index_select(&up(&g, &src), &id, &mut got).unwrap();
            f.exact(
                &format!("index_select {dt} {shape:?}"),
                &down(&g, &got),
                &want.to_f32_vec().unwrap(),
            );
        }
    }
    // u32 rows, and the range check.
    let src = up(&g, &Tensor::from_u32((0..8).collect(), [4, 2]).unwrap());
    let mut dst = g.zeros(&[5, 2], DType::U32).unwrap();
    g.index_select(&src, &id, &mut dst).unwrap();
    assert_eq!(
        g.download(&dst).unwrap().to_u32_vec().unwrap(),
        vec![4, 5, 0, 1, 4, 5, 2, 3, 6, 7]
    );
    let bad = up(&g, &Tensor::from_u32(vec![0, 4], [2]).unwrap());
    let mut d2 = g.zeros(&[2, 2], DType::U32).unwrap();
    let e = g.index_select(&src, &bad, &mut d2).unwrap_err().to_string();
    assert!(e.contains("index 4 is out of range"), "{e}");
    f.finish("index_select");
}

/// Issue 5: "a caching device allocator (no cudaMalloc in the decode loop)".
#[test]
fn a_repeated_step_allocates_nothing_new() {
    let _ = gpu_or_skip!("a_repeated_step_allocates_nothing_new");
    // A backend of its own: other tests allocate on the shared one meanwhile.
    let Some(be) = common::private_gpu() else {
        return; // the CPU stand-in has no device allocator
    };
    let g = Dut {
        be: std::sync::Arc::new(be.clone()),
        cuda: Some(std::sync::Arc::new(be)),
    };
    let w = up(&g, &host(random_normal(1, 64 * 32, 0.1), &[64, 32]));
    let wb = up(
        &g,
        &cpu()
            .cast(&host(random_normal(1, 64, 0.1), &[64]), DType::BF16)
            .unwrap(),
    );
    let mut out = g.zeros(&[3, 64], DType::F32).unwrap();
    let step = |out: &mut Tensor| {
        // An upload per step (ids), a temporary (bf16 bias converted), a download.
        let x = up(&g, &host(random_normal(2, 3 * 32, 1.0), &[3, 32]));
        g.linear(&x, &w, Some(&wb), out).unwrap();
        let _ = g.topk(out, 4).unwrap();
    };
    for _ in 0..3 {
        step(&mut out);
    }
    let before = g.memory_stats().unwrap();
    for _ in 0..20 {
        step(&mut out);
    }
    let after = g.memory_stats().unwrap();
    assert_eq!(
        before.driver_allocs, after.driver_allocs,
        "steady-state steps called cuMemAlloc: {before:?} -> {after:?}"
    );
    assert!(after.reuses > before.reuses);
}

/// `encdec bench` reports peak device memory from `Backend::device_memory`.
#[test]
fn device_memory_counts_live_tensors_and_their_peak() {
    let _ = gpu_or_skip!("device_memory_counts_live_tensors_and_their_peak");
    let Some(be) = common::private_gpu() else {
        return; // the CPU stand-in has no device allocator
    };
    let m0 = be
        .device_memory()
        .expect("a CUDA backend reports device memory");
    be.reset_peak_device_memory();
    let big = be.zeros(&[1 << 18], DType::F32).unwrap(); // 1 MiB
    let m1 = be.device_memory().unwrap();
    assert!(
        m1.in_use_bytes >= m0.in_use_bytes + (1 << 20),
        "{m0:?} -> {m1:?}"
    );
    assert_eq!(m1.peak_in_use_bytes, m1.in_use_bytes);
    assert!(m1.reserved_bytes >= m1.in_use_bytes);
    drop(big);
    let m2 = be.device_memory().unwrap();
    assert_eq!(m2.in_use_bytes, m0.in_use_bytes, "the block went back");
    assert_eq!(m2.peak_in_use_bytes, m1.peak_in_use_bytes, "the peak stays");
    be.reset_peak_device_memory();
    assert_eq!(
        be.device_memory().unwrap().peak_in_use_bytes,
        m0.in_use_bytes
    );
}

#[test]
fn copies_to_and_from_host_reuse_their_buffers() {
    let g = gpu_or_skip!("copies_to_and_from_host_reuse_their_buffers");
    // Several sizes through the same staging buffers (growing, then smaller).
    let mut logits_host = Tensor::zeros([3, 7], DType::F32);
    for (seed, (rows, cols)) in [(3usize, 7usize), (5, 50265), (2, 9), (4, 130)]
        .into_iter()
        .enumerate()
    {
        let x = host(
            random_normal(seed as u64 + 10, rows * cols, 3.0),
            &[rows, cols],
        );
        let mut on_dev = g.zeros(&[rows, cols], DType::F32).unwrap();
        g.copy_from_host(&x, &mut on_dev).unwrap();
        check_exact(
            "copy_from_host f32",
            &down(&g, &on_dev),
            &x.to_f32_vec().unwrap(),
        );
        if logits_host.dims() != [rows, cols] {
            logits_host = Tensor::zeros([rows, cols], DType::F32);
        }
        logits_host.as_f32_mut().unwrap().fill(f32::NAN);
        g.copy_to_host(&on_dev, &mut logits_host).unwrap();
        check_exact(
            "copy_to_host f32",
            logits_host.as_f32().unwrap(),
            &x.to_f32_vec().unwrap(),
        );
    }
    // A strided device view comes down in row-major order.
    let x = host(random_normal(20, 4 * 6, 1.0), &[4, 6]);
    let d = up(&g, &x);
    let t = d.transpose(0, 1).unwrap();
    let mut h = Tensor::zeros([6, 4], DType::F32);
    g.copy_to_host(&t, &mut h).unwrap();
    let want = x.transpose(0, 1).unwrap().to_f32_vec().unwrap();
    check_exact("copy_to_host transposed", h.as_f32().unwrap(), &want);

    // u32 ids: the device buffer keeps its address, and ops that read ids see
    // the new ones (an embedding of the copied ids equals the CPU's).
    let table = host(random_normal(21, 10 * 4, 1.0), &[10, 4]);
    let table_dev = up(&g, &table);
    let mut ids_dev = g.zeros(&[3], DType::U32).unwrap();
    for ids in [[1u32, 9, 0], [4, 4, 7]] {
        let ids_host = Tensor::from_u32(ids.to_vec(), [3]).unwrap();
        g.copy_from_host(&ids_host, &mut ids_dev).unwrap();
        let mut out = poisoned(&g, &[3, 4]);
        g.embedding(&ids_dev, &table_dev, 1.0, &mut out).unwrap();
        let mut want = Tensor::zeros([3, 4], DType::F32);
        cpu().embedding(&ids_host, &table, 1.0, &mut want).unwrap();
        check_exact(
            "embedding of copied ids",
            &down(&g, &out),
            want.as_f32().unwrap(),
        );
        let mut back = Tensor::zeros([3], DType::U32);
        g.copy_to_host(&ids_dev, &mut back).unwrap();
        assert_eq!(back.as_u32().unwrap(), ids);
    }
    // An out-of-range id copied in is caught by the op that reads it.
    let bad = Tensor::from_u32(vec![1, 10, 2], [3]).unwrap();
    g.copy_from_host(&bad, &mut ids_dev).unwrap();
    let mut out = poisoned(&g, &[3, 4]);
    assert!(g.embedding(&ids_dev, &table_dev, 1.0, &mut out).is_err());

    // Bad calls: shape, dtype, int8.
    let mut dev = g.zeros(&[2, 3], DType::F32).unwrap();
    let wrong_shape = host(vec![0.0; 6], &[3, 2]);
    let e = g
        .copy_from_host(&wrong_shape, &mut dev)
        .unwrap_err()
        .to_string();
    assert!(e.contains("copy_from_host"), "{e}");
    let ids6 = Tensor::from_u32(vec![0; 6], [2, 3]).unwrap();
    let e = g.copy_from_host(&ids6, &mut dev).unwrap_err().to_string();
    assert!(e.contains("copy_from_host"), "{e}");
    let mut h = Tensor::zeros([2, 2], DType::F32);
    let e = g.copy_to_host(&dev, &mut h).unwrap_err().to_string();
    assert!(e.contains("copy_to_host"), "{e}");
    let q = g.zeros(&[2, 3], DType::I8).unwrap();
    let mut h8 = Tensor::zeros([2, 3], DType::I8);
    assert!(g.copy_to_host(&q, &mut h8).is_err());
}

/// `copy_to_host_all` gives what `copy_to_host` gives for each pair (f32 and
/// u32, odd sizes, a view at an offset; a transposed view goes one by one),
/// and refuses mismatched pairs like it.
#[test]
fn copy_to_host_all_equals_one_copy_per_tensor() {
    let g = gpu_or_skip!("copy_to_host_all_equals_one_copy_per_tensor");
    let a = host(random_normal(31, 3 * 7, 1.0), &[3, 7]);
    let b = Tensor::from_u32((0..11).map(|i| i * 7 + 3).collect(), [11]).unwrap();
    let c = host(random_normal(32, 5 * 50265, 1.0), &[5, 50265]);
    let (ad, bd, cd) = (up(&g, &a), up(&g, &b), up(&g, &c));
    let c_tail = cd.narrow(0, 2, 3).unwrap();
    let mut ah = Tensor::zeros([3, 7], DType::F32);
    let mut bh = Tensor::zeros([11], DType::U32);
    let mut ch = Tensor::zeros([3, 50265], DType::F32);
    ah.as_f32_mut().unwrap().fill(f32::NAN);
    ch.as_f32_mut().unwrap().fill(f32::NAN);
    g.copy_to_host_all(&mut [(&ad, &mut ah), (&bd, &mut bh), (&c_tail, &mut ch)])
        .unwrap();
    check_exact("a", ah.as_f32().unwrap(), a.as_f32().unwrap());
    assert_eq!(bh.as_u32().unwrap(), b.as_u32().unwrap());
    let want = c.narrow(0, 2, 3).unwrap().to_f32_vec().unwrap();
    check_exact("c rows 2..5", ch.as_f32().unwrap(), &want);
    // A transposed view among them (copied one by one).
    let t = ad.transpose(0, 1).unwrap();
    let mut th = Tensor::zeros([7, 3], DType::F32);
    g.copy_to_host_all(&mut [(&t, &mut th), (&bd, &mut bh)])
        .unwrap();
    let want = a.transpose(0, 1).unwrap().to_f32_vec().unwrap();
    check_exact("transposed", th.as_f32().unwrap(), &want);
    // Mismatched shapes or dtypes.
    let mut wrong = Tensor::zeros([7, 3], DType::F32);
    assert!(g
        .copy_to_host_all(&mut [(&ad, &mut ah), (&ad, &mut wrong)])
        .is_err());
    let mut wrong_dtype = Tensor::zeros([11], DType::F32);
    assert!(g.copy_to_host_all(&mut [(&bd, &mut wrong_dtype)]).is_err());
}
