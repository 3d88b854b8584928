//! T5 family configs: T5 v1.0 (`t5-small` ... `t5-11b`), T5 v1.1 / Flan-T5 and mT5.
//!
//! Paper: Raffel et al. 2020, "Exploring the Limits of Transfer Learning with a
//! Unified Text-to-Text Transformer". Mirrors transformers'
//! `models/t5/{configuration,modeling}_t5.py` and `models/mt5/*`.
//!
//! Quirks the model code must honour (all exposed by [`T5Config::arch`]):
//! - RMS norm without mean subtraction or bias (`layer_norm_epsilon`), pre-norm.
//! - No `1/sqrt(d_kv)` attention scaling; a bias from bucketed relative positions,
//!   stored only in block 0 of each stack (`relative_attention_bias [buckets, heads]`)
//!   and shared by all layers; the decoder's is causal (unidirectional buckets).
//! - Inner attention width is `num_heads * d_kv`, which need not equal `d_model`
//!   (t5-3b/11b: 32x128 and 128x128 over d_model 1024).
//! - `feed_forward_proj` is `"{act}"` or `"gated-{act}"`; `"gated-gelu"` means
//!   `gelu_new` (tanh form). A `dense_act_fn` / `is_gated_act` stored in config.json
//!   overrides what `feed_forward_proj` implies, as in HF.
//! - T5 v1.0 ties `lm_head` to `shared` and scales the decoder output by
//!   `d_model^-0.5` before it; v1.1/Flan/mT5 (`tie_word_embeddings: false`) have a
//!   separate `lm_head` and no scaling.
//!
//! [`T5Model`] is the forward pass on the [`Backend`] trait (candle `t5.rs` style:
//! weights looked up by HF names through [`VarBuilder`]), implementing
//! [`Seq2SeqModel`]:
//! - `encode` pads the batch with `pad_token_id` (so even the states at pad
//!   positions equal HF's), masks pad keys additively, gathers the bidirectional
//!   bias `[H, S, S]` once for all layers, and projects the cross-attention K/V of
//!   every decoder layer once per source (`EncoderOutput::cross_k/v`).
//! - `step` feeds one token per row: self-attention over the KV cache of
//!   `DecoderState` (written with `write_rows` at `len`) with the causal bias row
//!   of position `len`, cross-attention over the cached encoder K/V through
//!   `kv_index`, the FFN, the final norm, the optional `d_model^-0.5`, lm_head.
//!   Step buffers live in `DecoderState::scratch` and are reused while the row
//!   count stays the same.
//! - `select_rows` gathers the KV caches and `kv_index` into spare buffers kept in
//!   the scratch and swaps them in (no allocation while the row count is stable).

use std::path::Path;
use std::sync::Arc;

use encdec_core::backend::RelativeBiasSpec;
use encdec_core::{Activation, AttentionParams, Backend, DType, NormKind, Tensor};
use encdec_generate::{DecoderState, EncoderOutput, ModelSpec, Seq2SeqModel, Then};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::config::{
    require_positive, set_default, unsupported, FamilyConfig, TensorKind, TensorSpec, TokenIds,
};
use crate::error::Result;
use crate::layers::{
    attention_operand_dtype, attention_params, check_logits_on_backend, check_start,
    check_weight_dtype, decode_step, embedding_dtype, empty_f32, encoder_output, ensure_f32,
    lm_head_weight, load_f32, load_weight, new_decoder_state, run_step, select_rows,
    teacher_forced_cross_attention, Attention, AttentionBuffers, AttentionShape, LayerRanges,
    Linear, PaddedSources, Residual, SelfAttention, StepScratch, Stream,
};
use crate::safetensors::Checkpoint;
use crate::var_builder::VarBuilder;

mod defaults {
    pub fn vocab_size() -> usize {
        32128
    }
    pub fn d_model() -> usize {
        512
    }
    pub fn d_kv() -> usize {
        64
    }
    pub fn d_ff() -> usize {
        2048
    }
    pub fn num_layers() -> usize {
        6
    }
    pub fn num_heads() -> usize {
        8
    }
    pub fn relative_attention_num_buckets() -> usize {
        32
    }
    pub fn relative_attention_max_distance() -> usize {
        128
    }
    pub fn layer_norm_epsilon() -> f64 {
        1e-6
    }
    pub fn feed_forward_proj() -> String {
        "relu".into()
    }
    pub fn yes() -> bool {
        true
    }
    pub fn pad_token_id() -> Option<u32> {
        Some(0)
    }
    pub fn eos_token_id() -> Option<super::TokenIds> {
        Some(super::TokenIds::One(1))
    }
}

