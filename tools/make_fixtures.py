#!/usr/bin/env python3
"""Build the tiny seq2seq fixtures under tests/fixtures/ and their Hugging Face goldens.

For every architecture family encdec supports (t5, t5-v1_1, mt5, bart, mbart, pegasus,
marian, m2m100) this script

  1. trains a small tokenizer deterministically (sentencepiece with one thread and no input
     sampling, or the byte-level BPE trainer of `tokenizers`) on a built-in word list,
  2. builds a tiny randomly initialised model (2+2 layers, d_model 32-48) whose config spells
     out every architecture switch explicitly,
  3. trains it for a fixed number of steps on the CPU to COPY its input (so that its outputs
     are varied and depend on the source through cross-attention),
  4. saves an HF directory (config.json, generation_config.json, model.safetensors, tokenizer
     files), reloads it from that directory alone, and
  5. writes golden.json: input ids, encoder states, first-step logits, greedy and beam outputs
     with scores, computed by `transformers` in float32 eval mode from the reloaded model.

It also checks that the trained model's outputs are varied and input dependent, and prints a
summary.  Run by developers, never by CI:

    HF_HUB_OFFLINE=1 python3 tools/make_fixtures.py            # all fixtures
    HF_HUB_OFFLINE=1 python3 tools/make_fixtures.py --only t5,bart

The golden.json schema is described in tools/README.md (section 'golden.json schema').
"""

import argparse
import copy
import hashlib
import io
import json
import math
import os
import platform
import random
import shutil
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import numpy as np  # noqa: E402
import sentencepiece as spm  # noqa: E402
import tokenizers  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from safetensors import safe_open  # noqa: E402
from transformers import (  # noqa: E402
    AutoModelForSeq2SeqLM,
    AutoTokenizer,
    BartConfig,
    BartForConditionalGeneration,
    BartTokenizer,
    GenerationConfig,
    M2M100Config,
    M2M100ForConditionalGeneration,
    MarianConfig,
    MarianMTModel,
    MarianTokenizer,
    MBart50Tokenizer,
    MBartConfig,
    MBartForConditionalGeneration,
    MT5Config,
    MT5ForConditionalGeneration,
    NllbTokenizer,
    PegasusConfig,
    PegasusForConditionalGeneration,
    PegasusTokenizer,
    T5Config,
    T5ForConditionalGeneration,
    T5Tokenizer,
)
from transformers.tokenization_python import AddedToken  # noqa: E402

transformers.logging.set_verbosity_error()
torch.set_num_threads(1)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT_ROOT = os.path.join(REPO, "tests", "fixtures")
SEED = 20240611
MAX_POS = 128  # max_position_embeddings of every BART-family fixture, model_max_length of all
MAX_NEW = 20  # max_new_tokens of the greedy goldens
MAX_NEW_BEAM = 32  # max_new_tokens of the beam goldens (room for beams to finish at different steps)

# --------------------------------------------------------------------------------------------
# Built-in text: a frequency-ordered English word list (sampled with Zipf weights so that the
# frequent words become whole pieces and the rare ones are split), plus German and French words
# with accents for the multilingual tokenizers.
# --------------------------------------------------------------------------------------------
EN = """the of and to in is was for on that with as by at from it his her they this be are
have not but had one all were when we there can an which their said if do will each about how
up out them then she many some so these would other into has more two time like him see no
could people my than first been who its now long down day did get come made may part over new
after also back use way because good any where most well year work know take only little
through great sentence think help line turn before cause same right mean tell follow came want
show around form three small set put end does another large must big even such here why ask
went men read need land different home move try kind hand picture again change off play spell
air away animal house point page letter mother answer found study still learn should world
high every near add food between own below country plant last school father keep tree never
start city earth eye light thought head under story saw left few while along might close
something seem next hard open example begin life always those both paper together got group
often run important until children side feet car mile night walk white sea began grow took
river four carry state once book hear stop without second later miss idea enough eat face
watch far really almost let above girl sometimes mountain cut young talk soon list song being
leave family body music color stand sun question fish area mark dog horse birds problem
complete room knew since ever piece told usually friends easy heard order red door sure become
top ship across today during short better best however low hours black products happened whole
measure remember early waves reached listen wind rock space covered fast several hold himself
toward five step morning passed vowel true hundred against pattern numeral table north slowly
money map farm pulled draw voice seen cold cried plan notice south sing war ground fall king
town unit figure certain field travel wood fire upon done english road half ten fly gave box
finally wait correct oh quickly person became shown minutes strong verb stars front feel fact
inches street decided contain course surface produce building ocean class note nothing rest
carefully scientists inside wheels stay green known island week less machine base ago stood
plane system behind ran round boat game force brought understand warm common bring explain dry
though language shape deep thousands yes clear equation yet government filled heat full hot
check object bread rule among noun power cannot able six size dark ball material special heavy
fine pair circle include built""".split()

DE = """der die das und ist nicht ein eine mit für auf dem den von zu sich des im es sie ich
wir ihr haben werden über größer schön müssen können grün weiß straße fußball mädchen häuser
bücher brücke küche märchen tür frühstück wasser feuer erde wind licht nacht tag morgen abend
freund familie schule lehrer stadt fluss berg auto zug musik buch papier schnell langsam klein
groß glücklich""".split()

FR = """le la les et est pas un une avec pour sur du de des au il elle nous vous ils être
avoir café élève été très où déjà français garçon fenêtre hôpital forêt noël maïs cœur sœur
œuvre naïve à là voilà première rivière montagne ville route voiture train musique livre papier
eau feu terre vent lumière nuit jour matin soir ami famille école professeur""".split()

LANG_WORDS = {"en": EN, "de": DE, "fr": FR}

# A small user-defined normalisation (compiled by sentencepiece into the model's
# precompiled_charsmap, and by the tokenizers conversion into a `Precompiled` normalizer):
# full-width ASCII, ligatures, NBSP, ellipsis and circled digits.  It keeps the .model files a
# few KB (the stock nmt_nfkc charsmap is ~240 KB) while still exercising the charsmap path.
NORM_RULES = {"\ufb01": "fi", "\ufb02": "fl", "\u00a0": " ", "\u2026": "...", "\u2460": "1",
              "\u2461": "2", "\u2462": "3", "\u3000": " "}
for _c in range(26):
    NORM_RULES[chr(0xFF21 + _c)] = chr(65 + _c)
    NORM_RULES[chr(0xFF41 + _c)] = chr(97 + _c)
for _c in range(10):
    NORM_RULES[chr(0xFF10 + _c)] = chr(48 + _c)

# Golden inputs.  "perturbed" differs from "short" by one word (input-dependence check).
LONG_TEXT = ("the people of the small town often walk along the river in the morning because the "
             "water is warm and the light is good for the children who like to play near the old "
             "house before school")
