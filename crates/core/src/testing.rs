//! Shared test helpers: seeded random inputs and a comparison that explains itself.

use rand::{Rng, SeedableRng};

/// `n` uniform values in `[-1, 1)` from `seed`.
pub fn random_vec(seed: u64, n: usize) -> Vec<f32> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..n).map(|_| rng.gen_range(-1.0f32..1.0)).collect()
}

/// `n` standard-normal-ish values (sum of uniforms) from `seed`, scaled.
pub fn random_normal(seed: u64, n: usize, std: f32) -> Vec<f32> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..n)
        .map(|_| {
            let s: f32 = (0..4).map(|_| rng.gen_range(-1.0f32..1.0)).sum();
            s * std * (3.0f32 / 4.0).sqrt()
        })
        .collect()
}

/// Tolerances of a comparison: relative L2 bound and per-element `abs + rel * |ref|` bound.
#[derive(Debug, Clone, Copy)]
pub struct Tol {
    pub rel_l2: f64,
    pub abs: f64,
    pub rel: f64,
}

impl Tol {
    pub const F32: Tol = Tol {
        rel_l2: 1e-5,
        abs: 1e-5,
        rel: 1e-4,
    };
    pub const HALF: Tol = Tol {
        rel_l2: 1e-2,
        abs: 1e-2,
        rel: 2e-2,
    };
}

/// Compare `got` with `want`; on failure return a report in llm.c's
/// `validate_result` style (first pairs, first mismatches, max abs and rel L2).
pub fn compare(what: &str, got: &[f32], want: &[f64], tol: Tol) -> Result<(), String> {
    if got.len() != want.len() {
        return Err(format!(
            "{what}: length {} vs reference {}",
            got.len(),
            want.len()
        ));
    }
    let mut num = 0.0f64;
    let mut den = 0.0f64;
    let mut max_abs = 0.0f64;
    let mut bad = Vec::new();
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let g = g as f64;
        let d = (g - w).abs();
        // NaN compares false everywhere, so test for it explicitly.
        if (g.is_nan() || d > tol.abs + tol.rel * w.abs()) && bad.len() < 10 {
            bad.push(format!("  [{i}] got {g} want {w} (diff {d:e})"));
        }
        if g.is_nan() {
            max_abs = f64::NAN;
        } else if d > max_abs {
            max_abs = d;
        }
        num += (g - w) * (g - w);
        den += w * w;
    }
    let rel_l2 = if den > 0.0 {
        (num / den).sqrt()
    } else {
        num.sqrt()
    };
    if bad.is_empty() && rel_l2 <= tol.rel_l2 && !rel_l2.is_nan() {
        return Ok(());
    }
    let first: Vec<String> = got
        .iter()
        .zip(want)
        .take(5)
        .map(|(g, w)| format!("{g} vs {w}"))
        .collect();
    Err(format!(
        "{what}: rel L2 {rel_l2:e} (bound {:e}), max abs {max_abs:e}, {} elements\n first: {}\n mismatches:\n{}",
        tol.rel_l2,
        got.len(),
        first.join(", "),
        bad.join("\n")
    ))
}

/// A global allocator that counts allocations and reallocations, for tests that
/// check a loop allocates nothing. Install it in the test crate:
/// `#[global_allocator] static ALLOC: CountingAlloc = CountingAlloc;`
/// and read [`CountingAlloc::count`] before and after the code under test.
pub struct CountingAlloc;

static ALLOCATIONS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

impl CountingAlloc {
    /// Allocations and reallocations so far, on all threads.
    pub fn count() -> usize {
        ALLOCATIONS.load(std::sync::atomic::Ordering::Relaxed)
    }
}

// SAFETY: forwards every call to the system allocator unchanged.
unsafe impl std::alloc::GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // SAFETY: the caller's contract is passed on.
        unsafe { std::alloc::System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        // SAFETY: as above.
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { std::alloc::System.realloc(ptr, layout, new_size) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compare_rejects_nan_and_large_errors() {
        assert!(compare("ok", &[1.0, 2.0], &[1.0, 2.0], Tol::F32).is_ok());
        assert!(compare("nan", &[f32::NAN, 2.0], &[1.0, 2.0], Tol::F32).is_err());
        assert!(compare("off", &[1.1, 2.0], &[1.0, 2.0], Tol::F32).is_err());
        assert!(compare("len", &[1.0], &[1.0, 2.0], Tol::F32).is_err());
    }
}