/// `config.json` of `model_type` `"t5"` or `"mt5"`. Field names are HF's; the serde
/// defaults are `T5Config`'s, and mT5's (`vocab_size` 250112, `d_ff` 1024,
/// `num_layers` 8, `num_heads` 6, `feed_forward_proj` "gated-gelu",
/// `decoder_start_token_id` 0, `tie_word_embeddings` false) are filled in before
/// deserialising. Training-only fields (`dropout_rate`, `initializer_factor`,
/// `classifier_dropout`) and the unused legacy `n_positions` are not read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct T5Config {
    pub model_type: String,
    #[serde(default)]
    pub architectures: Option<Vec<String>>,
    #[serde(default = "defaults::vocab_size")]
    pub vocab_size: usize,
    #[serde(default = "defaults::d_model")]
    pub d_model: usize,
    /// Per-head dimension.
    #[serde(default = "defaults::d_kv")]
    pub d_kv: usize,
    #[serde(default = "defaults::d_ff")]
    pub d_ff: usize,
    /// Encoder layers.
    #[serde(default = "defaults::num_layers")]
    pub num_layers: usize,
    /// Decoder layers; HF's default (None) means `num_layers`, filled in when parsing.
    #[serde(default = "defaults::num_layers")]
    pub num_decoder_layers: usize,
    #[serde(default = "defaults::num_heads")]
    pub num_heads: usize,
    #[serde(default = "defaults::relative_attention_num_buckets")]
    pub relative_attention_num_buckets: usize,
    #[serde(default = "defaults::relative_attention_max_distance")]
    pub relative_attention_max_distance: usize,
    #[serde(default = "defaults::layer_norm_epsilon")]
    pub layer_norm_epsilon: f64,
    /// `"relu"`, `"gated-gelu"`, `"gated-silu"`, ...
    #[serde(default = "defaults::feed_forward_proj")]
    pub feed_forward_proj: String,
    /// Written by transformers >= 4.2x; overrides the activation `feed_forward_proj` implies.
    #[serde(default)]
    pub dense_act_fn: Option<String>,
    /// Written by transformers >= 4.2x; overrides the gating `feed_forward_proj` implies.
    #[serde(default)]
    pub is_gated_act: Option<bool>,
    /// As stored in config.json (transformers 5 forces its in-memory copy to true and
    /// keeps the stored value as `scale_decoder_outputs`).
    #[serde(default = "defaults::yes")]
    pub tie_word_embeddings: bool,
    /// Written by transformers 5; when absent it is `tie_word_embeddings` (t5 only).
    #[serde(default)]
    pub scale_decoder_outputs: Option<bool>,
    #[serde(default = "defaults::yes")]
    pub is_encoder_decoder: bool,
    #[serde(default = "defaults::pad_token_id")]
    pub pad_token_id: Option<u32>,
    #[serde(default = "defaults::eos_token_id")]
    pub eos_token_id: Option<TokenIds>,
    #[serde(default)]
    pub bos_token_id: Option<u32>,
    #[serde(default)]
    pub decoder_start_token_id: Option<u32>,
}

/// Architectural facts derived from a [`T5Config`], so model code never reads strings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct T5Arch {
    /// FFN activation (`gelu_new` for "gated-gelu").
    pub activation: Activation,
    /// `wi_0`/`wi_1` gated FFN (`act(wi_0 x) * wi_1 x`) instead of `wi`.
    pub gated_ffn: bool,
    /// `lm_head` is `shared.weight` (no `lm_head.weight` needed). If a checkpoint has an
    /// `lm_head.weight` anyway, use it: HF unties when both are stored and differ.
    pub tied_lm_head: bool,
    /// Multiply the decoder output by `d_model^-0.5` before `lm_head` (T5 v1.0).
    pub scale_decoder_outputs: bool,
    /// `num_heads * d_kv`, the width of q/k/v/o.
    pub inner_dim: usize,
    pub norm: NormKind,
    pub norm_eps: f32,
    /// Attention scores are not scaled by `1/sqrt(d_kv)`.
    pub attention_scale: f32,
}

impl T5Config {
    /// `(activation name, gated)` as HF derives them: stored `dense_act_fn` /
    /// `is_gated_act` win, else from `feed_forward_proj` with "gated-gelu" -> gelu_new.
    pub fn activation_name(&self) -> (String, bool) {
        let parts: Vec<&str> = self.feed_forward_proj.split('-').collect();
        let mut act = parts.last().copied().unwrap_or("").to_string();
        let gated = parts.first() == Some(&"gated") && parts.len() == 2;
        if self.feed_forward_proj == "gated-gelu" {
            act = "gelu_new".into();
        }
        (
            self.dense_act_fn.clone().unwrap_or(act),
            self.is_gated_act.unwrap_or(gated),
        )
    }

    /// The derived architecture (the config was validated when parsed).
    pub fn arch(&self) -> T5Arch {
        let (act, gated) = self.activation_name();
        let scale = match self.model_type.as_str() {
            // transformers' MT5ForConditionalGeneration never scales.
            "mt5" => false,
            _ => self
                .scale_decoder_outputs
                .unwrap_or(self.tie_word_embeddings),
        };
        T5Arch {
            activation: Activation::from_hf_name(&act).unwrap_or(Activation::Relu),
            gated_ffn: gated,
            tied_lm_head: self.tie_word_embeddings,
            scale_decoder_outputs: scale,
            inner_dim: self.num_heads * self.d_kv,
            norm: NormKind::RmsNorm,
            norm_eps: self.layer_norm_epsilon as f32,
            attention_scale: 1.0,
        }
    }

