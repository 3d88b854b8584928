//! Search on a mock model against Hugging Face `generate` run on its Python twin
//! (goldens: tools/processor_goldens.py -> tests/expected/search.json), plus the
//! bookkeeping HF cannot show: rows leaving, batching, order, sampling, trace.

mod common;

use common::{Mock, VOCAB};
use encdec_generate::{
    GenerationConfig, GenerationOverrides, Generator, Hypothesis, SearchStats, TraceEvent,
};
use serde_json::{json, Value};

fn load() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/expected/search.json");
    let text = std::fs::read_to_string(path).expect("search.json (run tools/processor_goldens.py)");
    serde_json::from_str(&text).expect("valid json")
}

fn config(values: Value) -> GenerationConfig {
    GenerationConfig::from_values(&values, &GenerationOverrides::default()).expect("config")
}

/// The seed is not a generation_config.json key (HF has none): it comes from the flags.
fn seeded(values: Value, seed: u64) -> GenerationConfig {
    let over = GenerationOverrides {
        seed: Some(seed),
        ..Default::default()
    };
    GenerationConfig::from_values(&values, &over).expect("config")
}

fn mock_of(case: &Value) -> Mock {
    let m = &case["model"];
    let b = &m["eos_bias"];
    Mock::new(
        m["seed"].as_u64().expect("seed"),
        (
            b["token"].as_u64().expect("token") as u32,
            b["base"].as_f64().expect("base"),
            b["slope"].as_f64().expect("slope"),
        ),
        vec![2],
    )
}

fn sources_of(case: &Value) -> Vec<Vec<u32>> {
    case["sources"]
        .as_array()
        .expect("sources")
        .iter()
        .map(|s| vec![s.as_u64().expect("id") as u32])
        .collect()
}

/// Our output for `case` equals HF's goldens: ids, and scores within 1e-4.
fn assert_matches_golden(name: &str, case: &Value, got: &[Vec<Hypothesis>]) {
    let want = case["expected"].as_array().expect("expected");
    assert_eq!(got.len(), want.len(), "{name}");
    for (s, (g, w)) in got.iter().zip(want).enumerate() {
        let w = w.as_array().expect("hyps");
        assert_eq!(g.len(), w.len(), "{name} source {s}: number of hypotheses");
        for (h, (gh, wh)) in g.iter().zip(w).enumerate() {
            let ids: Vec<u32> = wh["ids"]
                .as_array()
                .expect("ids")
                .iter()
                .map(|x| x.as_u64().expect("id") as u32)
                .collect();
            let score = wh["score"].as_f64().expect("score") as f32;
            assert_eq!(
                gh.ids, ids,
                "{name} source {s} hypothesis {h}: ids (HF score {score}, ours {})",
                gh.score
            );
            assert!(
                (gh.score - score).abs() <= 1e-4 * (1.0 + score.abs()),
                "{name} source {s} hypothesis {h}: score {} vs HF {score}",
                gh.score
            );
        }
    }
}

#[test]
fn search_matches_hf_generate_on_the_mock() {
    let data = load();
    let cases = data["cases"].as_array().expect("cases");
    assert!(cases.len() >= 14);
    for case in cases {
        let name = case["name"].as_str().expect("name");
        let mock = mock_of(case);
        let cfg = config(case["generate_kwargs"].clone());
        let mut gen = Generator::new(&mock, cfg).unwrap_or_else(|e| panic!("{name}: {e}"));
        let got = gen
            .generate(&sources_of(case), None)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_matches_golden(name, case, &got);
    }
}

/// The same goldens with the search on the backend (the CPU backend's ops
/// standing in for a device): the repetition penalty, bans and forcing are
/// applied to the logits there and only candidates come back.
#[test]
fn search_on_the_backend_matches_hf_generate_on_the_mock() {
    let data = load();
    let mut stats = SearchStats::default();
    for case in data["cases"].as_array().expect("cases") {
        let name = case["name"].as_str().expect("name");
        let mock = mock_of(case);
        let cfg = config(case["generate_kwargs"].clone());
        let mut gen = Generator::new(&mock, cfg).unwrap_or_else(|e| panic!("{name}: {e}"));
        gen.set_search_on_backend(Some(true));
        let got = gen
            .generate(&sources_of(case), None)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_matches_golden(name, case, &got);
        let s = gen.search_stats();
        assert_eq!(s.host_steps, 0, "{name}: {s:?}");
        stats.backend_steps += s.backend_steps;
        stats.fallback_steps += s.fallback_steps;
    }
    assert!(stats.backend_steps > 0, "{stats:?}");
}

