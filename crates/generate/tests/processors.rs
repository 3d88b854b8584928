//! Logits processors against Hugging Face's own classes
//! (goldens: tools/processor_goldens.py -> tests/expected/processors.json).

use encdec_generate::processors::*;
use encdec_generate::{GenerationConfig, GenerationOverrides};
use serde_json::Value;

fn load() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/expected/processors.json"
    );
    let text =
        std::fs::read_to_string(path).expect("processors.json (run tools/processor_goldens.py)");
    serde_json::from_str(&text).expect("valid json")
}

fn num(v: &Value) -> f32 {
    match v {
        Value::String(s) if s == "-inf" => f32::NEG_INFINITY,
        Value::String(s) if s == "inf" => f32::INFINITY,
        Value::String(s) if s == "nan" => f32::NAN,
        v => v.as_f64().expect("number") as f32,
    }
}

fn matrix(v: &Value) -> Vec<Vec<f32>> {
    v.as_array()
        .expect("rows")
        .iter()
        .map(|r| r.as_array().expect("row").iter().map(num).collect())
        .collect()
}

fn ids(v: &Value) -> Vec<Vec<u32>> {
    v.as_array()
        .expect("rows")
        .iter()
        .map(|r| {
            r.as_array()
                .expect("row")
                .iter()
                .map(|x| x.as_u64().expect("id") as u32)
                .collect()
        })
        .collect()
}

fn u32s(v: &Value) -> Vec<u32> {
    v.as_array()
        .expect("list")
        .iter()
        .map(|x| x.as_u64().expect("id") as u32)
        .collect()
}

fn close(name: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{name}: length");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let ok = if w.is_infinite() || g.is_infinite() {
            g == w
        } else {
            (g - w).abs() <= 1e-6 * (1.0 + w.abs())
        };
        assert!(
            ok,
            "{name}: element {i}: got {g}, HF {w}\n got  {got:?}\n want {want:?}"
        );
    }
}

fn build(case: &Value, vocab: usize) -> Box<dyn LogitsProcessor> {
    let p = &case["params"];
    let f = |k: &str| p[k].as_f64().expect(k);
    let u = |k: &str| p[k].as_u64().expect(k) as usize;
    match case["processor"].as_str().expect("processor") {
        "RepetitionPenaltyLogitsProcessor" => Box::new(RepetitionPenalty::new(f("penalty"), vocab)),
        "NoRepeatNGramLogitsProcessor" => Box::new(NoRepeatNGram::new(u("ngram_size"))),
        "EncoderNoRepeatNGramLogitsProcessor" => {
            Box::new(EncoderNoRepeatNGram::new(u("ngram_size")))
        }
        "NoBadWordsLogitsProcessor" => Box::new(
            NoBadWords::new(&ids(&p["bad_words_ids"]), &u32s(&p["eos_token_id"]), vocab)
                .expect("bad words"),
        ),
        "MinLengthLogitsProcessor" => {
            Box::new(MinLength::new(u("min_length"), &u32s(&p["eos_token_id"])))
        }
        "MinNewTokensLengthLogitsProcessor" => Box::new(MinNewTokens::new(
            u("prompt_length_to_skip"),
            u("min_new_tokens"),
            &u32s(&p["eos_token_id"]),
        )),
        "ForcedBOSTokenLogitsProcessor" => Box::new(ForcedBos::new(u("bos_token_id") as u32)),
        "ForcedEOSTokenLogitsProcessor" => {
            Box::new(ForcedEos::new(u("max_length"), &u32s(&p["eos_token_id"])))
        }
        "TemperatureLogitsWarper" => Box::new(Temperature::new(f("temperature"))),
        "TopKLogitsWarper" => Box::new(TopK::new(u("top_k"), u("min_tokens_to_keep"), vocab)),
        "TopPLogitsWarper" => Box::new(TopP::new(f("top_p"), u("min_tokens_to_keep"), vocab)),
        other => panic!("no processor for {other}"),
    }
}

#[test]
fn each_processor_matches_hf() {
    let data = load();
    let cases = data["cases"].as_array().expect("cases");
    assert!(cases.len() >= 25);
    for case in cases {
        let name = case["name"].as_str().expect("name");
        let scores = matrix(&case["scores"]);
        let want = matrix(&case["expected"]);
        let hist = ids(&case["input_ids"]);
        let enc = if case["encoder_input_ids"].is_null() {
            vec![Vec::new(); hist.len()]
        } else {
            ids(&case["encoder_input_ids"])
        };
        let vocab = scores[0].len();
        let mut proc = build(case, vocab);
        assert_eq!(proc.name(), case["processor"].as_str().expect("processor"));
        for r in 0..scores.len() {
            let mut row = scores[r].clone();
            proc.process(
                &mut row,
                &RowContext {
                    history: &hist[r],
                    source: &enc[r],
                },
            );
            close(&format!("{name} row {r}"), &row, &want[r]);
        }
    }
}

