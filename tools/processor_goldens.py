#!/usr/bin/env python3
"""Goldens for encdec-generate, made with Hugging Face transformers' own code.

Writes three files under crates/generate/tests/expected/:

- processors.json: HF's real LogitsProcessor classes
  (transformers.generation.logits_process) applied to seeded random logits with
  given decoder input_ids, one case per processor, plus whole pipelines as
  `GenerationMixin._get_logits_processor` builds them (order included).
- configs.json: the generation settings `generate` actually runs with, for real
  checkpoint configs (../shared/data/configs/...), with and without
  generation_config.json and with user overrides, captured at the entry of the
  decoding method (so the resolution, defaults, special tokens and length
  preparation are HF's own); plus the override sets HF rejects.
- search.json: a mock encoder-decoder model whose next-token logits are a
  deterministic function of (source id, decoder prefix) read from a seeded table
  (written into the JSON), run through HF `generate` (greedy and beam search,
  early_stopping True/False/"never", length penalties, num_return_sequences,
  processors): the ids and scores HF reports. The Rust tests implement the same
  mock as a `Seq2SeqModel` and must reproduce them.

Run from the repository root:  python tools/processor_goldens.py
(needs torch and transformers; not run by CI; the outputs are committed).
"""

import json
import math
import os
import shutil
import sys
import tempfile
import warnings

import torch
from torch import nn

import transformers
from transformers import (
    AutoConfig,
    AutoModelForSeq2SeqLM,
    GenerationConfig,
    GenerationMixin,
    PretrainedConfig,
    PreTrainedModel,
)
from transformers.generation import logits_process as lp
from transformers.modeling_outputs import BaseModelOutput, Seq2SeqLMOutput

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "crates", "generate", "tests", "expected")
DATA = os.path.join(os.path.dirname(ROOT), "shared", "data", "configs")

warnings.filterwarnings("ignore")
transformers.logging.set_verbosity_error()


def enc_float(x):
    """JSON has no infinities: non-finite floats become strings."""
    x = float(x)
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return x


def enc_tensor(t):
    return [[enc_float(v) for v in row] for row in t.tolist()]


# --------------------------------------------------------------------------------------
# processors
# --------------------------------------------------------------------------------------


