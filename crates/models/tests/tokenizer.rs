//! Tokenizers against transformers 5.23: the goldens of the 8 tiny fixtures
//! (`tests/fixtures/<arch>/golden.json`, made by tools/make_fixtures.py), the real tokenizers
//! in `../shared/data/tokenizers` (`tests/fixtures/tokenizers/expected.json`, made by
//! tools/tokenizer_goldens.py) and the error messages.

use std::path::{Path, PathBuf};

use encdec_models::tokenizer::{Seq2SeqTokenizer, TokenizerError};
use serde_json::Value;

const FIXTURES: &[&str] = &[
    "t5", "t5-v1_1", "mt5", "bart", "mbart", "pegasus", "marian", "m2m100",
];

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn fixture(name: &str) -> PathBuf {
    repo_root().join("tests/fixtures").join(name)
}

fn shared_data() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data")
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap_or_else(|| panic!("not a list of ids: {v}"))
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

fn model_type(dir: &Path) -> String {
    read_json(&dir.join("config.json"))["model_type"]
        .as_str()
        .unwrap()
        .to_string()
}

/// The fixture's tokenizer, with the golden's source language set.
fn load_fixture(name: &str) -> (Seq2SeqTokenizer, Value) {
    let dir = fixture(name);
    let golden = read_json(&dir.join("golden.json"));
    let mut tok = Seq2SeqTokenizer::from_dir(&dir, &model_type(&dir))
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    if let Some(lang) = golden["src_lang"].as_str() {
        tok.set_src_lang(lang).unwrap();
    }
    (tok, golden)
}

/// Counts exact matches; every mismatch is printed and fails the test at the end.
#[derive(Default)]
struct Tally {
    checked: usize,
    failures: Vec<String>,
}

impl Tally {
    fn check<T: PartialEq + std::fmt::Debug>(&mut self, what: String, got: T, want: T) {
        self.checked += 1;
        if got != want {
            self.failures
                .push(format!("{what}:\n    got  {got:?}\n    want {want:?}"));
        }
    }

    fn finish(self, label: &str) {
        println!(
            "{label}: {}/{} exact",
            self.checked - self.failures.len(),
            self.checked
        );
        if !self.failures.is_empty() {
            panic!(
                "{label}: {} of {} differ:\n{}",
                self.failures.len(),
                self.checked,
                self.failures.join("\n")
            );
        }
    }
}

#[test]
fn tokenizer_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Seq2SeqTokenizer>();
    assert_send_sync::<TokenizerError>();
}