/// Steps the backend's candidates cannot decide after it applied the edits
/// (here: no-repeat 1-grams ban all 16 ids of the mock's vocabulary, so a row
/// has nothing left) copy the rows to the host and search there: the host
/// search's ids and scores (NaN once every id is banned, on both).
/// `backend_search`'s unit tests check the rows such a fallback reads.
#[test]
fn a_fallback_after_the_backend_penalised_gives_the_host_search() {
    for (beams, penalty) in [(1, 1.5), (1, 0.7)] {
        let kwargs = json!({"decoder_start_token_id": 0, "pad_token_id": 1, "eos_token_id": 2,
                            "num_beams": beams, "max_new_tokens": 24, "min_new_tokens": 24,
                            "no_repeat_ngram_size": 1, "repetition_penalty": penalty});
        let sources: Vec<Vec<u32>> = (3..9).map(|s| vec![s]).collect();
        let run = |on: bool| {
            let mock = Mock::new(11, (2, -1.0, 0.05), vec![2]);
            let mut gen = Generator::new(&mock, config(kwargs.clone())).expect("generator");
            gen.set_search_on_backend(Some(on));
            let out = gen.generate(&sources, None).expect("generate");
            (out, gen.search_stats())
        };
        let (want, _) = run(false);
        let (got, stats) = run(true);
        let what = format!("beams {beams} penalty {penalty}");
        assert!(
            stats.fallback_steps > 0 && stats.backend_steps > 0,
            "{what}: {stats:?}"
        );
        for (g, w) in got.iter().zip(&want) {
            for (gh, wh) in g.iter().zip(w) {
                assert_eq!(gh.ids, wh.ids, "{what}");
                let err = (gh.score - wh.score).abs() / wh.score.abs().max(1.0);
                let both_nan = gh.score.is_nan() && wh.score.is_nan();
                assert!(
                    err <= 1e-5 || both_nan,
                    "{what}: {} vs {}",
                    gh.score,
                    wh.score
                );
            }
        }
    }
}

#[test]
fn early_stopping_variants_differ_as_in_hf() {
    let data = load();
    let firsts: Vec<Vec<u64>> = [
        "early_stopping_true",
        "early_stopping_false",
        "early_stopping_never",
    ]
    .iter()
    .map(|n| {
        let c = data["cases"]
            .as_array()
            .expect("cases")
            .iter()
            .find(|c| c["name"].as_str().map(str::to_lowercase).as_deref() == Some(n))
            .expect("case");
        c["expected"][0][0]["ids"]
            .as_array()
            .expect("ids")
            .iter()
            .map(|x| x.as_u64().expect("id"))
            .collect()
    })
    .collect();
    assert_ne!(firsts[0], firsts[1]);
    assert_ne!(firsts[1], firsts[2]);
    assert_ne!(firsts[0], firsts[2]);
}

#[test]
fn finished_greedy_rows_leave_the_batch() {
    let mock = Mock::new(1, (2, -1.0, 0.35), vec![2]);
    let cfg = config(
        json!({"decoder_start_token_id": 0, "eos_token_id": 2, "pad_token_id": 1, "max_new_tokens": 12}),
    );
    let mut gen = Generator::new(&mock, cfg).expect("generator");
    let sources: Vec<Vec<u32>> = (3..8).map(|s| vec![s]).collect();
    let out = gen.generate(&sources, None).expect("generate");
    let rows = mock.rows_per_step.lock().expect("lock").clone();
    assert_eq!(rows[0], 5);
    assert!(rows.windows(2).all(|w| w[1] <= w[0]), "{rows:?}");
    // each step feeds exactly the rows still running
    let longest = out.iter().map(|h| h[0].ids.len()).max().expect("max");
    assert_eq!(rows.len(), longest);
    for (step, &n) in rows.iter().enumerate() {
        let running = out.iter().filter(|h| h[0].ids.len() > step).count();
        assert_eq!(n, running, "step {step}: {rows:?}");
    }
}

