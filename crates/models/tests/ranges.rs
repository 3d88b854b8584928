//! The models open a profiler range per layer (NVTX on CUDA, via
//! `Backend::range_push`), nested inside the generator's `encode` / `decode step`
//! ranges and balanced: checked with a backend that records the ranges and
//! forwards every op to the CPU backend. The same backend records each
//! attention call's `operand_dtype` (the rounding a model allows: f16/bf16
//! weights -> F16/BF16, f32/int8 -> F32), and, acting as a backend with half
//! KV caches and activations (as CUDA's), the dtypes each linear and attention
//! reads and writes.

mod common;

use std::sync::{Arc, Mutex};

use encdec_core::{Activation, AttentionParams, Backend, DType, Device, NormKind, Result, Tensor};
use encdec_generate::{GenerationConfig, GenerationOverrides, Generator};
use encdec_models::build_model;

#[derive(Debug)]
struct Recording {
    cpu: encdec_cpu::CpuBackend,
    log: Mutex<Vec<String>>,
    /// `AttentionParams::operand_dtype` of every attention call.
    operands: Mutex<Vec<DType>>,
    /// Answer the operand dtype for `kv_cache_dtype` and `activation_dtype`
    /// (as the CUDA backend does for half models) instead of the CPU's f32.
    half: bool,
    /// `(op, input dtype, out dtype)` of every linear and attention call (x or q).
    dtypes: Mutex<Vec<(&'static str, DType, DType)>>,
}

impl Recording {
    fn new(half: bool) -> Arc<Self> {
        Arc::new(Recording {
            cpu: encdec_cpu::CpuBackend::with_threads(1),
            log: Mutex::new(Vec::new()),
            operands: Mutex::new(Vec::new()),
            half,
            dtypes: Mutex::new(Vec::new()),
        })
    }