#[test]
fn fixture_goldens_match_transformers() {
    for &name in FIXTURES {
        let (tok, g) = load_fixture(name);
        let mut t = Tally::default();
        let info = &g["tokenizer"];
        t.check(
            format!("{name} class"),
            tok.class_name(),
            info["class"].as_str().unwrap(),
        );
        t.check(
            format!("{name} len"),
            tok.vocab_size() as u64,
            info["len"].as_u64().unwrap(),
        );
        t.check(
            format!("{name} eos id"),
            tok.eos_id().map(u64::from),
            info["eos_token_id"].as_u64(),
        );
        t.check(
            format!("{name} pad id"),
            tok.pad_id().map(u64::from),
            info["pad_token_id"].as_u64(),
        );
        if let Some(tgt) = g["tgt_lang"].as_str() {
            t.check(
                format!("{name} forced bos ({tgt})"),
                tok.lang_id(tgt).ok().map(u64::from),
                g["forced_bos_token_id"].as_u64(),
            );
        }
        for case in g["cases"].as_array().unwrap() {
            let text = case["text"].as_str().unwrap();
            let cname = case["name"].as_str().unwrap();
            t.check(
                format!("{name}/{cname} input_ids"),
                tok.encode(text).unwrap(),
                ids(&case["input_ids"]),
            );
            let tokens: Vec<String> = ids(&case["input_ids"])
                .iter()
                .map(|&i| tok.id_to_token(i).unwrap_or_default())
                .collect();
            let want_tokens: Vec<String> = case["input_tokens"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_str().unwrap().to_string())
                .collect();
            t.check(format!("{name}/{cname} tokens"), tokens, want_tokens);
            t.check(
                format!("{name}/{cname} greedy text"),
                tok.decode(&ids(&case["greedy"]["sequences"]), true)
                    .unwrap(),
                case["greedy"]["text"].as_str().unwrap().to_string(),
            );
        }
        let batch = &g["batch"];
        let texts = batch["texts"].as_array().unwrap();
        for (i, text) in texts.iter().enumerate() {
            let row = ids(&batch["input_ids"][i]);
            let mask = ids(&batch["attention_mask"][i]);
            let unpadded: Vec<u32> = row
                .iter()
                .zip(&mask)
                .filter(|(_, &m)| m == 1)
                .map(|(&x, _)| x)
                .collect();
            t.check(
                format!("{name}/batch[{i}] input_ids"),
                tok.encode(text.as_str().unwrap()).unwrap(),
                unpadded,
            );
            t.check(
                format!("{name}/batch[{i}] greedy text"),
                tok.decode(&ids(&batch["greedy"]["sequences"][i]), true)
                    .unwrap(),
                batch["greedy"]["texts"][i].as_str().unwrap().to_string(),
            );
        }
        for gen in g["generation"].as_array().unwrap() {
            let gname = gen["name"].as_str().unwrap();
            for run in gen["runs"].as_array().unwrap() {
                let input = run["input"].as_str().unwrap();
                t.check(
                    format!("{name}/{gname}/{input} input_ids"),
                    tok.encode(run["text"].as_str().unwrap()).unwrap(),
                    ids(&run["input_ids"]),
                );
                for (k, seq) in run["sequences"].as_array().unwrap().iter().enumerate() {
                    t.check(
                        format!("{name}/{gname}/{input}[{k}] text"),
                        tok.decode(&ids(seq), true).unwrap(),
                        run["texts"][k].as_str().unwrap().to_string(),
                    );
                }
            }
        }
        t.finish(name);
    }
}

#[test]
fn real_tokenizers_match_transformers() {
    let data = shared_data();
    if !data.join("tokenizers").is_dir() {
        println!("SKIP {} is absent", data.join("tokenizers").display());
        return;
    }
    let expected = read_json(&repo_root().join("tests/fixtures/tokenizers/expected.json"));
    let sentences = expected["sentences"].as_array().unwrap();
    for (name, entry) in expected["tokenizers"].as_object().unwrap() {
        if name.starts_with("whisper") {
            println!("SKIP {name}: Whisper tokenizers are out of scope of Seq2SeqTokenizer");
            continue;
        }
        let info = &entry["info"];
        let dir = data.join(info["dir"].as_str().unwrap());
        let model_type = match name.as_str() {
            "t5-small" => "t5",
            "bart-large-cnn" => "bart",
            "pegasus" => "pegasus",
            other => panic!("unexpected tokenizer {other}"),
        };
        let tok =
            Seq2SeqTokenizer::from_dir(&dir, model_type).unwrap_or_else(|e| panic!("{name}: {e}"));
        let mut t = Tally::default();
        t.check(
            format!("{name} class"),
            tok.class_name(),
            info["class"].as_str().unwrap(),
        );
        t.check(
            format!("{name} len"),
            tok.vocab_size() as u64,
            info["len"].as_u64().unwrap(),
        );
        for (s, r) in sentences.iter().zip(entry["results"].as_array().unwrap()) {
            let sname = s["name"].as_str().unwrap();
            let text = s["text"].as_str().unwrap();
            let want = ids(&r["ids"]);
            t.check(
                format!("{name}/{sname} ids"),
                tok.encode(text).unwrap(),
                want.clone(),
            );
            t.check(
                format!("{name}/{sname} decoded"),
                tok.decode(&want, true).unwrap(),
                r["decoded"].as_str().unwrap().to_string(),
            );
            t.check(
                format!("{name}/{sname} decoded_with_special"),
                tok.decode(&want, false).unwrap(),
                r["decoded_with_special"].as_str().unwrap().to_string(),
            );
        }
        t.finish(name);
    }
}

