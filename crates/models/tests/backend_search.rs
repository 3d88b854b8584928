//! Issue 5, item 6: search on the backend (only each row's candidates reach the
//! host) gives the host search's ids on every fixture, and its scores within
//! 1e-5 relative, for greedy and 4-beam search (also with two returned
//! sequences) and top-k sampling (seeded; with temperature, top-p, two
//! samples per source), with each ban processor (min length / min new tokens,
//! no-repeat n-grams of 1, 2 and 3, encoder no-repeat n-grams, bad words,
//! forced BOS / EOS), with the repetition penalty (0.8 / 1.3, alone and with
//! bans: applied on the backend too), and in the cases that must go to the
//! host (thousands of bans, or beam candidates that cannot bound the rest of a
//! row: the step falls back to the full rows, where the host must not apply
//! the penalty a second time). Run on the CPU backend with the backend path
//! forced on; `Generator::search_stats` proves which path ran.

mod common;

use std::sync::Arc;

use encdec_core::{Backend, DType};
use encdec_generate::{GenerationConfig, Generator, Hypothesis, SearchStats, Seq2SeqModel};
use encdec_models::build_model;
use serde_json::{json, Value};

const FIXTURES: &[&str] = &[
    "t5", "t5-v1_1", "mt5", "bart", "mbart", "pegasus", "marian", "m2m100",
];

/// Every source of a fixture's golden file: its cases and its padded batch.
fn sources(name: &str) -> Vec<Vec<u32>> {
    let g = common::golden(name);
    let mut out: Vec<Vec<u32>> = common::cases(&g)
        .iter()
        .map(|c| common::ids(common::field(c, "input_ids")))
        .collect();
    out.extend(common::batch_sources(&g));
    out
}

fn run(
    model: &dyn Seq2SeqModel,
    cfg: &GenerationConfig,
    srcs: &[Vec<u32>],
    on_backend: bool,
) -> (Vec<Vec<Hypothesis>>, SearchStats) {
    let mut g = Generator::new(model, cfg.clone()).expect("generator");
    g.set_search_on_backend(Some(on_backend));
    let out = g.generate_all(srcs, 3, None).expect("generate");
    (out, g.search_stats())
}

/// Every setting's processors only penalise, ban or force, so no step may
/// search on the host from the start.
fn settings(name: &str) -> Vec<(String, Value)> {
    let g = common::golden(name);
    let mut s: Vec<(String, Value)> = Vec::new();
    let mut add = |n: &str, v: Value| s.push((n.to_string(), v));
    for (mode, beams) in [("greedy", 1), ("beam4", 4)] {
        let kw = |extra: Value| {
            let mut v = json!({"num_beams": beams, "max_new_tokens": 24});
            for (k, x) in extra.as_object().unwrap() {
                v[k] = x.clone();
            }
            v
        };
        add(&format!("{mode} checkpoint defaults"), kw(json!({})));
        add(
            &format!("{mode} min_new_tokens 5"),
            kw(json!({"min_new_tokens": 5})),
        );
        add(
            &format!("{mode} min_length 7"),
            kw(json!({"min_length": 7})),
        );
        for n in [1, 2, 3] {
            add(
                &format!("{mode} no_repeat_ngram_size {n}"),
                kw(json!({"no_repeat_ngram_size": n})),
            );
        }
        add(
            &format!("{mode} encoder_no_repeat_ngram_size 2"),
            kw(json!({"encoder_no_repeat_ngram_size": 2})),
        );
        add(
            &format!("{mode} bad words"),
            kw(json!({"bad_words_ids": [[5], [7], [9, 10], [11, 12, 13]]})),
        );
        add(
            &format!("{mode} forced bos/eos"),
            kw(
                json!({"forced_bos_token_id": 6, "forced_eos_token_id": [3, 4], "max_new_tokens": 9}),
            ),
        );
        for p in [0.8, 1.3] {
            add(
                &format!("{mode} repetition_penalty {p}"),
                kw(json!({"repetition_penalty": p})),
            );
        }
        add(
            &format!("{mode} repetition_penalty 1.3 nrng 2 min_new 4 bad words"),
            kw(json!({"repetition_penalty": 1.3, "no_repeat_ngram_size": 2,
                      "min_new_tokens": 4, "bad_words_ids": [[5], [9, 10]]})),
        );
    }
    // top-k sampling: the edits and each row's top-k + 1 on the backend, the
    // warpers and the draw over them on the host (a fixed seed for both runs)
    add(
        "sample top_k 50 (HF's default)",
        json!({"do_sample": true, "num_beams": 1, "seed": 7, "max_new_tokens": 24}),
    );
    add(
        "sample top_k 10 temperature 0.7 top_p 0.9 penalty 1.3 nrng 2",
        json!({"do_sample": true, "num_beams": 1, "seed": 8, "top_k": 10, "temperature": 0.7, "top_p": 0.9,
               "repetition_penalty": 1.3, "no_repeat_ngram_size": 2, "max_new_tokens": 24}),
    );
    add(
        "sample nrs 2 top_k 20 temperature 1.5 forced bos/eos",
        json!({"do_sample": true, "num_beams": 1, "seed": 9, "top_k": 20, "temperature": 1.5,
               "num_return_sequences": 2, "forced_bos_token_id": 6,
               "forced_eos_token_id": [3, 4], "max_new_tokens": 9}),
    );
    add(
        "beam4 num_return_sequences 2",
        json!({"num_beams": 4, "num_return_sequences": 2, "max_new_tokens": 24}),
    );
    add(
        "beam4 nrs 3 nrng 2 min_new 4",
        json!({"num_beams": 4, "num_return_sequences": 3, "max_new_tokens": 24,
               "no_repeat_ngram_size": 2, "min_new_tokens": 4}),
    );
    // HF's own settings of the golden file (mbart's forced BOS, bart's beams ...)
    for gen in common::field(&g, "generation")
        .as_array()
        .cloned()
        .unwrap_or_default()
    {
        let setting = gen.get("name").and_then(Value::as_str).unwrap_or("?");
        let kwargs = common::field(&gen, "generate_kwargs").clone();
        add(&format!("golden {setting}"), kwargs);
    }
    s
}

