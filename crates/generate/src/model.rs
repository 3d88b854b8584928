//! The contract between models and search.

use std::any::Any;

use encdec_core::{Backend, CapturedGraph, Error, Result, Tensor};

/// Facts about a model that search needs.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelSpec {
    pub vocab_size: usize,
    pub decoder_start_token_id: u32,
    pub eos_token_id: Vec<u32>,
    pub pad_token_id: u32,
    /// Longest decoder sequence the positions allow (None: unbounded, e.g. T5).
    pub max_target_positions: Option<usize>,
    /// Longest source the encoder accepts (None: unbounded).
    pub max_source_positions: Option<usize>,
}

/// What the encoder leaves for the decoder: per-layer cross-attention K/V
/// projected once (`[sources, src_len, H*D]` each), and the source key mask.
#[derive(Debug)]
pub struct EncoderOutput {
    pub sources: usize,
    pub src_len: usize,
    /// Final encoder hidden states `[sources, src_len, d_model]`.
    pub hidden: Tensor,
    /// Additive f32 `[sources, src_len]`: 0 for tokens, f32::MIN for padding.
    pub key_mask: Tensor,
    /// Length of each source before padding.
    pub lengths: Vec<usize>,
    pub cross_k: Vec<Tensor>,
    pub cross_v: Vec<Tensor>,
}

/// Decoder state of `rows` sequences (beams, samples): the self-attention KV
/// cache, allocated once with room for `capacity` tokens, and which encoder row
/// each decoder row reads.
#[derive(Debug)]
pub struct DecoderState {
    pub rows: usize,
    pub capacity: usize,
    /// Tokens already in the cache.
    pub len: usize,
    /// Per layer `[rows, capacity, H*D]`.
    pub self_k: Vec<Tensor>,
    pub self_v: Vec<Tensor>,
    /// u32 `[rows]`: encoder row of each decoder row.
    pub kv_index: Tensor,
    /// Model-owned scratch buffers, reused every step.
    pub scratch: Option<Box<dyn Any + Send + Sync>>,
    /// Decode steps the backend recorded (CUDA graphs) for these buffers.
    pub recorded: RecordedSteps,
}

/// Search ops queued after a decode step on the backend, and the key that
/// identifies them ([`Seq2SeqModel::step_on_backend_then`]).
pub type Then<'a> = (
    &'a mut dyn FnMut(&dyn Backend, &mut Tensor) -> Result<()>,
    &'a [usize],
);

/// How many recordings a decoder state keeps: beam search alternates between
/// two sets of caches (`select_rows` swaps them), so two are in use at once.
const MAX_RECORDINGS: usize = 4;

/// A model's decode step recorded by the backend once and replayed with one
/// launch ([`Backend::begin_capture`]: CUDA graphs), for each set of buffers it
/// runs on. The model stages what changes per step (ids, positions) in
/// backend tensors before [`RecordedSteps::run`], and keys each recording by
/// the addresses of the tensors it does not own ([`RecordedSteps::key_mut`]):
/// a recording is replayed only with the buffers it was recorded with.
///
/// `ENCDEC_CUDA_GRAPHS=0` turns recording off (every step runs op by op).
#[derive(Debug, Default)]
pub struct RecordedSteps {
    key: Vec<usize>,
    entries: Vec<(Vec<usize>, CapturedGraph)>,
    /// Keys seen once: a key is recorded the second time it runs, so that a
    /// one-off step (a batch shape that lasts a step) is not recorded.
    seen: Vec<Vec<usize>>,
    /// Why steps of this state run op by op (the backend cannot record, it is
    /// turned off, or a recording failed), if they do.
    pub off: Option<String>,
    /// Steps recorded (each also ran, by a replay), replayed, and run op by op.
    pub recorded: u64,
    pub replayed: u64,
    pub unrecorded: u64,
}

impl RecordedSteps {
    /// The key of the next step: what the model's step reads or writes that
    /// the model's scratch does not own (caches, encoder output, logits),
    /// as addresses and sizes. Cleared; fill it before [`RecordedSteps::run`].
    pub fn key_mut(&mut self) -> &mut Vec<usize> {
        self.key.clear();
        &mut self.key
    }

    /// Forgets every recording (the model's scratch buffers were reallocated).
    pub fn clear(&mut self) {
        self.entries.clear();
        self.seen.clear();
    }