/// `tok(long, truncation=True, max_length=8).input_ids` from transformers, and the full
/// length; max_length = number of special tokens keeps only those.
#[test]
fn truncation_keeps_special_tokens() {
    let want: &[(&str, &[u32], usize)] = &[
        ("t5", &[3, 84, 5, 3, 138, 8, 87, 1], 64),
        ("bart", &[0, 321, 479, 271, 262, 563, 278, 2], 49),
        ("mbart", &[404, 4, 5, 33, 319, 326, 221, 2], 92),
        ("pegasus", &[107, 205, 108, 107, 247, 112, 141, 1], 55),
        ("marian", &[3, 94, 4, 3, 127, 8, 47, 0], 54),
        ("m2m100", &[403, 10, 31, 318, 325, 252, 26, 2], 81),
    ];
    for &(name, ids8, full_len) in want {
        let (tok, g) = load_fixture(name);
        let case = g["cases"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == "long")
            .unwrap();
        let text = case["text"].as_str().unwrap();
        let full = tok.encode(text).unwrap();
        assert_eq!(full.len(), full_len, "{name}");
        assert_eq!(
            tok.encode_truncated(text, 8).unwrap(),
            (ids8.to_vec(), true),
            "{name}"
        );
        assert_eq!(
            tok.encode_truncated(text, 1000).unwrap(),
            (full.clone(), false),
            "{name}"
        );
        assert_eq!(
            tok.encode_truncated(text, full_len).unwrap(),
            (full.clone(), false),
            "{name}"
        );
        let specials = tok.encode("").unwrap();
        assert_eq!(
            tok.encode_truncated(text, specials.len()).unwrap(),
            (specials.clone(), true),
            "{name}"
        );
        if !specials.is_empty() {
            let err = tok.encode_truncated(text, specials.len() - 1).unwrap_err();
            assert!(
                matches!(err, TokenizerError::MaxLengthTooSmall { .. }),
                "{name}: {err}"
            );
        }
    }
}

const M2M100_CODES: &str = "af am ar ast az ba be bg bn br bs ca ceb cs cy da de el en es et fa \
    ff fi fr fy ga gd gl gu ha he hi hr ht hu hy id ig ilo is it ja jv ka kk km kn ko lb lg ln lo \
    lt lv mg mk ml mn mr ms my ne nl no ns oc or pa pl ps pt ro ru sd si sk sl so sq sr ss su sv \
    sw ta th tl tn tr uk ur uz vi wo xh yi yo zh zu";

/// An `M2M100Tokenizer` directory (vocab.json + sentencepiece.bpe.model, no tokenizer.json)
/// made from the NLLB-style fixture's BPE model and vocabulary. With `special_langs` the
/// config lists the `__xx__` tokens as additional special tokens, as facebook/m2m100_418M's
/// does.
fn m2m100_dir(special_langs: bool) -> tempfile::TempDir {
    let src = fixture("m2m100");
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        src.join("sentencepiece.bpe.model"),
        dir.path().join("sentencepiece.bpe.model"),
    )
    .unwrap();
    let tj = read_json(&src.join("tokenizer.json"));
    std::fs::write(
        dir.path().join("vocab.json"),
        serde_json::to_string(&tj["model"]["vocab"]).unwrap(),
    )
    .unwrap();
    let mut cfg = serde_json::json!({
        "tokenizer_class": "M2M100Tokenizer", "src_lang": "en", "tgt_lang": "fr",
        "language_codes": "m2m100", "bos_token": "<s>", "eos_token": "</s>",
        "sep_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>",
    });
    if special_langs {
        let langs: Vec<String> = M2M100_CODES
            .split_whitespace()
            .map(|c| format!("__{c}__"))
            .collect();
        cfg["additional_special_tokens"] = serde_json::json!(langs);
    }
    std::fs::write(dir.path().join("tokenizer_config.json"), cfg.to_string()).unwrap();
    dir
}