CASES = [
    ("short", "the small house"),
    ("perturbed", "the large house"),
    ("medium", "Every child should learn to read a good book before the end of the year."),
    ("long", LONG_TEXT),
    ("unicode", "Café ｆｕｌｌ ﬁsh… naïve 日本語 😀 Straße ① x\u00a0y"),
    ("spaces", "  leading and   multiple   spaces here  "),
    ("empty", ""),
]
T5_PREFIX = "translate English to German: "
BATCH_TEXTS = ["the dog", "the people of the small town often walk along the river in the morning because the water is warm",
               "Every child should learn to read a good book.", "yes"]
GEN_TEXTS = [
    ("medium", "Every child should learn to read a good book before the end of the year."),
    ("repeat", "the dog ran and the dog ran and the dog ran home"),
    ("tiny", "yes"),
    ("unicode", "Café naïve 日本語 Straße ｆｕｌｌ"),
]


def gen_cases(spec):
    """Generation settings for the issue-4 goldens (on top of the fixture's greedy base)."""
    beam = {"num_beams": 4, "max_new_tokens": MAX_NEW_BEAM}
    return [
        ("beam4_lp2_early", dict(beam, length_penalty=2.0, early_stopping=True)),
        ("beam4_lp2_noearly", dict(beam, length_penalty=2.0, early_stopping=False)),
        ("beam4_lp2_never", dict(beam, length_penalty=2.0, early_stopping="never")),
        ("beam4_lp0.5", dict(beam, length_penalty=0.5, early_stopping=False)),
        ("beam4_nrs2", dict(beam, length_penalty=1.0, early_stopping=True, num_return_sequences=2)),
        ("beam4_nrng3", dict(beam, length_penalty=2.0, early_stopping=True, no_repeat_ngram_size=3)),
        ("beam4_min_new5", dict(beam, length_penalty=1.0, early_stopping=True, min_new_tokens=5)),
        ("greedy_nrng3", dict(num_beams=1, max_new_tokens=MAX_NEW, no_repeat_ngram_size=3)),
        ("greedy_min_new5", dict(num_beams=1, max_new_tokens=MAX_NEW, min_new_tokens=5)),
        ("greedy_rep1.3", dict(num_beams=1, max_new_tokens=MAX_NEW, repetition_penalty=1.3)),
        ("greedy_minlen6_maxlen12", dict(num_beams=1, min_length=6, max_length=12, max_new_tokens=None)),
        ("beam4_rep1.3_nrng3", dict(beam, length_penalty=1.0, early_stopping=False,
                                    repetition_penalty=1.3, no_repeat_ngram_size=3)),
    ]


# Keys of the generation config the goldens depend on (recorded per run, after kwargs).
EFFECTIVE_KEYS = ["decoder_start_token_id", "bos_token_id", "eos_token_id", "pad_token_id",
                  "forced_bos_token_id", "forced_eos_token_id", "bad_words_ids", "num_beams",
                  "do_sample", "max_length", "max_new_tokens", "min_length", "min_new_tokens",
                  "length_penalty", "early_stopping", "no_repeat_ngram_size",
                  "repetition_penalty", "num_return_sequences"]


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------
def seed_all(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def sentence(rng, words, min_w=1, max_w=10):
    weights = [1.0 / (i + 1) ** 0.85 for i in range(len(words))]
    n = rng.randint(min_w, max_w)
    s = " ".join(rng.choices(words, weights=weights, k=n))
    if rng.random() < 0.35:
        s = s[0].upper() + s[1:]
    r = rng.random()
    if r < 0.25:
        s += "."
    elif r < 0.3:
        s += rng.choice(["!", "?", ","])
    return s


def corpus(seed, langs, n_per_lang, max_w=12):
    rng = random.Random(seed)
    lines = []
    for lang in langs:
        lines += [sentence(rng, LANG_WORDS[lang], 1, max_w) for _ in range(n_per_lang[lang])]
    # a few digits and punctuation so they get pieces of their own
    lines += ["%d %s" % (rng.randint(0, 2024), sentence(rng, EN, 1, 5)) for _ in range(100)]
    rng.shuffle(lines)
    return lines


def write_lines(path, lines):
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")


def train_spm(lines, vocab_size, model_type, tmp, **ids):
    """Deterministic sentencepiece training (one thread, no sampling/shuffling)."""
    inp = os.path.join(tmp, "spm_corpus.txt")
    write_lines(inp, lines)
    rules = os.path.join(tmp, "norm_rules.tsv")
    with open(rules, "w", encoding="utf-8") as f:
        for k, v in NORM_RULES.items():
            f.write(" ".join("%X" % ord(c) for c in k) + "\t" + " ".join("%X" % ord(c) for c in v) + "\n")
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        input=inp, model_writer=buf, vocab_size=vocab_size, model_type=model_type,
        num_threads=1, character_coverage=1.0, input_sentence_size=0,
        shuffle_input_sentence=False, normalization_rule_tsv=rules, minloglevel=2,
        **ids)
    out = buf.getvalue()
    # determinism check: a second run must give the same bytes
    buf2 = io.BytesIO()
    spm.SentencePieceTrainer.train(
        input=inp, model_writer=buf2, vocab_size=vocab_size, model_type=model_type,
        num_threads=1, character_coverage=1.0, input_sentence_size=0,
        shuffle_input_sentence=False, normalization_rule_tsv=rules, minloglevel=2,
        **ids)
    assert buf2.getvalue() == out, "sentencepiece training is not deterministic"
    # the proto records the paths it was trained from: keep only the file names so that the
    # committed .model files do not depend on the temporary directory
    from sentencepiece import sentencepiece_model_pb2 as pb
    m = pb.ModelProto()
    m.ParseFromString(out)
    del m.trainer_spec.input[:]
    m.trainer_spec.input.append(os.path.basename(inp))
    m.normalizer_spec.normalization_rule_tsv = os.path.basename(rules)
    return m.SerializeToString()


def f32(x):
    """Shortest decimal that round-trips the float32 value (as a Python float for json)."""
    return float(str(np.float32(x)))


def fmargin(x):
    return f32(x) if math.isfinite(x) else None


def f32list(t):
    a = t.detach().cpu().float().numpy()
    if a.ndim == 0:
        return f32(a)
    return [f32list_np(v) for v in a] if a.ndim > 1 else [f32(v) for v in a]


def f32list_np(a):
    if a.ndim == 1:
        return [f32(v) for v in a]
    return [f32list_np(v) for v in a]


def jsonable(v):
    if isinstance(v, (list, tuple)):
        return [jsonable(x) for x in v]
    if isinstance(v, dict):
        return {k: jsonable(x) for k, x in v.items()}
    if isinstance(v, torch.Tensor):
        return v.tolist()
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating,)):
        return float(v)
    return v


