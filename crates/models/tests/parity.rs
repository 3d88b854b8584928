//! Parity with transformers: `num_parameters()` for every catalogue entry, and the
//! full state-dict layout (names, shapes, parameter or buffer) of one entry per
//! model_type. The expected files are written by `tools/param_counts.py`.

use std::collections::{BTreeMap, BTreeSet};

use encdec_models::{catalogue, ModelConfig};
use serde_json::Value;

fn expected(file: &str) -> Value {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/expected")
        .join(file);
    serde_json::from_str(
        &std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())),
    )
    .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn num_parameters_matches_transformers_for_every_catalogue_entry() {
    let want = expected("param_counts.json");
    let want = want.as_object().unwrap();
    let mut failures = Vec::new();
    for name in catalogue::names() {
        let Some(n) = want.get(name).and_then(Value::as_u64) else {
            failures.push(format!(
                "{name}: not in param_counts.json (re-run tools/param_counts.py)"
            ));
            continue;
        };
        let got = catalogue::get(name).unwrap().num_parameters();
        if got != n {
            failures.push(format!(
                "{name}: ours {got}, transformers {n} (diff {})",
                got as i64 - n as i64
            ));
        }
    }
    for k in want.keys().filter(|k| !k.starts_with('_')) {
        if catalogue::entry(k).is_err() {
            failures.push(format!(
                "{k}: in param_counts.json but not in the catalogue"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(
        catalogue::get("t5-small").unwrap().num_parameters(),
        60_506_624
    );
}

/// Tensors we list that transformers' state dict lacks (unused legacy weights some
/// old checkpoints still carry).
const KNOWN_EXTRAS: &[&str] =
    &["decoder.block.0.layer.1.EncDecAttention.relative_attention_bias.weight"];

#[test]
fn tensor_specs_match_the_transformers_state_dict() {
    let layouts = expected("state_dicts.json");
    let layouts = layouts.as_object().unwrap();
    assert!(layouts.len() >= 8);
    for (name, layout) in layouts {
        let mut raw: Value = serde_json::from_str(catalogue::entry(name).unwrap().json).unwrap();
        for (k, v) in layout["overrides"].as_object().unwrap() {
            raw[k] = v.clone();
        }
        let cfg = ModelConfig::from_json_str(&raw.to_string()).unwrap();
        let hf: BTreeMap<String, (Vec<usize>, bool)> = layout["tensors"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| {
                let shape = v[0]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|d| d.as_u64().unwrap() as usize)
                    .collect();
                (k.clone(), (shape, v[1].as_bool().unwrap()))
            })
            .collect();
        let ours: BTreeMap<String, _> = cfg
            .tensor_specs()
            .into_iter()
            .map(|s| (s.name.clone(), s))
            .collect();
        let missing: Vec<&String> = hf.keys().filter(|k| !ours.contains_key(*k)).collect();
        assert!(missing.is_empty(), "{name}: specs lack {missing:?}");
        let extra: Vec<&String> = ours
            .keys()
            .filter(|k| !hf.contains_key(*k) && !KNOWN_EXTRAS.contains(&k.as_str()))
            .collect();
        assert!(
            extra.is_empty(),
            "{name}: specs list tensors transformers lacks: {extra:?}"
        );
        for (k, (shape, is_param)) in &hf {
            let s = &ours[k];
            assert_eq!(&s.shape, shape, "{name}: {k}");
            assert_eq!(s.parameter, *is_param, "{name}: {k} parameter flag");
        }
        // Required tensors are all in the state dict, and every optional one is a tied
        // copy, a recomputed table, a buffer or a known extra.
        let required: BTreeSet<&String> = ours
            .values()
            .filter(|s| s.required)
            .map(|s| &s.name)
            .collect();
        assert!(required.iter().all(|k| hf.contains_key(*k)), "{name}");
    }
}
