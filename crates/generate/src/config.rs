//! Generation settings resolved the way `transformers` 5 `generate` resolves them.
//!
//! Layers, lowest priority first (HF `GenerationMixin._prepare_generation_config`):
//!
//! 1. the global defaults of `GenerationConfig._get_default_generation_params`
//!    (max_length 20, top_k 50, ...);
//! 2. the checkpoint's generation config: `generation_config.json` when the
//!    directory has one (`GenerationConfig.from_pretrained`), else one built from
//!    `config.json` (`GenerationConfig.from_model_config`: its top-level generation
//!    keys, then those of a `decoder` / `generator` / `text_config` sub-config for
//!    keys still unset, and the legacy `force_bos_token_to_be_generated`);
//! 3. optionally `task_specific_params[task]` of `config.json` — an opt-in of this
//!    crate ([`GenerationOverrides::task`]): transformers 5 never applies
//!    `task_specific_params` on its own (v4 did it only in pipelines), so a plain
//!    `generate` on t5-small is greedy with 20 new tokens, exactly as HF;
//! 4. the caller's overrides (CLI flags).
//!
//! Then, as `generate` does: special tokens (`decoder_start_token_id` falls back to
//! `bos_token_id`, `pad_token_id` to the first EOS), and lengths for an
//! encoder-decoder (decoder prompt = the start token, length 1): `max_new_tokens`
//! gives `max_length = max_new_tokens + 1`; with no max length anywhere,
//! `max_length = 20 + 1` capped by the model's `max_position_embeddings`;
//! `min_new_tokens` gives `min_length = min_new_tokens + 1`.
//!
//! `max_length` and `min_length` therefore count the decoder start token, as in
//! HF: at most `max_length - 1` ids are generated.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use encdec_core::{Error, Result};
use serde_json::{json, Map, Value};

use crate::model::ModelSpec;

/// `early_stopping` of HF beam search.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EarlyStopping {
    /// Stop a source as soon as `num_beams` finished hypotheses exist.
    True,
    /// HF's default heuristic: stop when the best running beam, at its current
    /// length, cannot beat the worst finished one.
    #[default]
    False,
    /// Canonical beam search: the same test at the best reachable length.
    Never,
}

impl EarlyStopping {
    pub fn to_json(self) -> Value {
        match self {
            EarlyStopping::True => Value::Bool(true),
            EarlyStopping::False => Value::Bool(false),
            EarlyStopping::Never => Value::String("never".into()),
        }
    }
}

impl fmt::Display for EarlyStopping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EarlyStopping::True => "true",
            EarlyStopping::False => "false",
            EarlyStopping::Never => "never",
        })
    }
}

impl std::str::FromStr for EarlyStopping {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" => Ok(EarlyStopping::True),
            "false" | "0" | "no" => Ok(EarlyStopping::False),
            "never" => Ok(EarlyStopping::Never),
            _ => Err(Error::Invalid(format!(
                "early_stopping must be true, false or never (got '{s}')"
            ))),
        }
    }
}

/// Which decoding method `generate` runs (HF `GenerationConfig.get_generation_mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SearchMode {
    Greedy,
    Sample,
    BeamSearch,
    BeamSample,
}

/// Caller-supplied settings (CLI flags); `None` leaves the checkpoint's value.
/// The same struct is used internally for each configuration layer.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GenerationOverrides {
    pub max_length: Option<usize>,
    pub max_new_tokens: Option<usize>,
    pub min_length: Option<usize>,
    pub min_new_tokens: Option<usize>,
    pub num_beams: Option<usize>,
    pub num_return_sequences: Option<usize>,
    pub length_penalty: Option<f64>,
    pub early_stopping: Option<EarlyStopping>,
    pub no_repeat_ngram_size: Option<usize>,
    pub encoder_no_repeat_ngram_size: Option<usize>,
    pub repetition_penalty: Option<f64>,
    pub bad_words_ids: Option<Vec<Vec<u32>>>,
    pub forced_bos_token_id: Option<u32>,
    pub forced_eos_token_id: Option<Vec<u32>>,
    pub do_sample: Option<bool>,
    pub temperature: Option<f64>,
    pub top_k: Option<usize>,
    pub top_p: Option<f64>,
    pub seed: Option<u64>,
    pub decoder_start_token_id: Option<u32>,
    pub eos_token_id: Option<Vec<u32>>,
    pub pad_token_id: Option<u32>,
    pub bos_token_id: Option<u32>,
    /// Apply `task_specific_params[task]` of config.json (e.g. "summarization",
    /// "translation_en_to_de") between the checkpoint and the flags, as v4
    /// pipelines did; also yields the task's `prefix`.
    pub task: Option<String>,
}

