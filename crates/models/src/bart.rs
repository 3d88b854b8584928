//! BART family configs: BART, mBART, PEGASUS, MarianMT, M2M100 and NLLB (which is
//! `model_type` `m2m_100`).
//!
//! Papers: Lewis et al. 2020 (BART), Liu et al. 2020 (mBART), Zhang et al. 2020
//! (PEGASUS), Junczys-Dowmunt et al. 2018 (Marian), Fan et al. 2021 (M2M100), NLLB
//! Team 2022. Mirrors transformers' `models/{bart,mbart,pegasus,marian,m2m_100}`.
//!
//! The five share one layer layout (`self_attn`, `encoder_attn`, `fc1`/`fc2`, biased
//! LayerNorms with eps 1e-5, `1/sqrt(head_dim)` query scaling) and differ in what HF
//! hard-codes per class, not in config.json; [`BartConfig::arch`] returns those
//! facts per `model_type`:
//!
//! | model_type | norm | positions | layernorm_embedding | final norms | final_logits_bias |
//! |---|---|---|---|---|---|
//! | bart    | post | learned, offset 2 | yes | no  | yes |
//! | mbart   | pre  | learned, offset 2 | yes | yes | yes |
//! | pegasus | pre  | sinusoidal        | no  | yes | yes |
//! | marian  | post | sinusoidal        | no  | no  | yes |
//! | m2m_100 | pre  | sinusoidal from padding_idx + 1 (fairseq) | no | yes | no |
//!
//! The legacy switches old config.json files still carry (`normalize_before`,
//! `add_final_layer_norm`, `normalize_embedding`, `static_position_embeddings`,
//! `add_bias_logits`) are read by no transformers 4/5 class; we parse them and reject
//! a config whose value contradicts the class, since such a checkpoint was trained
//! with an architecture neither HF nor we run.
//!
//! [`BartModel`] is the forward pass on the [`Backend`] trait (candle style: weights
//! looked up by HF names through [`VarBuilder`]), implementing [`Seq2SeqModel`]:
//! - Embeddings: `embed_tokens(ids) * embed_scale + positions`, then
//!   `layernorm_embedding` where the class has it. Position rows follow HF exactly:
//!   learned `t + 2`; PEGASUS/Marian sinusoids `t` (the stored table when the
//!   checkpoint has one, else computed as HF's `create_weight`, in f64); fairseq
//!   sinusoids (M2M100/NLLB, computed in f32 as `get_embedding`) `padding_idx + past +
//!   (non-pad tokens so far)`, and the zero row `padding_idx` for pad tokens.
//! - Post-LN layers `x = norm(x + f(x))` (BART, Marian) or pre-LN `h = h + f(norm(h))`
//!   with a final LayerNorm per stack (mBART, PEGASUS, M2M100); residual adds are
//!   fused into each sublayer's output projection (`linear_add`). Encoder and decoder may differ
//!   in heads and FFN width (PEGASUS). Queries are scaled by `head_dim^-0.5`.
//! - `encode` pads with `pad_token_id` (so even states at pad positions equal HF's),
//!   masks pad keys, and projects the cross-attention K/V of every decoder layer once
//!   per source (`EncoderOutput::cross_k/v`).
//! - `step` feeds one token per row: self-attention over the KV cache of
//!   `DecoderState` (written with `write_rows` at `len`), cross-attention over the
//!   cached encoder K/V through `kv_index`, the FFN, the final norm, `lm_head` plus
//!   `final_logits_bias`. Step buffers live in `DecoderState::scratch` and are
//!   reused while the row count stays the same; `select_rows` gathers the caches
//!   into spare buffers kept there and swaps them in.
//! - lm_head: a stored `lm_head.weight` that differs from the embedding is used even
//!   when `tie_word_embeddings` (transformers 5 unties such checkpoints), likewise a
//!   stored `encoder/decoder.embed_tokens.weight` that differs from `shared`.
//! - Positions are limited to `max_position_embeddings` for every kind (HF's learned
//!   and PEGASUS/Marian tables have exactly that many rows; HF grows the fairseq
//!   table on demand, we stop at the trained length): `ModelSpec::max_*_positions`.

use std::path::Path;
use std::sync::Arc;

use encdec_core::{Activation, AttentionParams, Backend, DType, NormKind, Tensor};
use encdec_generate::{DecoderState, EncoderOutput, ModelSpec, Seq2SeqModel, Then};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::config::{
    invalid as config_invalid, require_positive, set_default, unsupported, FamilyConfig,
    TensorKind, TensorSpec, TokenIds,
};
use crate::error::Result;
use crate::layers::{
    attention_operand_dtype, attention_params, check_logits_on_backend, check_start,
    check_weight_dtype, copy_to_backend, decode_step, embedding_dtype, empty_f32, encoder_output,
    ensure_f32, host_u32, invalid, lm_head_weight, load_f32, load_weight, new_decoder_state,
    run_step, select_rows, teacher_forced_cross_attention, Attention, AttentionBuffers,
    AttentionShape, LayerRanges, Linear, PaddedSources, Residual, SelfAttention, StepScratch,
    Stream,
};
use crate::safetensors::Checkpoint;
use crate::var_builder::VarBuilder;

mod defaults {
    use super::TokenIds;
    pub fn vocab_size() -> usize {
        50265
    }
    pub fn max_position_embeddings() -> usize {
        1024
    }
    pub fn layers() -> usize {
        12
    }
    pub fn ffn_dim() -> usize {
        4096
    }
    pub fn heads() -> usize {
        16
    }
    pub fn activation_function() -> String {
        "gelu".into()
    }
    pub fn d_model() -> usize {
        1024
    }
    pub fn yes() -> bool {
        true
    }
    pub fn pad_token_id() -> Option<u32> {
        Some(1)
    }
    pub fn bos_token_id() -> Option<u32> {
        Some(0)
    }
    pub fn eos_token_id() -> Option<TokenIds> {
        Some(TokenIds::One(2))
    }
    pub fn decoder_start_token_id() -> Option<u32> {
        Some(2)
    }
    pub fn forced_eos_token_id() -> Option<TokenIds> {
        Some(TokenIds::One(2))
    }
}

