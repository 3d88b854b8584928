//! Parity of BLEU / chrF with sacreBLEU 2.6.0.
//!
//! `expected/bleu_expected.json` is written by `tools/eval_reference_bleu.py` (it
//! runs sacreBLEU). Scores must agree bit for bit (`score_hex`), other floats to
//! 1e-9, and signatures and the printed text form exactly. Tests on the real WMT
//! files skip when `../shared/data` is absent (a fresh clone).

use std::path::PathBuf;

use encdec_eval::bleu::{self, corpus_bleu, sentence_bleu, BleuConfig, BleuScore, Smooth};
use encdec_eval::bleu_tokenize::BleuTokenizer;
use encdec_eval::chrf::{corpus_chrf, sentence_chrf, ChrfConfig, ChrfScore};
use encdec_eval::io::read_lines;
use encdec_eval::EvalError;
use serde_json::Value;

const EXPECTED: &str = include_str!("expected/bleu_expected.json");

fn expected() -> Value {
    serde_json::from_str(EXPECTED).expect("bleu_expected.json is valid JSON")
}

fn data_root() -> Option<PathBuf> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data");
    p.join("wmt").is_dir().then_some(p)
}

macro_rules! data_or_skip {
    ($name:expr) => {
        match data_root() {
            Some(d) => d,
            None => {
                eprintln!("SKIP {}: ../shared/data not found", $name);
                return;
            }
        }
    };
}

/// Parses Python's `float.hex()` output exactly.
fn parse_hex_float(s: &str) -> f64 {
    let (neg, s) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s),
    };
    if s == "inf" {
        return if neg {
            f64::NEG_INFINITY
        } else {
            f64::INFINITY
        };
    }
    let s = s.strip_prefix("0x").expect("hex float starts with 0x");
    let (mant, exp) = s.split_once('p').expect("hex float has an exponent");
    let (int, frac) = mant.split_once('.').unwrap_or((mant, ""));
    let mut m: u64 = u64::from_str_radix(int, 16).expect("hex digits");
    for c in frac.chars() {
        m = m * 16 + u64::from(c.to_digit(16).expect("hex digit"));
    }
    let e: i32 = exp.parse::<i32>().expect("exponent") - 4 * frac.len() as i32;
    let v = m as f64 * 2f64.powi(e);
    if neg {
        -v
    } else {
        v
    }
}

fn f(v: &Value) -> f64 {
    v.as_f64().expect("number")
}

fn bleu_cfg(c: &Value) -> BleuConfig {
    let tok: BleuTokenizer = c["tokenize"]
        .as_str()
        .unwrap_or("13a")
        .parse()
        .expect("tokenizer");
    let smooth = Smooth::from_name(
        c["smooth"].as_str().unwrap_or("exp"),
        c["smooth_value"].as_f64(),
    )
    .expect("smooth");
    BleuConfig {
        tokenizer: tok,
        lowercase: c["lowercase"].as_bool().unwrap_or(false),
        smooth,
        effective_order: c["effective_order"].as_bool().unwrap_or(false),
    }
}