/// The fully resolved settings `generate` runs with.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerationConfig {
    /// Longest decoder sequence, counting the decoder start token.
    pub max_length: usize,
    pub max_new_tokens: Option<usize>,
    /// Shortest decoder sequence (EOS is banned below it), counting the start token.
    pub min_length: usize,
    pub min_new_tokens: Option<usize>,
    pub num_beams: usize,
    pub num_return_sequences: usize,
    pub length_penalty: f64,
    pub early_stopping: EarlyStopping,
    pub no_repeat_ngram_size: usize,
    pub encoder_no_repeat_ngram_size: usize,
    pub repetition_penalty: f64,
    pub bad_words_ids: Option<Vec<Vec<u32>>>,
    pub forced_bos_token_id: Option<u32>,
    pub forced_eos_token_id: Option<Vec<u32>>,
    pub do_sample: bool,
    pub temperature: f64,
    /// 0 disables top-k.
    pub top_k: usize,
    pub top_p: f64,
    pub seed: Option<u64>,
    pub decoder_start_token_id: u32,
    /// Empty: no EOS (generation runs to `max_length`).
    pub eos_token_id: Vec<u32>,
    pub pad_token_id: Option<u32>,
    pub bos_token_id: Option<u32>,
    /// `prefix` of the applied task (see [`GenerationOverrides::task`]).
    pub task_prefix: Option<String>,
    /// vocab_size of config.json, when known (validation).
    pub vocab_size: Option<usize>,
    /// Where the generation settings came from (a file, or "defaults").
    pub source: String,
    origins: BTreeMap<&'static str, String>,
    warnings: Vec<String>,
}

const DEFAULT_MAX_LENGTH: usize = 20;

/// Model types whose config class has a `max_position_embeddings` default when
/// config.json leaves it out.
fn default_max_positions(model_type: &str) -> Option<usize> {
    match model_type {
        "bart" | "mbart" | "pegasus" | "marian" | "m2m_100" | "nllb_moe" | "plbart"
        | "blenderbot" | "blenderbot-small" | "fsmt" => Some(1024),
        "pegasus_x" => Some(16384),
        _ => None,
    }
}

/// The CLI flag of a setting, for error messages.
fn flag(field: &str) -> String {
    format!("--{}", field.replace('_', "-"))
}

// ---------------------------------------------------------------------------------
// JSON parsing of one layer
// ---------------------------------------------------------------------------------

struct Parser<'a> {
    file: &'a str,
}

