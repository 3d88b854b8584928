//! `encdec bench`: end-to-end throughput and latency of fixed-length generation.
//!
//! Every run generates exactly `new_tokens` tokens per sequence (EOS disabled,
//! no processors) from deterministic source ids, so that any engine given the
//! same workload does the same work. The JSON schema is documented in
//! docs/bench.md; `tools/bench_peers.py` writes the same schema for
//! transformers and CTranslate2.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use encdec_core::profile::ProfiledBackend;
use encdec_core::{Backend, Tensor};
use encdec_generate::{
    DecoderState, EncoderOutput, GenerationConfig, GenerationOverrides, Generator, ModelSpec,
    Seq2SeqModel,
};
use encdec_models::{catalogue, ModelConfig};
use serde_json::{json, Value};

use super::generate::{make_backend, parse_dtype};
use super::Format;

/// The catalogue shape used when no model is named.
pub const DEFAULT_ARCH: &str = "t5-small";

/// Where the benchmarked model comes from and what it runs on (bench, profile).
#[derive(Args, Debug, Clone, Default)]
pub struct BenchModelArgs {
    /// A local Hugging Face checkpoint directory or a hub id (real weights).
    #[arg(long, conflicts_with_all = ["arch", "random_weights"])]
    pub model: Option<String>,
    /// A catalogue shape (`encdec info --list`: t5-small, bart-large-cnn,
    /// opus-mt-en-de, ...), built with random weights.
    #[arg(long)]
    pub arch: Option<String>,
    /// Random weights with the exact shapes of --arch (default t5-small).
    #[arg(long)]
    pub random_weights: bool,
    /// cpu, cuda or cuda:N (default: the best device present).
    #[arg(long)]
    pub device: Option<String>,
    /// Weight dtype: f32, f16, bf16 or int8.
    #[arg(long, default_value = "f32")]
    pub dtype: String,
    /// CPU threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Seed of the random weights.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

impl BenchModelArgs {
    /// Whether any model source flag was given.
    fn names_a_model(&self) -> bool {
        self.model.is_some() || self.arch.is_some() || self.random_weights
    }
}

#[derive(Args, Debug)]
pub struct BenchArgs {
    #[command(flatten)]
    pub model: BenchModelArgs,
    /// Workloads of DESIGN.md, comma-separated: W1 (latency), W2 (batch 16),
    /// W3 (beam 4), W4 (512-token source). Default: all four.
    #[arg(long)]
    pub workload: Option<String>,
    /// Custom shape: overrides the batch of the selected workloads (alone: a
    /// workload "custom" based on W1).
    #[arg(long)]
    pub batch: Option<usize>,
    /// Custom source length in tokens.
    #[arg(long)]
    pub src_len: Option<usize>,
    /// Custom number of generated tokens per sequence.
    #[arg(long)]
    pub new_tokens: Option<usize>,
    /// Custom number of beams (1: greedy).
    #[arg(long)]
    pub num_beams: Option<usize>,
    /// Untimed runs per workload before the timed ones (default 1).
    #[arg(long)]
    pub warmup: Option<usize>,
    /// Timed runs per workload (default 5; the no-argument quick default: 3).
    #[arg(long)]
    pub runs: Option<usize>,
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
    /// Write the JSON report to FILE (whatever --format says).
    #[arg(long)]
    pub save: Option<PathBuf>,
    /// Compare with a saved report; exit non-zero when a workload's tokens/s is
    /// more than --threshold percent below the saved one.
    #[arg(long)]
    pub compare: Option<PathBuf>,
    /// Regression threshold of --compare, in percent.
    #[arg(long, default_value_t = 10.0)]
    pub threshold: f64,
    /// A JSON file of tools/bench_peers.py: print encdec next to those engines.
    #[arg(long)]
    pub compare_peers: Option<PathBuf>,
    /// Use a saved report (from --save) as this run instead of measuring: replays
    /// --compare, --compare-peers and --plot on it.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Draw tokens/s per engine and workload as a bar chart (FILE.svg or FILE.png).
    #[arg(long)]
    pub plot: Option<PathBuf>,
}

// -----------------------------------------------------------------------------
// workloads and inputs
// -----------------------------------------------------------------------------

/// One fixed-length generation shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workload {
    pub name: String,
    pub batch: usize,
    pub src_len: usize,
    pub new_tokens: usize,
    pub num_beams: usize,
}

/// DESIGN.md's workloads.
pub fn standard_workloads() -> Vec<Workload> {
    let w = |name: &str, batch, src_len, num_beams| Workload {
        name: name.to_string(),
        batch,
        src_len,
        new_tokens: 64,
        num_beams,
    };
    vec![
        w("W1", 1, 32, 1),
        w("W2", 16, 64, 1),
        w("W3", 4, 128, 4),
        w("W4", 1, 512, 1),
    ]
}

