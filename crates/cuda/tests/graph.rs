//! Recorded steps (CUDA graphs): `begin_capture` / `end_capture` / `replay`
//! on the CUDA backend (on the emulator: stored launches, copies and memsets).
//!
//! A small decode-like step (embedding -> linear -> norm with f16 weights ->
//! activation -> write_rows into a cache -> attention -> add_assign ->
//! index_select -> softmax) is recorded once and replayed with new inputs
//! copied in between; every replay must give exactly what the same ops give
//! run eagerly (the same kernels). Also: host crossings fail while recording
//! and the backend keeps working; blocks the recording freed are not handed
//! to later allocations until the graph is dropped; recordings do not nest;
//! replays are queued in order; a replay allocates no host memory; another
//! thread's op waits while one thread records (and is not recorded).
//!
//! Each test records on a backend of its own (`private_gpu`): a recording
//! takes every op queued on its device, so tests running in parallel must not
//! share one. The tests also take one lock, so the host allocation count of
//! `replay_allocates_no_host_memory` sees only its own thread's work.

mod common;

use std::sync::Mutex;

use common::*;
use encdec_core::testing::{random_normal, CountingAlloc};
use encdec_core::{
    Activation, AttentionParams, Backend, CapturedGraph, DType, NormKind, Result, Tensor,
};
use encdec_cuda::CudaBackend;

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// A CUDA backend of this test's own, or None after printing why the test is
/// skipped (no device; or the CPU stand-in, which cannot record).
fn recorder(test: &str) -> Option<CudaBackend> {
    let g = common::gpu(test)?;
    if g.cuda.is_none() {
        let can = g
            .begin_capture()
            .expect("begin_capture on the CPU stand-in");
        assert!(!can, "the CPU stand-in cannot record");
        eprintln!("NOTE {test}: the CPU stand-in cannot record (begin_capture returned false); nothing to test");
        return None;
    }
    match private_gpu() {
        Some(b) => Some(b),
        None => {
            eprintln!("SKIP {test}: no backend of its own could be made");
            None
        }
    }
}

const B: usize = 2;
const C: usize = 32;
const V: usize = 16;
const TCAP: usize = 4;
const HEADS: usize = 4;
const POS: usize = 2;

/// Weights of the step (read by every replay: they must outlive the graph).
struct Weights {
    table: Tensor,
    w: Tensor,
    bias: Tensor,
    norm_w: Tensor, // f16: the norm converts it into a temporary block each call
    norm_b: Tensor,
}

/// The per-step tensors: inputs refilled before each replay, outputs read after.
struct State {
    ids: Tensor,   // u32 [B, 1]
    beams: Tensor, // u32 [B]
    cache: Tensor, // f32 [B, TCAP, C]
    h: Tensor,     // f32 [B, 1, C]
    hn: Tensor,
    att: Tensor,
    emb: Tensor,
    out: Tensor,
    /// Made by `cast` inside the step: allocated while recording and kept.
    copy: Option<Tensor>,
}

fn weights(be: &dyn Backend) -> Weights {
    let up = |v: Vec<f32>, s: &[usize]| be.upload(&host(v, s)).unwrap();
    let nw = cpu()
        .cast(&host(random_normal(13, C, 1.0), &[C]), DType::F16)
        .unwrap();
    Weights {
        table: up(random_normal(10, V * C, 1.0), &[V, C]),
        w: up(random_normal(11, C * C, 0.2), &[C, C]),
        bias: up(random_normal(12, C, 0.1), &[C]),
        norm_w: be.upload(&nw).unwrap(),
        norm_b: up(random_normal(14, C, 0.1), &[C]),
    }
}

fn state(be: &dyn Backend) -> State {
    let z = |s: &[usize]| be.zeros(s, DType::F32).unwrap();
    State {
        ids: be.zeros(&[B, 1], DType::U32).unwrap(),
        beams: be.zeros(&[B], DType::U32).unwrap(),
        cache: z(&[B, TCAP, C]),
        h: z(&[B, 1, C]),
        hn: z(&[B, 1, C]),
        att: z(&[B, 1, C]),
        emb: z(&[B, 1, C]),
        out: z(&[B, 1, C]),
        copy: None,
    }
}