def dump_golden(path, obj):
    """One top-level key per line, each case / run on its own line: compact but diffable."""
    def comp(v):
        return json.dumps(jsonable(v), ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    parts = []
    for k, v in obj.items():
        if isinstance(v, list) and v and isinstance(v[0], dict):
            inner = ",\n  ".join(comp(x) for x in v)
            parts.append(" %s: [\n  %s\n ]" % (json.dumps(k), inner))
        else:
            parts.append(" %s: %s" % (json.dumps(k), comp(v)))
    with open(path, "w", encoding="utf-8") as f:
        f.write("{\n" + ",\n".join(parts) + "\n}\n")


def dir_size(d):
    return sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d))


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


# --------------------------------------------------------------------------------------------
# tokenizers: each builder writes the tokenizer files into `out` and returns nothing; the
# caller reloads with AutoTokenizer from `out` alone.
# --------------------------------------------------------------------------------------------
T5_IDS = dict(pad_id=0, eos_id=1, unk_id=2, bos_id=-1)
FAIRSEQ_IDS = dict(unk_id=0, bos_id=1, eos_id=2, pad_id=-1)  # spm defaults, as fairseq/Marian


def tok_t5(out, tmp, lines, vocab, extra_ids):
    model = train_spm(lines, vocab, "unigram", tmp, **T5_IDS)
    src = os.path.join(tmp, "t5tok")
    os.makedirs(src, exist_ok=True)
    with open(os.path.join(src, "spiece.model"), "wb") as f:
        f.write(model)
    tok = T5Tokenizer.from_pretrained(src, extra_ids=extra_ids, model_max_length=MAX_POS)
    tok.save_pretrained(out)
    shutil.copy(os.path.join(src, "spiece.model"), os.path.join(out, "spiece.model"))


def tok_pegasus(out, tmp, lines, vocab):
    model = train_spm(lines, vocab, "unigram", tmp, **T5_IDS)
    src = os.path.join(tmp, "pgtok")
    os.makedirs(src, exist_ok=True)
    with open(os.path.join(src, "spiece.model"), "wb") as f:
        f.write(model)
    tok = PegasusTokenizer.from_pretrained(src, model_max_length=MAX_POS)
    tok.save_pretrained(out)
    shutil.copy(os.path.join(src, "spiece.model"), os.path.join(out, "spiece.model"))


def tok_mbart50(out, tmp, lines, vocab, src_lang, tgt_lang):
    model = train_spm(lines, vocab, "bpe", tmp, **FAIRSEQ_IDS)
    src = os.path.join(tmp, "mbtok")
    os.makedirs(src, exist_ok=True)
    with open(os.path.join(src, "sentencepiece.bpe.model"), "wb") as f:
        f.write(model)
    tok = MBart50Tokenizer.from_pretrained(src, src_lang=src_lang, tgt_lang=tgt_lang,
                                           model_max_length=MAX_POS)
    tok.save_pretrained(out)
    shutil.copy(os.path.join(src, "sentencepiece.bpe.model"), os.path.join(out, "sentencepiece.bpe.model"))


def tok_nllb(out, tmp, lines, vocab, src_lang, tgt_lang, langs):
    model = train_spm(lines, vocab, "bpe", tmp, **FAIRSEQ_IDS)
    src = os.path.join(tmp, "nltok")
    os.makedirs(src, exist_ok=True)
    with open(os.path.join(src, "sentencepiece.bpe.model"), "wb") as f:
        f.write(model)
    tok = NllbTokenizer.from_pretrained(src, src_lang=src_lang, tgt_lang=tgt_lang,
                                        additional_special_tokens=list(langs),
                                        model_max_length=MAX_POS)
    tok.save_pretrained(out)
    shutil.copy(os.path.join(src, "sentencepiece.bpe.model"), os.path.join(out, "sentencepiece.bpe.model"))


