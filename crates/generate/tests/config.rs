//! Generation-config resolution against what transformers 5 `generate` runs with
//! (goldens: tools/processor_goldens.py -> tests/expected/configs.json), on the
//! real checkpoint configs of ../shared/data/configs, and the bad-input errors.

use std::path::{Path, PathBuf};

use encdec_generate::{EarlyStopping, GenerationConfig, GenerationOverrides, SearchMode};
use serde_json::{json, Value};

fn manifest() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// ../shared/data/configs beside the project root, or None (the test says so).
fn data_configs() -> Option<PathBuf> {
    let d = manifest().join("../../../shared/data/configs");
    if d.is_dir() {
        Some(d)
    } else {
        eprintln!("skipped: {} is absent", d.display());
        None
    }
}

/// A scratch directory holding only config.json of `src`.
fn config_only(src: &Path, tag: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("encdec-generate-test-{}-{tag}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    std::fs::copy(src.join("config.json"), dir.join("config.json")).expect("copy config.json");
    let _ = std::fs::remove_file(dir.join("generation_config.json"));
    dir
}

/// The flags of a case; Err when a flag parser would already refuse one.
fn overrides(v: &Value) -> Result<GenerationOverrides, String> {
    let mut o = GenerationOverrides::default();
    let obj = v.as_object().expect("overrides");
    let u = |k: &str| obj.get(k).and_then(Value::as_u64).map(|x| x as usize);
    let f = |k: &str| obj.get(k).and_then(Value::as_f64);
    let ids = |k: &str| {
        obj.get(k).map(|x| match x {
            Value::Array(a) => a.iter().map(|t| t.as_u64().expect("id") as u32).collect(),
            t => vec![t.as_u64().expect("id") as u32],
        })
    };
    o.max_length = u("max_length");
    o.max_new_tokens = u("max_new_tokens");
    o.min_length = u("min_length");
    o.min_new_tokens = u("min_new_tokens");
    o.num_beams = u("num_beams");
    o.num_return_sequences = u("num_return_sequences");
    o.no_repeat_ngram_size = u("no_repeat_ngram_size");
    o.top_k = u("top_k");
    o.length_penalty = f("length_penalty");
    o.repetition_penalty = f("repetition_penalty");
    o.temperature = f("temperature");
    o.top_p = f("top_p");
    o.do_sample = obj.get("do_sample").and_then(Value::as_bool);
    o.early_stopping = match obj.get("early_stopping") {
        None => None,
        Some(Value::Bool(true)) => Some(EarlyStopping::True),
        Some(Value::Bool(false)) => Some(EarlyStopping::False),
        Some(Value::String(s)) => Some(s.parse::<EarlyStopping>().map_err(|e| e.to_string())?),
        Some(other) => return Err(format!("early_stopping {other}")),
    };
    o.forced_bos_token_id = u("forced_bos_token_id").map(|x| x as u32);
    o.forced_eos_token_id = ids("forced_eos_token_id");
    o.eos_token_id = ids("eos_token_id");
    o.pad_token_id = u("pad_token_id").map(|x| x as u32);
    Ok(o)
}

fn hf_view(c: &GenerationConfig) -> Value {
    json!({
        "max_length": c.max_length,
        "max_new_tokens": c.max_new_tokens,
        "min_length": c.min_length,
        "min_new_tokens": c.min_new_tokens,
        "num_beams": c.num_beams,
        "num_return_sequences": c.num_return_sequences,
        "length_penalty": c.length_penalty,
        "early_stopping": c.early_stopping.to_json(),
        "no_repeat_ngram_size": c.no_repeat_ngram_size,
        "encoder_no_repeat_ngram_size": c.encoder_no_repeat_ngram_size,
        "repetition_penalty": c.repetition_penalty,
        "bad_words_ids": c.bad_words_ids,
        "forced_bos_token_id": c.forced_bos_token_id,
        "forced_eos_token_id": c.forced_eos_token_id,
        "do_sample": c.do_sample,
        "temperature": c.temperature,
        "top_k": c.top_k,
        "top_p": c.top_p,
        "bos_token_id": c.bos_token_id,
        "eos_token_id": c.eos_token_id,
        "pad_token_id": c.pad_token_id,
        "decoder_start_token_id": c.decoder_start_token_id,
    })
}

#[test]
fn resolution_matches_transformers() {
    let Some(data) = data_configs() else { return };
    let path = manifest().join("tests/expected/configs.json");
    let golden: Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("configs.json")).expect("json");
    let mut checked = 0;
    for (i, case) in golden["cases"]
        .as_array()
        .expect("cases")
        .iter()
        .enumerate()
    {
        let ckpt = case["checkpoint"].as_str().expect("checkpoint");
        let dir = if ckpt == "bart-short-positions" {
            manifest().join("tests/expected/configs/bart-short-positions")
        } else if case["generation_config_json"].as_bool() == Some(true) {
            data.join(ckpt)
        } else {
            config_only(&data.join(ckpt), &format!("{ckpt}-{i}"))
        };
        let got = overrides(&case["overrides"])
            .map_err(encdec_core::Error::Invalid)
            .and_then(|over| GenerationConfig::from_checkpoint(&dir, &over));
        if case.get("hf_error").is_some() {
            let hf = &case["hf_error"];
            match got {
                Err(e) => {
                    let msg = e.to_string();
                    assert!(!msg.contains('\n'), "one line: {msg}");
                }
                Ok(c) => assert!(
                    hf.is_null(),
                    "{ckpt} {:?}: HF says {hf}, we accept: {c:?}",
                    case["overrides"]
                ),
            }
        } else {
            let got = got.unwrap_or_else(|e| panic!("{ckpt} {:?}: {e}", case["overrides"]));
            let want = &case["expected"];
            let mine = hf_view(&got);
            for (k, w) in want.as_object().expect("expected") {
                let g = &mine[k];
                let same = match (g.as_f64(), w.as_f64()) {
                    (Some(a), Some(b)) => (a - b).abs() < 1e-12,
                    _ => g == w,
                };
                assert!(
                    same,
                    "{ckpt} (generation_config.json: {}) {:?}: {k} = {g}, transformers: {w}",
                    case["generation_config_json"], case["overrides"]
                );
            }
        }
        checked += 1;
    }
    assert!(checked >= 30);
}