def processor_cases():
    g = torch.Generator().manual_seed(1234)
    rows, vocab, hist = 4, 30, 7
    cases = []

    def logits_():
        return (torch.randn(rows, vocab, generator=g) * 2.0).to(torch.float32)

    def ids_(length=hist, hi=8):
        # small id range so that repeats and n-grams occur
        return torch.randint(0, hi, (rows, length), generator=g)

    def add(name, proc, params, ids, scores, encoder_ids=None):
        out = proc(ids, scores.clone())
        cases.append(
            {
                "name": name,
                "processor": type(proc).__name__,
                "params": params,
                "input_ids": ids.tolist(),
                "encoder_input_ids": encoder_ids.tolist() if encoder_ids is not None else None,
                "scores": enc_tensor(scores),
                "expected": enc_tensor(out),
            }
        )

    for pen in (1.3, 0.7):
        s = logits_()
        add(f"repetition_penalty_{pen}", lp.RepetitionPenaltyLogitsProcessor(pen), {"penalty": pen}, ids_(), s)
    for n in (1, 2, 3):
        ids = ids_(length=12, hi=3)
        add(f"no_repeat_ngram_{n}", lp.NoRepeatNGramLogitsProcessor(n), {"ngram_size": n}, ids, logits_())
    # cur_len shorter than the n-gram
    add("no_repeat_ngram_short", lp.NoRepeatNGramLogitsProcessor(4), {"ngram_size": 4}, ids_(length=3, hi=4), logits_())
    bad = [[5], [7, 1], [0, 1], [2, 1, 0], [2], [9, 9], [1, 1]]
    add(
        "bad_words",
        lp.NoBadWordsLogitsProcessor(bad, eos_token_id=[2]),
        {"bad_words_ids": bad, "eos_token_id": [2]},
        ids_(hi=3),
        logits_(),
    )
    for min_len in (hist + 1, hist):
        add(
            f"min_length_{min_len}",
            lp.MinLengthLogitsProcessor(min_len, [1, 4]),
            {"min_length": min_len, "eos_token_id": [1, 4]},
            ids_(),
            logits_(),
        )
    for mnt in (hist - 1, hist):
        add(
            f"min_new_tokens_{mnt}",
            lp.MinNewTokensLengthLogitsProcessor(1, mnt, [3]),
            {"prompt_length_to_skip": 1, "min_new_tokens": mnt, "eos_token_id": [3]},
            ids_(),
            logits_(),
        )
    for length in (1, 2):
        add(
            f"forced_bos_len{length}",
            lp.ForcedBOSTokenLogitsProcessor(6),
            {"bos_token_id": 6},
            ids_(length=length),
            logits_(),
        )
    for max_len in (hist + 1, hist + 2):
        add(
            f"forced_eos_max{max_len}",
            lp.ForcedEOSTokenLogitsProcessor(max_len, [2, 5]),
            {"max_length": max_len, "eos_token_id": [2, 5]},
            ids_(),
            logits_(),
        )
    add("temperature_0.7", lp.TemperatureLogitsWarper(0.7), {"temperature": 0.7}, ids_(), logits_())
    add("temperature_1.6", lp.TemperatureLogitsWarper(1.6), {"temperature": 1.6}, ids_(), logits_())
    for k, keep in ((5, 1), (1, 2), (50, 1)):
        add(
            f"top_k_{k}_keep{keep}",
            lp.TopKLogitsWarper(k, min_tokens_to_keep=keep),
            {"top_k": k, "min_tokens_to_keep": keep},
            ids_(),
            logits_(),
        )
    # ties at the k-th value are all kept
    s = logits_()
    s[:, 3] = s[:, 4] = s[:, 5] = 9.0
    add("top_k_ties", lp.TopKLogitsWarper(2), {"top_k": 2, "min_tokens_to_keep": 1}, ids_(), s)
    for p, keep in ((0.8, 1), (0.3, 3), (0.95, 1), (0.05, 1)):
        add(
            f"top_p_{p}_keep{keep}",
            lp.TopPLogitsWarper(p, min_tokens_to_keep=keep),
            {"top_p": p, "min_tokens_to_keep": keep},
            ids_(),
            logits_(),
        )
    # top-p after top-k (-inf entries present)
    s = lp.TopKLogitsWarper(8)(None, logits_())
    add("top_p_after_top_k", lp.TopPLogitsWarper(0.7), {"top_p": 0.7, "min_tokens_to_keep": 1}, ids_(), s)
    enc = torch.randint(0, 4, (rows, 9), generator=g)
    for n in (2, 3):
        add(
            f"encoder_no_repeat_ngram_{n}",
            lp.EncoderNoRepeatNGramLogitsProcessor(n, enc),
            {"ngram_size": n},
            ids_(hi=4),
            logits_(),
            encoder_ids=enc,
        )
    return cases


# --------------------------------------------------------------------------------------
# the mock model (shared by the pipelines and the search goldens)
# --------------------------------------------------------------------------------------

MOCK_VOCAB = 16
MOCK_STATES = 4093


class MockConfig(PretrainedConfig):
    model_type = "encdec_mock"

    def __init__(self, vocab_size=MOCK_VOCAB, **kwargs):
        super().__init__(**kwargs)
        self.vocab_size = vocab_size
        self.is_encoder_decoder = True
        self.num_hidden_layers = 1


class MockEncoder(nn.Module):
    main_input_name = "input_ids"

    def forward(self, input_ids=None, attention_mask=None, **kwargs):
        # the "hidden state" carries the source id (first input token)
        return BaseModelOutput(last_hidden_state=input_ids[:, :1].to(torch.float32).unsqueeze(-1))


def mock_state(source, prefix):
    h = (source * 7919 + 17) % 2147483647
    for t in prefix:
        h = (h * 31 + t + 1) % 2147483647
    return h % MOCK_STATES


