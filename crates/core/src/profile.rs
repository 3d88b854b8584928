//! [`ProfiledBackend`]: a `Backend` that forwards every op to another backend and
//! records what each call cost, for `encdec profile`.
//!
//! Each op call becomes an [`OpEvent`]: the op's name, a [`Role`] (what the op
//! is doing in the model), its start and duration on the wall clock, and the
//! FLOPs and bytes it moved, computed from the shapes (not measured). A
//! [`Report`] sums them per `(op, role)` as time, share of the total, calls,
//! achieved GFLOP/s and GB/s against the device's peaks ([`DevicePeaks`]);
//! [`ProfiledBackend::chrome_trace`] writes one Chrome/Perfetto trace event per
//! op call.
//!
//! # Roles
//!
//! `linear` (weight `w` is `[out, in]`) is named from the model's dimensions
//! ([`ModelDims`]); the first rule that matches wins:
//!
//! 1. `attn_out`: `w` is `[d_model, inner]` (inner = heads x head_dim) and the
//!    input `x` is the tensor the most recent `attention` call wrote (same
//!    storage). When `inner != d_model` the shape alone decides, so the storage
//!    test only matters for the usual `inner == d_model`, where an output
//!    projection and a q/k/v projection have the same shape.
//! 2. `lm_head`: `out` is a vocabulary size and `in == d_model`.
//! 3. `qkv_proj`: `in == d_model` and `out` is `inner`, `2 inner` or `3 inner`
//!    (separate or fused q/k/v projections, including the cross-attention K/V
//!    the encoder projects once per source).
//! 4. `ffn_up`: `in == d_model` and `out` is an FFN width or twice one (the up
//!    and, in gated FFNs, the gate projection).
//! 5. `ffn_down`: `out == d_model` and `in` is an FFN width.
//! 6. `other`: anything else (also every linear when no dims are given, apart
//!    from rule 1).
//!
//! `attention` is `cross` when `kv_index` is set (decoder rows reading the
//! cached encoder K/V through an index, as the models of this workspace always
//! do for cross-attention), or when it is not causal and the keys do not have
//! the queries' batch and length (`k[0..2] != q[0..2]`: a decoder query over
//! encoder keys). Everything else is `self`: causal decoder self-attention, and
//! non-causal attention of a sequence over itself (the encoder). A
//! cross-attention without `kv_index` whose source has exactly the queries'
//! batch and length would be counted as `self`; no model here calls it so.
//!
//! `norm` / `add_norm` carry `layer_norm` or `rms_norm`; the other ops carry
//! no role (an empty string).
//!
//! # Cost model
//!
//! FLOPs count a multiply-add as 2: `linear` `2 M N K`, `batched_matmul`
//! `2 B M N K`, `attention` `4 D` per (query, head, visible key) (q.k and p.v;
//! causal masks counted exactly), norms ~5 and softmax ~4 per element, other
//! pointwise ops 1 per element. Bytes are the minimum traffic: every input read
//! once and every output written once at its dtype's size (int8 weights plus
//! their per-row f32 scales); attention reads the K/V rows of each distinct kv
//! row once.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use crate::{
    Activation, AttentionParams, Backend, DType, Device, DeviceTimestamp, NormKind, Result,
    Storage, Tensor,
};

/// What an op call is doing in the model (see the module docs for the rules).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    QkvProj,
    AttnOut,
    FfnUp,
    FfnDown,
    LmHead,
    OtherLinear,
    SelfAttn,
    CrossAttn,
    LayerNorm,
    RmsNorm,
    None,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::QkvProj => "qkv_proj",
            Role::AttnOut => "attn_out",
            Role::FfnUp => "ffn_up",
            Role::FfnDown => "ffn_down",
            Role::LmHead => "lm_head",
            Role::OtherLinear => "other",
            Role::SelfAttn => "self",
            Role::CrossAttn => "cross",
            Role::LayerNorm => "layer_norm",
            Role::RmsNorm => "rms_norm",
            Role::None => "",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The model dimensions `linear` roles are inferred from. Lists hold every
/// value the model uses (e.g. encoder and decoder FFN widths of BART-likes).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ModelDims {
    pub d_model: usize,
    /// heads x head_dim of the attention blocks.
    pub attn_inner: Vec<usize>,
    /// FFN inner widths.
    pub ffn: Vec<usize>,
    /// Vocabulary sizes (rows of lm_head).
    pub vocab: Vec<usize>,
}

/// The role of `linear` with weight `[w_out, w_in]`; `x_is_attention_output`
/// says whether its input is what the last `attention` call wrote.
pub fn linear_role(
    dims: Option<&ModelDims>,
    w_out: usize,
    w_in: usize,
    x_is_attention_output: bool,
) -> Role {
    let Some(d) = dims else {
        return if x_is_attention_output {
            Role::AttnOut
        } else {
            Role::OtherLinear
        };
    };
    let dm = d.d_model;
    let is_inner = |n: usize| d.attn_inner.contains(&n);
    if w_out == dm && is_inner(w_in) && (x_is_attention_output || w_in != dm) {
        return Role::AttnOut;
    }
    if w_in == dm && d.vocab.contains(&w_out) {
        return Role::LmHead;
    }
    if w_in == dm
        && d.attn_inner
            .iter()
            .any(|&i| [i, 2 * i, 3 * i].contains(&w_out))
    {
        return Role::QkvProj;
    }
    if w_in == dm && d.ffn.iter().any(|&f| w_out == f || w_out == 2 * f) {
        return Role::FfnUp;
    }
    if w_out == dm && d.ffn.contains(&w_in) {
        return Role::FfnDown;
    }
    if x_is_attention_output {
        return Role::AttnOut;
    }
    Role::OtherLinear
}

/// `self` or `cross` for an attention call with queries of shape `q` and keys of
/// shape `k` (see the module docs).
pub fn attention_role(q: &[usize], k: &[usize], params: &AttentionParams) -> Role {
    if params.kv_index.is_some() {
        return Role::CrossAttn;
    }
    if !params.causal && q.len() >= 2 && k.len() >= 2 && q[..2] != k[..2] {
        return Role::CrossAttn;
    }
    Role::SelfAttn
}

/// The cost of an attention call (flops and bytes of the module docs).
fn attention_cost(q: &Tensor, k: &Tensor, params: &AttentionParams) -> Cost {
    let qd = q.dims();
    let b = qd.first().copied().unwrap_or(1);
    let hd = params.num_heads * params.head_dim;
    let kv_rows = match params.kv_index.map(Tensor::as_u32) {
        Some(Ok(idx)) => {
            let mut u: Vec<u32> = idx.to_vec();
            u.sort_unstable();
            u.dedup();
            u.len()
        }
        Some(Err(_)) => b.min(k.dims().first().copied().unwrap_or(b)),
        None => k.dims().first().copied().unwrap_or(b),
    };
    let kv_el = k.dtype().size_in_bytes();
    let bytes = 2 * tbytes(q)
        + (2 * kv_rows * params.kv_len * hd * kv_el) as u64
        + params
            .key_mask
            .map_or(0, |m| (kv_rows * m.cols() * 4) as u64)
        + params.position_bias.map_or(0, tbytes)
        + params.relative_bias.map_or(0, |r| tbytes(r.table));
    Cost {
        op: "attention",
        role: attention_role(qd, k.dims(), params),
        flops: attention_flops(qd, params),
        bytes,
        detail: format!(
            "q {} k {} heads {} kv_len {}{}",
            shape_str(q),
            shape_str(k),
            params.num_heads,
            params.kv_len,
            if params.causal { " causal" } else { "" }
        ),
    }
}

/// FLOPs of an attention call (see the module docs).
pub fn attention_flops(q: &[usize], params: &AttentionParams) -> u64 {
    let (b, tq) = (
        q.first().copied().unwrap_or(1),
        q.get(1).copied().unwrap_or(1),
    );
    let keys: u64 = (0..tq)
        .map(|i| {
            if params.causal {
                (params.q_offset + i + 1).min(params.kv_len) as u64
            } else {
                params.kv_len as u64
            }
        })
        .sum();
    4 * (b * params.num_heads * params.head_dim) as u64 * keys
}

/// Peak compute and memory bandwidth of a device, for "% of peak" columns.
#[derive(Debug, Clone, PartialEq)]
pub struct DevicePeaks {
    /// f32 GFLOP/s (a multiply-add counted as 2).
    pub gflops: f64,
    /// Memory bandwidth in GB/s (1e9 bytes).
    pub gbs: f64,
    /// How the numbers were obtained, for the report.
    pub description: String,
}