#[test]
fn early_stopping_string_the_hf_way() {
    // HF rejects early_stopping="sometimes"; the flag parser does too
    assert!("sometimes".parse::<EarlyStopping>().is_err());
    assert_eq!(
        "never".parse::<EarlyStopping>().ok(),
        Some(EarlyStopping::Never)
    );
    let err = GenerationConfig::from_values(
        &json!({"decoder_start_token_id": 0, "early_stopping": "sometimes"}),
        &GenerationOverrides::default(),
    )
    .expect_err("error")
    .to_string();
    assert!(err.contains("early_stopping"), "{err}");
}

#[test]
fn bart_large_cnn_defaults() {
    let Some(data) = data_configs() else { return };
    let c = GenerationConfig::from_checkpoint(
        &data.join("bart-large-cnn"),
        &GenerationOverrides::default(),
    )
    .expect("config");
    assert_eq!(c.mode(), SearchMode::BeamSearch);
    assert_eq!(
        (
            c.num_beams,
            c.max_length,
            c.min_length,
            c.no_repeat_ngram_size
        ),
        (4, 142, 56, 3)
    );
    assert_eq!(c.length_penalty, 2.0);
    assert_eq!(c.early_stopping, EarlyStopping::True);
    assert_eq!(
        (c.forced_bos_token_id, c.forced_eos_token_id.clone()),
        (Some(0), Some(vec![2]))
    );
    assert_eq!(c.decoder_start_token_id, 2);
    assert!(c.source.ends_with("generation_config.json"));
    assert!(c.warnings().is_empty());
    // --show-config
    let shown = c.to_string();
    assert!(shown.contains("num_beams = 4"), "{shown}");
    assert!(shown.contains("generation_config.json"), "{shown}");
    assert_eq!(c.to_json()["early_stopping"], json!(true));
    // flags win, and say so
    let over = GenerationOverrides {
        num_beams: Some(2),
        ..Default::default()
    };
    let c = GenerationConfig::from_checkpoint(&data.join("bart-large-cnn"), &over).expect("config");
    assert_eq!(c.num_beams, 2);
    assert_eq!(c.origin("num_beams"), "--num-beams");
    assert!(c.to_string().contains("num_beams = 2  (--num-beams)"));
}