#[test]
fn finished_beam_sources_leave_the_batch() {
    let mock = Mock::new(3, (2, -1.5, 0.3), vec![2]);
    let cfg = config(
        json!({"decoder_start_token_id": 0, "eos_token_id": 2, "pad_token_id": 1, "num_beams": 3,
                            "max_new_tokens": 30, "early_stopping": true}),
    );
    let mut gen = Generator::new(&mock, cfg).expect("generator");
    let sources: Vec<Vec<u32>> = (3..9).map(|s| vec![s]).collect();
    gen.generate(&sources, None).expect("generate");
    let rows = mock.rows_per_step.lock().expect("lock").clone();
    assert_eq!(rows[0], 18);
    assert!(rows.iter().all(|r| r % 3 == 0));
    assert!(rows.last() < rows.first(), "{rows:?}");
    assert!(
        rows.len() < 30,
        "early stopping should end before max length: {rows:?}"
    );
}

#[test]
fn batching_sorts_by_length_and_restores_order() {
    let mock = Mock::new(3, (2, -1.5, 0.3), vec![2]);
    let cfg = config(
        json!({"decoder_start_token_id": 0, "eos_token_id": 2, "pad_token_id": 1, "num_beams": 2,
                            "num_return_sequences": 2, "max_new_tokens": 10}),
    );
    // different lengths (the mock only reads the first id)
    let sources: Vec<Vec<u32>> = (0..7u32)
        .map(|i| vec![3 + i; 1 + (i as usize * 5) % 7])
        .collect();
    let mut gen = Generator::new(&mock, cfg.clone()).expect("generator");
    let one_by_one: Vec<Vec<Hypothesis>> = sources
        .iter()
        .map(|s| {
            gen.generate(std::slice::from_ref(s), None)
                .expect("generate")
                .remove(0)
        })
        .collect();
    for bs in [1, 2, 3, 7, 100] {
        let batched = gen.generate_all(&sources, bs, None).expect("generate_all");
        assert_eq!(batched, one_by_one, "batch size {bs}");
    }
    let plan = encdec_generate::plan_batches(&[1, 5, 3, 5, 2], 2);
    assert_eq!(plan, vec![vec![1, 3], vec![2, 4], vec![0]]);
}

#[test]
fn one_encoder_call_per_batch() {
    let mock = Mock::new(1, (2, -1.0, 0.35), vec![2]);
    let cfg = config(json!({"decoder_start_token_id": 0, "eos_token_id": 2, "max_new_tokens": 5}));
    let mut gen = Generator::new(&mock, cfg).expect("generator");
    let sources: Vec<Vec<u32>> = (3..10).map(|s| vec![s]).collect();
    gen.generate_all(&sources, 3, None).expect("generate");
    assert_eq!(*mock.encodes.lock().expect("lock"), 3);
}

fn softmax(x: &[f32]) -> Vec<f64> {
    let m = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let e: Vec<f64> = x.iter().map(|&v| f64::from(v - m).exp()).collect();
    let s: f64 = e.iter().sum();
    e.iter().map(|v| v / s).collect()
}