/// Peak f32 GFLOP/s of a CPU: `clock x cores x FMA units x f32 lanes x 2`.
pub fn cpu_peak_gflops(clock_ghz: f64, cores: usize, fma_units: usize, f32_lanes: usize) -> f64 {
    clock_ghz * cores as f64 * fma_units as f64 * f32_lanes as f64 * 2.0
}

/// One recorded op call.
#[derive(Debug, Clone, PartialEq)]
pub struct OpEvent {
    pub op: &'static str,
    pub role: Role,
    /// The phase set by [`ProfiledBackend::set_phase`] when the op ran.
    pub phase: &'static str,
    /// Nanoseconds since the profiler's epoch.
    pub start_ns: u64,
    pub dur_ns: u64,
    pub flops: u64,
    pub bytes: u64,
    /// Shapes and dtypes of the arguments, for the trace.
    pub detail: String,
}

/// A host-side span recorded by the caller (a decoder step, search between steps).
#[derive(Debug, Clone, PartialEq)]
pub struct Span {
    pub name: String,
    pub cat: &'static str,
    pub start_ns: u64,
    pub dur_ns: u64,
}

/// An op call timed by device timestamps, waiting to be read.
#[derive(Debug)]
struct PendingOp {
    start: DeviceTimestamp,
    end: DeviceTimestamp,
    phase: &'static str,
    cost: Cost,
}

/// Where the device's clock meets the host's: a timestamp queued on an idle
/// device, and the host time it was queued at.
#[derive(Debug)]
struct Anchor {
    mark: DeviceTimestamp,
    host_ns: u64,
}

#[derive(Debug)]
struct State {
    enabled: bool,
    phase: &'static str,
    events: Vec<OpEvent>,
    spans: Vec<Span>,
    /// Storage address of the last attention output (0: none).
    last_attn_out: usize,
    /// Calls timed on the device, not yet read back.
    pending: Vec<PendingOp>,
    anchor: Option<Anchor>,
    /// Whether the inner backend has a device timer (known after the first op).
    device_timer: Option<bool>,
}

/// How an op call's start was taken.
enum Start {
    Host(u64),
    Device(DeviceTimestamp),
}

/// Device-timed calls read back at once: each read waits for the device, so a
/// batch is read when it is this long (and whenever results are asked for).
const PENDING_LIMIT: usize = 4096;

/// A backend that forwards every op to `inner` and records its cost.
#[derive(Debug)]
pub struct ProfiledBackend {
    inner: Arc<dyn Backend>,
    dims: Option<ModelDims>,
    epoch: Instant,
    state: Mutex<State>,
}

fn storage_addr(t: &Tensor) -> usize {
    std::ptr::from_ref::<Storage>(t.storage()) as usize
}

/// Bytes of a tensor's elements (int8: values plus one f32 scale per row).
fn tbytes(t: &Tensor) -> u64 {
    let n = t.elem_count() as u64;
    match t.dtype() {
        DType::I8 => n + 4 * t.rows() as u64,
        d => n * d.size_in_bytes() as u64,
    }
}

fn shape_str(t: &Tensor) -> String {
    let dims: Vec<String> = t.dims().iter().map(usize::to_string).collect();
    format!("[{}] {}", dims.join(","), t.dtype())
}

#[derive(Debug)]
struct Cost {
    op: &'static str,
    role: Role,
    flops: u64,
    bytes: u64,
    detail: String,
}

impl ProfiledBackend {
    /// Wraps `inner`; `dims` names the roles of `linear` calls (None: only the
    /// attention-output rule applies). Recording starts enabled.
    pub fn new(inner: Arc<dyn Backend>, dims: Option<ModelDims>) -> Self {
        ProfiledBackend {
            inner,
            dims,
            epoch: Instant::now(),
            state: Mutex::new(State {
                enabled: true,
                phase: "",
                events: Vec::new(),
                spans: Vec::new(),
                last_attn_out: 0,
                pending: Vec::new(),
                anchor: None,
                device_timer: None,
            }),
        }
    }

    pub fn inner(&self) -> &Arc<dyn Backend> {
        &self.inner
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data behind; keep going.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stop or resume recording (ops are forwarded either way).
    pub fn set_enabled(&self, on: bool) {
        self.lock().enabled = on;
    }

    /// Label the ops that follow (e.g. "encode", "decode").
    pub fn set_phase(&self, phase: &'static str) {
        self.lock().phase = phase;
    }

    /// Forget every recorded event and span.
    pub fn reset(&self) {
        let mut s = self.lock();
        s.events.clear();
        s.spans.clear();
        s.last_attn_out = 0;
        s.pending.clear();
        s.anchor = None;
    }

    /// Nanoseconds since the profiler's epoch (the trace's time axis).
    pub fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    /// Record a host-side span `[start_ns, end_ns)` (times from [`Self::now_ns`]).
    pub fn record_span(&self, name: &str, cat: &'static str, start_ns: u64, end_ns: u64) {
        let mut s = self.lock();
        if s.enabled {
            s.spans.push(Span {
                name: name.to_string(),
                cat,
                start_ns,
                dur_ns: end_ns.saturating_sub(start_ns),
            });
        }
    }

    /// The op calls recorded so far, in call order (waits for the device to
    /// finish the ones it timed).
    pub fn events(&self) -> Result<Vec<OpEvent>> {
        let mut s = self.lock();
        self.read_pending(&mut s)?;
        Ok(s.events.clone())
    }

    /// Whether op times come from the device's clock (CUDA events) rather than
    /// the host's wall clock around each call; None before the first recorded op.
    pub fn device_timed(&self) -> Option<bool> {
        self.lock().device_timer
    }

    /// The spans recorded so far.
    pub fn spans(&self) -> Vec<Span> {
        self.lock().spans.clone()
    }

    /// The start of an op call, or None while recording is off; the call gets
    /// a profiler range named `op` (NVTX on CUDA). A backend with a device
    /// timer gets a timestamp queued before the op (no wait, so the device
    /// runs as it would unprofiled); one without, whose ops may still be
    /// queued, is waited for first so that the wall clock times this op alone.
    fn begin(&self, op: &'static str) -> Option<Start> {
        let mut s = self.lock();
        if !s.enabled {
            return None;
        }
        if s.device_timer != Some(false) {
            if s.anchor.is_none() {
                if let Ok(Some(_)) = self.inner.device_timestamp() {
                    // The clocks meet on an idle device; a failed wait shows
                    // up again as the op's own error.
                    let _ = self.inner.synchronize();
                    if let Ok(Some(mark)) = self.inner.device_timestamp() {
                        let host_ns = self.now_ns();
                        s.anchor = Some(Anchor { mark, host_ns });
                        s.device_timer = Some(true);
                    }
                } else {
                    s.device_timer = Some(false);
                }
            }
            if s.anchor.is_some() {
                if let Ok(Some(mark)) = self.inner.device_timestamp() {
                    drop(s);
                    self.inner.range_push(op);
                    return Some(Start::Device(mark));
                }
            }
        }
        drop(s);
        let _ = self.inner.synchronize();
        self.inner.range_push(op);
        Some(Start::Host(self.now_ns()))
    }

    /// Record the call begun at `start` (its cost computed only when recording).
    fn finish(&self, start: Option<Start>, cost: impl FnOnce() -> Cost) {
        let Some(start) = start else { return };
        match start {
            Start::Host(start_ns) => {
                let _ = self.inner.synchronize();
                let end = self.now_ns();
                self.inner.range_pop();
                let c = cost();
                let mut s = self.lock();
                let phase = s.phase;
                s.events.push(OpEvent {
                    op: c.op,
                    role: c.role,
                    phase,
                    start_ns,
                    dur_ns: end.saturating_sub(start_ns),
                    flops: c.flops,
                    bytes: c.bytes,
                    detail: c.detail,
                });
            }
            Start::Device(mark) => {
                let end = self.inner.device_timestamp();
                self.inner.range_pop();
                let c = cost();
                let mut s = self.lock();
                let phase = s.phase;
                match end {
                    Ok(Some(end)) => s.pending.push(PendingOp {
                        start: mark,
                        end,
                        phase,
                        cost: c,
                    }),
                    // No end mark: the op's time is unknown; keep its call
                    // with the host's view of it (now) and no duration.
                    _ => {
                        let now = self.now_ns();
                        s.events.push(OpEvent {
                            op: c.op,
                            role: c.role,
                            phase,
                            start_ns: now,
                            dur_ns: 0,
                            flops: c.flops,
                            bytes: c.bytes,
                            detail: c.detail,
                        });
                    }
                }
                if s.pending.len() >= PENDING_LIMIT {
                    // A failed read surfaces when the results are asked for.
                    let _ = self.read_pending(&mut s);
                }
            }
        }
    }

    /// Turn the device-timed calls into events: start = the anchor's host time
    /// plus the device time from the anchor, duration = the device time between
    /// the call's two marks. The next call takes a new anchor, so device
    /// intervals stay short (CUDA reports them as f32 milliseconds).
    fn read_pending(&self, s: &mut State) -> Result<()> {
        let Some(anchor) = s.anchor.take() else {
            return Ok(());
        };
        let pending = std::mem::take(&mut s.pending);
        for p in pending {
            let from_anchor = self.inner.device_elapsed_ns(&anchor.mark, &p.start)?;
            let dur_ns = self.inner.device_elapsed_ns(&p.start, &p.end)?;
            s.events.push(OpEvent {
                op: p.cost.op,
                role: p.cost.role,
                phase: p.phase,
                start_ns: anchor.host_ns + from_anchor,
                dur_ns,
                flops: p.cost.flops,
                bytes: p.cost.bytes,
                detail: p.cost.detail,
            });
        }
        Ok(())
    }

    /// `linear` (with a fused activation: one more FLOP per output), its role
    /// from the model's dims and whether its input is the last attention output.
    fn linear_cost(
        &self,
        x: &Tensor,
        w: &Tensor,
        bias: Option<&Tensor>,
        act: Option<Activation>,
    ) -> Cost {
        let (n, k) = (w.rows(), w.cols());
        let m = x.rows();
        let from_attn = {
            let s = self.lock();
            s.last_attn_out != 0 && s.last_attn_out == storage_addr(x)
        };
        let role = linear_role(self.dims.as_ref(), n, k, from_attn);
        let per_out = u64::from(bias.is_some()) + u64::from(act.is_some());
        Cost {
            op: "linear",
            role,
            flops: 2 * (m * n * k) as u64 + per_out * (m * n) as u64,
            bytes: tbytes(x) + tbytes(w) + bias.map_or(0, tbytes) + (m * n * 4) as u64,
            detail: match act {
                Some(a) => format!("x {} w {} + {a:?}", shape_str(x), shape_str(w)),
                None => format!("x {} w {}", shape_str(x), shape_str(w)),
            },
        }
    }

    fn simple(op: &'static str, flops: u64, bytes: u64, detail: String) -> Cost {
        Cost {
            op,
            role: Role::None,
            flops,
            bytes,
            detail,
        }
    }

    /// The per-(op, role) summary. `wall_ns` is the wall time of the profiled
    /// region (None: the span from the first to the last event).
    pub fn report(&self, peaks: &DevicePeaks, wall_ns: Option<u64>) -> Result<Report> {
        let (events, spans) = {
            let mut s = self.lock();
            self.read_pending(&mut s)?;
            (s.events.clone(), s.spans.clone())
        };
        Ok(Report::from_events(&events, &spans, peaks, wall_ns))
    }

    /// The Chrome trace JSON (`{"traceEvents": [...]}`): one complete (`"ph":"X"`)
    /// event of category `op` per op call on thread 1 (named for the clock that
    /// timed it), and the caller's spans on thread 0; timestamps in microseconds.
    pub fn chrome_trace(&self) -> Result<String> {
        let (events, spans) = {
            let mut s = self.lock();
            self.read_pending(&mut s)?;
            (s.events.clone(), s.spans.clone())
        };
        let clock = if self.device_timed() == Some(true) {
            OpClock::Device
        } else {
            OpClock::Host
        };
        Ok(chrome_trace(&events, &spans, clock))
    }

    /// Write [`Self::chrome_trace`] to `path`.
    pub fn write_chrome_trace(&self, path: &std::path::Path) -> Result<()> {
        let trace = self.chrome_trace()?;
        std::fs::write(path, trace)
            .map_err(|e| crate::Error::Invalid(format!("cannot write {}: {e}", path.display())))
    }
}

/// JSON string literal of `s`.
fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn us(ns: u64) -> String {
    format!("{}.{:03}", ns / 1000, ns % 1000)
}

/// The clock op events were timed by (it names the trace's op thread).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpClock {
    /// The host's wall clock around each call (after waiting for the device).
    Host,
    /// The device's own timestamps around each op (CUDA events).
    Device,
}