class MockModel(PreTrainedModel, GenerationMixin):
    config_class = MockConfig
    main_input_name = "input_ids"

    def __init__(self, config, table, eos_bias):
        super().__init__(config)
        self.encoder = MockEncoder()
        self.dummy = nn.Parameter(torch.zeros(1))
        self.table = table  # [states, vocab] f32
        self.eos_bias = eos_bias  # (token, base, slope): logit[token] += base + slope * len(prefix)
        self.calls = 0

    def get_encoder(self):
        return self.encoder

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        decoder_input_ids=None,
        encoder_outputs=None,
        past_key_values=None,
        use_cache=None,
        return_dict=True,
        **kwargs,
    ):
        self.calls += 1
        if encoder_outputs is None:
            encoder_outputs = self.encoder(input_ids)
        src = encoder_outputs[0][:, 0, 0].round().long().tolist()
        rows, t = decoder_input_ids.shape
        logits = torch.zeros(rows, t, self.config.vocab_size, dtype=torch.float32)
        for r in range(rows):
            prefix = decoder_input_ids[r].tolist()
            row = self.table[mock_state(src[r], prefix)].clone()
            tok, base, slope = self.eos_bias
            row[tok] += base + slope * len(prefix)
            logits[r, -1] = row
        return Seq2SeqLMOutput(logits=logits)


MASK64 = (1 << 64) - 1


def splitmix64(x):
    x = (x + 0x9E3779B97F4A7C15) & MASK64
    z = x
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return z ^ (z >> 31)


def mock_table(seed):
    """[states, vocab] f32, uniform in [-4, 4): exact in f32, so Rust rebuilds it bit for bit."""
    vals = [
        ((splitmix64(seed * 1000003 + i) >> 40) / 2.0**24 - 0.5) * 8.0 for i in range(MOCK_STATES * MOCK_VOCAB)
    ]
    return torch.tensor(vals, dtype=torch.float32).view(MOCK_STATES, MOCK_VOCAB)


def make_mock(seed, eos_bias):
    table = mock_table(seed)
    model = MockModel(MockConfig(), table, eos_bias)
    model.generation_config = GenerationConfig()
    model.eval()
    return model, table


# --------------------------------------------------------------------------------------
# pipelines: the processor list `generate` builds, applied to random scores
# --------------------------------------------------------------------------------------


class Captured(Exception):
    def __init__(self, gc, processors, input_ids):
        self.gc = gc
        self.processors = processors
        self.input_ids = input_ids


def capture(self, input_ids, logits_processor=None, stopping_criteria=None, generation_config=None, **kwargs):
    raise Captured(generation_config, logits_processor, input_ids)


def run_captured(model, inputs, **kwargs):
    """Run HF generate up to the decoding method and return what it would run with."""
    orig = (GenerationMixin._sample, GenerationMixin._beam_search)
    GenerationMixin._sample = capture
    GenerationMixin._beam_search = capture
    try:
        model.generate(inputs, **kwargs)
    except Captured as c:
        return c
    finally:
        GenerationMixin._sample, GenerationMixin._beam_search = orig
    raise RuntimeError("decoding method not reached")


def pipeline_cases():
    model, _ = make_mock(7, (2, 0.0, 0.0))
    g = torch.Generator().manual_seed(99)
    base = dict(decoder_start_token_id=0, eos_token_id=2, pad_token_id=1, use_cache=False)
    settings = [
        ("greedy_all", dict(max_length=12, min_length=9, repetition_penalty=1.4, no_repeat_ngram_size=2,
                            bad_words_ids=[[5], [7, 3]], forced_eos_token_id=2)),
        ("sample_all", dict(do_sample=True, max_new_tokens=8, min_new_tokens=7, repetition_penalty=0.8,
                            no_repeat_ngram_size=3, temperature=0.6, top_k=6, top_p=0.9)),
        ("sample_default_top_k", dict(do_sample=True, max_new_tokens=8, top_p=0.5, temperature=1.5)),
        ("beam_sample_keep", dict(do_sample=True, num_beams=2, max_new_tokens=8, top_k=1, top_p=0.2,
                                  eos_token_id=[2, 3])),
        ("forced_bos", dict(max_new_tokens=8, forced_bos_token_id=4, min_length=3)),
    ]
    cases = []
    for name, kw in settings:
        args = {**base, **kw}
        c = run_captured(model, torch.tensor([[3]]), **args)
        for length in (1, 3, 7):
            ids = torch.randint(0, 8, (3, length), generator=g)
            ids[:, 0] = 0
            scores = (torch.randn(3, MOCK_VOCAB, generator=g) * 2.0).to(torch.float32)
            out = c.processors(ids, scores.clone())
            cases.append(
                {
                    "name": f"{name}_len{length}",
                    "generate_kwargs": {k: v for k, v in args.items() if k != "use_cache"},
                    "processors": [type(p).__name__ for p in c.processors],
                    "input_ids": ids.tolist(),
                    "scores": enc_tensor(scores),
                    "expected": enc_tensor(out),
                }
            )
    return cases