/// Parse `--workload W1,W2` (case-insensitive) and apply the custom overrides.
pub fn select_workloads(
    list: Option<&str>,
    batch: Option<usize>,
    src_len: Option<usize>,
    new_tokens: Option<usize>,
    num_beams: Option<usize>,
) -> Result<Vec<Workload>> {
    let std = standard_workloads();
    let custom =
        batch.is_some() || src_len.is_some() || new_tokens.is_some() || num_beams.is_some();
    let mut out = match list {
        Some(l) => {
            let mut v = Vec::new();
            for name in l.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                let w = std
                    .iter()
                    .find(|w| w.name.eq_ignore_ascii_case(name))
                    .ok_or_else(|| anyhow!("--workload {name}: unknown (known: W1, W2, W3, W4)"))?;
                v.push(w.clone());
            }
            if v.is_empty() {
                bail!("--workload: no workload named");
            }
            v
        }
        None if custom => {
            let mut w = std[0].clone();
            w.name = "custom".into();
            vec![w]
        }
        None => std,
    };
    for w in &mut out {
        if custom && list.is_some() {
            w.name = format!("{}-custom", w.name);
        }
        w.batch = batch.unwrap_or(w.batch);
        w.src_len = src_len.unwrap_or(w.src_len);
        w.new_tokens = new_tokens.unwrap_or(w.new_tokens);
        w.num_beams = num_beams.unwrap_or(w.num_beams);
        for (flag, v) in [
            ("--batch", w.batch),
            ("--src-len", w.src_len),
            ("--new-tokens", w.new_tokens),
            ("--num-beams", w.num_beams),
        ] {
            if v == 0 {
                bail!("{flag} must be at least 1");
            }
        }
    }
    Ok(out)
}

/// Deterministic source ids: `batch` rows of `src_len` ids in `[10, span + 10)`,
/// `span = min(vocab, 32000) - 20`, which avoids every special id of the
/// catalogue (0..3 and the last ids of a vocabulary). tools/bench_peers.py
/// computes the same ids.
pub fn source_ids(batch: usize, src_len: usize, vocab: usize) -> Vec<Vec<u32>> {
    let span = vocab.min(32000).saturating_sub(20).max(1);
    (0..batch)
        .map(|b| {
            (0..src_len)
                .map(|t| (10 + (b * 131 + t * 7919 + (b * t) % 17) % span) as u32)
                .collect()
        })
        .collect()
}

/// Nearest-rank percentile of `v` (sorted or not); None when empty.
pub fn percentile(v: &[f64], p: f64) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * s.len() as f64).ceil() as usize;
    Some(s[rank.clamp(1, s.len()) - 1])
}

fn median(v: &[f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    Some(if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    })
}

// -----------------------------------------------------------------------------
// the model
// -----------------------------------------------------------------------------

/// A model ready to benchmark.
pub struct BenchModel {
    /// e.g. "t5-small (random weights)" or the checkpoint path.
    pub name: String,
    pub config: ModelConfig,
    pub model: Box<dyn Seq2SeqModel>,
    pub dtype: encdec_core::DType,
    pub device: String,
    pub threads: usize,
    pub load_s: f64,
}

/// The device `--device` names, or the best one present (CUDA when its backend
/// can start, else the CPU).
pub fn pick_backend(
    device: Option<&str>,
    threads: Option<usize>,
) -> Result<(String, Arc<dyn Backend>)> {
    match device {
        Some(d) => Ok((d.to_string(), make_backend(d, threads)?)),
        None => {
            if encdec_cuda::driver_present() {
                if let Ok(b) = make_backend("cuda", threads) {
                    return Ok(("cuda".to_string(), b));
                }
            }
            Ok(("cpu".to_string(), make_backend("cpu", threads)?))
        }
    }
}

/// The config of the model `args` names (catalogue shape or checkpoint).
pub fn model_config(args: &BenchModelArgs) -> Result<(String, ModelConfig, Option<PathBuf>)> {
    match &args.model {
        Some(m) => {
            let dir = crate::hub::resolve_model(m)?;
            let cfg = ModelConfig::from_dir(&dir)?;
            Ok((m.clone(), cfg, Some(dir)))
        }
        None => {
            let name = args.arch.as_deref().unwrap_or(DEFAULT_ARCH);
            let cfg = catalogue::get(name).map_err(|e| anyhow!("--arch {name}: {e}"))?;
            Ok((format!("{name} (random weights)"), cfg, None))
        }
    }
}

/// Build the model `args` names on `backend`.
pub fn open_model(
    args: &BenchModelArgs,
    device: String,
    backend: Arc<dyn Backend>,
) -> Result<BenchModel> {
    let dtype = parse_dtype(&args.dtype)?;
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let (name, config, dir) = model_config(args)?;
    let (loaded_dtype, note) = encdec_models::weight_dtype_for(&config, backend.device(), dtype);
    if let Some(note) = note {
        eprintln!("note: {note}");
    }
    let t0 = Instant::now();
    let model = match dir {
        Some(dir) => encdec_models::load_model(&dir, backend, dtype)?.model,
        None => encdec_models::random_model(&config, args.seed, backend, dtype)?,
    };
    Ok(BenchModel {
        name,
        config,
        model,
        // What the weights are, which the results name (T5 f16 on a GPU loads bf16).
        dtype: loaded_dtype,
        device,
        threads,
        load_s: t0.elapsed().as_secs_f64(),
    })
}

/// Fixed-length generation settings: exactly `new_tokens` tokens, EOS disabled,
/// no processors; the decoder start and pad ids of the model's config.
pub fn generation_config(cfg: &ModelConfig, w: &Workload) -> Result<GenerationConfig> {
    let start = cfg
        .decoder_start_token_id()
        .or(cfg.bos_token_id())
        .ok_or_else(|| anyhow!("the model config has no decoder_start_token_id"))?;
    let mut file = json!({ "decoder_start_token_id": start });
    if let Some(p) = cfg.pad_token_id() {
        file["pad_token_id"] = json!(p);
    }
    let over = GenerationOverrides {
        max_new_tokens: Some(w.new_tokens),
        min_new_tokens: Some(w.new_tokens),
        num_beams: Some(w.num_beams),
        eos_token_id: Some(Vec::new()),
        ..Default::default()
    };
    Ok(GenerationConfig::from_values(&file, &over)?)
}

