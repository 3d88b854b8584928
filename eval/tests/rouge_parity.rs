//! Parity of encdec's ROUGE with Google's `rouge-score`, NLTK's Porter stemmer and
//! NLTK's Punkt sentence splitter. Expected values come from
//! `tools/eval_reference_rouge.py` (eval/tests/expected/rouge_*). Tests that need the
//! CNN/DM files under ../shared/data skip (with a message) when they are absent.

use std::path::{Path, PathBuf};

use encdec_eval::porter;
use encdec_eval::rouge::{
    parse_types, score_corpus, score_pair, simcls_rows, BootstrapConfig, RougeConfig, RougeScorer,
    RougeTokenizer, RougeType, Score,
};
use encdec_eval::sentence_split::{sent_tokenize, PunktModel};
use serde_json::Value;

/// Values are compared in 0..1. Per-example scores are the same float operations as
/// Python's, so they agree exactly; means allow for nothing more than rounding.
const TOL: f64 = 0.0;

fn expected_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/expected")
}

fn expected() -> Value {
    let path = expected_dir().join("rouge_expected.json");
    let text = std::fs::read_to_string(&path).expect("rouge_expected.json is committed");
    serde_json::from_str(&text).expect("valid JSON")
}

fn data_dir() -> Option<PathBuf> {
    let d = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data");
    d.join("cnndm/outputs").is_dir().then_some(d)
}

macro_rules! need_data {
    ($name:expr) => {
        match data_dir() {
            Some(d) => d,
            None => {
                eprintln!("SKIP {}: ../shared/data not found", $name);
                return;
            }
        }
    };
}

fn read_lines(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).expect("data file is UTF-8");
    let text = text.strip_suffix('\n').unwrap_or(&text);
    text.split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l).to_string())
        .collect()
}

fn f(v: &Value) -> f64 {
    v.as_f64().expect("number")
}

fn score_of(v: &Value) -> Score {
    Score {
        precision: f(&v["precision"]),
        recall: f(&v["recall"]),
        fmeasure: f(&v["fmeasure"]),
    }
}

fn types_of(v: &Value) -> Vec<RougeType> {
    v.as_array()
        .expect("types")
        .iter()
        .map(|t| RougeType::parse(t.as_str().expect("str")).expect("valid type"))
        .collect()
}

/// Largest absolute difference of the three fields.
fn diff(a: &Score, b: &Score) -> f64 {
    (a.precision - b.precision)
        .abs()
        .max((a.recall - b.recall).abs())
        .max((a.fmeasure - b.fmeasure).abs())
}

#[test]
fn porter_matches_nltk() {
    let path = expected_dir().join("rouge_porter.tsv");
    let text = std::fs::read_to_string(path).expect("rouge_porter.tsv is committed");
    let mut bad = Vec::new();
    let mut n = 0;
    for line in text.lines() {
        let (word, want) = line.split_once('\t').unwrap_or((line, line));
        n += 1;
        let got = porter::stem(word);
        if got != want {
            bad.push(format!("{word}: nltk {want}, ours {got}"));
        }
    }
    assert!(n > 100, "word list too short");
    assert!(
        bad.is_empty(),
        "{} of {n} stems differ:\n{}",
        bad.len(),
        bad[..bad.len().min(30)].join("\n")
    );
    eprintln!("porter: {n} words equal to NLTK");
}

#[test]
fn edge_cases_match_rouge_score() {
    let exp = expected();
    let mut worst = 0.0f64;
    for case in exp["edge_cases"].as_array().expect("edge_cases") {
        let name = case["name"].as_str().unwrap_or("?");
        let types = types_of(&case["types"]);
        let config = RougeConfig {
            types: types.clone(),
            use_stemmer: case["use_stemmer"].as_bool().unwrap_or(true),
            split_sentences: case["split_sentences"].as_bool().unwrap_or(false),
            ..RougeConfig::default()
        };
        let hyp = case["hyp"].as_str().expect("hyp");
        let refr = case["ref"].as_str().expect("ref");
        let got = score_pair(&config, hyp, refr).expect("scores");
        for (t, g) in types.iter().zip(&got) {
            let want = score_of(&case["scores"][t.name()]);
            let d = diff(g, &want);
            worst = worst.max(d);
            assert!(
                d <= TOL,
                "{name} (stem={}) {t}: ours {g:?}, rouge-score {want:?}",
                config.use_stemmer
            );
        }
    }
    eprintln!("edge cases: max |diff| {worst:e}");
}