def tok_marian(out, tmp, src_lines, tgt_lines, src_vocab, tgt_vocab):
    """MarianTokenizer format: source.spm, target.spm, one joint vocab.json, NO tokenizer.json.

    Like the opus-mt conversions: vocab.json starts with </s>=0, <unk>=1, then the pieces of
    both sentencepiece models (source first), and <pad> last (= decoder_start_token_id).
    """
    s_model = train_spm(src_lines, src_vocab, "unigram", tmp, **FAIRSEQ_IDS)
    t_model = train_spm(tgt_lines, tgt_vocab, "bpe", tmp, **FAIRSEQ_IDS)
    with open(os.path.join(out, "source.spm"), "wb") as f:
        f.write(s_model)
    with open(os.path.join(out, "target.spm"), "wb") as f:
        f.write(t_model)
    vocab = {"</s>": 0, "<unk>": 1}
    for m in (s_model, t_model):
        sp = spm.SentencePieceProcessor(model_proto=m)
        for i in range(sp.get_piece_size()):
            if sp.is_control(i) or sp.is_unknown(i):
                continue
            p = sp.id_to_piece(i)
            if p not in vocab:
                vocab[p] = len(vocab)
    vocab["<pad>"] = len(vocab)
    with open(os.path.join(out, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump(vocab, f, ensure_ascii=False, indent=2)
    tok = MarianTokenizer(os.path.join(out, "source.spm"), os.path.join(out, "target.spm"),
                          os.path.join(out, "vocab.json"), source_lang="en", target_lang="de",
                          model_max_length=MAX_POS)
    tok.save_pretrained(out)


def tok_bart(out, tmp, lines, vocab):
    """Byte-level BPE like GPT-2/BART: vocab.json + merges.txt + tokenizer.json, <mask> last."""
    from tokenizers import ByteLevelBPETokenizer

    inp = os.path.join(tmp, "bpe_corpus.txt")
    write_lines(inp, lines)

    def train():
        t = ByteLevelBPETokenizer()
        t.train(files=[inp], vocab_size=vocab, min_frequency=2,
                special_tokens=["<s>", "<pad>", "</s>", "<unk>"], show_progress=False)
        d = tempfile.mkdtemp(dir=tmp)
        t.save_model(d)
        v = json.load(open(os.path.join(d, "vocab.json"), encoding="utf-8"))
        v["<mask>"] = len(v)
        with open(os.path.join(d, "vocab.json"), "w", encoding="utf-8") as f:
            json.dump(v, f, ensure_ascii=False)
        return d

    d1, d2 = train(), train()
    for fn in ("vocab.json", "merges.txt"):
        assert sha256(os.path.join(d1, fn)) == sha256(os.path.join(d2, fn)), "BPE training not deterministic"
        shutil.copy(os.path.join(d1, fn), os.path.join(out, fn))
    tok = BartTokenizer.from_pretrained(
        d1, mask_token=AddedToken("<mask>", lstrip=True, rstrip=False, special=True),
        model_max_length=MAX_POS)
    tok.save_pretrained(out)


# --------------------------------------------------------------------------------------------
# fixture specs
# --------------------------------------------------------------------------------------------
COMMON_BART = dict(
    max_position_embeddings=MAX_POS, encoder_layers=2, decoder_layers=2, dropout=0.0,
    attention_dropout=0.0, activation_dropout=0.0, encoder_layerdrop=0.0, decoder_layerdrop=0.0,
    init_std=0.02, use_cache=True, is_encoder_decoder=True,
)


def spec_t5(tmp, out):
    lines = corpus(SEED + 1, ["en"], {"en": 4000})
    tok_t5(out, tmp, lines, 400, extra_ids=100)
    tok = AutoTokenizer.from_pretrained(out)
    cfg = T5Config(
        vocab_size=len(tok), d_model=32, d_kv=16, d_ff=64, num_layers=2, num_decoder_layers=2,
        num_heads=4, relative_attention_num_buckets=16, relative_attention_max_distance=32,
        dropout_rate=0.0, layer_norm_epsilon=1e-6, initializer_factor=1.0,
        feed_forward_proj="relu", tie_word_embeddings=True, pad_token_id=0, eos_token_id=1,
        decoder_start_token_id=0, use_cache=True, is_encoder_decoder=True)
    gen = GenerationConfig(decoder_start_token_id=0, eos_token_id=1, pad_token_id=0)
    return dict(cls=T5ForConditionalGeneration, cfg=cfg, gen=gen, tok=tok, langs=["en"],
                prefix=T5_PREFIX, untie=False, steps=1000, lr=1e-2)


def spec_t5_v1_1(tmp, out):
    lines = corpus(SEED + 2, ["en"], {"en": 4000})
    tok_t5(out, tmp, lines, 400, extra_ids=100)
    tok = AutoTokenizer.from_pretrained(out)
    cfg = T5Config(
        vocab_size=len(tok), d_model=32, d_kv=12, d_ff=64, num_layers=2, num_decoder_layers=2,
        num_heads=4, relative_attention_num_buckets=32, relative_attention_max_distance=128,
        dropout_rate=0.0, layer_norm_epsilon=1e-6, initializer_factor=1.0,
        feed_forward_proj="gated-gelu", tie_word_embeddings=False, pad_token_id=0,
        eos_token_id=1, decoder_start_token_id=0, use_cache=True, is_encoder_decoder=True)
    gen = GenerationConfig(decoder_start_token_id=0, eos_token_id=1, pad_token_id=0)
    return dict(cls=T5ForConditionalGeneration, cfg=cfg, gen=gen, tok=tok, langs=["en"],
                prefix=T5_PREFIX, untie=True, steps=1300, lr=1e-2)


def spec_mt5(tmp, out):
    lines = corpus(SEED + 3, ["en", "de", "fr"], {"en": 3000, "de": 1200, "fr": 1200})
    tok_t5(out, tmp, lines, 700, extra_ids=0)
    tok = AutoTokenizer.from_pretrained(out)
    cfg = MT5Config(
        vocab_size=len(tok), d_model=32, d_kv=8, d_ff=80, num_layers=2, num_decoder_layers=2,
        num_heads=4, relative_attention_num_buckets=32, relative_attention_max_distance=128,
        dropout_rate=0.0, layer_norm_epsilon=1e-6, initializer_factor=1.0,
        feed_forward_proj="gated-gelu", tie_word_embeddings=False, pad_token_id=0,
        eos_token_id=1, decoder_start_token_id=0, use_cache=True, is_encoder_decoder=True,
        tokenizer_class="T5Tokenizer")
    gen = GenerationConfig(decoder_start_token_id=0, eos_token_id=1, pad_token_id=0)
    return dict(cls=MT5ForConditionalGeneration, cfg=cfg, gen=gen, tok=tok,
                langs=["en", "de", "fr"], prefix=None, untie=True, steps=1600, lr=1e-2)


def spec_bart(tmp, out):
    lines = corpus(SEED + 4, ["en"], {"en": 4000})
    tok_bart(out, tmp, lines, 800)
    tok = AutoTokenizer.from_pretrained(out)
    cfg = BartConfig(
        vocab_size=len(tok), d_model=32, encoder_attention_heads=4, decoder_attention_heads=4,
        encoder_ffn_dim=64, decoder_ffn_dim=64, activation_function="gelu",
        scale_embedding=False, normalize_before=False, add_final_layer_norm=False,
        normalize_embedding=True, static_position_embeddings=False, add_bias_logits=False,
        tie_word_embeddings=True, pad_token_id=1, bos_token_id=0, eos_token_id=2,
        decoder_start_token_id=2, forced_bos_token_id=0, forced_eos_token_id=2,
        **COMMON_BART)
    # like facebook/bart-large-cnn: beam defaults live in the generation config
    gen = GenerationConfig(decoder_start_token_id=2, bos_token_id=0, eos_token_id=2,
                           pad_token_id=1, forced_bos_token_id=0, forced_eos_token_id=2,
                           num_beams=4, length_penalty=2.0, max_length=40, min_length=8,
                           no_repeat_ngram_size=3, early_stopping=True)
    return dict(cls=BartForConditionalGeneration, cfg=cfg, gen=gen, tok=tok, langs=["en"],
                prefix=None, untie=False, steps=1200, lr=3e-3,
                greedy_base=dict(min_length=0, no_repeat_ngram_size=0),
                defaults_case=True)


def spec_mbart(tmp, out):
    lines = corpus(SEED + 5, ["en", "de", "fr"], {"en": 3000, "de": 1200, "fr": 1200})
    tok_mbart50(out, tmp, lines, 400, "en_XX", "de_DE")
    tok = AutoTokenizer.from_pretrained(out)
    cfg = MBartConfig(
        vocab_size=len(tok), d_model=32, encoder_attention_heads=4, decoder_attention_heads=4,
        encoder_ffn_dim=64, decoder_ffn_dim=64, activation_function="gelu",
        scale_embedding=True, normalize_before=True, add_final_layer_norm=True,
        normalize_embedding=True, static_position_embeddings=False, add_bias_logits=False,
        tie_word_embeddings=True, pad_token_id=1, bos_token_id=0, eos_token_id=2,
        decoder_start_token_id=2, forced_eos_token_id=2, **COMMON_BART)
    # like facebook/mbart-large-50-*: decoder starts with </s>, target language forced at step 1
    gen = GenerationConfig(decoder_start_token_id=2, bos_token_id=0, eos_token_id=2,
                           pad_token_id=1, forced_eos_token_id=2)
    return dict(cls=MBartForConditionalGeneration, cfg=cfg, gen=gen, tok=tok,
                langs=["en", "de", "fr"], src_lang="en_XX", tgt_lang="de_DE", prefix=None,
                untie=False, steps=1600, lr=5e-3)


def spec_pegasus(tmp, out):
    lines = corpus(SEED + 6, ["en"], {"en": 4000})
    tok_pegasus(out, tmp, lines, 300)
    tok = AutoTokenizer.from_pretrained(out)
    cfg = PegasusConfig(
        vocab_size=len(tok), d_model=32, encoder_attention_heads=4, decoder_attention_heads=2,
        encoder_ffn_dim=64, decoder_ffn_dim=48, activation_function="relu",
        scale_embedding=True, normalize_before=True, add_final_layer_norm=True,
        normalize_embedding=False, static_position_embeddings=True, add_bias_logits=False,
        tie_word_embeddings=True, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
        forced_eos_token_id=1, **COMMON_BART)
    gen = GenerationConfig(decoder_start_token_id=0, eos_token_id=1, pad_token_id=0,
                           forced_eos_token_id=1)
    return dict(cls=PegasusForConditionalGeneration, cfg=cfg, gen=gen, tok=tok, langs=["en"],
                prefix=None, untie=False, steps=1800, lr=5e-3)


def spec_marian(tmp, out):
    lines = corpus(SEED + 7, ["en"], {"en": 4000})
    tok_marian(out, tmp, lines, lines, 350, 300)
    tok = AutoTokenizer.from_pretrained(out)
    pad = tok.pad_token_id
    cfg = MarianConfig(
        vocab_size=len(tok), decoder_vocab_size=len(tok), d_model=32,
        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=64,
        decoder_ffn_dim=64, activation_function="swish", scale_embedding=True,
        normalize_before=False, add_final_layer_norm=False, normalize_embedding=False,
        static_position_embeddings=True, add_bias_logits=False, tie_word_embeddings=True,
        share_encoder_decoder_embeddings=True, pad_token_id=pad, eos_token_id=0,
        decoder_start_token_id=pad, forced_eos_token_id=0, bad_words_ids=[[pad]],
        **COMMON_BART)
    # like Helsinki-NLP/opus-mt-*: 4 beams by default, <pad> banned, EOS forced at max length
    gen = GenerationConfig(decoder_start_token_id=pad, bos_token_id=0, eos_token_id=0,
                           pad_token_id=pad, forced_eos_token_id=0, bad_words_ids=[[pad]],
                           num_beams=4, max_length=MAX_POS)
    return dict(cls=MarianMTModel, cfg=cfg, gen=gen, tok=tok, langs=["en"], prefix=None,
                untie=False, steps=1800, lr=5e-3, random_final_logits_bias=True)


def spec_m2m100(tmp, out):
    lines = corpus(SEED + 8, ["en", "de", "fr"], {"en": 3000, "de": 1200, "fr": 1200})
    tok_nllb(out, tmp, lines, 400, "eng_Latn", "fra_Latn", ["deu_Latn", "eng_Latn", "fra_Latn"])
    tok = AutoTokenizer.from_pretrained(out)
    cfg = M2M100Config(
        vocab_size=len(tok), d_model=32, encoder_attention_heads=4, decoder_attention_heads=4,
        encoder_ffn_dim=64, decoder_ffn_dim=64, activation_function="relu",
        scale_embedding=True, normalize_before=True, add_final_layer_norm=True,
        normalize_embedding=False, static_position_embeddings=True, add_bias_logits=False,
        tie_word_embeddings=True, pad_token_id=1, bos_token_id=0, eos_token_id=2,
        decoder_start_token_id=2, tokenizer_class="NllbTokenizer", **COMMON_BART)
    # like facebook/nllb-200-*: </s> starts the decoder, target language forced at step 1
    gen = GenerationConfig(decoder_start_token_id=2, bos_token_id=0, eos_token_id=2,
                           pad_token_id=1)
    return dict(cls=M2M100ForConditionalGeneration, cfg=cfg, gen=gen, tok=tok,
                langs=["en", "de", "fr"], src_lang="eng_Latn", tgt_lang="fra_Latn",
                prefix=None, untie=False, steps=1200, lr=3e-3)


SPECS = {
    "t5": spec_t5,
    "t5-v1_1": spec_t5_v1_1,
    "mt5": spec_mt5,
    "bart": spec_bart,
    "mbart": spec_mbart,
    "pegasus": spec_pegasus,
    "marian": spec_marian,
    "m2m100": spec_m2m100,
}

# Keys written explicitly into config.json (transformers ignores some of them for a given
# class, but encdec reads them: they must state the architecture, not rely on defaults).
EXPLICIT_BART_KEYS = ["scale_embedding", "normalize_before", "add_final_layer_norm",
                      "normalize_embedding", "static_position_embeddings", "add_bias_logits",
                      "activation_function", "tie_word_embeddings", "max_position_embeddings"]


# --------------------------------------------------------------------------------------------
# training (copy task)
# --------------------------------------------------------------------------------------------
def make_pairs(spec, seed, n):
    rng = random.Random(seed)
    pairs = []
    for _ in range(n):
        lang = rng.choice(spec["langs"]) if rng.random() < 0.5 else spec["langs"][0]
        s = sentence(rng, LANG_WORDS[lang], 1, 12)
        src = s
        if spec.get("prefix") and rng.random() < 0.3:
            src = spec["prefix"] + s
        pairs.append((src, s))
    return pairs


def encode_pairs(tok, pairs):
    enc = tok([p[0] for p in pairs])["input_ids"]
    lab = tok(text_target=[p[1] for p in pairs])["input_ids"]
    return list(zip(enc, lab))


def pad_to(seqs, val):
    m = max(len(s) for s in seqs)
    return torch.tensor([s + [val] * (m - len(s)) for s in seqs], dtype=torch.long)


def train_model(model, tok, spec, seed, log):
    pairs = make_pairs(spec, seed, 12000)
    data = encode_pairs(tok, pairs)
    pad = tok.pad_token_id
    rng = random.Random(seed + 1)
    opt = torch.optim.AdamW(model.parameters(), lr=spec["lr"], betas=(0.9, 0.98), weight_decay=0.0)
    steps = spec["steps"]
    warm = 100
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * max(0.05, 0.5 * (1 + math.cos(math.pi * s / steps))))
    model.train()
    t0 = time.time()
    c0 = time.process_time()
    losses = []
    bs = 32
    for step in range(steps):
        batch = rng.sample(data, bs)
        ids = pad_to([b[0] for b in batch], pad)
        mask = (ids != pad).long()
        if pad == tok.eos_token_id:  # not the case for any fixture, but be safe
            mask = torch.ones_like(ids)
        labels = pad_to([b[1] for b in batch], -100)
        out = model(input_ids=ids, attention_mask=mask, labels=labels)
        opt.zero_grad()
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(out.loss.item())
        if (step + 1) % 400 == 0:
            log("    step %d loss %.4f (%.1fs)" % (step + 1, np.mean(losses[-100:]), time.time() - t0))
    model.eval()
    return dict(task="copy the source text (T5: optional task prefix dropped)",
                langs=spec["langs"], steps=steps,
                batch_size=bs, lr=spec["lr"], wall_seconds=round(time.time() - t0, 1),
                cpu_seconds=round(time.process_time() - c0, 1),
                final_loss=round(float(np.mean(losses[-100:])), 4))


# --------------------------------------------------------------------------------------------
# goldens
# --------------------------------------------------------------------------------------------
def effective(model, kwargs):
    gc = copy.deepcopy(model.generation_config)
    gc.update(**{k: v for k, v in kwargs.items()})
    d = gc.to_dict()
    return {k: d.get(k) for k in EFFECTIVE_KEYS}


def run_generate(model, enc, kwargs):
    with torch.no_grad():
        out = model.generate(**enc, **kwargs, return_dict_in_generate=True, output_scores=True)
    return out


def greedy_scores(model, out, eos_ids):
    """Per-row log-probs of the chosen tokens under the PROCESSED scores (log_softmax of the
    logits after the logits processors), cut after the first EOS, and the smallest gap between
    the best and second-best processed score over those steps (steps where a token is forced,
    i.e. the runner-up is -inf, are left out)."""
    tr = model.compute_transition_scores(out.sequences, out.scores, normalize_logits=True)
    gen = out.sequences[:, -tr.shape[1]:]
    rows, margins = [], []
    for b in range(gen.shape[0]):
        n = gen.shape[1]
        for t in range(gen.shape[1]):
            if int(gen[b, t]) in eos_ids:
                n = t + 1
                break
        rows.append(tr[b, :n])
        m = float("inf")
        for t in range(n):
            top = torch.topk(out.scores[t][b], 2).values
            if torch.isfinite(top[1]):
                m = min(m, float(top[0] - top[1]))
        margins.append(m)
    return rows, margins


def strip_special(tok, ids):
    special = set(tok.all_special_ids)
    return [i for i in ids if i not in special]


def encoder_states(model, enc):
    with torch.no_grad():
        return model.get_encoder()(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).last_hidden_state


def step_logits(model, enc, dec_ids):
    with torch.no_grad():
        out = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"],
                    decoder_input_ids=torch.tensor([dec_ids], dtype=torch.long))
    return out.logits[0, -1]