#[test]
fn pipelines_match_hf_order_and_values() {
    let data = load();
    for case in data["pipelines"].as_array().expect("pipelines") {
        let name = case["name"].as_str().expect("name");
        let cfg = GenerationConfig::from_values(
            &case["generate_kwargs"],
            &GenerationOverrides::default(),
        )
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        let scores = matrix(&case["scores"]);
        let want = matrix(&case["expected"]);
        let hist = ids(&case["input_ids"]);
        let mut list = LogitsProcessorList::from_config(&cfg, scores[0].len()).expect("processors");
        let hf: Vec<&str> = case["processors"]
            .as_array()
            .expect("names")
            .iter()
            .map(|v| v.as_str().expect("name"))
            .collect();
        assert_eq!(list.names(), hf, "{name}: processor order");
        for r in 0..scores.len() {
            let mut row = scores[r].clone();
            list.process(
                &mut row,
                &RowContext {
                    history: &hist[r],
                    source: &[],
                },
            );
            close(&format!("{name} row {r}"), &row, &want[r]);
        }
    }
}

#[test]
fn repetition_penalty_counts_each_token_once() {
    let mut p = RepetitionPenalty::new(2.0, 4);
    let mut row = vec![4.0, -4.0, 1.0, 1.0];
    p.process(
        &mut row,
        &RowContext {
            history: &[0, 0, 1, 1, 0],
            source: &[3],
        },
    );
    assert_eq!(row, vec![2.0, -8.0, 1.0, 1.0]);
    // the buffer is reused: the next row starts clean
    let mut row = vec![4.0, -4.0, 1.0, 1.0];
    p.process(
        &mut row,
        &RowContext {
            history: &[3],
            source: &[],
        },
    );
    assert_eq!(row, vec![4.0, -4.0, 1.0, 0.5]);
}

#[test]
fn bad_words_outside_vocabulary_are_refused() {
    let err = NoBadWords::new(&[vec![3, 99]], &[2], 10)
        .err()
        .expect("error");
    assert!(err.to_string().contains("99"), "{err}");
}

/// Search on the backend applies `LogitsProcessorList::edits` (repetition
/// penalty, bans and forced rows) instead of `process`: for every such
/// processor, alone and combined, at every history length, the edits give
/// exactly the processed row; `process_again` on that row changes nothing
/// more; a sampling warper reports that it cannot be described.
#[test]
fn edits_describe_what_the_ban_processors_do() {
    let v = 40usize;
    let kwargs = [
        serde_json::json!({"no_repeat_ngram_size": 2, "eos_token_id": 3, "max_length": 12}),
        serde_json::json!({"no_repeat_ngram_size": 1, "eos_token_id": 3, "max_length": 12}),
        serde_json::json!({"encoder_no_repeat_ngram_size": 2, "eos_token_id": 3, "max_length": 12}),
        serde_json::json!({"min_length": 5, "eos_token_id": [3, 4], "max_length": 12}),
        serde_json::json!({"min_new_tokens": 4, "eos_token_id": 3, "max_length": 12}),
        serde_json::json!({"bad_words_ids": [[7], [8, 9], [1, 2, 5]], "eos_token_id": 3, "max_length": 12}),
        serde_json::json!({"forced_bos_token_id": 6, "forced_eos_token_id": [3, 4],
                           "no_repeat_ngram_size": 3, "min_length": 4, "eos_token_id": 3, "max_length": 12}),
        serde_json::json!({"repetition_penalty": 1.3, "eos_token_id": 3, "max_length": 12}),
        serde_json::json!({"repetition_penalty": 0.7, "no_repeat_ngram_size": 2, "min_length": 5,
                           "bad_words_ids": [[7], [8, 9]], "forced_eos_token_id": 3,
                           "eos_token_id": 3, "max_length": 12}),
    ];
    let history: Vec<u32> = vec![0, 1, 2, 5, 1, 2, 8, 9, 1, 2, 1, 5];
    let source: Vec<u32> = vec![2, 5, 6, 1, 2, 9, 3];
    for kw in &kwargs {
        let mut kw = kw.clone();
        kw["decoder_start_token_id"] = serde_json::json!(0);
        let cfg = GenerationConfig::from_values(&kw, &GenerationOverrides::default()).expect("cfg");
        let mut list = LogitsProcessorList::from_config(&cfg, v).expect("processors");
        assert!(list.only_edits(), "{kw}");
        let mut edits = RowEdits::default();
        for len in 1..history.len() {
            let ctx = RowContext {
                history: &history[..len],
                source: &source,
            };
            let raw: Vec<f32> = (0..v)
                .map(|i| ((i * 37 + len * 11) % 23) as f32 * 0.25 - 2.0)
                .collect();
            let mut want = raw.clone();
            list.process(&mut want, &ctx);
            assert!(list.edits(&ctx, &mut edits), "{kw}");
            let mut got = raw.clone();
            // HF's order: the penalty first (distinct ids), then the rest
            let mut seen = std::collections::HashSet::new();
            for &t in &edits.penalized {
                assert!(seen.insert(t), "{kw}: {t} penalised twice");
                let s = got[t as usize];
                got[t as usize] = if s < 0.0 {
                    s * edits.penalty
                } else {
                    s / edits.penalty
                };
            }
            if edits.is_forced {
                got.fill(f32::NEG_INFINITY);
                for &t in &edits.forced {
                    got[t as usize] = 0.0;
                }
            }
            for &t in &edits.banned {
                if (t as usize) < v {
                    got[t as usize] = f32::NEG_INFINITY;
                }
            }
            assert_eq!(got, want, "{kw} at history length {len}");
            list.process_again(&mut got, &ctx);
            assert_eq!(got, want, "{kw} at history length {len}: process_again");
        }
    }
    let cfg = GenerationConfig::from_values(
        &serde_json::json!({"repetition_penalty": 1.3, "no_repeat_ngram_size": 2,
                            "do_sample": true, "temperature": 0.7,
                            "decoder_start_token_id": 0}),
        &GenerationOverrides::default(),
    )
    .expect("cfg");
    let mut list = LogitsProcessorList::from_config(&cfg, v).expect("processors");
    assert!(!list.only_edits());
}