/// Random multi-sentence pairs over a tiny vocabulary: LCS ties everywhere, so
/// rougeLsum's backtrack order and count clipping are exercised.
#[test]
fn fuzz_pairs_match_rouge_score() {
    let exp = expected();
    let fuzz = &exp["fuzz_cases"];
    let types = types_of(&fuzz["types"]);
    let cases = fuzz["cases"].as_array().expect("cases");
    assert!(cases.len() >= 100);
    for (i, case) in cases.iter().enumerate() {
        let (hyp, refr) = (
            case[0].as_str().expect("hyp"),
            case[1].as_str().expect("ref"),
        );
        let config = RougeConfig {
            types: types.clone(),
            use_stemmer: case[2].as_bool().expect("stem"),
            split_sentences: case[3].as_bool().expect("split"),
            ..RougeConfig::default()
        };
        let got = score_pair(&config, hyp, refr).expect("scores");
        for (k, (t, g)) in types.iter().zip(&got).enumerate() {
            let row = &case[4][k];
            let want = Score {
                precision: f(&row[0]),
                recall: f(&row[1]),
                fmeasure: f(&row[2]),
            };
            assert!(
                diff(g, &want) <= TOL,
                "fuzz #{i} {t} (stem={}, split={}): ours {g:?}, rouge-score {want:?}\n\
                 hyp {hyp:?}\nref {refr:?}",
                config.use_stemmer,
                config.split_sentences
            );
        }
    }
}

#[test]
fn sentences_match_nltk() {
    let exp = expected();
    for case in exp["sentences"].as_array().expect("sentences") {
        let text = case["text"].as_str().expect("text");
        let want: Vec<&str> = case["sentences"]
            .as_array()
            .expect("list")
            .iter()
            .map(|s| s.as_str().expect("str"))
            .collect();
        assert_eq!(sent_tokenize(text), want, "text: {text:?}");
    }
}

#[test]
fn bootstrap_matches_numpy_stream() {
    let exp = expected();
    for case in exp["bootstrap_small"].as_array().expect("bootstrap_small") {
        let hyps: Vec<&str> = case["hyps"]
            .as_array()
            .expect("hyps")
            .iter()
            .map(|s| s.as_str().expect("str"))
            .collect();
        let refs: Vec<&str> = case["refs"]
            .as_array()
            .expect("refs")
            .iter()
            .map(|s| s.as_str().expect("str"))
            .collect();
        let types = types_of(&case["types"]);
        let config = RougeConfig {
            types: types.clone(),
            bootstrap: Some(BootstrapConfig {
                n_samples: case["n_samples"].as_u64().expect("n") as usize,
                seed: case["seed"].as_u64().expect("seed") as u32,
                ..BootstrapConfig::default()
            }),
            ..RougeConfig::default()
        };
        let res = score_corpus(&config, &hyps, &refs).expect("scores");
        for t in &types {
            let iv = res
                .get(&t.name())
                .and_then(|r| r.interval)
                .expect("interval");
            let want = &case["intervals"][t.name()];
            for (k, got) in [("low", iv.low), ("mid", iv.mid), ("high", iv.high)] {
                let w = score_of(&want[k]);
                assert!(
                    diff(&got, &w) <= TOL,
                    "{} examples, seed {}, {t} {k}: ours {got:?}, rouge-score {w:?}",
                    hyps.len(),
                    case["seed"]
                );
            }
        }
    }
}