#[test]
fn t5_small_is_greedy_20_tokens_unless_a_task_is_asked() {
    let Some(data) = data_configs() else { return };
    let dir = data.join("t5-small");
    let c =
        GenerationConfig::from_checkpoint(&dir, &GenerationOverrides::default()).expect("config");
    assert_eq!(c.mode(), SearchMode::Greedy);
    assert_eq!(c.max_length, 21);
    assert_eq!(
        c.warnings().len(),
        1,
        "default max_length is worth a warning"
    );
    assert_eq!(c.task_prefix, None);
    // opt-in: task_specific_params, as v4 pipelines applied them
    let task = GenerationOverrides {
        task: Some("summarization".into()),
        ..Default::default()
    };
    let c = GenerationConfig::from_checkpoint(&dir, &task).expect("config");
    assert_eq!(
        (
            c.num_beams,
            c.max_length,
            c.min_length,
            c.no_repeat_ngram_size
        ),
        (4, 200, 30, 3)
    );
    assert_eq!(c.early_stopping, EarlyStopping::True);
    assert_eq!(c.task_prefix.as_deref(), Some("summarize: "));
    assert!(c
        .origin("num_beams")
        .contains("task_specific_params.summarization"));
    // flags still win over the task
    let both = GenerationOverrides {
        task: Some("summarization".into()),
        num_beams: Some(2),
        ..Default::default()
    };
    assert_eq!(
        GenerationConfig::from_checkpoint(&dir, &both)
            .expect("config")
            .num_beams,
        2
    );
    let bad = GenerationOverrides {
        task: Some("poetry".into()),
        ..Default::default()
    };
    let err = GenerationConfig::from_checkpoint(&dir, &bad)
        .expect_err("error")
        .to_string();
    assert!(
        err.contains("poetry") && err.contains("translation_en_to_de"),
        "{err}"
    );
}

/// Resolve `flags` on top of a small synthetic checkpoint (vocab 100).
fn with_flags(flags: GenerationOverrides) -> Result<GenerationConfig, String> {
    let gen = json!({"decoder_start_token_id": 0, "eos_token_id": 2, "pad_token_id": 1});
    let cfg = json!({"vocab_size": 100, "model_type": "bart"});
    GenerationConfig::resolve(
        Some((&gen, Path::new("generation_config.json"))),
        &cfg,
        Path::new("config.json"),
        &flags,
    )
    .map_err(|e| e.to_string())
}

fn refused(flags: GenerationOverrides, needle: &str) {
    let err = with_flags(flags).expect_err("must be refused");
    assert!(!err.contains('\n'), "one line: {err}");
    assert!(err.contains(needle), "'{needle}' not in: {err}");
}

#[test]
fn bad_inputs_are_one_clear_line() {
    let o = GenerationOverrides::default;
    refused(
        GenerationOverrides {
            num_beams: Some(0),
            ..o()
        },
        "--num-beams",
    );
    refused(
        GenerationOverrides {
            top_p: Some(1.5),
            ..o()
        },
        "--top-p",
    );
    refused(
        GenerationOverrides {
            top_p: Some(0.0),
            ..o()
        },
        "(0, 1]",
    );
    refused(
        GenerationOverrides {
            max_new_tokens: Some(0),
            ..o()
        },
        "--max-new-tokens",
    );
    refused(
        GenerationOverrides {
            num_beams: Some(2),
            num_return_sequences: Some(3),
            ..o()
        },
        "num_beams",
    );
    refused(
        GenerationOverrides {
            num_return_sequences: Some(2),
            ..o()
        },
        "greedy",
    );
    refused(
        GenerationOverrides {
            num_return_sequences: Some(0),
            ..o()
        },
        "num_return_sequences",
    );
    refused(
        GenerationOverrides {
            forced_bos_token_id: Some(100),
            ..o()
        },
        "--forced-bos-token-id",
    );
    refused(
        GenerationOverrides {
            forced_eos_token_id: Some(vec![2, 250]),
            ..o()
        },
        "forced_eos_token_id 250",
    );
    refused(
        GenerationOverrides {
            bad_words_ids: Some(vec![vec![3, 100]]),
            ..o()
        },
        "bad_words_ids",
    );
    refused(
        GenerationOverrides {
            bad_words_ids: Some(vec![]),
            ..o()
        },
        "bad_words_ids",
    );
    refused(
        GenerationOverrides {
            do_sample: Some(true),
            temperature: Some(0.0),
            ..o()
        },
        "--temperature",
    );
    refused(
        GenerationOverrides {
            do_sample: Some(true),
            temperature: Some(-1.0),
            ..o()
        },
        "temperature",
    );
    refused(
        GenerationOverrides {
            repetition_penalty: Some(0.0),
            ..o()
        },
        "--repetition-penalty",
    );
    refused(
        GenerationOverrides {
            max_length: Some(1),
            ..o()
        },
        "--max-length",
    );
    refused(
        GenerationOverrides {
            length_penalty: Some(f64::NAN),
            ..o()
        },
        "length_penalty",
    );
    // temperature 0 without sampling is unused, as in HF
    assert!(with_flags(GenerationOverrides {
        temperature: Some(0.0),
        ..o()
    })
    .is_ok());
    // min > max is allowed with a warning, as in HF
    let c = with_flags(GenerationOverrides {
        min_new_tokens: Some(30),
        max_new_tokens: Some(10),
        ..o()
    })
    .expect("ok");
    assert!(
        c.warnings().iter().any(|w| w.contains("exceeds")),
        "{:?}",
        c.warnings()
    );
}

