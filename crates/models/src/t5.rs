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

use std::path::Path;

use encdec_core::{Activation, NormKind};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::config::{
    require_positive, set_default, unsupported, FamilyConfig, TensorKind, TensorSpec, TokenIds,
};
use crate::error::Result;

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