/// Expected values from transformers 5.23 `M2M100Tokenizer` on the same directories.
#[test]
fn m2m100_sentencepiece_tokenizer() {
    let dir = m2m100_dir(true);
    let mut tok = Seq2SeqTokenizer::from_dir(dir.path(), "m2m_100").unwrap();
    assert_eq!(tok.class_name(), "M2M100Tokenizer");
    assert_eq!(tok.vocab_size(), 501);
    assert_eq!(tok.lang_codes().len(), 100);
    assert_eq!(tok.lang_id("fr").unwrap(), 425);
    assert_eq!(tok.lang_id("__fr__").unwrap(), 425);
    assert_eq!(
        tok.encode("the small house").unwrap(),
        [419, 10, 13, 332, 125, 30, 25, 73, 2]
    );
    assert_eq!(
        tok.encode("  Café ｆｕｌｌ ﬁsh… naïve __fr__ x </s> y  ")
            .unwrap(),
        [
            419, 317, 377, 260, 305, 35, 15, 57, 326, 338, 338, 338, 27, 296, 425, 317, 367, 2,
            315, 2
        ]
    );
    assert_eq!(tok.encode("").unwrap(), [419, 2]);
    tok.set_src_lang("de").unwrap();
    assert_eq!(
        tok.encode("the small house").unwrap(),
        [417, 10, 13, 332, 125, 30, 25, 73, 2]
    );
    assert_eq!(
        tok.encode_truncated("the small house and the large house", 6)
            .unwrap(),
        (vec![417, 10, 13, 332, 125, 2], true)
    );
    let ids = [425, 10, 13, 332, 125, 2];
    assert_eq!(tok.decode(&ids, true).unwrap(), "the small");
    assert_eq!(tok.decode(&ids, false).unwrap(), "__fr__the small</s>");
    assert_eq!(tok.id_to_token(425).as_deref(), Some("__fr__"));

    // without the config's list the language tokens are not special (transformers 5.23)
    let dir = m2m100_dir(false);
    let tok = Seq2SeqTokenizer::from_dir(dir.path(), "m2m_100").unwrap();
    assert_eq!(tok.vocab_size(), 401);
    assert_eq!(
        tok.encode("hi __fr__").unwrap(),
        [419, 30, 323, 317, 3, 330, 322, 3, 2]
    );
    assert_eq!(tok.decode(&ids, true).unwrap(), "__fr__ the small");
}

/// A Marian vocabulary with target-language tokens (`>>de<<`, `>>fra<<`): transformers
/// splits a leading `>>xx<<` off the text and looks it up in vocab.json.
#[test]
fn marian_language_tokens() {
    let src = fixture("marian");
    let dir = tempfile::tempdir().unwrap();
    for f in ["source.spm", "target.spm"] {
        std::fs::copy(src.join(f), dir.path().join(f)).unwrap();
    }
    let mut vocab = read_json(&src.join("vocab.json"));
    let v = vocab.as_object_mut().unwrap();
    assert_eq!(v.remove("<pad>"), Some(serde_json::json!(504)));
    v.insert(">>de<<".into(), 504.into());
    v.insert(">>fra<<".into(), 505.into());
    v.insert("<pad>".into(), 506.into());
    std::fs::write(dir.path().join("vocab.json"), vocab.to_string()).unwrap();
    let mut cfg = read_json(&src.join("tokenizer_config.json"));
    let atd = cfg["added_tokens_decoder"].as_object_mut().unwrap();
    let pad = atd.remove("504").unwrap();
    atd.insert("506".into(), pad);
    std::fs::write(dir.path().join("tokenizer_config.json"), cfg.to_string()).unwrap();

    let tok = Seq2SeqTokenizer::from_dir(dir.path(), "marian").unwrap();
    assert_eq!(tok.vocab_size(), 507);
    assert_eq!(tok.lang_codes(), [">>de<<", ">>fra<<"]);
    assert_eq!(tok.lang_id("fra").unwrap(), 505);
    assert_eq!(tok.lang_id(">>de<<").unwrap(), 504);
    assert_eq!(tok.pad_id(), Some(506));
    let cases: &[(&str, &[u32])] = &[
        (">>fra<< the small house", &[505, 3, 127, 141, 0]),
        (">>de<<the house </s> x", &[504, 3, 141, 0, 2, 334, 0]),
        ("the >>de<< house", &[3, 2, 1, 25, 5, 1, 141, 0]),
        (">>xx<< house", &[1, 141, 0]),
    ];
    for &(text, want) in cases {
        assert_eq!(tok.encode(text).unwrap(), want, "{text:?}");
    }
    let ids = [505, 3, 127, 141, 0];
    assert_eq!(tok.decode(&ids, true).unwrap(), ">>fra<< the small house");
    assert_eq!(
        tok.decode(&ids, false).unwrap(),
        ">>fra<< the small house</s>"
    );
    assert_eq!(
        tok.encode_truncated("the people of the small town", 4)
            .unwrap(),
        (vec![3, 94, 4, 0], true)
    );
}

