//! Shared golden-fixture harness: any [`Seq2SeqModel`] against the Hugging Face
//! goldens of `tests/fixtures/<name>/golden.json` (schema: tools/README.md,
//! "golden.json schema").
//!
//! Each architecture test file loads its model and calls one check per test, e.g.
//!
//! ```ignore
//! mod common;
//! #[test]
//! fn t5_encoder_matches_hf() {
//!     common::check_encoder("t5", &load("t5", DType::F32));
//! }
//! ```
//!
//! Float comparison (all checks): element `i` passes when
//! `|got[i] - want[i]| <= rel * max(|want[i]|, 1.0)` — relative error for values of
//! magnitude above 1, absolute error below. The f32 bound is [`REL_F32`] (1e-4).
//! NaN never passes. A failure names the worst element with its coordinates.
//!
//! Ids are compared exactly. HF right-pads finished rows (batch, and
//! `num_return_sequences > 1`) with `pad_token_id`; a golden row is cut after its
//! first EOS (a row without EOS ran to `max_length` and has no padding).
//!
//! Every check collects all mismatches before failing, so one bad case does not hide
//! the others.

#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::Arc;

use encdec_core::{Backend, DType, Tensor};
use encdec_generate::{
    EarlyStopping, GenerationConfig, GenerationOverrides, Generator, Hypothesis, Seq2SeqModel,
    TraceEvent,
};
use encdec_models::{Checkpoint, ModelConfig};
use serde_json::Value;

/// Relative tolerance of f32 runs against the f32 goldens.
pub const REL_F32: f32 = 1e-4;

// ---------------------------------------------------------------------------------
// fixtures and goldens
// ---------------------------------------------------------------------------------

/// `tests/fixtures/<name>` of the workspace.
pub fn fixture_dir(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures")
        .join(name)
}

/// The parsed `golden.json` of a fixture.
pub fn golden(name: &str) -> Value {
    let p = fixture_dir(name).join("golden.json");
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// The config and checkpoint of a fixture (for the architecture's `load`).
pub fn open_fixture(name: &str) -> (ModelConfig, Checkpoint) {
    let dir = fixture_dir(name);
    let cfg = ModelConfig::from_dir(&dir).unwrap_or_else(|e| panic!("{name}: {e}"));
    let ckpt = Checkpoint::open(&dir).unwrap_or_else(|e| panic!("{name}: {e}"));
    (cfg, ckpt)
}

/// The CPU backend the parity tests run on.
pub fn cpu() -> Arc<dyn Backend> {
    Arc::new(encdec_cpu::CpuBackend::new())
}

/// `v[key]`, or a panic naming the key.
pub fn field<'a>(v: &'a Value, key: &str) -> &'a Value {
    match v.get(key) {
        Some(x) => x,
        None => panic!("golden: missing key `{key}`"),
    }
}

pub fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap_or_else(|| panic!("golden: expected a list of ids, got {v}"))
        .iter()
        .map(|x| {
            x.as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .unwrap_or_else(|| panic!("golden: bad id {x}"))
        })
        .collect()
}

pub fn ids2(v: &Value) -> Vec<Vec<u32>> {
    v.as_array()
        .unwrap_or_else(|| panic!("golden: expected a list of id lists, got {v}"))
        .iter()
        .map(ids)
        .collect()
}

/// A nested list of numbers, flattened, with its shape.
pub fn floats(v: &Value) -> (Vec<f32>, Vec<usize>) {
    fn walk(v: &Value, depth: usize, out: &mut Vec<f32>, shape: &mut Vec<usize>) {
        match v {
            Value::Array(items) => {
                if shape.len() == depth {
                    shape.push(items.len());
                }
                for it in items {
                    walk(it, depth + 1, out, shape);
                }
            }
            x => out.push(
                x.as_f64()
                    .unwrap_or_else(|| panic!("golden: expected a number, got {x}"))
                    as f32,
            ),
        }
    }
    let (mut out, mut shape) = (Vec::new(), Vec::new());
    walk(v, 0, &mut out, &mut shape);
    (out, shape)
}

pub fn num(v: &Value) -> f32 {
    v.as_f64()
        .unwrap_or_else(|| panic!("golden: expected a number, got {v}")) as f32
}

pub fn cases(g: &Value) -> &[Value] {
    field(g, "cases")
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

pub fn case_name(c: &Value) -> &str {
    c.get("name").and_then(Value::as_str).unwrap_or("?")
}

// ---------------------------------------------------------------------------------
// comparison
// ---------------------------------------------------------------------------------

/// The largest deviation between two arrays under the harness metric.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Deviation {
    /// max over i of `|got - want| / max(|want|, 1)`.
    pub max_rel: f32,
    /// max over i of `|got - want|`.
    pub max_abs: f32,
    /// Flat index of the element with the largest `max_rel`.
    pub worst: usize,
    pub got: f32,
    pub want: f32,
    /// `||got - want|| / ||want||` (the largest over the arrays merged by [`Deviation::max`]).
    pub rel_l2: f32,
}