impl Parser<'_> {
    fn err(&self, key: &str, want: &str, got: &Value) -> Error {
        Error::Invalid(format!("{}: `{key}` must be {want}, got {got}", self.file))
    }
    fn usize(&self, obj: &Map<String, Value>, key: &str) -> Result<Option<usize>> {
        match obj.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => match v.as_u64() {
                Some(n) => usize::try_from(n)
                    .map(Some)
                    .map_err(|_| self.err(key, "a non-negative integer", v)),
                None => match v.as_f64() {
                    // JSON written by Python may carry 4.0 for 4
                    Some(f) if f >= 0.0 && f.fract() == 0.0 && f < 1e15 => Ok(Some(f as usize)),
                    _ => Err(self.err(key, "a non-negative integer", v)),
                },
            },
        }
    }
    fn f64(&self, obj: &Map<String, Value>, key: &str) -> Result<Option<f64>> {
        match obj.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_f64()
                .map(Some)
                .ok_or_else(|| self.err(key, "a number", v)),
        }
    }
    fn bool(&self, obj: &Map<String, Value>, key: &str) -> Result<Option<bool>> {
        match obj.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(v) => Err(self.err(key, "true or false", v)),
        }
    }
    /// A token id; negative ids (some configs carry -1) are treated as unset.
    fn token(&self, obj: &Map<String, Value>, key: &str) -> Result<Option<u32>> {
        match obj.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => match v.as_i64() {
                Some(n) if n < 0 => Ok(None),
                Some(n) => u32::try_from(n)
                    .map(Some)
                    .map_err(|_| self.err(key, "a token id", v)),
                None => Err(self.err(key, "a token id", v)),
            },
        }
    }
    /// An id or a list of ids (eos_token_id, forced_eos_token_id); negative ids dropped.
    fn tokens(&self, obj: &Map<String, Value>, key: &str) -> Result<Option<Vec<u32>>> {
        match obj.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Array(items)) => {
                let mut out = Vec::with_capacity(items.len());
                for it in items {
                    match it.as_i64() {
                        Some(n) if n < 0 => {}
                        Some(n) => out.push(
                            u32::try_from(n)
                                .map_err(|_| self.err(key, "a list of token ids", it))?,
                        ),
                        None => return Err(self.err(key, "a list of token ids", it)),
                    }
                }
                Ok(Some(out))
            }
            Some(v) => Ok(self
                .token(obj, key)
                .map_err(|_| self.err(key, "a token id or a list of token ids", v))?
                .map(|t| vec![t])),
        }
    }
    fn bad_words(&self, obj: &Map<String, Value>, key: &str) -> Result<Option<Vec<Vec<u32>>>> {
        match obj.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Array(seqs)) => {
                let mut out = Vec::with_capacity(seqs.len());
                for s in seqs {
                    let Value::Array(ids) = s else {
                        return Err(self.err(key, "a list of lists of token ids", s));
                    };
                    let mut seq = Vec::with_capacity(ids.len());
                    for id in ids {
                        let n = id
                            .as_u64()
                            .and_then(|n| u32::try_from(n).ok())
                            .ok_or_else(|| self.err(key, "a list of lists of token ids", id))?;
                        seq.push(n);
                    }
                    out.push(seq);
                }
                Ok(Some(out))
            }
            Some(v) => Err(self.err(key, "a list of lists of token ids", v)),
        }
    }
    fn early_stopping(&self, obj: &Map<String, Value>, key: &str) -> Result<Option<EarlyStopping>> {
        match obj.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(true)) => Ok(Some(EarlyStopping::True)),
            Some(Value::Bool(false)) => Ok(Some(EarlyStopping::False)),
            Some(Value::String(s)) if s == "never" => Ok(Some(EarlyStopping::Never)),
            Some(v) => Err(self.err(key, "true, false or \"never\"", v)),
        }
    }

    /// The generation keys of one JSON object.
    fn layer(&self, obj: &Map<String, Value>) -> Result<GenerationOverrides> {
        Ok(GenerationOverrides {
            max_length: self.usize(obj, "max_length")?,
            max_new_tokens: self.usize(obj, "max_new_tokens")?,
            min_length: self.usize(obj, "min_length")?,
            min_new_tokens: self.usize(obj, "min_new_tokens")?,
            num_beams: self.usize(obj, "num_beams")?,
            num_return_sequences: self.usize(obj, "num_return_sequences")?,
            length_penalty: self.f64(obj, "length_penalty")?,
            early_stopping: self.early_stopping(obj, "early_stopping")?,
            no_repeat_ngram_size: self.usize(obj, "no_repeat_ngram_size")?,
            encoder_no_repeat_ngram_size: self.usize(obj, "encoder_no_repeat_ngram_size")?,
            repetition_penalty: self.f64(obj, "repetition_penalty")?,
            bad_words_ids: self.bad_words(obj, "bad_words_ids")?,
            forced_bos_token_id: self.token(obj, "forced_bos_token_id")?,
            forced_eos_token_id: self.tokens(obj, "forced_eos_token_id")?,
            do_sample: self.bool(obj, "do_sample")?,
            temperature: self.f64(obj, "temperature")?,
            top_k: self.usize(obj, "top_k")?,
            top_p: self.f64(obj, "top_p")?,
            seed: None,
            decoder_start_token_id: self.token(obj, "decoder_start_token_id")?,
            eos_token_id: self.tokens(obj, "eos_token_id")?,
            pad_token_id: self.token(obj, "pad_token_id")?,
            bos_token_id: self.token(obj, "bos_token_id")?,
            task: None,
        })
    }
}