def topk_dict(v, k=20):
    t = torch.topk(v, k)
    return {"ids": t.indices.tolist(), "values": f32list(t.values)}


def make_goldens(name, d, spec, train_info, log, run_checks=True, out_name="golden.json"):
    tok = AutoTokenizer.from_pretrained(d)
    model = AutoModelForSeq2SeqLM.from_pretrained(d, dtype=torch.float32)
    model.eval()
    assert len(tok) == model.config.vocab_size, (len(tok), model.config.vocab_size)
    src_lang, tgt_lang = spec.get("src_lang"), spec.get("tgt_lang")
    forced_bos = None
    if src_lang:
        tok.src_lang = src_lang
        forced_bos = tok.convert_tokens_to_ids(tgt_lang)
    start = model.generation_config.decoder_start_token_id
    eos = model.generation_config.eos_token_id
    eos_ids = set(eos if isinstance(eos, list) else [eos])

    greedy_kwargs = {"do_sample": False, "num_beams": 1, "max_new_tokens": MAX_NEW}
    greedy_kwargs.update(spec.get("greedy_base", {}))
    if forced_bos is not None:
        greedy_kwargs["forced_bos_token_id"] = forced_bos

    def enc1(text):
        return tok([text], return_tensors="pt")

    cases = []
    all_margins = []
    texts = list(CASES)
    if spec.get("prefix"):
        texts.insert(1, ("prefix", spec["prefix"] + "the small house"))
    for cname, text in texts:
        enc = enc1(text)
        ids = enc["input_ids"][0].tolist()
        hs = encoder_states(model, enc)[0]
        logits0 = step_logits(model, enc, [start])
        out = run_generate(model, enc, greedy_kwargs)
        seq = out.sequences[0].tolist()
        tr, marg = greedy_scores(model, out, eos_ids)
        all_margins += marg
        case = {
            "name": cname, "text": text, "input_ids": ids,
            "input_tokens": tok.convert_ids_to_tokens(ids),
            "encoder_last_hidden_state": f32list(hs),
            "first_step_logits": f32list(logits0),
            "first_step_top20": topk_dict(logits0),
        }
        if forced_bos is not None:
            l1 = step_logits(model, enc, [start, forced_bos])
            case["second_step_after_forced_bos_top20"] = topk_dict(l1)
            case["second_step_after_forced_bos_logits"] = f32list(l1)
        case["greedy"] = {
            "generate_kwargs": greedy_kwargs,
            "sequences": seq,
            "step_logprobs": f32list(tr[0]),
            "sequence_score": f32(tr[0].sum().item()),
            "min_top2_margin": fmargin(marg[0]),
            "text": tok.decode(seq, skip_special_tokens=True),
        }
        cases.append(case)

    # padded batch of very different lengths
    benc = tok(BATCH_TEXTS, return_tensors="pt", padding=True)
    bhs = encoder_states(model, benc)
    bout = run_generate(model, benc, greedy_kwargs)
    btr, bmarg = greedy_scores(model, bout, eos_ids)
    all_margins += bmarg
    batch = {
        "texts": BATCH_TEXTS, "padding_side": tok.padding_side, "pad_token_id": tok.pad_token_id,
        "input_ids": benc["input_ids"].tolist(), "attention_mask": benc["attention_mask"].tolist(),
        "encoder_last_hidden_state": f32list(bhs),
        "greedy": {
            "generate_kwargs": greedy_kwargs,
            "sequences": bout.sequences.tolist(),
            "sequence_scores": [f32(x.sum().item()) for x in btr],
            "min_top2_margins": [fmargin(x) for x in bmarg],
            "texts": tok.batch_decode(bout.sequences, skip_special_tokens=True),
        },
    }
    # the batched greedy ids must equal the one-by-one ids (padding must not change results)
    for i, t in enumerate(BATCH_TEXTS):
        single = run_generate(model, enc1(t), greedy_kwargs).sequences[0].tolist()
        row = bout.sequences[i].tolist()
        row = row[:len(single)]
        if row != single:
            log("    WARNING: batch row %d differs from unbatched greedy: %s vs %s" % (i, row, single))

    # generation (issue 4)
    gens = []
    gcases = gen_cases(spec)
    if spec.get("defaults_case"):
        gcases = [("config_defaults", {})] + gcases
    for gname, kw in gcases:
        kwargs = dict(do_sample=False, **kw)
        if gname != "config_defaults":
            kwargs = dict(spec.get("greedy_base", {}), **kwargs)
        if kwargs.get("max_new_tokens", 0) is None:
            kwargs.pop("max_new_tokens")
        if forced_bos is not None:
            kwargs["forced_bos_token_id"] = forced_bos
        runs = []
        for iname, text in GEN_TEXTS:
            enc = enc1(text)
            out = run_generate(model, enc, kwargs)
            r = {"input": iname, "text": text, "input_ids": enc["input_ids"][0].tolist(),
                 "sequences": out.sequences.tolist(),
                 "texts": tok.batch_decode(out.sequences, skip_special_tokens=True)}
            if getattr(out, "sequences_scores", None) is not None:
                r["sequences_scores"] = [f32(x) for x in out.sequences_scores.tolist()]
            else:
                tr, marg = greedy_scores(model, out, eos_ids)
                r["sequence_scores"] = [f32(x.sum().item()) for x in tr]
                r["min_top2_margin"] = fmargin(min(marg))
            runs.append(r)
        gens.append({"name": gname, "generate_kwargs": kwargs,
                     "effective_generation_config": effective(model, kwargs), "runs": runs})

    # ---- the `tokenizers` library alone on tokenizer.json must give the same ids ----
    tj_mismatch = []
    tj = os.path.join(d, "tokenizer.json")
    if os.path.exists(tj):
        raw = tokenizers.Tokenizer.from_file(tj)
        for c in cases:
            if raw.encode(c["text"], add_special_tokens=True).ids != c["input_ids"]:
                tj_mismatch.append(c["name"])
            sq = c["greedy"]["sequences"]
            if raw.decode(sq, skip_special_tokens=True) != c["greedy"]["text"]:
                tj_mismatch.append(c["name"] + ":decode")

    # ---- checks: varied, input-dependent outputs ----
    gen_tokens = {c["name"]: strip_special(tok, c["greedy"]["sequences"]) for c in cases}
    nonempty = {k: v for k, v in gen_tokens.items() if k != "empty"}
    distinct = len({tuple(v) for v in nonempty.values()})
    repeated = [k for k, v in nonempty.items() if len(v) >= 3 and len(set(v)) == 1]
    differs = gen_tokens["short"] != gen_tokens["perturbed"]
    exact = sum(1 for c in cases if c["name"] in ("short", "perturbed", "medium")
                and c["greedy"]["text"].strip() == c["text"].strip())
    held = make_pairs(spec, SEED + 999, 40) if run_checks else []
    copy_ok = 0
    for s, t in held:
        o = run_generate(model, enc1(s), {"do_sample": False, "num_beams": 1, "max_new_tokens": 40,
                                          **spec.get("greedy_base", {}),
                                          **({"forced_bos_token_id": forced_bos} if forced_bos is not None else {})})
        if tok.decode(o.sequences[0], skip_special_tokens=True).strip() == t.strip():
            copy_ok += 1
    checks = {
        "distinct_greedy_outputs": distinct, "non_empty_cases": len(nonempty),
        "single_token_repeated_outputs": repeated, "short_vs_perturbed_differ": differs,
        "exact_copies_among_short_perturbed_medium": exact,
        "heldout_copy_exact_match": "%d/%d" % (copy_ok, len(held)),
        "min_greedy_top2_margin": fmargin(min(all_margins)),
        "tokenizer_json_mismatches": tj_mismatch if os.path.exists(tj) else None,
    }
    ok = distinct >= len(nonempty) - 1 and not repeated and differs
    checks["passed"] = ok

    with safe_open(os.path.join(d, "model.safetensors"), "pt") as f:
        tensors = {k: list(f.get_slice(k).get_shape()) for k in sorted(f.keys())}

    golden = {
        "fixture": name,
        "model_type": model.config.model_type,
        "architectures": model.config.architectures,
        "dtype": "float32",
        "seed": SEED,
        "versions": {"transformers": transformers.__version__, "torch": torch.__version__,
                     "tokenizers": tokenizers.__version__, "sentencepiece": spm.__version__,
                     "numpy": np.__version__, "python": platform.python_version()},
        "tokenizer": {"class": type(tok).__name__, "len": len(tok),
                      "pad_token_id": tok.pad_token_id, "eos_token_id": tok.eos_token_id,
                      "unk_token_id": tok.unk_token_id,
                      "bos_token_id": getattr(tok, "bos_token_id", None),
                      "clean_up_tokenization_spaces": getattr(tok, "clean_up_tokenization_spaces", None),
                      "src_lang": src_lang, "tgt_lang": tgt_lang},
        "src_lang": src_lang, "tgt_lang": tgt_lang, "forced_bos_token_id": forced_bos,
        "task_prefix": spec.get("prefix"),
        "decoder_start_token_id": start,
        "generation_config": model.generation_config.to_dict(),
        "config_vocab_size": model.config.vocab_size,
        "tensors": tensors,
        "training": train_info,
        "checks": checks,
        "cases": cases,
        "batch": batch,
        "generation": gens,
    }
    if not run_checks:
        golden["checks"] = None
    dump_golden(os.path.join(d, out_name), golden)
    return golden