#[test]
fn sampling_draws_from_the_warped_distribution() {
    let mock = Mock::new(11, (2, 0.0, 0.0), vec![2]);
    let cfg = seeded(
        json!({"decoder_start_token_id": 0, "eos_token_id": 2, "pad_token_id": 1,
                            "do_sample": true, "temperature": 0.7, "top_k": 4, "top_p": 0.95,
                            "max_new_tokens": 1}),
        7,
    );
    let n = 20000;
    let sources = vec![vec![5u32]; n];
    let mut gen = Generator::new(&mock, cfg.clone()).expect("generator");
    let out = gen.generate(&sources, None).expect("generate");
    let mut counts = [0usize; VOCAB];
    for h in &out {
        counts[h[0].ids[0] as usize] += 1;
    }
    // the same distribution computed directly with the processors
    let mut row = vec![0f32; VOCAB];
    mock.logits_for(5, &[0], &mut row);
    let mut list = encdec_generate::LogitsProcessorList::from_config(&cfg, VOCAB).expect("procs");
    assert_eq!(
        list.names(),
        [
            "TemperatureLogitsWarper",
            "TopKLogitsWarper",
            "TopPLogitsWarper"
        ]
    );
    list.process(
        &mut row,
        &encdec_generate::RowContext {
            history: &[0],
            source: &[5],
        },
    );
    let p = softmax(&row);
    for t in 0..VOCAB {
        let f = counts[t] as f64 / n as f64;
        let sd = (p[t] * (1.0 - p[t]) / n as f64).sqrt();
        assert!(
            (f - p[t]).abs() <= 5.0 * sd + 1e-9,
            "token {t}: frequency {f} vs p {}",
            p[t]
        );
        if p[t] == 0.0 {
            assert_eq!(counts[t], 0);
        }
    }
    // the reported score is the log-prob of the drawn id under that distribution
    for h in out.iter().take(50) {
        let t = h[0].ids[0] as usize;
        assert!((f64::from(h[0].score) - p[t].ln()).abs() < 1e-5);
    }
}

#[test]
fn sampling_is_reproducible_and_batch_independent() {
    let mock = Mock::new(4, (2, -1.0, 0.3), vec![2]);
    let values = json!({"decoder_start_token_id": 0, "eos_token_id": 2, "pad_token_id": 1, "do_sample": true,
                        "num_return_sequences": 3, "max_new_tokens": 10});
    let sources: Vec<Vec<u32>> = (3..9).map(|s| vec![s]).collect();
    let a = Generator::new(&mock, seeded(values.clone(), 42))
        .expect("gen")
        .generate_all(&sources, 6, None)
        .expect("a");
    let b = Generator::new(&mock, seeded(values.clone(), 42))
        .expect("gen")
        .generate_all(&sources, 4, None)
        .expect("b");
    assert_eq!(a, b);
    assert!(a.iter().all(|h| h.len() == 3));
    let c = Generator::new(&mock, seeded(values, 43))
        .expect("gen")
        .generate_all(&sources, 6, None)
        .expect("c");
    assert_ne!(a, c);
}

/// Top-k sampling on the backend (the CPU backend's ops standing in for a
/// device: the edits and each row's top-k + 1 there, HF's warpers and the
/// draw over those candidates on the host) draws what the host draws from the
/// whole rows: the same ids and bit for bit the same scores, for every
/// top-k below, at and above the vocabulary, with temperature, top-p, the
/// repetition penalty, bans and forcing, several samples per source. On rows
/// with ties at the k-th score (a quantised mock) some steps fall back to the
/// full rows, and still draw the same.
#[test]
fn sampling_on_the_backend_draws_what_the_host_draws() {
    let mut total = SearchStats::default();
    let mut tie_fallbacks = 0;
    for (c, (top_k, temperature, top_p, extra)) in [
        (1, 1.0, 1.0, json!({})),
        (3, 0.7, 1.0, json!({})),
        (8, 1.3, 0.9, json!({})),
        (14, 1.0, 0.5, json!({"repetition_penalty": 1.4})),
        (
            15,
            0.8,
            0.95,
            json!({"no_repeat_ngram_size": 2, "min_new_tokens": 3}),
        ),
        (50, 1.0, 0.8, json!({})),
        (
            5,
            0.6,
            0.9,
            json!({"forced_bos_token_id": 7, "forced_eos_token_id": 2,
                              "repetition_penalty": 0.8, "bad_words_ids": [[9], [4]]}),
        ),
    ]
    .into_iter()
    .enumerate()
    {
        for quantum in [None, Some(0.5f32)] {
            let mut kwargs = json!({"decoder_start_token_id": 0, "pad_token_id": 1, "eos_token_id": 2,
                                    "do_sample": true, "top_k": top_k, "temperature": temperature,
                                    "top_p": top_p, "num_return_sequences": 2, "max_new_tokens": 12});
            for (key, v) in extra.as_object().expect("object") {
                kwargs[key] = v.clone();
            }
            let sources: Vec<Vec<u32>> = (3..9).map(|s| vec![s]).collect();
            let run = |on: bool| {
                let mut mock = Mock::new(20 + c as u64, (2, -1.0, 0.2), vec![2]);
                if let Some(q) = quantum {
                    mock = mock.quantized(q);
                }
                let mut gen = Generator::new(&mock, seeded(kwargs.clone(), 99)).expect("generator");
                gen.set_search_on_backend(Some(on));
                let out = gen.generate(&sources, None).expect("generate");
                (out, gen.search_stats())
            };
            let (want, host) = run(false);
            let (got, stats) = run(true);
            let what = format!("{kwargs} quantum {quantum:?}");
            assert_eq!(host.backend_steps, 0, "{what}");
            assert_eq!(stats.host_steps, 0, "{what}: {stats:?}");
            if quantum.is_none() {
                assert!(stats.backend_steps > 0, "{what}: {stats:?}");
            }
            for (g, w) in got.iter().zip(&want) {
                for (gh, wh) in g.iter().zip(w) {
                    assert_eq!(gh.ids, wh.ids, "{what}");
                    assert_eq!(
                        gh.score.to_bits(),
                        wh.score.to_bits(),
                        "{what}: {} vs {}",
                        gh.score,
                        wh.score
                    );
                }
            }
            if quantum.is_some() {
                tie_fallbacks += stats.fallback_steps;
            }
            total.backend_steps += stats.backend_steps;
            total.fallback_steps += stats.fallback_steps;
        }
    }
    assert!(
        tie_fallbacks > 0,
        "no tie at the k-th score was exercised: {total:?}"
    );
    assert!(total.backend_steps > total.fallback_steps, "{total:?}");
}

