#!/usr/bin/env python3
"""Reference parameter counts and state-dict layouts for the model catalogue.

For every config in crates/models/src/catalogue/<name>.json (the same files the Rust
crate embeds), build the Hugging Face `*ForConditionalGeneration` model on the `meta`
device (no memory, no download) and record `model.num_parameters()` in
crates/models/tests/expected/param_counts.json.

It also records, for one entry per model_type with 2 encoder and 2 decoder layers, every
state-dict key with its shape and whether it is a parameter
(crates/models/tests/expected/state_dicts.json); the Rust tests check
`ModelConfig::tensor_specs()` against it.

Tied weights: transformers 5 ties `lm_head` to `shared` for every T5/mT5 model it
*constructs* (T5Config forces tie_word_embeddings=True), and unties them in
`from_pretrained` when the checkpoint stores both with different values, which is
what flan-t5 / mT5 checkpoints (config.json "tie_word_embeddings": false) do. We count
the model as loaded from its checkpoint: for those configs lm_head is untied here,
which also reproduces transformers 4's count.

With --fixtures it also saves tiny random checkpoints, one per model_type, with
`save_pretrained(..., safe_serialization=True)` to crates/models/tests/fixtures/tiny-<type>/
(a sharded one too), so the Rust tests read real transformers output.

Usage: python3 tools/param_counts.py [--fixtures]
(needs torch + transformers; see tools/requirements.txt)
"""

import json
import os
import sys

import torch
import transformers
from transformers import AutoModelForSeq2SeqLM
from transformers.models.auto.configuration_auto import CONFIG_MAPPING

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CATALOGUE = os.path.join(ROOT, "crates", "models", "src", "catalogue")
EXPECTED = os.path.join(ROOT, "crates", "models", "tests", "expected")
FIXTURES = os.path.join(ROOT, "crates", "models", "tests", "fixtures")

# Tiny configs for --fixtures: the catalogue entry of each type with small sizes.
TINY_T5 = dict(vocab_size=32, d_model=8, d_kv=4, num_heads=2, d_ff=12, num_layers=2,
               num_decoder_layers=1, relative_attention_num_buckets=8,
               relative_attention_max_distance=16)
TINY_BART = dict(vocab_size=32, d_model=8, encoder_attention_heads=2, decoder_attention_heads=2,
                 encoder_ffn_dim=12, decoder_ffn_dim=12, encoder_layers=2, decoder_layers=1,
                 num_hidden_layers=2, max_position_embeddings=16, pad_token_id=1,
                 bos_token_id=0, eos_token_id=2, decoder_start_token_id=2, forced_eos_token_id=2)
TINY_FIXTURES = {
    "tiny-t5": ("t5-small", TINY_T5),
    "tiny-flan-t5": ("flan-t5-small", TINY_T5),
    "tiny-mt5": ("mt5-small", TINY_T5),
    "tiny-bart": ("bart-large-cnn", TINY_BART),
    "tiny-mbart": ("mbart-large-50", TINY_BART),
    "tiny-pegasus": ("pegasus-cnn_dailymail", {**TINY_BART, "pad_token_id": 0, "eos_token_id": 1,
                                                "decoder_start_token_id": 0, "forced_eos_token_id": 1}),
    "tiny-marian": ("opus-mt-en-de", {**TINY_BART, "pad_token_id": 31, "eos_token_id": 0,
                                      "decoder_start_token_id": 31, "forced_eos_token_id": 0,
                                      "decoder_vocab_size": 32}),
    "tiny-m2m100": ("m2m100_418M", TINY_BART),
}