    pub fn architecture(&self) -> &'static str {
        if self.model_type == "mt5" {
            "MT5ForConditionalGeneration"
        } else {
            "T5ForConditionalGeneration"
        }
    }

    /// Every tensor of `T5ForConditionalGeneration.state_dict()`, HF names.
    pub fn tensor_specs(&self) -> Vec<TensorSpec> {
        use TensorKind::*;
        let (d, v, inner, ff) = (
            self.d_model,
            self.vocab_size,
            self.num_heads * self.d_kv,
            self.d_ff,
        );
        let buckets = self.relative_attention_num_buckets;
        let arch = self.arch();
        let mut s = vec![
            TensorSpec::new("shared.weight", vec![v, d], Embedding),
            TensorSpec::new("encoder.embed_tokens.weight", vec![v, d], Embedding).optional(),
            TensorSpec::new("decoder.embed_tokens.weight", vec![v, d], Embedding).optional(),
        ];
        for (stack, layers) in [
            ("encoder", self.num_layers),
            ("decoder", self.num_decoder_layers),
        ] {
            let decoder = stack == "decoder";
            for i in 0..layers {
                let b = format!("{stack}.block.{i}.layer");
                let mut attention = |layer: usize, kind: &str, relative: bool| {
                    let p = format!("{b}.{layer}.{kind}");
                    for w in ["q", "k", "v"] {
                        s.push(TensorSpec::new(
                            format!("{p}.{w}.weight"),
                            vec![inner, d],
                            Linear,
                        ));
                    }
                    s.push(TensorSpec::new(
                        format!("{p}.o.weight"),
                        vec![d, inner],
                        Linear,
                    ));
                    if relative {
                        s.push(TensorSpec::new(
                            format!("{p}.relative_attention_bias.weight"),
                            vec![buckets, self.num_heads],
                            RelativeBias,
                        ));
                    }
                    s.push(TensorSpec::new(
                        format!("{b}.{layer}.layer_norm.weight"),
                        vec![d],
                        Norm,
                    ));
                };
                attention(0, "SelfAttention", i == 0);
                if decoder {
                    attention(1, "EncDecAttention", false);
                }
                let f = if decoder { 2 } else { 1 };
                let p = format!("{b}.{f}.DenseReluDense");
                if arch.gated_ffn {
                    s.push(TensorSpec::new(
                        format!("{p}.wi_0.weight"),
                        vec![ff, d],
                        Linear,
                    ));
                    s.push(TensorSpec::new(
                        format!("{p}.wi_1.weight"),
                        vec![ff, d],
                        Linear,
                    ));
                } else {
                    s.push(TensorSpec::new(
                        format!("{p}.wi.weight"),
                        vec![ff, d],
                        Linear,
                    ));
                }
                s.push(TensorSpec::new(
                    format!("{p}.wo.weight"),
                    vec![d, ff],
                    Linear,
                ));
                s.push(TensorSpec::new(
                    format!("{b}.{f}.layer_norm.weight"),
                    vec![d],
                    Norm,
                ));
            }
            s.push(TensorSpec::new(
                format!("{stack}.final_layer_norm.weight"),
                vec![d],
                Norm,
            ));
        }
        // Old checkpoints carry an unused cross-attention bias (HF ignores it on load).
        s.push(
            TensorSpec::new(
                "decoder.block.0.layer.1.EncDecAttention.relative_attention_bias.weight",
                vec![buckets, self.num_heads],
                RelativeBias,
            )
            .optional(),
        );
        let lm_head = TensorSpec::new("lm_head.weight", vec![v, d], Linear);
        s.push(if arch.tied_lm_head {
            lm_head.optional()
        } else {
            lm_head
        });
        s
    }
}

impl FamilyConfig for T5Config {
    fn apply_defaults(model_type: &str, obj: &mut Map<String, Value>) {
        if model_type == "mt5" {
            set_default(obj, "vocab_size", json!(250112));
            set_default(obj, "d_ff", json!(1024));
            set_default(obj, "num_layers", json!(8));
            set_default(obj, "num_heads", json!(6));
            set_default(obj, "feed_forward_proj", json!("gated-gelu"));
            set_default(obj, "decoder_start_token_id", json!(0));
            // transformers 4's MT5Config default; official mT5 configs all say false.
            set_default(obj, "tie_word_embeddings", json!(false));
        }
        // num_decoder_layers: None -> num_layers (HF __post_init__).
        if obj.get("num_decoder_layers").is_none_or(Value::is_null) {
            let n = obj
                .get("num_layers")
                .cloned()
                .unwrap_or(json!(defaults::num_layers()));
            obj.insert("num_decoder_layers".into(), n);
        }
    }