/// Check that `w` fits the model's positions.
pub fn check_fits(spec: &ModelSpec, w: &Workload) -> Result<()> {
    if let Some(max) = spec.max_source_positions {
        if w.src_len > max {
            bail!(
                "workload {}: source of {} tokens exceeds the model's {max} source positions",
                w.name,
                w.src_len
            );
        }
    }
    if let Some(max) = spec.max_target_positions {
        if w.new_tokens + 1 > max {
            bail!(
                "workload {}: {} new tokens exceed the model's {max} target positions",
                w.name,
                w.new_tokens
            );
        }
    }
    Ok(())
}

// -----------------------------------------------------------------------------
// timing wrapper
// -----------------------------------------------------------------------------

#[derive(Debug, Default)]
struct Rec {
    encode: Vec<Duration>,
    steps: Vec<Duration>,
    first_step_end: Option<Instant>,
    last_step_end: Option<u64>,
}

/// A model wrapper that times encoder calls and decoder steps; with a profiler
/// it also labels op phases ("encode", "decode") and records host spans
/// (encode, each step, and the search between steps).
pub struct TimedModel<'a> {
    inner: &'a dyn Seq2SeqModel,
    profiler: Option<&'a ProfiledBackend>,
    rec: Mutex<Rec>,
}

impl<'a> TimedModel<'a> {
    pub fn new(inner: &'a dyn Seq2SeqModel, profiler: Option<&'a ProfiledBackend>) -> Self {
        TimedModel {
            inner,
            profiler,
            rec: Mutex::new(Rec::default()),
        }
    }

    fn rec(&self) -> std::sync::MutexGuard<'_, Rec> {
        self.rec.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Forget what was timed (before each run).
    pub fn clear(&self) {
        *self.rec() = Rec::default();
    }

    /// (encoder seconds, step seconds, end of the first step).
    fn take(&self) -> (f64, Vec<f64>, Option<Instant>) {
        let r = std::mem::take(&mut *self.rec());
        (
            r.encode.iter().map(Duration::as_secs_f64).sum(),
            r.steps.iter().map(Duration::as_secs_f64).collect(),
            r.first_step_end,
        )
    }
}

impl Seq2SeqModel for TimedModel<'_> {
    fn spec(&self) -> &ModelSpec {
        self.inner.spec()
    }
    fn backend(&self) -> &dyn Backend {
        self.inner.backend()
    }
    fn encode(&self, sources: &[Vec<u32>]) -> encdec_core::Result<EncoderOutput> {
        if let Some(p) = self.profiler {
            p.set_phase("encode");
        }
        let p0 = self.profiler.map(ProfiledBackend::now_ns);
        let t = Instant::now();
        let r = self.inner.encode(sources);
        let d = t.elapsed();
        if let (Some(p), Some(p0)) = (self.profiler, p0) {
            p.record_span("encode", "encode", p0, p.now_ns());
            p.set_phase("decode");
        }
        self.rec().encode.push(d);
        r
    }
    fn start(
        &self,
        enc: &EncoderOutput,
        source_of_row: &[u32],
        capacity: usize,
    ) -> encdec_core::Result<DecoderState> {
        self.inner.start(enc, source_of_row, capacity)
    }
    fn step(
        &self,
        enc: &EncoderOutput,
        state: &mut DecoderState,
        tokens: &[u32],
        logits: &mut Tensor,
    ) -> encdec_core::Result<()> {
        self.timed_step(|| self.inner.step(enc, state, tokens, logits))
    }
    fn step_on_backend(
        &self,
        enc: &EncoderOutput,
        state: &mut DecoderState,
        tokens: &[u32],
        logits: &mut Tensor,
    ) -> encdec_core::Result<()> {
        // Waits for the device, so that a step's time is its own and not the
        // search's (which reads the step's candidates back).
        self.timed_step(|| {
            self.inner.step_on_backend(enc, state, tokens, logits)?;
            self.inner.backend().synchronize()
        })
    }
    fn step_on_backend_then(
        &self,
        enc: &EncoderOutput,
        state: &mut DecoderState,
        tokens: &[u32],
        logits: &mut Tensor,
        then: encdec_generate::Then<'_>,
    ) -> encdec_core::Result<()> {
        // The search ops queued with the step are timed with it (they are
        // recorded and replayed together).
        self.timed_step(|| {
            self.inner
                .step_on_backend_then(enc, state, tokens, logits, then)?;
            self.inner.backend().synchronize()
        })
    }
    fn select_rows(&self, state: &mut DecoderState, rows: &[u32]) -> encdec_core::Result<()> {
        self.inner.select_rows(state, rows)
    }
}

impl TimedModel<'_> {
    /// Runs one decoder step `f`, recording its time (and a profiler span).
    fn timed_step(&self, f: impl FnOnce() -> encdec_core::Result<()>) -> encdec_core::Result<()> {
        let p0 = self.profiler.map(ProfiledBackend::now_ns);
        if let (Some(p), Some(p0)) = (self.profiler, p0) {
            if let Some(last) = self.rec().last_step_end {
                p.record_span("search", "search", last, p0);
            }
        }
        let t = Instant::now();
        let r = f();
        let end = Instant::now();
        let mut rec = self.rec();
        rec.steps.push(end - t);
        rec.first_step_end.get_or_insert(end);
        if let (Some(p), Some(p0)) = (self.profiler, p0) {
            let e = p.now_ns();
            p.record_span(&format!("step {}", rec.steps.len() - 1), "step", p0, e);
            rec.last_step_end = Some(e);
        }
        r
    }
}