# --------------------------------------------------------------------------------------------
# build one fixture
# --------------------------------------------------------------------------------------------
def build(name, log):
    d = os.path.join(OUT_ROOT, name)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    seed_all(SEED)
    with tempfile.TemporaryDirectory() as tmp:
        spec = SPECS[name](tmp, d)
    tok = spec["tok"]
    cfg = spec["cfg"]
    assert cfg.vocab_size == len(tok)
    seed_all(SEED)
    model = spec["cls"](cfg)
    if spec["untie"]:
        # T5 v1.1 / mT5: separate lm_head (transformers 5 ties it at construction; untie and
        # make sure it is saved, so the checkpoint is like google/flan-t5-* and google/mt5-*)
        model.lm_head.weight = torch.nn.Parameter(
            torch.randn_like(model.shared.weight) * (cfg.d_model ** -0.5))
        model.all_tied_weights_keys.pop("lm_head.weight", None)
    if spec.get("random_final_logits_bias"):
        g = torch.Generator().manual_seed(SEED)
        model.final_logits_bias.copy_(torch.randn(model.final_logits_bias.shape, generator=g) * 0.5)
    if src_lang := spec.get("src_lang"):
        tok.src_lang = src_lang
        tok.tgt_lang = spec["tgt_lang"]
    log("  %s: %d params, vocab %d" % (name, sum(p.numel() for p in model.parameters()), len(tok)))
    train_info = train_model(model, tok, spec, SEED, log)
    model.generation_config = spec["gen"]
    model.save_pretrained(d, safe_serialization=True)
    spec["gen"].save_pretrained(d)

    # state every architecture switch explicitly in config.json
    cpath = os.path.join(d, "config.json")
    c = json.load(open(cpath, encoding="utf-8"))
    if c["model_type"] in ("t5", "mt5"):
        c["tie_word_embeddings"] = not spec["untie"]
        c.pop("scale_decoder_outputs", None)  # transformers-5 internal, derived from the above
    else:
        for k in EXPLICIT_BART_KEYS:
            c[k] = getattr(cfg, k)
    with open(cpath, "w", encoding="utf-8") as f:
        json.dump(c, f, indent=2, sort_keys=True)
        f.write("\n")

    # the directory alone must reload to the same model
    re = AutoModelForSeq2SeqLM.from_pretrained(d, dtype=torch.float32).eval()
    sd0, sd1 = model.state_dict(), re.state_dict()
    for k, v in sd1.items():
        if k in sd0 and not torch.equal(sd0[k], v):
            raise SystemExit("%s: reloaded tensor %s differs" % (name, k))
    with safe_open(os.path.join(d, "model.safetensors"), "pt") as f:
        keys = set(f.keys())
        if spec["untie"]:
            assert "lm_head.weight" in keys, "lm_head.weight missing from safetensors"
            assert not torch.equal(f.get_tensor("lm_head.weight"), f.get_tensor("shared.weight"))
        if spec.get("random_final_logits_bias"):
            assert "final_logits_bias" in keys and f.get_tensor("final_logits_bias").abs().sum() > 0
    assert re.lm_head.weight.data_ptr() != re.shared.weight.data_ptr() if spec["untie"] else True
    if spec["untie"]:
        assert not getattr(re.config, "scale_decoder_outputs", False)

    g = make_goldens(name, d, spec, train_info, log)
    return g