    fn validate(&self, path: &Path) -> Result<()> {
        require_positive(
            path,
            &[
                ("vocab_size", self.vocab_size),
                ("d_model", self.d_model),
                ("d_kv", self.d_kv),
                ("d_ff", self.d_ff),
                ("num_layers", self.num_layers),
                ("num_decoder_layers", self.num_decoder_layers),
                ("num_heads", self.num_heads),
                (
                    "relative_attention_num_buckets",
                    self.relative_attention_num_buckets,
                ),
                (
                    "relative_attention_max_distance",
                    self.relative_attention_max_distance,
                ),
            ],
        )?;
        let parts: Vec<&str> = self.feed_forward_proj.split('-').collect();
        if parts.len() > 2 || (parts.len() == 2 && parts[0] != "gated") {
            return Err(unsupported(
                path,
                "feed_forward_proj",
                format!("\"{}\"", self.feed_forward_proj),
                "must be \"{ACT}\" or \"gated-{ACT}\", e.g. \"relu\" or \"gated-gelu\"",
            ));
        }
        let (act, _) = self.activation_name();
        if Activation::from_hf_name(&act).is_none() {
            let field = if self.dense_act_fn.is_some() {
                "dense_act_fn"
            } else {
                "feed_forward_proj"
            };
            return Err(unsupported(
                path,
                field,
                format!("\"{act}\""),
                "activation not implemented (supported: relu, gelu, gelu_new, gelu_pytorch_tanh, \
                 gelu_fast, silu, swish)",
            ));
        }
        if !self.is_encoder_decoder {
            return Err(unsupported(
                path,
                "is_encoder_decoder",
                false,
                "encdec runs encoder-decoder models only",
            ));
        }
        if self.relative_attention_num_buckets < 2 {
            return Err(unsupported(
                path,
                "relative_attention_num_buckets",
                self.relative_attention_num_buckets,
                "T5 bucketing needs at least 2 buckets",
            ));
        }
        Ok(())
    }
}

// =================================================================================
// The model
// =================================================================================

/// The bucket of a relative position `memory - query`, exactly as HF
/// `T5Attention._relative_position_bucket` computes it (defined in
/// `encdec_core`, where the backends compute the bias from it).
pub use encdec_core::backend::relative_position_bucket;

/// The `relative_attention_bias` table of one stack (block 0), on the backend:
/// the attention op looks the bias of each (query, key) pair up in it
/// ([`RelativeBiasSpec`]); no `[heads, tq, kv_len]` tensor is made.
#[derive(Debug, Clone)]
struct RelativeBias {
    /// f32 `[buckets, heads]`.
    table: Tensor,
    buckets: usize,
    max_distance: usize,
    bidirectional: bool,
}

impl RelativeBias {
    fn load(
        vb: &VarBuilder,
        cfg: &T5Config,
        bidirectional: bool,
        backend: &dyn Backend,
    ) -> Result<Self> {
        let name = "block.0.layer.0.SelfAttention.relative_attention_bias.weight";
        let table = load_f32(
            vb,
            name,
            &[cfg.relative_attention_num_buckets, cfg.num_heads],
            backend,
        )?;
        Ok(RelativeBias {
            table,
            buckets: cfg.relative_attention_num_buckets,
            max_distance: cfg.relative_attention_max_distance,
            bidirectional,
        })
    }

    /// The attention op's argument.
    fn spec(&self) -> RelativeBiasSpec<'_> {
        RelativeBiasSpec {
            table: &self.table,
            num_buckets: self.buckets,
            max_distance: self.max_distance,
            bidirectional: self.bidirectional,
        }
    }
}

/// An attention block's `q`/`k`/`v`/`o` (no biases in T5).
const ATTENTION_NAMES: [&str; 4] = ["q", "k", "v", "o"];

/// A cross-attention block (k and v project the encoder output once per source).
fn load_attention(
    vb: &VarBuilder,
    d: usize,
    inner: usize,
    dtype: DType,
    be: &dyn Backend,
) -> Result<Attention> {
    Attention::load(vb, ATTENTION_NAMES, d, inner, false, dtype, be)
}

/// A self-attention block, q/k/v fused.
fn load_self_attention(
    vb: &VarBuilder,
    d: usize,
    inner: usize,
    dtype: DType,
    be: &dyn Backend,
) -> Result<SelfAttention> {
    SelfAttention::load(vb, ATTENTION_NAMES, d, inner, false, dtype, be)
}

/// `DenseReluDense`: `wo(act(wi x))`, or gated `wo(act(wi_0 x) * wi_1 x)`.
#[derive(Debug, Clone)]
struct FeedForward {
    /// `wi`, or `wi_0` when gated.
    wi: Linear,
    /// `wi_1` when gated.
    wi_1: Option<Linear>,
    wo: Linear,
    act: Activation,
}