/// `config.json` of the BART family. Field names are HF's; the serde defaults are
/// `BartConfig`'s and the other classes' defaults are filled in before deserialising
/// (see [`FamilyConfig::apply_defaults`] below). Training-only fields (dropouts,
/// layerdrop, `init_std`) are not read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BartConfig {
    pub model_type: String,
    #[serde(default)]
    pub architectures: Option<Vec<String>>,
    #[serde(default = "defaults::vocab_size")]
    pub vocab_size: usize,
    /// Marian only: target vocabulary when embeddings are not shared (None -> vocab_size).
    #[serde(default)]
    pub decoder_vocab_size: Option<usize>,
    #[serde(default = "defaults::max_position_embeddings")]
    pub max_position_embeddings: usize,
    #[serde(default = "defaults::layers")]
    pub encoder_layers: usize,
    #[serde(default = "defaults::ffn_dim")]
    pub encoder_ffn_dim: usize,
    #[serde(default = "defaults::heads")]
    pub encoder_attention_heads: usize,
    #[serde(default = "defaults::layers")]
    pub decoder_layers: usize,
    #[serde(default = "defaults::ffn_dim")]
    pub decoder_ffn_dim: usize,
    #[serde(default = "defaults::heads")]
    pub decoder_attention_heads: usize,
    #[serde(default = "defaults::activation_function")]
    pub activation_function: String,
    #[serde(default = "defaults::d_model")]
    pub d_model: usize,
    /// Multiply token embeddings by `sqrt(d_model)`.
    #[serde(default)]
    pub scale_embedding: bool,
    #[serde(default = "defaults::yes")]
    pub tie_word_embeddings: bool,
    /// Marian only (other classes always share); None = HF's default, true.
    #[serde(default)]
    pub share_encoder_decoder_embeddings: Option<bool>,
    #[serde(default = "defaults::yes")]
    pub is_encoder_decoder: bool,
    #[serde(default = "defaults::pad_token_id")]
    pub pad_token_id: Option<u32>,
    #[serde(default = "defaults::bos_token_id")]
    pub bos_token_id: Option<u32>,
    #[serde(default = "defaults::eos_token_id")]
    pub eos_token_id: Option<TokenIds>,
    #[serde(default = "defaults::decoder_start_token_id")]
    pub decoder_start_token_id: Option<u32>,
    #[serde(default)]
    pub forced_bos_token_id: Option<u32>,
    #[serde(default = "defaults::forced_eos_token_id")]
    pub forced_eos_token_id: Option<TokenIds>,
    /// Legacy (transformers 3): pre-LN. Checked against the class, never read.
    #[serde(default)]
    pub normalize_before: Option<bool>,
    /// Legacy: final encoder/decoder LayerNorm. Checked against the class.
    #[serde(default)]
    pub add_final_layer_norm: Option<bool>,
    /// Legacy: `layernorm_embedding`. Checked against the class.
    #[serde(default)]
    pub normalize_embedding: Option<bool>,
    /// Legacy: sinusoidal positions. Checked against the class.
    #[serde(default)]
    pub static_position_embeddings: Option<bool>,
    /// Legacy: must be false or absent.
    #[serde(default)]
    pub add_bias_logits: Option<bool>,
}

/// How positions are embedded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PositionKind {
    /// Learned table `[max_position_embeddings + offset, d_model]`; the token at
    /// position `t` (counting from 0, past included) reads row `t + offset` (BART, mBART: 2).
    Learned { offset: usize },
    /// Fixed sinusoids `[max_position_embeddings, d_model]` (Marian, Pegasus): row `t`
    /// holds `sin(t / 10000^(2i/d))` in columns `0..d/2` and the matching `cos` in
    /// `d/2..d`, `i = 0..d/2`. Checkpoints may omit the table.
    Sinusoidal,
    /// fairseq sinusoids (M2M100, NLLB): `half = d/2`, `f_i = exp(-ln(10000) i / (half - 1))`,
    /// `[sin(p f), cos(p f)]`; a non-pad token's position is `padding_idx + 1 +` its index
    /// among the non-pad tokens (past included), a pad token's is `padding_idx` (a zero
    /// row). Never stored in checkpoints.
    SinusoidalFairseq { padding_idx: u32 },
}

/// Architectural facts of a [`BartConfig`] per `model_type`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BartArch {
    /// Pre-LN (`x + f(norm(x))`) instead of post-LN (`norm(x + f(x))`).
    pub pre_norm: bool,
    pub positions: PositionKind,
    /// LayerNorm after embeddings + positions (`layernorm_embedding`).
    pub layernorm_embedding: bool,
    /// LayerNorm at the end of each stack (`encoder.layer_norm`, `decoder.layer_norm`).
    pub final_layer_norm: bool,
    /// Add `final_logits_bias [1, vocab]` to the logits (zeros when absent from the checkpoint).
    pub final_logits_bias: bool,
    /// Token embeddings are multiplied by this (`sqrt(d_model)` if `scale_embedding`).
    pub embed_scale: f32,
    pub activation: Activation,
    /// One `model.shared` table for encoder and decoder (false only for Marian
    /// with `share_encoder_decoder_embeddings: false`).
    pub shared_embeddings: bool,
    /// `lm_head` is the (decoder) token embedding. If a checkpoint stores an
    /// `lm_head.weight` anyway, use it: HF unties when both are stored and differ.
    pub tied_lm_head: bool,
    /// Rows of `lm_head` / `final_logits_bias`.
    pub target_vocab_size: usize,
    pub norm: NormKind,
    pub norm_eps: f32,
}

impl BartConfig {
    /// The derived architecture (the config was validated when parsed).
    pub fn arch(&self) -> BartArch {
        let (pre_norm, positions, layernorm_embedding, final_layer_norm, final_logits_bias) =
            match self.model_type.as_str() {
                "mbart" => (true, PositionKind::Learned { offset: 2 }, true, true, true),
                "pegasus" => (true, PositionKind::Sinusoidal, false, true, true),
                "marian" => (false, PositionKind::Sinusoidal, false, false, true),
                "m2m_100" => (
                    true,
                    PositionKind::SinusoidalFairseq {
                        padding_idx: self.pad_token_id.unwrap_or(1),
                    },
                    false,
                    true,
                    false,
                ),
                // "bart"
                _ => (
                    false,
                    PositionKind::Learned { offset: 2 },
                    true,
                    false,
                    true,
                ),
            };
        BartArch {
            pre_norm,
            positions,
            layernorm_embedding,
            final_layer_norm,
            final_logits_bias,
            embed_scale: if self.scale_embedding {
                (self.d_model as f32).sqrt()
            } else {
                1.0
            },
            activation: Activation::from_hf_name(&self.activation_function)
                .unwrap_or(Activation::Gelu),
            shared_embeddings: self.shared_embeddings(),
            tied_lm_head: self.tie_word_embeddings,
            target_vocab_size: self.target_vocab_size(),
            norm: NormKind::LayerNorm,
            norm_eps: 1e-5,
        }
    }

    fn shared_embeddings(&self) -> bool {
        self.model_type != "marian" || self.share_encoder_decoder_embeddings.unwrap_or(true)
    }

    /// Rows of `lm_head`: `decoder_vocab_size` for Marian with separate embeddings,
    /// else `vocab_size`.
    pub fn target_vocab_size(&self) -> usize {
        if self.shared_embeddings() {
            self.vocab_size
        } else {
            self.decoder_vocab_size.unwrap_or(self.vocab_size)
        }
    }

