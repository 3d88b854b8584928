//! `encdec profile`: per-op time breakdown of one generation, sorted by cost,
//! with achieved GFLOP/s and GB/s against the device's peaks, and a Chrome
//! trace of every op call (`--trace FILE.json`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Result};
use clap::Args;
use encdec_core::profile::{cpu_peak_gflops, DevicePeaks, ModelDims, ProfiledBackend, Report};
use encdec_core::{Backend, DType};
use encdec_models::ModelConfig;
use serde_json::{json, Value};

use super::bench::{
    check_fits, generation_config, open_model, pick_backend, run_once, select_workloads,
    source_ids, BenchModelArgs, TimedModel,
};
use super::Format;

#[derive(Args, Debug)]
pub struct ProfileArgs {
    #[command(flatten)]
    pub model: BenchModelArgs,
    /// One workload of DESIGN.md (W1..W4).
    #[arg(long, default_value = "W1")]
    pub workload: String,
    #[arg(long)]
    pub batch: Option<usize>,
    #[arg(long)]
    pub src_len: Option<usize>,
    #[arg(long)]
    pub new_tokens: Option<usize>,
    #[arg(long)]
    pub num_beams: Option<usize>,
    /// Unprofiled runs before the profiled one.
    #[arg(long, default_value_t = 1)]
    pub warmup: usize,
    /// Write a Chrome/Perfetto trace (one event per op call) to FILE.json.
    #[arg(long)]
    pub trace: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
    /// Peak memory bandwidth in GB/s (default: measured, a multi-threaded read of 256 MiB).
    #[arg(long)]
    pub mem_bw: Option<f64>,
    /// CPU clock in GHz for the compute peak (default: cpuinfo_max_freq, else
    /// /proc/cpuinfo's "cpu MHz").
    #[arg(long)]
    pub clock_ghz: Option<f64>,
    /// FMA units per core for the compute peak (default 2).
    #[arg(long)]
    pub fma_units: Option<usize>,
}

/// The dimensions `linear` roles are inferred from.
pub fn model_dims(cfg: &ModelConfig) -> ModelDims {
    let info = cfg.info();
    let mut attn_inner = vec![info.heads * info.d_kv, info.decoder_heads * info.d_kv];
    let mut ffn = vec![info.ffn_dim];
    if let Some(b) = cfg.as_bart() {
        attn_inner = vec![b.d_model];
        ffn = vec![b.encoder_ffn_dim, b.decoder_ffn_dim];
    }
    attn_inner.dedup();
    ffn.dedup();
    let mut vocab = vec![info.vocab_size, cfg.target_vocab_size()];
    vocab.dedup();
    ModelDims {
        d_model: info.d_model,
        attn_inner,
        ffn,
        vocab,
    }
}

fn cpu_clock_ghz() -> Option<(f64, &'static str)> {
    if let Ok(s) = std::fs::read_to_string("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq")
    {
        if let Ok(khz) = s.trim().parse::<f64>() {
            return Some((khz / 1e6, "cpuinfo_max_freq"));
        }
    }
    let s = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let mhz: f64 = s
        .lines()
        .find(|l| l.starts_with("cpu MHz"))?
        .split_once(':')?
        .1
        .trim()
        .parse()
        .ok()?;
    Some((mhz / 1e3, "/proc/cpuinfo cpu MHz"))
}

/// Read bandwidth of `threads` threads summing 256 MiB (what weight-streaming
/// decode steps need), best of 3, in GB/s.
pub fn measure_mem_bw(threads: usize) -> f64 {
    let n: usize = 32 << 20; // u64 elements: 256 MiB
    let src: Vec<u64> = (0..n as u64).collect();
    let chunk = n.div_ceil(threads.max(1));
    let mut best = 0.0f64;
    for _ in 0..3 {
        let t = Instant::now();
        let total: u64 = std::thread::scope(|s| {
            let hs: Vec<_> = src
                .chunks(chunk)
                .map(|c| {
                    s.spawn(move || {
                        // eight independent sums so the loop vectorises
                        let mut acc = [0u64; 8];
                        for block in c.chunks_exact(8) {
                            for (a, x) in acc.iter_mut().zip(block) {
                                *a = a.wrapping_add(*x);
                            }
                        }
                        acc.iter().fold(0u64, |x, y| x.wrapping_add(*y))
                    })
                })
                .collect();
            hs.into_iter()
                .map(|h| h.join().unwrap_or(0))
                .fold(0u64, u64::wrapping_add)
        });
        let secs = t.elapsed().as_secs_f64();
        std::hint::black_box(total);
        best = best.max((n * 8) as f64 / secs / 1e9);
    }
    best
}

/// Compute and bandwidth peaks of the device `backend` runs on.
fn device_peaks(
    args: &ProfileArgs,
    backend: &dyn Backend,
    dtype: DType,
    threads: usize,
) -> DevicePeaks {
    if let Some(mut p) = backend.device_peaks(dtype) {
        // A GPU's peaks come from its attributes; --mem-bw still overrides.
        if let Some(bw) = args.mem_bw {
            p.gbs = bw;
            p.description
                .push_str(&format!("; --mem-bw {bw} GB/s used instead"));
        }
        return p;
    }
    let isa = encdec_cpu::isa::active();
    let lanes = match isa {
        encdec_cpu::isa::Isa::Avx512 => 16,
        encdec_cpu::isa::Isa::Avx2 => 8,
        encdec_cpu::isa::Isa::Neon => 4,
        encdec_cpu::isa::Isa::Scalar => 1,
    };
    let fma = args.fma_units.unwrap_or(2);
    let (clock, clock_src) = match args.clock_ghz {
        Some(c) => (c, "--clock-ghz"),
        None => cpu_clock_ghz().unwrap_or((0.0, "unknown clock")),
    };
    let (bw, bw_src) = match args.mem_bw {
        Some(b) => (b, "--mem-bw".to_string()),
        None => (
            measure_mem_bw(threads),
            format!("measured read, {threads} threads"),
        ),
    };
    DevicePeaks {
        gflops: cpu_peak_gflops(clock, threads, fma, lanes),
        gbs: bw,
        description: format!(
            "{}: {clock:.2} GHz ({clock_src}) x {threads} cores x {fma} FMA x {lanes} f32 lanes x 2; \
             bandwidth: {bw_src}",
            backend.describe()
        ),
    }
}