#[test]
fn source_language_switches_the_prefix() {
    let (mut tok, _) = load_fixture("mbart");
    let en = tok.encode("the small house").unwrap();
    assert_eq!(en[0], tok.lang_id("en_XX").unwrap());
    tok.set_src_lang("de_DE").unwrap();
    let de = tok.encode("the small house").unwrap();
    assert_eq!(de[0], tok.lang_id("de_DE").unwrap());
    assert_eq!(en[1..], de[1..]);
    assert_eq!(tok.src_lang(), Some("de_DE"));
    assert_eq!(tok.lang_codes().len(), 52);

    let (mut tok, _) = load_fixture("m2m100");
    assert_eq!(tok.lang_codes(), ["deu_Latn", "eng_Latn", "fra_Latn"]);
    tok.set_src_lang("fra_Latn").unwrap();
    assert_eq!(
        tok.encode("").unwrap(),
        [tok.lang_id("fra_Latn").unwrap(), 2]
    );
}

fn copy_dir(src: &Path, files: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for f in files {
        std::fs::copy(src.join(f), dir.path().join(f)).unwrap();
    }
    dir
}

#[test]
fn error_missing_tokenizer_files() {
    let empty = tempfile::tempdir().unwrap();
    let err = Seq2SeqTokenizer::from_dir(empty.path(), "t5").unwrap_err();
    let msg = err.to_string();
    println!("{msg}");
    assert!(matches!(err, TokenizerError::MissingFiles { .. }));
    assert!(msg.contains(&empty.path().display().to_string()), "{msg}");
    assert!(msg.contains("tokenizer.json"), "{msg}");
    assert!(msg.contains("T5Tokenizer"), "{msg}");

    let dir = copy_dir(&fixture("marian"), &["vocab.json", "tokenizer_config.json"]);
    let err = Seq2SeqTokenizer::from_dir(dir.path(), "marian").unwrap_err();
    let msg = err.to_string();
    println!("{msg}");
    assert!(msg.contains(&dir.path().display().to_string()), "{msg}");
    assert!(
        msg.contains("source.spm, target.spm, vocab.json (missing: source.spm, target.spm)"),
        "{msg}"
    );

    let err = Seq2SeqTokenizer::from_dir(&empty.path().join("nope"), "t5").unwrap_err();
    assert!(err.to_string().contains("nope"), "{err}");
}

#[test]
fn error_unknown_language_lists_valid_codes() {
    let (mut tok, _) = load_fixture("mbart");
    let err = tok.set_src_lang("xx_YY").unwrap_err();
    let msg = err.to_string();
    println!("{msg}");
    assert!(matches!(err, TokenizerError::UnknownLanguage { .. }));
    assert!(msg.contains("\"xx_YY\""), "{msg}");
    assert!(
        msg.contains("en_XX, cs_CZ") || msg.contains("ar_AR, cs_CZ"),
        "{msg}"
    );
    assert!(msg.contains("de_DE") && msg.contains("sl_SI"), "{msg}");
    assert_eq!(
        tok.src_lang(),
        Some("en_XX"),
        "a failed switch keeps the old language"
    );

    let (tok, _) = load_fixture("m2m100");
    let msg = tok.lang_id("spa_Latn").unwrap_err().to_string();
    assert!(msg.contains("deu_Latn, eng_Latn, fra_Latn"), "{msg}");

    let (mut tok, _) = load_fixture("t5");
    let err = tok.set_src_lang("en").unwrap_err();
    println!("{err}");
    assert!(matches!(err, TokenizerError::NoSourceLanguage { .. }));
    let msg = tok.lang_id("de").unwrap_err().to_string();
    assert!(msg.contains("valid: none"), "{msg}");
}