fn chrf_cfg(c: &Value) -> ChrfConfig {
    let d = ChrfConfig::default();
    ChrfConfig {
        char_order: c["char_order"]
            .as_u64()
            .map_or(d.char_order, |v| v as usize),
        word_order: c["word_order"]
            .as_u64()
            .map_or(d.word_order, |v| v as usize),
        beta: c["beta"].as_u64().map_or(d.beta, |v| v as u32),
        lowercase: c["lowercase"].as_bool().unwrap_or(false),
        whitespace: c["whitespace"].as_bool().unwrap_or(false),
        eps_smoothing: c["eps_smoothing"].as_bool().unwrap_or(false),
    }
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

fn check_bleu(got: &BleuScore, exp: &Value, cfg: &BleuConfig, ctx: &str, fails: &mut Vec<String>) {
    let want = parse_hex_float(exp["score_hex"].as_str().unwrap_or("nan"));
    if got.score.to_bits() != want.to_bits() {
        fails.push(format!(
            "{ctx}: score {:?} != sacreBLEU {:?} (diff {:e})",
            got.score,
            want,
            got.score - want
        ));
    }
    for n in 0..4 {
        if !close(got.precisions[n], f(&exp["precisions"][n])) {
            fails.push(format!(
                "{ctx}: precision {} {} != {}",
                n + 1,
                got.precisions[n],
                exp["precisions"][n]
            ));
        }
        // sacreBLEU reports counts after add-k smoothing (orders 2..4), unless it
        // returned early because nothing matched.
        let k = match cfg.smooth {
            Smooth::AddK(k) if n > 0 && got.counts.iter().any(|&c| c > 0) => k,
            _ => 0.0,
        };
        if !close(got.counts[n] as f64 + k, f(&exp["counts"][n]))
            || !close(got.totals[n] as f64 + k, f(&exp["totals"][n]))
        {
            fails.push(format!(
                "{ctx}: order {} counts {}/{} != {}/{}",
                n + 1,
                got.counts[n],
                got.totals[n],
                exp["counts"][n],
                exp["totals"][n]
            ));
        }
    }
    if !close(got.bp, f(&exp["bp"])) {
        fails.push(format!("{ctx}: bp {} != {}", got.bp, exp["bp"]));
    }
    if Some(got.sys_len) != exp["sys_len"].as_u64() || Some(got.ref_len) != exp["ref_len"].as_u64()
    {
        fails.push(format!(
            "{ctx}: lengths {}/{} != {}/{}",
            got.sys_len, got.ref_len, exp["sys_len"], exp["ref_len"]
        ));
    }
    if Some(got.signature.as_str()) != exp["signature"].as_str() {
        fails.push(format!(
            "{ctx}: signature {} != {}",
            got.signature, exp["signature"]
        ));
    }
    if Some(got.format_text().as_str()) != exp["text"].as_str() {
        fails.push(format!(
            "{ctx}: text\n   {}\n!= {}",
            got.format_text(),
            exp["text"]
        ));
    }
}

fn check_chrf(got: &ChrfScore, exp: &Value, ctx: &str, fails: &mut Vec<String>) {
    let want = parse_hex_float(exp["score_hex"].as_str().unwrap_or("nan"));
    if got.score.to_bits() != want.to_bits() {
        fails.push(format!(
            "{ctx}: chrF {:?} != sacreBLEU {:?} (diff {:e})",
            got.score,
            want,
            got.score - want
        ));
    }
    if Some(got.signature.as_str()) != exp["signature"].as_str() {
        fails.push(format!(
            "{ctx}: signature {} != {}",
            got.signature, exp["signature"]
        ));
    }
    if Some(got.format_text().as_str()) != exp["text"].as_str() {
        fails.push(format!(
            "{ctx}: text {} != {}",
            got.format_text(),
            exp["text"]
        ));
    }
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|s| s.as_str().expect("string").to_string())
        .collect()
}