    /// Attention query scaling of the encoder (`1/sqrt(head_dim)`).
    pub fn encoder_head_dim(&self) -> usize {
        self.d_model / self.encoder_attention_heads.max(1)
    }
    pub fn decoder_head_dim(&self) -> usize {
        self.d_model / self.decoder_attention_heads.max(1)
    }

    pub fn architecture(&self) -> &'static str {
        match self.model_type.as_str() {
            "mbart" => "MBartForConditionalGeneration",
            "pegasus" => "PegasusForConditionalGeneration",
            "marian" => "MarianMTModel",
            "m2m_100" => "M2M100ForConditionalGeneration",
            _ => "BartForConditionalGeneration",
        }
    }

    /// Every tensor of the `*ForConditionalGeneration` state dict, HF names.
    pub fn tensor_specs(&self) -> Vec<TensorSpec> {
        use TensorKind::*;
        let arch = self.arch();
        let d = self.d_model;
        let v = self.vocab_size;
        let vt = arch.target_vocab_size;
        let mut s = Vec::new();
        if arch.shared_embeddings {
            s.push(TensorSpec::new(
                "model.shared.weight",
                vec![v, d],
                Embedding,
            ));
            s.push(
                TensorSpec::new("model.encoder.embed_tokens.weight", vec![v, d], Embedding)
                    .optional(),
            );
            s.push(
                TensorSpec::new("model.decoder.embed_tokens.weight", vec![v, d], Embedding)
                    .optional(),
            );
        } else {
            s.push(TensorSpec::new(
                "model.encoder.embed_tokens.weight",
                vec![v, d],
                Embedding,
            ));
            s.push(TensorSpec::new(
                "model.decoder.embed_tokens.weight",
                vec![vt, d],
                Embedding,
            ));
        }
        let norm = |s: &mut Vec<TensorSpec>, p: String| {
            s.push(TensorSpec::new(format!("{p}.weight"), vec![d], Norm));
            s.push(TensorSpec::new(format!("{p}.bias"), vec![d], Norm));
        };
        let linear = |s: &mut Vec<TensorSpec>, p: String, out: usize, inp: usize| {
            s.push(TensorSpec::new(
                format!("{p}.weight"),
                vec![out, inp],
                Linear,
            ));
            s.push(TensorSpec::new(format!("{p}.bias"), vec![out], Bias));
        };
        for (stack, layers, ffn) in [
            ("encoder", self.encoder_layers, self.encoder_ffn_dim),
            ("decoder", self.decoder_layers, self.decoder_ffn_dim),
        ] {
            let p = format!("model.{stack}");
            match arch.positions {
                PositionKind::Learned { offset } => s.push(TensorSpec::new(
                    format!("{p}.embed_positions.weight"),
                    vec![self.max_position_embeddings + offset, d],
                    PositionTable,
                )),
                PositionKind::Sinusoidal => s.push(
                    TensorSpec::new(
                        format!("{p}.embed_positions.weight"),
                        vec![self.max_position_embeddings, d],
                        PositionTable,
                    )
                    .recomputed(),
                ),
                PositionKind::SinusoidalFairseq { .. } => {}
            }
            for i in 0..layers {
                let l = format!("{p}.layers.{i}");
                let attention = |s: &mut Vec<TensorSpec>, name: &str| {
                    for w in ["k_proj", "v_proj", "q_proj", "out_proj"] {
                        linear(s, format!("{l}.{name}.{w}"), d, d);
                    }
                    norm(s, format!("{l}.{name}_layer_norm"));
                };
                attention(&mut s, "self_attn");
                if stack == "decoder" {
                    attention(&mut s, "encoder_attn");
                }
                linear(&mut s, format!("{l}.fc1"), ffn, d);
                linear(&mut s, format!("{l}.fc2"), d, ffn);
                norm(&mut s, format!("{l}.final_layer_norm"));
            }
            if arch.layernorm_embedding {
                norm(&mut s, format!("{p}.layernorm_embedding"));
            }
            if arch.final_layer_norm {
                norm(&mut s, format!("{p}.layer_norm"));
            }
        }
        let lm_head = TensorSpec::new("lm_head.weight", vec![vt, d], Linear);
        s.push(if arch.tied_lm_head {
            lm_head.optional()
        } else {
            lm_head
        });
        if arch.final_logits_bias {
            s.push(TensorSpec::new("final_logits_bias", vec![1, vt], LogitsBias).optional());
        }
        s
    }
}

impl FamilyConfig for BartConfig {
    fn apply_defaults(model_type: &str, obj: &mut Map<String, Value>) {
        let table: &[(&str, Value)] = match model_type {
            "mbart" => &[("decoder_start_token_id", Value::Null)],
            "pegasus" => &[
                ("pad_token_id", json!(0)),
                ("bos_token_id", Value::Null),
                ("eos_token_id", json!(1)),
                ("decoder_start_token_id", json!(0)),
                ("forced_eos_token_id", json!(1)),
            ],
            "marian" => &[
                ("vocab_size", json!(58101)),
                ("pad_token_id", json!(58100)),
                ("bos_token_id", Value::Null),
                ("eos_token_id", json!(0)),
                ("decoder_start_token_id", json!(58100)),
                ("forced_eos_token_id", json!(0)),
            ],
            "m2m_100" => &[
                ("vocab_size", json!(128112)),
                ("activation_function", json!("relu")),
                ("scale_embedding", json!(true)),
                ("forced_eos_token_id", Value::Null),
            ],
            _ => &[],
        };
        for (k, v) in table {
            set_default(obj, k, v.clone());
        }
    }

