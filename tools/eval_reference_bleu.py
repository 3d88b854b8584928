#!/usr/bin/env python3
"""Reference numbers for encdec's BLEU / chrF, computed with sacreBLEU itself.

Writes eval/tests/expected/bleu_expected.json, which eval/tests/bleu_parity.rs
compares the Rust implementation against. Inputs are the real WMT files under
../shared/data/wmt (relative to the repository root) plus inline edge cases.

    python3 tools/eval_reference_bleu.py            # regenerate the JSON
    python3 tools/eval_reference_bleu.py --time     # time sacreBLEU on newstest2014 en-de

Files are read as the sacreBLEU command line reads them (UTF-8, lines split on
"\\n" only, each line rstrip()-ed). Floats are written at full precision; each
score also carries float.hex() so the Rust test can check bit equality.
"""

import argparse
import json
import logging
import os
import platform
import statistics
import sys
import time

import sacrebleu
from sacrebleu.metrics import BLEU, CHRF

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.normpath(os.path.join(REPO, "..", "shared", "data"))
OUT = os.path.join(REPO, "eval", "tests", "expected", "bleu_expected.json")

# sacreBLEU warns on sentence BLEU without effective order; that is deliberate here.
logging.getLogger("sacrebleu").setLevel(logging.ERROR)

G22 = "wmt/generaltest2022"
O22 = "wmt/outputs/generaltest2022"


def read_lines(rel):
    """sacreBLEU CLI semantics: newline='\\n', rstrip() each line."""
    with open(os.path.join(DATA, rel), encoding="utf-8", newline="\n") as f:
        return [line.rstrip() for line in f]


def perturb(line):
    """Deterministic perturbation shared with eval/benches/bleu.rs: swap the words
    at positions 3+5k and 4+5k, reverse the words at 5+11k, then drop every 7th."""
    words = line.split(" ")
    i = 3
    while i + 1 < len(words):
        words[i], words[i + 1] = words[i + 1], words[i]
        i += 5
    words = [w[::-1] if j % 11 == 5 else w for j, w in enumerate(words)]
    return " ".join(w for j, w in enumerate(words) if j % 7 != 6)


def fnv1a64(text):
    h = 0xCBF29CE484222325
    for b in text.encode("utf-8"):
        h ^= b
        h = (h * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}"


# ---------------------------------------------------------------------------
# Result records


def bleu_record(score, metric):
    return {
        "score": score.score,
        "score_hex": float(score.score).hex(),
        "counts": [float(c) for c in score.counts],
        "totals": [float(t) for t in score.totals],
        "precisions": list(score.precisions),
        "bp": score.bp,
        "sys_len": score.sys_len,
        "ref_len": score.ref_len,
        "signature": metric.get_signature().format(),
        "text": str(score),
    }


def chrf_record(score, metric):
    return {
        "score": score.score,
        "score_hex": float(score.score).hex(),
        "signature": metric.get_signature().format(),
        "text": str(score),
    }


def bleu_metric(cfg):
    return BLEU(
        tokenize=cfg.get("tokenize", "13a"),
        lowercase=cfg.get("lowercase", False),
        smooth_method=cfg.get("smooth", "exp"),
        smooth_value=cfg.get("smooth_value"),
        effective_order=cfg.get("effective_order", False),
        force=True,
    )


def chrf_metric(cfg):
    return CHRF(
        char_order=cfg.get("char_order", 6),
        word_order=cfg.get("word_order", 0),
        beta=cfg.get("beta", 2),
        lowercase=cfg.get("lowercase", False),
        whitespace=cfg.get("whitespace", False),
        eps_smoothing=cfg.get("eps_smoothing", False),
    )


def corpus_case(kind, hyps, refs, cfg):
    if kind == "bleu":
        m = bleu_metric(cfg)
        return bleu_record(m.corpus_score(hyps, refs), m)
    m = chrf_metric(cfg)
    return chrf_record(m.corpus_score(hyps, refs), m)


def sentence_case(kind, hyp, refs, cfg):
    if kind == "bleu":
        m = bleu_metric(cfg)
        return bleu_record(m.sentence_score(hyp, refs), m)
    m = chrf_metric(cfg)
    return chrf_record(m.sentence_score(hyp, refs), m)