# --------------------------------------------------------------------------------------
# configs
# --------------------------------------------------------------------------------------

GC_FIELDS = [
    "max_length", "max_new_tokens", "min_length", "min_new_tokens", "num_beams", "num_return_sequences",
    "length_penalty", "early_stopping", "no_repeat_ngram_size", "encoder_no_repeat_ngram_size",
    "repetition_penalty", "bad_words_ids", "forced_bos_token_id", "forced_eos_token_id", "do_sample",
    "temperature", "top_k", "top_p", "bos_token_id",
]


def tiny_seq2seq(checkpoint_dir):
    cfg = AutoConfig.from_pretrained(checkpoint_dir)
    small = {"d_model": 8, "d_ff": 8, "d_kv": 4, "num_heads": 2, "encoder_attention_heads": 2,
             "decoder_attention_heads": 2, "encoder_ffn_dim": 8, "decoder_ffn_dim": 8}
    for k in ["d_model", "d_ff", "d_kv", "num_heads", "num_layers", "num_decoder_layers", "encoder_layers",
              "decoder_layers", "encoder_attention_heads", "decoder_attention_heads", "encoder_ffn_dim",
              "decoder_ffn_dim"]:
        if hasattr(cfg, k):
            setattr(cfg, k, small.get(k, 1))
    model = AutoModelForSeq2SeqLM.from_config(cfg)
    # exactly what from_pretrained does after loading weights
    model.adjust_generation_fn(None, False, False, checkpoint_dir, cache_dir=None, force_download=False,
                               proxies=None, local_files_only=True, token=None, revision=None, subfolder="",
                               trust_remote_code=False)
    return model


def config_cases():
    cases = []
    if not os.path.isdir(DATA):
        print(f"configs: {DATA} absent, skipped", file=sys.stderr)
        return cases
    tmp = tempfile.mkdtemp()
    dirs = {}
    for name in ("t5-small", "bart-large-cnn"):
        dirs[name] = os.path.join(DATA, name)
        only = os.path.join(tmp, f"{name}-config-only")
        os.makedirs(only)
        shutil.copy(os.path.join(DATA, name, "config.json"), only)
        dirs[f"{name}-config-only"] = only
    # no generation keys at all and few positions: the default max_length is capped by
    # max_position_embeddings (a fixture the Rust test reads too)
    capped = os.path.join(OUT, "configs", "bart-short-positions")
    os.makedirs(capped, exist_ok=True)
    with open(os.path.join(DATA, "bart-large-cnn", "config.json")) as f:
        cfg = json.load(f)
    for k in ["max_length", "min_length", "num_beams", "length_penalty", "no_repeat_ngram_size", "early_stopping",
              "task_specific_params", "forced_bos_token_id", "force_bos_token_to_be_generated"]:
        cfg.pop(k, None)
    cfg["max_position_embeddings"] = 12
    with open(os.path.join(capped, "config.json"), "w") as f:
        json.dump(cfg, f, indent=1)
    dirs["bart-short-positions"] = capped
    overrides = [
        {},
        {"num_beams": 2, "max_new_tokens": 60},
        {"do_sample": True, "top_k": 10, "top_p": 0.9, "temperature": 0.7, "seed_ignored": None},
        {"min_new_tokens": 5, "max_length": 40, "early_stopping": "never", "length_penalty": 0.8},
        {"num_beams": 4, "num_return_sequences": 2, "no_repeat_ngram_size": 0, "repetition_penalty": 1.2},
        {"forced_bos_token_id": 5, "forced_eos_token_id": [1, 2], "eos_token_id": [1, 2], "pad_token_id": 3},
    ]
    for ckpt, d in dirs.items():
        for ov in overrides:
            ov = {k: v for k, v in ov.items() if k != "seed_ignored"}
            model = tiny_seq2seq(d)
            c = run_captured(model, torch.tensor([[5, 6, 1]]), **ov)
            gc = c.gc
            resolved = {k: getattr(gc, k) for k in GC_FIELDS}
            eos = gc._eos_token_tensor
            resolved["eos_token_id"] = None if eos is None else eos.tolist()
            resolved["pad_token_id"] = None if gc._pad_token_tensor is None else int(gc._pad_token_tensor)
            resolved["decoder_start_token_id"] = int(gc._decoder_start_token_tensor)
            if isinstance(resolved["forced_eos_token_id"], int):
                resolved["forced_eos_token_id"] = [resolved["forced_eos_token_id"]]
            cases.append({
                "checkpoint": ckpt.replace("-config-only", ""),
                "generation_config_json": os.path.exists(os.path.join(d, "generation_config.json")),
                "overrides": ov,
                "expected": resolved,
            })
    # what HF itself rejects
    errors = [
        {"max_new_tokens": 0},
        {"num_beams": 2, "num_return_sequences": 3},
        {"num_return_sequences": 2},
        {"max_length": 1},
        {"early_stopping": "sometimes"},
    ]
    for ov in errors:
        model = tiny_seq2seq(dirs["t5-small"])
        try:
            run_captured(model, torch.tensor([[5, 6, 1]]), **ov)
            msg = None
        except (ValueError, TypeError) as e:
            msg = str(e).split("\n")[0]
        cases.append({"checkpoint": "t5-small", "generation_config_json": True, "overrides": ov,
                      "hf_error": msg})
    shutil.rmtree(tmp)
    return cases


