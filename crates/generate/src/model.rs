//! The contract between models and search.

use std::any::Any;

use encdec_core::{Backend, Error, Result, Tensor};

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