fn report(name: &str, checked: usize, fails: Vec<String>) {
    eprintln!("{name}: {checked} cases checked, {} failures", fails.len());
    if !fails.is_empty() {
        let shown: Vec<&String> = fails.iter().take(40).collect();
        panic!(
            "{name}: {} of {checked} cases differ from sacreBLEU:\n{}",
            fails.len(),
            shown
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}

/// Runs one corpus/sentence case given its hyps and refs.
fn run_case(
    case: &Value,
    hyps: &[String],
    refs: &[Vec<String>],
    ctx: &str,
    fails: &mut Vec<String>,
) {
    let exp = &case["expected"];
    let sentence = case["level"].as_str() == Some("sentence");
    match case["kind"].as_str() {
        Some("bleu") => {
            let cfg = bleu_cfg(&case["config"]);
            let got = if sentence {
                let r: Vec<&str> = refs.iter().map(|r| r[0].as_str()).collect();
                sentence_bleu(&hyps[0], &r, &cfg)
            } else {
                corpus_bleu(hyps, refs, &cfg)
            };
            match got {
                Ok(s) => check_bleu(&s, exp, &cfg, ctx, fails),
                Err(e) => fails.push(format!("{ctx}: error {e}")),
            }
        }
        Some("chrf") => {
            let cfg = chrf_cfg(&case["config"]);
            let got = if sentence {
                let r: Vec<&str> = refs.iter().map(|r| r[0].as_str()).collect();
                sentence_chrf(&hyps[0], &r, &cfg)
            } else {
                corpus_chrf(hyps, refs, &cfg)
            };
            match got {
                Ok(s) => check_chrf(&s, exp, ctx, fails),
                Err(e) => fails.push(format!("{ctx}: error {e}")),
            }
        }
        other => fails.push(format!("{ctx}: unknown kind {other:?}")),
    }
}

#[test]
fn tokenizers_match_sacrebleu() {
    let doc = expected();
    let mut fails = Vec::new();
    let cases = doc["tokenize"].as_array().expect("tokenize cases");
    for c in cases {
        let tok: BleuTokenizer = c["tokenizer"].as_str().unwrap_or("").parse().expect("tok");
        let input = c["input"].as_str().unwrap_or("");
        let got = tok.tokenize(input);
        if Some(got.as_str()) != c["output"].as_str() {
            fails.push(format!(
                "{tok} {input:?}: got {got:?}, sacreBLEU {}",
                c["output"]
            ));
        }
    }
    report("tokenizers", cases.len(), fails);
}

#[test]
fn inline_edge_cases_match_sacrebleu() {
    let doc = expected();
    let edge_hyps = strings(&doc["edge_corpus"]["hyps"]);
    let edge_refs: Vec<Vec<String>> = doc["edge_corpus"]["refs"]
        .as_array()
        .expect("refs")
        .iter()
        .map(strings)
        .collect();
    let mut fails = Vec::new();
    let cases = doc["inline"].as_array().expect("inline cases");
    for (i, case) in cases.iter().enumerate() {
        let ctx = format!(
            "inline #{i} {} {} {}",
            case["kind"], case["level"], case["config"]
        );
        let (hyps, refs): (Vec<String>, Vec<Vec<String>>) =
            if let Some(n) = case["edge_nrefs"].as_u64() {
                (edge_hyps.clone(), edge_refs[..n as usize].to_vec())
            } else if case["level"].as_str() == Some("sentence") {
                let h = case["hyp"].as_str().unwrap_or("").to_string();
                (
                    vec![h],
                    strings(&case["refs"])
                        .into_iter()
                        .map(|r| vec![r])
                        .collect(),
                )
            } else {
                (
                    strings(&case["hyps"]),
                    case["refs"]
                        .as_array()
                        .expect("refs")
                        .iter()
                        .map(strings)
                        .collect(),
                )
            };
        run_case(case, &hyps, &refs, &ctx, &mut fails);
    }
    report("inline", cases.len(), fails);
}

#[test]
fn random_strings_match_sacrebleu() {
    let doc = expected();
    let rnd = &doc["random"];
    let mut fails = Vec::new();
    let mut checked = 0;
    for c in rnd["tokenize"].as_array().expect("random tokenize") {
        let input = c["input"].as_str().unwrap_or("");
        for tok in BleuTokenizer::ALL {
            checked += 1;
            let got = tok.tokenize(input);
            if Some(got.as_str()) != c["outputs"][tok.name()].as_str() {
                fails.push(format!(
                    "{tok} {input:?}: got {got:?}, sacreBLEU {}",
                    c["outputs"][tok.name()]
                ));
            }
        }
    }
    for c in rnd["sentence"].as_array().expect("random sentence") {
        checked += 2;
        let hyp = c["hyp"].as_str().unwrap_or("");
        let refs = strings(&c["refs"]);
        let r: Vec<&str> = refs.iter().map(|s| s.as_str()).collect();
        let bcfg = bleu_cfg(&c["bleu_config"]);
        let ccfg = chrf_cfg(&c["chrf_config"]);
        let want_b = parse_hex_float(c["bleu_hex"].as_str().unwrap_or("nan"));
        let want_c = parse_hex_float(c["chrf_hex"].as_str().unwrap_or("nan"));
        match sentence_bleu(hyp, &r, &bcfg) {
            Ok(s) if s.score.to_bits() == want_b.to_bits() => {}
            other => fails.push(format!(
                "BLEU {hyp:?} {r:?} {bcfg:?}: {other:?} != {want_b}"
            )),
        }
        match sentence_chrf(hyp, &r, &ccfg) {
            Ok(s) if s.score.to_bits() == want_c.to_bits() => {}
            other => fails.push(format!(
                "chrF {hyp:?} {r:?} {ccfg:?}: {other:?} != {want_c}"
            )),
        }
    }
    report("random strings", checked, fails);
}

/// The perturbation of `tools/eval_reference_bleu.py` and `benches/bleu.rs`.
fn perturb(line: &str) -> String {
    let mut words: Vec<String> = line.split(' ').map(str::to_string).collect();
    let mut i = 3;
    while i + 1 < words.len() {
        words.swap(i, i + 1);
        i += 5;
    }
    words
        .iter()
        .enumerate()
        .filter(|(j, _)| j % 7 != 6)
        .map(|(j, w)| {
            if j % 11 == 5 {
                w.chars().rev().collect()
            } else {
                w.clone()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn wmt_file_cases_match_sacrebleu() {
    let root = data_or_skip!("wmt_file_cases_match_sacrebleu");
    let doc = expected();
    let mut fails = Vec::new();
    let cases = doc["files"].as_array().expect("file cases");
    let mut cache: std::collections::HashMap<String, Vec<String>> = Default::default();
    let mut load = |rel: &str| -> Vec<String> {
        cache
            .entry(rel.to_string())
            .or_insert_with(|| read_lines(root.join(rel)).expect("data file"))
            .clone()
    };
    for (i, case) in cases.iter().enumerate() {
        let hyp_rel = case["hyp"].as_str().unwrap_or("");
        let mut hyps = load(hyp_rel);
        if case["hyp_transform"].as_str() == Some("perturb") {
            hyps = hyps.iter().map(|l| perturb(l)).collect();
        }
        let refs: Vec<Vec<String>> = strings(&case["refs"]).iter().map(|r| load(r)).collect();
        let ctx = format!("file #{i} {} {} {hyp_rel}", case["kind"], case["config"]);
        run_case(case, &hyps, &refs, &ctx, &mut fails);
    }
    report("files", cases.len(), fails);
}

fn fnv1a64(s: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

#[test]
fn whole_file_tokenization_matches_sacrebleu() {
    let root = data_or_skip!("whole_file_tokenization_matches_sacrebleu");
    let doc = expected();
    let mut fails = Vec::new();
    let cases = doc["file_tokenize_hashes"].as_array().expect("hash cases");
    for c in cases {
        let rel = c["file"].as_str().unwrap_or("");
        let tok: BleuTokenizer = c["tokenizer"].as_str().unwrap_or("").parse().expect("tok");
        let lines = read_lines(root.join(rel)).expect("data file");
        let joined = lines
            .iter()
            .map(|l| tok.tokenize(l))
            .collect::<Vec<_>>()
            .join("\n");
        let h = fnv1a64(&joined);
        if Some(h.as_str()) != c["fnv1a64"].as_str() {
            fails.push(format!("{rel} tok {tok}: hash {h} != {}", c["fnv1a64"]));
        }
    }
    report("file tokenization", cases.len(), fails);
}

#[test]
fn sentence_scores_on_wmt_lines_match_sacrebleu() {
    let root = data_or_skip!("sentence_scores_on_wmt_lines_match_sacrebleu");
    let doc = expected();
    let mut fails = Vec::new();
    let mut checked = 0;
    for c in doc["sentence_files"].as_array().expect("sentence files") {
        let n = c["lines"].as_u64().unwrap_or(0) as usize;
        let hyps = read_lines(root.join(c["hyp"].as_str().unwrap_or(""))).expect("hyp");
        let refs = read_lines(root.join(c["ref"].as_str().unwrap_or(""))).expect("ref");
        let cfg = BleuConfig {
            tokenizer: c["tokenize"]
                .as_str()
                .unwrap_or("13a")
                .parse()
                .expect("tok"),
            ..BleuConfig::sentence()
        };
        for i in 0..n {
            let b = sentence_bleu(&hyps[i], &[refs[i].as_str()], &cfg).expect("bleu");
            let ch =
                sentence_chrf(&hyps[i], &[refs[i].as_str()], &ChrfConfig::default()).expect("chrf");
            checked += 1;
            let want_b = parse_hex_float(c["bleu_hex"][i].as_str().unwrap_or("nan"));
            let want_c = parse_hex_float(c["chrf_hex"][i].as_str().unwrap_or("nan"));
            if b.score.to_bits() != want_b.to_bits() {
                fails.push(format!("line {i}: BLEU {} != {want_b}", b.score));
            }
            if ch.score.to_bits() != want_c.to_bits() {
                fails.push(format!("line {i}: chrF {} != {want_c}", ch.score));
            }
        }
    }
    report("sentence scores on WMT lines", checked, fails);
}

#[test]
fn wmt22_official_bleu_reproduced() {
    let root = data_or_skip!("wmt22_official_bleu_reproduced");
    let doc = expected();
    let rows = bleu::wmt22_official_rows(&root).expect("wmt22 rows");
    let want = doc["wmt22"].as_array().expect("wmt22");
    assert_eq!(rows.len(), want.len(), "number of WMT22 systems present");
    assert_eq!(rows.len(), 18, "all 18 WMT22 systems in ../shared/data");
    let mut fails = Vec::new();
    for (r, w) in rows.iter().zip(want) {
        let ctx = format!("{} {}", r.pair, r.system);
        if Some(r.pair.as_str()) != w["pair"].as_str()
            || Some(r.system.as_str()) != w["system"].as_str()
        {
            fails.push(format!(
                "{ctx}: row order differs from {} {}",
                w["pair"], w["system"]
            ));
            continue;
        }
        if format!("{:.2}", r.measured) != format!("{:.2}", r.published) {
            fails.push(format!(
                "{ctx}: measured {:.2} != published {:.2}",
                r.measured, r.published
            ));
        }
        let exact = parse_hex_float(w["score_hex"].as_str().unwrap_or("nan"));
        if r.measured.to_bits() != exact.to_bits() {
            fails.push(format!("{ctx}: {} != sacreBLEU {}", r.measured, exact));
        }
        if Some(r.signature.as_str()) != w["signature"].as_str() {
            fails.push(format!("{ctx}: signature {}", r.signature));
        }
        eprintln!(
            "  {:6} {:18} published {:6.2} measured {:6.2}",
            r.pair, r.system, r.published, r.measured
        );
    }
    report("WMT22 official bleu-A", rows.len(), fails);
}

#[test]
fn mismatched_line_counts_name_both_counts() {
    let hyps = vec!["a".to_string(), "b".to_string(), "c".to_string()];
    let refs = vec![vec!["a".to_string(), "b".to_string()]];
    match corpus_bleu(&hyps, &refs, &BleuConfig::default()) {
        Err(e @ EvalError::LineCountMismatch { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains('3') && msg.contains('2'), "{msg}");
        }
        other => panic!("expected LineCountMismatch, got {other:?}"),
    }
    assert!(matches!(
        corpus_chrf(&hyps, &refs, &ChrfConfig::default()),
        Err(EvalError::LineCountMismatch {
            hyp: 3,
            ref_count: 2,
            ..
        })
    ));
    let empty: Vec<String> = Vec::new();
    assert!(corpus_bleu(&empty, std::slice::from_ref(&empty), &BleuConfig::default()).is_err());
}

#[test]
fn json_shapes_follow_design() {
    let s = corpus_bleu(
        &["The cat sat on the mat."],
        &[vec!["The cat is on the mat."]],
        &BleuConfig::default(),
    )
    .expect("bleu");
    let v = serde_json::to_value(&s).expect("json");
    let keys: Vec<&str> = v
        .as_object()
        .expect("object")
        .keys()
        .map(|k| k.as_str())
        .collect();
    for k in [
        "metric",
        "score",
        "precisions",
        "bp",
        "sys_len",
        "ref_len",
        "signature",
    ] {
        assert!(keys.contains(&k), "missing {k} in {v}");
    }
    assert_eq!(v["metric"], "bleu");
    assert_eq!(v["precisions"].as_array().map(|a| a.len()), Some(4));
    let c = corpus_chrf(
        &["The cat sat on the mat."],
        &[vec!["The cat is on the mat."]],
        &ChrfConfig::plus_plus(),
    )
    .expect("chrf");
    let v = serde_json::to_value(&c).expect("json");
    assert_eq!(v["metric"], "chrf");
    assert!(v["signature"].as_str().is_some_and(|s| s.contains("nw:2")));
    assert!(c.format_text().starts_with("chrF2++ = "));
}

#[test]
fn unknown_names_list_valid_ones() {
    let e = "13b".parse::<BleuTokenizer>().err().map(|e| e.to_string());
    assert!(e.is_some_and(|m| m.contains("13a, intl, zh, char, none")));
    let e = "expo".parse::<Smooth>().err().map(|e| e.to_string());
    assert!(e.is_some_and(|m| m.contains("exp, floor, add-k, none")));
}