# ---------------------------------------------------------------------------
# Inline edge cases (no data files needed)

TOKENIZE_INPUTS = [
    "",
    " ",
    "Hello, world!",
    "It costs $3,000.50 (approx.) -- or 1,5 €.",
    "1995-2000 and 3-4 and a-b",
    "a..b ,, .x 1.a a.1 .5 5.",
    "\"Quoted\" 'single' `back` [brackets] {braces} <angle> |pipe| ~tilde^",
    "&quot;Hi&quot; &amp; &lt;tag&gt; &amp;lt; &apos;x&apos;",
    "Before <skipped> after",
    "multi\nline-\nbreak",
    "Tabs\tand\u00a0nbsp\u3000ideographic\u2009thin\u200bzwsp\u2028ls",
    "file\x1cgroup\x1drecord\x1eunit\x1fsep",
    "Trailing spaces   ",
    "„Deutsche“ Anführungszeichen – und — Striche…",
    "«Bonjour», dit-il ; « très » bien !",
    "“Curly” ‘quotes’ and ellipsis… and bullet • and ¿qué? ¡sí!",
    "我爱北京天安门。今天天气很好，不是吗？",
    "混合 text 与 English, 数字 123,456.78 和 “引号”。",
    "日本語のテキスト、カタカナ。ﾊﾝｶｸ",
    "한국어 문장입니다.",
    "Emoji 😀 and ☺ and ★ and ♥ and ✈ symbols ©®™ ±×÷ √∞",
    "Math: a+b=c, x<y>z, 50% of 10^3; e=mc²; ½ ¼ ¾",
    "Arabic ٣ digits ١٢٣ and ، punctuation ؟",
    "Devanagari १२३ । and Thai ๑๒๓",
    "ΟΔΟΣ Σίσυφος ΣΑΣ",
    "İstanbul ŞİŞLİ ǅ ß ẞ",
    "Combining e\u0301 and a\u0308 marks",
    "...",
    "!?!",
    "-",
    "@#$%",
    "a",
    "the",
    "U.S.A. e.g. i.e. Mr. Dr.",
    "http://example.com/path?q=1&x=2 user@mail.org",
    "10.5% 1,000,000 -3.2 +4 3/4 12:30",
    "\u20c1 riyal sign \u2b96 \U00010ed0 \U00011de5",
    "x\u2001y\u2a6dz\u2a6ew",
    "\ufeffBOM at start",
    "under_score and back\\slash",
]

EDGE_HYPS = [
    "The cat sat on the mat.",
    "",
    "Hello",
    "...",
    "我爱北京天安门。",
    "“Quoted” text — with dashes… and «guillemets».",
    "It costs $3,000.50 today.",
    "a b c d e f g",
    "Completely unrelated words here",
    "the the the the the the the",
]
EDGE_REFS_A = [
    "The cat is on the mat.",
    "",
    "Hello",
    "!!!",
    "我爱天安门。",
    "\"Quoted\" text - with dashes... and <<guillemets>>.",
    "It costs $3,000.50 now.",
    "a b c d e f g",
    "",
    "The cat is on the mat.",
]
EDGE_REFS_B = [
    "There is a cat on the mat.",
    "Something",
    "hello",
    "...",
    "我爱北京。",
    "“Quoted” text — with dashes… and «guillemets».",
    "The price is $3,000.50 today.",
    "a b c",
    "Unrelated",
    "The cat",
]

SENTENCE_PAIRS = [
    ("The cat sat on the mat.", ["The cat is on the mat."]),
    ("The cat sat on the mat.", ["The cat is on the mat.", "There is a cat on the mat."]),
    ("", ["The cat is on the mat."]),
    ("The cat", ["The cat is on the mat."]),
    ("cat", ["The cat is on the mat."]),
    ("The cat is on the mat.", [""]),
    ("", [""]),
    ("Hello", ["Hello"]),
    ("one two three four five six seven eight", ["one two three four five six seven eight nine"]),
    ("a b a b a b", ["a b c a b"]),
    ("我爱北京天安门。", ["我爱天安门。"]),
    ("...", ["..."]),
    ("!?", ["?!"]),
    ("The quick brown fox jumps over the lazy dog",
     ["A quick brown dog jumps over the lazy fox", "The fast brown fox leaps over the lazy dog"]),
]

