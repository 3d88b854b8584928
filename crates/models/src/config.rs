//! `config.json` parsing: the [`ModelConfig`] enum over the architecture families,
//! and what the families share (token-id fields, tensor specs, size estimates).
//!
//! Each family's config struct (`t5::T5Config`, `bart::BartConfig`) keeps HF's field
//! names. One struct covers several `model_type`s whose HF defaults differ (t5/mt5;
//! bart/mbart/pegasus/marian/m2m_100), so parsing goes in two steps: the JSON is read
//! into a map, the defaults of its `model_type` fill the keys it lacks, and only then
//! is the struct deserialised (its own serde defaults are those of t5 / bart). A
//! type error is reported with serde's line and column.

use std::path::{Path, PathBuf};

use encdec_core::DType;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::bart::BartConfig;
use crate::error::{ModelError, Result};
use crate::safetensors::quantises_to_int8;
use crate::t5::T5Config;

/// The `model_type`s we run, as spelled in `config.json`.
pub const SUPPORTED_MODEL_TYPES: &[&str] =
    &["t5", "mt5", "bart", "mbart", "pegasus", "marian", "m2m_100"];

pub(crate) fn supported_list() -> String {
    SUPPORTED_MODEL_TYPES.join(", ")
}

/// A token id field that HF allows to be one id or a list (`eos_token_id`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TokenIds {
    One(u32),
    Many(Vec<u32>),
}

impl TokenIds {
    pub fn to_vec(&self) -> Vec<u32> {
        match self {
            TokenIds::One(i) => vec![*i],
            TokenIds::Many(v) => v.clone(),
        }
    }
    /// The first id (HF uses it where one id is needed).
    pub fn first(&self) -> Option<u32> {
        match self {
            TokenIds::One(i) => Some(*i),
            TokenIds::Many(v) => v.first().copied(),
        }
    }
}

/// What a tensor is, which decides how it may be stored (int8 or not).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum TensorKind {
    /// `nn.Linear` weight `[out, in]`.
    Linear,
    /// Token embedding table `[vocab, d_model]`.
    Embedding,
    /// Norm weight or bias `[d]`.
    Norm,
    /// Linear bias `[out]`.
    Bias,
    /// Learned or sinusoidal position table `[positions, d_model]`.
    PositionTable,
    /// T5 relative attention bias `[buckets, heads]`.
    RelativeBias,
    /// `final_logits_bias` `[1, vocab]` (a buffer, not a parameter).
    LogitsBias,
}

impl TensorKind {
    /// Whether the int8 path stores this kind quantised (linear weights and embeddings).
    pub fn int8_quantised(self) -> bool {
        matches!(self, TensorKind::Linear | TensorKind::Embedding)
    }
}

/// One tensor a checkpoint of a config holds or may hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TensorSpec {
    /// HF name as `*ForConditionalGeneration.state_dict()` spells it.
    pub name: String,
    pub shape: Vec<usize>,
    pub kind: TensorKind,
    /// A checkpoint without it is rejected. Optional tensors (tied copies, sinusoidal
    /// tables we recompute, `final_logits_bias`) are shape-checked when present.
    pub required: bool,
    /// Counted by HF's `model.num_parameters()`.
    pub parameter: bool,
}

impl TensorSpec {
    pub(crate) fn new(name: impl Into<String>, shape: Vec<usize>, kind: TensorKind) -> Self {
        TensorSpec {
            name: name.into(),
            shape,
            kind,
            required: true,
            parameter: true,
        }
    }
    /// Present in some checkpoints, not needed (a tied copy); not a parameter.
    pub(crate) fn optional(mut self) -> Self {
        self.required = false;
        self.parameter = false;
        self
    }
    /// An HF parameter that checkpoints may omit because we recompute it.
    pub(crate) fn recomputed(mut self) -> Self {
        self.required = false;
        self
    }
    pub fn elem_count(&self) -> u64 {
        self.shape.iter().map(|&d| d as u64).product()
    }
    /// Bytes when weights are stored as `dtype` (int8: see [`ModelConfig::weight_bytes`]).
    pub fn bytes(&self, dtype: DType) -> u64 {
        let n = self.elem_count();
        match dtype {
            DType::F32 | DType::U32 => 4 * n,
            DType::F16 | DType::BF16 => 2 * n,
            DType::I8 => {
                if self.kind.int8_quantised() && quantises_to_int8(&self.shape) {
                    let cols = self.shape.last().copied().unwrap_or(1).max(1) as u64;
                    n + 4 * (n / cols)
                } else {
                    4 * n
                }
            }
        }
    }
}

