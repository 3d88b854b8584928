//! `Seq2SeqModel::cross_attention` (what `--attention-map` draws) against the
//! `cross_attentions` of transformers (eager attention) on every fixture:
//! tests/fixtures/<arch>/cross_attention.json from tools/cross_attention_goldens.py.

mod common;

use encdec_core::DType;
use encdec_models::build_model;
use serde_json::Value;

const FIXTURES: [&str; 8] = [
    "t5", "t5-v1_1", "mt5", "bart", "mbart", "pegasus", "marian", "m2m100",
];

fn golden(name: &str) -> Value {
    let p = common::fixture_dir(name).join("cross_attention.json");
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn cross_attention_matches_transformers_on_every_fixture() {
    let mut failures = Vec::new();
    for name in FIXTURES {
        let g = golden(name);
        let (cfg, ckpt) = common::open_fixture(name);
        let (model, _) = build_model(&cfg, &ckpt, common::cpu(), DType::F32)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let src = common::ids(common::field(&g, "input_ids"));
        let tgt = common::ids(common::field(&g, "decoder_input_ids"));
        let layers = common::field(&g, "layers")
            .as_object()
            .expect("layers object");
        for (layer, want) in layers {
            let layer: usize = layer.parse().expect("layer index");
            let (want, shape) = common::floats(want);
            let (got_layer, got) = model
                .cross_attention(&src, &tgt, Some(layer))
                .unwrap_or_else(|e| panic!("{name} layer {layer}: {e}"));
            assert_eq!(got_layer, layer);
            assert_eq!(got.dims(), shape.as_slice(), "{name} layer {layer}");
            let got = got.as_f32().expect("f32").to_vec();
            if let Err(e) = common::compare(
                &format!("{name} layer {layer}"),
                &got,
                &want,
                &shape,
                common::REL_F32,
            ) {
                failures.push(e);
            }
        }
        // None picks the last layer
        let last = common::field(&g, "num_layers")
            .as_u64()
            .expect("num_layers") as usize
            - 1;
        let (l, _) = model.cross_attention(&src, &tgt, None).expect("last layer");
        assert_eq!(l, last, "{name}");
    }
    common::finish("cross-attention", failures);
}

#[test]
fn cross_attention_rows_are_distributions_and_bad_requests_are_errors() {
    let (cfg, ckpt) = common::open_fixture("bart");
    let (model, _) = build_model(&cfg, &ckpt, common::cpu(), DType::F32).expect("bart");
    let (_, p) = model
        .cross_attention(&[0, 321, 563, 762, 2], &[2, 0, 321], None)
        .expect("map");
    assert_eq!(p.dims(), [4, 3, 5]);
    for row in p.as_f32().expect("f32").chunks(5) {
        let sum: f32 = row.iter().sum();
        assert!((sum - 1.0).abs() < 1e-5, "row sums to {sum}");
    }
    let err = model
        .cross_attention(&[0, 2], &[2], Some(7))
        .expect_err("layer 7 of 2")
        .to_string();
    assert!(err.contains("layer 7") && err.contains("has 2"), "{err}");
    let err = model
        .cross_attention(&[0, 2], &[], None)
        .expect_err("empty target")
        .to_string();
    assert!(err.contains("empty target"), "{err}");
}
