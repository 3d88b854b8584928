//! A mock encoder-decoder whose next-token logits are a deterministic function
//! of (source id, decoder prefix), identical to `MockModel` of
//! tools/processor_goldens.py, so HF `generate` on the Python twin gives goldens.
//!
//! It keeps each row's decoder prefix as its "KV cache": a wrong beam reorder or
//! a wrong row leaving the batch changes the logits, so the goldens catch it.
//! Step and select_rows allocate nothing (flat buffers, swapped), so tests can
//! count the search loop's own allocations.

#![allow(dead_code)]

use std::sync::Mutex;

use encdec_core::{Backend, DType, Error, Result, Tensor};
use encdec_generate::rng::splitmix64;
use encdec_generate::{DecoderState, EncoderOutput, ModelSpec, Seq2SeqModel};

pub const VOCAB: usize = 16;
pub const STATES: usize = 4093;

pub struct Mock {
    spec: ModelSpec,
    table: Vec<f32>,
    eos_bias: (u32, f64, f64),
    /// Rows fed at each step, in order.
    pub rows_per_step: Mutex<Vec<usize>>,
    pub encodes: Mutex<usize>,
    /// The mock computes on the host; a real backend keeps the trait honest.
    backend: &'static encdec_cpu::CpuBackend,
}

struct Rows {
    cap: usize,
    hist: Vec<u32>,
    len: Vec<usize>,
    src: Vec<u32>,
    hist2: Vec<u32>,
    len2: Vec<usize>,
    src2: Vec<u32>,
}

pub fn mock_state(source: u64, prefix: &[u32]) -> usize {
    let m = 2_147_483_647u64;
    let mut h = (source * 7919 + 17) % m;
    for &t in prefix {
        h = (h * 31 + u64::from(t) + 1) % m;
    }
    (h % STATES as u64) as usize
}

pub fn mock_table(seed: u64) -> Vec<f32> {
    (0..(STATES * VOCAB) as u64)
        .map(|i| {
            let x = splitmix64(seed * 1_000_003 + i) >> 40;
            ((x as f64 / (1u64 << 24) as f64 - 0.5) * 8.0) as f32
        })
        .collect()
}

impl Mock {
    /// `eos_bias`: logit[token] += base + slope * len(prefix).
    pub fn new(seed: u64, eos_bias: (u32, f64, f64), eos: Vec<u32>) -> Self {
        Mock {
            spec: ModelSpec {
                vocab_size: VOCAB,
                decoder_start_token_id: 0,
                eos_token_id: eos,
                pad_token_id: 1,
                max_target_positions: None,
                max_source_positions: None,
            },
            table: mock_table(seed),
            eos_bias,
            rows_per_step: Mutex::new(Vec::new()),
            encodes: Mutex::new(0),
            backend: shared_backend(),
        }
    }

    /// The same mock with every table logit rounded to a multiple of `q`, so
    /// that rows hold ties.
    pub fn quantized(mut self, q: f32) -> Self {
        for x in &mut self.table {
            *x = (*x / q).round() * q;
        }
        self
    }

    pub fn logits_for(&self, source: u32, prefix: &[u32], out: &mut [f32]) {
        let s = mock_state(u64::from(source), prefix);
        out.copy_from_slice(&self.table[s * VOCAB..(s + 1) * VOCAB]);
        let (tok, base, slope) = self.eos_bias;
        out[tok as usize] += (base + slope * prefix.len() as f64) as f32;
    }
}

fn rows_of(state: &mut DecoderState) -> Result<&mut Rows> {
    state
        .scratch
        .as_mut()
        .and_then(|s| s.downcast_mut::<Rows>())
        .ok_or_else(|| Error::Invalid("mock: no row state".into()))
}