#[test]
fn simcls_full_split_matches_rouge_score() {
    let data = need_data!("simcls_full_split_matches_rouge_score");
    let exp = expected();
    let full = &exp["simcls_full"];
    let dir = data.join("cnndm/outputs");
    let hyps = read_lines(&dir.join("simcls.cnndm.test.hypo.lower.tok"));
    let refs = read_lines(&dir.join("simcls.cnndm.test.ref.lower.tok"));
    assert_eq!(hyps.len() as u64, full["n"].as_u64().expect("n"));
    let all = parse_types("rouge1,rouge2,rougeL,rougeLsum").expect("types");
    for (key, stem, split, types) in [
        ("stem", true, false, all.clone()),
        ("nostem", false, false, all.clone()),
        ("split_stem", true, true, vec![RougeType::Lsum]),
        ("split_nostem", false, true, vec![RougeType::Lsum]),
    ] {
        let config = RougeConfig {
            types: types.clone(),
            use_stemmer: stem,
            split_sentences: split,
            ..RougeConfig::default()
        };
        let t0 = std::time::Instant::now();
        let res = score_corpus(&config, &hyps, &refs).expect("scores");
        let secs = t0.elapsed().as_secs_f64();
        for t in &types {
            let got = res.get(&t.name()).expect("type").mean;
            let want = score_of(&full[key][t.name()]);
            assert!(
                diff(&got, &want) <= 1e-9,
                "{key} {t}: ours {got:?}, rouge-score {want:?}"
            );
            eprintln!(
                "{key} {t}: F {:.4} (rouge-score {:.4}), |diff| {:e}",
                got.fmeasure * 100.0,
                want.fmeasure * 100.0,
                diff(&got, &want)
            );
        }
        eprintln!("{key}: {} examples in {secs:.3} s", hyps.len());
        // Per-example equality on the first 300.
        let per_key = match key {
            "stem" => Some("simcls_first300_stem"),
            "split_stem" => Some("simcls_first300_split_stem"),
            _ => None,
        };
        if let Some(pk) = per_key {
            for (ti, t) in types.iter().enumerate() {
                let rows = exp[pk][t.name()].as_array().expect("rows");
                for (i, row) in rows.iter().enumerate() {
                    let want = Score {
                        precision: f(&row[0]),
                        recall: f(&row[1]),
                        fmeasure: f(&row[2]),
                    };
                    let got = res.per_example[i][ti];
                    assert!(
                        diff(&got, &want) <= TOL,
                        "{pk} example {i} {t}: ours {got:?}, rouge-score {want:?}"
                    );
                }
            }
        }
    }
}

#[test]
fn simcls_bootstrap_matches_rouge_score() {
    let data = need_data!("simcls_bootstrap_matches_rouge_score");
    let exp = expected();
    let b = &exp["simcls_first500_bootstrap"];
    let n = b["n"].as_u64().expect("n") as usize;
    let dir = data.join("cnndm/outputs");
    let hyps = read_lines(&dir.join("simcls.cnndm.test.hypo.lower.tok"));
    let refs = read_lines(&dir.join("simcls.cnndm.test.ref.lower.tok"));
    let config = RougeConfig {
        bootstrap: Some(BootstrapConfig {
            n_samples: b["n_samples"].as_u64().expect("n_samples") as usize,
            seed: b["seed"].as_u64().expect("seed") as u32,
            ..BootstrapConfig::default()
        }),
        ..RougeConfig::default()
    };
    let res = score_corpus(&config, &hyps[..n], &refs[..n]).expect("scores");
    for t in &config.types {
        let iv = res
            .get(&t.name())
            .and_then(|r| r.interval)
            .expect("interval");
        for (k, got) in [("low", iv.low), ("mid", iv.mid), ("high", iv.high)] {
            let want = score_of(&b["intervals"][t.name()][k]);
            assert!(
                diff(&got, &want) <= TOL,
                "{t} {k}: ours {got:?}, rouge-score {want:?}"
            );
        }
    }
    let json = res.to_json();
    assert!(json["rouge1"]["low"]["fmeasure"].as_f64().is_some());
}

/// Byte spans -> (gap, len) in code points, as the spans file stores them.
fn spans_in_chars(text: &str, spans: &[(usize, usize)]) -> String {
    let cp = |b: usize| text[..b].chars().count();
    let mut prev = 0;
    let mut out = Vec::new();
    for &(s, e) in spans {
        let (s, e) = (cp(s), cp(e));
        out.push(format!("{}:{}", s - prev, e - s));
        prev = e;
    }
    out.join(" ")
}

#[test]
fn punkt_spans_match_nltk_on_cnndm() {
    let data = need_data!("punkt_spans_match_nltk_on_cnndm");
    let path = expected_dir().join("rouge_punkt_spans.tsv");
    let text = std::fs::read_to_string(path).expect("rouge_punkt_spans.tsv is committed");
    let model = PunktModel::english();
    let mut lines = text.lines();
    let mut checked = 0;
    let mut bad = Vec::new();
    while let Some(header) = lines.next() {
        if !header.starts_with("# ") {
            continue;
        }
        let parts: Vec<&str> = header.split(' ').collect();
        if parts.len() != 4 {
            continue; // the file's description line
        }
        let docs = read_lines(&data.join(parts[2]));
        let count: usize = parts[3].parse().expect("count");
        assert_eq!(docs.len(), count, "{}", parts[2]);
        for (i, doc) in docs.iter().enumerate() {
            let want = lines.next().expect("one line per document");
            let got = spans_in_chars(doc, &model.span_tokenize(doc));
            checked += 1;
            if got != want {
                bad.push(format!("{} #{i}: nltk [{want}] ours [{got}]", parts[1]));
            }
        }
    }
    assert!(checked > 0);
    assert!(
        bad.is_empty(),
        "{} of {checked} documents split differently:\n{}",
        bad.len(),
        bad[..bad.len().min(20)].join("\n")
    );
    eprintln!("punkt: {checked} documents split as NLTK does");
}