/// Which processor lists sampling on the backend can decide from each row's
/// top-k + 1 candidates: edits, then HF's temperature / top-k / top-p; the k
/// is the top-k warper's (at least min_tokens_to_keep). And after the
/// backend applied a row's edits, `process_again` runs the warpers (never
/// applied there) but not the penalty: the row then equals the host's
/// `process` of the raw row.
#[test]
fn sampling_top_k_and_process_again_with_warpers() {
    let v = 16;
    for (kw, want) in [
        (serde_json::json!({"do_sample": true, "top_k": 5}), Some(5)),
        (serde_json::json!({"do_sample": true}), Some(50)),
        (
            serde_json::json!({"do_sample": true, "top_k": 7, "temperature": 0.5, "top_p": 0.8,
                               "repetition_penalty": 1.2, "no_repeat_ngram_size": 2,
                               "forced_eos_token_id": 3}),
            Some(7),
        ),
        (
            serde_json::json!({"do_sample": true, "top_k": 0, "top_p": 0.8}),
            None,
        ),
        (serde_json::json!({"do_sample": true, "top_k": 0}), None),
        (serde_json::json!({"top_k": 5}), None),
    ] {
        let mut kw = kw;
        kw["decoder_start_token_id"] = serde_json::json!(0);
        kw["eos_token_id"] = serde_json::json!(3);
        kw["max_length"] = serde_json::json!(12);
        let cfg = GenerationConfig::from_values(&kw, &GenerationOverrides::default()).expect("cfg");
        let mut list = LogitsProcessorList::from_config(&cfg, v).expect("processors");
        assert_eq!(list.sampling_top_k(), want, "{kw}");
    }
    let kw = serde_json::json!({"decoder_start_token_id": 0, "eos_token_id": 3, "do_sample": true,
                                "top_k": 6, "temperature": 0.7, "top_p": 0.9,
                                "repetition_penalty": 1.3, "bad_words_ids": [[5]]});
    let cfg = GenerationConfig::from_values(&kw, &GenerationOverrides::default()).expect("cfg");
    let mut list = LogitsProcessorList::from_config(&cfg, v).expect("processors");
    let ctx = RowContext {
        history: &[0, 4, 7, 4],
        source: &[],
    };
    let raw: Vec<f32> = (0..v)
        .map(|i| ((i * 37) % 23) as f32 * 0.25 - 2.0)
        .collect();
    let mut want = raw.clone();
    list.process(&mut want, &ctx);
    let mut edits = RowEdits::default();
    assert!(!list.edits(&ctx, &mut edits), "the warpers are not edits");
    assert!(list.edits_before_warpers(&ctx, &mut edits));
    let mut got = raw.clone();
    for &t in &edits.penalized {
        let s = got[t as usize];
        got[t as usize] = if s < 0.0 {
            s * edits.penalty
        } else {
            s / edits.penalty
        };
    }
    for &t in &edits.banned {
        got[t as usize] = f32::NEG_INFINITY;
    }
    list.process_again(&mut got, &ctx);
    assert_eq!(got, want);
    assert!(
        want.iter().filter(|x| x.is_finite()).count() < 6,
        "top-p cut some: {want:?}"
    );
}