/// Round `r`'s inputs, copied in outside any recording.
fn refill(be: &dyn Backend, s: &mut State, r: u64) {
    let ids: Vec<u32> = (0..B as u32)
        .map(|b| (b * 5 + r as u32 * 3) % V as u32)
        .collect();
    let beams: Vec<u32> = (0..B as u32).map(|b| (b + r as u32) % B as u32).collect();
    be.copy_from_host(&Tensor::from_u32(ids, [B, 1]).unwrap(), &mut s.ids)
        .unwrap();
    be.copy_from_host(&Tensor::from_u32(beams, [B]).unwrap(), &mut s.beams)
        .unwrap();
    let cache = host(random_normal(100 + r, B * TCAP * C, 1.0), &[B, TCAP, C]);
    be.copy_from_host(&cache, &mut s.cache).unwrap();
}

/// The step: the same calls recorded and run eagerly. `scratch` allocates a
/// tensor inside the step and drops it (a block freed while recording).
fn step(be: &dyn Backend, wt: &Weights, s: &mut State) -> Result<()> {
    be.embedding(&s.ids, &wt.table, 1.0, &mut s.emb)?;
    let mut scratch = be.zeros(&[B, 1, C], DType::F32)?;
    be.linear(&s.emb, &wt.w, Some(&wt.bias), &mut scratch)?;
    be.norm(
        NormKind::LayerNorm,
        &scratch,
        &wt.norm_w,
        Some(&wt.norm_b),
        1e-5,
        &mut s.hn,
    )?;
    drop(scratch);
    be.activation(&mut s.hn, Activation::Gelu)?;
    be.write_rows(&s.hn, &mut s.cache, POS)?;
    let p = AttentionParams {
        num_heads: HEADS,
        head_dim: C / HEADS,
        scale: 0.5,
        causal: true,
        q_offset: POS,
        kv_len: POS + 1,
        key_mask: None,
        position_bias: None,
        relative_bias: None,
        kv_index: None,
        operand_dtype: DType::F32,
    };
    be.attention(&s.hn, &s.cache, &s.cache, &p, &mut s.att)?;
    be.add_assign(&mut s.att, &s.emb)?;
    be.index_select(&s.att, &s.beams, &mut s.h)?;
    be.write_rows(&s.h, &mut s.out, 0)?;
    be.softmax(&mut s.out)?;
    // A device copy (cast to its own dtype) into a block allocated here.
    s.copy = Some(be.cast(&s.att, DType::F32)?);
    Ok(())
}

fn record(be: &dyn Backend, wt: &Weights, s: &mut State) -> CapturedGraph {
    assert!(
        be.begin_capture().expect("begin_capture"),
        "the CUDA backend records"
    );
    let r = step(be, wt, s);
    let g = be.end_capture();
    r.expect("the step while recording");
    g.expect("end_capture")
}

fn results(be: &dyn Backend, s: &State) -> Vec<(&'static str, Vec<f32>)> {
    let d = |t: &Tensor| be.download(t).unwrap().to_f32_vec().unwrap();
    vec![
        ("out", d(&s.out)),
        ("h", d(&s.h)),
        ("cache", d(&s.cache)),
        ("emb", d(&s.emb)),
        ("copy", d(s.copy.as_ref().expect("the step ran"))),
    ]
}

#[test]
fn replay_matches_eager_ops_with_new_inputs() {
    let _l = serial();
    let Some(be) = recorder("replay_matches_eager_ops_with_new_inputs") else {
        return;
    };
    let wt = weights(&be);
    let mut rec = state(&be);
    let mut eager = state(&be);
    refill(&be, &mut rec, 0);
    let graph = record(&be, &wt, &mut rec);
    let mut f = Failures::default();
    for r in 0..3 {
        refill(&be, &mut rec, r);
        refill(&be, &mut eager, r);
        be.replay(&graph).expect("replay");
        step(&be, &wt, &mut eager).expect("eager step");
        for ((name, got), (_, want)) in results(&be, &rec).into_iter().zip(results(&be, &eager)) {
            f.exact(&format!("round {r}: {name}"), &got, &want);
        }
        // The inputs change every round, so a replay that ran nothing or ran
        // with stale values would be caught.
        if r > 0 {
            assert_ne!(results(&be, &rec)[0].1, vec![0.0; B * C]);
        }
    }
    f.finish("replay against eager ops");
}