BLEU_CONFIGS = [
    {},
    {"effective_order": True},
    {"smooth": "floor"},
    {"smooth": "floor", "smooth_value": 0.2},
    {"smooth": "add-k"},
    {"smooth": "add-k", "smooth_value": 0.5},
    {"smooth": "none"},
    {"smooth": "none", "effective_order": True},
    {"lowercase": True},
]

CHRF_CONFIGS = [
    {},
    {"word_order": 2},
    {"word_order": 1},
    {"lowercase": True},
    {"whitespace": True},
    {"eps_smoothing": True},
    {"word_order": 2, "eps_smoothing": True},
    {"char_order": 8, "word_order": 3, "beta": 3},
]

TOKENIZERS = ["13a", "intl", "zh", "char", "none"]


def inline_cases():
    """Cases with "edge_nrefs": n run on the shared edge corpus (EDGE_HYPS against
    the first n of EDGE_REFS_A / EDGE_REFS_B), written once as "edge_corpus"."""
    out = []
    refs2 = [EDGE_REFS_A, EDGE_REFS_B]
    for tok in TOKENIZERS:
        for cfg in BLEU_CONFIGS:
            c = dict(cfg, tokenize=tok)
            for nref in (1, 2):
                refs = refs2[:nref]
                out.append({"kind": "bleu", "level": "corpus", "config": c,
                            "edge_nrefs": nref,
                            "expected": corpus_case("bleu", EDGE_HYPS, refs, c)})
    # Each edge line alone as a one-line corpus: exercises empty hyps/refs etc.
    for i, (h, r) in enumerate(zip(EDGE_HYPS, EDGE_REFS_A)):
        for tok in ("13a", "intl", "zh"):
            c = {"tokenize": tok}
            out.append({"kind": "bleu", "level": "corpus", "config": c,
                        "hyps": [h], "refs": [[r]],
                        "expected": corpus_case("bleu", [h], [[r]], c)})
        out.append({"kind": "chrf", "level": "corpus", "config": {"word_order": 2},
                    "hyps": [h], "refs": [[r]],
                    "expected": corpus_case("chrf", [h], [[r]], {"word_order": 2})})
    # Case folding (Greek final sigma, dotted I, sharp s): upper-cased references.
    upper = [x.upper() for x in TOKENIZE_INPUTS]
    for tok in TOKENIZERS:
        c = {"tokenize": tok, "lowercase": True}
        out.append({"kind": "bleu", "level": "corpus", "config": c,
                    "hyps": TOKENIZE_INPUTS, "refs": [upper],
                    "expected": corpus_case("bleu", TOKENIZE_INPUTS, [upper], c)})
        c = {"tokenize": tok}
        out.append({"kind": "bleu", "level": "corpus", "config": c,
                    "hyps": TOKENIZE_INPUTS, "refs": [TOKENIZE_INPUTS[::-1]],
                    "expected": corpus_case("bleu", TOKENIZE_INPUTS, [TOKENIZE_INPUTS[::-1]], c)})
    for cfg in ({"lowercase": True}, {"lowercase": True, "word_order": 2}):
        out.append({"kind": "chrf", "level": "corpus", "config": cfg,
                    "hyps": TOKENIZE_INPUTS, "refs": [upper],
                    "expected": corpus_case("chrf", TOKENIZE_INPUTS, [upper], cfg)})
    for cfg in CHRF_CONFIGS:
        for nref in (1, 2):
            refs = refs2[:nref]
            out.append({"kind": "chrf", "level": "corpus", "config": cfg,
                        "edge_nrefs": nref,
                        "expected": corpus_case("chrf", EDGE_HYPS, refs, cfg)})
    # Sentence level: sacrebleu.sentence_bleu defaults (effective order on).
    sent_bleu_cfgs = [
        {"effective_order": True},
        {"effective_order": True, "smooth": "floor"},
        {"effective_order": True, "smooth": "add-k"},
        {"effective_order": True, "smooth": "none"},
        {"effective_order": False},
        {"effective_order": True, "tokenize": "zh"},
        {"effective_order": True, "tokenize": "intl", "lowercase": True},
        {"effective_order": True, "tokenize": "char"},
    ]
    for hyp, refs in SENTENCE_PAIRS:
        for cfg in sent_bleu_cfgs:
            out.append({"kind": "bleu", "level": "sentence", "config": cfg,
                        "hyp": hyp, "refs": refs,
                        "expected": sentence_case("bleu", hyp, refs, cfg)})
        for cfg in ({}, {"word_order": 2}):
            out.append({"kind": "chrf", "level": "sentence", "config": cfg,
                        "hyp": hyp, "refs": refs,
                        "expected": sentence_case("chrf", hyp, refs, cfg)})
    return out