impl FeedForward {
    fn load(
        vb: &VarBuilder,
        cfg: &T5Config,
        arch: &T5Arch,
        dtype: DType,
        be: &dyn Backend,
    ) -> Result<Self> {
        let (d, ff) = (cfg.d_model, cfg.d_ff);
        let (wi, wi_1) = if arch.gated_ffn {
            (
                Linear::load(vb, "wi_0", ff, d, false, dtype, be)?,
                Some(Linear::load(vb, "wi_1", ff, d, false, dtype, be)?),
            )
        } else {
            (Linear::load(vb, "wi", ff, d, false, dtype, be)?, None)
        };
        Ok(FeedForward {
            wi,
            wi_1,
            wo: Linear::load(vb, "wo", d, ff, false, dtype, be)?,
            act: arch.activation,
        })
    }

    /// `stream += ffn(input)`; `a` is a `[.., d_ff]` scratch buffer of the
    /// input's rows (the gated form's two projections and product are one
    /// `linear_gated`).
    fn forward(
        &self,
        be: &dyn Backend,
        io: &mut Residual,
        a: &mut Tensor,
    ) -> encdec_core::Result<()> {
        match &self.wi_1 {
            Some(wi_1) => self.wi.forward_gated(be, wi_1, io.input(), self.act, a)?,
            None => self.wi.forward_act(be, io.input(), self.act, a)?,
        }
        self.wo.forward_add(be, a, io.stream())
    }
}

#[derive(Debug, Clone)]
struct EncoderLayer {
    attn_norm: Tensor,
    attn: SelfAttention,
    ffn_norm: Tensor,
    ffn: FeedForward,
}

#[derive(Debug, Clone)]
struct DecoderLayer {
    self_norm: Tensor,
    self_attn: SelfAttention,
    cross_norm: Tensor,
    cross_attn: Attention,
    ffn_norm: Tensor,
    ffn: FeedForward,
}

/// A T5 / T5 v1.1 / Flan-T5 / mT5 encoder-decoder on a [`Backend`].
///
/// Weights are looked up by their HF names; linear weights are stored in the
/// `dtype` given to [`T5Model::load`], norm weights and the relative-bias tables in
/// f32, the shared embedding in `dtype` (f16 when `dtype` is int8).
pub struct T5Model {
    backend: Arc<dyn Backend>,
    layer_ranges: LayerRanges,
    spec: ModelSpec,
    d_model: usize,
    num_heads: usize,
    d_kv: usize,
    inner: usize,
    d_ff: usize,
    eps: f32,
    embed: Tensor,
    encoder: Vec<EncoderLayer>,
    encoder_bias: RelativeBias,
    encoder_norm: Tensor,
    decoder: Vec<DecoderLayer>,
    decoder_bias: RelativeBias,
    decoder_norm: Tensor,
    lm_head: Linear,
    /// `d_model^-0.5` before lm_head (T5 v1.0), else None.
    output_scale: Option<f32>,
    /// `AttentionParams::operand_dtype` of every attention (from the weight dtype).
    attn_dtype: DType,
}

impl std::fmt::Debug for T5Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("T5Model")
            .field("spec", &self.spec)
            .field("d_model", &self.d_model)
            .field("num_heads", &self.num_heads)
            .field("d_kv", &self.d_kv)
            .field("d_ff", &self.d_ff)
            .field("encoder_layers", &self.encoder.len())
            .field("decoder_layers", &self.decoder.len())
            .field("weight_dtype", &self.lm_head.weight.dtype())
            .finish()
    }
}