    fn validate(&self, path: &Path) -> Result<()> {
        require_positive(
            path,
            &[
                ("vocab_size", self.vocab_size),
                ("d_model", self.d_model),
                ("max_position_embeddings", self.max_position_embeddings),
                ("encoder_layers", self.encoder_layers),
                ("decoder_layers", self.decoder_layers),
                ("encoder_attention_heads", self.encoder_attention_heads),
                ("decoder_attention_heads", self.decoder_attention_heads),
                ("encoder_ffn_dim", self.encoder_ffn_dim),
                ("decoder_ffn_dim", self.decoder_ffn_dim),
            ],
        )?;
        for (field, heads) in [
            ("encoder_attention_heads", self.encoder_attention_heads),
            ("decoder_attention_heads", self.decoder_attention_heads),
        ] {
            if self.d_model % heads != 0 {
                return Err(config_invalid(
                    path,
                    format!(
                        "d_model ({}) must be divisible by {field} ({heads})",
                        self.d_model
                    ),
                ));
            }
        }
        if Activation::from_hf_name(&self.activation_function).is_none() {
            return Err(unsupported(
                path,
                "activation_function",
                format!("\"{}\"", self.activation_function),
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
        let class = self.architecture();
        let arch = self.arch();
        let sinusoidal = !matches!(arch.positions, PositionKind::Learned { .. });
        let legacy = [
            ("normalize_before", self.normalize_before, arch.pre_norm),
            (
                "add_final_layer_norm",
                self.add_final_layer_norm,
                arch.final_layer_norm,
            ),
            (
                "normalize_embedding",
                self.normalize_embedding,
                arch.layernorm_embedding,
            ),
            (
                "static_position_embeddings",
                self.static_position_embeddings,
                sinusoidal,
            ),
        ];
        for (field, value, class_has) in legacy {
            if let Some(v) = value {
                if v != class_has {
                    return Err(unsupported(
                        path,
                        field,
                        v,
                        format!(
                            "transformers' {class} always runs with {field} = {class_has} for model_type \
                             \"{}\", so this checkpoint's architecture is not one we (or transformers) run",
                            self.model_type
                        ),
                    ));
                }
            }
        }
        if self.add_bias_logits == Some(true) {
            return Err(unsupported(
                path,
                "add_bias_logits",
                true,
                "an extra logits-bias layer is not part of any supported class",
            ));
        }
        if self.model_type != "marian" {
            if self.share_encoder_decoder_embeddings == Some(false) {
                return Err(unsupported(
                    path,
                    "share_encoder_decoder_embeddings",
                    false,
                    format!(
                        "only Marian supports separate encoder/decoder embeddings, not {class}"
                    ),
                ));
            }
            if let Some(dv) = self.decoder_vocab_size {
                if dv != self.vocab_size {
                    return Err(unsupported(
                        path,
                        "decoder_vocab_size",
                        dv,
                        format!(
                            "{class} has one vocabulary of vocab_size ({})",
                            self.vocab_size
                        ),
                    ));
                }
            }
        }
        if self.model_type == "m2m_100" && self.pad_token_id.is_none() {
            return Err(config_invalid(
                path,
                "m2m_100 positions are counted from pad_token_id, which is null",
            ));
        }
        Ok(())
    }
}

// =====================================================================================
// The model
// =====================================================================================

/// A LayerNorm's weight and bias (f32).
#[derive(Debug, Clone)]
struct Norm {
    weight: Tensor,
    bias: Tensor,
}

impl Norm {
    fn load(vb: &VarBuilder, name: &str, d: usize, be: &dyn Backend) -> Result<Self> {
        Ok(Norm {
            weight: load_f32(vb, &format!("{name}.weight"), &[d], be)?,
            bias: load_f32(vb, &format!("{name}.bias"), &[d], be)?,
        })
    }
}

/// `q_proj`/`k_proj`/`v_proj`/`out_proj`, all `[d, d]` with biases.
const ATTENTION_NAMES: [&str; 4] = ["q_proj", "k_proj", "v_proj", "out_proj"];

/// A cross-attention block (k and v project the encoder output once per source).
fn load_attention(vb: &VarBuilder, d: usize, dtype: DType, be: &dyn Backend) -> Result<Attention> {
    Attention::load(vb, ATTENTION_NAMES, d, d, true, dtype, be)
}

/// A self-attention block, q/k/v fused.
fn load_self_attention(
    vb: &VarBuilder,
    d: usize,
    dtype: DType,
    be: &dyn Backend,
) -> Result<SelfAttention> {
    SelfAttention::load(vb, ATTENTION_NAMES, d, d, true, dtype, be)
}

/// `fc2(act(fc1 x))`.
#[derive(Debug, Clone)]
struct FeedForward {
    fc1: Linear,
    fc2: Linear,
}

impl FeedForward {
    fn load(vb: &VarBuilder, d: usize, ffn: usize, dtype: DType, be: &dyn Backend) -> Result<Self> {
        Ok(FeedForward {
            fc1: Linear::load(vb, "fc1", ffn, d, true, dtype, be)?,
            fc2: Linear::load(vb, "fc2", d, ffn, true, dtype, be)?,
        })
    }

    /// `stream += fc2(act(fc1 input))`; `f` is an `[.., ffn]` scratch buffer
    /// of the input's rows.
    fn forward(
        &self,
        be: &dyn Backend,
        act: Activation,
        io: &mut Residual,
        f: &mut Tensor,
    ) -> encdec_core::Result<()> {
        self.fc1.forward_act(be, io.input(), act, f)?;
        self.fc2.forward_add(be, f, io.stream())
    }
}

#[derive(Debug, Clone)]
struct EncoderLayer {
    self_attn: SelfAttention,
    self_norm: Norm,
    ffn: FeedForward,
    ffn_norm: Norm,
}

#[derive(Debug, Clone)]
struct DecoderLayer {
    self_attn: SelfAttention,
    self_norm: Norm,
    cross_attn: Attention,
    cross_norm: Norm,
    ffn: FeedForward,
    ffn_norm: Norm,
}

/// One stack's token embedding and position table.
#[derive(Debug, Clone)]
struct Embeddings {
    /// `[vocab, d]` in the weight dtype (f16 for int8 runs).
    tokens: Tensor,
    /// f32 `[rows, d]`, gathered with the ids of [`BartModel::position_ids`].
    positions: Tensor,
    /// `layernorm_embedding` (BART, mBART).
    norm: Option<Norm>,
}

/// PEGASUS / Marian sinusoids `[rows, d]` as HF's `create_weight` computes them (in
/// f64, rounded to f32): column `i < ceil(d/2)` of row `p` is `sin(p / 10000^(2i/d))`,
/// column `ceil(d/2) + i` is `cos(p / 10000^(2i/d))`.
pub fn sinusoidal_table(rows: usize, d: usize) -> Vec<f32> {
    let sentinel = d.div_ceil(2);
    let mut out = vec![0f32; rows * d];
    for (p, row) in out.chunks_exact_mut(d.max(1)).enumerate() {
        for j in 0..d {
            let angle = p as f64 / 10000f64.powf((2 * (j / 2)) as f64 / d as f64);
            if j % 2 == 0 {
                row[j / 2] = angle.sin() as f32;
            } else {
                row[sentinel + j / 2] = angle.cos() as f32;
            }
        }
    }
    out
}

/// M2M100 / NLLB (fairseq) sinusoids `[rows, d]` as HF's `get_embedding` computes
/// them (in f32): `half = d/2`, `f_i = exp(-i ln(10000) / (half - 1))`, row `p` is
/// `[sin(p f_i).., cos(p f_i)..]` (a zero column last when d is odd), and row
/// `padding_idx` is zero.
pub fn fairseq_sinusoidal_table(rows: usize, d: usize, padding_idx: usize) -> Vec<f32> {
    let half = d / 2;
    let step = (10000f64.ln() / (half as f64 - 1.0)) as f32;
    let freq: Vec<f32> = (0..half)
        .map(|i| (f64::from(i as f32 * -step)).exp() as f32)
        .collect();
    let mut out = vec![0f32; rows * d];
    for (p, row) in out.chunks_exact_mut(d.max(1)).enumerate() {
        if p == padding_idx {
            continue;
        }
        for (i, &f) in freq.iter().enumerate() {
            let a = f64::from(p as f32 * f);
            row[i] = a.sin() as f32;
            row[half + i] = a.cos() as f32;
        }
    }
    out
}

/// Position-table rows of `tokens` (one sequence, `past` tokens before it),
/// written to `out`. HF's rules: learned tables read `t + offset`, sinusoids `t`,
/// fairseq sinusoids `padding_idx + past + (non-pad tokens so far)` for a non-pad
/// token and `padding_idx` (a zero row) for a pad token.
fn position_ids(kind: PositionKind, tokens: &[u32], past: usize, out: &mut [u32]) {
    match kind {
        PositionKind::Learned { offset } => {
            for (t, o) in out.iter_mut().enumerate() {
                *o = (past + t + offset) as u32;
            }
        }
        PositionKind::Sinusoidal => {
            for (t, o) in out.iter_mut().enumerate() {
                *o = (past + t) as u32;
            }
        }
        PositionKind::SinusoidalFairseq { padding_idx } => {
            let mut seen = 0u32;
            for (&tok, o) in tokens.iter().zip(out.iter_mut()) {
                if tok == padding_idx {
                    *o = padding_idx;
                } else {
                    seen += 1;
                    *o = padding_idx + past as u32 + seen;
                }
            }
        }
    }
}

/// A BART / mBART / PEGASUS / Marian / M2M100 / NLLB encoder-decoder on a [`Backend`].
///
/// Weights are looked up by their HF names; linear weights are stored in the
/// `dtype` given to [`BartModel::load`], LayerNorms, biases, position tables and
/// `final_logits_bias` in f32, token embeddings in `dtype` (f16 when `dtype` is int8).
pub struct BartModel {
    backend: Arc<dyn Backend>,
    layer_ranges: LayerRanges,
    spec: ModelSpec,
    arch: BartArch,
    d_model: usize,
    encoder_heads: usize,
    decoder_heads: usize,
    encoder_ffn: usize,
    decoder_ffn: usize,
    /// Longest sequence the position tables cover (encoder and decoder alike).
    max_positions: usize,
    encoder_embed: Embeddings,
    decoder_embed: Embeddings,
    encoder: Vec<EncoderLayer>,
    decoder: Vec<DecoderLayer>,
    encoder_norm: Option<Norm>,
    decoder_norm: Option<Norm>,
    /// Bias = `final_logits_bias` where the class has one and the checkpoint stores it.
    lm_head: Linear,
    /// `AttentionParams::operand_dtype` of every attention (from the weight dtype).
    attn_dtype: DType,
}

impl std::fmt::Debug for BartModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BartModel")
            .field("spec", &self.spec)
            .field("arch", &self.arch)
            .field("d_model", &self.d_model)
            .field("encoder_heads", &self.encoder_heads)
            .field("decoder_heads", &self.decoder_heads)
            .field("encoder_layers", &self.encoder.len())
            .field("decoder_layers", &self.decoder.len())
            .field("weight_dtype", &self.lm_head.weight.dtype())
            .finish()
    }
}

/// Whether `name` is stored under its own key (not as an alias of `base`) with bytes
/// that differ from `base`'s: HF then unties it ("both are present in the
/// checkpoints with different values, so we will NOT tie them").
fn stored_distinct(ckpt: &Checkpoint, name: &str, base: &str) -> bool {
    let (Some(a), Some(b)) = (ckpt.resolve(name), ckpt.resolve(base)) else {
        return ckpt.has(name);
    };
    if a == b {
        return false;
    }
    match (ckpt.raw_bytes(a), ckpt.raw_bytes(b)) {
        (Ok(x), Ok(y)) => x != y || ckpt.stored_dtype(a).ok() != ckpt.stored_dtype(b).ok(),
        // no stored bytes (random weights): treat as tied
        _ => false,
    }
}

impl BartModel {
    /// Loads every weight of `cfg` from `ckpt` onto `backend`, linear weights as
    /// `dtype` (f32, f16, bf16, or int8 quantised per output row). A tensor that is
    /// missing or whose shape does not fit `cfg` is an error naming it; a config
    /// switch we do not run is [`ModelError::UnsupportedConfig`].
    pub fn load(
        cfg: &BartConfig,
        ckpt: &Checkpoint,
        backend: Arc<dyn Backend>,
        dtype: DType,
    ) -> Result<Self> {
        check_weight_dtype(&format!("{} weights", cfg.architecture()), dtype)?;
        // The config may have been built by hand rather than parsed: check it again
        // so that no switch is silently ignored.
        let config_path = ckpt.dir().join("config.json");
        cfg.validate(&config_path)?;
        let arch = cfg.arch();
        if arch.pre_norm && !arch.final_layer_norm {
            return Err(unsupported(
                &config_path,
                "add_final_layer_norm",
                false,
                "a pre-LN stack without a final LayerNorm is not part of any supported class",
            ));
        }
        let be: &dyn Backend = &*backend;
        let d = cfg.d_model;
        let (v, vt) = (cfg.vocab_size, arch.target_vocab_size);
        let max = cfg.max_position_embeddings;
        let vb = VarBuilder::new(ckpt);

        // Token embeddings.
        let embed_dtype = embedding_dtype(dtype);
        const SHARED: &str = "model.shared.weight";
        const ENC_TOK: &str = "model.encoder.embed_tokens.weight";
        const DEC_TOK: &str = "model.decoder.embed_tokens.weight";
        let (enc_tokens, dec_tokens, tie_target) = if arch.shared_embeddings {
            let shared = load_weight(&vb, SHARED, &[v, d], embed_dtype, be)?;
            let own = |name: &str| -> Result<Tensor> {
                if stored_distinct(ckpt, name, SHARED) {
                    load_weight(&vb, name, &[v, d], embed_dtype, be)
                } else {
                    Ok(shared.clone())
                }
            };
            (own(ENC_TOK)?, own(DEC_TOK)?, SHARED)
        } else {
            (
                load_weight(&vb, ENC_TOK, &[v, d], embed_dtype, be)?,
                load_weight(&vb, DEC_TOK, &[vt, d], embed_dtype, be)?,
                DEC_TOK,
            )
        };

        // Position tables (f32).
        let positions = |stack: &str| -> Result<Tensor> {
            let name = format!("model.{stack}.embed_positions.weight");
            match arch.positions {
                PositionKind::Learned { offset } => load_f32(&vb, &name, &[max + offset, d], be),
                PositionKind::Sinusoidal => {
                    // HF loads a stored table (it equals the computed one) and
                    // computes a missing one.
                    if vb.has(&name) {
                        load_f32(&vb, &name, &[max, d], be)
                    } else {
                        Ok(be.upload(&Tensor::from_f32(sinusoidal_table(max, d), [max, d])?)?)
                    }
                }
                PositionKind::SinusoidalFairseq { padding_idx } => {
                    let pad = padding_idx as usize;
                    let rows = pad + 1 + max;
                    let t = fairseq_sinusoidal_table(rows, d, pad);
                    Ok(be.upload(&Tensor::from_f32(t, [rows, d])?)?)
                }
            }
        };
        let emb_norm = |stack: &str| -> Result<Option<Norm>> {
            arch.layernorm_embedding
                .then(|| Norm::load(&vb, &format!("model.{stack}.layernorm_embedding"), d, be))
                .transpose()
        };
        let final_norm = |stack: &str| -> Result<Option<Norm>> {
            arch.final_layer_norm
                .then(|| Norm::load(&vb, &format!("model.{stack}.layer_norm"), d, be))
                .transpose()
        };
        let encoder_embed = Embeddings {
            tokens: enc_tokens,
            positions: positions("encoder")?,
            norm: emb_norm("encoder")?,
        };
        let decoder_embed = Embeddings {
            tokens: dec_tokens.clone(),
            positions: positions("decoder")?,
            norm: emb_norm("decoder")?,
        };

        let mut encoder = Vec::with_capacity(cfg.encoder_layers);
        for i in 0..cfg.encoder_layers {
            let l = vb.pp("model.encoder.layers").pp(i);
            encoder.push(EncoderLayer {
                self_attn: load_self_attention(&l.pp("self_attn"), d, dtype, be)?,
                self_norm: Norm::load(&l, "self_attn_layer_norm", d, be)?,
                ffn: FeedForward::load(&l, d, cfg.encoder_ffn_dim, dtype, be)?,
                ffn_norm: Norm::load(&l, "final_layer_norm", d, be)?,
            });
        }
        let mut decoder = Vec::with_capacity(cfg.decoder_layers);
        for i in 0..cfg.decoder_layers {
            let l = vb.pp("model.decoder.layers").pp(i);
            decoder.push(DecoderLayer {
                self_attn: load_self_attention(&l.pp("self_attn"), d, dtype, be)?,
                self_norm: Norm::load(&l, "self_attn_layer_norm", d, be)?,
                cross_attn: load_attention(&l.pp("encoder_attn"), d, dtype, be)?,
                cross_norm: Norm::load(&l, "encoder_attn_layer_norm", d, be)?,
                ffn: FeedForward::load(&l, d, cfg.decoder_ffn_dim, dtype, be)?,
                ffn_norm: Norm::load(&l, "final_layer_norm", d, be)?,
            });
        }
        let encoder_norm = final_norm("encoder")?;
        let decoder_norm = final_norm("decoder")?;

        // lm_head: a stored lm_head.weight that differs from the embedding wins (HF
        // unties then); else the (decoder) embedding when tied.
        let untied = !arch.tied_lm_head || stored_distinct(ckpt, "lm_head.weight", tie_target);
        let lm_weight = lm_head_weight(&vb, untied, &dec_tokens, tie_target, &[vt, d], dtype, be)?;
        let logits_bias = if arch.final_logits_bias {
            vb.get_opt("final_logits_bias", &[1, vt], DType::F32)?
                .map(|t| -> Result<Tensor> { Ok(be.upload(&t.reshape([vt])?)?) })
                .transpose()?
        } else {
            None
        };

        let eos = cfg
            .eos_token_id
            .as_ref()
            .map(TokenIds::to_vec)
            .unwrap_or_default();
        let pad = cfg
            .pad_token_id
            .or_else(|| eos.first().copied())
            .unwrap_or(0);
        let spec = ModelSpec {
            vocab_size: vt,
            // HF: decoder_start_token_id, else bos_token_id.
            decoder_start_token_id: cfg
                .decoder_start_token_id
                .or(cfg.bos_token_id)
                .unwrap_or(pad),
            eos_token_id: eos,
            pad_token_id: pad,
            max_target_positions: Some(max),
            max_source_positions: Some(max),
        };
        Ok(BartModel {
            layer_ranges: LayerRanges::new(encoder.len(), decoder.len()),
            spec,
            arch,
            d_model: d,
            encoder_heads: cfg.encoder_attention_heads,
            decoder_heads: cfg.decoder_attention_heads,
            encoder_ffn: cfg.encoder_ffn_dim,
            decoder_ffn: cfg.decoder_ffn_dim,
            max_positions: max,
            encoder_embed,
            decoder_embed,
            encoder,
            decoder,
            encoder_norm,
            decoder_norm,
            lm_head: Linear::from_weight(lm_weight, logits_bias),
            attn_dtype: attention_operand_dtype(dtype),
            backend,
        })
    }