impl Seq2SeqModel for Mock {
    fn spec(&self) -> &ModelSpec {
        &self.spec
    }
    fn backend(&self) -> &dyn Backend {
        self.backend
    }
    fn encode(&self, sources: &[Vec<u32>]) -> Result<EncoderOutput> {
        *self.encodes.lock().expect("lock") += 1;
        let n = sources.len();
        // the "hidden state" carries the source id (its first token)
        let ids: Vec<f32> = sources
            .iter()
            .map(|s| s.first().copied().unwrap_or(0) as f32)
            .collect();
        Ok(EncoderOutput {
            sources: n,
            src_len: 1,
            hidden: Tensor::from_f32(ids, [n, 1, 1])?,
            key_mask: Tensor::zeros([n, 1], DType::F32),
            lengths: sources.iter().map(Vec::len).collect(),
            cross_k: Vec::new(),
            cross_v: Vec::new(),
        })
    }
    fn start(
        &self,
        enc: &EncoderOutput,
        source_of_row: &[u32],
        capacity: usize,
    ) -> Result<DecoderState> {
        let rows = source_of_row.len();
        let hidden = enc.hidden.to_f32_vec()?;
        let src: Vec<u32> = source_of_row
            .iter()
            .map(|&s| {
                hidden
                    .get(s as usize)
                    .map(|&x| x as u32)
                    .ok_or_else(|| Error::Invalid("mock: bad source".into()))
            })
            .collect::<Result<_>>()?;
        let scratch = Rows {
            cap: capacity,
            hist: vec![0; rows * capacity],
            len: vec![0; rows],
            src: src.clone(),
            hist2: vec![0; rows * capacity],
            len2: vec![0; rows],
            src2: src,
        };
        Ok(DecoderState {
            rows,
            capacity,
            len: 0,
            self_k: Vec::new(),
            self_v: Vec::new(),
            kv_index: Tensor::from_u32(source_of_row.to_vec(), [rows])?,
            scratch: Some(Box::new(scratch)),
            recorded: Default::default(),
        })
    }
    fn step(
        &self,
        _enc: &EncoderOutput,
        state: &mut DecoderState,
        tokens: &[u32],
        logits: &mut Tensor,
    ) -> Result<()> {
        let rows = state.rows;
        if tokens.len() != rows || logits.dims() != [rows, VOCAB] {
            return Err(Error::Invalid(format!(
                "mock step: {} tokens, logits {:?}, state rows {rows}",
                tokens.len(),
                logits.dims()
            )));
        }
        if state.len >= state.capacity {
            return Err(Error::Invalid(format!(
                "mock step: cache full ({})",
                state.capacity
            )));
        }
        self.rows_per_step.lock().expect("lock").push(rows);
        state.len += 1;
        let out = logits.as_f32_mut()?;
        let r_state = rows_of(state)?;
        let cap = r_state.cap;
        for (r, &t) in tokens.iter().enumerate() {
            let l = r_state.len[r];
            r_state.hist[r * cap + l] = t;
            r_state.len[r] = l + 1;
            let prefix = &r_state.hist[r * cap..r * cap + l + 1];
            self.logits_for(r_state.src[r], prefix, &mut out[r * VOCAB..(r + 1) * VOCAB]);
        }
        Ok(())
    }
    fn select_rows(&self, state: &mut DecoderState, rows: &[u32]) -> Result<()> {
        let old_rows = state.rows;
        let st = rows_of(state)?;
        let cap = st.cap;
        for (i, &r) in rows.iter().enumerate() {
            let r = r as usize;
            if r >= old_rows {
                return Err(Error::Invalid(format!(
                    "mock select_rows: row {r} of {old_rows}"
                )));
            }
            let l = st.len[r];
            st.hist2[i * cap..i * cap + l].copy_from_slice(&st.hist[r * cap..r * cap + l]);
            st.len2[i] = l;
            st.src2[i] = st.src[r];
        }
        std::mem::swap(&mut st.hist, &mut st.hist2);
        std::mem::swap(&mut st.len, &mut st.len2);
        std::mem::swap(&mut st.src, &mut st.src2);
        state.rows = rows.len();
        if rows.len() != old_rows {
            let kv = state.kv_index.to_u32_vec()?;
            let new: Vec<u32> = rows.iter().map(|&r| kv[r as usize]).collect();
            state.kv_index = Tensor::from_u32(new, [rows.len()])?;
        }
        Ok(())
    }
}

/// One pool for every mock: a pool per mock would start a thread whose own
/// allocations land at random in the allocation-counting test's windows.
fn shared_backend() -> &'static encdec_cpu::CpuBackend {
    static BACKEND: std::sync::OnceLock<encdec_cpu::CpuBackend> = std::sync::OnceLock::new();
    BACKEND.get_or_init(|| encdec_cpu::CpuBackend::with_threads(1))
}