fn report_json(r: &Report) -> Value {
    let rows: Vec<Value> = r
        .rows
        .iter()
        .map(|row| {
            json!({
                "op": row.op,
                "role": row.role,
                "calls": row.calls,
                "time_ms": row.total_ns as f64 * 1e-6,
                "share": row.share,
                "flops": row.flops,
                "bytes": row.bytes,
                "gflops_per_s": row.gflops_per_s,
                "gb_per_s": row.gb_per_s,
                "pct_peak_flops": row.frac_peak_flops * 100.0,
                "pct_peak_bw": row.frac_peak_bw * 100.0,
            })
        })
        .collect();
    let phases: serde_json::Map<String, Value> = r
        .phases
        .iter()
        .map(|(p, ns)| (p.clone(), json!(*ns as f64 * 1e-6)))
        .collect();
    let spans: serde_json::Map<String, Value> = r
        .span_totals
        .iter()
        .map(|(p, ns)| (p.clone(), json!(*ns as f64 * 1e-6)))
        .collect();
    json!({
        "wall_ms": r.wall_ns as f64 * 1e-6,
        "ops_ms": r.ops_ns as f64 * 1e-6,
        "calls": r.calls,
        "peaks": {"gflops": r.peaks.gflops, "gb_per_s": r.peaks.gbs, "description": r.peaks.description},
        "rows": rows,
        "op_ms_by_phase": phases,
        "span_ms": spans,
    })
}

pub fn run(args: ProfileArgs) -> Result<()> {
    let ws = select_workloads(
        Some(&args.workload),
        args.batch,
        args.src_len,
        args.new_tokens,
        args.num_beams,
    )?;
    let [w] = ws.as_slice() else {
        bail!("--workload: profile runs one workload (got {})", ws.len());
    };
    let (device, inner) = pick_backend(args.model.device.as_deref(), args.model.threads)?;
    let (_, cfg, _) = super::bench::model_config(&args.model)?;
    let prof = Arc::new(ProfiledBackend::new(inner, Some(model_dims(&cfg))));
    prof.set_enabled(false);
    let bm = open_model(&args.model, device, prof.clone())?;
    let model = bm.model.as_ref();
    check_fits(model.spec(), w)?;
    let gcfg = generation_config(&bm.config, w)?;
    let sources = source_ids(w.batch, w.src_len, bm.config.info().vocab_size);

    let plain = TimedModel::new(model, None);
    for _ in 0..args.warmup {
        run_once(&plain, &gcfg, &sources, w)?;
    }
    let peaks = device_peaks(&args, prof.inner().as_ref(), bm.dtype, bm.threads);

    prof.reset();
    prof.set_enabled(true);
    let timed = TimedModel::new(model, Some(&prof));
    let t0 = prof.now_ns();
    let timing = run_once(&timed, &gcfg, &sources, w)?;
    let wall = prof.now_ns() - t0;
    prof.set_enabled(false);

    let report = prof.report(&peaks, Some(wall))?;
    if let Some(path) = &args.trace {
        prof.write_chrome_trace(path)?;
    }
    // Ops on a device with a timer are timed by its events (and not waited
    // for one by one); elsewhere by the host's clock around each call.
    let op_clock = if prof.device_timed() == Some(true) {
        "device"
    } else {
        "host"
    };
    let head = format!(
        "encdec profile: {}, {} {}, {} threads; workload {} (batch {}, src {}, new {}, beams {}): \
         {:.1} tokens/s while profiled",
        bm.name,
        bm.device,
        bm.dtype,
        bm.threads,
        w.name,
        w.batch,
        w.src_len,
        w.new_tokens,
        w.num_beams,
        (w.batch * w.new_tokens) as f64 / timing.wall_s
    );
    match args.format {
        Format::Text => {
            println!("{head}");
            if op_clock == "device" {
                println!("op times: device clock (CUDA events around each op)");
                // Per-op times need the ops queued one by one.
                println!(
                    "decode steps run op by op here; `encdec bench` replays them as CUDA graphs"
                );
            }
            println!();
            print!("{}", report.to_text());
            if let Some(path) = &args.trace {
                println!(
                    "trace: {} ({} op events; open in chrome://tracing or ui.perfetto.dev)",
                    path.display(),
                    report.calls
                );
            }
        }
        Format::Json => {
            let mut v = report_json(&report);
            v["model"] = json!(bm.name);
            v["device"] = json!(bm.device);
            v["dtype"] = json!(bm.dtype.as_str());
            v["threads"] = json!(bm.threads);
            v["workload"] = json!({
                "workload": w.name, "batch": w.batch, "src_len": w.src_len,
                "new_tokens": w.new_tokens, "num_beams": w.num_beams,
            });
            v["tokens_per_s"] = json!((w.batch * w.new_tokens) as f64 / timing.wall_s);
            v["op_clock"] = json!(op_clock);
            if let Some(path) = &args.trace {
                v["trace"] = json!(path.display().to_string());
            }
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
    }
    Ok(())
}
