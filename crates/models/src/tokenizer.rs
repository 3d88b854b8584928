//! Tokenizers of seq2seq checkpoints, equal to what `transformers` 5 (`AutoTokenizer`) gives.
//!
//! [`Seq2SeqTokenizer::from_dir`] picks the tokenizer class as `AutoTokenizer` does
//! (`tokenizer_class` of `tokenizer_config.json`, else the one registered for the
//! `model_type` of config.json) and reproduces that class:
//!
//! | class | files | input ids | pipeline |
//! |---|---|---|---|
//! | `T5Tokenizer` (t5, mt5, flan-t5, longt5) | tokenizer.json | `X </s>` | Unigram, unk id 2; charsmap; WhitespaceSplit + Metaspace |
//! | `PegasusTokenizer` | tokenizer.json | `X </s>` | Unigram; charsmap + `" {2,}" -> " "`; Metaspace |
//! | `RobertaTokenizer` (= `BartTokenizer`, `LEDTokenizer`) | tokenizer.json | `<s> X </s>` | byte-level BPE |
//! | `MBartTokenizer` (mbart-large-cc25, en-ro) | tokenizer.json | `X </s> src_lang` | Unigram; no normalizer |
//! | `MBart50Tokenizer` | tokenizer.json | `src_lang X </s>` | Unigram; charsmap + `" {2,}"`; Metaspace |
//! | `NllbTokenizer` | tokenizer.json | `src_lang X </s>` (`X </s> src_lang` with `legacy_behaviour`) | BPE; charsmap + `" {2,}"`; Metaspace |
//! | `MarianTokenizer` | source.spm, target.spm, vocab.json | `X </s>` | sentencepiece on the source side, pieces -> ids through vocab.json |
//! | `M2M100Tokenizer` | sentencepiece.bpe.model, vocab.json | `__src__ X </s>` | sentencepiece, pieces -> ids through vocab.json |
//! | anything else (`TokenizersBackend`) | tokenizer.json | as the file says | the file as it is |
//!
//! transformers 5 does not run the normalizer/pre-tokenizer/decoder stored in a
//! tokenizer.json for these classes: it rebuilds them from the class's own code and only
//! takes the vocabulary, merges, precompiled charsmap and added tokens from the file (so an
//! older tokenizer.json, e.g. PEGASUS's `WhitespaceSplit + Metaspace`, tokenizes differently
//! in transformers 5 than in the `tokenizers` library alone). This module does the same, and
//! ignores the file's `truncation`/`padding` sections (transformers disables them unless
//! asked). Decoding applies `clean_up_tokenization_spaces` from tokenizer_config.json
//! (default false), skipped for BPE models as transformers 5 does.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use serde_json::{json, Map, Value};

use crate::sentencepiece::{SentencePieceError, SpModel};

/// Errors of tokenizer loading, encoding and decoding; each names the file or directory at
/// fault.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error("{}: no tokenizer files for {class} (looked for {looked_for})", dir.display())]
    MissingFiles {
        dir: PathBuf,
        class: String,
        looked_for: String,
    },

    #[error("cannot read {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{}: invalid tokenizer file: {reason}", path.display())]
    Invalid { path: PathBuf, reason: String },

    #[error(transparent)]
    SentencePiece(#[from] SentencePieceError),

    #[error("unknown language code \"{code}\" for {class} in {} (valid: {valid})", dir.display())]
    UnknownLanguage {
        code: String,
        class: String,
        dir: PathBuf,
        valid: String,
    },

    #[error("{class} ({}) takes no source language: {hint}", dir.display())]
    NoSourceLanguage {
        class: String,
        dir: PathBuf,
        hint: String,
    },

    #[error(
        "max_length {max_len} is too small for {class} ({}): it adds {special} special tokens",
        dir.display()
    )]
    MaxLengthTooSmall {
        max_len: usize,
        special: usize,
        class: String,
        dir: PathBuf,
    },

    #[error("token id {id} is outside the vocabulary of {} ({size} tokens)", dir.display())]
    IdOutOfRange { id: u32, size: usize, dir: PathBuf },

    #[error("tokenizer of {}: {message}", dir.display())]
    Backend { dir: PathBuf, message: String },
}

/// The tokenizer classes of `transformers` that this module reproduces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Class {
    T5,
    Pegasus,
    Roberta,
    MBart,
    MBart50,
    Nllb,
    Marian,
    M2M100,
    /// `TokenizersBackend`: tokenizer.json as it is.
    Generic,
}

impl Class {
    fn from_class_name(name: &str) -> Class {
        match name.strip_suffix("Fast").unwrap_or(name) {
            "T5Tokenizer" | "MT5Tokenizer" | "UMT5Tokenizer" => Class::T5,
            "PegasusTokenizer" => Class::Pegasus,
            "RobertaTokenizer" | "BartTokenizer" | "LEDTokenizer" => Class::Roberta,
            "MBartTokenizer" => Class::MBart,
            "MBart50Tokenizer" => Class::MBart50,
            "NllbTokenizer" => Class::Nllb,
            "MarianTokenizer" => Class::Marian,
            "M2M100Tokenizer" => Class::M2M100,
            _ => Class::Generic,
        }
    }

    /// transformers' `TOKENIZER_MAPPING_NAMES` for the model types encdec runs.
    fn from_model_type(model_type: &str) -> Class {
        match model_type {
            "t5" | "mt5" | "longt5" | "switch_transformers" => Class::T5,
            "pegasus" => Class::Pegasus,
            "bart" | "led" => Class::Roberta,
            "mbart" => Class::MBart,
            "mbart50" => Class::MBart50,
            "nllb" => Class::Nllb,
            "marian" => Class::Marian,
            "m2m_100" => Class::M2M100,
            _ => Class::Generic,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Class::T5 => "T5Tokenizer",
            Class::Pegasus => "PegasusTokenizer",
            Class::Roberta => "RobertaTokenizer",
            Class::MBart => "MBartTokenizer",
            Class::MBart50 => "MBart50Tokenizer",
            Class::Nllb => "NllbTokenizer",
            Class::Marian => "MarianTokenizer",
            Class::M2M100 => "M2M100Tokenizer",
            Class::Generic => "TokenizersBackend",
        }
    }

    /// Class defaults of the named special tokens (`__init__` keyword defaults).
    fn default_special(self, key: &str) -> Option<&'static str> {
        let (bos, eos, unk, sep, pad, cls, mask) = match self {
            Class::T5 => (None, "</s>", "<unk>", None, "<pad>", None, None),
            Class::Pegasus => (None, "</s>", "<unk>", None, "<pad>", None, Some("<mask_2>")),
            Class::Roberta | Class::MBart | Class::Nllb => (
                Some("<s>"),
                "</s>",
                "<unk>",
                Some("</s>"),
                "<pad>",
                Some("<s>"),
                Some("<mask>"),
            ),
            Class::MBart50 => (
                None,
                "</s>",
                "<unk>",
                Some("</s>"),
                "<pad>",
                Some("<s>"),
                Some("<mask>"),
            ),
            Class::Marian => (None, "</s>", "<unk>", None, "<pad>", None, None),
            Class::M2M100 => (
                Some("<s>"),
                "</s>",
                "<unk>",
                Some("</s>"),
                "<pad>",
                None,
                None,
            ),
            Class::Generic => return None,
        };
        match key {
            "bos_token" => bos,
            "eos_token" => Some(eos),
            "unk_token" => Some(unk),
            "sep_token" => sep,
            "pad_token" => Some(pad),
            "cls_token" => cls,
            "mask_token" => mask,
            _ => None,
        }
    }
}

const SPECIAL_TOKEN_KEYS: [&str; 7] = [
    "bos_token",
    "eos_token",
    "unk_token",
    "sep_token",
    "pad_token",
    "cls_token",
    "mask_token",
];