/// The Chrome trace JSON of `events` (thread 1, category `op`) and `spans` (thread 0).
pub fn chrome_trace(events: &[OpEvent], spans: &[Span], clock: OpClock) -> String {
    let mut out = String::from("{\"displayTimeUnit\":\"ms\",\"traceEvents\":[\n");
    out.push_str(
        "{\"name\":\"thread_name\",\"ph\":\"M\",\"pid\":1,\"tid\":0,\"args\":{\"name\":\"host\"}},\n",
    );
    let ops_thread = match clock {
        OpClock::Host => "ops (host clock)",
        OpClock::Device => "ops (device clock, CUDA events)",
    };
    let _ = write!(
        out,
        "{{\"name\":\"thread_name\",\"ph\":\"M\",\"pid\":1,\"tid\":1,\"args\":{{\"name\":{}}}}}",
        json_str(ops_thread)
    );
    for s in spans {
        let _ = write!(
            out,
            ",\n{{\"name\":{},\"cat\":{},\"ph\":\"X\",\"ts\":{},\"dur\":{},\"pid\":1,\"tid\":0,\"args\":{{}}}}",
            json_str(&s.name),
            json_str(s.cat),
            us(s.start_ns),
            us(s.dur_ns)
        );
    }
    for e in events {
        let name = if e.role == Role::None {
            e.op.to_string()
        } else {
            format!("{} {}", e.op, e.role)
        };
        let _ = write!(
            out,
            ",\n{{\"name\":{},\"cat\":\"op\",\"ph\":\"X\",\"ts\":{},\"dur\":{},\"pid\":1,\"tid\":1,\
             \"args\":{{\"op\":{},\"role\":{},\"phase\":{},\"flops\":{},\"bytes\":{},\"shapes\":{}}}}}",
            json_str(&name),
            us(e.start_ns),
            us(e.dur_ns),
            json_str(e.op),
            json_str(e.role.as_str()),
            json_str(e.phase),
            e.flops,
            e.bytes,
            json_str(&e.detail)
        );
    }
    out.push_str("\n]}\n");
    out
}

/// One row of a [`Report`]: an `(op, role)` pair.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportRow {
    pub op: String,
    pub role: String,
    pub calls: u64,
    pub total_ns: u64,
    /// Fraction of the summed op time (0..1).
    pub share: f64,
    pub flops: u64,
    pub bytes: u64,
    pub gflops_per_s: f64,
    pub gb_per_s: f64,
    /// Achieved / peak (0..1; 0 when the peak is unknown).
    pub frac_peak_flops: f64,
    pub frac_peak_bw: f64,
}

/// Per-(op, role) totals, sorted by time (largest first).
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub rows: Vec<ReportRow>,
    /// Summed time of all op calls.
    pub ops_ns: u64,
    /// Wall time of the profiled region.
    pub wall_ns: u64,
    /// Op calls recorded.
    pub calls: u64,
    /// Op time per phase (set_phase labels), largest first.
    pub phases: Vec<(String, u64)>,
    /// Total time of the caller's spans per category, largest first.
    pub span_totals: Vec<(String, u64)>,
    pub peaks: DevicePeaks,
}