fn as_object<'a>(v: &'a Value, file: &str) -> Result<&'a Map<String, Value>> {
    v.as_object()
        .ok_or_else(|| Error::Invalid(format!("{file}: expected a JSON object")))
}

/// `a.field = a.field.or(b.field)` for every field.
fn fill_unset(a: &mut GenerationOverrides, b: &GenerationOverrides) {
    macro_rules! fill {
        ($($f:ident),*) => { $( if a.$f.is_none() { a.$f = b.$f.clone(); } )* };
    }
    fill!(
        max_length,
        max_new_tokens,
        min_length,
        min_new_tokens,
        num_beams,
        num_return_sequences,
        length_penalty,
        early_stopping,
        no_repeat_ngram_size,
        encoder_no_repeat_ngram_size,
        repetition_penalty,
        bad_words_ids,
        forced_bos_token_id,
        forced_eos_token_id,
        do_sample,
        temperature,
        top_k,
        top_p,
        seed,
        decoder_start_token_id,
        eos_token_id,
        pad_token_id,
        bos_token_id
    );
}

/// Names of the fields a layer sets.
fn set_fields(l: &GenerationOverrides) -> Vec<&'static str> {
    let mut v = Vec::new();
    macro_rules! names {
        ($($f:ident),*) => { $( if l.$f.is_some() { v.push(stringify!($f)); } )* };
    }
    names!(
        max_length,
        max_new_tokens,
        min_length,
        min_new_tokens,
        num_beams,
        num_return_sequences,
        length_penalty,
        early_stopping,
        no_repeat_ngram_size,
        encoder_no_repeat_ngram_size,
        repetition_penalty,
        bad_words_ids,
        forced_bos_token_id,
        forced_eos_token_id,
        do_sample,
        temperature,
        top_k,
        top_p,
        seed,
        decoder_start_token_id,
        eos_token_id,
        pad_token_id,
        bos_token_id
    );
    v
}

/// HF `GenerationConfig.validate` errors (raised at load and after every update).
fn hf_validate(l: &GenerationOverrides, origin: &dyn Fn(&str) -> String) -> Result<()> {
    if l.max_new_tokens == Some(0) {
        return Err(Error::Invalid(format!(
            "max_new_tokens must be greater than 0, got 0 ({})",
            origin("max_new_tokens")
        )));
    }
    if let Some(nrs) = l.num_return_sequences {
        let beams = l.num_beams.unwrap_or(1);
        if nrs > 1 && beams == 1 && l.do_sample != Some(true) {
            return Err(Error::Invalid(format!(
                "num_return_sequences is {nrs} ({}) but greedy search returns one sequence; \
                 use beam search (--num-beams) or sampling (--do-sample)",
                origin("num_return_sequences")
            )));
        }
        if beams > 1 && nrs > beams {
            return Err(Error::Invalid(format!(
                "num_return_sequences ({nrs}, {}) must not exceed num_beams ({beams}, {})",
                origin("num_return_sequences"),
                origin("num_beams")
            )));
        }
    }
    Ok(())
}

/// Where the model config's own generation fields live (HF `from_model_config`).
fn model_config_layer(cfg: &Map<String, Value>, file: &str) -> Result<(GenerationOverrides, bool)> {
    let p = Parser { file };
    let mut layer = p.layer(cfg)?;
    for sub in ["decoder", "generator", "text_config"] {
        if let Some(Value::Object(d)) = cfg.get(sub) {
            let inner = Parser {
                file: &format!("{file} ({sub})"),
            }
            .layer(d)?;
            fill_unset(&mut layer, &inner);
            break;
        }
    }
    let force_bos = matches!(
        cfg.get("force_bos_token_to_be_generated"),
        Some(Value::Bool(true))
    );
    Ok((layer, force_bos))
}

