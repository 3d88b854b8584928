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

use std::path::Path;

use encdec_core::{Activation, NormKind};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::config::{
    invalid, require_positive, set_default, unsupported, FamilyConfig, TensorKind, TensorSpec,
    TokenIds,
};
use crate::error::Result;

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
                return Err(invalid(
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
            return Err(invalid(
                path,
                "m2m_100 positions are counted from pad_token_id, which is null",
            ));
        }
        Ok(())
    }
}