impl Report {
    pub fn from_events(
        events: &[OpEvent],
        spans: &[Span],
        peaks: &DevicePeaks,
        wall_ns: Option<u64>,
    ) -> Report {
        let mut by: BTreeMap<(&'static str, Role), (u64, u64, u64, u64)> = BTreeMap::new();
        let mut phases: BTreeMap<&'static str, u64> = BTreeMap::new();
        let mut ops_ns = 0u64;
        for e in events {
            let r = by.entry((e.op, e.role)).or_default();
            r.0 += 1;
            r.1 += e.dur_ns;
            r.2 += e.flops;
            r.3 += e.bytes;
            ops_ns += e.dur_ns;
            *phases.entry(e.phase).or_default() += e.dur_ns;
        }
        let wall_ns = wall_ns.unwrap_or_else(|| {
            let first = events.iter().map(|e| e.start_ns).min().unwrap_or(0);
            let last = events
                .iter()
                .map(|e| e.start_ns + e.dur_ns)
                .max()
                .unwrap_or(0);
            last.saturating_sub(first)
        });
        let frac = |x: f64, peak: f64| if peak > 0.0 { x / peak } else { 0.0 };
        let mut rows: Vec<ReportRow> = by
            .into_iter()
            .map(|((op, role), (calls, ns, flops, bytes))| {
                let secs = ns as f64 * 1e-9;
                let gf = if secs > 0.0 {
                    flops as f64 / secs * 1e-9
                } else {
                    0.0
                };
                let gb = if secs > 0.0 {
                    bytes as f64 / secs * 1e-9
                } else {
                    0.0
                };
                ReportRow {
                    op: op.to_string(),
                    role: role.as_str().to_string(),
                    calls,
                    total_ns: ns,
                    share: if ops_ns > 0 {
                        ns as f64 / ops_ns as f64
                    } else {
                        0.0
                    },
                    flops,
                    bytes,
                    gflops_per_s: gf,
                    gb_per_s: gb,
                    frac_peak_flops: frac(gf, peaks.gflops),
                    frac_peak_bw: frac(gb, peaks.gbs),
                }
            })
            .collect();
        rows.sort_by(|a, b| b.total_ns.cmp(&a.total_ns).then(a.op.cmp(&b.op)));
        let mut phases: Vec<(String, u64)> = phases
            .into_iter()
            .map(|(p, n)| (p.to_string(), n))
            .collect();
        phases.sort_by_key(|p| std::cmp::Reverse(p.1));
        let mut st: BTreeMap<&str, u64> = BTreeMap::new();
        for s in spans {
            *st.entry(s.cat).or_default() += s.dur_ns;
        }
        let mut span_totals: Vec<(String, u64)> =
            st.into_iter().map(|(c, n)| (c.to_string(), n)).collect();
        span_totals.sort_by_key(|p| std::cmp::Reverse(p.1));
        Report {
            rows,
            ops_ns,
            wall_ns,
            calls: events.len() as u64,
            phases,
            span_totals,
            peaks: peaks.clone(),
        }
    }

    /// The terminal table.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{:<16} {:<11} {:>7} {:>10} {:>6} {:>9} {:>6} {:>8} {:>6}",
            "op", "role", "calls", "time ms", "share", "GFLOP/s", "%peak", "GB/s", "%bw"
        );
        for r in &self.rows {
            let _ = writeln!(
                out,
                "{:<16} {:<11} {:>7} {:>10.2} {:>5.1}% {:>9.1} {:>5.1}% {:>8.2} {:>5.1}%",
                r.op,
                r.role,
                r.calls,
                r.total_ns as f64 * 1e-6,
                r.share * 100.0,
                r.gflops_per_s,
                r.frac_peak_flops * 100.0,
                r.gb_per_s,
                r.frac_peak_bw * 100.0
            );
        }
        let _ = writeln!(
            out,
            "ops: {} calls, {:.2} ms of {:.2} ms wall ({:.1}%); outside ops (search, host glue): {:.2} ms",
            self.calls,
            self.ops_ns as f64 * 1e-6,
            self.wall_ns as f64 * 1e-6,
            if self.wall_ns > 0 {
                self.ops_ns as f64 / self.wall_ns as f64 * 100.0
            } else {
                0.0
            },
            self.wall_ns.saturating_sub(self.ops_ns) as f64 * 1e-6
        );
        if !self.phases.is_empty() {
            let p: Vec<String> = self
                .phases
                .iter()
                .map(|(n, ns)| {
                    format!(
                        "{} {:.2} ms",
                        if n.is_empty() { "(none)" } else { n },
                        *ns as f64 * 1e-6
                    )
                })
                .collect();
            let _ = writeln!(out, "op time by phase: {}", p.join(", "));
        }
        if !self.span_totals.is_empty() {
            let p: Vec<String> = self
                .span_totals
                .iter()
                .map(|(n, ns)| format!("{n} {:.2} ms", *ns as f64 * 1e-6))
                .collect();
            let _ = writeln!(out, "host spans: {}", p.join(", "));
        }
        let _ = writeln!(
            out,
            "peaks: {:.1} GFLOP/s, {:.1} GB/s ({})",
            self.peaks.gflops, self.peaks.gbs, self.peaks.description
        );
        out
    }
}

impl Backend for ProfiledBackend {
    fn device(&self) -> Device {
        self.inner.device()
    }
    fn run_scoped(&self, f: &mut (dyn FnMut() + Send)) {
        self.inner.run_scoped(f)
    }
    fn synchronize(&self) -> Result<()> {
        self.inner.synchronize()
    }
    fn range_push(&self, name: &str) {
        self.inner.range_push(name)
    }
    fn range_pop(&self) {
        self.inner.range_pop()
    }
    fn device_memory(&self) -> Option<crate::DeviceMemory> {
        self.inner.device_memory()
    }
    fn reset_peak_device_memory(&self) {
        self.inner.reset_peak_device_memory()
    }
    fn device_peaks(&self, dtype: DType) -> Option<DevicePeaks> {
        self.inner.device_peaks(dtype)
    }
    fn device_timestamp(&self) -> Result<Option<DeviceTimestamp>> {
        self.inner.device_timestamp()
    }
    fn device_elapsed_ns(&self, start: &DeviceTimestamp, end: &DeviceTimestamp) -> Result<u64> {
        self.inner.device_elapsed_ns(start, end)
    }

    fn describe(&self) -> String {
        format!("{} (profiled)", self.inner.describe())
    }

    fn zeros(&self, shape: &[usize], dtype: DType) -> Result<Tensor> {
        let t = self.begin("zeros");
        let r = self.inner.zeros(shape, dtype);
        self.finish(t, || {
            let n = shape.iter().product::<usize>() as u64 * dtype.size_in_bytes() as u64;
            Self::simple("zeros", 0, n, format!("{shape:?} {dtype}"))
        });
        r
    }
    fn upload(&self, x: &Tensor) -> Result<Tensor> {
        let t = self.begin("upload");
        let r = self.inner.upload(x);
        self.finish(t, || Self::simple("upload", 0, tbytes(x), shape_str(x)));
        r
    }
    fn download(&self, x: &Tensor) -> Result<Tensor> {
        let t = self.begin("download");
        let r = self.inner.download(x);
        self.finish(t, || Self::simple("download", 0, tbytes(x), shape_str(x)));
        r
    }
    fn copy_from_host(&self, src: &Tensor, dst: &mut Tensor) -> Result<()> {
        let t = self.begin("copy_from_host");
        let r = self.inner.copy_from_host(src, dst);
        self.finish(t, || {
            Self::simple("copy_from_host", 0, tbytes(src), shape_str(src))
        });
        r
    }
    fn copy_to_host(&self, src: &Tensor, dst: &mut Tensor) -> Result<()> {
        let t = self.begin("copy_to_host");
        let r = self.inner.copy_to_host(src, dst);
        self.finish(t, || {
            Self::simple("copy_to_host", 0, tbytes(src), shape_str(src))
        });
        r
    }
    fn cast(&self, x: &Tensor, dtype: DType) -> Result<Tensor> {
        let t = self.begin("cast");
        let r = self.inner.cast(x, dtype);
        self.finish(t, || {
            let out = x.elem_count() as u64 * dtype.size_in_bytes() as u64;
            Self::simple(
                "cast",
                x.elem_count() as u64,
                tbytes(x) + out,
                format!("{} -> {dtype}", shape_str(x)),
            )
        });
        r
    }
    fn kv_cache_dtype(&self, operand: DType) -> DType {
        self.inner.kv_cache_dtype(operand)
    }
    fn activation_dtype(&self, operand: DType) -> DType {
        self.inner.activation_dtype(operand)
    }
    fn write_rows(&self, src: &Tensor, dst: &mut Tensor, start: usize) -> Result<()> {
        let t = self.begin("write_rows");
        let r = self.inner.write_rows(src, dst, start);
        self.finish(t, || {
            Self::simple(
                "write_rows",
                0,
                tbytes(src) + src.elem_count() as u64 * dst.dtype().size_in_bytes() as u64,
                format!("src {} dst {}", shape_str(src), shape_str(dst)),
            )
        });
        r
    }
    fn write_rows_at(&self, src: &Tensor, dst: &mut Tensor, positions: &Tensor) -> Result<()> {
        let t = self.begin("write_rows");
        let r = self.inner.write_rows_at(src, dst, positions);
        self.finish(t, || {
            Self::simple(
                "write_rows",
                0,
                tbytes(src) + src.elem_count() as u64 * dst.dtype().size_in_bytes() as u64,
                format!("src {} dst {}", shape_str(src), shape_str(dst)),
            )
        });
        r
    }
    fn index_select(&self, src: &Tensor, index: &Tensor, dst: &mut Tensor) -> Result<()> {
        let t = self.begin("index_select");
        let r = self.inner.index_select(src, index, dst);
        self.finish(t, || {
            Self::simple(
                "index_select",
                0,
                2 * tbytes(dst) + tbytes(index),
                format!("src {} dst {}", shape_str(src), shape_str(dst)),
            )
        });
        r
    }

