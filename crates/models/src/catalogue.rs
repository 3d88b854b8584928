//! The random-weight catalogue: the exact `config.json` of known checkpoints, so
//! that `encdec bench --arch NAME --random-weights` builds a model with real shapes
//! without downloading weights.
//!
//! The JSON files live in `src/catalogue/<name>.json` and are embedded with
//! `include_str!`; `tools/param_counts.py` reads the same files to have transformers
//! count their parameters (`tests/expected/param_counts.json`). They are written
//! from the hub's config.json files; `t5-small` and `bart-large-cnn` are checked
//! byte-for-byte in meaning against the real files in `../shared/data/configs`.

use crate::config::ModelConfig;
use crate::error::{ModelError, Result};

/// One catalogue entry.
#[derive(Debug, Clone, Copy)]
pub struct Entry {
    /// Short name (`--arch`).
    pub name: &'static str,
    /// The Hugging Face hub id the config comes from.
    pub hub_id: &'static str,
    /// The config.json text.
    pub json: &'static str,
}

const ENTRIES: &[Entry] = &[
    Entry {
        name: "t5-small",
        hub_id: "google-t5/t5-small",
        json: include_str!("catalogue/t5-small.json"),
    },
    Entry {
        name: "t5-base",
        hub_id: "google-t5/t5-base",
        json: include_str!("catalogue/t5-base.json"),
    },
    Entry {
        name: "t5-large",
        hub_id: "google-t5/t5-large",
        json: include_str!("catalogue/t5-large.json"),
    },
    Entry {
        name: "t5-3b",
        hub_id: "google-t5/t5-3b",
        json: include_str!("catalogue/t5-3b.json"),
    },
    Entry {
        name: "t5-11b",
        hub_id: "google-t5/t5-11b",
        json: include_str!("catalogue/t5-11b.json"),
    },
    Entry {
        name: "flan-t5-small",
        hub_id: "google/flan-t5-small",
        json: include_str!("catalogue/flan-t5-small.json"),
    },
    Entry {
        name: "flan-t5-base",
        hub_id: "google/flan-t5-base",
        json: include_str!("catalogue/flan-t5-base.json"),
    },
    Entry {
        name: "flan-t5-large",
        hub_id: "google/flan-t5-large",
        json: include_str!("catalogue/flan-t5-large.json"),
    },
    Entry {
        name: "flan-t5-xl",
        hub_id: "google/flan-t5-xl",
        json: include_str!("catalogue/flan-t5-xl.json"),
    },
    Entry {
        name: "flan-t5-xxl",
        hub_id: "google/flan-t5-xxl",
        json: include_str!("catalogue/flan-t5-xxl.json"),
    },
    Entry {
        name: "bart-base",
        hub_id: "facebook/bart-base",
        json: include_str!("catalogue/bart-base.json"),
    },
    Entry {
        name: "bart-large",
        hub_id: "facebook/bart-large",
        json: include_str!("catalogue/bart-large.json"),
    },
    Entry {
        name: "bart-large-cnn",
        hub_id: "facebook/bart-large-cnn",
        json: include_str!("catalogue/bart-large-cnn.json"),
    },
    Entry {
        name: "distilbart-cnn-12-6",
        hub_id: "sshleifer/distilbart-cnn-12-6",
        json: include_str!("catalogue/distilbart-cnn-12-6.json"),
    },
    Entry {
        name: "pegasus-cnn_dailymail",
        hub_id: "google/pegasus-cnn_dailymail",
        json: include_str!("catalogue/pegasus-cnn_dailymail.json"),
    },
    Entry {
        name: "opus-mt-en-de",
        hub_id: "Helsinki-NLP/opus-mt-en-de",
        json: include_str!("catalogue/opus-mt-en-de.json"),
    },
    Entry {
        name: "mbart-large-50",
        hub_id: "facebook/mbart-large-50",
        json: include_str!("catalogue/mbart-large-50.json"),
    },
    Entry {
        name: "mbart-large-cc25",
        hub_id: "facebook/mbart-large-cc25",
        json: include_str!("catalogue/mbart-large-cc25.json"),
    },
    Entry {
        name: "nllb-200-distilled-600M",
        hub_id: "facebook/nllb-200-distilled-600M",
        json: include_str!("catalogue/nllb-200-distilled-600M.json"),
    },
    Entry {
        name: "m2m100_418M",
        hub_id: "facebook/m2m100_418M",
        json: include_str!("catalogue/m2m100_418M.json"),
    },
    Entry {
        name: "mt5-small",
        hub_id: "google/mt5-small",
        json: include_str!("catalogue/mt5-small.json"),
    },
    Entry {
        name: "mt5-base",
        hub_id: "google/mt5-base",
        json: include_str!("catalogue/mt5-base.json"),
    },
];

/// All entries, in catalogue order.
pub fn entries() -> &'static [Entry] {
    ENTRIES
}

/// The catalogue names, in catalogue order.
pub fn names() -> Vec<&'static str> {
    ENTRIES.iter().map(|e| e.name).collect()
}

/// The entry called `name`, also accepted by hub id (`google/flan-t5-base`) or by the
/// hub id's last part.
pub fn entry(name: &str) -> Result<&'static Entry> {
    ENTRIES
        .iter()
        .find(|e| e.name == name || e.hub_id == name || e.hub_id.rsplit('/').next() == Some(name))
        .ok_or_else(|| ModelError::UnknownCatalogueName {
            name: name.to_string(),
            known: names().join(", "),
        })
}

/// The parsed config of catalogue entry `name`.
pub fn get(name: &str) -> Result<ModelConfig> {
    let e = entry(name)?;
    ModelConfig::from_json_with_path(
        e.json,
        std::path::Path::new(&format!("catalogue/{}.json", e.name)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_entry_parses() {
        for e in entries() {
            let c = get(e.name).unwrap_or_else(|err| panic!("{}: {err}", e.name));
            assert!(c.num_parameters() > 0);
        }
    }

    #[test]
    fn unknown_name_lists_the_known_ones() {
        let err = get("gpt2").unwrap_err().to_string();
        assert!(
            err.contains("gpt2")
                && err.contains("flan-t5-small")
                && err.contains("nllb-200-distilled-600M"),
            "{err}"
        );
        assert!(get("google/flan-t5-base").is_ok());
        assert!(get("facebook/bart-large-cnn").is_ok());
    }
}
