//! The yardstick of issue 5's GEMM goal ("FP16 GEMM at >= 70% of cuBLAS on
//! large shapes"): `linear` with f16 weights (kernels/gemm_tc.cu, tensor cores)
//! next to cuBLAS `cublasGemmEx` (f16 x f16, f32 accumulation and output,
//! default algorithm with tensor ops) on the same shapes, in one run, and the
//! ratio. cuBLAS appears here only; the backend never calls it.
//!
//! Our `linear` reads f32 activations (rounded to f16 as they are staged in
//! shared memory), cuBLAS gets them already in f16: for M x K activations that
//! is 2 M K more bytes read by ours, small next to the 2 M N K FLOPs of these
//! shapes. Layout: out[M,N] = x[M,K] . W[N,K]^T row-major, which cuBLAS (column
//! major) computes as out^T = W . x^T, the "TN" GEMM (`transa = T`).
//!
//! Before timing, each shape checks that the two results agree (rel L2 < 1e-2;
//! a wrong yardstick must not pass for a fast one).
//!
//! Run: `cargo bench -p encdec-cuda --bench cublas_yardstick`. Without a CUDA
//! device, or without libcublas, it prints SKIP and exits 0.

use std::ffi::c_void;
use std::time::{Duration, Instant};

use cudarc::cublas::{result as blas, sys as blas_sys};
use encdec_core::testing::random_normal;
use encdec_core::{Backend, DType, Tensor};
use encdec_cuda::{device_ptr, CudaBackend, GemmPath};

/// (M, N, K): a square GEMM, and the FFN up / down projections of a
/// bart-large-sized layer over 2048 tokens.
const SHAPES: [(usize, usize, usize); 3] =
    [(4096, 4096, 4096), (2048, 4096, 1024), (2048, 1024, 4096)];

struct Blas(blas_sys::cublasHandle_t);

impl Drop for Blas {
    fn drop(&mut self) {
        // SAFETY: created by create_handle, destroyed once.
        let _ = unsafe { blas::destroy_handle(self.0) };
    }
}

/// `out = x16 . w16^T` by cuBLAS on the backend's stream.
fn cublas_linear(h: &Blas, x16: u64, w16: u64, out: u64, m: usize, n: usize, k: usize) {
    let (alpha, beta) = (1.0f32, 0.0f32);
    // SAFETY: x16 [m,k] f16, w16 [n,k] f16 and out [m,n] f32 are live device
    // buffers of those sizes; alpha/beta are host f32 (the default pointer mode).
    unsafe {
        blas::gemm_ex(
            h.0,
            blas_sys::cublasOperation_t::CUBLAS_OP_T,
            blas_sys::cublasOperation_t::CUBLAS_OP_N,
            n as i32,
            m as i32,
            k as i32,
            (&alpha as *const f32).cast::<c_void>(),
            w16 as *const c_void,
            blas_sys::cudaDataType::CUDA_R_16F,
            k as i32,
            x16 as *const c_void,
            blas_sys::cudaDataType::CUDA_R_16F,
            k as i32,
            (&beta as *const f32).cast::<c_void>(),
            out as *mut c_void,
            blas_sys::cudaDataType::CUDA_R_32F,
            n as i32,
            blas_sys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
            blas_sys::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT_TENSOR_OP,
        )
    }
    .expect("cublasGemmEx");
}

/// Median seconds per call of `f` over batches of calls filling ~1 s.
fn time(g: &CudaBackend, mut f: impl FnMut()) -> f64 {
    for _ in 0..3 {
        f();
    }
    g.synchronize().unwrap();
    let t = Instant::now();
    f();
    g.synchronize().unwrap();
    let once = t.elapsed().max(Duration::from_micros(1));
    let per_batch = ((0.1 / once.as_secs_f64()) as usize).clamp(1, 1000);
    let mut samples: Vec<f64> = (0..10)
        .map(|_| {
            g.synchronize().unwrap();
            let t = Instant::now();
            for _ in 0..per_batch {
                f();
            }
            g.synchronize().unwrap();
            t.elapsed().as_secs_f64() / per_batch as f64
        })
        .collect();
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

fn rel_l2(got: &[f32], want: &[f32]) -> f64 {
    let (mut d, mut r) = (0f64, 0f64);
    for (&g, &w) in got.iter().zip(want) {
        d += (f64::from(g) - f64::from(w)).powi(2);
        r += f64::from(w).powi(2);
    }
    (d / r.max(f64::MIN_POSITIVE)).sqrt()
}

fn main() {
    if !encdec_cuda::driver_present() {
        eprintln!("SKIP cublas_yardstick: no CUDA device (libcuda.so was not found)");
        return;
    }
    let g = match CudaBackend::new(0) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("SKIP cublas_yardstick: no CUDA device ({e})");
            return;
        }
    };
    // SAFETY: only tries to dlopen libcublas.
    let have_blas = std::panic::catch_unwind(|| unsafe { blas_sys::is_culib_present() });
    if !matches!(have_blas, Ok(true)) {
        eprintln!("SKIP cublas_yardstick: libcublas was not found");
        return;
    }
    let handle = Blas(blas::create_handle().expect("cublasCreate"));
    let stream = g.cu_stream().expect("a GPU stream");
    // SAFETY: both handles are live; cuBLAS's stream type is the driver's CUstream.
    unsafe { blas::set_stream(handle.0, stream as blas_sys::cudaStream_t) }
        .expect("cublasSetStream");
    g.set_gemm_path(GemmPath::Auto);
    println!("{}", g.describe());
    println!("| M x N x K | encdec linear f16 (TFLOP/s) | cuBLAS GemmEx f16 (TFLOP/s) | encdec / cuBLAS | check rel L2 |");
    println!("|---|---|---|---|---|");
    for (m, n, k) in SHAPES {
        let x = g
            .upload(&Tensor::from_f32(random_normal(1, m * k, 1.0), [m, k]).unwrap())
            .unwrap();
        let w_host = Tensor::from_f32(random_normal(2, n * k, 0.05), [n, k]).unwrap();
        let w16 = g.cast(&g.upload(&w_host).unwrap(), DType::F16).unwrap();
        let x16 = g.cast(&x, DType::F16).unwrap();
        let mut ours = g.zeros(&[m, n], DType::F32).unwrap();
        let theirs = g.zeros(&[m, n], DType::F32).unwrap();
        let (px16, pw16, pout) = (
            device_ptr(&x16).unwrap(),
            device_ptr(&w16).unwrap(),
            device_ptr(&theirs).unwrap(),
        );
        g.linear(&x, &w16, None, &mut ours).unwrap();
        cublas_linear(&handle, px16, pw16, pout, m, n, k);
        let err = rel_l2(
            &g.download(&ours).unwrap().to_f32_vec().unwrap(),
            &g.download(&theirs).unwrap().to_f32_vec().unwrap(),
        );
        assert!(
            err < 1e-2,
            "{m}x{n}x{k}: encdec and cuBLAS disagree (rel L2 {err:.2e})"
        );
        let flops = 2.0 * (m * n * k) as f64;
        let t_ours = time(&g, || g.linear(&x, &w16, None, &mut ours).unwrap());
        let t_blas = time(&g, || cublas_linear(&handle, px16, pw16, pout, m, n, k));
        println!(
            "| {m} x {n} x {k} | {:.1} | {:.1} | {:.0}% | {err:.1e} |",
            flops / t_ours * 1e-12,
            flops / t_blas * 1e-12,
            100.0 * t_blas / t_ours
        );
    }
}