    fn linear(
        &self,
        x: &Tensor,
        w: &Tensor,
        bias: Option<&Tensor>,
        out: &mut Tensor,
    ) -> Result<()> {
        let t = self.begin("linear");
        let r = self.inner.linear(x, w, bias, out);
        self.finish(t, || self.linear_cost(x, w, bias, None));
        r
    }
    fn linear_act(
        &self,
        x: &Tensor,
        w: &Tensor,
        bias: Option<&Tensor>,
        act: Activation,
        out: &mut Tensor,
    ) -> Result<()> {
        let t = self.begin("linear");
        let r = self.inner.linear_act(x, w, bias, act, out);
        self.finish(t, || self.linear_cost(x, w, bias, Some(act)));
        r
    }
    fn linear_add(
        &self,
        x: &Tensor,
        w: &Tensor,
        bias: Option<&Tensor>,
        out: &mut Tensor,
    ) -> Result<()> {
        let t = self.begin("linear");
        let r = self.inner.linear_add(x, w, bias, out);
        // The residual epilogue: one add per output and the residual read.
        self.finish(t, || {
            let mut c = self.linear_cost(x, w, bias, None);
            let mn = (x.rows() * w.rows()) as u64;
            c.flops += mn;
            c.bytes += 4 * mn;
            c.detail.push_str(" + residual");
            c
        });
        r
    }
    fn linear_gated(
        &self,
        x: &Tensor,
        w_gate: &Tensor,
        w_up: &Tensor,
        act: Activation,
        out: &mut Tensor,
    ) -> Result<()> {
        let t = self.begin("linear");
        let r = self.inner.linear_gated(x, w_gate, w_up, act, out);
        // One op with both GEMMs' work: the gate's cost (with its activation)
        // plus the up projection's flops and weight bytes and the gating multiply.
        self.finish(t, || {
            let mut c = self.linear_cost(x, w_gate, None, Some(act));
            let (m, n, k) = (x.rows() as u64, w_up.rows() as u64, w_up.cols() as u64);
            c.flops += 2 * m * n * k + m * n;
            c.bytes += tbytes(w_up);
            c.detail = format!(
                "x {} w_gate {} w_up {} gated {act:?}",
                shape_str(x),
                shape_str(w_gate),
                shape_str(w_up)
            );
            c
        });
        r
    }
    fn batched_matmul(&self, a: &Tensor, b: &Tensor, out: &mut Tensor) -> Result<()> {
        let t = self.begin("batched_matmul");
        let r = self.inner.batched_matmul(a, b, out);
        self.finish(t, || {
            let d = a.dims();
            let (bt, m, k) = match d.len() {
                3 => (d[0], d[1], d[2]),
                _ => (1, a.rows(), a.cols()),
            };
            let n = b.cols();
            Self::simple(
                "batched_matmul",
                2 * (bt * m * n * k) as u64,
                tbytes(a) + tbytes(b) + tbytes(out),
                format!("a {} b {}", shape_str(a), shape_str(b)),
            )
        });
        r
    }

    fn norm(
        &self,
        kind: NormKind,
        x: &Tensor,
        weight: &Tensor,
        bias: Option<&Tensor>,
        eps: f32,
        out: &mut Tensor,
    ) -> Result<()> {
        let t = self.begin("norm");
        let r = self.inner.norm(kind, x, weight, bias, eps, out);
        self.finish(t, || Cost {
            op: "norm",
            role: norm_role(kind),
            flops: 5 * x.elem_count() as u64,
            bytes: 2 * tbytes(x) + tbytes(weight) + bias.map_or(0, tbytes),
            detail: shape_str(x),
        });
        r
    }
    fn add_norm(
        &self,
        kind: NormKind,
        x: &Tensor,
        residual: &mut Tensor,
        weight: &Tensor,
        bias: Option<&Tensor>,
        eps: f32,
        out: &mut Tensor,
    ) -> Result<()> {
        let t = self.begin("add_norm");
        let r = self
            .inner
            .add_norm(kind, x, residual, weight, bias, eps, out);
        self.finish(t, || Cost {
            op: "add_norm",
            role: norm_role(kind),
            flops: 6 * x.elem_count() as u64,
            bytes: 4 * tbytes(x) + tbytes(weight) + bias.map_or(0, tbytes),
            detail: shape_str(x),
        });
        r
    }

    fn activation(&self, x: &mut Tensor, act: Activation) -> Result<()> {
        let t = self.begin("activation");
        let r = self.inner.activation(x, act);
        self.finish(t, || {
            Self::simple(
                "activation",
                x.elem_count() as u64,
                2 * tbytes(x),
                format!("{} {act:?}", shape_str(x)),
            )
        });
        r
    }
    fn gated_activation(
        &self,
        gate: &Tensor,
        up: &Tensor,
        act: Activation,
        out: &mut Tensor,
    ) -> Result<()> {
        let t = self.begin("gated_activation");
        let r = self.inner.gated_activation(gate, up, act, out);
        self.finish(t, || {
            Self::simple(
                "gated_activation",
                2 * gate.elem_count() as u64,
                3 * tbytes(gate),
                format!("{} {act:?}", shape_str(gate)),
            )
        });
        r
    }
    fn add_assign(&self, x: &mut Tensor, y: &Tensor) -> Result<()> {
        let t = self.begin("add_assign");
        let r = self.inner.add_assign(x, y);
        self.finish(t, || {
            Self::simple(
                "add_assign",
                x.elem_count() as u64,
                2 * tbytes(x) + tbytes(y),
                shape_str(x),
            )
        });
        r
    }
    fn mul_assign(&self, x: &mut Tensor, y: &Tensor) -> Result<()> {
        let t = self.begin("mul_assign");
        let r = self.inner.mul_assign(x, y);
        self.finish(t, || {
            Self::simple(
                "mul_assign",
                x.elem_count() as u64,
                2 * tbytes(x) + tbytes(y),
                shape_str(x),
            )
        });
        r
    }
    fn scale(&self, x: &mut Tensor, s: f32) -> Result<()> {
        let t = self.begin("scale");
        let r = self.inner.scale(x, s);
        self.finish(t, || {
            Self::simple("scale", x.elem_count() as u64, 2 * tbytes(x), shape_str(x))
        });
        r
    }
    fn embedding(&self, ids: &Tensor, table: &Tensor, scale: f32, out: &mut Tensor) -> Result<()> {
        let t = self.begin("embedding");
        let r = self.inner.embedding(ids, table, scale, out);
        self.finish(t, || {
            let rows = ids.elem_count();
            let cols = table.cols();
            let el = match table.dtype() {
                DType::I8 => 1,
                d => d.size_in_bytes(),
            };
            Self::simple(
                "embedding",
                (rows * cols) as u64,
                (rows * cols * (el + 4)) as u64 + tbytes(ids),
                format!("ids {} table {}", shape_str(ids), shape_str(table)),
            )
        });
        r
    }

    fn attention(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        params: &AttentionParams,
        out: &mut Tensor,
    ) -> Result<()> {
        let t = self.begin("attention");
        let recorded = t.is_some();
        let r = self.inner.attention(q, k, v, params, out);
        self.finish(t, || attention_cost(q, k, params));
        if recorded {
            self.lock().last_attn_out = storage_addr(out);
        }
        r
    }

    /// Costed with the caller's host view of the positions (`params.q_offset`,
    /// `params.kv_len`): reading `positions` would wait for the device.
    fn attention_at(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        params: &AttentionParams,
        positions: &Tensor,
        out: &mut Tensor,
    ) -> Result<()> {
        let t = self.begin("attention");
        let recorded = t.is_some();
        let r = self.inner.attention_at(q, k, v, params, positions, out);
        self.finish(t, || attention_cost(q, k, params));
        if recorded {
            self.lock().last_attn_out = storage_addr(out);
        }
        r
    }