/// `FAIRSEQ_LANGUAGE_CODES` of `tokenization_mbart.py` (mBART-cc25).
const MBART_CODES: &str = "ar_AR cs_CZ de_DE en_XX es_XX et_EE fi_FI fr_XX gu_IN hi_IN it_IT \
    ja_XX kk_KZ ko_KR lt_LT lv_LV my_MM ne_NP nl_XX ro_RO ru_RU si_LK tr_TR vi_VN zh_CN";

/// The 27 codes `tokenization_mbart50.py` adds to the mBART-cc25 list.
const MBART50_EXTRA_CODES: &str = "af_ZA az_AZ bn_IN fa_IR he_IL hr_HR id_ID ka_GE km_KH mk_MK \
    ml_IN mn_MN mr_IN pl_PL ps_AF pt_XX sv_SE sw_KE ta_IN te_IN th_TH tl_XX uk_UA ur_PK xh_ZA \
    gl_ES sl_SI";

/// `FAIRSEQ_LANGUAGE_CODES` of `tokenization_nllb.py` (NLLB-200).
const NLLB_CODES: &str = "ace_Arab ace_Latn acm_Arab acq_Arab aeb_Arab afr_Latn ajp_Arab \
    aka_Latn amh_Ethi apc_Arab arb_Arab ars_Arab ary_Arab arz_Arab asm_Beng ast_Latn awa_Deva \
    ayr_Latn azb_Arab azj_Latn bak_Cyrl bam_Latn ban_Latn bel_Cyrl bem_Latn ben_Beng bho_Deva \
    bjn_Arab bjn_Latn bod_Tibt bos_Latn bug_Latn bul_Cyrl cat_Latn ceb_Latn ces_Latn cjk_Latn \
    ckb_Arab crh_Latn cym_Latn dan_Latn deu_Latn dik_Latn dyu_Latn dzo_Tibt ell_Grek eng_Latn \
    epo_Latn est_Latn eus_Latn ewe_Latn fao_Latn pes_Arab fij_Latn fin_Latn fon_Latn fra_Latn \
    fur_Latn fuv_Latn gla_Latn gle_Latn glg_Latn grn_Latn guj_Gujr hat_Latn hau_Latn heb_Hebr \
    hin_Deva hne_Deva hrv_Latn hun_Latn hye_Armn ibo_Latn ilo_Latn ind_Latn isl_Latn ita_Latn \
    jav_Latn jpn_Jpan kab_Latn kac_Latn kam_Latn kan_Knda kas_Arab kas_Deva kat_Geor knc_Arab \
    knc_Latn kaz_Cyrl kbp_Latn kea_Latn khm_Khmr kik_Latn kin_Latn kir_Cyrl kmb_Latn kon_Latn \
    kor_Hang kmr_Latn lao_Laoo lvs_Latn lij_Latn lim_Latn lin_Latn lit_Latn lmo_Latn ltg_Latn \
    ltz_Latn lua_Latn lug_Latn luo_Latn lus_Latn mag_Deva mai_Deva mal_Mlym mar_Deva min_Latn \
    mkd_Cyrl plt_Latn mlt_Latn mni_Beng khk_Cyrl mos_Latn mri_Latn zsm_Latn mya_Mymr nld_Latn \
    nno_Latn nob_Latn npi_Deva nso_Latn nus_Latn nya_Latn oci_Latn gaz_Latn ory_Orya pag_Latn \
    pan_Guru pap_Latn pol_Latn por_Latn prs_Arab pbt_Arab quy_Latn ron_Latn run_Latn rus_Cyrl \
    sag_Latn san_Deva sat_Beng scn_Latn shn_Mymr sin_Sinh slk_Latn slv_Latn smo_Latn sna_Latn \
    snd_Arab som_Latn sot_Latn spa_Latn als_Latn srd_Latn srp_Cyrl ssw_Latn sun_Latn swe_Latn \
    swh_Latn szl_Latn tam_Taml tat_Cyrl tel_Telu tgk_Cyrl tgl_Latn tha_Thai tir_Ethi taq_Latn \
    taq_Tfng tpi_Latn tsn_Latn tso_Latn tuk_Latn tum_Latn tur_Latn twi_Latn tzm_Tfng uig_Arab \
    ukr_Cyrl umb_Latn urd_Arab uzn_Latn vec_Latn vie_Latn war_Latn wol_Latn xho_Latn ydd_Hebr \
    yor_Latn yue_Hant zho_Hans zho_Hant zul_Latn";

/// `FAIRSEQ_LANGUAGE_CODES["m2m100"]` of `tokenization_m2m_100.py`.
const M2M100_CODES: &str = "af am ar ast az ba be bg bn br bs ca ceb cs cy da de el en es et fa \
    ff fi fr fy ga gd gl gu ha he hi hr ht hu hy id ig ilo is it ja jv ka kk km kn ko lb lg ln lo \
    lt lv mg mk ml mn mr ms my ne nl no ns oc or pa pl ps pt ro ru sd si sk sl so sq sr ss su sv \
    sw ta th tl tn tr uk ur uz vi wo xh yi yo zh zu";

/// `FAIRSEQ_LANGUAGE_CODES["wmt21"]`.
const WMT21_CODES: &str = "en ha is ja cs ru zh de";

fn words(s: &str) -> Vec<String> {
    s.split_whitespace().map(str::to_string).collect()
}

/// Where the language token goes relative to the text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LangPlacement {
    /// `lang X </s>` (mBART-50, NLLB, M2M100).
    Prefix,
    /// `X </s> lang` (mBART-cc25, NLLB with `legacy_behaviour`).
    Suffix,
}

/// tokenizer_config.json, with special_tokens_map.json merged in as transformers does.
struct TokConfig {
    path: PathBuf,
    map: Map<String, Value>,
}

impl TokConfig {
    fn load(dir: &Path) -> Result<Self, TokenizerError> {
        let path = dir.join("tokenizer_config.json");
        let mut map = if path.is_file() {
            match read_json(&path)? {
                Value::Object(m) => m,
                _ => return Err(invalid(&path, "not a JSON object")),
            }
        } else {
            Map::new()
        };
        // transformers reads special_tokens_map.json only when tokenizer_config.json has no
        // `added_tokens_decoder`; its values then override the config's.
        let stm = dir.join("special_tokens_map.json");
        if !map.contains_key("added_tokens_decoder") && stm.is_file() {
            if let Value::Object(m) = read_json(&stm)? {
                for (k, v) in m {
                    if k == "additional_special_tokens" || k == "extra_special_tokens" {
                        let mut list = map
                            .get("extra_special_tokens")
                            .or_else(|| map.get("additional_special_tokens"))
                            .and_then(Value::as_array)
                            .cloned()
                            .unwrap_or_default();
                        for t in v.as_array().into_iter().flatten() {
                            if !list.contains(t) {
                                list.push(t.clone());
                            }
                        }
                        map.insert("extra_special_tokens".into(), Value::Array(list));
                    } else {
                        map.insert(k, v);
                    }
                }
            }
        }
        Ok(TokConfig { path, map })
    }

    fn str(&self, key: &str) -> Option<&str> {
        self.map.get(key).and_then(Value::as_str)
    }

    fn bool(&self, key: &str, default: bool) -> bool {
        self.map
            .get(key)
            .and_then(Value::as_bool)
            .unwrap_or(default)
    }

    /// A special token given as a string or an AddedToken object.
    fn token(&self, key: &str) -> Option<String> {
        token_content(self.map.get(key)?)
    }

    /// The named special token `key`: the config's, else the class default.
    fn special(&self, class: Class, key: &str) -> Option<String> {
        match self.map.get(key) {
            Some(Value::Null) => None,
            Some(v) => token_content(v),
            None => class.default_special(key).map(str::to_string),
        }
    }

    /// `extra_special_tokens` / `additional_special_tokens` (list form), as strings.
    fn extra_special(&self) -> Option<Vec<String>> {
        let v = self
            .map
            .get("extra_special_tokens")
            .filter(|v| v.is_array())
            .or_else(|| self.map.get("additional_special_tokens"))?;
        Some(v.as_array()?.iter().filter_map(token_content).collect())
    }
}