    /// The architecture facts this model runs with.
    pub fn arch(&self) -> &BartArch {
        &self.arch
    }

    fn params<'a>(
        &self,
        heads: usize,
        q_offset: usize,
        kv_len: usize,
        causal: bool,
    ) -> AttentionParams<'a> {
        let head_dim = self.d_model / heads;
        let scale = (head_dim as f64).powf(-0.5) as f32;
        attention_params(
            heads,
            head_dim,
            scale,
            q_offset,
            kv_len,
            causal,
            self.attn_dtype,
        )
    }

    fn norm(&self, x: &Tensor, n: &Norm, out: &mut Tensor) -> encdec_core::Result<()> {
        self.backend.norm(
            self.arch.norm,
            x,
            &n.weight,
            Some(&n.bias),
            self.arch.norm_eps,
            out,
        )
    }

    /// Token embedding (scaled), plus positions, plus `layernorm_embedding`, then
    /// the first sublayer's input. Pre-LN: `h` = residual stream, `x` = `first(h)`
    /// (the first sublayer's LayerNorm, or the final one for an empty stack).
    /// Post-LN: `x` = residual stream and sublayer input.
    #[allow(clippy::too_many_arguments)]
    fn embed(
        &self,
        emb: &Embeddings,
        ids: &Tensor,
        pos: &Tensor,
        first: Option<&Norm>,
        h: &mut Tensor,
        x: &mut Tensor,
        p: &mut Tensor,
    ) -> encdec_core::Result<()> {
        let be: &dyn Backend = &*self.backend;
        be.embedding(ids, &emb.tokens, self.arch.embed_scale, h)?;
        be.embedding(pos, &emb.positions, 1.0, p)?;
        be.add_assign(h, p)?;
        if let Some(n) = &emb.norm {
            self.norm(h, n, x)?;
            std::mem::swap(h, x);
        }
        // now h holds the stream
        if self.arch.pre_norm {
            match first {
                Some(n) => self.norm(h, n, x),
                None => Err(invalid(
                    "pre-LN stack without a LayerNorm to start from".into(),
                )),
            }
        } else {
            std::mem::swap(h, x);
            Ok(())
        }
    }

    /// Where this model's residual stream is (pre- or post-LN).
    fn stream(&self) -> Stream {
        Stream::of(self.arch.pre_norm)
    }

    /// Closes a sublayer that added its output to the stream (`h` pre-LN, `x`
    /// post-LN; [`Stream`]). Pre-LN: `x = next(h)` with `next` the following
    /// sublayer's LayerNorm (or the stack's final one). Post-LN: `x = this(x)`
    /// with `this` the sublayer's own LayerNorm (`h` is scratch).
    fn close(
        &self,
        h: &mut Tensor,
        x: &mut Tensor,
        this: &Norm,
        next: Option<&Norm>,
    ) -> encdec_core::Result<()> {
        if self.arch.pre_norm {
            let n = next.ok_or_else(|| invalid("pre-LN stack without a final LayerNorm".into()))?;
            self.norm(h, n, x)
        } else {
            self.norm(x, this, h)?;
            std::mem::swap(h, x);
            Ok(())
        }
    }

    /// Post-LN stacks with a final LayerNorm (no supported class has one, kept for
    /// completeness): `x = final(x)`.
    fn finish_post(
        &self,
        norm: Option<&Norm>,
        h: &mut Tensor,
        x: &mut Tensor,
    ) -> encdec_core::Result<()> {
        if let (false, Some(n)) = (self.arch.pre_norm, norm) {
            self.norm(x, n, h)?;
            std::mem::swap(h, x);
        }
        Ok(())
    }
}