/// The config of a supported checkpoint.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelConfig {
    /// t5 (v1.0, v1.1, flan) and mt5.
    T5(T5Config),
    /// bart, mbart, pegasus, marian, m2m_100 (and NLLB, which is m2m_100).
    Bart(BartConfig),
}

/// A family config's parse hooks.
pub(crate) trait FamilyConfig: Sized + DeserializeOwned {
    /// Fills the HF defaults of `model_type` for keys `obj` lacks.
    fn apply_defaults(model_type: &str, obj: &mut Map<String, Value>);
    /// Rejects settings we do not implement.
    fn validate(&self, path: &Path) -> Result<()>;
}

/// Inserts `key: v` if `obj` lacks `key` (an explicit `null` is kept: HF reads it as None).
pub(crate) fn set_default(obj: &mut Map<String, Value>, key: &str, v: Value) {
    if !obj.contains_key(key) {
        obj.insert(key.to_string(), v);
    }
}

/// HF's `attribute_map` aliases (alias, canonical key) per family.
fn aliases(model_type: &str) -> &'static [(&'static str, &'static str)] {
    match model_type {
        "t5" | "mt5" => &[
            ("hidden_size", "d_model"),
            ("num_attention_heads", "num_heads"),
            ("num_hidden_layers", "num_layers"),
            ("head_dim", "d_kv"),
        ],
        _ => &[
            ("num_attention_heads", "encoder_attention_heads"),
            ("hidden_size", "d_model"),
            ("num_hidden_layers", "encoder_layers"),
        ],
    }
}

/// Moves an alias (`num_hidden_layers`) to its canonical key (`encoder_layers`) when
/// only the alias is given; both given with different values is an error (HF would
/// silently let the alias win).
fn resolve_aliases(model_type: &str, obj: &mut Map<String, Value>, path: &Path) -> Result<()> {
    for (alias, key) in aliases(model_type) {
        let Some(a) = obj.get(*alias).cloned() else {
            continue;
        };
        match obj.get(*key) {
            None => {
                obj.insert(key.to_string(), a);
            }
            Some(k) if *k != a => {
                return Err(invalid(
                    path,
                    format!("{alias} ({a}) and {key} ({k}) disagree; {alias} is an alias of {key}"),
                ))
            }
            Some(_) => {}
        }
    }
    Ok(())
}

fn parse_family<T: FamilyConfig>(
    text: &str,
    mut obj: Map<String, Value>,
    model_type: &str,
    path: &Path,
) -> Result<T> {
    resolve_aliases(model_type, &mut obj, path)?;
    T::apply_defaults(model_type, &mut obj);
    let cfg: T = match serde_json::from_value(Value::Object(obj)) {
        Ok(c) => c,
        Err(e) => {
            // Re-read from the text for serde's line/column where it can give one.
            let message = match serde_json::from_str::<T>(text) {
                Err(located) => located.to_string(),
                Ok(_) => e.to_string(),
            };
            return Err(ModelError::InvalidJson {
                path: path.to_path_buf(),
                message,
            });
        }
    };
    cfg.validate(path)?;
    Ok(cfg)
}