fn token_content(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("content").and_then(Value::as_str).map(str::to_string),
        _ => None,
    }
}

fn invalid(path: &Path, reason: impl Into<String>) -> TokenizerError {
    TokenizerError::Invalid {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

fn read_bytes(path: &Path) -> Result<Vec<u8>, TokenizerError> {
    std::fs::read(path).map_err(|source| TokenizerError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn read_json(path: &Path) -> Result<Value, TokenizerError> {
    let bytes = read_bytes(path)?;
    serde_json::from_slice(&bytes).map_err(|e| invalid(path, format!("invalid JSON: {e}")))
}

/// Python's `str.isspace` for one char.
fn py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Python's `str.strip()`.
fn py_strip(s: &str) -> &str {
    s.trim_matches(py_space)
}

/// `PreTrainedTokenizerBase.clean_up_tokenization`.
fn clean_up_tokenization(text: &str) -> String {
    text.replace(" .", ".")
        .replace(" ?", "?")
        .replace(" !", "!")
        .replace(" ,", ",")
        .replace(" ' ", "'")
        .replace(" n't", "n't")
        .replace(" 'm", "'m")
        .replace(" 's", "'s")
        .replace(" 've", "'ve")
        .replace(" 're", "'re")
}

// ---------------------------------------------------------------------------------------
// tokenizer.json families (the `tokenizers` library with transformers' pipelines)
// ---------------------------------------------------------------------------------------

struct FastTokenizer {
    tok: tokenizers::Tokenizer,
    is_bpe: bool,
}

fn metaspace() -> Value {
    json!({"type": "Metaspace", "replacement": "\u{2581}", "prepend_scheme": "always", "split": true})
}

fn collapse_spaces() -> Value {
    json!({"type": "Replace", "pattern": {"Regex": " {2,}"}, "content": " "})
}

fn precompiled(charsmap: &Value) -> Value {
    json!({"type": "Precompiled", "precompiled_charsmap": charsmap})
}

/// The base64 `precompiled_charsmap` of a tokenizer.json normalizer (alone or in a
/// Sequence), as transformers extracts it.
fn find_charsmap(normalizer: &Value) -> Option<Value> {
    let list: Vec<&Value> = match normalizer.get("type").and_then(Value::as_str) {
        Some("Sequence") => normalizer.get("normalizers")?.as_array()?.iter().collect(),
        Some(_) => vec![normalizer],
        None => return None,
    };
    list.into_iter()
        .find(|n| n.get("type").and_then(Value::as_str) == Some("Precompiled"))
        .and_then(|n| n.get("precompiled_charsmap"))
        .filter(|c| c.as_str().is_some_and(|s| !s.is_empty()))
        .cloned()
}

fn template(single: &[&str], pair: &[&str], specials: &[(&str, u32)]) -> Value {
    let piece = |p: &str| {
        if let Some(seq) = p.strip_prefix('$') {
            json!({"Sequence": {"id": seq, "type_id": 0}})
        } else {
            json!({"SpecialToken": {"id": p, "type_id": 0}})
        }
    };
    let mut special_tokens = Map::new();
    for (tok, id) in specials {
        special_tokens.insert(
            tok.to_string(),
            json!({"id": tok, "ids": [id], "tokens": [tok]}),
        );
    }
    json!({
        "type": "TemplateProcessing",
        "single": single.iter().map(|p| piece(p)).collect::<Vec<_>>(),
        "pair": pair.iter().map(|p| piece(p)).collect::<Vec<_>>(),
        "special_tokens": special_tokens,
    })
}

/// The id a token string has in a tokenizer.json (added tokens, then the model vocab).
fn json_token_id(j: &Value, token: &str) -> Option<u32> {
    if let Some(added) = j.get("added_tokens").and_then(Value::as_array) {
        for a in added {
            if a.get("content").and_then(Value::as_str) == Some(token) {
                return a.get("id").and_then(Value::as_u64).map(|x| x as u32);
            }
        }
    }
    let vocab = j.get("model")?.get("vocab")?;
    match vocab {
        Value::Object(m) => m.get(token).and_then(Value::as_u64).map(|x| x as u32),
        Value::Array(a) => a
            .iter()
            .position(|e| e.get(0).and_then(Value::as_str) == Some(token))
            .map(|i| i as u32),
        _ => None,
    }
}

fn model_type_of(model: &Value) -> Option<&'static str> {
    match model.get("type").and_then(Value::as_str) {
        Some("BPE") => Some("BPE"),
        Some("Unigram") => Some("Unigram"),
        Some("WordPiece") => Some("WordPiece"),
        Some("WordLevel") => Some("WordLevel"),
        Some(_) => None,
        None => {
            if model.get("merges").is_some() {
                Some("BPE")
            } else if model.get("vocab").is_some_and(Value::is_array) {
                Some("Unigram")
            } else {
                None
            }
        }
    }
}

/// Rewrites a tokenizer.json into the pipeline the transformers class builds.
fn rewrite_for_class(
    j: &mut Value,
    class: Class,
    cfg: &TokConfig,
    path: &Path,
) -> Result<(), TokenizerError> {
    let obj = j
        .as_object_mut()
        .ok_or_else(|| invalid(path, "not a JSON object"))?;
    obj.insert("truncation".into(), Value::Null);
    obj.insert("padding".into(), Value::Null);
    if class == Class::Generic {
        return Ok(());
    }
    let model_kind = obj
        .get("model")
        .and_then(model_type_of)
        .ok_or_else(|| invalid(path, "no \"model\" with a known \"type\""))?;
    let need = |kind: &str| -> Result<(), TokenizerError> {
        if model_kind != kind {
            return Err(invalid(
                path,
                format!(
                    "{} expects a {kind} model, the file has {model_kind}",
                    class.name()
                ),
            ));
        }
        Ok(())
    };
    let charsmap = obj.get("normalizer").and_then(find_charsmap);
    let unk = cfg
        .special(class, "unk_token")
        .unwrap_or_else(|| "<unk>".into());
    let model = obj
        .get_mut("model")
        .and_then(Value::as_object_mut)
        .ok_or_else(|| invalid(path, "no \"model\" object"))?;
    model.insert("type".into(), json!(model_kind));
    let seq_ws_meta =
        json!({"type": "Sequence", "pretokenizers": [{"type": "WhitespaceSplit"}, metaspace()]});
    let (normalizer, pre_tokenizer, decoder) = match class {
        Class::T5 => {
            need("Unigram")?;
            model.insert("unk_id".into(), json!(2));
            model.insert("byte_fallback".into(), json!(false));
            let n = charsmap.as_ref().map(precompiled).unwrap_or(Value::Null);
            (n, seq_ws_meta, metaspace())
        }
        Class::Pegasus => {
            need("Unigram")?;
            // `Unigram(vocab, unk_id=vocab.index((unk_token, 0.0), 1))`
            let vocab = model
                .get("vocab")
                .and_then(Value::as_array)
                .ok_or_else(|| invalid(path, "Unigram model without a vocab list"))?;
            let unk_id = vocab
                .iter()
                .enumerate()
                .skip(1)
                .find(|(_, e)| {
                    e.get(0).and_then(Value::as_str) == Some(unk.as_str())
                        && e.get(1).and_then(Value::as_f64) == Some(0.0)
                })
                .map(|(i, _)| i)
                .ok_or_else(|| {
                    invalid(
                        path,
                        format!("no ({unk:?}, 0.0) entry after the first in the vocab"),
                    )
                })?;
            model.insert("unk_id".into(), json!(unk_id));
            model.insert("byte_fallback".into(), json!(false));
            let n = match &charsmap {
                Some(c) => {
                    json!({"type": "Sequence", "normalizers": [precompiled(c), collapse_spaces()]})
                }
                None => json!({"type": "Sequence", "normalizers": [
                    {"type": "Replace", "pattern": {"Regex": "\n"}, "content": " "},
                    collapse_spaces()]}),
            };
            (n, metaspace(), metaspace())
        }
        Class::Roberta => {
            need("BPE")?;
            model.insert("dropout".into(), Value::Null);
            model.insert("unk_token".into(), Value::Null);
            model.insert("continuing_subword_prefix".into(), json!(""));
            model.insert("end_of_word_suffix".into(), json!(""));
            model.insert("fuse_unk".into(), json!(false));
            model.insert("byte_fallback".into(), json!(false));
            model.insert("ignore_merges".into(), json!(false));
            let aps = cfg.bool("add_prefix_space", false);
            (
                Value::Null,
                json!({"type": "ByteLevel", "add_prefix_space": aps, "trim_offsets": true, "use_regex": true}),
                json!({"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true}),
            )
        }
        Class::MBart => {
            need("Unigram")?;
            model.insert("unk_id".into(), json!(3));
            model.insert("byte_fallback".into(), json!(false));
            (Value::Null, seq_ws_meta, metaspace())
        }
        Class::MBart50 => {
            need("Unigram")?;
            model.insert("unk_id".into(), json!(3));
            model.insert("byte_fallback".into(), json!(false));
            let mut ns = Vec::new();
            if let Some(c) = &charsmap {
                ns.push(precompiled(c));
            }
            ns.push(collapse_spaces());
            (
                json!({"type": "Sequence", "normalizers": ns}),
                metaspace(),
                metaspace(),
            )
        }
        Class::Nllb => {
            need("BPE")?;
            model.insert("dropout".into(), Value::Null);
            model.insert("unk_token".into(), json!(unk));
            model.insert("continuing_subword_prefix".into(), Value::Null);
            model.insert("end_of_word_suffix".into(), Value::Null);
            model.insert("fuse_unk".into(), json!(true));
            model.insert("byte_fallback".into(), json!(false));
            model.insert("ignore_merges".into(), json!(false));
            let n = match &charsmap {
                Some(c) => {
                    json!({"type": "Sequence", "normalizers": [precompiled(c), collapse_spaces()]})
                }
                None => Value::Null,
            };
            (n, metaspace(), metaspace())
        }
        Class::Marian | Class::M2M100 | Class::Generic => {
            unreachable!("not a tokenizer.json class")
        }
    };
    obj.insert("normalizer".into(), normalizer);
    obj.insert("pre_tokenizer".into(), pre_tokenizer);
    obj.insert("decoder".into(), decoder);

    // post-processors that do not depend on a language
    let id_of = |j: &Map<String, Value>, tok: &str| -> Result<u32, TokenizerError> {
        json_token_id(&Value::Object(j.clone()), tok).ok_or_else(|| {
            invalid(
                path,
                format!("special token {tok:?} is not in the vocabulary"),
            )
        })
    };
    match class {
        Class::T5 => {
            let eos = cfg.special(class, "eos_token").unwrap_or("</s>".into());
            let id = id_of(obj, &eos)?;
            obj.insert(
                "post_processor".into(),
                template(&["$A", &eos], &["$A", &eos, "$B", &eos], &[(&eos, id)]),
            );
        }
        Class::Pegasus => {
            let eos = cfg.special(class, "eos_token").unwrap_or("</s>".into());
            let id = id_of(obj, &eos)?;
            obj.insert(
                "post_processor".into(),
                template(&["$A", &eos], &["$A", "$B", &eos], &[(&eos, id)]),
            );
        }
        Class::Roberta => {
            let sep = cfg.special(class, "sep_token").unwrap_or("</s>".into());
            let cls = cfg.special(class, "cls_token").unwrap_or("<s>".into());
            let (sep_id, cls_id) = (id_of(obj, &sep)?, id_of(obj, &cls)?);
            obj.insert(
                "post_processor".into(),
                json!({"type": "RobertaProcessing", "sep": [sep, sep_id], "cls": [cls, cls_id],
                       "trim_offsets": cfg.bool("trim_offsets", true),
                       "add_prefix_space": cfg.bool("add_prefix_space", false)}),
            );
        }
        _ => {}
    }
    Ok(())
}

/// The tokenizer.json transformers builds from a T5 `spiece.model` (its
/// `SentencePieceExtractor` and `T5Converter.convert_from_spm`): every piece with its score,
/// then `<extra_id_N>` from N = extra_ids - 1 down to 0; control and user-defined pieces
/// become added tokens.
fn t5_json_from_spm(
    spm: &SpModel,
    extra_ids: u64,
    added: &mut Vec<tokenizers::AddedToken>,
) -> Value {
    use crate::sentencepiece::PieceKind;
    let mut vocab: Vec<Value> = spm
        .pieces()
        .iter()
        .map(|p| json!([p.piece, f64::from(p.score)]))
        .collect();
    for i in (0..extra_ids).rev() {
        vocab.push(json!([format!("<extra_id_{i}>"), 0.0]));
    }
    for p in spm.pieces() {
        if matches!(p.kind, PieceKind::Control | PieceKind::UserDefined) {
            let mut t = tokenizers::AddedToken::from(p.piece.clone(), p.kind == PieceKind::Control);
            t.normalized = false;
            added.push(t);
        }
    }
    let charsmap = &spm.normalizer_spec().precompiled_charsmap;
    let normalizer = if charsmap.is_empty() {
        Value::Null
    } else {
        precompiled(&json!(base64_encode(charsmap)))
    };
    json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
        "normalizer": normalizer, "pre_tokenizer": null, "post_processor": null, "decoder": null,
        "model": {"type": "Unigram", "unk_id": spm.unk_id(), "vocab": vocab, "byte_fallback": false},
    })
}

fn base64_encode(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for k in 0..4 {
            if k <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * k)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------
// sentencepiece + vocab.json families (transformers' Python tokenizers)
// ---------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
struct Added {
    content: String,
    lstrip: bool,
    rstrip: bool,
    single_word: bool,
}

struct SlowTokenizer {
    class: Class,
    /// Marian: source.spm; M2M100: sentencepiece.bpe.model.
    spm: SpModel,
    /// Marian: target.spm (decoding with `separate_vocabs`).
    target_spm: Option<SpModel>,
    separate_vocabs: bool,
    encoder: HashMap<String, u32>,
    decoder: HashMap<u32, String>,
    /// Added tokens (special tokens included), as `_added_tokens_decoder`.
    added: HashMap<u32, Added>,
    added_ids: HashMap<String, u32>,
    /// Longest added token, in bytes.
    added_max_len: usize,
    /// `all_special_tokens`.
    special_tokens: HashSet<String>,
    /// `all_special_ids`.
    special_ids: HashSet<u32>,
    unk_id: u32,
    eos_id: u32,
    vocab_len: usize,
    /// M2M100: `__xx__` -> id.
    lang_token_ids: HashMap<String, u32>,
}

impl SlowTokenizer {
    fn token_to_id(&self, token: &str) -> u32 {
        if let Some(&id) = self.added_ids.get(token) {
            return id;
        }
        if let Some(&id) = self.lang_token_ids.get(token) {
            return id;
        }
        self.encoder.get(token).copied().unwrap_or(self.unk_id)
    }

    /// `Trie.split` on the added tokens (leftmost, then longest match), then the
    /// `lstrip`/`rstrip`/`single_word` handling of `PreTrainedTokenizer.tokenize`.
    fn split_added(&self, text: &str) -> Vec<(String, bool)> {
        let mut parts: Vec<(String, bool)> = Vec::new();
        let mut start = 0;
        let mut i = 0;
        let b = text.as_bytes();
        while i < b.len() {
            if !text.is_char_boundary(i) {
                i += 1;
                continue;
            }
            let mut found = None;
            let upto = self.added_max_len.min(b.len() - i);
            for len in (1..=upto).rev() {
                if text.is_char_boundary(i + len) && self.added_ids.contains_key(&text[i..i + len])
                {
                    found = Some(len);
                    break;
                }
            }
            match found {
                Some(len) => {
                    if start < i {
                        parts.push((text[start..i].to_string(), false));
                    }
                    parts.push((text[i..i + len].to_string(), true));
                    i += len;
                    start = i;
                }
                None => i += 1,
            }
        }
        if start < b.len() {
            parts.push((text[start..].to_string(), false));
        }
        for i in 0..parts.len() {
            if !parts[i].1 {
                continue;
            }
            let Some(tok) = self.added.get(&self.added_ids[&parts[i].0]).cloned() else {
                continue;
            };
            if tok.rstrip && i + 1 < parts.len() && !parts[i + 1].0.is_empty() {
                parts[i + 1].0 = parts[i + 1].0.trim_start_matches(py_space).to_string();
            }
            if tok.lstrip && i > 0 && !parts[i - 1].0.is_empty() {
                parts[i - 1].0 = parts[i - 1].0.trim_end_matches(py_space).to_string();
            }
            if tok.single_word {
                if i > 0 && !parts[i - 1].0.is_empty() && !parts[i - 1].0.ends_with(' ') {
                    let t = std::mem::take(&mut parts[i].0);
                    parts[i - 1].0.push_str(&t);
                } else if i + 1 < parts.len()
                    && !parts[i + 1].0.is_empty()
                    && !parts[i + 1].0.starts_with(' ')
                {
                    let t = std::mem::take(&mut parts[i].0);
                    parts[i + 1].0.insert_str(0, &t);
                }
            }
        }
        parts
    }

    /// `tok(text, add_special_tokens=False).input_ids`.
    fn encode_content(&self, text: &str) -> Vec<u32> {
        let mut ids = Vec::new();
        for (chunk, _) in self.split_added(text) {
            if chunk.is_empty() {
                continue;
            }
            if self.added_ids.contains_key(&chunk) || self.special_tokens.contains(&chunk) {
                ids.push(self.token_to_id(&chunk));
                continue;
            }
            let mut rest = chunk.as_str();
            if self.class == Class::Marian && rest.starts_with(">>") {
                // `remove_language_code`
                if let Some(end) = rest.find("<<") {
                    ids.push(self.token_to_id(&rest[..end + 2]));
                    rest = &rest[end + 2..];
                }
            }
            for (piece, _) in self.spm.encode(rest) {
                ids.push(self.token_to_id(&piece));
            }
        }
        ids
    }

    fn id_to_token(&self, id: u32) -> Option<String> {
        if let Some(a) = self.added.get(&id) {
            return Some(a.content.clone());
        }
        if let Some((tok, _)) = self.lang_token_ids.iter().find(|(_, &v)| v == id) {
            return Some(tok.clone());
        }
        self.decoder.get(&id).cloned()
    }

    fn decode(
        &self,
        ids: &[u32],
        skip_special: bool,
        dir: &Path,
    ) -> Result<String, TokenizerError> {
        let decode_spm = match (&self.target_spm, self.separate_vocabs) {
            (Some(t), true) => t,
            _ => &self.spm,
        };
        let mut tokens: Vec<String> = Vec::with_capacity(ids.len());
        for &id in ids {
            if skip_special && self.special_ids.contains(&id) {
                continue;
            }
            let tok = match self.id_to_token(id) {
                Some(t) => t,
                None => match self.class {
                    // MarianTokenizer falls back to the sentencepiece piece of that id
                    Class::Marian => match decode_spm.id_to_piece(id) {
                        Some(p) => p.to_string(),
                        None => {
                            return Err(TokenizerError::IdOutOfRange {
                                id,
                                size: self.vocab_len,
                                dir: dir.to_path_buf(),
                            })
                        }
                    },
                    // M2M100Tokenizer: `decoder.get(index, unk_token)`
                    _ => self
                        .added
                        .get(&self.unk_id)
                        .map(|a| a.content.clone())
                        .unwrap_or_else(|| "<unk>".into()),
                },
            };
            tokens.push(tok);
        }
        let marian = self.class == Class::Marian;
        let mut out = String::new();
        let mut current: Vec<&str> = Vec::new();
        for t in &tokens {
            if self.special_tokens.contains(t) {
                out.push_str(&decode_spm.decode_pieces(&current));
                out.push_str(t);
                if marian {
                    out.push(' ');
                }
                current.clear();
            } else {
                current.push(t);
            }
        }
        out.push_str(&decode_spm.decode_pieces(&current));
        if marian {
            out = out.replace('\u{2581}', " ");
        }
        Ok(py_strip(&out).to_string())
    }
}

fn load_vocab_json(path: &Path) -> Result<HashMap<String, u32>, TokenizerError> {
    let v = read_json(path)?;
    let obj = v
        .as_object()
        .ok_or_else(|| invalid(path, "expected a JSON object of token -> id"))?;
    let mut map = HashMap::with_capacity(obj.len());
    for (k, v) in obj {
        let id = v
            .as_u64()
            .filter(|&x| x <= u64::from(u32::MAX))
            .ok_or_else(|| invalid(path, format!("token {k:?} has no integer id")))?;
        map.insert(k.clone(), id as u32);
    }
    Ok(map)
}

// ---------------------------------------------------------------------------------------
// The public tokenizer
// ---------------------------------------------------------------------------------------

enum Backend {
    Fast(Box<FastTokenizer>),
    Slow(Box<SlowTokenizer>),
}

/// The tokenizer of a seq2seq checkpoint directory (see the module docs).
pub struct Seq2SeqTokenizer {
    class: Class,
    dir: PathBuf,
    backend: Backend,
    clean_up_tokenization_spaces: bool,
    cleanup_for_bpe: bool,
    truncate_left: bool,
    lang_codes: Vec<String>,
    /// code -> token string (M2M100: `en` -> `__en__`; others: the code itself).
    lang_tokens: HashMap<String, String>,
    lang_placement: Option<LangPlacement>,
    src_lang: Option<String>,
    eos_token: Option<String>,
    eos_id: Option<u32>,
    pad_id: Option<u32>,
}

impl std::fmt::Debug for Seq2SeqTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Seq2SeqTokenizer")
            .field("class", &self.class.name())
            .field("dir", &self.dir)
            .field("vocab_size", &self.vocab_size())
            .field("src_lang", &self.src_lang)
            .finish()
    }
}

impl Seq2SeqTokenizer {
    /// Loads the tokenizer of a checkpoint directory: tokenizer.json (+ tokenizer_config.json,
    /// special_tokens_map.json) or, for Marian, source.spm + target.spm + vocab.json (M2M100:
    /// sentencepiece.bpe.model + vocab.json). `model_type` (from config.json) picks the class
    /// when tokenizer_config.json names none.
    pub fn from_dir(dir: &Path, model_type: &str) -> Result<Self, TokenizerError> {
        if !dir.is_dir() {
            return Err(TokenizerError::Io {
                path: dir.to_path_buf(),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "not a directory"),
            });
        }
        let cfg = TokConfig::load(dir)?;
        let class = match cfg.str("tokenizer_class") {
            Some(name) => Class::from_class_name(name),
            None => Class::from_model_type(model_type),
        };
        let mut t = match class {
            Class::Marian | Class::M2M100 => Self::load_slow(dir, class, &cfg)?,
            _ => Self::load_fast(dir, class, &cfg)?,
        };
        t.clean_up_tokenization_spaces = cfg.bool("clean_up_tokenization_spaces", false);
        t.cleanup_for_bpe = cfg.bool(
            "clean_up_tokenization_spaces_for_bpe_even_though_it_will_corrupt_output",
            false,
        );
        t.truncate_left = cfg.str("truncation_side") == Some("left");
        // source language (mBART, NLLB, M2M100)
        if t.lang_placement.is_some() {
            let default = match class {
                Class::MBart | Class::MBart50 => "en_XX",
                Class::Nllb => "eng_Latn",
                _ => "en",
            };
            let lang = cfg.str("src_lang").unwrap_or(default).to_string();
            t.set_src_lang(&lang)?;
        }
        Ok(t)
    }

    fn load_fast(dir: &Path, class: Class, cfg: &TokConfig) -> Result<Self, TokenizerError> {
        let mut path = dir.join("tokenizer.json");
        let spiece = dir.join("spiece.model");
        // T5 checkpoints that ship only spiece.model (mT5): converted as transformers does
        let mut spm_added: Vec<tokenizers::AddedToken> = Vec::new();
        let mut j = if path.is_file() {
            read_json(&path)?
        } else if class == Class::T5 && spiece.is_file() {
            let spm = SpModel::from_file(&spiece)?;
            path = spiece;
            let extra_ids = cfg
                .map
                .get("extra_ids")
                .and_then(Value::as_u64)
                .unwrap_or(100);
            t5_json_from_spm(&spm, extra_ids, &mut spm_added)
        } else {
            let mut present: Vec<String> = std::fs::read_dir(dir)
                .map(|rd| {
                    rd.filter_map(|e| e.ok())
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .collect()
                })
                .unwrap_or_default();
            present.sort();
            let looked_for = if class == Class::T5 {
                "tokenizer.json or spiece.model"
            } else {
                "tokenizer.json"
            };
            return Err(TokenizerError::MissingFiles {
                dir: dir.to_path_buf(),
                class: class.name().to_string(),
                looked_for: format!(
                    "{looked_for}; files present: {}",
                    if present.is_empty() {
                        "none".to_string()
                    } else {
                        present.join(", ")
                    }
                ),
            });
        };
        rewrite_for_class(&mut j, class, cfg, &path)?;
        let is_bpe = j
            .get("model")
            .and_then(model_type_of)
            .is_some_and(|t| t == "BPE");
        let mut tok: tokenizers::Tokenizer = serde_json::from_value(j)
            .map_err(|e| invalid(&path, format!("not a tokenizers file: {e}")))?;

        // special tokens that the class adds when the file lacks them
        let mut wanted: Vec<tokenizers::AddedToken> = Vec::new();
        let mut push = |content: &str, lstrip: bool, normalized: bool| {
            if content.is_empty() || wanted.iter().any(|w| w.content == content) {
                return;
            }
            let mut t = tokenizers::AddedToken::from(content.to_string(), true);
            t.lstrip = lstrip;
            t.normalized = normalized;
            wanted.push(t);
        };
        for key in SPECIAL_TOKEN_KEYS {
            if let Some(s) = cfg.special(class, key) {
                let mask_lstrip = key == "mask_token"
                    && matches!(class, Class::MBart | Class::MBart50 | Class::Nllb);
                push(&s, mask_lstrip, mask_lstrip && class == Class::Nllb);
            }
        }
        if class == Class::Pegasus {
            if let Some(s) = cfg.token("mask_token_sent").or(Some("<mask_1>".into())) {
                push(&s, false, false);
            }
        }
        for s in cfg.extra_special().unwrap_or_default() {
            push(&s, false, false);
        }
        let class_extra: Vec<String> = match class {
            Class::T5 if cfg.extra_special().is_none() => {
                let n = cfg
                    .map
                    .get("extra_ids")
                    .and_then(Value::as_u64)
                    .unwrap_or(100);
                (0..n).map(|i| format!("<extra_id_{i}>")).collect()
            }
            Class::Pegasus => {
                let offset = cfg.map.get("offset").and_then(Value::as_u64).unwrap_or(103);
                (2..offset).map(|i| format!("<unk_{i}>")).collect()
            }
            Class::MBart => words(MBART_CODES),
            Class::MBart50 => {
                let mut c = words(MBART_CODES);
                c.extend(words(MBART50_EXTRA_CODES));
                c
            }
            Class::Nllb if cfg.extra_special().is_none() => words(NLLB_CODES),
            _ => Vec::new(),
        };
        for s in &class_extra {
            push(s, false, false);
        }
        let missing: Vec<tokenizers::AddedToken> = wanted
            .into_iter()
            .filter(|t| {
                !tok.get_added_vocabulary()
                    .get_vocab()
                    .contains_key(&t.content)
            })
            .collect();
        if !missing.is_empty() {
            tok.add_special_tokens(missing)
                .map_err(|e| invalid(&path, format!("cannot add special tokens: {e}")))?;
        }
        if !spm_added.is_empty() {
            tok.add_tokens(spm_added)
                .map_err(|e| invalid(&path, format!("cannot add special tokens: {e}")))?;
        }

        let eos_token = cfg.special(class, "eos_token");
        let eos_id = eos_token.as_deref().and_then(|e| tok.token_to_id(e));
        let pad_id = cfg
            .special(class, "pad_token")
            .and_then(|p| tok.token_to_id(&p));
        let (lang_codes, placement) = match class {
            Class::MBart => (words(MBART_CODES), Some(LangPlacement::Suffix)),
            Class::MBart50 => {
                let mut c = words(MBART_CODES);
                c.extend(words(MBART50_EXTRA_CODES));
                (c, Some(LangPlacement::Prefix))
            }
            Class::Nllb => {
                let codes = cfg.extra_special().unwrap_or_else(|| words(NLLB_CODES));
                let placement = if cfg.bool("legacy_behaviour", false) {
                    LangPlacement::Suffix
                } else {
                    LangPlacement::Prefix
                };
                (codes, Some(placement))
            }
            _ => (Vec::new(), None),
        };
        let lang_codes: Vec<String> = lang_codes
            .into_iter()
            .filter(|c| tok.token_to_id(c).is_some() && Some(c) != eos_token.as_ref())
            .filter(|c| {
                // NLLB lists may carry other special tokens: keep language-code shapes
                class != Class::Nllb || c.contains('_')
            })
            .collect();
        let lang_tokens = lang_codes.iter().map(|c| (c.clone(), c.clone())).collect();
        Ok(Seq2SeqTokenizer {
            class,
            dir: dir.to_path_buf(),
            backend: Backend::Fast(Box::new(FastTokenizer { tok, is_bpe })),
            clean_up_tokenization_spaces: false,
            cleanup_for_bpe: false,
            truncate_left: false,
            lang_codes,
            lang_tokens,
            lang_placement: placement,
            src_lang: None,
            eos_token,
            eos_id,
            pad_id,
        })
    }

    fn load_slow(dir: &Path, class: Class, cfg: &TokConfig) -> Result<Self, TokenizerError> {
        let files: &[&str] = match class {
            Class::Marian => &["source.spm", "target.spm", "vocab.json"],
            _ => &["vocab.json", "sentencepiece.bpe.model"],
        };
        let missing: Vec<&str> = files
            .iter()
            .copied()
            .filter(|f| !dir.join(f).is_file())
            .collect();
        if !missing.is_empty() {
            return Err(TokenizerError::MissingFiles {
                dir: dir.to_path_buf(),
                class: class.name().to_string(),
                looked_for: format!("{} (missing: {})", files.join(", "), missing.join(", ")),
            });
        }
        let vocab_path = dir.join("vocab.json");
        let encoder = load_vocab_json(&vocab_path)?;
        let separate_vocabs = class == Class::Marian && cfg.bool("separate_vocabs", false);
        let (spm, target_spm) = match class {
            Class::Marian => (
                SpModel::from_file(&dir.join("source.spm"))?,
                Some(SpModel::from_file(&dir.join("target.spm"))?),
            ),
            _ => (
                SpModel::from_file(&dir.join("sentencepiece.bpe.model"))?,
                None,
            ),
        };
        let decoder_map = if separate_vocabs {
            let p = dir.join("target_vocab.json");
            if !p.is_file() {
                return Err(TokenizerError::MissingFiles {
                    dir: dir.to_path_buf(),
                    class: class.name().to_string(),
                    looked_for: "target_vocab.json (separate_vocabs is true)".into(),
                });
            }
            load_vocab_json(&p)?
        } else {
            encoder.clone()
        };
        let decoder: HashMap<u32, String> = decoder_map.into_iter().map(|(k, v)| (v, k)).collect();

        let unk = cfg
            .special(class, "unk_token")
            .unwrap_or_else(|| "<unk>".into());
        if !encoder.contains_key(&unk) {
            return Err(invalid(
                &vocab_path,
                format!("the unknown token {unk:?} is not in the vocabulary"),
            ));
        }

        // M2M100 language tokens: `__xx__`, ids after vocab.json
        let (codes, lang_tokens): (Vec<String>, Vec<String>) = if class == Class::M2M100 {
            let list = match cfg.str("language_codes").unwrap_or("m2m100") {
                "wmt21" => words(WMT21_CODES),
                _ => words(M2M100_CODES),
            };
            let toks = list.iter().map(|c| format!("__{c}__")).collect();
            (list, toks)
        } else {
            (Vec::new(), Vec::new())
        };

        // added tokens: `added_tokens_decoder` of the config, then every special token
        let mut added: HashMap<u32, Added> = HashMap::new();
        let mut added_ids: HashMap<String, u32> = HashMap::new();
        let mut config_specials: Vec<String> = Vec::new();
        if let Some(Value::Object(atd)) = cfg.map.get("added_tokens_decoder") {
            for (k, v) in atd {
                let id: u32 = k
                    .parse()
                    .map_err(|_| invalid(&cfg.path, format!("added_tokens_decoder key {k:?}")))?;
                let content = token_content(v)
                    .ok_or_else(|| invalid(&cfg.path, format!("added token {k} has no content")))?;
                let flag = |f: &str| v.get(f).and_then(Value::as_bool).unwrap_or(false);
                if flag("special") {
                    config_specials.push(content.clone());
                }
                added_ids.insert(content.clone(), id);
                added.insert(
                    id,
                    Added {
                        content,
                        lstrip: flag("lstrip"),
                        rstrip: flag("rstrip"),
                        single_word: flag("single_word"),
                    },
                );
            }
        }
        let mut special_list: Vec<String> = Vec::new();
        for key in SPECIAL_TOKEN_KEYS {
            if let Some(s) = cfg.special(class, key) {
                if !special_list.contains(&s) {
                    special_list.push(s);
                }
            }
        }
        for s in cfg
            .extra_special()
            .unwrap_or_default()
            .into_iter()
            .chain(config_specials)
        {
            if !special_list.contains(&s) {
                special_list.push(s);
            }
        }
        // M2M100's `lang_token_to_id`: after vocab.json, whether or not the language tokens
        // are special (they are only when the config lists them as additional special tokens)
        let lang_token_ids: HashMap<String, u32> = lang_tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), (encoder.len() + i) as u32))
            .collect();
        // `_add_tokens(all_special_tokens)`: in the vocabulary -> that id, else appended
        let mut vocab_keys: HashSet<String> = encoder.keys().cloned().collect();
        vocab_keys.extend(added_ids.keys().cloned());
        let mut next_id = vocab_keys.len() as u32;
        for s in &special_list {
            if added_ids.contains_key(s) {
                continue;
            }
            let known = encoder.get(s).or_else(|| lang_token_ids.get(s));
            let id = match known {
                Some(&id) => {
                    vocab_keys.insert(s.clone());
                    id
                }
                None => {
                    let id = next_id;
                    next_id += 1;
                    vocab_keys.insert(s.clone());
                    id
                }
            };
            added_ids.insert(s.clone(), id);
            added.insert(
                id,
                Added {
                    content: s.clone(),
                    lstrip: false,
                    rstrip: false,
                    single_word: false,
                },
            );
        }
        let mut special_tokens: HashSet<String> = special_list.iter().cloned().collect();
        let mut slow = SlowTokenizer {
            class,
            spm,
            target_spm,
            separate_vocabs,
            unk_id: encoder[&unk],
            eos_id: 0,
            encoder,
            decoder,
            added_max_len: added_ids.keys().map(String::len).max().unwrap_or(0),
            added,
            added_ids,
            special_tokens: HashSet::new(),
            special_ids: HashSet::new(),
            vocab_len: vocab_keys.len(),
            lang_token_ids,
        };
        let eos_token = cfg.special(class, "eos_token");
        slow.eos_id = slow.token_to_id(eos_token.as_deref().unwrap_or("</s>"));
        special_tokens.retain(|s| !s.is_empty());
        slow.special_ids = special_tokens.iter().map(|s| slow.token_to_id(s)).collect();
        slow.special_tokens = special_tokens;
        let pad_id = cfg
            .special(class, "pad_token")
            .map(|p| slow.token_to_id(&p));

        let (lang_codes, lang_map, placement) = match class {
            Class::M2M100 => (
                codes.clone(),
                codes.iter().cloned().zip(lang_tokens).collect(),
                Some(LangPlacement::Prefix),
            ),
            _ => {
                // Marian: `supported_language_codes` (target-language tokens `>>xx<<`)
                let mut codes: Vec<String> = if separate_vocabs {
                    Vec::new()
                } else {
                    slow.encoder
                        .keys()
                        .filter(|k| k.starts_with(">>") && k.ends_with("<<"))
                        .cloned()
                        .collect()
                };
                codes.sort_by_key(|c| slow.encoder[c]);
                let map = codes.iter().map(|c| (c.clone(), c.clone())).collect();
                (codes, map, None)
            }
        };
        Ok(Seq2SeqTokenizer {
            class,
            dir: dir.to_path_buf(),
            eos_id: Some(slow.eos_id),
            backend: Backend::Slow(Box::new(slow)),
            clean_up_tokenization_spaces: false,
            cleanup_for_bpe: false,
            truncate_left: false,
            lang_codes,
            lang_tokens: lang_map,
            lang_placement: placement,
            src_lang: None,
            eos_token,
            pad_id,
        })
    }

    /// The transformers class this tokenizer reproduces (e.g. `"T5Tokenizer"`).
    pub fn class_name(&self) -> &'static str {
        self.class.name()
    }

    fn unknown_language(&self, code: &str) -> TokenizerError {
        TokenizerError::UnknownLanguage {
            code: code.to_string(),
            class: self.class.name().to_string(),
            dir: self.dir.clone(),
            valid: if self.lang_codes.is_empty() {
                "none".to_string()
            } else {
                self.lang_codes.join(", ")
            },
        }
    }

    /// The token string of a language code (`en_XX`, `eng_Latn`; M2M100 `en` or `__en__`;
    /// Marian `>>fra<<` or `fra`).
    fn lang_token(&self, lang: &str) -> Option<&str> {
        if let Some(t) = self.lang_tokens.get(lang) {
            return Some(t);
        }
        match self.class {
            Class::M2M100 => self
                .lang_tokens
                .values()
                .find(|t| t.as_str() == lang)
                .map(String::as_str),
            Class::Marian => self
                .lang_tokens
                .get(&format!(">>{lang}<<"))
                .map(String::as_str),
            _ => None,
        }
    }

    /// Sets the source language (mBART, NLLB, M2M100): the language token the input ids
    /// start (or end) with. An unknown code is an error that lists the valid ones.
    pub fn set_src_lang(&mut self, lang: &str) -> Result<(), TokenizerError> {
        let Some(placement) = self.lang_placement else {
            let hint = match self.class {
                Class::Marian => {
                    "the checkpoint fixes the source language; a multilingual-target Marian model takes a >>xx<< token at the start of the text"
                }
                _ => "it is not a multilingual (mBART/NLLB/M2M100) tokenizer",
            };
            return Err(TokenizerError::NoSourceLanguage {
                class: self.class.name().to_string(),
                dir: self.dir.clone(),
                hint: hint.to_string(),
            });
        };
        let token = self
            .lang_token(lang)
            .ok_or_else(|| self.unknown_language(lang))?
            .to_string();
        let lang_id = self.lang_id(lang)?;
        let eos = self.eos_token.clone().unwrap_or_else(|| "</s>".into());
        let eos_id = self.eos_id.ok_or_else(|| TokenizerError::Backend {
            dir: self.dir.clone(),
            message: format!("the end-of-sequence token {eos:?} is not in the vocabulary"),
        })?;
        match &mut self.backend {
            Backend::Fast(f) => {
                let specials = [(token.as_str(), lang_id), (eos.as_str(), eos_id)];
                let tpl = match placement {
                    LangPlacement::Prefix => template(
                        &[&token, "$A", &eos],
                        &[&token, "$A", "$B", &eos],
                        &specials,
                    ),
                    LangPlacement::Suffix => template(
                        &["$A", &eos, &token],
                        &["$A", "$B", &eos, &token],
                        &specials,
                    ),
                };
                let pp: tokenizers::PostProcessorWrapper =
                    serde_json::from_value(tpl).map_err(|e| TokenizerError::Backend {
                        dir: self.dir.clone(),
                        message: format!("cannot build the language template: {e}"),
                    })?;
                f.tok.with_post_processor(Some(pp));
            }
            Backend::Slow(_) => {}
        }
        self.src_lang = Some(lang.to_string());
        Ok(())
    }

    /// The current source language, if the tokenizer has one.
    pub fn src_lang(&self) -> Option<&str> {
        self.src_lang.as_deref()
    }

    /// The id of a language code's token (the forced BOS for `--tgt-lang`).
    pub fn lang_id(&self, lang: &str) -> Result<u32, TokenizerError> {
        let token = self
            .lang_token(lang)
            .ok_or_else(|| self.unknown_language(lang))?;
        let id = match &self.backend {
            Backend::Fast(f) => f.tok.token_to_id(token),
            Backend::Slow(s) => Some(s.token_to_id(token)),
        };
        id.ok_or_else(|| self.unknown_language(lang))
    }

    /// The language codes `set_src_lang`/`lang_id` accept (empty for monolingual tokenizers).
    pub fn lang_codes(&self) -> &[String] {
        &self.lang_codes
    }

    /// `tok(text).input_ids`: the ids with the class's special tokens added.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, TokenizerError> {
        match &self.backend {
            Backend::Fast(f) => {
                let enc = f.tok.encode(text, true).map_err(|e| self.backend_err(e))?;
                Ok(enc.get_ids().to_vec())
            }
            Backend::Slow(s) => Ok(self.wrap_slow(s, s.encode_content(text))),
        }
    }

    fn wrap_slow(&self, s: &SlowTokenizer, content: Vec<u32>) -> Vec<u32> {
        let mut ids = Vec::with_capacity(content.len() + 2);
        if s.class == Class::M2M100 {
            if let Some(lang) = &self.src_lang {
                if let Ok(id) = self.lang_id(lang) {
                    ids.push(id);
                }
            }
        }
        ids.extend(content);
        ids.push(s.eos_id);
        ids
    }

    fn n_special(&self) -> usize {
        match &self.backend {
            Backend::Fast(f) => {
                use tokenizers::PostProcessor;
                f.tok
                    .get_post_processor()
                    .map(|p| p.added_tokens(false))
                    .unwrap_or(0)
            }
            Backend::Slow(s) => {
                if s.class == Class::M2M100 {
                    2
                } else {
                    1
                }
            }
        }
    }

    /// `tok(text, truncation=True, max_length=max_len).input_ids`: at most `max_len` ids, the
    /// special tokens kept and the text cut (on the right, or on the left with
    /// `truncation_side: "left"`); also whether anything was cut.
    pub fn encode_truncated(
        &self,
        text: &str,
        max_len: usize,
    ) -> Result<(Vec<u32>, bool), TokenizerError> {
        let special = self.n_special();
        if max_len < special {
            return Err(TokenizerError::MaxLengthTooSmall {
                max_len,
                special,
                class: self.class.name().to_string(),
                dir: self.dir.clone(),
            });
        }
        let room = max_len - special;
        let direction = if self.truncate_left {
            tokenizers::TruncationDirection::Left
        } else {
            tokenizers::TruncationDirection::Right
        };
        match &self.backend {
            Backend::Fast(f) => {
                let mut enc = f.tok.encode(text, false).map_err(|e| self.backend_err(e))?;
                let cut = enc.len() > room;
                if cut {
                    enc.truncate(room, 0, direction);
                }
                let enc = f
                    .tok
                    .post_process(enc, None, true)
                    .map_err(|e| self.backend_err(e))?;
                Ok((enc.get_ids().to_vec(), cut))
            }
            Backend::Slow(s) => {
                let mut content = s.encode_content(text);
                let cut = content.len() > room;
                if cut {
                    if self.truncate_left {
                        content.drain(..content.len() - room);
                    } else {
                        content.truncate(room);
                    }
                }
                Ok((self.wrap_slow(s, content), cut))
            }
        }
    }

    /// `tok.decode(ids, skip_special_tokens=...)` with the tokenizer's default
    /// `clean_up_tokenization_spaces`.
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String, TokenizerError> {
        let (text, cleanup) = match &self.backend {
            Backend::Fast(f) => {
                let text = f
                    .tok
                    .decode(ids, skip_special_tokens)
                    .map_err(|e| self.backend_err(e))?;
                (
                    text,
                    self.clean_up_tokenization_spaces && (!f.is_bpe || self.cleanup_for_bpe),
                )
            }
            Backend::Slow(s) => (
                s.decode(ids, skip_special_tokens, &self.dir)?,
                self.clean_up_tokenization_spaces,
            ),
        };
        Ok(if cleanup {
            clean_up_tokenization(&text)
        } else {
            text
        })
    }

    /// `len(tokenizer)`: the vocabulary with the added tokens.
    pub fn vocab_size(&self) -> usize {
        match &self.backend {
            Backend::Fast(f) => f.tok.get_vocab_size(true),
            Backend::Slow(s) => s.vocab_len,
        }
    }

    /// The token string of an id (`convert_ids_to_tokens`), None if unknown.
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        match &self.backend {
            Backend::Fast(f) => f.tok.id_to_token(id),
            Backend::Slow(s) => s.id_to_token(id),
        }
    }

    /// The id of the end-of-sequence token.
    pub fn eos_id(&self) -> Option<u32> {
        self.eos_id
    }

    /// The id of the padding token.
    pub fn pad_id(&self) -> Option<u32> {
        self.pad_id
    }

    /// The final `tokenizers` pipeline as JSON (tokenizer.json families), for comparing with
    /// `tok.backend_tokenizer.to_str()` of transformers.
    pub fn backend_json(&self) -> Option<String> {
        match &self.backend {
            Backend::Fast(f) => f.tok.to_string(false).ok(),
            Backend::Slow(_) => None,
        }
    }

    fn backend_err(&self, e: impl std::fmt::Display) -> TokenizerError {
        TokenizerError::Backend {
            dir: self.dir.clone(),
            message: e.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleanup_rules() {
        assert_eq!(
            clean_up_tokenization("a . b , c ! d ? it 's do n't I 'm we 've you 're ' x"),
            "a. b, c! d? it's don't I'm we've you're'x"
        );
    }

    #[test]
    fn base64() {
        assert_eq!(base64_encode(b""), "");
        assert_eq!(base64_encode(b"f"), "Zg==");
        assert_eq!(base64_encode(b"fo"), "Zm8=");
        assert_eq!(base64_encode(b"foo"), "Zm9v");
        assert_eq!(base64_encode(b"foob"), "Zm9vYg==");
    }

    #[test]
    fn python_strip() {
        assert_eq!(py_strip(" \u{1c}a b\u{85}\t"), "a b");
    }

    #[test]
    fn class_names() {
        assert_eq!(Class::from_class_name("T5TokenizerFast"), Class::T5);
        assert_eq!(Class::from_class_name("BartTokenizer"), Class::Roberta);
        assert_eq!(Class::from_class_name("Foo"), Class::Generic);
        assert_eq!(Class::from_model_type("m2m_100"), Class::M2M100);
        assert_eq!(words(MBART_CODES).len(), 25);
        assert_eq!(words(MBART50_EXTRA_CODES).len(), 27);
        assert_eq!(words(NLLB_CODES).len(), 202);
        assert_eq!(words(M2M100_CODES).len(), 100);
    }
}