# --------------------------------------------------------------------------------------
# search
# --------------------------------------------------------------------------------------


def strip(seq, eos):
    """Generated ids after the decoder start token, up to and including the first EOS."""
    out = []
    for t in seq[1:]:
        out.append(t)
        if t in eos:
            break
    return out


def search_cases():
    cases = []
    models = {}
    base = dict(decoder_start_token_id=0, pad_token_id=1, use_cache=False)
    settings = [
        # (name, model seed, eos bias (token, base, slope), generate kwargs, sources)
        ("greedy", 1, (2, -1.0, 0.35), dict(eos_token_id=2, max_new_tokens=12), [3, 4, 5, 6, 7]),
        ("greedy_processors", 1, (2, -1.0, 0.35),
         dict(eos_token_id=2, max_length=14, min_length=6, repetition_penalty=1.5, no_repeat_ngram_size=2,
              bad_words_ids=[[9], [4, 5]], forced_bos_token_id=3), [3, 4, 5, 6]),
        ("greedy_forced_eos", 2, (2, -3.0, 0.0), dict(eos_token_id=2, max_new_tokens=6, forced_eos_token_id=2),
         [3, 8]),
        ("greedy_max_length", 2, (2, -9.0, 0.0), dict(eos_token_id=2, max_length=9), [3, 8, 11]),
        ("beam4_lp1", 3, (2, -1.5, 0.3), dict(eos_token_id=2, num_beams=4, max_new_tokens=14), [3, 4, 5, 6]),
        ("beam4_lp2_nrs4", 3, (2, -1.5, 0.3),
         dict(eos_token_id=2, num_beams=4, num_return_sequences=4, length_penalty=2.0, max_new_tokens=14),
         [3, 4, 5]),
        ("beam3_lp_neg_never", 4, (2, -1.0, 0.25),
         dict(eos_token_id=2, num_beams=3, length_penalty=-0.5, early_stopping="never", max_new_tokens=12,
              num_return_sequences=2), [3, 4, 5]),
        ("beam4_processors", 5, (2, -2.0, 0.3),
         dict(eos_token_id=2, num_beams=4, max_length=16, min_new_tokens=5, no_repeat_ngram_size=2,
              repetition_penalty=1.3, forced_bos_token_id=5, forced_eos_token_id=2, length_penalty=1.5,
              early_stopping=True), [3, 4, 5, 6]),
        ("beam2_two_eos", 6, (2, -1.0, 0.3),
         dict(eos_token_id=[2, 7], num_beams=2, max_new_tokens=10, num_return_sequences=2), [3, 4, 5, 6]),
        ("beam5_max_length", 7, (2, -9.0, 0.0), dict(eos_token_id=2, num_beams=5, max_length=7), [3, 4]),
        ("beam4_bad_words", 8, (2, -1.5, 0.3),
         dict(eos_token_id=2, num_beams=4, max_new_tokens=12, bad_words_ids=[[6], [3, 4]],
              encoder_no_repeat_ngram_size=2), [3, 4, 5]),
    ]
    # early stopping True / False / "never": search for a model and settings where all three differ
    es_found = None
    for seed in range(100, 400):
        for lp_ in (2.0, 1.0, 0.5):
            model, table = make_mock(seed, (2, -1.5, 0.3))
            outs = []
            for es in (True, False, "never"):
                out = model.generate(torch.tensor([[3]]), **base, eos_token_id=2, num_beams=3, max_new_tokens=14,
                                     length_penalty=lp_, early_stopping=es, return_dict_in_generate=True,
                                     output_scores=True)
                outs.append((tuple(out.sequences[0].tolist()), round(float(out.sequences_scores[0]), 5)))
            if len(set(outs)) == 3:
                es_found = (seed, lp_)
                break
        if es_found:
            break
    if es_found is None:
        raise RuntimeError("no mock found where early_stopping True/False/never all differ")
    seed, lp_ = es_found
    print(f"early_stopping cases: model seed {seed}, length_penalty {lp_}", file=sys.stderr)
    for es in (True, False, "never"):
        settings.append((f"early_stopping_{es}", seed, (2, -1.5, 0.3),
                         dict(eos_token_id=2, num_beams=3, max_new_tokens=14, length_penalty=lp_,
                              early_stopping=es, num_return_sequences=3), [3, 4, 5, 6]))

    for name, seed, bias, kw, sources in settings:
        key = (seed, bias)
        if key not in models:
            models[key] = make_mock(seed, bias)
        model, table = models[key]
        args = {**base, **kw}
        eos = args["eos_token_id"] if isinstance(args["eos_token_id"], list) else [args["eos_token_id"]]
        out = model.generate(torch.tensor([[s] for s in sources]), **args, return_dict_in_generate=True,
                             output_scores=True)
        nrs = args.get("num_return_sequences", 1)
        results = []
        for i in range(len(sources)):
            hyps = []
            for j in range(nrs):
                r = i * nrs + j
                ids = strip(out.sequences[r].tolist(), eos)
                if args.get("num_beams", 1) > 1:
                    score = float(out.sequences_scores[r])
                else:
                    # greedy: sum of log-softmax of the processed scores at the chosen tokens
                    score = 0.0
                    for step, tok in enumerate(ids):
                        score += float(torch.log_softmax(out.scores[step][r], -1)[tok])
                hyps.append({"ids": ids, "score": score})
            results.append(hyps)
        cases.append({
            "name": name,
            "model": {"seed": seed, "eos_bias": {"token": bias[0], "base": bias[1], "slope": bias[2]}},
            "generate_kwargs": {k: v for k, v in args.items() if k != "use_cache"},
            "sources": sources,
            "expected": results,
        })
    return {"vocab": MOCK_VOCAB, "states": MOCK_STATES, "cases": cases}


def main():
    os.makedirs(OUT, exist_ok=True)
    torch.set_num_threads(1)
    meta = {"transformers": transformers.__version__, "torch": torch.__version__}
    with open(os.path.join(OUT, "processors.json"), "w") as f:
        json.dump({**meta, "cases": processor_cases(), "pipelines": pipeline_cases()}, f)
    with open(os.path.join(OUT, "configs.json"), "w") as f:
        json.dump({**meta, "cases": config_cases()}, f, indent=1)
    with open(os.path.join(OUT, "search.json"), "w") as f:
        json.dump({**meta, **search_cases()}, f)
    print(f"wrote {OUT}/processors.json, configs.json, search.json", file=sys.stderr)


if __name__ == "__main__":
    main()