impl ModelConfig {
    /// Reads `<dir>/config.json`.
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let meta = std::fs::metadata(dir).map_err(|source| ModelError::ReadDir {
            dir: dir.to_path_buf(),
            source,
        })?;
        if !meta.is_dir() {
            return Err(ModelError::ReadDir {
                dir: dir.to_path_buf(),
                source: std::io::Error::other("not a directory"),
            });
        }
        let path = dir.join("config.json");
        if !path.is_file() {
            return Err(ModelError::MissingConfig {
                dir: dir.to_path_buf(),
            });
        }
        Self::from_file(&path)
    }

    /// Reads a config.json file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| ModelError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_json_with_path(&text, path)
    }

    /// Parses config.json text (errors name the file as `<config.json string>`).
    pub fn from_json_str(text: &str) -> Result<Self> {
        Self::from_json_with_path(text, Path::new("<config.json string>"))
    }

    /// Parses config.json text; `path` is named in errors.
    pub fn from_json_with_path(text: &str, path: &Path) -> Result<Self> {
        let v: Value = serde_json::from_str(text).map_err(|e| ModelError::InvalidJson {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        let Value::Object(obj) = v else {
            return Err(ModelError::InvalidJson {
                path: path.to_path_buf(),
                message: "the top level is not a JSON object".into(),
            });
        };
        let model_type = match obj.get("model_type") {
            Some(Value::String(s)) => s.clone(),
            Some(other) => {
                return Err(ModelError::InvalidJson {
                    path: path.to_path_buf(),
                    message: format!("\"model_type\" must be a string, found {other}"),
                })
            }
            None => {
                return Err(ModelError::MissingModelType {
                    path: path.to_path_buf(),
                    supported: supported_list(),
                })
            }
        };
        match model_type.as_str() {
            "t5" | "mt5" => Ok(ModelConfig::T5(parse_family(text, obj, &model_type, path)?)),
            "bart" | "mbart" | "pegasus" | "marian" | "m2m_100" => Ok(ModelConfig::Bart(
                parse_family(text, obj, &model_type, path)?,
            )),
            _ => Err(ModelError::UnknownModelType {
                path: path.to_path_buf(),
                model_type,
                supported: supported_list(),
            }),
        }
    }

    pub fn model_type(&self) -> &str {
        match self {
            ModelConfig::T5(c) => &c.model_type,
            ModelConfig::Bart(c) => &c.model_type,
        }
    }

    /// The HF class we mirror (`T5ForConditionalGeneration`, `MarianMTModel`, ...).
    pub fn architecture(&self) -> &'static str {
        match self {
            ModelConfig::T5(c) => c.architecture(),
            ModelConfig::Bart(c) => c.architecture(),
        }
    }

    /// Every tensor a checkpoint of this config holds or may hold.
    pub fn tensor_specs(&self) -> Vec<TensorSpec> {
        match self {
            ModelConfig::T5(c) => c.tensor_specs(),
            ModelConfig::Bart(c) => c.tensor_specs(),
        }
    }

    /// The HF names and shapes a checkpoint must contain.
    pub fn expected_tensors(&self) -> Vec<(String, Vec<usize>)> {
        self.tensor_specs()
            .into_iter()
            .filter(|s| s.required)
            .map(|s| (s.name, s.shape))
            .collect()
    }

    /// Tensors a checkpoint may contain (tied copies, recomputed sinusoidal tables,
    /// `final_logits_bias`); shape-checked when present, never required.
    pub fn optional_tensors(&self) -> Vec<(String, Vec<usize>)> {
        self.tensor_specs()
            .into_iter()
            .filter(|s| !s.required)
            .map(|s| (s.name, s.shape))
            .collect()
    }

    /// The parameter count HF's `model.num_parameters()` reports for the
    /// `*ForConditionalGeneration` model of this config loaded from its checkpoint:
    /// tied tensors counted once, buffers (`final_logits_bias`, M2M100's sinusoidal
    /// table) not counted, the sinusoidal `embed_positions` Parameters of Marian and
    /// Pegasus counted.
    pub fn num_parameters(&self) -> u64 {
        self.tensor_specs()
            .iter()
            .filter(|s| s.parameter)
            .map(TensorSpec::elem_count)
            .sum()
    }

    /// Bytes of the parameters counted by [`ModelConfig::num_parameters`] stored as
    /// `dtype`. int8: linear weights and embeddings take 1 byte per element plus a
    /// 4-byte scale per row; everything else (norms, biases, position tables, relative
    /// bias) stays f32.
    pub fn weight_bytes(&self, dtype: DType) -> u64 {
        self.tensor_specs()
            .iter()
            .filter(|s| s.parameter)
            .map(|s| s.bytes(dtype))
            .sum()
    }

    /// The numbers `encdec info` prints.
    pub fn info(&self) -> ModelInfo {
        let (
            encoder_layers,
            decoder_layers,
            d_model,
            heads,
            decoder_heads,
            ffn_dim,
            vocab_size,
            d_kv,
        ) = match self {
            ModelConfig::T5(c) => (
                c.num_layers,
                c.num_decoder_layers,
                c.d_model,
                c.num_heads,
                c.num_heads,
                c.d_ff,
                c.vocab_size,
                c.d_kv,
            ),
            ModelConfig::Bart(c) => (
                c.encoder_layers,
                c.decoder_layers,
                c.d_model,
                c.encoder_attention_heads,
                c.decoder_attention_heads,
                c.encoder_ffn_dim,
                c.vocab_size,
                c.d_model / c.encoder_attention_heads.max(1),
            ),
        };
        ModelInfo {
            architecture: self.architecture().to_string(),
            model_type: self.model_type().to_string(),
            encoder_layers,
            decoder_layers,
            d_model,
            heads,
            decoder_heads,
            d_kv,
            ffn_dim,
            vocab_size,
            params: self.num_parameters(),
            bytes_f32: self.weight_bytes(DType::F32),
            bytes_f16: self.weight_bytes(DType::F16),
            bytes_int8: self.weight_bytes(DType::I8),
        }
    }

    pub fn as_t5(&self) -> Option<&T5Config> {
        match self {
            ModelConfig::T5(c) => Some(c),
            _ => None,
        }
    }
    pub fn as_bart(&self) -> Option<&BartConfig> {
        match self {
            ModelConfig::Bart(c) => Some(c),
            _ => None,
        }
    }

    /// `pad_token_id` (None when the config sets it to null).
    pub fn pad_token_id(&self) -> Option<u32> {
        match self {
            ModelConfig::T5(c) => c.pad_token_id,
            ModelConfig::Bart(c) => c.pad_token_id,
        }
    }
    /// `eos_token_id` as a list (HF allows one id or several).
    pub fn eos_token_ids(&self) -> Vec<u32> {
        let e = match self {
            ModelConfig::T5(c) => &c.eos_token_id,
            ModelConfig::Bart(c) => &c.eos_token_id,
        };
        e.as_ref().map(TokenIds::to_vec).unwrap_or_default()
    }
    pub fn bos_token_id(&self) -> Option<u32> {
        match self {
            ModelConfig::T5(c) => c.bos_token_id,
            ModelConfig::Bart(c) => c.bos_token_id,
        }
    }
    /// `decoder_start_token_id`; T5 falls back to `pad_token_id` as HF's T5 docs say.
    pub fn decoder_start_token_id(&self) -> Option<u32> {
        match self {
            ModelConfig::T5(c) => c.decoder_start_token_id.or(c.pad_token_id),
            ModelConfig::Bart(c) => c.decoder_start_token_id,
        }
    }
    pub fn forced_bos_token_id(&self) -> Option<u32> {
        match self {
            ModelConfig::T5(_) => None,
            ModelConfig::Bart(c) => c.forced_bos_token_id,
        }
    }
    pub fn forced_eos_token_id(&self) -> Option<u32> {
        match self {
            ModelConfig::T5(_) => None,
            ModelConfig::Bart(c) => c.forced_eos_token_id.as_ref().and_then(TokenIds::first),
        }
    }
    /// Size of the output vocabulary (rows of `lm_head`).
    pub fn target_vocab_size(&self) -> usize {
        match self {
            ModelConfig::T5(c) => c.vocab_size,
            ModelConfig::Bart(c) => c.target_vocab_size(),
        }
    }
}