def compare(a, b, path, acc):
    """Walk two goldens; exact for ints/strings, max abs/rel difference for floats."""
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            if k in ("versions", "training", "checks", "generation_config"):
                continue
            if k not in a or k not in b:
                acc["exact"].append(path + "/" + k + " (missing)")
                continue
            compare(a[k], b[k], path + "/" + k, acc)
    elif isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            acc["exact"].append(path + " (length %d vs %d)" % (len(a), len(b)))
            return
        for i, (x, y) in enumerate(zip(a, b)):
            compare(x, y, path + "[%d]" % i, acc)
    elif isinstance(a, float) or isinstance(b, float):
        if a is None or b is None:
            if a != b:
                acc["exact"].append(path)
            return
        diff = abs(a - b)
        acc["max_abs"] = max(acc["max_abs"], diff)
        acc["max_rel"] = max(acc["max_rel"], diff / max(abs(b), 1e-3))
    elif a != b:
        acc["exact"].append(path)


def verify(name, log):
    d = os.path.join(OUT_ROOT, name)
    old = json.load(open(os.path.join(d, "golden.json"), encoding="utf-8"))
    gk = dict(old["cases"][0]["greedy"]["generate_kwargs"])
    for k in ("do_sample", "num_beams", "max_new_tokens", "forced_bos_token_id"):
        gk.pop(k, None)
    meta = dict(prefix=old["task_prefix"], src_lang=old["src_lang"], tgt_lang=old["tgt_lang"],
                greedy_base=gk,
                defaults_case=any(g["name"] == "config_defaults" for g in old["generation"]),
                langs=old["training"].get("langs", ["en"]))
    with tempfile.TemporaryDirectory() as tmp:
        dd = os.path.join(tmp, name)
        shutil.copytree(d, dd)
        new = make_goldens(name, dd, meta, old["training"], log, run_checks=False)
    acc = {"exact": [], "max_abs": 0.0, "max_rel": 0.0}
    compare(new, old, "", acc)
    ok = not acc["exact"] and acc["max_rel"] <= 1e-4
    log("  %-8s %s  float max abs diff %.3g, max rel diff %.3g, exact mismatches %d %s" % (
        name, "OK  " if ok else "DIFF", acc["max_abs"], acc["max_rel"], len(acc["exact"]),
        acc["exact"][:5]))
    return ok