    fn record(&self, op: &'static str, input: &Tensor, out: &Tensor) {
        let mut d = self.dtypes.lock().unwrap();
        d.push((op, input.dtype(), out.dtype()));
    }
}

impl Backend for Recording {
    fn device(&self) -> Device {
        self.cpu.device()
    }
    fn describe(&self) -> String {
        "recording".into()
    }
    fn range_push(&self, name: &str) {
        self.log.lock().unwrap().push(format!("+{name}"));
    }
    fn range_pop(&self) {
        self.log.lock().unwrap().push("-".into());
    }
    fn zeros(&self, shape: &[usize], dtype: DType) -> Result<Tensor> {
        self.cpu.zeros(shape, dtype)
    }
    fn upload(&self, t: &Tensor) -> Result<Tensor> {
        self.cpu.upload(t)
    }
    fn download(&self, t: &Tensor) -> Result<Tensor> {
        self.cpu.download(t)
    }
    fn cast(&self, t: &Tensor, dtype: DType) -> Result<Tensor> {
        self.cpu.cast(t, dtype)
    }
    fn write_rows(&self, src: &Tensor, dst: &mut Tensor, start: usize) -> Result<()> {
        self.cpu.write_rows(src, dst, start)
    }
    fn kv_cache_dtype(&self, operand: DType) -> DType {
        if self.half {
            operand
        } else {
            self.cpu.kv_cache_dtype(operand)
        }
    }
    fn activation_dtype(&self, operand: DType) -> DType {
        if self.half {
            operand
        } else {
            self.cpu.activation_dtype(operand)
        }
    }
    fn index_select(&self, src: &Tensor, index: &Tensor, dst: &mut Tensor) -> Result<()> {
        self.cpu.index_select(src, index, dst)
    }
    fn linear(&self, x: &Tensor, w: &Tensor, b: Option<&Tensor>, out: &mut Tensor) -> Result<()> {
        self.record("linear", x, out);
        self.cpu.linear(x, w, b, out)
    }
    fn linear_add(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: Option<&Tensor>,
        out: &mut Tensor,
    ) -> Result<()> {
        self.record("linear_add", x, out);
        self.cpu.linear_add(x, w, b, out)
    }
    fn linear_gated(
        &self,
        x: &Tensor,
        w_gate: &Tensor,
        w_up: &Tensor,
        act: Activation,
        out: &mut Tensor,
    ) -> Result<()> {
        self.record("linear_gated", x, out);
        self.cpu.linear_gated(x, w_gate, w_up, act, out)
    }
    fn batched_matmul(&self, a: &Tensor, b: &Tensor, out: &mut Tensor) -> Result<()> {
        self.cpu.batched_matmul(a, b, out)
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
        self.cpu.norm(kind, x, w, b, eps, out)
    }
    fn add_norm(
        &self,
        kind: NormKind,
        x: &Tensor,
        residual: &mut Tensor,
        w: &Tensor,
        b: Option<&Tensor>,
        eps: f32,
        out: &mut Tensor,
    ) -> Result<()> {
        self.cpu.add_norm(kind, x, residual, w, b, eps, out)
    }
    fn activation(&self, x: &mut Tensor, act: Activation) -> Result<()> {
        self.cpu.activation(x, act)
    }
    fn gated_activation(
        &self,
        gate: &Tensor,
        up: &Tensor,
        act: Activation,
        out: &mut Tensor,
    ) -> Result<()> {
        self.cpu.gated_activation(gate, up, act, out)
    }
    fn add_assign(&self, x: &mut Tensor, y: &Tensor) -> Result<()> {
        self.cpu.add_assign(x, y)
    }
    fn mul_assign(&self, x: &mut Tensor, y: &Tensor) -> Result<()> {
        self.cpu.mul_assign(x, y)
    }
    fn scale(&self, x: &mut Tensor, s: f32) -> Result<()> {
        self.cpu.scale(x, s)
    }
    fn embedding(&self, ids: &Tensor, table: &Tensor, s: f32, out: &mut Tensor) -> Result<()> {
        self.cpu.embedding(ids, table, s, out)
    }
    fn attention(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        params: &AttentionParams,
        out: &mut Tensor,
    ) -> Result<()> {
        self.operands.lock().unwrap().push(params.operand_dtype);
        self.record("attention", q, out);
        self.cpu.attention(q, k, v, params, out)
    }
    fn softmax(&self, x: &mut Tensor) -> Result<()> {
        self.cpu.softmax(x)
    }
    fn log_softmax(&self, x: &mut Tensor) -> Result<()> {
        self.cpu.log_softmax(x)
    }
    fn topk(&self, x: &Tensor, k: usize) -> Result<(Vec<u32>, Vec<f32>)> {
        self.cpu.topk(x, k)
    }
}

/// The range tree of one generation as `(depth, name)` in opening order; panics
/// on a pop without a push, and checks every range is closed.
fn tree(log: &[String]) -> Vec<(usize, String)> {
    let mut depth = 0usize;
    let mut out = Vec::new();
    for e in log {
        if let Some(name) = e.strip_prefix('+') {
            out.push((depth, name.to_string()));
            depth += 1;
        } else {
            depth = depth
                .checked_sub(1)
                .expect("a range closed that was never opened");
        }
    }
    assert_eq!(depth, 0, "ranges left open: {log:?}");
    out
}

#[test]
fn layers_open_balanced_ranges_inside_encode_and_decode_steps() {
    for name in ["t5", "bart"] {
        let rec = Recording::new(false);
        let (cfg, ckpt) = common::open_fixture(name);
        let (model, _) = build_model(&cfg, &ckpt, rec.clone(), DType::F32).expect(name);
        let spec = model.spec();
        let over = GenerationOverrides {
            max_new_tokens: Some(3),
            min_new_tokens: Some(3),
            decoder_start_token_id: Some(spec.decoder_start_token_id),
            eos_token_id: Some(spec.eos_token_id.clone()),
            pad_token_id: Some(spec.pad_token_id),
            ..Default::default()
        };
        let gc = GenerationConfig::from_values(&serde_json::json!({}), &over).expect("config");
        let mut gen = Generator::new(model.as_ref(), gc).expect("generator");
        gen.generate(&[vec![5, 6, 7, 2]], None).expect("generate");

        let t = tree(&rec.log.lock().unwrap());
        let (enc, dec) = (cfg_layers(&t, "encoder"), cfg_layers(&t, "decoder"));
        assert!(enc > 0 && dec > 0, "{name}: {t:?}");
        let mut want = vec![(0, "encode".to_string())];
        want.extend((0..enc).map(|i| (1, format!("encoder.layer.{i}"))));
        for _ in 0..3 {
            want.push((0, "decode step".into()));
            want.extend((0..dec).map(|i| (1, format!("decoder.layer.{i}"))));
        }
        assert_eq!(t, want, "{name}");
    }
}

/// How many distinct `SIDE.layer.N` ranges were opened.
fn cfg_layers(t: &[(usize, String)], side: &str) -> usize {
    let mut names: Vec<&str> = t
        .iter()
        .map(|(_, n)| n.as_str())
        .filter(|n| n.starts_with(&format!("{side}.layer.")))
        .collect();
    names.sort();
    names.dedup();
    names.len()
}

/// Every attention of a model loaded with f16 (bf16) weights allows f16 (bf16)
/// operands; f32 and int8 models ask for exact f32 attention.
#[test]
fn attention_operand_dtype_follows_the_weight_dtype() {
    for name in ["t5", "bart"] {
        for (weights, want) in [
            (DType::F32, DType::F32),
            (DType::F16, DType::F16),
            (DType::BF16, DType::BF16),
            (DType::I8, DType::F32),
        ] {
            let rec = Recording::new(false);
            let (cfg, ckpt) = common::open_fixture(name);
            let (model, _) = build_model(&cfg, &ckpt, rec.clone(), weights).expect(name);
            let spec = model.spec();
            let over = GenerationOverrides {
                max_new_tokens: Some(2),
                min_new_tokens: Some(2),
                decoder_start_token_id: Some(spec.decoder_start_token_id),
                eos_token_id: Some(spec.eos_token_id.clone()),
                pad_token_id: Some(spec.pad_token_id),
                ..Default::default()
            };
            let gc = GenerationConfig::from_values(&serde_json::json!({}), &over).expect("config");
            let mut gen = Generator::new(model.as_ref(), gc).expect("generator");
            gen.generate(&[vec![5, 6, 7, 2]], None).expect("generate");
            let got = rec.operands.lock().unwrap().clone();
            assert!(!got.is_empty(), "{name}: no attention call");
            assert!(
                got.iter().all(|&d| d == want),
                "{name} with {weights:?} weights: operand dtypes {got:?}, want all {want:?}"
            );
        }
    }
}

/// With half activations and KV caches (as the CUDA backend answers for half
/// models), T5's normalised sublayer inputs and the encoder's fused q/k/v
/// projection, attention and FFN up projection
/// write the operand dtype, its attention and output/down projections read it,
/// and the cross K/V are projected straight into the cache dtype; the residual
/// stream, the encoder output and every decode-step activation stay f32. The
/// encoder output and first-step logits stay within the half tolerance of the
/// same half model with f32 activations (the CPU backend reads a half input as
/// its exact widening, so the difference is the rounding of those tensors).
#[test]
fn half_activations_in_the_encoder_only() {
    let f32_ = DType::F32;
    for name in ["t5", "t5-v1_1", "bart", "mbart"] {
        for weights in [DType::F16, DType::BF16] {
            let (cfg, ckpt) = common::open_fixture(name);
            let plain = Recording::new(false);
            let (reference, _) = build_model(&cfg, &ckpt, plain.clone(), weights).expect(name);
            let half = Recording::new(true);
            let (model, _) = build_model(&cfg, &ckpt, half.clone(), weights).expect(name);
            let src = vec![5u32, 6, 7, 9, 11, 2];
            let what = format!("{name} {weights:?}");

            let enc = model.encode(std::slice::from_ref(&src)).expect("encode");
            let seen = std::mem::take(&mut *half.dtypes.lock().unwrap());
            let count = |op: &str, i: DType, o: DType| {
                seen.iter()
                    .filter(|&&(s, a, b)| s == op && a == i && b == o)
                    .count()
            };
            let layers = cfg_layers_of(&seen);
            assert!(
                count("attention", weights, weights) >= 1,
                "{what}: {seen:?}"
            );
            // the fused q/k/v of each encoder layer, the cross K and V of each decoder layer
            let into_half = seen
                .iter()
                .filter(|&&(s, _, o)| s == "linear" && o == weights)
                .count();
            assert!(into_half >= layers + 2, "{what}: {seen:?}");
            // T5's (pre-LN) normalised sublayer inputs are half too
            if name.starts_with("t5") {
                assert!(
                    count("linear", weights, weights) >= layers,
                    "{what}: {seen:?}"
                );
            }
            // each layer's output projection and FFN down projection
            assert!(
                count("linear_add", weights, f32_) >= 2 * layers,
                "{what}: {seen:?}"
            );
            assert!(enc
                .cross_k
                .iter()
                .chain(&enc.cross_v)
                .all(|t| t.dtype() == weights));
            assert_eq!(enc.hidden.dtype(), f32_, "{what}: the encoder output");

            let start = model.spec().decoder_start_token_id;
            let mut state = model.start(&enc, &[0], 1).expect("start");
            let mut logits = Tensor::zeros([1, model.spec().vocab_size], f32_);
            model
                .step(&enc, &mut state, &[start], &mut logits)
                .expect("step");
            let step = std::mem::take(&mut *half.dtypes.lock().unwrap());
            assert!(!step.is_empty());
            assert!(
                step.iter().all(|&(_, i, o)| i == f32_ && o == f32_),
                "{what}: decode-step calls {step:?}"
            );

            let want_enc = common::encode_one(reference.as_ref(), &src).expect("encode");
            let want = common::logits_after(reference.as_ref(), &src, &[start]).expect("step");
            let got_enc = common::host_f32(model.as_ref(), &enc.hidden);
            let got = logits.to_f32_vec().expect("logits");
            let e = common::deviation(&got_enc, &want_enc);
            let l = common::deviation(&got, &want);
            println!("{what}: encoder {e:?}; first-step logits {l:?}");
            // measured on this machine: rel L2 <= 1.7e-3 (f16), 7.6e-3 (bf16),
            // half KV caches included
            let bound = if weights == DType::F16 { 3e-3 } else { 1.5e-2 };
            assert!(
                e.rel_l2 <= bound && l.rel_l2 <= bound,
                "{what}: encoder {e:?}, logits {l:?} past rel L2 {bound}"
            );
        }
    }
}

/// Encoder layers in a recording of one encode: attention calls.
fn cfg_layers_of(seen: &[(&'static str, DType, DType)]) -> usize {
    seen.iter().filter(|(op, _, _)| *op == "attention").count()
}