impl T5Model {
    /// Loads every weight of `cfg` from `ckpt` onto `backend`, linear weights as
    /// `dtype` (f32, f16, bf16, or int8 quantised per output row). A tensor that is
    /// missing or whose shape does not fit `cfg` is an error naming it.
    pub fn load(
        cfg: &T5Config,
        ckpt: &Checkpoint,
        backend: Arc<dyn Backend>,
        dtype: DType,
    ) -> Result<Self> {
        check_weight_dtype("T5 weights", dtype)?;
        let be: &dyn Backend = &*backend;
        let arch = cfg.arch();
        let (d, inner) = (cfg.d_model, arch.inner_dim);
        let vb = VarBuilder::new(ckpt);

        let embed_dtype = embedding_dtype(dtype);
        let embed = load_weight(&vb, "shared.weight", &[cfg.vocab_size, d], embed_dtype, be)?;

        let evb = vb.pp("encoder");
        let mut encoder = Vec::with_capacity(cfg.num_layers);
        for i in 0..cfg.num_layers {
            let b = evb.pp("block").pp(i).pp("layer");
            encoder.push(EncoderLayer {
                attn_norm: load_f32(&b, "0.layer_norm.weight", &[d], be)?,
                attn: load_self_attention(&b.pp("0.SelfAttention"), d, inner, dtype, be)?,
                ffn_norm: load_f32(&b, "1.layer_norm.weight", &[d], be)?,
                ffn: FeedForward::load(&b.pp("1.DenseReluDense"), cfg, &arch, dtype, be)?,
            });
        }
        let encoder_bias = RelativeBias::load(&evb, cfg, /*bidirectional=*/ true, be)?;
        let encoder_norm = load_f32(&evb, "final_layer_norm.weight", &[d], be)?;

        let dvb = vb.pp("decoder");
        let mut decoder = Vec::with_capacity(cfg.num_decoder_layers);
        for i in 0..cfg.num_decoder_layers {
            let b = dvb.pp("block").pp(i).pp("layer");
            decoder.push(DecoderLayer {
                self_norm: load_f32(&b, "0.layer_norm.weight", &[d], be)?,
                self_attn: load_self_attention(&b.pp("0.SelfAttention"), d, inner, dtype, be)?,
                cross_norm: load_f32(&b, "1.layer_norm.weight", &[d], be)?,
                cross_attn: load_attention(&b.pp("1.EncDecAttention"), d, inner, dtype, be)?,
                ffn_norm: load_f32(&b, "2.layer_norm.weight", &[d], be)?,
                ffn: FeedForward::load(&b.pp("2.DenseReluDense"), cfg, &arch, dtype, be)?,
            });
        }
        let decoder_bias = RelativeBias::load(&dvb, cfg, /*bidirectional=*/ false, be)?;
        let decoder_norm = load_f32(&dvb, "final_layer_norm.weight", &[d], be)?;

        // A stored lm_head.weight wins (HF unties when both are stored); else tied.
        let untied = vb.has("lm_head.weight") || !arch.tied_lm_head;
        let lm_head = Linear::from_weight(
            lm_head_weight(
                &vb,
                untied,
                &embed,
                "shared.weight",
                &[cfg.vocab_size, d],
                dtype,
                be,
            )?,
            None,
        );

        let pad = cfg.pad_token_id.unwrap_or(0);
        let spec = ModelSpec {
            vocab_size: cfg.vocab_size,
            decoder_start_token_id: cfg.decoder_start_token_id.unwrap_or(pad),
            eos_token_id: cfg
                .eos_token_id
                .as_ref()
                .map(TokenIds::to_vec)
                .unwrap_or_default(),
            pad_token_id: pad,
            max_target_positions: None,
            max_source_positions: None,
        };
        Ok(T5Model {
            layer_ranges: LayerRanges::new(encoder.len(), decoder.len()),
            spec,
            d_model: d,
            num_heads: cfg.num_heads,
            d_kv: cfg.d_kv,
            inner,
            d_ff: cfg.d_ff,
            eps: arch.norm_eps,
            embed,
            encoder,
            encoder_bias,
            encoder_norm,
            decoder,
            decoder_bias,
            decoder_norm,
            lm_head,
            output_scale: arch
                .scale_decoder_outputs
                .then(|| (d as f64).powf(-0.5) as f32),
            attn_dtype: attention_operand_dtype(dtype),
            backend,
        })
    }

    /// T5 does not scale `q·k` (its weights absorb `1/sqrt(d_kv)`).
    fn params<'a>(&self, q_offset: usize, kv_len: usize, causal: bool) -> AttentionParams<'a> {
        attention_params(
            self.num_heads,
            self.d_kv,
            1.0,
            q_offset,
            kv_len,
            causal,
            self.attn_dtype,
        )
    }

    fn rms(&self, x: &Tensor, w: &Tensor, out: &mut Tensor) -> encdec_core::Result<()> {
        self.backend
            .norm(NormKind::RmsNorm, x, w, None, self.eps, out)
    }
}

/// What a T5 decode step adds to [`StepScratch`].
#[derive(Debug)]
struct StepBuffers {
    /// `[rows, 1, d_ff]`: the FFN's (gated) up projection.
    f1: Tensor,
}

impl Default for StepBuffers {
    fn default() -> Self {
        StepBuffers { f1: empty_f32() }
    }
}

impl Seq2SeqModel for T5Model {
    fn spec(&self) -> &ModelSpec {
        &self.spec
    }

    fn backend(&self) -> &dyn Backend {
        &*self.backend
    }