#[test]
fn simcls_rows_match_rouge_score() {
    let data = need_data!("simcls_rows_match_rouge_score");
    let exp = expected();
    let full = &exp["simcls_full"];
    let rows = simcls_rows(&data).expect("simcls rows");
    let want = |k: &str, t: &str| f(&full[k][t]["fmeasure"]) * 100.0;
    assert_eq!(rows.n_examples, 11490);
    assert!((rows.rouge1 - want("stem", "rouge1")).abs() < 1e-7);
    assert!((rows.rouge2 - want("stem", "rouge2")).abs() < 1e-7);
    assert!((rows.rouge_l - want("stem", "rougeL")).abs() < 1e-7);
    assert!((rows.rouge_lsum - want("split_stem", "rougeLsum")).abs() < 1e-7);
    eprintln!("{rows:?}");
}

#[test]
fn unicode_tokenizer_scores_other_scripts() {
    let cjk = RougeConfig {
        tokenizer: RougeTokenizer::Unicode,
        ..RougeConfig::default()
    };
    let default = RougeConfig::default();
    let (h, r) = ("这是一支笔。", "这是一本书。");
    let d = score_pair(&default, h, r).expect("scores");
    assert!(d.iter().all(|s| s.fmeasure == 0.0), "rouge-score gives 0");
    let u = score_pair(&cjk, h, r).expect("scores");
    // 这 是 一 支 笔 vs 这 是 一 本 书: 3 of 5 unigrams.
    assert!((u[0].fmeasure - 0.6).abs() < 1e-12, "{:?}", u[0]);
    let ru = score_pair(&cjk, "Привет, мир! Как дела?", "привет мир").expect("scores");
    assert!((ru[0].recall - 1.0).abs() < 1e-12, "{:?}", ru[0]);
    // On ASCII text the Unicode tokenizer gives rouge-score's tokens.
    let (h, r) = (
        "The U.S. army's 2,300 runners didn't run_fast.\nSecond line.",
        "the u.s. army ran 2300 miles; runners ran fast.\nsecond",
    );
    assert_eq!(
        score_pair(&default, h, r).expect("scores"),
        score_pair(&cjk, h, r).expect("scores")
    );
}

#[test]
fn errors_name_the_problem() {
    let err = score_corpus(&RougeConfig::default(), &["a", "b"], &["a"]).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains('2') && msg.contains('1'), "{msg}");
    let err = parse_types("rouge1,rougeX").unwrap_err().to_string();
    assert!(err.contains("rougeX") && err.contains("rougeLsum"), "{err}");
    let bad = RougeConfig {
        bootstrap: Some(BootstrapConfig {
            n_samples: 0,
            ..BootstrapConfig::default()
        }),
        ..RougeConfig::default()
    };
    assert!(RougeScorer::new(bad).is_err());
}

#[test]
fn json_and_text_forms() {
    let config = RougeConfig {
        bootstrap: Some(BootstrapConfig {
            n_samples: 20,
            ..BootstrapConfig::default()
        }),
        ..RougeConfig::default()
    };
    let res = score_corpus(
        &config,
        &["the cat sat", "a dog ran"],
        &["the cat sat down", "the dog ran"],
    )
    .expect("scores");
    let j = res.to_json();
    assert_eq!(j["metric"], "rouge");
    let r1 = &j["rouge1"];
    // (3/3 + 2/3) / 2 precision, in percent.
    assert!((r1["precision"].as_f64().expect("p") - 250.0 / 3.0).abs() < 1e-9);
    for k in ["low", "mid", "high"] {
        assert!(r1[k]["fmeasure"].as_f64().is_some(), "{k}");
    }
    let text = res.to_text();
    eprintln!("{text}{}", serde_json::to_string(&j).unwrap_or_default());
    assert!(
        text.contains("rougeLsum") && text.contains("interval"),
        "{text}"
    );
}