impl GenerationConfig {
    /// Resolve from a checkpoint directory: `config.json` (required) and
    /// `generation_config.json` (optional), then `overrides`.
    pub fn from_checkpoint(dir: &Path, overrides: &GenerationOverrides) -> Result<Self> {
        let cfg_path = dir.join("config.json");
        let cfg = read_json(&cfg_path)?;
        let gen_path = dir.join("generation_config.json");
        let gen = if gen_path.is_file() {
            Some((read_json(&gen_path)?, gen_path))
        } else {
            None
        };
        Self::resolve(
            gen.as_ref().map(|(v, p)| (v, p.as_path())),
            &cfg,
            &cfg_path,
            overrides,
        )
    }

    /// Resolve from parsed JSON: `generation_config` (the contents of
    /// generation_config.json, or None when the checkpoint has none) and
    /// `model_config` (config.json).
    pub fn resolve(
        generation_config: Option<(&Value, &Path)>,
        model_config: &Value,
        model_config_path: &Path,
        overrides: &GenerationOverrides,
    ) -> Result<Self> {
        let cfg_file = model_config_path.display().to_string();
        let cfg = as_object(model_config, &cfg_file)?;

        // 2. the checkpoint layer
        let (mut file_layer, source) = match generation_config {
            Some((gv, gpath)) => {
                let gfile = gpath.display().to_string();
                let g = as_object(gv, &gfile)?;
                let mut layer = Parser { file: &gfile }.layer(g)?;
                let from_model = matches!(g.get("_from_model_config"), Some(Value::Bool(true)));
                if from_model
                    && matches!(
                        g.get("force_bos_token_to_be_generated"),
                        Some(Value::Bool(true))
                    )
                {
                    layer.forced_bos_token_id = layer.bos_token_id;
                }
                (layer, gfile)
            }
            None => {
                let (mut layer, force_bos) = model_config_layer(cfg, &cfg_file)?;
                if force_bos {
                    layer.forced_bos_token_id = layer.bos_token_id;
                }
                (layer, cfg_file.clone())
            }
        };
        file_layer.seed = None;
        let file_fields = set_fields(&file_layer);
        hf_validate(&file_layer, &|f| format!("from {source}, `{f}`"))?;

        // 3. task_specific_params (opt-in)
        let mut task_layer = GenerationOverrides::default();
        let mut task_prefix = None;
        if let Some(task) = &overrides.task {
            let tsp = cfg.get("task_specific_params").and_then(Value::as_object);
            let Some(params) = tsp.and_then(|t| t.get(task)).and_then(Value::as_object) else {
                let known: Vec<&str> = tsp
                    .map(|t| t.keys().map(String::as_str).collect())
                    .unwrap_or_default();
                return Err(Error::Invalid(format!(
                    "{cfg_file}: no task_specific_params for task '{task}' (known: {})",
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                )));
            };
            task_layer = Parser {
                file: &format!("{cfg_file} (task_specific_params.{task})"),
            }
            .layer(params)?;
            task_prefix = params
                .get("prefix")
                .and_then(Value::as_str)
                .map(str::to_string);
        }
        let task_fields = set_fields(&task_layer);
        let override_fields = set_fields(overrides);

        let mut origins: BTreeMap<&'static str, String> = BTreeMap::new();
        for f in ALL_FIELDS {
            let o = if override_fields.contains(f) {
                flag(f)
            } else if task_fields.contains(f) {
                format!(
                    "task_specific_params.{} of {cfg_file}",
                    overrides.task.as_deref().unwrap_or("")
                )
            } else if file_fields.contains(f) {
                source.clone()
            } else {
                "default".to_string()
            };
            origins.insert(f, o);
        }
        let origin = |f: &str| -> String {
            origins
                .get(f)
                .cloned()
                .unwrap_or_else(|| "default".to_string())
        };

        // 4. merge: overrides > task > checkpoint
        let mut merged = overrides.clone();
        fill_unset(&mut merged, &task_layer);
        fill_unset(&mut merged, &file_layer);
        hf_validate(&merged, &|f| format!("from {}", origin(f)))?;

        let has_default_max_length = merged.max_length.is_none();

        let cfg_parser = Parser { file: &cfg_file };
        let vocab_size = cfg_parser.usize(cfg, "vocab_size")?;
        let model_type = cfg.get("model_type").and_then(Value::as_str).unwrap_or("");
        let max_positions = match cfg_parser.usize(cfg, "max_position_embeddings")? {
            Some(n) => Some(n),
            None => default_max_positions(model_type),
        };

        // special tokens (HF `_prepare_special_tokens`)
        let eos_token_id = merged.eos_token_id.clone().unwrap_or_default();
        let decoder_start_token_id = match merged.decoder_start_token_id.or(merged.bos_token_id) {
            Some(t) => t,
            None => {
                return Err(Error::Invalid(format!(
                    "{source}: neither decoder_start_token_id nor bos_token_id is set; \
                     an encoder-decoder needs one (--decoder-start-token-id)"
                )))
            }
        };
        let pad_token_id = merged.pad_token_id.or(eos_token_id.first().copied());

        // lengths (HF `_prepare_generated_length`, decoder prompt length 1)
        let max_length = if let Some(n) = merged.max_new_tokens {
            n + 1
        } else if let Some(m) = merged.max_length {
            m
        } else {
            let m = DEFAULT_MAX_LENGTH + 1;
            max_positions.map_or(m, |p| m.min(p))
        };
        let min_length = match merged.min_new_tokens {
            Some(n) => n + 1,
            None => merged.min_length.unwrap_or(0),
        };

        let mut warnings = Vec::new();
        if has_default_max_length && merged.max_new_tokens.is_none() {
            warnings.push(format!(
                "no max_length/max_new_tokens in {source} or flags: using the default \
                 max_length {max_length} ({} new tokens), as transformers does",
                max_length.saturating_sub(1)
            ));
        }
        if min_length > max_length {
            warnings.push(format!(
                "min_length {min_length} ({}) exceeds max_length {max_length} ({}): \
                 generation stops at max_length",
                origin(if merged.min_new_tokens.is_some() {
                    "min_new_tokens"
                } else {
                    "min_length"
                }),
                origin(if merged.max_new_tokens.is_some() {
                    "max_new_tokens"
                } else {
                    "max_length"
                }),
            ));
        }

        let out = GenerationConfig {
            max_length,
            max_new_tokens: merged.max_new_tokens,
            min_length,
            min_new_tokens: merged.min_new_tokens,
            num_beams: merged.num_beams.unwrap_or(1),
            num_return_sequences: merged.num_return_sequences.unwrap_or(1),
            length_penalty: merged.length_penalty.unwrap_or(1.0),
            early_stopping: merged.early_stopping.unwrap_or_default(),
            no_repeat_ngram_size: merged.no_repeat_ngram_size.unwrap_or(0),
            encoder_no_repeat_ngram_size: merged.encoder_no_repeat_ngram_size.unwrap_or(0),
            repetition_penalty: merged.repetition_penalty.unwrap_or(1.0),
            bad_words_ids: merged.bad_words_ids,
            forced_bos_token_id: merged.forced_bos_token_id,
            forced_eos_token_id: merged.forced_eos_token_id,
            do_sample: merged.do_sample.unwrap_or(false),
            temperature: merged.temperature.unwrap_or(1.0),
            top_k: merged.top_k.unwrap_or(50),
            top_p: merged.top_p.unwrap_or(1.0),
            seed: merged.seed,
            decoder_start_token_id,
            eos_token_id,
            pad_token_id,
            bos_token_id: merged.bos_token_id,
            task_prefix,
            vocab_size,
            source,
            origins,
            warnings,
        };
        out.validate()?;
        Ok(out)
    }