/// What a BART-family decode step adds to [`StepScratch`].
#[derive(Debug)]
struct StepBuffers {
    /// u32 `[rows]`: the position-table rows of the step's tokens (host), and
    /// on the backend.
    pos: Tensor,
    pos_on_backend: Tensor,
    /// `[rows, 1, d]`: their position embeddings.
    p: Tensor,
    /// `[rows, 1, ffn]`: the FFN's hidden layer.
    f: Tensor,
}

impl Default for StepBuffers {
    fn default() -> Self {
        StepBuffers {
            pos: Tensor::zeros([0], DType::U32),
            pos_on_backend: Tensor::zeros([0], DType::U32),
            p: empty_f32(),
            f: empty_f32(),
        }
    }
}

impl Seq2SeqModel for BartModel {
    fn spec(&self) -> &ModelSpec {
        &self.spec
    }

    fn backend(&self) -> &dyn Backend {
        &*self.backend
    }

    fn encode(&self, sources: &[Vec<u32>]) -> encdec_core::Result<EncoderOutput> {
        let be: &dyn Backend = &*self.backend;
        // Padding with pad_token_id also keeps fairseq positions (which skip pad
        // tokens) equal to HF's.
        let src = PaddedSources::new("BART", sources, self.spec.pad_token_id)?;
        let (b, s) = (src.rows, src.len);
        if s > self.max_positions {
            return Err(invalid(format!(
                "source of {s} tokens is longer than the {} positions of the model \
                 (max_position_embeddings)",
                self.max_positions
            )));
        }
        let (d, ff) = (self.d_model, self.encoder_ffn);
        let mut pos = vec![0u32; b * s];
        for r in 0..b {
            position_ids(
                self.arch.positions,
                &src.ids[r * s..(r + 1) * s],
                0,
                &mut pos[r * s..(r + 1) * s],
            );
        }
        let ids = be.upload(&Tensor::from_u32(src.ids, [b * s])?)?;
        let pos = be.upload(&Tensor::from_u32(pos, [b * s])?)?;
        let key_mask = be.upload(&Tensor::from_f32(src.key_mask, [b, s])?)?;

        let z = |shape: &[usize]| be.zeros(shape, DType::F32);
        let (mut h, mut x, mut p) = (z(&[b, s, d])?, z(&[b, s, d])?, z(&[b, s, d])?);
        // q/k/v, attention output and FFN inner activations: half on a backend
        // whose kernels round them to half anyway.
        let act = be.activation_dtype(self.attn_dtype);
        let mut attn = AttentionBuffers::self_attention(be, &[b, s], d, act)?;
        let mut f = be.zeros(&[b, s, ff], act)?;

        let first = self
            .encoder
            .first()
            .map(|l| &l.self_norm)
            .or(self.encoder_norm.as_ref());
        self.embed(
            &self.encoder_embed,
            &ids,
            &pos,
            first,
            &mut h,
            &mut x,
            &mut p,
        )?;
        drop((ids, pos, p));
        let mut params = self.params(self.encoder_heads, 0, s, /*causal=*/ false);
        params.key_mask = Some(&key_mask);
        for (i, l) in self.encoder.iter().enumerate() {
            let _range = self.layer_ranges.encoder(be, i);
            let mut io = Residual::of(self.stream(), &mut h, &mut x);
            l.self_attn.forward(be, &mut io, &params, &mut attn)?;
            self.close(&mut h, &mut x, &l.self_norm, Some(&l.ffn_norm))?;

            let mut io = Residual::of(self.stream(), &mut h, &mut x);
            l.ffn.forward(be, self.arch.activation, &mut io, &mut f)?;
            let next = self
                .encoder
                .get(i + 1)
                .map(|n| &n.self_norm)
                .or(self.encoder_norm.as_ref());
            self.close(&mut h, &mut x, &l.ffn_norm, next)?;
        }
        self.finish_post(self.encoder_norm.as_ref(), &mut h, &mut x)?;
        drop((h, attn, f));

        let cross = self.decoder.iter().map(|l| &l.cross_attn);
        let cache_dtype = be.kv_cache_dtype(self.attn_dtype);
        encoder_output(be, x, key_mask, src.lengths, cross, cache_dtype)
    }