#[test]
fn host_crossings_fail_while_recording_and_the_backend_recovers() {
    let _l = serial();
    let Some(be) = recorder("host_crossings_fail_while_recording_and_the_backend_recovers") else {
        return;
    };
    let xv = random_normal(1, 2 * 8, 1.0);
    let x = be.upload(&host(xv.clone(), &[2, 8])).unwrap();
    let mut ids = be.zeros(&[2, 3], DType::U32).unwrap();
    let mut vals = be.zeros(&[2, 3], DType::F32).unwrap();
    let t0 = be.device_timestamp().unwrap().expect("a device timer");
    type Op<'a> = Box<dyn Fn(&CudaBackend) -> Result<()> + 'a>;
    let ops: Vec<(&str, Op)> = vec![
        (
            "upload",
            Box::new(|be| be.upload(&host(vec![1.0; 4], &[4])).map(drop)),
        ),
        ("download", Box::new(|be| be.download(&x).map(drop))),
        (
            "copy_from_host",
            Box::new(|be| {
                let mut d = be.zeros(&[2, 8], DType::F32)?;
                be.copy_from_host(&host(vec![0.0; 16], &[2, 8]), &mut d)
            }),
        ),
        (
            "copy_to_host",
            Box::new(|be| be.copy_to_host(&x, &mut Tensor::zeros([2, 8], DType::F32))),
        ),
        ("topk", Box::new(|be| be.topk(&x, 3).map(drop))),
        ("synchronize", Box::new(|be| be.synchronize())),
        (
            "device_timestamp",
            Box::new(|be| be.device_timestamp().map(drop)),
        ),
        (
            "device_elapsed_ns",
            Box::new(|be| be.device_elapsed_ns(&t0, &t0).map(drop)),
        ),
    ];
    for (name, op) in &ops {
        // (Made outside: a `zeros` while recording zeroes only when replayed.)
        let mut y = be.zeros(&[2, 8], DType::F32).unwrap();
        assert!(be.begin_capture().unwrap());
        // An op recorded before the failing one (never run).
        be.add_assign(&mut y, &x).unwrap();
        let e = op(&be).expect_err(name).to_string();
        assert!(
            e.contains(name) && e.contains("while recording a CUDA graph"),
            "{name}: unclear error {e:?}"
        );
        let end = be.end_capture().expect_err("end_capture after a failed op");
        assert!(end.to_string().contains("while recording"), "{name}: {end}");
        // Eager again: every kind of op works.
        be.add_assign(&mut y, &x).unwrap();
        check_exact(
            &format!("after {name}"),
            &be.download(&y).unwrap().to_f32_vec().unwrap(),
            &xv,
        );
        be.synchronize().unwrap();
    }
    // topk_into queues kernels only (its ids keep no host copy): it records.
    assert!(be.begin_capture().unwrap());
    be.topk_into(&x, 3, &mut ids, &mut vals).unwrap();
    let g = be.end_capture().unwrap();
    be.replay(&g).unwrap();
    let (want_i, want_v) = cpu().topk(&be.download(&x).unwrap(), 3).unwrap();
    assert_eq!(be.download(&ids).unwrap().to_u32_vec().unwrap(), want_i);
    assert_eq!(be.download(&vals).unwrap().to_f32_vec().unwrap(), want_v);
    // A recording that failed can be followed by one that works.
    let mut acc = be.zeros(&[2, 8], DType::F32).unwrap();
    assert!(be.begin_capture().unwrap());
    be.add_assign(&mut acc, &x).unwrap();
    let g = be.end_capture().unwrap();
    be.replay(&g).unwrap();
    check_exact(
        "recording after failures",
        &be.download(&acc).unwrap().to_f32_vec().unwrap(),
        &xv,
    );
}