    fn softmax(&self, x: &mut Tensor) -> Result<()> {
        let t = self.begin("softmax");
        let r = self.inner.softmax(x);
        self.finish(t, || {
            Self::simple(
                "softmax",
                4 * x.elem_count() as u64,
                2 * tbytes(x),
                shape_str(x),
            )
        });
        r
    }
    fn log_softmax(&self, x: &mut Tensor) -> Result<()> {
        let t = self.begin("log_softmax");
        let r = self.inner.log_softmax(x);
        self.finish(t, || {
            Self::simple(
                "log_softmax",
                4 * x.elem_count() as u64,
                2 * tbytes(x),
                shape_str(x),
            )
        });
        r
    }
    fn topk_into(
        &self,
        x: &Tensor,
        k: usize,
        ids_out: &mut Tensor,
        vals_out: &mut Tensor,
    ) -> Result<()> {
        let t = self.begin("topk_into");
        let r = self.inner.topk_into(x, k, ids_out, vals_out);
        self.finish(t, || {
            Self::simple(
                "topk_into",
                x.elem_count() as u64,
                tbytes(x),
                format!("{} k {k}", shape_str(x)),
            )
        });
        r
    }
    fn scatter_fill(&self, x: &mut Tensor, index: &Tensor, value: f32) -> Result<()> {
        let t = self.begin("scatter_fill");
        let r = self.inner.scatter_fill(x, index, value);
        self.finish(t, || {
            Self::simple("scatter_fill", 0, 2 * tbytes(index), shape_str(index))
        });
        r
    }
    fn repetition_penalty(&self, x: &mut Tensor, index: &Tensor, penalty: f32) -> Result<()> {
        let t = self.begin("repetition_penalty");
        let r = self.inner.repetition_penalty(x, index, penalty);
        self.finish(t, || {
            let n = index.elem_count() as u64;
            Self::simple("repetition_penalty", n, 3 * 4 * n, shape_str(index))
        });
        r
    }
    fn softmax_stats(&self, x: &Tensor, out: &mut Tensor) -> Result<()> {
        let t = self.begin("softmax_stats");
        let r = self.inner.softmax_stats(x, out);
        self.finish(t, || {
            Self::simple(
                "softmax_stats",
                3 * x.elem_count() as u64,
                tbytes(x),
                shape_str(x),
            )
        });
        r
    }
    fn topk(&self, x: &Tensor, k: usize) -> Result<(Vec<u32>, Vec<f32>)> {
        let t = self.begin("topk");
        let r = self.inner.topk(x, k);
        self.finish(t, || {
            Self::simple(
                "topk",
                x.elem_count() as u64,
                tbytes(x),
                format!("{} k {k}", shape_str(x)),
            )
        });
        r
    }
}