#[test]
fn error_corrupt_sentencepiece_model() {
    let files = [
        "source.spm",
        "target.spm",
        "vocab.json",
        "tokenizer_config.json",
    ];
    let dir = copy_dir(&fixture("marian"), &files);
    let spm = dir.path().join("source.spm");
    std::fs::write(&spm, b"this is not a protobuf \xff\xff\xff").unwrap();
    let err = Seq2SeqTokenizer::from_dir(dir.path(), "marian").unwrap_err();
    let msg = err.to_string();
    println!("{msg}");
    assert!(matches!(err, TokenizerError::SentencePiece(_)));
    assert!(msg.starts_with(&spm.display().to_string()), "{msg}");
    assert!(msg.contains("not a valid SentencePiece model"), "{msg}");

    // cut in the middle
    let good = std::fs::read(fixture("marian").join("target.spm")).unwrap();
    let tgt = dir.path().join("target.spm");
    std::fs::copy(fixture("marian").join("source.spm"), &spm).unwrap();
    std::fs::write(&tgt, &good[..good.len() / 2]).unwrap();
    let msg = Seq2SeqTokenizer::from_dir(dir.path(), "marian")
        .unwrap_err()
        .to_string();
    println!("{msg}");
    assert!(msg.starts_with(&tgt.display().to_string()), "{msg}");

    // a broken vocab.json names that file
    std::fs::copy(fixture("marian").join("target.spm"), &tgt).unwrap();
    let vocab = dir.path().join("vocab.json");
    std::fs::write(&vocab, "{\"<unk>\": 1,").unwrap();
    let msg = Seq2SeqTokenizer::from_dir(dir.path(), "marian")
        .unwrap_err()
        .to_string();
    println!("{msg}");
    assert!(msg.starts_with(&vocab.display().to_string()), "{msg}");
}

#[test]
fn error_corrupt_tokenizer_json() {
    let dir = copy_dir(&fixture("t5"), &["tokenizer.json", "tokenizer_config.json"]);
    let path = dir.path().join("tokenizer.json");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, &text[..text.len() / 2]).unwrap();
    let err = Seq2SeqTokenizer::from_dir(dir.path(), "t5").unwrap_err();
    let msg = err.to_string();
    println!("{msg}");
    assert!(matches!(err, TokenizerError::Invalid { .. }));
    assert!(msg.starts_with(&path.display().to_string()), "{msg}");
    assert!(msg.contains("invalid JSON"), "{msg}");
    assert_eq!(msg.lines().count(), 1, "{msg}");

    // valid JSON, not a tokenizer
    std::fs::write(&path, r#"{"model": {"type": "Unigram", "vocab": 3}}"#).unwrap();
    let msg = Seq2SeqTokenizer::from_dir(dir.path(), "t5")
        .unwrap_err()
        .to_string();
    println!("{msg}");
    assert!(msg.starts_with(&path.display().to_string()), "{msg}");
    assert!(msg.contains("invalid tokenizer file"), "{msg}");

    // a BPE file where the class needs Unigram
    std::fs::copy(fixture("bart").join("tokenizer.json"), &path).unwrap();
    let msg = Seq2SeqTokenizer::from_dir(dir.path(), "t5")
        .unwrap_err()
        .to_string();
    println!("{msg}");
    assert!(msg.contains("T5Tokenizer expects a Unigram model"), "{msg}");
}

/// T5/mT5 directories with spiece.model and no tokenizer.json (as google/mt5-* ship):
/// converted as transformers does, same ids and decodes as with the tokenizer.json.
#[test]
fn t5_from_spiece_model_only() {
    for name in ["t5", "mt5"] {
        let src = fixture(name);
        let dir = copy_dir(
            &src,
            &["spiece.model", "tokenizer_config.json", "config.json"],
        );
        let tok = Seq2SeqTokenizer::from_dir(dir.path(), &model_type(&src)).unwrap();
        let g = read_json(&src.join("golden.json"));
        let mut t = Tally::default();
        t.check(
            format!("{name} len"),
            tok.vocab_size() as u64,
            g["tokenizer"]["len"].as_u64().unwrap(),
        );
        for case in g["cases"].as_array().unwrap() {
            let cname = case["name"].as_str().unwrap();
            t.check(
                format!("{name}/{cname} input_ids"),
                tok.encode(case["text"].as_str().unwrap()).unwrap(),
                ids(&case["input_ids"]),
            );
            t.check(
                format!("{name}/{cname} greedy text"),
                tok.decode(&ids(&case["greedy"]["sequences"]), true)
                    .unwrap(),
                case["greedy"]["text"].as_str().unwrap().to_string(),
            );
        }
        t.finish(&format!("{name} (spiece.model only)"));
    }
}
