//! `encdec profile` on the CUDA backend: op times come from device timestamps
//! (CUDA events; on the emulator, the host clock at each mark, since the
//! emulator runs a launch to completion), the profiler does not wait between
//! ops, the results are the unprofiled ones, and the trace names the device
//! clock.

mod common;

use std::sync::Arc;
use std::time::Instant;

use common::*;
use encdec_core::profile::ProfiledBackend;
use encdec_core::testing::random_normal;
use encdec_core::{Backend, NormKind};

#[test]
fn profiled_ops_are_timed_by_device_events() {
    let g = gpu_or_skip!("profiled_ops_are_timed_by_device_events");
    let prof = ProfiledBackend::new(g.be.clone(), None);
    let (m, k, n) = (33usize, 96usize, 130usize);
    let x = up(&g, &host(random_normal(1, m * k, 1.0), &[m, k]));
    let w = up(&g, &host(random_normal(2, n * k, 0.1), &[n, k]));
    let gamma = up(&g, &host(random_normal(3, n, 1.0), &[n]));

    let t0 = prof.now_ns();
    let started = Instant::now();
    let mut y = poisoned(&g, &[m, n]);
    prof.linear(&x, &w, None, &mut y).unwrap();
    let mut z = poisoned(&g, &[m, n]);
    prof.norm(NormKind::RmsNorm, &y, &gamma, None, 1e-6, &mut z)
        .unwrap();
    prof.softmax(&mut z).unwrap();
    prof.synchronize().unwrap();
    let wall_ns = started.elapsed().as_nanos() as u64;

    // Profiling changes no result.
    let mut y2 = poisoned(&g, &[m, n]);
    g.linear(&x, &w, None, &mut y2).unwrap();
    let mut z2 = poisoned(&g, &[m, n]);
    g.norm(NormKind::RmsNorm, &y2, &gamma, None, 1e-6, &mut z2)
        .unwrap();
    g.softmax(&mut z2).unwrap();
    check_exact("profiled vs plain", &down(&g, &z), &down(&g, &z2));

    let ev = prof.events().unwrap();
    let ops: Vec<&str> = ev.iter().map(|e| e.op).collect();
    assert_eq!(ops, ["linear", "norm", "softmax"]);
    if g.cuda.is_none() {
        // ENCDEC_CUDA_TESTS_ON_CPU: a CPU backend has no device timer.
        assert_eq!(prof.device_timed(), Some(false));
        return;
    }
    assert_eq!(prof.device_timed(), Some(true));
    // One stream: ops follow one another on the device clock, inside the
    // host's view of the whole run.
    for e in &ev {
        assert!(e.start_ns >= t0, "{e:?} starts before the run");
        assert!(
            e.start_ns + e.dur_ns <= t0 + wall_ns,
            "{e:?} ends after the run"
        );
    }
    for w in ev.windows(2) {
        assert!(
            w[1].start_ns >= w[0].start_ns + w[0].dur_ns,
            "{:?} overlaps {:?}",
            w[1],
            w[0]
        );
    }
    let linear = &ev[0];
    assert!(linear.dur_ns > 0, "{linear:?}");
    let trace = prof.chrome_trace().unwrap();
    assert!(trace.contains("\"ops (device clock, CUDA events)\""));
    assert_eq!(trace.matches("\"cat\":\"op\"").count(), 3);
}

#[test]
fn device_timestamps_measure_the_work_between_them() {
    let g = gpu_or_skip!("device_timestamps_measure_the_work_between_them");
    let Some(cuda) = g.cuda.clone() else {
        eprintln!("NOTE device_timestamps_measure_the_work_between_them: a CPU backend has no device timer");
        assert!(g.device_timestamp().unwrap().is_none());
        return;
    };
    let be: Arc<dyn Backend> = cuda;
    let (m, k, n) = (64usize, 256usize, 256usize);
    let x = up(&g, &host(random_normal(4, m * k, 1.0), &[m, k]));
    let w = up(&g, &host(random_normal(5, n * k, 0.1), &[n, k]));
    let mut y = poisoned(&g, &[m, n]);
    let a = be.device_timestamp().unwrap().unwrap();
    let b = be.device_timestamp().unwrap().unwrap();
    for _ in 0..3 {
        be.linear(&x, &w, None, &mut y).unwrap();
    }
    let c = be.device_timestamp().unwrap().unwrap();
    let empty = be.device_elapsed_ns(&a, &b).unwrap();
    let three = be.device_elapsed_ns(&b, &c).unwrap();
    assert!(
        three > empty,
        "three GEMMs {three} ns vs nothing {empty} ns"
    );
    // Timestamps of another backend are refused, not misread.
    let foreign = encdec_core::DeviceTimestamp::new(0u64);
    let err = be.device_elapsed_ns(&a, &foreign).unwrap_err().to_string();
    assert!(err.contains("not made by a CUDA backend"), "{err}");
}