// -----------------------------------------------------------------------------
// measuring
// -----------------------------------------------------------------------------

/// One timed run.
#[derive(Debug, Clone)]
pub struct RunTiming {
    pub wall_s: f64,
    pub encoder_s: f64,
    pub ttft_s: Option<f64>,
    pub steps_s: Vec<f64>,
    /// Decode steps the backend recorded / replayed (CUDA graphs).
    pub recorded_steps: u64,
    pub replayed_steps: u64,
}

/// Generate once for `w` through `timed`, checking every sequence got exactly
/// `new_tokens` tokens.
pub fn run_once(
    timed: &TimedModel<'_>,
    cfg: &GenerationConfig,
    sources: &[Vec<u32>],
    w: &Workload,
) -> Result<RunTiming> {
    let mut gen = Generator::new(timed, cfg.clone())?;
    timed.clear();
    let t0 = Instant::now();
    let hyps = gen.generate(sources, None)?;
    let wall_s = t0.elapsed().as_secs_f64();
    let (encoder_s, steps_s, first) = timed.take();
    for (i, h) in hyps.iter().enumerate() {
        let got = h.first().map_or(0, |h| h.ids.len());
        if got != w.new_tokens {
            bail!(
                "workload {}: source {i} got {got} tokens, expected {} (fixed-length generation)",
                w.name,
                w.new_tokens
            );
        }
    }
    let stats = gen.search_stats();
    Ok(RunTiming {
        wall_s,
        encoder_s,
        ttft_s: first.map(|f| (f - t0).as_secs_f64()),
        steps_s,
        recorded_steps: stats.recorded_steps,
        replayed_steps: stats.replayed_steps,
    })
}

/// Reset the process's peak RSS (Linux: `5` to /proc/self/clear_refs); false
/// where that is not possible.
fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// Peak resident set size (VmHWM) in MiB.
pub fn peak_rss_mb() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// The JSON result of one workload.
fn result_json(w: &Workload, runs: &[RunTiming], rss: Option<f64>) -> Value {
    let walls: Vec<f64> = runs.iter().map(|r| r.wall_s).collect();
    let med = median(&walls).unwrap_or(0.0);
    let steps_ms: Vec<f64> = runs
        .iter()
        .flat_map(|r| r.steps_s.iter().map(|s| s * 1e3))
        .collect();
    let enc: Vec<f64> = runs.iter().map(|r| r.encoder_s).collect();
    let ttft: Vec<f64> = runs.iter().filter_map(|r| r.ttft_s).collect();
    let min = walls.iter().copied().fold(f64::INFINITY, f64::min);
    let max = walls.iter().copied().fold(0.0, f64::max);
    json!({
        "workload": w.name,
        "batch": w.batch,
        "src_len": w.src_len,
        "new_tokens": w.new_tokens,
        "num_beams": w.num_beams,
        "tokens_per_s": if med > 0.0 { (w.batch * w.new_tokens) as f64 / med } else { 0.0 },
        "median_s": med,
        "runs": walls,
        "min_s": min,
        "max_s": max,
        "spread_pct": if med > 0.0 { (max - min) / med * 100.0 } else { 0.0 },
        "encoder_s": median(&enc),
        "ttft_s": median(&ttft),
        "step_p50_ms": percentile(&steps_ms, 50.0),
        "step_p90_ms": percentile(&steps_ms, 90.0),
        "step_p99_ms": percentile(&steps_ms, 99.0),
        "steps_per_run": runs.first().map_or(0, |r| r.steps_s.len()),
        // Of the first run: steps recorded as CUDA graphs, and replayed.
        "recorded_steps": runs.first().map_or(0, |r| r.recorded_steps),
        "replayed_steps": runs.first().map_or(0, |r| r.replayed_steps),
        "peak_rss_mb": rss,
    })
}

// -----------------------------------------------------------------------------
// the machine
// -----------------------------------------------------------------------------

fn cpuinfo_field(field: &str) -> Option<String> {
    let s = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    s.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
}

/// CPU model, cores, the ISA the CPU backend dispatches on, and the OS.
pub fn machine_json(backend: &dyn Backend) -> Value {
    let isa = encdec_cpu::isa::active();
    let mut features = Vec::new();
    if encdec_cpu::isa::has_avx512_vnni() {
        features.push("avx512_vnni");
    }
    if encdec_cpu::isa::has_avx512_bf16() {
        features.push("avx512_bf16");
    }
    json!({
        "cpu": cpuinfo_field("model name").unwrap_or_else(|| std::env::consts::ARCH.to_string()),
        "cores": std::thread::available_parallelism().map_or(1, |n| n.get()),
        "isa": isa.name(),
        "isa_features": features,
        "backend": backend.describe(),
        "cuda_driver": match backend.device() {
            encdec_core::Device::Cuda(_) => encdec_cuda::driver_version().map_or(Value::Null, Value::from),
            encdec_core::Device::Cpu => Value::Null,
        },
        "os": std::env::consts::OS,
    })
}

// -----------------------------------------------------------------------------
// compare
// -----------------------------------------------------------------------------

fn read_json_file(path: &Path) -> Result<Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{}: invalid JSON", path.display()))
}

/// Results of a report object, or an error naming the file.
fn results_of<'v>(v: &'v Value, file: &Path) -> Result<&'v Vec<Value>> {
    v.get("results").and_then(Value::as_array).ok_or_else(|| {
        anyhow!(
            "{}: not a bench report (no \"results\" list)",
            file.display()
        )
    })
}