def summarize(name, g, log):
    d = os.path.join(OUT_ROOT, name)
    ch = g["checks"]
    log("  %-8s %7.1f KB  loss %.3f  distinct %d/%d  repeated %s  perturb-differs %s  copy %s  "
        "margin %.2e  %s" % (name, dir_size(d) / 1024, g["training"]["final_loss"],
                             ch["distinct_greedy_outputs"], ch["non_empty_cases"],
                             ch["single_token_repeated_outputs"], ch["short_vs_perturbed_differ"],
                             ch["heldout_copy_exact_match"], ch["min_greedy_top2_margin"],
                             "OK" if ch["passed"] else "FAILED"))
    for c in g["cases"]:
        log("      %-9s %r -> %r" % (c["name"], c["text"][:40], c["greedy"]["text"][:60]))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", help="comma-separated fixture names (default: all)")
    ap.add_argument("--out", help="output root (default: tests/fixtures of this repo)")
    ap.add_argument("--verify", action="store_true",
                    help="do not train: recompute every golden from the committed directories "
                         "with the installed transformers/torch and report the differences")
    args = ap.parse_args()
    global OUT_ROOT
    if args.out:
        OUT_ROOT = os.path.abspath(args.out)
    names = args.only.split(",") if args.only else list(SPECS)
    for n in names:
        if n not in SPECS:
            raise SystemExit("unknown fixture %r; known: %s" % (n, ", ".join(SPECS)))
    os.makedirs(OUT_ROOT, exist_ok=True)

    def log(m):
        print(m, flush=True)

    if args.verify:
        bad = [n for n in names if not verify(n, log)]
        if bad:
            raise SystemExit("goldens differ for: " + ", ".join(bad))
        return

    results = {}
    for n in names:
        log("building %s" % n)
        results[n] = build(n, log)
    log("\nsummary (transformers %s, torch %s)" % (transformers.__version__, torch.__version__))
    failed = []
    for n in names:
        summarize(n, results[n], log)
        if not results[n]["checks"]["passed"]:
            failed.append(n)
    total = sum(dir_size(os.path.join(OUT_ROOT, n)) for n in os.listdir(OUT_ROOT)
                if os.path.isdir(os.path.join(OUT_ROOT, n)))
    log("  total tests/fixtures: %.1f KB" % (total / 1024))
    if failed:
        raise SystemExit("checks failed for: " + ", ".join(failed))


if __name__ == "__main__":
    main()