def tokenize_cases():
    from sacrebleu.metrics.bleu import _get_tokenizer
    out = []
    for tok in TOKENIZERS:
        t = _get_tokenizer(tok)()
        for s in TOKENIZE_INPUTS:
            out.append({"tokenizer": tok, "input": s, "output": t(s)})
    return out


def random_cases(n_tok=200, n_sent=300, seed=7):
    """Random strings from an adversarial alphabet (entities, CJK, Unicode spaces
    and punctuation, digits with separators): tokenizer outputs and sentence
    BLEU / chrF under varying options."""
    import random
    from sacrebleu.metrics.bleu import _get_tokenizer
    rng = random.Random(seed)
    pool = (list("aAbBzZ09 .,-'\"&;<>!?()[]{}$%^*+=/\\|~`@#_:\t\n\r")
            + ["&quot;", "&amp;", "&lt;", "&gt;", "<skipped>", "-\n"]
            + list("éßİıΣσςΟ“”‘’«»—–…•€£¥©®™°±×÷²³½中文我爱。，、！？：；（）「」《》ｱｲＡＢ１２３"
                   "한글ひらカタ٣١،؟१।๑\u00a0\u3000\u2009\u200b\u2028\x1c\x1f\u0301\ufeff"
                   "😀☺★♥✈\u20c1\u2b96")
            + ["\U00010ed0", "\U00011de5", "\U0001F600", "\U00020000"])
    words = ["the", "cat", "sat", "on", "mat", "The", "Cat", "3,000.50", "1995-2000",
             "U.S.", "e.g.", "don't", "(hi)", "我", "爱", "北京", "a", "b"]

    def rnd():
        parts = []
        for _ in range(rng.randint(0, 30)):
            parts.append(rng.choice(words) if rng.random() < 0.5 else rng.choice(pool))
            if rng.random() < 0.4:
                parts.append(" ")
        return "".join(parts)

    toks = {t: _get_tokenizer(t)() for t in TOKENIZERS}
    tok_cases = []
    for _ in range(n_tok):
        s = rnd()
        tok_cases.append({"input": s, "outputs": {t: toks[t](s) for t in TOKENIZERS}})
    sent = []
    for i in range(n_sent):
        h = rnd()
        refs = [rnd()] if i % 2 else [rnd(), rnd()]
        bcfg = {"tokenize": TOKENIZERS[i % 5], "lowercase": i % 3 == 0,
                "smooth": ["exp", "floor", "add-k", "none"][i % 4], "effective_order": i % 7 != 0}
        ccfg = {"char_order": [6, 6, 3, 8][(i // 4) % 4], "word_order": [0, 2, 1, 5][i % 4],
                "lowercase": i % 3 == 0, "whitespace": i % 11 == 0, "eps_smoothing": i % 13 == 0}
        sent.append({"hyp": h, "refs": refs, "bleu_config": bcfg, "chrf_config": ccfg,
                     "bleu_hex": bleu_metric(bcfg).sentence_score(h, refs).score.hex(),
                     "chrf_hex": chrf_metric(ccfg).sentence_score(h, refs).score.hex()})
    return {"seed": seed, "tokenize": tok_cases, "sentence": sent}


# ---------------------------------------------------------------------------
# Cases on the real WMT files


def available(rel):
    return os.path.isfile(os.path.join(DATA, rel))


def hyp_file(pair, system):
    tgt = pair.split("-")[1]
    return f"{O22}/generaltest2022.{pair}.hyp.{system}.{tgt}"


def ref_file(pair):
    tgt = pair.split("-")[1]
    return f"{G22}/generaltest2022.{pair}.ref.A.{tgt}"


def file_case(kind, hyp_rel, ref_rels, cfg, hyps=None, hyp_transform=None):
    if hyps is None:
        hyps = read_lines(hyp_rel)
    refs = [read_lines(r) for r in ref_rels]
    rec = {"kind": kind, "level": "corpus", "config": cfg, "hyp": hyp_rel, "refs": ref_rels}
    if hyp_transform:
        rec["hyp_transform"] = hyp_transform
    rec["expected"] = corpus_case(kind, hyps, refs, cfg)
    return rec


def file_cases():
    out = []
    main_systems = [
        ("en-de", "JDExploreAcademy"),
        ("de-en", "LT22"),
        ("en-zh", "JDExploreAcademy"),
        ("zh-en", "Online-B"),
    ]
    for pair, system in main_systems:
        h, r = hyp_file(pair, system), ref_file(pair)
        for tok in TOKENIZERS:
            for lc in (False, True):
                cfg = {"tokenize": tok, "lowercase": lc}
                out.append(file_case("bleu", h, [r], cfg))
        for cfg in BLEU_CONFIGS[1:8]:
            c = dict(cfg, tokenize="zh" if pair.endswith("zh") else "13a")
            out.append(file_case("bleu", h, [r], c))
        for cfg in CHRF_CONFIGS:
            out.append(file_case("chrf", h, [r], cfg))
    # chrF and chrF++ of every WMT22 system output present.
    for fname in sorted(os.listdir(os.path.join(DATA, O22))):
        if ".hyp." not in fname:
            continue
        pair = fname.split(".")[1]
        for cfg in ({}, {"word_order": 2}):
            out.append(file_case("chrf", f"{O22}/{fname}", [ref_file(pair)], cfg))
    # Two references: reference A plus another system's output.
    out.append(file_case("bleu", hyp_file("en-de", "JDExploreAcademy"),
                         [ref_file("en-de"), hyp_file("en-de", "Online-B")], {}))
    out.append(file_case("bleu", hyp_file("en-zh", "HuaweiTSC"),
                         [ref_file("en-zh"), hyp_file("en-zh", "Online-B")], {"tokenize": "zh"}))
    out.append(file_case("chrf", hyp_file("de-en", "PROMT"),
                         [ref_file("de-en"), hyp_file("de-en", "Online-B")], {"word_order": 2}))
    # newstest2014 en-de (3,003 lines) against its perturbation, as in the bench.
    ref = "wmt/newstest2014.en-de.de"
    hyps = [perturb(x) for x in read_lines(ref)]
    for kind, cfg in (("bleu", {}), ("chrf", {}), ("chrf", {"word_order": 2})):
        out.append(file_case(kind, ref, [ref], cfg, hyps=hyps, hyp_transform="perturb"))
    return out


def file_tokenize_hashes():
    """FNV-1a 64 of '\\n'.join(tokenized lines) of whole files, per tokenizer."""
    from sacrebleu.metrics.bleu import _get_tokenizer
    out = []
    files = [ref_file("en-de"), ref_file("en-zh"), ref_file("zh-en"),
             hyp_file("en-zh", "Online-B"), "wmt/newstest2014.en-fr.fr",
             "wmt/generaltest2022/generaltest2022.zh-en.zh"]
    for rel in files:
        lines = read_lines(rel)
        for tok in TOKENIZERS:
            t = _get_tokenizer(tok)()
            toks = [t(x.rstrip()) for x in lines]
            out.append({"file": rel, "tokenizer": tok, "lines": len(lines),
                        "fnv1a64": fnv1a64("\n".join(toks))})
    return out


def sentence_file_cases():
    """Sentence BLEU / chrF of the first 40 lines of a real system output."""
    out = []
    for pair, system in (("en-de", "Online-B"), ("en-zh", "LanguageX")):
        hyps = read_lines(hyp_file(pair, system))[:40]
        refs = read_lines(ref_file(pair))[:40]
        tok = "zh" if pair.endswith("zh") else "13a"
        bleu = BLEU(tokenize=tok, effective_order=True)
        chrf = CHRF()
        out.append({
            "hyp": hyp_file(pair, system), "ref": ref_file(pair), "lines": 40,
            "tokenize": tok,
            "bleu_hex": [bleu.sentence_score(h, [r]).score.hex() for h, r in zip(hyps, refs)],
            "chrf_hex": [chrf.sentence_score(h, [r]).score.hex() for h, r in zip(hyps, refs)],
        })
    return out


def wmt22_rows():
    rows, seen = [], set()
    with open(os.path.join(DATA, O22, "automatic-scores.tsv"), encoding="utf-8") as f:
        next(f)
        for line in f:
            p = line.rstrip("\n").split("\t")
            if len(p) < 6 or p[4] != "bleu-A" or (p[0], p[1]) in seen:
                continue
            seen.add((p[0], p[1]))
            pair, system = p[0], p[1]
            if not (available(hyp_file(pair, system)) and available(ref_file(pair))):
                continue
            tok = "zh" if pair.endswith("-zh") else "13a"
            m = BLEU(tokenize=tok)
            s = m.corpus_score(read_lines(hyp_file(pair, system)), [read_lines(ref_file(pair))])
            rows.append({"pair": pair, "system": system, "published": float(p[5]),
                         "score": s.score, "score_hex": float(s.score).hex(),
                         "signature": m.get_signature().format()})
    return rows


def dump_one_case_per_line(doc):
    """JSON with one case per line: compact, yet diffs stay readable."""
    def one(v):
        return json.dumps(v, ensure_ascii=False, separators=(",", ":"))

    def block(v, indent):
        pad = " " * indent
        if isinstance(v, list):
            if not v:
                return "[]"
            return "[\n" + ",\n".join(pad + " " + one(x) for x in v) + "\n" + pad + "]"
        if isinstance(v, dict) and any(isinstance(x, (list, dict)) for x in v.values()):
            items = [f"{pad} {json.dumps(k)}: {block(x, indent + 1)}" for k, x in v.items()]
            return "{\n" + ",\n".join(items) + "\n" + pad + "}"
        return one(v)

    return block(doc, 0) + "\n"


def generate():
    if not os.path.isdir(DATA):
        sys.exit(f"{DATA} not found")
    doc = {
        "generator": "tools/eval_reference_bleu.py",
        "sacrebleu_version": sacrebleu.__version__,
        "python_version": platform.python_version(),
        "data_root": "../shared/data (relative to the repository root)",
        "tokenize": tokenize_cases(),
        "edge_corpus": {"hyps": EDGE_HYPS, "refs": [EDGE_REFS_A, EDGE_REFS_B]},
        "inline": inline_cases(),
        "random": random_cases(),
        "files": file_cases(),
        "file_tokenize_hashes": file_tokenize_hashes(),
        "sentence_files": sentence_file_cases(),
        "wmt22": wmt22_rows(),
    }
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w", encoding="utf-8") as f:
        f.write(dump_one_case_per_line(doc))
    bad = [r for r in doc["wmt22"] if f"{r['score']:.2f}" != f"{r['published']:.2f}"]
    print(f"wrote {OUT}: {len(doc['tokenize'])} tokenizer, {len(doc['inline'])} inline, "
          f"{len(doc['files'])} file cases, {len(doc['wmt22'])} WMT22 rows "
          f"({len(bad)} differ from the published bleu-A at 2 decimals)")


def time_mode(repeats):
    ref = read_lines("wmt/newstest2014.en-de.de")
    hyps = [perturb(x) for x in ref]
    refs = [ref]
    print(f"sacreBLEU {sacrebleu.__version__}, Python {platform.python_version()}, "
          f"newstest2014 en-de ({len(hyps)} lines, perturbed vs reference)")
    for name, make in (("corpus BLEU (13a)", lambda: BLEU(force=True)),
                       ("corpus chrF", lambda: CHRF()),
                       ("corpus chrF++", lambda: CHRF(word_order=2))):
        times = []
        for _ in range(repeats):
            # A fresh metric each run: sacreBLEU's tokenizers memoize lines per
            # instance, and a warm cache would time nothing.
            m = make()
            t0 = time.perf_counter()
            s = m.corpus_score(hyps, refs)
            times.append(time.perf_counter() - t0)
        print(f"  {name:18s} median {statistics.median(times) * 1e3:8.1f} ms  "
              f"min {min(times) * 1e3:8.1f} ms  ({repeats} runs)  -> {s}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--time", action="store_true", help="time sacreBLEU instead of writing the JSON")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    if args.time:
        time_mode(args.repeats)
    else:
        generate()


if __name__ == "__main__":
    main()