/// Sampling the backend cannot decide from candidates searches on the host
/// from the start: no top-k (top-p alone), top-k above the fetch limit, beam
/// sampling, a trace.
#[test]
fn sampling_without_a_small_top_k_stays_on_the_host() {
    for (kwargs, big_vocab) in [
        (json!({"top_k": 0, "top_p": 0.9}), false),
        (json!({"top_k": 64}), true),
        (json!({"top_k": 5, "num_beams": 2}), false),
    ] {
        let mut kw = json!({"decoder_start_token_id": 0, "pad_token_id": 1, "eos_token_id": 2,
                            "do_sample": true, "max_new_tokens": 4});
        for (key, v) in kwargs.as_object().expect("object") {
            kw[key] = v.clone();
        }
        let mock = Mock::new(3, (2, -1.0, 0.2), vec![2]);
        let mut gen = Generator::new(&mock, seeded(kw.clone(), 5)).expect("generator");
        gen.set_search_on_backend(Some(true));
        gen.generate(&[vec![3]], None).expect("generate");
        let s = gen.search_stats();
        // top-k 64 fetches the whole 16-id row: decided on the backend
        if big_vocab {
            assert!(s.host_steps == 0 && s.backend_steps > 0, "{kw}: {s:?}");
        } else {
            assert!(s.backend_steps == 0 && s.host_steps > 0, "{kw}: {s:?}");
        }
    }
}

#[test]
fn beam_sampling_runs_and_keeps_beam_invariants() {
    let mock = Mock::new(5, (2, -1.0, 0.3), vec![2]);
    let cfg = config(
        json!({"decoder_start_token_id": 0, "eos_token_id": 2, "pad_token_id": 1, "do_sample": true,
                            "num_beams": 3, "num_return_sequences": 3, "max_new_tokens": 12}),
    );
    let mut gen = Generator::new(&mock, cfg).expect("gen");
    let out = gen.generate(&[vec![3], vec![4]], None).expect("generate");
    for hyps in &out {
        assert_eq!(hyps.len(), 3);
        assert!(hyps.windows(2).all(|w| w[0].score >= w[1].score));
        for h in hyps {
            assert!(!h.ids.is_empty() && h.ids.len() <= 12);
            assert!(h.ids.last() == Some(&2) || h.ids.len() == 12);
        }
    }
}