    /// Settings for tests and programmatic use: `values` is read as a
    /// generation_config.json, then `overrides` apply.
    pub fn from_values(values: &Value, overrides: &GenerationOverrides) -> Result<Self> {
        Self::resolve(
            Some((values, Path::new("<generation config>"))),
            &json!({}),
            Path::new("<model config>"),
            overrides,
        )
    }

    /// Where a setting came from: a flag (`--num-beams`), a file, or "default".
    pub fn origin(&self, field: &str) -> String {
        self.origins
            .get(field)
            .cloned()
            .unwrap_or_else(|| "default".to_string())
    }

    /// Non-fatal remarks (to print on stderr): default max_length, min > max.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    pub fn mode(&self) -> SearchMode {
        match (self.num_beams > 1, self.do_sample) {
            (false, false) => SearchMode::Greedy,
            (false, true) => SearchMode::Sample,
            (true, false) => SearchMode::BeamSearch,
            (true, true) => SearchMode::BeamSample,
        }
    }

    /// Most ids a hypothesis can have (after the decoder start token).
    pub fn max_generated(&self) -> usize {
        self.max_length.saturating_sub(1)
    }

    fn bad(&self, field: &str, what: String) -> Error {
        Error::Invalid(format!("{field} {what} (from {})", self.origin(field)))
    }

    /// Checks that need no model: one clear line per problem.
    pub fn validate(&self) -> Result<()> {
        if self.num_beams == 0 {
            return Err(self.bad("num_beams", "is 0; it must be at least 1".into()));
        }
        if self.num_return_sequences == 0 {
            return Err(self.bad("num_return_sequences", "is 0; it must be at least 1".into()));
        }
        if self.num_beams > 1 && self.num_return_sequences > self.num_beams {
            return Err(Error::Invalid(format!(
                "num_return_sequences ({}, from {}) must not exceed num_beams ({}, from {})",
                self.num_return_sequences,
                self.origin("num_return_sequences"),
                self.num_beams,
                self.origin("num_beams")
            )));
        }
        if self.num_beams == 1 && !self.do_sample && self.num_return_sequences > 1 {
            return Err(self.bad(
                "num_return_sequences",
                format!(
                    "is {} but greedy search returns one sequence; use --num-beams or --do-sample",
                    self.num_return_sequences
                ),
            ));
        }
        if self.max_new_tokens == Some(0) {
            return Err(self.bad("max_new_tokens", "is 0; it must be at least 1".into()));
        }
        if self.max_length <= 1 {
            return Err(self.bad(
                "max_length",
                format!(
                    "is {}; it counts the decoder start token, so it must be at least 2 \
                     (or use --max-new-tokens)",
                    self.max_length
                ),
            ));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(self.bad("top_p", format!("is {}; it must be in (0, 1]", self.top_p)));
        }
        if self.do_sample && !(self.temperature > 0.0 && self.temperature.is_finite()) {
            return Err(self.bad(
                "temperature",
                format!(
                    "is {}; sampling needs a temperature > 0 (for greedy decoding drop --do-sample)",
                    self.temperature
                ),
            ));
        }
        if !(self.repetition_penalty > 0.0 && self.repetition_penalty.is_finite()) {
            return Err(self.bad(
                "repetition_penalty",
                format!("is {}; it must be > 0", self.repetition_penalty),
            ));
        }
        if !self.length_penalty.is_finite() {
            return Err(self.bad(
                "length_penalty",
                format!("is {}; it must be a finite number", self.length_penalty),
            ));
        }
        if let Some(bad) = &self.bad_words_ids {
            if bad.is_empty() {
                return Err(self.bad("bad_words_ids", "is an empty list".into()));
            }
            if bad.iter().any(Vec::is_empty) {
                return Err(self.bad("bad_words_ids", "contains an empty sequence".into()));
            }
        }
        if let Some(v) = self.vocab_size {
            self.validate_vocab(v)?;
        }
        Ok(())
    }

    fn validate_vocab(&self, vocab: usize) -> Result<()> {
        let check = |field: &str, id: u32| -> Result<()> {
            if id as usize >= vocab {
                Err(self.bad(
                    field,
                    format!("{id} is outside the vocabulary (size {vocab})"),
                ))
            } else {
                Ok(())
            }
        };
        if let Some(t) = self.forced_bos_token_id {
            check("forced_bos_token_id", t)?;
        }
        for &t in self.forced_eos_token_id.iter().flatten() {
            check("forced_eos_token_id", t)?;
        }
        check("decoder_start_token_id", self.decoder_start_token_id)?;
        for &t in self.bad_words_ids.iter().flatten().flatten() {
            check("bad_words_ids", t)?;
        }
        Ok(())
    }

    /// Checks against the model that will run: vocabulary and decoder positions.
    pub fn validate_for_model(&self, spec: &ModelSpec) -> Result<()> {
        self.validate_vocab(spec.vocab_size)?;
        if let Some(p) = spec.max_target_positions {
            // tokens fed to the decoder: the start token and all but the last generated one
            if self.max_length - 1 > p {
                return Err(Error::Invalid(format!(
                    "max_length {} (from {}) needs {} decoder positions but the model has {p}",
                    self.max_length,
                    self.origin(if self.max_new_tokens.is_some() {
                        "max_new_tokens"
                    } else {
                        "max_length"
                    }),
                    self.max_length - 1
                )));
            }
        }
        Ok(())
    }

    /// The settings as JSON (HF field names), for `--show-config`.
    pub fn to_json(&self) -> Value {
        let opt = |v: Option<u32>| v.map_or(Value::Null, |t| json!(t));
        json!({
            "source": self.source,
            "mode": match self.mode() {
                SearchMode::Greedy => "greedy",
                SearchMode::Sample => "sample",
                SearchMode::BeamSearch => "beam_search",
                SearchMode::BeamSample => "beam_sample",
            },
            "max_length": self.max_length,
            "max_new_tokens": self.max_new_tokens,
            "min_length": self.min_length,
            "min_new_tokens": self.min_new_tokens,
            "num_beams": self.num_beams,
            "num_return_sequences": self.num_return_sequences,
            "length_penalty": self.length_penalty,
            "early_stopping": self.early_stopping.to_json(),
            "no_repeat_ngram_size": self.no_repeat_ngram_size,
            "encoder_no_repeat_ngram_size": self.encoder_no_repeat_ngram_size,
            "repetition_penalty": self.repetition_penalty,
            "bad_words_ids": self.bad_words_ids,
            "forced_bos_token_id": opt(self.forced_bos_token_id),
            "forced_eos_token_id": self.forced_eos_token_id,
            "do_sample": self.do_sample,
            "temperature": self.temperature,
            "top_k": self.top_k,
            "top_p": self.top_p,
            "seed": self.seed,
            "decoder_start_token_id": self.decoder_start_token_id,
            "eos_token_id": self.eos_token_id,
            "pad_token_id": opt(self.pad_token_id),
            "bos_token_id": opt(self.bos_token_id),
            "task_prefix": self.task_prefix,
        })
    }
}