impl Deviation {
    pub const ZERO: Deviation = Deviation {
        max_rel: 0.0,
        max_abs: 0.0,
        worst: 0,
        got: 0.0,
        want: 0.0,
        rel_l2: 0.0,
    };
    /// The larger of two deviations (by `max_rel`; `max_abs` is the max of both).
    pub fn max(self, o: Deviation) -> Deviation {
        let mut w = if o.max_rel > self.max_rel || o.max_rel.is_nan() {
            o
        } else {
            self
        };
        w.max_abs = self.max_abs.max(o.max_abs);
        w.rel_l2 = self.rel_l2.max(o.rel_l2);
        w
    }
}

/// Row-major coordinates of flat index `i` in `shape`.
pub fn coords(mut i: usize, shape: &[usize]) -> Vec<usize> {
    let mut c = vec![0; shape.len()];
    for d in (0..shape.len()).rev() {
        let n = shape[d].max(1);
        c[d] = i % n;
        i /= n;
    }
    c
}

/// The deviation of `got` from `want` (lengths must agree; NaN gives `max_rel` NaN).
pub fn deviation(got: &[f32], want: &[f32]) -> Deviation {
    assert_eq!(got.len(), want.len(), "deviation: lengths differ");
    let mut d = Deviation::ZERO;
    let (mut num, mut den) = (0f64, 0f64);
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let abs = (g - w).abs();
        let rel = abs / w.abs().max(1.0);
        if rel.is_nan() {
            return Deviation {
                max_rel: f32::NAN,
                max_abs: f32::NAN,
                worst: i,
                got: g,
                want: w,
                rel_l2: f32::NAN,
            };
        }
        num += f64::from(abs) * f64::from(abs);
        den += f64::from(w) * f64::from(w);
        d.max_abs = d.max_abs.max(abs);
        if rel > d.max_rel {
            d.max_rel = rel;
            d.worst = i;
            d.got = g;
            d.want = w;
        }
    }
    d.rel_l2 = if den > 0.0 {
        (num / den).sqrt() as f32
    } else {
        num.sqrt() as f32
    };
    d
}

/// `Err` with a report when some element has `|got - want| > rel * max(|want|, 1)`.
pub fn compare(
    what: &str,
    got: &[f32],
    want: &[f32],
    shape: &[usize],
    rel: f32,
) -> Result<(), String> {
    if got.len() != want.len() {
        return Err(format!(
            "{what}: {} values, golden has {} (shape {shape:?})",
            got.len(),
            want.len()
        ));
    }
    let d = deviation(got, want);
    if d.max_rel <= rel {
        return Ok(());
    }
    let bad = got
        .iter()
        .zip(want)
        .filter(|(&g, &w)| (g - w).abs() > rel * w.abs().max(1.0) || g.is_nan())
        .count();
    Err(format!(
        "{what}: {bad}/{} values off by more than {rel:e} relative; worst at {:?} (flat {}): \
         got {} want {} (rel {:e}, max abs {:e})",
        got.len(),
        coords(d.worst, shape),
        d.worst,
        d.got,
        d.want,
        d.max_rel,
        d.max_abs
    ))
}