/// Reads a JSON file (config.json, generation_config.json, ...) with this crate's
/// errors: the file named, serde's line and column for bad JSON. For the settings
/// [`ModelConfig`] does not type (`task_specific_params`, generation defaults).
pub fn read_json(path: impl AsRef<Path>) -> Result<Value> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path).map_err(|source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|e| ModelError::InvalidJson {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// A summary of a config for `encdec info`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ModelInfo {
    pub architecture: String,
    pub model_type: String,
    pub encoder_layers: usize,
    pub decoder_layers: usize,
    pub d_model: usize,
    /// Encoder attention heads.
    pub heads: usize,
    pub decoder_heads: usize,
    /// Per-head dimension.
    pub d_kv: usize,
    /// Encoder FFN inner dimension.
    pub ffn_dim: usize,
    pub vocab_size: usize,
    pub params: u64,
    pub bytes_f32: u64,
    pub bytes_f16: u64,
    pub bytes_int8: u64,
}

pub(crate) fn invalid(path: &Path, message: impl Into<String>) -> ModelError {
    ModelError::InvalidConfig {
        path: PathBuf::from(path),
        message: message.into(),
    }
}

pub(crate) fn unsupported(
    path: &Path,
    field: &str,
    value: impl ToString,
    reason: impl Into<String>,
) -> ModelError {
    ModelError::UnsupportedConfig {
        path: path.to_path_buf(),
        field: field.into(),
        value: value.to_string(),
        reason: reason.into(),
    }
}

/// Checks that named sizes are positive.
pub(crate) fn require_positive(path: &Path, fields: &[(&str, usize)]) -> Result<()> {
    for (name, v) in fields {
        if *v == 0 {
            return Err(invalid(path, format!("{name} must be positive, found 0")));
        }
    }
    Ok(())
}