    fn start(
        &self,
        enc: &EncoderOutput,
        source_of_row: &[u32],
        capacity: usize,
    ) -> encdec_core::Result<DecoderState> {
        check_start("BART", enc, source_of_row, self.decoder.len())?;
        if capacity > self.max_positions {
            return Err(invalid(format!(
                "BART start: room for {capacity} decoder tokens requested but the model has {} \
                 positions (max_position_embeddings)",
                self.max_positions
            )));
        }
        new_decoder_state::<StepBuffers>(
            &*self.backend,
            source_of_row,
            capacity,
            self.decoder.len(),
            self.d_model,
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
        check_logits_on_backend("BART", &*self.backend, logits)?;
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
        check_logits_on_backend("BART", &*self.backend, logits)?;
        self.decode(enc, state, tokens, logits, Some(then))
    }

    fn select_rows(&self, state: &mut DecoderState, rows: &[u32]) -> encdec_core::Result<()> {
        select_rows::<StepBuffers>("BART", &*self.backend, state, rows, self.d_model)
    }

    fn cross_attention(
        &self,
        source: &[u32],
        target: &[u32],
        layer: Option<usize>,
    ) -> encdec_core::Result<(usize, Tensor)> {
        let shape = {
            let p = self.params(self.decoder_heads, 0, 0, false);
            AttentionShape {
                layers: self.decoder.len(),
                heads: p.num_heads,
                head_dim: p.head_dim,
                scale: p.scale,
            }
        };
        teacher_forced_cross_attention::<StepBuffers>(self, &shape, source, target, layer)
    }
}

impl BartModel {
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
            "BART",
            state,
            tokens,
            logits,
            self.spec.vocab_size,
            |st, sc, lg| self.step_with(enc, st, tokens, lg, sc, then),
        )
    }

    /// One decoder step with the scratch taken out of `state`.
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
        let (d, ff) = (self.d_model, self.decoder_ffn);
        let len = state.len;

        sc.ensure(be, r, d, d)?;
        ensure_f32(be, &mut sc.extra.p, &[r, 1, d])?;
        ensure_f32(be, &mut sc.extra.f, &[r, 1, ff])?;

        sc.stage_inputs(be, tokens, len)?;
        {
            let pos = host_u32(&mut sc.extra.pos, r)?;
            for (i, &t) in tokens.iter().enumerate() {
                position_ids(self.arch.positions, &[t], len, &mut pos[i..i + 1]);
            }
        }
        drop(copy_to_backend(
            be,
            &sc.extra.pos,
            &mut sc.extra.pos_on_backend,
        )?);
        run_step(be, enc, state, sc, logits, then, |state, sc, logits| {
            self.step_ops(enc, state, sc, logits)
        })
    }

    /// The ops of a decoder step over the staged inputs (token and position
    /// ids, the self-attention's positions): the backend may record them once
    /// and replay them.
    fn step_ops(
        &self,
        enc: &EncoderOutput,
        state: &mut DecoderState,
        sc: &mut StepScratch<StepBuffers>,
        logits: Option<&mut Tensor>,
    ) -> encdec_core::Result<()> {
        let be: &dyn Backend = &*self.backend;
        let len = state.len;
        let ids = sc.step_ids();
        let pos = sc.extra.pos_on_backend.clone();
        let first = self
            .decoder
            .first()
            .map(|l| &l.self_norm)
            .or(self.decoder_norm.as_ref());
        self.embed(
            &self.decoder_embed,
            &ids,
            &pos,
            first,
            &mut sc.h,
            &mut sc.x,
            &mut sc.extra.p,
        )?;
        drop((ids, pos));

        let heads = self.decoder_heads;
        let self_params = self.params(heads, len, len + 1, /*causal=*/ true);
        let mut cross_params = self.params(heads, 0, enc.src_len, /*causal=*/ false);
        cross_params.key_mask = Some(&enc.key_mask);
        cross_params.kv_index = Some(&state.kv_index);

        for (i, l) in self.decoder.iter().enumerate() {
            let _range = self.layer_ranges.decoder(be, i);
            let (cache_k, cache_v) = (&mut state.self_k[i], &mut state.self_v[i]);
            let stream = self.stream();
            sc.self_attention(be, &l.self_attn, cache_k, cache_v, &self_params, stream)?;
            self.close(&mut sc.h, &mut sc.x, &l.self_norm, Some(&l.cross_norm))?;

            sc.cross_attention(be, &l.cross_attn, enc, i, &cross_params, stream)?;
            self.close(&mut sc.h, &mut sc.x, &l.cross_norm, Some(&l.ffn_norm))?;

            let mut io = Residual::of(stream, &mut sc.h, &mut sc.x);
            l.ffn
                .forward(be, self.arch.activation, &mut io, &mut sc.extra.f)?;
            let next = self
                .decoder
                .get(i + 1)
                .map(|n| &n.self_norm)
                .or(self.decoder_norm.as_ref());
            self.close(&mut sc.h, &mut sc.x, &l.ffn_norm, next)?;
        }
        self.finish_post(self.decoder_norm.as_ref(), &mut sc.h, &mut sc.x)?;
        sc.project_logits(be, &self.lm_head, logits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/fixtures")
            .join(name)
    }

    /// The pegasus fixture stores the table HF's `create_weight` made; ours is equal.
    #[test]
    fn sinusoidal_table_equals_the_stored_pegasus_table() {
        let ckpt = Checkpoint::open(fixture("pegasus")).unwrap();
        let stored = ckpt
            .load("model.encoder.embed_positions.weight", DType::F32)
            .unwrap()
            .to_f32_vec()
            .unwrap();
        let ours = sinusoidal_table(128, 32);
        let worst = ours
            .iter()
            .zip(&stored)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(worst <= 1e-7, "max abs difference {worst}");
    }

    /// Values of transformers 5.23 `M2M100SinusoidalPositionalEmbedding.get_embedding(130,
    /// 32, padding_idx=1)` (torch 2, CPU), as f32 bit patterns.
    #[test]
    fn fairseq_table_matches_hf() {
        let t = fairseq_sinusoidal_table(130, 32, 1);
        let want: [((usize, usize), u32); 11] = [
            ((0, 0), 0),
            ((1, 5), 0),
            ((2, 0), 1063831479),
            ((2, 17), 1055933284),
            ((57, 3), 1052971899),
            ((129, 0), 3192266212),
            ((129, 15), 1012095236),
            ((129, 16), 3212519867),
            ((129, 31), 1065351820),
            ((100, 7), 1064979584),
            ((100, 23), 1045882770),
        ];
        for ((r, c), bits) in want {
            let got = t[r * 32 + c];
            let w = f32::from_bits(bits);
            assert!((got - w).abs() <= 2e-7, "[{r}, {c}]: got {got}, HF {w}");
        }
        assert!(t[32..64].iter().all(|&x| x == 0.0), "padding row is zero");
    }

    #[test]
    fn position_ids_follow_hf() {
        let mut out = [0u32; 5];
        position_ids(
            PositionKind::Learned { offset: 2 },
            &[5, 6, 7, 1, 1],
            0,
            &mut out,
        );
        assert_eq!(out, [2, 3, 4, 5, 6]);
        position_ids(PositionKind::Sinusoidal, &[5, 6, 7, 1, 1], 3, &mut out);
        assert_eq!(out, [3, 4, 5, 6, 7]);
        // fairseq: pad tokens read the zero row padding_idx and are not counted
        let fs = PositionKind::SinusoidalFairseq { padding_idx: 1 };
        position_ids(fs, &[5, 6, 1, 7, 1], 0, &mut out);
        assert_eq!(out, [2, 3, 1, 4, 1]);
        let mut one = [0u32; 1];
        position_ids(fs, &[9], 4, &mut one);
        assert_eq!(one, [6], "decoder step after 4 tokens: padding_idx + 1 + 4");
        position_ids(fs, &[1], 4, &mut one);
        assert_eq!(one, [1], "a pad token fed to the decoder");
    }
}