fn same_shape(a: &Value, b: &Value) -> bool {
    ["workload", "batch", "src_len", "new_tokens", "num_beams"]
        .iter()
        .all(|k| a.get(k) == b.get(k))
}

fn f(v: &Value, k: &str) -> Option<f64> {
    v.get(k).and_then(Value::as_f64)
}

/// Compare `report` with `saved`: a JSON summary and the regressions past
/// `threshold` percent.
pub fn compare_reports(
    report: &Value,
    saved: &Value,
    file: &Path,
    threshold: f64,
) -> Result<(Value, Vec<String>)> {
    let cur = results_of(report, file)?;
    let old = results_of(saved, file)?;
    let mut rows = Vec::new();
    let mut bad = Vec::new();
    for r in cur {
        let name = r["workload"].as_str().unwrap_or("?");
        let Some(o) = old.iter().find(|o| same_shape(o, r)) else {
            rows.push(json!({"workload": name, "status": "not in saved report"}));
            continue;
        };
        let (Some(now), Some(then)) = (f(r, "tokens_per_s"), f(o, "tokens_per_s")) else {
            bail!("{}: workload {name} has no tokens_per_s", file.display());
        };
        let change = if then > 0.0 {
            (now - then) / then * 100.0
        } else {
            0.0
        };
        let regressed = change < -threshold;
        if regressed {
            bad.push(format!(
                "{name} {change:+.1}% ({now:.1} vs {then:.1} tokens/s)"
            ));
        }
        rows.push(json!({
            "workload": name,
            "tokens_per_s": now,
            "saved_tokens_per_s": then,
            "change_pct": change,
            "status": if regressed { "REGRESSION" } else { "ok" },
        }));
    }
    Ok((
        json!({"file": file.display().to_string(), "threshold_pct": threshold, "workloads": rows}),
        bad,
    ))
}

fn compare_text(c: &Value) -> String {
    let mut s = format!(
        "compared with {} (threshold {}%):\n",
        c["file"].as_str().unwrap_or(""),
        c["threshold_pct"]
    );
    for r in c["workloads"].as_array().into_iter().flatten() {
        match (f(r, "tokens_per_s"), f(r, "saved_tokens_per_s")) {
            (Some(now), Some(then)) => s.push_str(&format!(
                "  {:<10} {:>10.1} vs {:>10.1} tokens/s  {:>+7.1}%  {}\n",
                r["workload"].as_str().unwrap_or(""),
                now,
                then,
                f(r, "change_pct").unwrap_or(0.0),
                r["status"].as_str().unwrap_or("")
            )),
            _ => s.push_str(&format!(
                "  {:<10} {}\n",
                r["workload"].as_str().unwrap_or(""),
                r["status"].as_str().unwrap_or("")
            )),
        }
    }
    s
}

/// The peer reports of a bench_peers.py file (a list of reports, or one report).
pub fn read_peers(path: &Path) -> Result<Vec<Value>> {
    let v = read_json_file(path)?;
    let list = match v {
        Value::Array(a) => a,
        o @ Value::Object(_) => vec![o],
        _ => bail!("{}: expected a JSON list of engine reports", path.display()),
    };
    for p in &list {
        results_of(p, path)?;
    }
    Ok(list)
}

/// "transformers float32", "encdec f32", ...
pub fn engine_label(report: &Value) -> String {
    format!(
        "{} {}",
        report
            .get("engine")
            .and_then(Value::as_str)
            .unwrap_or("encdec"),
        report.get("dtype").and_then(Value::as_str).unwrap_or("?")
    )
}

/// encdec's tokens/s next to each peer's, with ratios (encdec / peer).
pub fn compare_peers(report: &Value, peers: &[Value]) -> Vec<Value> {
    let mut rows = Vec::new();
    for r in report["results"].as_array().into_iter().flatten() {
        let Some(ours) = f(r, "tokens_per_s") else {
            continue;
        };
        for p in peers {
            for pr in p["results"].as_array().into_iter().flatten() {
                if !same_shape(pr, r) {
                    continue;
                }
                let theirs = f(pr, "tokens_per_s").unwrap_or(0.0);
                rows.push(json!({
                    "workload": r["workload"],
                    "engine": p.get("engine").cloned().unwrap_or(Value::Null),
                    "dtype": p.get("dtype").cloned().unwrap_or(Value::Null),
                    "tokens_per_s": theirs,
                    "encdec_tokens_per_s": ours,
                    "ratio": if theirs > 0.0 { Some(ours / theirs) } else { None },
                }));
            }
        }
    }
    rows
}

fn peers_text(rows: &[Value]) -> String {
    let mut s = String::from(
        "peers (ratio = encdec tokens/s / peer tokens/s):\n  workload   engine                  peer tok/s  encdec tok/s   ratio\n",
    );
    if rows.is_empty() {
        s.push_str("  (no peer result has the shape of a workload run here)\n");
    }
    for r in rows {
        s.push_str(&format!(
            "  {:<10} {:<22} {:>11.1} {:>13.1} {:>7}\n",
            r["workload"].as_str().unwrap_or(""),
            format!(
                "{} {}",
                r["engine"].as_str().unwrap_or("?"),
                r["dtype"].as_str().unwrap_or("?")
            ),
            f(r, "tokens_per_s").unwrap_or(0.0),
            f(r, "encdec_tokens_per_s").unwrap_or(0.0),
            f(r, "ratio").map_or("-".to_string(), |x| format!("{x:.2}x")),
        ));
    }
    s
}