    /// Runs `step` (the part of a decode step between staging its inputs and
    /// reading its outputs): by replaying the recording of the current key;
    /// else, when the key ran before, by recording it and replaying that;
    /// else op by op. When a
    /// recording fails (an op that cannot be recorded), nothing has run:
    /// `step` runs op by op, and so does every later step of this state.
    pub fn run(&mut self, be: &dyn Backend, mut step: impl FnMut() -> Result<()>) -> Result<()> {
        if self.off.is_none() && !recording_allowed() {
            self.off = Some("ENCDEC_CUDA_GRAPHS=0".into());
        }
        if self.off.is_some() {
            self.unrecorded += 1;
            return step();
        }
        if let Some((_, graph)) = self.entries.iter().find(|(k, _)| *k == self.key) {
            be.replay(graph)?;
            self.replayed += 1;
            return Ok(());
        }
        if let Some(at) = self.seen.iter().position(|k| *k == self.key) {
            self.seen.remove(at);
        } else {
            if self.seen.len() >= MAX_RECORDINGS {
                self.seen.remove(0);
            }
            self.seen.push(self.key.clone());
            self.unrecorded += 1;
            return step();
        }
        if !be.begin_capture()? {
            self.off = Some(format!("{} does not record steps", be.describe()));
            self.unrecorded += 1;
            return step();
        }
        let ran = step();
        let graph = be.end_capture();
        match (ran, graph) {
            (Ok(()), Ok(graph)) => {
                be.replay(&graph)?;
                if self.entries.len() >= MAX_RECORDINGS {
                    self.entries.remove(0);
                }
                self.entries.push((self.key.clone(), graph));
                self.recorded += 1;
                Ok(())
            }
            (Err(e), _) | (Ok(()), Err(e)) => {
                self.off = Some(format!("recording a step failed: {e}"));
                self.unrecorded += 1;
                step()
            }
        }
    }
}

/// `ENCDEC_CUDA_GRAPHS=0` (or `false`/`off`) keeps decode steps unrecorded.
fn recording_allowed() -> bool {
    static ALLOWED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ALLOWED.get_or_init(|| {
        !matches!(
            std::env::var("ENCDEC_CUDA_GRAPHS").as_deref(),
            Ok("0" | "false" | "off")
        )
    })
}

/// An encoder-decoder model driven one step at a time.
pub trait Seq2SeqModel: Send + Sync {
    fn spec(&self) -> &ModelSpec;
    fn backend(&self) -> &dyn Backend;
    /// Run the encoder over unpadded token ids (the model pads) and project the
    /// cross-attention K/V of every decoder layer.
    fn encode(&self, sources: &[Vec<u32>]) -> Result<EncoderOutput>;
    /// A decoder state of `source_of_row.len()` rows, row i reading encoder row
    /// `source_of_row[i]`, with room for `capacity` tokens.
    fn start(
        &self,
        enc: &EncoderOutput,
        source_of_row: &[u32],
        capacity: usize,
    ) -> Result<DecoderState>;
    /// Feed one token per row; write next-token logits `[rows, vocab]` (f32, host).
    fn step(
        &self,
        enc: &EncoderOutput,
        state: &mut DecoderState,
        tokens: &[u32],
        logits: &mut Tensor,
    ) -> Result<()>;
    /// [`step`](Self::step), leaving the logits on the backend: `logits` is an
    /// f32 `[rows, vocab]` tensor of [`backend`](Self::backend), owned by the
    /// caller and reused every step (search on the backend reads only a few
    /// numbers of each row back). The default runs `step` into a host tensor
    /// and copies it up (it allocates); the models of `encdec-models` write the
    /// lm_head output there directly.
    fn step_on_backend(
        &self,
        enc: &EncoderOutput,
        state: &mut DecoderState,
        tokens: &[u32],
        logits: &mut Tensor,
    ) -> Result<()> {
        let mut host = Tensor::zeros(logits.dims(), encdec_core::DType::F32);
        self.step(enc, state, tokens, &mut host)?;
        self.backend().copy_from_host(&host, logits)
    }
    /// [`step_on_backend`](Self::step_on_backend), then `then.0(backend,
    /// logits)`: ops of the search that follow the step on the backend (they
    /// must not read anything back to the host). The models of
    /// `encdec-models` record them with the step's ops ([`RecordedSteps`]),
    /// adding `then.1` (what identifies them and their buffers) to the
    /// recording's key. The default runs one after the other.
    fn step_on_backend_then(
        &self,
        enc: &EncoderOutput,
        state: &mut DecoderState,
        tokens: &[u32],
        logits: &mut Tensor,
        then: Then<'_>,
    ) -> Result<()> {
        self.step_on_backend(enc, state, tokens, logits)?;
        (then.0)(self.backend(), logits)
    }
    /// Keep rows `rows` in that order (beam reordering, finished rows leaving);
    /// the result has `rows.len()` rows.
    fn select_rows(&self, state: &mut DecoderState, rows: &[u32]) -> Result<()>;

    /// Cross-attention probabilities of one decoder layer (`None`: the last) for
    /// one `source` while the decoder reads `target` teacher-forced (`target[0]`
    /// is the decoder start token): `(layer, [heads, target.len(), src_len])`, the
    /// `cross_attentions` transformers returns with `output_attentions=True`.
    /// For inspection (`--attention-map`); the decode loop never computes them.
    fn cross_attention(
        &self,
        source: &[u32],
        target: &[u32],
        layer: Option<usize>,
    ) -> Result<(usize, Tensor)> {
        let _ = (source, target, layer);
        Err(Error::Invalid(
            "this model does not report its cross-attention".into(),
        ))
    }
}