fn norm_role(kind: NormKind) -> Role {
    match kind {
        NormKind::LayerNorm => Role::LayerNorm,
        NormKind::RmsNorm => Role::RmsNorm,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A backend that does nothing but return Ok (ops take a little time).
    #[derive(Debug)]
    struct Null;

    thread_local! {
        /// The waits and profiler ranges `Null` was asked for, on this thread.
        static NULL_CALLS: std::cell::RefCell<Vec<String>> = const { std::cell::RefCell::new(Vec::new()) };
    }

    fn null_calls() -> Vec<String> {
        NULL_CALLS.with(|c| c.take())
    }

    impl Backend for Null {
        fn device(&self) -> Device {
            Device::Cpu
        }
        fn synchronize(&self) -> Result<()> {
            NULL_CALLS.with(|c| c.borrow_mut().push("sync".into()));
            Ok(())
        }
        fn range_push(&self, name: &str) {
            NULL_CALLS.with(|c| c.borrow_mut().push(format!("push {name}")));
        }
        fn range_pop(&self) {
            NULL_CALLS.with(|c| c.borrow_mut().push("pop".into()));
        }
        fn describe(&self) -> String {
            "null".into()
        }
        fn zeros(&self, shape: &[usize], dtype: DType) -> Result<Tensor> {
            Ok(Tensor::zeros(shape.to_vec(), dtype))
        }
        fn upload(&self, t: &Tensor) -> Result<Tensor> {
            Ok(t.clone())
        }
        fn download(&self, t: &Tensor) -> Result<Tensor> {
            Ok(t.clone())
        }
        fn cast(&self, t: &Tensor, _dtype: DType) -> Result<Tensor> {
            Ok(t.clone())
        }
        fn write_rows(&self, _: &Tensor, _: &mut Tensor, _: usize) -> Result<()> {
            Ok(())
        }
        // Not the default, so that forwarding shows.
        fn kv_cache_dtype(&self, operand: DType) -> DType {
            operand
        }
        fn activation_dtype(&self, operand: DType) -> DType {
            operand
        }
        fn index_select(&self, _: &Tensor, _: &Tensor, _: &mut Tensor) -> Result<()> {
            Ok(())
        }
        fn linear(&self, _: &Tensor, _: &Tensor, _: Option<&Tensor>, _: &mut Tensor) -> Result<()> {
            std::thread::sleep(std::time::Duration::from_micros(50));
            Ok(())
        }
        fn batched_matmul(&self, _: &Tensor, _: &Tensor, _: &mut Tensor) -> Result<()> {
            Ok(())
        }
        fn norm(
            &self,
            _: NormKind,
            _: &Tensor,
            _: &Tensor,
            _: Option<&Tensor>,
            _: f32,
            _: &mut Tensor,
        ) -> Result<()> {
            Ok(())
        }
        fn add_norm(
            &self,
            _: NormKind,
            _: &Tensor,
            _: &mut Tensor,
            _: &Tensor,
            _: Option<&Tensor>,
            _: f32,
            _: &mut Tensor,
        ) -> Result<()> {
            Ok(())
        }
        fn activation(&self, _: &mut Tensor, _: Activation) -> Result<()> {
            Ok(())
        }
        fn gated_activation(
            &self,
            _: &Tensor,
            _: &Tensor,
            _: Activation,
            _: &mut Tensor,
        ) -> Result<()> {
            Ok(())
        }
        fn add_assign(&self, _: &mut Tensor, _: &Tensor) -> Result<()> {
            Ok(())
        }
        fn mul_assign(&self, _: &mut Tensor, _: &Tensor) -> Result<()> {
            Ok(())
        }
        fn scale(&self, _: &mut Tensor, _: f32) -> Result<()> {
            Ok(())
        }
        fn embedding(&self, _: &Tensor, _: &Tensor, _: f32, _: &mut Tensor) -> Result<()> {
            Ok(())
        }
        fn attention(
            &self,
            _: &Tensor,
            _: &Tensor,
            _: &Tensor,
            _: &AttentionParams,
            _: &mut Tensor,
        ) -> Result<()> {
            Ok(())
        }
        fn softmax(&self, _: &mut Tensor) -> Result<()> {
            Ok(())
        }
        fn log_softmax(&self, _: &mut Tensor) -> Result<()> {
            Ok(())
        }
        fn topk(&self, _: &Tensor, _: usize) -> Result<(Vec<u32>, Vec<f32>)> {
            Err(crate::Error::Invalid(
                "topk: not in the null backend".into(),
            ))
        }
    }

    fn dims(d: usize, inner: usize, ff: usize, vocab: usize) -> ModelDims {
        ModelDims {
            d_model: d,
            attn_inner: vec![inner],
            ffn: vec![ff],
            vocab: vec![vocab],
        }
    }

    fn params(causal: bool, kv_len: usize) -> AttentionParams<'static> {
        AttentionParams {
            num_heads: 8,
            head_dim: 64,
            scale: 1.0,
            causal,
            q_offset: 0,
            kv_len,
            key_mask: None,
            position_bias: None,
            relative_bias: None,
            kv_index: None,
            operand_dtype: DType::F32,
        }
    }

    #[test]
    fn linear_roles_from_shapes() {
        let d = dims(512, 512, 2048, 32128);
        let d = Some(&d);
        assert_eq!(linear_role(d, 512, 512, false), Role::QkvProj);
        assert_eq!(linear_role(d, 512, 512, true), Role::AttnOut);
        assert_eq!(linear_role(d, 1536, 512, false), Role::QkvProj);
        assert_eq!(linear_role(d, 2048, 512, false), Role::FfnUp);
        assert_eq!(linear_role(d, 4096, 512, false), Role::FfnUp);
        assert_eq!(linear_role(d, 512, 2048, false), Role::FfnDown);
        assert_eq!(linear_role(d, 32128, 512, false), Role::LmHead);
        assert_eq!(linear_role(d, 7, 3, false), Role::OtherLinear);
        // inner != d_model (t5-3b-like): the shape alone decides
        let big = dims(1024, 4096, 16384, 32128);
        assert_eq!(linear_role(Some(&big), 1024, 4096, false), Role::AttnOut);
        assert_eq!(linear_role(Some(&big), 4096, 1024, false), Role::QkvProj);
        assert_eq!(linear_role(None, 512, 512, true), Role::AttnOut);
        assert_eq!(linear_role(None, 512, 512, false), Role::OtherLinear);
    }

    #[test]
    fn attention_roles_and_flops() {
        let q_enc = [2, 32, 512];
        let mut p = params(false, 32);
        assert_eq!(attention_role(&q_enc, &q_enc, &p), Role::SelfAttn);
        // decoder query over encoder keys
        assert_eq!(
            attention_role(&[2, 1, 512], &[2, 32, 512], &p),
            Role::CrossAttn
        );
        let idx = Tensor::from_u32(vec![0, 0], [2]).unwrap();
        p.kv_index = Some(&idx);
        assert_eq!(
            attention_role(&[2, 1, 512], &[1, 1, 512], &p),
            Role::CrossAttn
        );
        let mut c = params(true, 5);
        c.q_offset = 4;
        assert_eq!(
            attention_role(&[2, 1, 512], &[2, 64, 512], &c),
            Role::SelfAttn
        );
        // one query seeing 5 keys, 8 heads of 64, batch 2
        assert_eq!(attention_flops(&[2, 1, 512], &c), 4 * 2 * 8 * 64 * 5);
        // causal prefill of 3 queries: 1 + 2 + 3 keys
        let pre = params(true, 3);
        assert_eq!(attention_flops(&[1, 3, 512], &pre), 4 * 8 * 64 * 6);
    }

    #[test]
    fn cpu_peak() {
        // 2 GHz x 2 cores x 2 FMA units x 16 lanes x 2
        assert_eq!(cpu_peak_gflops(2.0, 2, 2, 16), 256.0);
    }

    fn run_layer(p: &ProfiledBackend) {
        let x = Tensor::zeros([1, 4, 512], DType::F32);
        let wq = Tensor::zeros([512, 512], DType::F32);
        let mut q = Tensor::zeros([1, 4, 512], DType::F32);
        let mut a = Tensor::zeros([1, 4, 512], DType::F32);
        let mut o = Tensor::zeros([1, 4, 512], DType::F32);
        p.linear(&x, &wq, None, &mut q).unwrap();
        p.attention(&q, &q, &q, &params(false, 4), &mut a).unwrap();
        p.linear(&a, &wq, None, &mut o).unwrap();
        let w = Tensor::zeros([512], DType::F32);
        let mut n = Tensor::zeros([1, 4, 512], DType::F32);
        p.norm(NormKind::RmsNorm, &o, &w, None, 1e-6, &mut n)
            .unwrap();
        let wl = Tensor::zeros([32128, 512], DType::F32);
        let mut logits = Tensor::zeros([4, 32128], DType::F32);
        p.linear(&n, &wl, None, &mut logits).unwrap();
    }

    fn peaks() -> DevicePeaks {
        DevicePeaks {
            gflops: 100.0,
            gbs: 10.0,
            description: "test".into(),
        }
    }

    #[test]
    fn kv_cache_and_activation_dtypes_are_the_inner_backends() {
        let p = ProfiledBackend::new(Arc::new(Null), None);
        for dt in [DType::F32, DType::F16, DType::BF16] {
            assert_eq!(p.kv_cache_dtype(dt), dt);
            assert_eq!(p.activation_dtype(dt), dt);
        }
    }

    #[test]
    fn each_recorded_op_waits_for_the_device_and_gets_a_profiler_range() {
        let p = ProfiledBackend::new(Arc::new(Null), None);
        let x = Tensor::zeros(vec![2, 4], DType::F32);
        let w = Tensor::zeros(vec![3, 4], DType::F32);
        let mut out = Tensor::zeros(vec![2, 3], DType::F32);
        null_calls();
        p.linear(&x, &w, None, &mut out).unwrap();
        p.scale(&mut out, 2.0).unwrap();
        // Waiting before the start and before the end times the op alone on an
        // asynchronous device; the range brackets the op in Nsight's timeline.
        let one = |op: &str| {
            [
                "sync".to_string(),
                format!("push {op}"),
                "sync".into(),
                "pop".into(),
            ]
        };
        assert_eq!(null_calls(), [one("linear"), one("scale")].concat());
        assert_eq!(p.events().unwrap().len(), 2);
        // Recording off: the ops are forwarded with no waits and no ranges.
        p.set_enabled(false);
        p.linear(&x, &w, None, &mut out).unwrap();
        assert!(null_calls().is_empty());
        // Ranges the caller opens (layers) reach the inner backend.
        p.range_push("decoder.layer.0");
        p.range_pop();
        assert_eq!(null_calls(), ["push decoder.layer.0", "pop"]);
    }

    #[test]
    fn records_roles_costs_and_report() {
        let p = ProfiledBackend::new(Arc::new(Null), Some(dims(512, 512, 2048, 32128)));
        p.set_phase("decode");
        run_layer(&p);
        let ev = p.events().unwrap();
        let roles: Vec<(&str, Role)> = ev.iter().map(|e| (e.op, e.role)).collect();
        assert_eq!(
            roles,
            vec![
                ("linear", Role::QkvProj),
                ("attention", Role::SelfAttn),
                ("linear", Role::AttnOut),
                ("norm", Role::RmsNorm),
                ("linear", Role::LmHead),
            ]
        );
        assert_eq!(ev[0].flops, 2 * 4 * 512 * 512);
        assert_eq!(ev[0].bytes, (4 * 512 + 512 * 512 + 4 * 512) as u64 * 4);
        assert!(ev.iter().all(|e| e.phase == "decode"));
        assert!(ev[0].dur_ns >= 50_000, "the null linear sleeps 50 us");

        let r = p.report(&peaks(), None).unwrap();
        assert_eq!(r.calls, 5);
        assert_eq!(r.rows.len(), 5);
        // sorted by time: the three sleeping linears first
        assert!(r.rows[..3].iter().all(|row| row.op == "linear"));
        assert!(r.rows.windows(2).all(|w| w[0].total_ns >= w[1].total_ns));
        let share: f64 = r.rows.iter().map(|row| row.share).sum();
        assert!((share - 1.0).abs() < 1e-9);
        let lm = r.rows.iter().find(|row| row.role == "lm_head").unwrap();
        assert_eq!(lm.calls, 1);
        let secs = lm.total_ns as f64 * 1e-9;
        assert!((lm.gflops_per_s - lm.flops as f64 / secs * 1e-9).abs() < 1e-6);
        assert!((lm.frac_peak_flops - lm.gflops_per_s / 100.0).abs() < 1e-12);
        assert!((lm.frac_peak_bw - lm.gb_per_s / 10.0).abs() < 1e-12);
        assert!(r.wall_ns >= r.ops_ns);
        let text = r.to_text();
        assert!(
            text.contains("lm_head") && text.contains("attn_out"),
            "{text}"
        );
    }

    #[test]
    fn linear_add_is_one_linear_op_that_reads_the_residual() {
        let p = ProfiledBackend::new(Arc::new(Null), Some(dims(512, 512, 2048, 32128)));
        let (m, k, n) = (4u64, 2048u64, 512u64);
        let x = Tensor::zeros([1, 4, 2048], DType::F32);
        let w = Tensor::zeros([512, 2048], DType::F32);
        let mut out = Tensor::zeros([1, 4, 512], DType::F32);
        p.linear_add(&x, &w, None, &mut out).unwrap();
        let ev = p.events().unwrap();
        assert_eq!(ev.len(), 1, "the inner ops are not recorded apart");
        assert_eq!((ev[0].op, ev[0].role), ("linear", Role::FfnDown));
        assert_eq!(ev[0].flops, 2 * m * n * k + m * n);
        // x, w, the residual read and out written.
        assert_eq!(ev[0].bytes, (m * k + n * k + 2 * m * n) * 4);
    }

    #[test]
    fn linear_gated_is_one_ffn_up_op_with_both_gemms() {
        let p = ProfiledBackend::new(Arc::new(Null), Some(dims(512, 512, 2048, 32128)));
        let (m, k, n) = (4u64, 512u64, 2048u64);
        let x = Tensor::zeros([1, 4, 512], DType::F32);
        let wg = Tensor::zeros([2048, 512], DType::F32);
        let wu = Tensor::zeros([2048, 512], DType::F32);
        let mut out = Tensor::zeros([1, 4, 2048], DType::F32);
        p.linear_gated(&x, &wg, &wu, Activation::GeluTanh, &mut out)
            .unwrap();
        let ev = p.events().unwrap();
        assert_eq!(ev.len(), 1, "the inner ops are not recorded apart");
        assert_eq!((ev[0].op, ev[0].role), ("linear", Role::FfnUp));
        // Two GEMMs, the activation and the gating multiply.
        assert_eq!(ev[0].flops, 4 * m * n * k + 2 * m * n);
        // x, both weights, out.
        assert_eq!(ev[0].bytes, (m * k + 2 * n * k + m * n) * 4);
    }

    #[test]
    fn disabled_and_reset() {
        let p = ProfiledBackend::new(Arc::new(Null), None);
        p.set_enabled(false);
        run_layer(&p);
        assert!(p.events().unwrap().is_empty());
        p.set_enabled(true);
        run_layer(&p);
        assert_eq!(p.events().unwrap().len(), 5);
        p.reset();
        assert!(p.events().unwrap().is_empty());
    }

    #[test]
    fn chrome_trace_has_one_event_per_call() {
        let p = ProfiledBackend::new(Arc::new(Null), Some(dims(512, 512, 2048, 32128)));
        run_layer(&p);
        run_layer(&p);
        let t0 = p.now_ns();
        p.record_span("step \"0\"", "step", t0, t0 + 1500);
        let json = p.chrome_trace().unwrap();
        assert!(json.starts_with("{\"displayTimeUnit\":\"ms\",\"traceEvents\":["));
        assert_eq!(json.matches("\"cat\":\"op\"").count(), 10);
        assert!(json.contains("\"ops (host clock)\""));
        assert_eq!(json.matches("\"ph\":\"X\"").count(), 11);
        assert!(json.contains("\"name\":\"step \\\"0\\\"\""));
        assert!(json.contains("\"dur\":1.500"));
        assert!(json.contains("\"name\":\"linear lm_head\""));
        // balanced braces and brackets (no string in it holds one)
        let open = json.matches('{').count();
        assert_eq!(open, json.matches('}').count());
        assert_eq!(json.matches('[').count(), json.matches(']').count());
        let r = p.report(&peaks(), None).unwrap();
        assert_eq!(r.span_totals, vec![("step".to_string(), 1500)]);
    }

    /// `Null` with a device clock of its own: each op queued advances it by a
    /// fixed cost, and timestamps read it (as CUDA events read the GPU's).
    #[derive(Debug, Default)]
    struct DeviceClocked {
        clock_ns: std::sync::atomic::AtomicU64,
        fail_reads: std::sync::atomic::AtomicBool,
    }

    impl DeviceClocked {
        fn advance(&self, ns: u64) {
            self.clock_ns
                .fetch_add(ns, std::sync::atomic::Ordering::SeqCst);
        }
    }

    impl Backend for DeviceClocked {
        fn device(&self) -> Device {
            Device::Cuda(0)
        }
        fn synchronize(&self) -> Result<()> {
            Null.synchronize()
        }
        fn range_push(&self, name: &str) {
            Null.range_push(name)
        }
        fn range_pop(&self) {
            Null.range_pop()
        }
        fn device_timestamp(&self) -> Result<Option<DeviceTimestamp>> {
            let now = self.clock_ns.load(std::sync::atomic::Ordering::SeqCst);
            Ok(Some(DeviceTimestamp::new(now)))
        }
        fn device_elapsed_ns(&self, a: &DeviceTimestamp, b: &DeviceTimestamp) -> Result<u64> {
            if self.fail_reads.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(crate::Error::Cuda("an earlier kernel faulted".into()));
            }
            let (a, b) = (a.downcast_ref::<u64>(), b.downcast_ref::<u64>());
            Ok(b.unwrap() - a.unwrap())
        }
        fn describe(&self) -> String {
            "device-clocked null".into()
        }
        fn zeros(&self, shape: &[usize], dtype: DType) -> Result<Tensor> {
            Null.zeros(shape, dtype)
        }
        fn upload(&self, t: &Tensor) -> Result<Tensor> {
            Null.upload(t)
        }
        fn download(&self, t: &Tensor) -> Result<Tensor> {
            Null.download(t)
        }
        fn cast(&self, t: &Tensor, dtype: DType) -> Result<Tensor> {
            Null.cast(t, dtype)
        }
        fn write_rows(&self, a: &Tensor, b: &mut Tensor, c: usize) -> Result<()> {
            Null.write_rows(a, b, c)
        }
        fn index_select(&self, a: &Tensor, b: &Tensor, c: &mut Tensor) -> Result<()> {
            Null.index_select(a, b, c)
        }
        fn linear(&self, _: &Tensor, _: &Tensor, _: Option<&Tensor>, _: &mut Tensor) -> Result<()> {
            self.advance(70_000);
            Ok(())
        }
        fn batched_matmul(&self, a: &Tensor, b: &Tensor, c: &mut Tensor) -> Result<()> {
            Null.batched_matmul(a, b, c)
        }
        fn norm(
            &self,
            kind: NormKind,
            x: &Tensor,
            w: &Tensor,
            b: Option<&Tensor>,
            eps: f32,
            out: &mut Tensor,
        ) -> Result<()> {
            self.advance(3_000);
            Null.norm(kind, x, w, b, eps, out)
        }
        fn add_norm(
            &self,
            kind: NormKind,
            x: &Tensor,
            r: &mut Tensor,
            w: &Tensor,
            b: Option<&Tensor>,
            eps: f32,
            out: &mut Tensor,
        ) -> Result<()> {
            Null.add_norm(kind, x, r, w, b, eps, out)
        }
        fn activation(&self, x: &mut Tensor, act: Activation) -> Result<()> {
            Null.activation(x, act)
        }
        fn gated_activation(
            &self,
            g: &Tensor,
            u: &Tensor,
            act: Activation,
            out: &mut Tensor,
        ) -> Result<()> {
            Null.gated_activation(g, u, act, out)
        }
        fn add_assign(&self, x: &mut Tensor, y: &Tensor) -> Result<()> {
            Null.add_assign(x, y)
        }
        fn mul_assign(&self, x: &mut Tensor, y: &Tensor) -> Result<()> {
            Null.mul_assign(x, y)
        }
        fn scale(&self, x: &mut Tensor, s: f32) -> Result<()> {
            Null.scale(x, s)
        }
        fn embedding(&self, i: &Tensor, t: &Tensor, s: f32, o: &mut Tensor) -> Result<()> {
            Null.embedding(i, t, s, o)
        }
        fn attention(
            &self,
            q: &Tensor,
            k: &Tensor,
            v: &Tensor,
            params: &AttentionParams,
            out: &mut Tensor,
        ) -> Result<()> {
            self.advance(20_000);
            Null.attention(q, k, v, params, out)
        }
        fn softmax(&self, x: &mut Tensor) -> Result<()> {
            Null.softmax(x)
        }
        fn log_softmax(&self, x: &mut Tensor) -> Result<()> {
            Null.log_softmax(x)
        }
        fn topk(&self, x: &Tensor, k: usize) -> Result<(Vec<u32>, Vec<f32>)> {
            Null.topk(x, k)
        }
    }

    #[test]
    fn a_device_timer_times_ops_on_the_device_clock_without_waiting_per_op() {
        let dev = Arc::new(DeviceClocked::default());
        let p = ProfiledBackend::new(dev.clone(), Some(dims(512, 512, 2048, 32128)));
        null_calls();
        run_layer(&p);
        // One wait, where the device and host clocks meet before the first op;
        // then only the ranges, so the device runs as it would unprofiled.
        let calls = null_calls();
        assert_eq!(
            calls.iter().filter(|c| *c == "sync").count(),
            1,
            "{calls:?}"
        );
        assert_eq!(calls.iter().filter(|c| c.starts_with("push")).count(), 5);
        assert_eq!(p.device_timed(), Some(true));
        let ev = p.events().unwrap();
        let durs: Vec<u64> = ev.iter().map(|e| e.dur_ns).collect();
        assert_eq!(durs, [70_000, 20_000, 70_000, 3_000, 70_000]);
        // On the device clock the ops run back to back from the anchor.
        for w in ev.windows(2) {
            assert_eq!(w[1].start_ns, w[0].start_ns + w[0].dur_ns);
        }
        assert!(p
            .chrome_trace()
            .unwrap()
            .contains("\"ops (device clock, CUDA events)\""));
        let r = p.report(&peaks(), Some(1_000_000)).unwrap();
        assert_eq!(r.calls, 5);
        assert_eq!(r.ops_ns, 233_000);

        // A read-back failure (a faulted kernel) is an error, not a made-up time.
        run_layer(&p);
        dev.fail_reads
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let err = p.report(&peaks(), None).unwrap_err().to_string();
        assert!(err.contains("faulted"), "{err}");
        dev.fail_reads
            .store(false, std::sync::atomic::Ordering::SeqCst);

        // Long runs are read back in batches; each batch takes a new anchor.
        p.reset();
        null_calls();
        for _ in 0..(PENDING_LIMIT / 5 + 1) {
            run_layer(&p);
        }
        let syncs = null_calls().iter().filter(|c| *c == "sync").count();
        assert_eq!(syncs, 2, "one anchor per batch read back");
        assert_eq!(p.events().unwrap().len(), 5 * (PENDING_LIMIT / 5 + 1));
    }

    #[test]
    fn json_escapes() {
        assert_eq!(json_str("a\"b\\c\n\u{1}"), "\"a\\\"b\\\\c\\n\\u0001\"");
        assert_eq!(us(1_234_567), "1234.567");
    }
}