    fn encode(&self, sources: &[Vec<u32>]) -> encdec_core::Result<EncoderOutput> {
        let be: &dyn Backend = &*self.backend;
        let src = PaddedSources::new("T5", sources, self.spec.pad_token_id)?;
        let (b, s) = (src.rows, src.len);
        let (d, inner, ff) = (self.d_model, self.inner, self.d_ff);
        let ids = be.upload(&Tensor::from_u32(src.ids, [b * s])?)?;
        let key_mask = be.upload(&Tensor::from_f32(src.key_mask, [b, s])?)?;

        // The residual stream h and the encoder output are f32; each sublayer's
        // normalised input x, q/k/v, the attention output and the FFN inner
        // activations are half on a backend whose kernels round them to half
        // anyway (Backend::activation_dtype).
        let act = be.activation_dtype(self.attn_dtype);
        let mut h = be.zeros(&[b, s, d], DType::F32)?;
        let mut x = be.zeros(&[b, s, d], act)?;
        let mut attn = AttentionBuffers::self_attention(be, &[b, s], inner, act)?;
        let mut f1 = be.zeros(&[b, s, ff], act)?;

        be.embedding(&ids, &self.embed, 1.0, &mut h)?;
        let mut params = self.params(0, s, /*causal=*/ false);
        params.key_mask = Some(&key_mask);
        params.relative_bias = Some(self.encoder_bias.spec());
        for (i, l) in self.encoder.iter().enumerate() {
            let _range = self.layer_ranges.encoder(be, i);
            self.rms(&h, &l.attn_norm, &mut x)?;
            let mut io = Residual::of(Stream::Hidden, &mut h, &mut x);
            l.attn.forward(be, &mut io, &params, &mut attn)?;
            self.rms(&h, &l.ffn_norm, &mut x)?;
            l.ffn.forward(
                be,
                &mut Residual::of(Stream::Hidden, &mut h, &mut x),
                &mut f1,
            )?;
        }
        drop((x, attn, f1));
        let mut hidden = be.zeros(&[b, s, d], DType::F32)?;
        self.rms(&h, &self.encoder_norm, &mut hidden)?;
        let cross = self.decoder.iter().map(|l| &l.cross_attn);
        let cache_dtype = be.kv_cache_dtype(self.attn_dtype);
        encoder_output(be, hidden, key_mask, src.lengths, cross, cache_dtype)
    }

    fn start(
        &self,
        enc: &EncoderOutput,
        source_of_row: &[u32],
        capacity: usize,
    ) -> encdec_core::Result<DecoderState> {
        check_start("T5", enc, source_of_row, self.decoder.len())?;
        new_decoder_state::<StepBuffers>(
            &*self.backend,
            source_of_row,
            capacity,
            self.decoder.len(),
            self.inner,
            self.backend.kv_cache_dtype(self.attn_dtype),
        )
    }

    fn step(
        &self,
        enc: &EncoderOutput,
        state: &mut DecoderState,
        tokens: &[u32],
        logits: &mut Tensor,
    ) -> encdec_core::Result<()> {
        self.decode(enc, state, tokens, logits, None)
    }

    fn step_on_backend(
        &self,
        enc: &EncoderOutput,
        state: &mut DecoderState,
        tokens: &[u32],
        logits: &mut Tensor,
    ) -> encdec_core::Result<()> {
        check_logits_on_backend("T5", &*self.backend, logits)?;
        self.step(enc, state, tokens, logits)
    }

    fn step_on_backend_then(
        &self,
        enc: &EncoderOutput,
        state: &mut DecoderState,
        tokens: &[u32],
        logits: &mut Tensor,
        then: Then<'_>,
    ) -> encdec_core::Result<()> {
        check_logits_on_backend("T5", &*self.backend, logits)?;
        self.decode(enc, state, tokens, logits, Some(then))
    }

    fn select_rows(&self, state: &mut DecoderState, rows: &[u32]) -> encdec_core::Result<()> {
        select_rows::<StepBuffers>("T5", &*self.backend, state, rows, self.inner)
    }

    fn cross_attention(
        &self,
        source: &[u32],
        target: &[u32],
        layer: Option<usize>,
    ) -> encdec_core::Result<(usize, Tensor)> {
        let shape = AttentionShape {
            layers: self.decoder.len(),
            heads: self.num_heads,
            head_dim: self.d_kv,
            scale: self.params(0, 0, false).scale,
        };
        teacher_forced_cross_attention::<StepBuffers>(self, &shape, source, target, layer)
    }
}

impl T5Model {
    /// [`decode_step`] around [`Self::step_with`]: `step` and
    /// `step_on_backend_then` differ only in `then`.
    fn decode(
        &self,
        enc: &EncoderOutput,
        state: &mut DecoderState,
        tokens: &[u32],
        logits: &mut Tensor,
        then: Option<Then<'_>>,
    ) -> encdec_core::Result<()> {
        decode_step(
            "T5",
            state,
            tokens,
            logits,
            self.spec.vocab_size,
            |st, sc, lg| self.step_with(enc, st, tokens, lg, sc, then),
        )
    }

    /// One decoder step with the scratch taken out of `state`: its inputs are
    /// staged, then its ops run (or replay, [`run_step`]).
    fn step_with(
        &self,
        enc: &EncoderOutput,
        state: &mut DecoderState,
        tokens: &[u32],
        logits: &mut Tensor,
        sc: &mut StepScratch<StepBuffers>,
        then: Option<Then<'_>>,
    ) -> encdec_core::Result<()> {
        let be: &dyn Backend = &*self.backend;
        let r = tokens.len();
        let (d, inner, ff) = (self.d_model, self.inner, self.d_ff);
        sc.ensure(be, r, d, inner)?;
        let ffn = &mut sc.extra;
        ensure_f32(be, &mut ffn.f1, &[r, 1, ff])?;
        sc.stage_inputs(be, tokens, state.len)?;
        run_step(be, enc, state, sc, logits, then, |state, sc, logits| {
            self.step_ops(enc, state, sc, logits)
        })
    }