// -----------------------------------------------------------------------------
// plot
// -----------------------------------------------------------------------------

/// Bar chart of tokens/s: one group per workload (those of `reports[0]`), one
/// bar per engine report; `.svg` or `.png` by the file name.
pub fn plot_tokens_per_s(path: &Path, title: &str, reports: &[Value]) -> Result<()> {
    if reports.is_empty() {
        bail!("--plot: nothing to draw");
    }
    let chart = TokensChart { title, reports };
    super::plot::save(path, &chart).with_context(|| format!("--plot {}", path.display()))
}

struct TokensChart<'a> {
    title: &'a str,
    reports: &'a [Value],
}

impl TokensChart<'_> {
    fn workloads(&self) -> Vec<&Value> {
        self.reports[0]["results"]
            .as_array()
            .into_iter()
            .flatten()
            .collect()
    }
}

impl super::plot::Figure for TokensChart<'_> {
    fn size(&self) -> (u32, u32) {
        (
            (200 + 180 * self.workloads().len().max(1) as u32).max(800),
            480,
        )
    }

    fn draw<DB: plotters::prelude::DrawingBackend>(
        &self,
        root: &plotters::prelude::DrawingArea<DB, plotters::coord::Shift>,
    ) -> Result<()> {
        use plotters::prelude::*;
        use plotters::style::text_anchor::{HPos, Pos, VPos};

        let (title, reports) = (self.title, self.reports);
        let workloads = self.workloads();
        let nw = workloads.len().max(1);
        let ne = reports.len();
        let value = |rep: &Value, w: &Value| -> Option<f64> {
            rep["results"]
                .as_array()?
                .iter()
                .find(|r| same_shape(r, w))
                .and_then(|r| f(r, "tokens_per_s"))
        };
        let ymax = reports
            .iter()
            .flat_map(|rep| workloads.iter().filter_map(|w| value(rep, w)))
            .fold(0.0f64, f64::max)
            .max(1.0)
            * 1.4;
        let palette = [
            RGBColor(0x1f, 0x77, 0xb4),
            RGBColor(0xff, 0x7f, 0x0e),
            RGBColor(0x2c, 0xa0, 0x2c),
            RGBColor(0xd6, 0x27, 0x28),
            RGBColor(0x94, 0x67, 0xbd),
            RGBColor(0x8c, 0x56, 0x4b),
        ];
        let err = super::plot::draw_err;
        {
            root.fill(&WHITE).map_err(err)?;
            let mut chart = ChartBuilder::on(root)
                .caption(title, ("sans-serif", 16))
                .margin(12)
                .x_label_area_size(36)
                .y_label_area_size(70)
                .build_cartesian_2d(0f64..nw as f64, 0f64..ymax)
                .map_err(err)?;
            chart
                .configure_mesh()
                .disable_x_mesh()
                .x_labels(0)
                .light_line_style(RGBColor(235, 235, 235))
                .y_desc("generated tokens/s")
                .draw()
                .map_err(err)?;
            let bw = 0.8 / ne as f64;
            let center = |size: u32| {
                ("sans-serif", size)
                    .into_font()
                    .into_text_style(root)
                    .pos(Pos::new(HPos::Center, VPos::Bottom))
            };
            for (ei, rep) in reports.iter().enumerate() {
                let color = palette[ei % palette.len()];
                let bars: Vec<(f64, f64)> = workloads
                    .iter()
                    .enumerate()
                    .filter_map(|(wi, w)| {
                        value(rep, w).map(|v| (wi as f64 + 0.1 + ei as f64 * bw, v))
                    })
                    .collect();
                chart
                    .draw_series(bars.iter().map(|&(x, v)| {
                        Rectangle::new([(x, 0.0), (x + bw * 0.92, v)], color.filled())
                    }))
                    .map_err(err)?
                    .label(engine_label(rep))
                    .legend(move |(x, y)| {
                        Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled())
                    });
                chart
                    .draw_series(bars.iter().map(|&(x, v)| {
                        Text::new(
                            format!("{v:.0}"),
                            (x + bw * 0.46, v + ymax * 0.005),
                            center(11),
                        )
                    }))
                    .map_err(err)?;
            }
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperLeft)
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .draw()
                .map_err(err)?;
            for (wi, w) in workloads.iter().enumerate() {
                let (px, py) = chart.backend_coord(&(wi as f64 + 0.5, 0.0));
                let label = format!(
                    "{} (b{} s{} n{}{})",
                    w["workload"].as_str().unwrap_or("?"),
                    w["batch"],
                    w["src_len"],
                    w["new_tokens"],
                    match w["num_beams"].as_u64() {
                        Some(b) if b > 1 => format!(" beam{b}"),
                        _ => String::new(),
                    }
                );
                root.draw(&Text::new(label, (px, py + 24), center(13)))
                    .map_err(err)?;
            }
        }
        Ok(())
    }
}

// -----------------------------------------------------------------------------
// output
// -----------------------------------------------------------------------------

fn opt_ms(v: &Value, k: &str, scale: f64) -> String {
    f(v, k).map_or("-".to_string(), |x| format!("{:.2}", x * scale))
}