#[test]
fn trace_reports_every_choice_with_top_alternatives() {
    let mock = Mock::new(1, (2, -1.0, 0.35), vec![2]);
    let cfg = config(json!({"decoder_start_token_id": 0, "eos_token_id": 2, "max_new_tokens": 12}));
    let mut gen = Generator::new(&mock, cfg).expect("gen");
    type Event = (usize, usize, u32, f32, Vec<(u32, f32)>);
    let mut events: Vec<Event> = Vec::new();
    let mut cb = |e: &TraceEvent<'_>| {
        events.push((e.step, e.source, e.token, e.prob, e.alternatives.to_vec()))
    };
    let out = gen
        .generate_all(&[vec![3], vec![4]], 2, Some(&mut cb))
        .expect("generate");
    let total: usize = out.iter().map(|h| h[0].ids.len()).sum();
    assert_eq!(events.len(), total);
    for (step, source, token, prob, alts) in &events {
        assert_eq!(out[*source][0].ids[*step], *token);
        assert_eq!(alts.len(), 5);
        assert_eq!(alts[0].0, *token, "greedy picks the top alternative");
        assert!((alts[0].1 - prob).abs() < 1e-6);
        assert!(alts.windows(2).all(|w| w[0].1 >= w[1].1));
        assert!(alts.iter().map(|a| a.1).sum::<f32>() <= 1.0 + 1e-5);
    }
    // beam search traces each extended beam
    let cfg = config(
        json!({"decoder_start_token_id": 0, "eos_token_id": 2, "num_beams": 2, "max_new_tokens": 6}),
    );
    let mut gen = Generator::new(&mock, cfg).expect("gen");
    let mut n = 0;
    let mut cb = |e: &TraceEvent<'_>| {
        assert!(e.parent < 2 && e.row < 2 && e.prob > 0.0 && e.prob <= 1.0);
        n += 1;
    };
    gen.generate(&[vec![3]], Some(&mut cb)).expect("generate");
    assert!(n >= 2);
}

#[test]
fn max_length_beyond_decoder_positions_is_refused() {
    struct Short(Mock, encdec_generate::ModelSpec);
    let mock = Mock::new(1, (2, 0.0, 0.0), vec![2]);
    let mut spec = encdec_generate::Seq2SeqModel::spec(&mock).clone();
    spec.max_target_positions = Some(8);
    let short = Short(mock, spec);
    impl encdec_generate::Seq2SeqModel for Short {
        fn spec(&self) -> &encdec_generate::ModelSpec {
            &self.1
        }
        fn backend(&self) -> &dyn encdec_core::Backend {
            self.0.backend()
        }
        fn encode(&self, s: &[Vec<u32>]) -> encdec_core::Result<encdec_generate::EncoderOutput> {
            self.0.encode(s)
        }
        fn start(
            &self,
            e: &encdec_generate::EncoderOutput,
            r: &[u32],
            c: usize,
        ) -> encdec_core::Result<encdec_generate::DecoderState> {
            self.0.start(e, r, c)
        }
        fn step(
            &self,
            e: &encdec_generate::EncoderOutput,
            s: &mut encdec_generate::DecoderState,
            t: &[u32],
            l: &mut encdec_core::Tensor,
        ) -> encdec_core::Result<()> {
            self.0.step(e, s, t, l)
        }
        fn select_rows(
            &self,
            s: &mut encdec_generate::DecoderState,
            r: &[u32],
        ) -> encdec_core::Result<()> {
            self.0.select_rows(s, r)
        }
    }
    let ok = config(json!({"decoder_start_token_id": 0, "eos_token_id": 2, "max_new_tokens": 8}));
    assert!(Generator::new(&short, ok).is_ok());
    let too_long =
        config(json!({"decoder_start_token_id": 0, "eos_token_id": 2, "max_new_tokens": 9}));
    let err = Generator::new(&short, too_long)
        .err()
        .expect("error")
        .to_string();
    assert!(err.contains("decoder positions"), "{err}");
    let bos =
        config(json!({"decoder_start_token_id": 0, "eos_token_id": 2, "forced_bos_token_id": 16}));
    let err = Generator::new(&short, bos)
        .err()
        .expect("error")
        .to_string();
    assert!(
        err.contains("forced_bos_token_id") && err.contains("vocabulary"),
        "{err}"
    );
}