#[test]
fn search_on_the_backend_matches_the_host_search_on_every_fixture() {
    let backend: Arc<dyn Backend> = Arc::new(encdec_cpu::CpuBackend::with_threads(2));
    let mut fails = Vec::new();
    let mut total = SearchStats::default();
    let mut worst = 0f64;
    let mut worst_at = String::new();
    for name in FIXTURES {
        let (cfg, ckpt) = common::open_fixture(name);
        let (model, _) = build_model(&cfg, &ckpt, backend.clone(), DType::F32).expect(name);
        let srcs = sources(name);
        for (setting, kwargs) in settings(name) {
            let what = format!("{name}/{setting}");
            let gc = common::generation_config(name, &kwargs);
            let (want, host) = run(model.as_ref(), &gc, &srcs, false);
            let (got, dev) = run(model.as_ref(), &gc, &srcs, true);
            assert_eq!(
                host.backend_steps + host.fallback_steps,
                0,
                "{what}: host run"
            );
            total.backend_steps += dev.backend_steps;
            total.fallback_steps += dev.fallback_steps;
            total.host_steps += dev.host_steps;
            if dev.host_steps != 0 || dev.backend_steps == 0 {
                fails.push(format!("{what}: expected search on the backend, {dev:?}"));
            }
            for (s, (g, w)) in got.iter().zip(&want).enumerate() {
                for (i, (gh, wh)) in g.iter().zip(w).enumerate() {
                    if gh.ids != wh.ids {
                        fails.push(format!(
                            "{what} source {s} hyp {i}: ids differ ({dev:?})\n  backend {:?} ({})\n  host    {:?} ({})",
                            gh.ids, gh.score, wh.ids, wh.score
                        ));
                        continue;
                    }
                    let err =
                        f64::from((gh.score - wh.score).abs()) / f64::from(wh.score.abs()).max(1.0);
                    if err > worst {
                        worst = err;
                        worst_at = format!("{what} source {s} hyp {i}");
                    }
                    if err > 1e-5 {
                        fails.push(format!(
                            "{what} source {s} hyp {i}: score {} vs host {} (rel {err:.2e})",
                            gh.score, wh.score
                        ));
                    }
                }
                if g.len() != w.len() {
                    fails.push(format!(
                        "{what} source {s}: {} vs {} hyps",
                        g.len(),
                        w.len()
                    ));
                }
            }
        }
    }
    eprintln!("backend search over all fixtures: {total:?}, worst score difference {worst:.2e} ({worst_at})");
    assert!(fails.is_empty(), "{}", fails.join("\n"));
    assert!(
        total.fallback_steps > 0,
        "no setting exercised the fallback of a step to the full rows"
    );
}

/// The fallback to the full rows: no-repeat 1-grams over a long generation ban
/// every id a row produced, more bans than search on the backend holds (or
/// every id of a small vocabulary), so those steps copy the full rows to the
/// host: the host's ids and scores still, also with the repetition penalty
/// (which the host must then not apply to rows the backend penalised).
#[test]
fn steps_the_backend_cannot_decide_fall_back_to_the_full_rows() {
    let backend: Arc<dyn Backend> = Arc::new(encdec_cpu::CpuBackend::with_threads(2));
    let mut seen = Vec::new();
    for (name, penalty) in [
        ("t5", 1.0),
        ("bart", 1.0),
        ("marian", 1.0),
        ("t5", 1.3),
        ("bart", 0.8),
    ] {
        let (cfg, ckpt) = common::open_fixture(name);
        let (model, _) = build_model(&cfg, &ckpt, backend.clone(), DType::F32).expect(name);
        let kwargs = json!({"num_beams": 1, "max_new_tokens": 120, "min_new_tokens": 120,
                            "no_repeat_ngram_size": 1, "repetition_penalty": penalty});
        let gc = common::generation_config(name, &kwargs);
        let srcs = sources(name);
        let (want, _) = run(model.as_ref(), &gc, &srcs, false);
        let (got, dev) = run(model.as_ref(), &gc, &srcs, true);
        for (g, w) in got.iter().zip(&want) {
            assert_eq!(g[0].ids, w[0].ids, "{name}");
            let err = (g[0].score - w[0].score).abs() / w[0].score.abs().max(1.0);
            assert!(err <= 1e-5, "{name}: {} vs {}", g[0].score, w[0].score);
        }
        assert!(dev.backend_steps > 0, "{name}: {dev:?}");
        seen.push((name, dev));
    }
    eprintln!("{seen:?}");
    assert!(
        seen.iter().any(|(_, d)| d.fallback_steps > 0),
        "no step fell back: {seen:?}"
    );
}