/// Panics with every failure, one per line.
pub fn finish(what: &str, failures: Vec<String>) {
    assert!(
        failures.is_empty(),
        "{what}: {} failure(s):\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// A golden id row without HF's right padding: cut after the first EOS.
pub fn unpad(row: &[u32], eos: &[u32]) -> Vec<u32> {
    match row.iter().position(|t| eos.contains(t)) {
        Some(p) => row[..=p].to_vec(),
        None => row.to_vec(),
    }
}

// ---------------------------------------------------------------------------------
// generation settings
// ---------------------------------------------------------------------------------

fn kw_usize(k: &str, v: &Value) -> Option<usize> {
    match v {
        Value::Null => None,
        _ => Some(
            v.as_u64()
                .unwrap_or_else(|| panic!("generate_kwargs.{k}: expected an integer, got {v}"))
                as usize,
        ),
    }
}

fn kw_f64(k: &str, v: &Value) -> Option<f64> {
    match v {
        Value::Null => None,
        _ => Some(
            v.as_f64()
                .unwrap_or_else(|| panic!("generate_kwargs.{k}: expected a number, got {v}")),
        ),
    }
}

fn kw_token(k: &str, v: &Value) -> Option<u32> {
    kw_usize(k, v).map(|n| n as u32)
}

fn kw_tokens(k: &str, v: &Value) -> Option<Vec<u32>> {
    match v {
        Value::Null => None,
        Value::Array(_) => Some(ids(v)),
        _ => kw_token(k, v).map(|t| vec![t]),
    }
}

/// HF `generate(**kwargs)` keys as [`GenerationOverrides`]; an unknown key panics
/// (nothing is silently ignored).
pub fn overrides_from_kwargs(kwargs: &Value) -> GenerationOverrides {
    let mut o = GenerationOverrides::default();
    let Some(map) = kwargs.as_object() else {
        panic!("generate_kwargs must be an object, got {kwargs}")
    };
    for (k, v) in map {
        let k = k.as_str();
        match k {
            "do_sample" => o.do_sample = v.as_bool(),
            "num_beams" => o.num_beams = kw_usize(k, v),
            "max_new_tokens" => o.max_new_tokens = kw_usize(k, v),
            "max_length" => o.max_length = kw_usize(k, v),
            "min_new_tokens" => o.min_new_tokens = kw_usize(k, v),
            "min_length" => o.min_length = kw_usize(k, v),
            "num_return_sequences" => o.num_return_sequences = kw_usize(k, v),
            "length_penalty" => o.length_penalty = kw_f64(k, v),
            "early_stopping" => {
                o.early_stopping = match v {
                    Value::Bool(true) => Some(EarlyStopping::True),
                    Value::Bool(false) => Some(EarlyStopping::False),
                    Value::String(s) if s == "never" => Some(EarlyStopping::Never),
                    Value::Null => None,
                    _ => panic!("generate_kwargs.early_stopping: unexpected {v}"),
                }
            }
            "no_repeat_ngram_size" => o.no_repeat_ngram_size = kw_usize(k, v),
            "encoder_no_repeat_ngram_size" => o.encoder_no_repeat_ngram_size = kw_usize(k, v),
            "repetition_penalty" => o.repetition_penalty = kw_f64(k, v),
            "forced_bos_token_id" => o.forced_bos_token_id = kw_token(k, v),
            "forced_eos_token_id" => o.forced_eos_token_id = kw_tokens(k, v),
            "bad_words_ids" => o.bad_words_ids = (!v.is_null()).then(|| ids2(v)),
            "temperature" => o.temperature = kw_f64(k, v),
            "top_k" => o.top_k = kw_usize(k, v),
            "top_p" => o.top_p = kw_f64(k, v),
            // not an HF kwarg (torch's generator is global): our `--seed`
            "seed" => o.seed = v.as_u64(),
            "decoder_start_token_id" => o.decoder_start_token_id = kw_token(k, v),
            "eos_token_id" => o.eos_token_id = kw_tokens(k, v),
            "pad_token_id" => o.pad_token_id = kw_token(k, v),
            "bos_token_id" => o.bos_token_id = kw_token(k, v),
            _ => panic!("generate_kwargs: key `{k}` is not mapped by the test harness"),
        }
    }
    o
}

/// The settings HF `generate` runs with for a fixture: its generation_config.json
/// (else config.json) with `kwargs` on top, as `GenerationConfig::from_checkpoint`
/// resolves them.
pub fn generation_config(name: &str, kwargs: &Value) -> GenerationConfig {
    let over = overrides_from_kwargs(kwargs);
    GenerationConfig::from_checkpoint(&fixture_dir(name), &over)
        .unwrap_or_else(|e| panic!("{name}: generation config for {kwargs}: {e}"))
}

/// Runs the Generator on one batch of sources with `kwargs`.
pub fn generate(
    name: &str,
    model: &dyn Seq2SeqModel,
    kwargs: &Value,
    sources: &[Vec<u32>],
) -> encdec_core::Result<Vec<Vec<Hypothesis>>> {
    let cfg = generation_config(name, kwargs);
    let mut g = Generator::new(model, cfg)?;
    g.generate(sources, None)
}

// ---------------------------------------------------------------------------------
// model helpers
// ---------------------------------------------------------------------------------

/// A backend tensor as host f32 values.
pub fn host_f32(model: &dyn Seq2SeqModel, t: &Tensor) -> Vec<f32> {
    let h = model
        .backend()
        .download(t)
        .unwrap_or_else(|e| panic!("download: {e}"));
    h.to_f32_vec().unwrap_or_else(|e| panic!("to_f32_vec: {e}"))
}

/// Encoder output `[S, D]` of one unpadded source.
pub fn encode_one(model: &dyn Seq2SeqModel, ids: &[u32]) -> encdec_core::Result<Vec<f32>> {
    let enc = model.encode(&[ids.to_vec()])?;
    Ok(host_f32(model, &enc.hidden))
}

/// Raw logits after feeding `prefix` (decoder start first) for one source: the
/// logits of the last position.
pub fn logits_after(
    model: &dyn Seq2SeqModel,
    ids: &[u32],
    prefix: &[u32],
) -> encdec_core::Result<Vec<f32>> {
    let enc = model.encode(&[ids.to_vec()])?;
    let mut state = model.start(&enc, &[0], prefix.len())?;
    let v = model.spec().vocab_size;
    let mut logits = Tensor::zeros([1, v], DType::F32);
    for &t in prefix {
        model.step(&enc, &mut state, &[t], &mut logits)?;
    }
    logits.to_f32_vec()
}

fn decoder_start(g: &Value, model: &dyn Seq2SeqModel) -> u32 {
    g.get("decoder_start_token_id")
        .and_then(Value::as_u64)
        .map_or(model.spec().decoder_start_token_id, |n| n as u32)
}

// ---------------------------------------------------------------------------------
// measurements (looser-tolerance runs report these)
// ---------------------------------------------------------------------------------

/// Worst deviation of the encoder output over every case.
pub fn measure_encoder(name: &str, model: &dyn Seq2SeqModel) -> Deviation {
    let g = golden(name);
    let mut d = Deviation::ZERO;
    for c in cases(&g) {
        let (want, _) = floats(field(c, "encoder_last_hidden_state"));
        let got = encode_one(model, &ids(field(c, "input_ids")))
            .unwrap_or_else(|e| panic!("{name}/{}: encode: {e}", case_name(c)));
        d = d.max(deviation(&got, &want));
    }
    d
}

/// Worst deviation of the first-step logits over every case.
pub fn measure_first_step_logits(name: &str, model: &dyn Seq2SeqModel) -> Deviation {
    let g = golden(name);
    let start = decoder_start(&g, model);
    let mut d = Deviation::ZERO;
    for c in cases(&g) {
        let (want, _) = floats(field(c, "first_step_logits"));
        let got = logits_after(model, &ids(field(c, "input_ids")), &[start])
            .unwrap_or_else(|e| panic!("{name}/{}: step: {e}", case_name(c)));
        d = d.max(deviation(&got, &want));
    }
    d
}

/// How many greedy case outputs equal HF's ids, out of how many cases.
pub fn count_greedy_matches(name: &str, model: &dyn Seq2SeqModel) -> (usize, usize) {
    let g = golden(name);
    let eos = model.spec().eos_token_id.clone();
    let mut ok = 0;
    for c in cases(&g) {
        let gr = field(c, "greedy");
        let want = unpad(&ids(field(gr, "sequences"))[1..], &eos);
        let hyps = generate(
            name,
            model,
            field(gr, "generate_kwargs"),
            &[ids(field(c, "input_ids"))],
        )
        .unwrap_or_else(|e| panic!("{name}/{}: generate: {e}", case_name(c)));
        if hyps[0][0].ids == want {
            ok += 1;
        }
    }
    (ok, cases(&g).len())
}

// ---------------------------------------------------------------------------------
// checks
// ---------------------------------------------------------------------------------

/// Encoder output of every case (batch of 1, no padding) within `rel`.
pub fn check_encoder_tol(name: &str, model: &dyn Seq2SeqModel, rel: f32) {
    let g = golden(name);
    let mut fails = Vec::new();
    for c in cases(&g) {
        let what = format!("{name}/{} encoder_last_hidden_state", case_name(c));
        let (want, shape) = floats(field(c, "encoder_last_hidden_state"));
        match encode_one(model, &ids(field(c, "input_ids"))) {
            Ok(got) => {
                if let Err(e) = compare(&what, &got, &want, &shape, rel) {
                    fails.push(e);
                }
            }
            Err(e) => fails.push(format!("{what}: encode failed: {e}")),
        }
    }
    finish(&format!("{name} encoder"), fails);
}

/// Encoder output of every case within [`REL_F32`].
pub fn check_encoder(name: &str, model: &dyn Seq2SeqModel) {
    check_encoder_tol(name, model, REL_F32);
}

/// Raw first-step logits (`decoder_input_ids = [start]`) of every case within `rel`.
pub fn check_first_step_logits_tol(name: &str, model: &dyn Seq2SeqModel, rel: f32) {
    let g = golden(name);
    let start = decoder_start(&g, model);
    let mut fails = Vec::new();
    for c in cases(&g) {
        let what = format!("{name}/{} first_step_logits", case_name(c));
        let (want, shape) = floats(field(c, "first_step_logits"));
        match logits_after(model, &ids(field(c, "input_ids")), &[start]) {
            Ok(got) => {
                if let Err(e) = compare(&what, &got, &want, &shape, rel) {
                    fails.push(e);
                }
            }
            Err(e) => fails.push(format!("{what}: failed: {e}")),
        }
    }
    finish(&format!("{name} first-step logits"), fails);
}

/// Raw first-step logits of every case within [`REL_F32`].
pub fn check_first_step_logits(name: &str, model: &dyn Seq2SeqModel) {
    check_first_step_logits_tol(name, model, REL_F32);
}

/// mbart / m2m100: raw logits after `[start, forced_bos]` for every case that has
/// `second_step_after_forced_bos_logits`. Returns how many cases were checked.
pub fn check_second_step_logits(name: &str, model: &dyn Seq2SeqModel) -> usize {
    let g = golden(name);
    let start = decoder_start(&g, model);
    let Some(bos) = g
        .get("forced_bos_token_id")
        .and_then(Value::as_u64)
        .map(|n| n as u32)
    else {
        return 0;
    };
    let mut fails = Vec::new();
    let mut n = 0;
    for c in cases(&g) {
        let Some(wv) = c.get("second_step_after_forced_bos_logits") else {
            continue;
        };
        n += 1;
        let what = format!(
            "{name}/{} second_step_after_forced_bos_logits",
            case_name(c)
        );
        let (want, shape) = floats(wv);
        match logits_after(model, &ids(field(c, "input_ids")), &[start, bos]) {
            Ok(got) => {
                if let Err(e) = compare(&what, &got, &want, &shape, REL_F32) {
                    fails.push(e);
                }
            }
            Err(e) => fails.push(format!("{what}: failed: {e}")),
        }
    }
    finish(&format!("{name} second-step logits"), fails);
    n
}

/// Greedy ids identical for every case; per-step processed log-probs and the
/// sequence score within [`REL_F32`].
pub fn check_greedy_cases(name: &str, model: &dyn Seq2SeqModel) {
    let g = golden(name);
    let eos = model.spec().eos_token_id.clone();
    let mut fails = Vec::new();
    for c in cases(&g) {
        let cname = case_name(c);
        let gr = field(c, "greedy");
        let want = unpad(&ids(field(gr, "sequences"))[1..], &eos);
        let (want_steps, _) = floats(field(gr, "step_logprobs"));
        let want_score = num(field(gr, "sequence_score"));
        let cfg = generation_config(name, field(gr, "generate_kwargs"));
        let mut steps: Vec<f32> = Vec::new();
        let res = Generator::new(model, cfg).and_then(|mut gen| {
            let mut trace = |e: &TraceEvent<'_>| steps.push(e.prob.ln());
            gen.generate(&[ids(field(c, "input_ids"))], Some(&mut trace))
        });
        let hyps = match res {
            Ok(h) => h,
            Err(e) => {
                fails.push(format!("{name}/{cname} greedy: generate failed: {e}"));
                continue;
            }
        };
        let h = &hyps[0][0];
        if h.ids != want {
            fails.push(format!(
                "{name}/{cname} greedy ids:\n  got  {:?}\n  want {want:?}",
                h.ids
            ));
            continue;
        }
        if let Err(e) = compare(
            &format!("{name}/{cname} greedy step log-probs"),
            &steps,
            &want_steps,
            &[want_steps.len()],
            REL_F32,
        ) {
            fails.push(e);
        }
        if let Err(e) = compare(
            &format!("{name}/{cname} greedy sequence_score"),
            &[h.score],
            &[want_score],
            &[1],
            REL_F32,
        ) {
            fails.push(e);
        }
    }
    finish(&format!("{name} greedy cases"), fails);
}

/// The padded batch's rows, each cut to its attention mask.
pub fn batch_sources(g: &Value) -> Vec<Vec<u32>> {
    let b = field(g, "batch");
    let rows = ids2(field(b, "input_ids"));
    let masks = ids2(field(b, "attention_mask"));
    rows.iter()
        .zip(&masks)
        .map(|(r, m)| {
            r.iter()
                .zip(m)
                .filter(|(_, &k)| k == 1)
                .map(|(&t, _)| t)
                .collect()
        })
        .collect()
}

/// Padded batch: the encoder over the whole batch at once (non-pad positions
/// within [`REL_F32`]), then greedy over the whole batch (ids identical, scores
/// within [`REL_F32`]).
pub fn check_batch(name: &str, model: &dyn Seq2SeqModel) {
    let g = golden(name);
    let b = field(&g, "batch");
    let eos = model.spec().eos_token_id.clone();
    let sources = batch_sources(&g);
    let masks = ids2(field(b, "attention_mask"));
    let mut fails = Vec::new();

    let (want, shape) = floats(field(b, "encoder_last_hidden_state"));
    let (s, d) = (shape[1], shape[2]);
    match model.encode(&sources) {
        Ok(enc) => {
            if enc.src_len != s {
                fails.push(format!(
                    "{name} batch: encoder src_len {} but HF padded to {s}",
                    enc.src_len
                ));
            } else {
                let got = host_f32(model, &enc.hidden);
                let (mut gv, mut wv) = (Vec::new(), Vec::new());
                for (r, m) in masks.iter().enumerate() {
                    for (t, &k) in m.iter().enumerate() {
                        if k == 1 {
                            let at = (r * s + t) * d;
                            gv.extend_from_slice(&got[at..at + d]);
                            wv.extend_from_slice(&want[at..at + d]);
                        }
                    }
                }
                if let Err(e) = compare(
                    &format!("{name} batch encoder (non-pad positions, flattened [token, D])"),
                    &gv,
                    &wv,
                    &[gv.len() / d.max(1), d],
                    REL_F32,
                ) {
                    fails.push(e);
                }
            }
        }
        Err(e) => fails.push(format!("{name} batch: encode failed: {e}")),
    }

    let gr = field(b, "greedy");
    let want_seqs = ids2(field(gr, "sequences"));
    let (want_scores, _) = floats(field(gr, "sequence_scores"));
    match generate(name, model, field(gr, "generate_kwargs"), &sources) {
        Ok(hyps) => {
            for (r, (h, w)) in hyps.iter().zip(&want_seqs).enumerate() {
                let want = unpad(&w[1..], &eos);
                if h[0].ids != want {
                    fails.push(format!(
                        "{name} batch row {r} greedy ids:\n  got  {:?}\n  want {want:?}",
                        h[0].ids
                    ));
                } else if let Err(e) = compare(
                    &format!("{name} batch row {r} sequence_score"),
                    &[h[0].score],
                    &[want_scores[r]],
                    &[1],
                    REL_F32,
                ) {
                    fails.push(e);
                }
            }
        }
        Err(e) => fails.push(format!("{name} batch: generate failed: {e}")),
    }
    finish(&format!("{name} batch"), fails);
}

/// Padded batch, padded positions: the encoder states HF computes at pad
/// positions (queries over the real keys) within `rel`. Returns the deviation.
pub fn check_batch_pad_positions(name: &str, model: &dyn Seq2SeqModel, rel: f32) -> Deviation {
    let g = golden(name);
    let b = field(&g, "batch");
    let masks = ids2(field(b, "attention_mask"));
    let (want, shape) = floats(field(b, "encoder_last_hidden_state"));
    let (s, d) = (shape[1], shape[2]);
    let enc = model
        .encode(&batch_sources(&g))
        .unwrap_or_else(|e| panic!("{name} batch: encode: {e}"));
    assert_eq!(enc.src_len, s, "{name} batch: src_len");
    let got = host_f32(model, &enc.hidden);
    let (mut gv, mut wv) = (Vec::new(), Vec::new());
    for (r, m) in masks.iter().enumerate() {
        for (t, &k) in m.iter().enumerate() {
            if k == 0 {
                let at = (r * s + t) * d;
                gv.extend_from_slice(&got[at..at + d]);
                wv.extend_from_slice(&want[at..at + d]);
            }
        }
    }
    if let Err(e) = compare(
        &format!("{name} batch encoder (pad positions, flattened [token, D])"),
        &gv,
        &wv,
        &[gv.len() / d.max(1), d],
        rel,
    ) {
        panic!("{e}");
    }
    deviation(&gv, &wv)
}

/// Every entry of `generation` (beam search, processors): for each run, the
/// returned sequences identical and their scores (`sequences_scores` for beam
/// search, `sequence_scores` for greedy) within [`REL_F32`]. `skip` names settings
/// left out (with a reason the caller reports).
pub fn check_generation_settings_except(name: &str, model: &dyn Seq2SeqModel, skip: &[&str]) {
    let g = golden(name);
    let eos = model.spec().eos_token_id.clone();
    let mut fails = Vec::new();
    let gens = field(&g, "generation")
        .as_array()
        .cloned()
        .unwrap_or_default();
    for gen in &gens {
        let setting = gen.get("name").and_then(Value::as_str).unwrap_or("?");
        if skip.contains(&setting) {
            continue;
        }
        let kwargs = field(gen, "generate_kwargs");
        for run in field(gen, "runs").as_array().cloned().unwrap_or_default() {
            let input = run.get("input").and_then(Value::as_str).unwrap_or("?");
            let what = format!("{name}/{setting}/{input}");
            let want_seqs = ids2(field(&run, "sequences"));
            let scores = run
                .get("sequences_scores")
                .or_else(|| run.get("sequence_scores"))
                .unwrap_or_else(|| panic!("{what}: no scores in golden"));
            let (want_scores, _) = floats(scores);
            let hyps = match generate(name, model, kwargs, &[ids(field(&run, "input_ids"))]) {
                Ok(h) => h,
                Err(e) => {
                    fails.push(format!("{what}: generate failed: {e}"));
                    continue;
                }
            };
            let got = &hyps[0];
            if got.len() != want_seqs.len() {
                fails.push(format!(
                    "{what}: {} sequences, HF returned {}",
                    got.len(),
                    want_seqs.len()
                ));
                continue;
            }
            for (i, (h, w)) in got.iter().zip(&want_seqs).enumerate() {
                let want = unpad(&w[1..], &eos);
                if h.ids != want {
                    fails.push(format!(
                        "{what} sequence {i}:\n  got  {:?} (score {})\n  want {want:?} (score {})",
                        h.ids, h.score, want_scores[i]
                    ));
                } else if let Err(e) = compare(
                    &format!("{what} score {i}"),
                    &[h.score],
                    &[want_scores[i]],
                    &[1],
                    REL_F32,
                ) {
                    fails.push(e);
                }
            }
        }
    }
    finish(&format!("{name} generation settings"), fails);
}

/// Every entry of `generation`, none skipped.
pub fn check_generation_settings(name: &str, model: &dyn Seq2SeqModel) {
    check_generation_settings_except(name, model, &[]);
}

// ---------------------------------------------------------------------------------
// tests every architecture file runs on its own fixtures
// ---------------------------------------------------------------------------------

/// One test module per fixture, `fixture => module`, each running the f32 checks
/// (encoder, first-step logits, greedy cases, padded batch and its pad positions,
/// generation settings) on the model that `load(fixture, DType::F32)` of the
/// calling file gives.
#[allow(unused_macros)]
macro_rules! parity_tests {
    ($($fixture:literal => $m:ident),* $(,)?) => {$(
        mod $m {
            use super::*;

            parity_tests!(@checks $fixture:
                encoder_matches_hf => check_encoder,
                first_step_logits_match_hf => check_first_step_logits,
                greedy_cases_match_hf => check_greedy_cases,
                padded_batch_matches_hf => check_batch,
                padded_positions_of_the_batch_match_hf => check_batch_pad_positions_f32,
                generation_settings_match_hf => check_generation_settings,
            );
        }
    )*};
    (@checks $fixture:literal: $($test:ident => $check:ident),* $(,)?) => {$(
        #[test]
        fn $test() {
            common::$check($fixture, &load($fixture, encdec_core::DType::F32));
        }
    )*};
}

/// [`check_batch_pad_positions`] at the f32 tolerance.
pub fn check_batch_pad_positions_f32(name: &str, model: &dyn Seq2SeqModel) {
    check_batch_pad_positions(name, model, REL_F32);
}

/// Bounds of a reduced-precision weight run: `(dtype, encoder max rel, first-step
/// logits max rel, logits rel L2)`.
pub type PrecisionBounds = (DType, f32, f32, f32);

/// f16 / bf16 weights (activations stay f32) against the f32 goldens of every
/// fixture, within `bounds`; f16 must also keep every greedy case equal to HF
/// (bf16 greedy agreement is printed, not asserted).
pub fn check_half_precision<M: Seq2SeqModel>(
    fixtures: &[&str],
    bounds: &[PrecisionBounds],
    load: impl Fn(&str, DType) -> M,
) {
    let mut fails = Vec::new();
    for &name in fixtures {
        for &(dtype, enc_bound, logit_bound, l2_bound) in bounds {
            let m = load(name, dtype);
            let e = measure_encoder(name, &m);
            let l = measure_first_step_logits(name, &m);
            let (ok, total) = count_greedy_matches(name, &m);
            println!(
                "{name} {dtype}: encoder max rel {:.3e} (abs {:.3e}, rel L2 {:.3e}); first-step \
                 logits max rel {:.3e} (abs {:.3e}, rel L2 {:.3e}); greedy ids equal to HF in \
                 {ok}/{total} cases",
                e.max_rel, e.max_abs, e.rel_l2, l.max_rel, l.max_abs, l.rel_l2
            );
            if e.max_rel.is_nan() || e.max_rel > enc_bound {
                fails.push(format!("{name} {dtype}: encoder {e:?} > {enc_bound}"));
            }
            if l.max_rel.is_nan() || l.max_rel > logit_bound || l.rel_l2 > l2_bound {
                fails.push(format!(
                    "{name} {dtype}: logits {l:?} > {logit_bound} (rel L2 bound {l2_bound})"
                ));
            }
            if dtype == DType::F16 && ok != total {
                fails.push(format!(
                    "{name} f16: greedy ids equal to HF in only {ok}/{total} cases"
                ));
            }
        }
    }
    finish("half-precision weights", fails);
}

/// int8 weights (per-row absmax) of every fixture: the model runs, logits stay
/// finite, and every greedy case generates between 1 and `max_new_tokens` ids.
pub fn check_int8_smoke<M: Seq2SeqModel>(fixtures: &[&str], load: impl Fn(&str, DType) -> M) {
    for &name in fixtures {
        let m = load(name, DType::I8);
        let g = golden(name);
        let l = measure_first_step_logits(name, &m);
        assert!(l.max_rel.is_finite(), "{name} int8: non-finite logits");
        let (ok, total) = count_greedy_matches(name, &m);
        println!(
            "{name} int8: first-step logits max rel {:.3e} (rel L2 {:.3e}), greedy ids equal to \
             HF in {ok}/{total} cases",
            l.max_rel, l.rel_l2
        );
        for c in cases(&g) {
            let gr = field(c, "greedy");
            let kwargs = field(gr, "generate_kwargs");
            let max_new = kwargs
                .get("max_new_tokens")
                .and_then(|v| v.as_u64())
                .unwrap_or(20) as usize;
            let hyps = generate(name, &m, kwargs, &[ids(field(c, "input_ids"))])
                .unwrap_or_else(|e| panic!("{name} int8 {}: {e}", case_name(c)));
            let n = hyps[0][0].ids.len();
            assert!(
                (1..=max_new).contains(&n),
                "{name} int8 {}: {n} ids generated (max_new_tokens {max_new})",
                case_name(c)
            );
        }
    }
}

/// Running twice gives bit-identical logits (no state leaks between calls, scratch
/// reuse is clean): case `case` of fixture `name` after `[decoder start, tokens..]`.
pub fn check_reruns_are_deterministic(
    name: &str,
    model: &dyn Seq2SeqModel,
    case: usize,
    tokens: &[u32],
) {
    let g = golden(name);
    let ids = ids(field(&cases(&g)[case], "input_ids"));
    let mut prefix = vec![model.spec().decoder_start_token_id];
    prefix.extend_from_slice(tokens);
    let a = logits_after(model, &ids, &prefix).unwrap();
    let b = logits_after(model, &ids, &prefix).unwrap();
    assert_eq!(a, b, "{name}");
}

/// Beam rows that share a source read its encoder K/V through kv_index, and
/// select_rows reorders the self-attention cache: a step after reordering rows
/// gives the logits of the rows it now holds (cases 0 and 3 of fixture `name`).
pub fn check_select_rows_reorders_the_cache(name: &str, m: &dyn Seq2SeqModel) {
    let g = golden(name);
    let a = ids(field(&cases(&g)[0], "input_ids"));
    let b = ids(field(&cases(&g)[3], "input_ids"));
    let s0 = m.spec().decoder_start_token_id;
    let enc = m.encode(&[a.clone(), b.clone()]).unwrap();
    let v = m.spec().vocab_size;
    // rows: (source 0, prefix [s0, 3]), (source 1, [s0, 4]), (source 1, [s0, 5])
    let mut st = m.start(&enc, &[0, 1, 1], 4).unwrap();
    let mut logits = Tensor::zeros([3, v], DType::F32);
    m.step(&enc, &mut st, &[s0, s0, s0], &mut logits).unwrap();
    m.step(&enc, &mut st, &[3, 4, 5], &mut logits).unwrap();
    // keep rows 2 and 0, in that order, then feed one more token
    m.select_rows(&mut st, &[2, 0]).unwrap();
    let mut logits2 = Tensor::zeros([2, v], DType::F32);
    m.step(&enc, &mut st, &[7, 8], &mut logits2).unwrap();
    let got = logits2.to_f32_vec().unwrap();
    let want_row0 = logits_after(m, &b, &[s0, 5, 7]).unwrap();
    let want_row1 = logits_after(m, &a, &[s0, 3, 8]).unwrap();
    compare(&format!("{name} row 0"), &got[..v], &want_row0, &[v], 1e-5).unwrap();
    compare(&format!("{name} row 1"), &got[v..], &want_row1, &[v], 1e-5).unwrap();
}

/// A model with a real checkpoint's shapes and random weights (`label`, loaded in
/// `load_s` seconds) runs greedy and beam search over a batch of 3 sources with
/// ids below `5 + id_span`: 6 tokens each (EOS off), finite scores, beams reordering.
pub fn check_random_weights_generate(label: &str, m: &dyn Seq2SeqModel, load_s: f64, id_span: u32) {
    let sources: Vec<Vec<u32>> = (0..3u32)
        .map(|s| {
            (0..(20 + 7 * s))
                .map(|i| 5 + (i * 37 + s) % id_span)
                .collect()
        })
        .collect();
    let spec = m.spec();
    for beams in [1usize, 3] {
        let over = GenerationOverrides {
            num_beams: Some(beams),
            max_new_tokens: Some(6),
            eos_token_id: Some(vec![]),
            ..Default::default()
        };
        let gc = GenerationConfig::from_values(
            &serde_json::json!({
                "decoder_start_token_id": spec.decoder_start_token_id,
                "pad_token_id": spec.pad_token_id,
            }),
            &over,
        )
        .unwrap();
        let t = std::time::Instant::now();
        let out = Generator::new(m, gc)
            .unwrap()
            .generate(&sources, None)
            .unwrap();
        println!(
            "{label} random weights: load {load_s:.2}s, {beams} beam(s), 3 sources x 6 tokens \
             in {:.3}s",
            t.elapsed().as_secs_f64()
        );
        assert_eq!(out.len(), 3);
        for h in &out {
            assert_eq!(h[0].ids.len(), 6);
            assert!(h[0].score.is_finite());
        }
    }
}