    /// The ops of a decoder step over the staged inputs. Everything that
    /// changes per step is read from backend tensors, so the backend may
    /// record this once and replay it.
    fn step_ops(
        &self,
        enc: &EncoderOutput,
        state: &mut DecoderState,
        sc: &mut StepScratch<StepBuffers>,
        logits: Option<&mut Tensor>,
    ) -> encdec_core::Result<()> {
        let be: &dyn Backend = &*self.backend;
        let pos = state.len;
        let kv_len = pos + 1;
        let ids = sc.step_ids();
        be.embedding(&ids, &self.embed, 1.0, &mut sc.h)?;
        drop(ids);

        let mut self_params = self.params(pos, kv_len, /*causal=*/ true);
        self_params.relative_bias = Some(self.decoder_bias.spec());
        let mut cross_params = self.params(0, enc.src_len, /*causal=*/ false);
        cross_params.key_mask = Some(&enc.key_mask);
        cross_params.kv_index = Some(&state.kv_index);

        let first_norm = self
            .decoder
            .first()
            .map_or(&self.decoder_norm, |l| &l.self_norm);
        self.rms(&sc.h, first_norm, &mut sc.x)?;
        for (i, l) in self.decoder.iter().enumerate() {
            let _range = self.layer_ranges.decoder(be, i);
            let (cache_k, cache_v) = (&mut state.self_k[i], &mut state.self_v[i]);
            let stream = Stream::Hidden;
            sc.self_attention(be, &l.self_attn, cache_k, cache_v, &self_params, stream)?;
            self.rms(&sc.h, &l.cross_norm, &mut sc.x)?;

            sc.cross_attention(be, &l.cross_attn, enc, i, &cross_params, stream)?;
            self.rms(&sc.h, &l.ffn_norm, &mut sc.x)?;

            let mut io = Residual::of(stream, &mut sc.h, &mut sc.x);
            l.ffn.forward(be, &mut io, &mut sc.extra.f1)?;
            let next = self
                .decoder
                .get(i + 1)
                .map_or(&self.decoder_norm, |n| &n.self_norm);
            self.rms(&sc.h, next, &mut sc.x)?;
        }
        if let Some(s) = self.output_scale {
            be.scale(&mut sc.x, s)?;
        }
        sc.project_logits(be, &self.lm_head, logits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Buckets from transformers 5.23 `T5Attention._relative_position_bucket`
    /// (torch 2.15, CPU) at the relative positions where the log branch lands
    /// exactly on an integer, where an f32/f64 slip would change the bucket.
    #[test]
    fn buckets_match_hf_at_integer_boundaries() {
        /// (buckets, max distance, bidirectional, [(relative position, bucket)])
        type Case = (usize, usize, bool, &'static [(i64, usize)]);
        #[rustfmt::skip]
        let cases: &[Case] = &[
            (32, 128, true, &[(-8, 8), (-16, 10), (-32, 12), (-64, 14),
                              (8, 24), (16, 26), (32, 28), (64, 30)]),
            (32, 128, false, &[(-16, 16), (16, 0)]),
            (16, 32, true, &[(-4, 4), (4, 12)]),
            (16, 32, false, &[(-8, 8), (-16, 12), (8, 0), (16, 0)]),
            (32, 64, false, &[(-16, 16), (-32, 24), (16, 0), (32, 0)]),
            (64, 256, true, &[(-16, 16), (-32, 20), (-64, 24), (-128, 28),
                              (16, 48), (32, 52), (64, 56), (128, 60)]),
            (128, 128, true, &[(-32, 32), (-64, 48), (32, 96), (64, 112)]),
        ];
        for &(nb, md, bi, pairs) in cases {
            for &(rel, want) in pairs {
                assert_eq!(
                    relative_position_bucket(rel, bi, nb, md),
                    want,
                    "buckets {nb}, max distance {md}, bidirectional {bi}, relative position {rel}"
                );
            }
        }
    }

    #[test]
    fn buckets_cover_the_range_monotonically() {
        // Causal: distance 0.. maps to 0.., saturating at buckets - 1.
        let mut last = 0;
        for d in 0..1000i64 {
            let b = relative_position_bucket(-d, false, 32, 128);
            assert!(b >= last && b < 32, "distance {d}: bucket {b}");
            last = b;
        }
        assert_eq!(last, 31);
        assert_eq!(
            relative_position_bucket(5, false, 32, 128),
            0,
            "future keys"
        );
        // Bidirectional: keys after the query use the upper half.
        assert_eq!(relative_position_bucket(0, true, 32, 128), 0);
        assert_eq!(relative_position_bucket(1, true, 32, 128), 17);
        assert_eq!(relative_position_bucket(-1, true, 32, 128), 1);
        assert_eq!(relative_position_bucket(10_000, true, 32, 128), 31);
        assert_eq!(relative_position_bucket(-10_000, true, 32, 128), 15);
    }
}
