//! Search overhead per decode step with a real-size vocabulary (the model is a
//! free table lookup, so this times only the search and the processors).
//! `cargo bench -p encdec-generate --bench overhead`

use std::time::Instant;

use encdec_core::{Backend, DType, Result, Tensor};
use encdec_generate::{
    DecoderState, EncoderOutput, GenerationConfig, GenerationOverrides, Generator, ModelSpec,
    Seq2SeqModel,
};
use serde_json::json;

struct Flat {
    spec: ModelSpec,
    table: Vec<f32>,
    backend: encdec_cpu::CpuBackend,
}

impl Seq2SeqModel for Flat {
    fn spec(&self) -> &ModelSpec {
        &self.spec
    }
    fn backend(&self) -> &dyn Backend {
        &self.backend
    }
    fn encode(&self, sources: &[Vec<u32>]) -> Result<EncoderOutput> {
        let n = sources.len();
        Ok(EncoderOutput {
            sources: n,
            src_len: 1,
            hidden: Tensor::zeros([n, 1, 1], DType::F32),
            key_mask: Tensor::zeros([n, 1], DType::F32),
            lengths: vec![1; n],
            cross_k: Vec::new(),
            cross_v: Vec::new(),
        })
    }
    fn start(&self, _e: &EncoderOutput, rows: &[u32], capacity: usize) -> Result<DecoderState> {
        Ok(DecoderState {
            rows: rows.len(),
            capacity,
            len: 0,
            self_k: Vec::new(),
            self_v: Vec::new(),
            kv_index: Tensor::from_u32(rows.to_vec(), [rows.len()])?,
            scratch: None,
            recorded: Default::default(),
        })
    }
    fn step(
        &self,
        _e: &EncoderOutput,
        s: &mut DecoderState,
        tokens: &[u32],
        logits: &mut Tensor,
    ) -> Result<()> {
        let v = self.spec.vocab_size;
        let out = logits.as_f32_mut()?;
        for (r, &t) in tokens.iter().enumerate() {
            let off = (t as usize * 7919 + s.len * 104_729 + r * 31) % (self.table.len() - v);
            out[r * v..(r + 1) * v].copy_from_slice(&self.table[off..off + v]);
        }
        s.len += 1;
        Ok(())
    }
    fn select_rows(&self, s: &mut DecoderState, rows: &[u32]) -> Result<()> {
        s.rows = rows.len();
        Ok(())
    }
}

fn search_overhead_per_step() {
    let v = 50_265;
    let table = encdec_core::testing::random_normal(1, v * 64, 3.0);
    let model = Flat {
        spec: ModelSpec {
            vocab_size: v,
            decoder_start_token_id: 2,
            eos_token_id: vec![2],
            pad_token_id: 1,
            max_target_positions: None,
            max_source_positions: None,
        },
        table,
        backend: encdec_cpu::CpuBackend::with_threads(1),
    };
    let base = json!({"decoder_start_token_id": 2, "eos_token_id": 2, "pad_token_id": 1, "max_new_tokens": 64,
                      "min_new_tokens": 64});
    for (name, extra, batch) in [
        ("greedy, batch 16", json!({}), 16),
        ("beam 4, batch 4", json!({"num_beams": 4}), 4),
        (
            "beam 4 + no_repeat 3 + forced bos/eos, batch 4",
            json!({"num_beams": 4, "no_repeat_ngram_size": 3, "forced_bos_token_id": 0, "forced_eos_token_id": 2}),
            4,
        ),
        (
            "sample top-k 50 top-p 0.9, batch 16",
            json!({"do_sample": true, "top_p": 0.9}),
            16,
        ),
    ] {
        let mut values = base.clone();
        for (k, x) in extra.as_object().expect("obj") {
            values[k] = x.clone();
        }
        let over = GenerationOverrides {
            seed: Some(1),
            ..Default::default()
        };
        let cfg = GenerationConfig::from_values(&values, &over).expect("config");
        let mut gen = Generator::new(&model, cfg).expect("generator");
        let sources = vec![vec![5u32]; batch];
        let t = Instant::now();
        let out = gen.generate(&sources, None).expect("generate");
        let dt = t.elapsed().as_secs_f64();
        let steps = out[0][0].ids.len();
        eprintln!(
            "{name}: {:.3} ms per step ({steps} steps, vocab {v})",
            dt * 1e3 / steps as f64
        );
    }
}

fn math_speed() {
    let v = 50_265;
    let row = encdec_core::testing::random_normal(1, v, 3.0);
    let mut out = vec![0f32; v];
    let n = 200;
    let t = Instant::now();
    let mut acc = 0.0;
    for _ in 0..n {
        acc += encdec_generate::math::max_of(std::hint::black_box(&row));
    }
    eprintln!(
        "max_of {:.1} us",
        t.elapsed().as_secs_f64() * 1e6 / n as f64
    );
    let t = Instant::now();
    for _ in 0..n {
        acc += encdec_generate::math::sum_exp(std::hint::black_box(&row), 9.0) as f32;
    }
    eprintln!(
        "sum_exp {:.1} us",
        t.elapsed().as_secs_f64() * 1e6 / n as f64
    );
    let t = Instant::now();
    for _ in 0..n {
        acc += encdec_generate::math::max_argmax(std::hint::black_box(&row)).0;
    }
    eprintln!(
        "max_argmax {:.1} us",
        t.elapsed().as_secs_f64() * 1e6 / n as f64
    );
    let t = Instant::now();
    for _ in 0..n {
        out.copy_from_slice(std::hint::black_box(&row));
        encdec_generate::math::log_softmax_in_place(&mut out);
    }
    eprintln!(
        "copy+log_softmax {:.1} us {acc}",
        t.elapsed().as_secs_f64() * 1e6 / n as f64
    );
}

fn main() {
    search_overhead_per_step();
    math_speed();
}