#[test]
fn blocks_freed_while_recording_stay_with_the_graph() {
    let _l = serial();
    let Some(be) = recorder("blocks_freed_while_recording_stay_with_the_graph") else {
        return;
    };
    let wt = weights(&be);
    let mut rec = state(&be);
    refill(&be, &mut rec, 1);
    let graph = record(&be, &wt, &mut rec);
    let held = be.memory_stats();
    // Tensors made after the recording, of the sizes of the step's temporaries
    // (norm's f16 -> f32 weights, the scratch tensor): none may share a block
    // a replay writes.
    let mut bystanders = Vec::new();
    for i in 0..24u64 {
        let n = [C, B * C, 128][i as usize % 3];
        let v = random_normal(500 + i, n, 1.0);
        bystanders.push((be.upload(&host(v.clone(), &[n])).unwrap(), v));
    }
    for _ in 0..2 {
        be.replay(&graph).unwrap();
    }
    for (i, (t, v)) in bystanders.iter().enumerate() {
        check_exact(
            &format!("bystander {i} after replays"),
            &be.download(t).unwrap().to_f32_vec().unwrap(),
            v,
        );
    }
    drop(bystanders);
    // Dropping the graph returns its blocks to the shared free list.
    let before = be.memory_stats();
    drop(graph);
    let after = be.memory_stats();
    assert!(held.in_use_bytes > 0);
    let freed = before.in_use_bytes - after.in_use_bytes;
    assert!(
        freed > 0,
        "the graph held no blocks: {before:?} -> {after:?}"
    );
    assert_eq!(
        after.cached_bytes,
        before.cached_bytes + freed,
        "{before:?} -> {after:?}"
    );
    assert_eq!(after.reserved_bytes, before.reserved_bytes);
    // ... and they are handed out again without new driver allocations.
    let again = be.zeros(&[C], DType::F32).unwrap();
    let s = be.memory_stats();
    assert_eq!(s.driver_allocs, after.driver_allocs);
    assert_eq!(s.reuses, after.reuses + 1);
    drop(again);
    // The step's tensors still work eagerly after the graph is gone.
    step(&be, &wt, &mut rec).unwrap();
}

#[test]
fn recordings_do_not_nest() {
    let _l = serial();
    let Some(be) = recorder("recordings_do_not_nest") else {
        return;
    };
    assert!(be.end_capture().is_err(), "end_capture without a recording");
    let x = be.upload(&host(vec![1.5; 8], &[8])).unwrap();
    let mut acc = be.zeros(&[8], DType::F32).unwrap();
    assert!(be.begin_capture().unwrap());
    let e = be.begin_capture().unwrap_err().to_string();
    assert!(e.contains("already in progress"), "{e}");
    // The outer recording is unharmed.
    be.add_assign(&mut acc, &x).unwrap();
    let g = be.end_capture().unwrap();
    assert!(be.end_capture().is_err(), "a second end_capture");
    // An op whose argument checks fail queues nothing and leaves the
    // recording as it was (documented in crates/cuda/src/graph.rs).
    let mut acc2 = be.zeros(&[8], DType::F32).unwrap();
    assert!(be.begin_capture().unwrap());
    let bad = be.zeros(&[3], DType::F32).unwrap();
    assert!(be.add_assign(&mut acc2, &bad).is_err());
    be.add_assign(&mut acc2, &x).unwrap();
    let g2 = be.end_capture().unwrap();
    be.replay(&g2).unwrap();
    assert_eq!(
        be.download(&acc2).unwrap().to_f32_vec().unwrap(),
        vec![1.5; 8]
    );
    // Replaying while recording is refused (and fails that recording).
    assert!(be.begin_capture().unwrap());
    assert!(be
        .replay(&g)
        .unwrap_err()
        .to_string()
        .contains("while recording"));
    assert!(be.end_capture().is_err());
    // A graph of another backend is refused.
    if let Some(other) = private_gpu() {
        let e = other.replay(&g).unwrap_err().to_string();
        assert!(e.contains("another CUDA backend"), "{e}");
    }
    be.replay(&g).unwrap();
    assert_eq!(
        be.download(&acc).unwrap().to_f32_vec().unwrap(),
        vec![1.5; 8]
    );
}