def make_fixtures():
    """Tiny random checkpoints saved by transformers itself (a few KB each)."""
    import shutil

    torch.manual_seed(0)
    for out, (base, over) in TINY_FIXTURES.items():
        with open(os.path.join(CATALOGUE, base + ".json")) as f:
            raw = json.load(f)
        keep = {k: v for k, v in raw.items() if k not in ("task_specific_params", "id2label", "label2id", "_name_or_path")}
        config = CONFIG_MAPPING[raw["model_type"]].from_dict({**keep, **over})
        model = AutoModelForSeq2SeqLM.from_config(config)
        if raw["model_type"] in ("t5", "mt5") and raw.get("tie_word_embeddings", True) is False:
            model.lm_head.weight = torch.nn.Parameter(torch.randn_like(model.lm_head.weight))
        # Marian's final_logits_bias is real data in converted checkpoints.
        if hasattr(model, "final_logits_bias"):
            model.final_logits_bias.normal_()
        path = os.path.join(FIXTURES, out)
        shutil.rmtree(path, ignore_errors=True)
        model.save_pretrained(path, safe_serialization=True)
        if out == "tiny-t5":
            sharded = os.path.join(FIXTURES, "tiny-t5-sharded")
            shutil.rmtree(sharded, ignore_errors=True)
            model.save_pretrained(sharded, safe_serialization=True, max_shard_size="4KB")
        for d in {path, os.path.join(FIXTURES, "tiny-t5-sharded")}:
            g = os.path.join(d, "generation_config.json")
            if os.path.exists(g):
                os.remove(g)
        print(f"wrote {path}", file=sys.stderr)

# One entry per model_type (and per T5 FFN / tying variant) for the layout check.
LAYOUT_ENTRIES = [
    "t5-small",
    "flan-t5-small",
    "mt5-small",
    "bart-base",
    "mbart-large-cc25",
    "pegasus-cnn_dailymail",
    "opus-mt-en-de",
    "m2m100_418M",
]


def small_overrides(raw):
    if raw["model_type"] in ("t5", "mt5"):
        over = {"num_layers": 2, "num_decoder_layers": 2}
    else:
        over = {"encoder_layers": 2, "decoder_layers": 2}
    # `num_hidden_layers` is an alias HF resolves after the canonical key.
    if "num_hidden_layers" in raw:
        over["num_hidden_layers"] = 2
    return over


def build(raw):
    config = CONFIG_MAPPING[raw["model_type"]].from_dict(dict(raw))
    with torch.device("meta"):
        model = AutoModelForSeq2SeqLM.from_config(config)
    if raw["model_type"] in ("t5", "mt5") and raw.get("tie_word_embeddings", True) is False:
        if model.lm_head.weight is model.shared.weight:
            model.lm_head.weight = torch.nn.Parameter(torch.empty_like(model.lm_head.weight))
    return model


def main():
    names = sorted(f[:-5] for f in os.listdir(CATALOGUE) if f.endswith(".json"))
    counts = {}
    layouts = {}
    for name in names:
        with open(os.path.join(CATALOGUE, name + ".json")) as f:
            raw = json.load(f)
        model = build(raw)
        counts[name] = model.num_parameters()
        print(f"{name:28s} {type(model).__name__:36s} {counts[name]:>15,d}", flush=True)
        del model
        if name in LAYOUT_ENTRIES:
            over = small_overrides(raw)
            model = build({**raw, **over})
            params = {n for n, _ in model.named_parameters()}
            tensors = {
                k: [list(v.shape), k in params] for k, v in model.state_dict().items()
            }
            layouts[name] = {"overrides": over, "tensors": tensors}
            del model
    os.makedirs(EXPECTED, exist_ok=True)
    with open(os.path.join(EXPECTED, "param_counts.json"), "w") as f:
        json.dump(
            {"_generator": f"tools/param_counts.py, transformers {transformers.__version__}, torch {torch.__version__}", **counts},
            f,
            indent=2,
        )
        f.write("\n")
    with open(os.path.join(EXPECTED, "state_dicts.json"), "w") as f:
        json.dump(layouts, f, indent=1, sort_keys=True)
        f.write("\n")
    print(f"wrote {EXPECTED}/param_counts.json and state_dicts.json", file=sys.stderr)


if __name__ == "__main__":
    if "--fixtures" in sys.argv[1:]:
        make_fixtures()
    main()