#[test]
fn bad_files_are_one_clear_line() {
    let dir = std::env::temp_dir().join(format!(
        "encdec-generate-test-{}-badfiles",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).expect("dir");
    let _ = std::fs::remove_file(dir.join("config.json"));
    let err = GenerationConfig::from_checkpoint(&dir, &GenerationOverrides::default())
        .expect_err("missing")
        .to_string();
    assert!(err.contains("config.json"), "{err}");
    std::fs::write(
        dir.join("config.json"),
        r#"{"vocab_size": 10, "decoder_start_token_id": 0}"#,
    )
    .expect("write");
    std::fs::write(
        dir.join("generation_config.json"),
        r#"{"num_beams": "4", "decoder_start_token_id": 0}"#,
    )
    .expect("write");
    let err = GenerationConfig::from_checkpoint(&dir, &GenerationOverrides::default())
        .expect_err("bad type")
        .to_string();
    assert!(
        err.contains("generation_config.json") && err.contains("num_beams") && !err.contains('\n'),
        "{err}"
    );
    std::fs::write(dir.join("generation_config.json"), "{not json").expect("write");
    let err = GenerationConfig::from_checkpoint(&dir, &GenerationOverrides::default())
        .expect_err("bad json")
        .to_string();
    assert!(
        err.contains("generation_config.json") && !err.contains('\n'),
        "{err}"
    );
    std::fs::write(
        dir.join("generation_config.json"),
        r#"{"max_new_tokens": 0, "decoder_start_token_id": 0}"#,
    )
    .expect("write");
    let err = GenerationConfig::from_checkpoint(&dir, &GenerationOverrides::default())
        .expect_err("hf rejects")
        .to_string();
    assert!(
        err.contains("generation_config.json") && err.contains("max_new_tokens"),
        "{err}"
    );
    std::fs::write(dir.join("generation_config.json"), r#"{"eos_token_id": 1}"#).expect("write");
    let err = GenerationConfig::from_checkpoint(&dir, &GenerationOverrides::default())
        .expect_err("no start")
        .to_string();
    assert!(err.contains("decoder_start_token_id"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn model_config_fallback_details() {
    // no generation_config.json: top-level keys of config.json, legacy force_bos, decoder sub-config
    let cfg = json!({
        "vocab_size": 50, "bos_token_id": 0, "eos_token_id": [2, 3], "decoder_start_token_id": 2,
        "force_bos_token_to_be_generated": true, "num_beams": 3, "pad_token_id": -1,
        "decoder": {"max_length": 33, "num_beams": 5}
    });
    let c = GenerationConfig::resolve(
        None,
        &cfg,
        Path::new("config.json"),
        &GenerationOverrides::default(),
    )
    .expect("config");
    assert_eq!(c.forced_bos_token_id, Some(0));
    assert_eq!(c.num_beams, 3, "top level first");
    assert_eq!(c.max_length, 33, "decoder sub-config fills unset keys");
    assert_eq!(c.eos_token_id, vec![2, 3]);
    assert_eq!(
        c.pad_token_id,
        Some(2),
        "negative pad ignored, falls back to the first EOS"
    );
    assert_eq!(c.source, "config.json");
}