#[test]
fn replays_are_queued_in_order() {
    let _l = serial();
    let Some(be) = recorder("replays_are_queued_in_order") else {
        return;
    };
    let xv = random_normal(3, 64, 1.0);
    let x = be.upload(&host(xv.clone(), &[64])).unwrap();
    let mut acc = be.zeros(&[64], DType::F32).unwrap();
    assert!(be.begin_capture().unwrap());
    be.add_assign(&mut acc, &x).unwrap();
    be.scale(&mut acc, 0.5).unwrap();
    let g = be.end_capture().unwrap();
    // Nothing ran while recording.
    assert_eq!(
        be.download(&acc).unwrap().to_f32_vec().unwrap(),
        vec![0.0; 64]
    );
    // Three replays and an eager op queued behind them, one download at the end.
    for _ in 0..3 {
        be.replay(&g).unwrap();
    }
    be.scale(&mut acc, 2.0).unwrap();
    let want: Vec<f32> = xv
        .iter()
        .map(|&v| {
            let mut a = 0f32;
            for _ in 0..3 {
                a = (a + v) * 0.5;
            }
            a * 2.0
        })
        .collect();
    check_exact(
        "three replays then scale",
        &be.download(&acc).unwrap().to_f32_vec().unwrap(),
        &want,
    );
}

#[test]
fn replay_allocates_no_host_memory() {
    let _l = serial();
    let Some(be) = recorder("replay_allocates_no_host_memory") else {
        return;
    };
    let wt = weights(&be);
    let mut rec = state(&be);
    refill(&be, &mut rec, 2);
    let graph = record(&be, &wt, &mut rec);
    be.replay(&graph).unwrap(); // warm (the emulator's own buffers)
    let before = CountingAlloc::count();
    for _ in 0..3 {
        be.replay(&graph).unwrap();
    }
    let made = CountingAlloc::count() - before;
    assert_eq!(made, 0, "3 replays made {made} host allocations");
    be.synchronize().unwrap();
}

/// Another thread's op waits while one thread records, and is not recorded:
/// it runs (once) after the recording ends, and replays do not repeat it.
#[test]
fn other_threads_wait_while_one_records() {
    let _serial = serial();
    let Some(be) = recorder("other_threads_wait_while_one_records") else {
        return;
    };
    let n = 64;
    let mut x = be.upload(&host(vec![1.0; n], &[n])).unwrap();
    let mut mine = be.upload(&host(vec![0.0; n], &[n])).unwrap();
    let one = be.upload(&host(vec![1.0; n], &[n])).unwrap();
    assert!(be.begin_capture().unwrap());
    be.add_assign(&mut mine, &one).unwrap();
    let started = std::sync::atomic::AtomicBool::new(false);
    let graph = std::thread::scope(|s| {
        let other = s.spawn(|| {
            started.store(true, std::sync::atomic::Ordering::SeqCst);
            // Waits until the recording ends, then runs.
            be.add_assign(&mut x, &one)
        });
        while !started.load(std::sync::atomic::Ordering::SeqCst) {
            std::thread::yield_now();
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
        let graph = be.end_capture().unwrap();
        other.join().unwrap().unwrap();
        graph
    });
    be.replay(&graph).unwrap();
    be.replay(&graph).unwrap();
    check_exact(
        "the other thread's op ran once",
        &be.download(&x).unwrap().to_f32_vec().unwrap(),
        &vec![2.0; n],
    );
    check_exact(
        "the recorded op ran once per replay",
        &be.download(&mine).unwrap().to_f32_vec().unwrap(),
        &vec![2.0; n],
    );
}