fn report_text(report: &Value) -> String {
    let m = &report["machine"];
    let mut s = format!(
        "encdec bench: {}, {} {}, {} threads\nmachine: {}, {} cores, {}{} ({})\n",
        report["model"].as_str().unwrap_or(""),
        report["device"].as_str().unwrap_or(""),
        report["dtype"].as_str().unwrap_or(""),
        report["threads"],
        m["cpu"].as_str().unwrap_or("?"),
        m["cores"],
        m["isa"].as_str().unwrap_or("?"),
        m["isa_features"]
            .as_array()
            .filter(|a| !a.is_empty())
            .map(|a| format!(
                " + {}",
                a.iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
            .unwrap_or_default(),
        m["backend"].as_str().unwrap_or("?"),
    );
    if let Some(v) = m["cuda_driver"].as_str() {
        s.push_str(&format!("CUDA driver: {v}\n"));
    }
    s.push_str(&format!(
        "{} warm-up + {} timed runs per workload; EOS disabled (fixed-length generation)\n\n",
        report["warmup"], report["runs_per_workload"]
    ));
    s.push_str(&format!(
        "{:<10} {:>5} {:>5} {:>5} {:>5} {:>10} {:>9} {:>7} {:>9} {:>9} {:>23} {:>8}\n",
        "workload",
        "batch",
        "src",
        "new",
        "beams",
        "tokens/s",
        "median s",
        "spread",
        "encoder",
        "ttft",
        "step p50/p90/p99 ms",
        "peak MB"
    ));
    for r in report["results"].as_array().into_iter().flatten() {
        s.push_str(&format!(
            "{:<10} {:>5} {:>5} {:>5} {:>5} {:>10.1} {:>9.3} {:>6.1}% {:>7}ms {:>7}ms {:>23} {:>8}\n",
            r["workload"].as_str().unwrap_or(""),
            r["batch"].as_u64().unwrap_or(0),
            r["src_len"].as_u64().unwrap_or(0),
            r["new_tokens"].as_u64().unwrap_or(0),
            r["num_beams"].as_u64().unwrap_or(0),
            f(r, "tokens_per_s").unwrap_or(0.0),
            f(r, "median_s").unwrap_or(0.0),
            f(r, "spread_pct").unwrap_or(0.0),
            opt_ms(r, "encoder_s", 1e3),
            opt_ms(r, "ttft_s", 1e3),
            format!(
                "{} / {} / {}",
                opt_ms(r, "step_p50_ms", 1.0),
                opt_ms(r, "step_p90_ms", 1.0),
                opt_ms(r, "step_p99_ms", 1.0)
            ),
            {
                let rss = f(r, "peak_rss_mb").map_or("-".to_string(), |x| format!("{x:.0}"));
                match f(r, "peak_device_mb") {
                    Some(dev) => format!("{rss} (device {dev:.1})"),
                    None => rss,
                }
            },
        ));
    }
    // Where steps were recorded (CUDA graphs), say how many replayed.
    let results = report["results"].as_array().into_iter().flatten();
    let (rec, rep) = results.fold((0, 0), |(a, b), r| {
        (
            a + r["recorded_steps"].as_u64().unwrap_or(0),
            b + r["replayed_steps"].as_u64().unwrap_or(0),
        )
    });
    if rec + rep > 0 {
        s.push_str(&format!(
            "\ndecode steps of each workload's first run: {rec} recorded as CUDA graphs, {rep} replayed \
             (ENCDEC_CUDA_GRAPHS=0 runs them op by op)\n"
        ));
    }
    if let Some(note) = report.get("note").and_then(Value::as_str) {
        s.push_str(&format!("\nnote: {note}\n"));
    }
    s
}

// -----------------------------------------------------------------------------
// run
// -----------------------------------------------------------------------------

pub fn run(args: BenchArgs) -> Result<()> {
    let quick = !args.model.names_a_model()
        && args.workload.is_none()
        && args.batch.is_none()
        && args.src_len.is_none()
        && args.new_tokens.is_none()
        && args.num_beams.is_none()
        && args.runs.is_none()
        && args.warmup.is_none();
    if args.model.arch.is_some() && args.model.model.is_some() {
        bail!("give --model or --arch, not both");
    }
    if args.threshold.is_nan() || args.threshold < 0.0 {
        bail!("--threshold must be a percentage >= 0");
    }
    let workloads = select_workloads(
        args.workload.as_deref(),
        args.batch,
        args.src_len,
        args.new_tokens,
        args.num_beams,
    )?;
    let (warmup, runs) = if quick {
        (1, 3)
    } else {
        (args.warmup.unwrap_or(1), args.runs.unwrap_or(5))
    };
    if runs == 0 {
        bail!("--runs must be at least 1");
    }
    // Read the comparison files first: a bad path fails before minutes of benchmarking.
    let saved = args.compare.as_deref().map(read_json_file).transpose()?;
    let peers = args.compare_peers.as_deref().map(read_peers).transpose()?;

    let mut report = match &args.report {
        Some(path) => read_json_file(path)?,
        None => measure(&args, &workloads, warmup, runs, quick)?,
    };

    let mut regressions = Vec::new();
    let mut extra_text = String::new();
    if let (Some(saved), Some(path)) = (&saved, &args.compare) {
        let (c, bad) = compare_reports(&report, saved, path, args.threshold)?;
        extra_text.push_str(&compare_text(&c));
        report["compare"] = c;
        regressions = bad;
    }
    if let Some(peers) = &peers {
        let rows = compare_peers(&report, peers);
        extra_text.push_str(&peers_text(&rows));
        report["peers"] = Value::Array(rows);
    }
    if let Some(path) = &args.save {
        let mut saved = report.clone();
        if let Some(o) = saved.as_object_mut() {
            o.remove("compare");
            o.remove("peers");
        }
        let text = serde_json::to_string_pretty(&saved)? + "\n";
        super::generate::write_atomically(path, &text)?;
    }
    if let Some(path) = &args.plot {
        let mut all = vec![report.clone()];
        all.extend(peers.iter().flatten().cloned());
        let title = format!(
            "{}: generated tokens/s, {} threads ({})",
            report["model"].as_str().unwrap_or("?"),
            report["threads"],
            report["machine"]["cpu"].as_str().unwrap_or("?")
        );
        plot_tokens_per_s(path, &title, &all)?;
    }

    match args.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        Format::Text => {
            print!("{}", report_text(&report));
            if !extra_text.is_empty() {
                println!();
                print!("{extra_text}");
            }
        }
    }
    if !regressions.is_empty() {
        bail!(
            "tokens/s regressed more than {}% against {}: {}",
            args.threshold,
            args.compare
                .as_deref()
                .map_or(String::new(), |p| p.display().to_string()),
            regressions.join("; ")
        );
    }
    Ok(())
}

/// Runs every workload and returns the report (DESIGN.md's bench JSON).
fn measure(
    args: &BenchArgs,
    workloads: &[Workload],
    warmup: usize,
    runs: usize,
    quick: bool,
) -> Result<Value> {
    let (device, backend) = pick_backend(args.model.device.as_deref(), args.model.threads)?;
    let bm = open_model(&args.model, device, backend)?;
    let model: &dyn Seq2SeqModel = bm.model.as_ref();
    for w in workloads {
        check_fits(model.spec(), w)?;
    }
    let vocab = bm.config.info().vocab_size;
    let timed = TimedModel::new(model, None);

    let total = (workloads.len() * (warmup + runs)) as u64;
    let bar = if std::io::stderr().is_terminal() {
        let b = indicatif::ProgressBar::new(total);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} runs  {msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        b
    } else {
        indicatif::ProgressBar::hidden()
    };

    let mut results = Vec::new();
    for w in workloads {
        let cfg = generation_config(&bm.config, w)?;
        let sources = source_ids(w.batch, w.src_len, vocab);
        let rss_reset = reset_peak_rss();
        model.backend().reset_peak_device_memory();
        for i in 0..warmup {
            bar.set_message(format!("{} warm-up {}/{warmup}", w.name, i + 1));
            run_once(&timed, &cfg, &sources, w)?;
            bar.inc(1);
        }
        let mut timings = Vec::with_capacity(runs);
        for i in 0..runs {
            bar.set_message(format!("{} run {}/{runs}", w.name, i + 1));
            timings.push(run_once(&timed, &cfg, &sources, w)?);
            bar.inc(1);
        }
        let mut r = result_json(w, &timings, peak_rss_mb());
        if !rss_reset {
            r["peak_rss_note"] = json!("process peak so far (clear_refs unavailable)");
        }
        if let Some(mem) = model.backend().device_memory() {
            // Tensors only (weights, caches, activations), as the caching allocator
            // hands them out; the driver's own context memory is not counted.
            r["peak_device_mb"] = json!(mem.peak_in_use_bytes as f64 / (1 << 20) as f64);
        }
        results.push(r);
    }
    bar.finish_and_clear();

    let mut report = json!({
        "engine": "encdec",
        "model": bm.name,
        "device": bm.device,
        "dtype": bm.dtype.as_str(),
        "threads": bm.threads,
        "warmup": warmup,
        "runs_per_workload": runs,
        "load_s": bm.load_s,
        "version": env!("CARGO_PKG_VERSION"),
        "machine": machine_json(model.backend()),
        "results": results,
    });
    if quick {
        report["note"] = json!(format!(
            "quick default (no arguments): {DEFAULT_ARCH} shape with random weights, W1-W4 with \
             {warmup} warm-up + {runs} timed runs each; pass --runs N (default 5) or --workload \
             for the full suite"
        ));
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), Some(50.0));
        assert_eq!(percentile(&v, 90.0), Some(90.0));
        assert_eq!(percentile(&v, 99.0), Some(99.0));
        assert_eq!(percentile(&[3.0], 99.0), Some(3.0));
        assert_eq!(percentile(&[], 50.0), None);
        assert_eq!(median(&[3.0, 1.0, 2.0, 10.0]), Some(2.5));
    }

    #[test]
    fn source_ids_avoid_specials_and_are_fixed() {
        let s = source_ids(16, 512, 32128);
        assert_eq!(s.len(), 16);
        assert!(s.iter().all(|r| r.len() == 512));
        assert!(s.iter().flatten().all(|&i| (10..32000 - 10).contains(&i)));
        assert_eq!(s[0][..3], [10, 7929, 15848]);
        assert_eq!(source_ids(16, 512, 32128), s);
    }

    #[test]
    fn workload_selection() {
        let all = select_workloads(None, None, None, None, None).unwrap();
        assert_eq!(all.len(), 4);
        assert_eq!(all[2].num_beams, 4);
        let c = select_workloads(None, Some(2), Some(8), Some(4), None).unwrap();
        assert_eq!(c[0].name, "custom");
        assert_eq!((c[0].batch, c[0].src_len, c[0].new_tokens), (2, 8, 4));
        let w = select_workloads(Some("w2, W3"), None, None, Some(8), None).unwrap();
        assert_eq!(w[0].name, "W2-custom");
        assert_eq!(w[1].new_tokens, 8);
        assert!(select_workloads(Some("W9"), None, None, None, None).is_err());
        assert!(select_workloads(None, Some(0), None, None, None).is_err());
    }
}