const ALL_FIELDS: &[&str] = &[
    "max_length",
    "max_new_tokens",
    "min_length",
    "min_new_tokens",
    "num_beams",
    "num_return_sequences",
    "length_penalty",
    "early_stopping",
    "no_repeat_ngram_size",
    "encoder_no_repeat_ngram_size",
    "repetition_penalty",
    "bad_words_ids",
    "forced_bos_token_id",
    "forced_eos_token_id",
    "do_sample",
    "temperature",
    "top_k",
    "top_p",
    "seed",
    "decoder_start_token_id",
    "eos_token_id",
    "pad_token_id",
    "bos_token_id",
];

impl fmt::Display for GenerationConfig {
    /// One `key = value  (origin)` line per setting.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = self.to_json();
        writeln!(f, "generation settings (from {}):", self.source)?;
        if let Value::Object(map) = &v {
            for (k, val) in map {
                if k == "source" {
                    continue;
                }
                let origin = if ALL_FIELDS.contains(&k.as_str()) {
                    format!("  ({})", self.origin(k))
                } else {
                    String::new()
                };
                writeln!(f, "  {k} = {val}{origin}")?;
            }
        }
        Ok(())
    }
}

fn read_json(path: &PathBuf) -> Result<Value> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))?;
    serde_json::from_str(&text).map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))
}
