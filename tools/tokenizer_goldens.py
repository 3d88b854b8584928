#!/usr/bin/env python3
"""Expected ids of the REAL tokenizers in ../shared/data/tokenizers/, as `transformers` gives them.

Writes tests/fixtures/tokenizers/expected.json.  For every tokenizer directory and every
sentence: the ids of `tok(text, add_special_tokens=True)` and
`tok.decode(ids, skip_special_tokens=True)` (default clean_up_tokenization_spaces of that
tokenizer), plus the decode with the special tokens kept.  Sentences: lines of the WMT14 and
CNN/DailyMail files in ../shared/data (only the text of the chosen lines is stored, with the
file and line number it came from) and hand-written edge cases.

    HF_HUB_OFFLINE=1 python3 tools/tokenizer_goldens.py [--data ../shared/data]

Offline only: every tokenizer is loaded from its local directory.  The Whisper assets there
are the pre-tiktoken GPT-2-format files with a prefix in their names (multilingual.vocab.json
...); they are copied to a temporary directory under the standard names and loaded with the
class their tokenizer_config.json names (GPT2Tokenizer), which adds no special tokens.
"""

import argparse
import json
import os
import platform
import shutil
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import tokenizers  # noqa: E402
import transformers  # noqa: E402
from tokenizers import Tokenizer  # noqa: E402
from transformers import AutoTokenizer, GPT2Tokenizer  # noqa: E402

transformers.logging.set_verbosity_error()

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_DATA = os.path.join(os.path.dirname(REPO), "shared", "data")
OUT = os.path.join(REPO, "tests", "fixtures", "tokenizers", "expected.json")

# (file relative to the data dir, 1-based line numbers)
DATA_LINES = [
    ("wmt/newstest2014.en-de.en", [1, 2, 3, 100, 1000, 1500, 2222, 3003]),
    ("wmt/newstest2014.en-de.de", [1, 2, 3, 100, 1000, 1500, 2222, 3003]),
    ("cnndm/outputs/brio.cnndm.test.ref.cased", [1, 2, 3, 500, 11490]),
]

EDGE_CASES = [
    ("empty", ""),
    ("space", " "),
    ("whitespace_only", " \t  \n "),
    ("multiple_spaces", "several   spaces   between    words  and trailing  "),
    ("newline_tab", "line one\nline two\tafter a tab"),
    ("accents", "naïve café résumé Ångström Zürich Straße São Paulo Đặng"),
    ("cjk", "日本語のテキストと中文测试，还有한국어 문장。"),
    ("emoji", "emoji 😀👍🏽 family 👨‍👩‍👧 flag 🇩🇪 end"),
    ("numbers", "Numbers: 3.14159, 1,000,000 and 2024-06-11 at 10:30pm; $5.99 or €4,50 (50%)."),
    ("compat_chars", "ﬁnancial ｆｕｌｌ-ｗｉｄｔｈ ①②③ … x\u00a0y \u2028 ™ ½"),
    ("contractions", "Don't do it, won't you? It's John's book -- isn't it?!"),
    ("punct_spacing", "Hello , world ! Is it ok ? Yes . ( maybe ) ' quoted ' \" double \""),
    ("special_literals", "text with </s> and <pad> and <unk> and <mask> and <extra_id_0> inside"),
]
LONG_FROM = ("cnndm/outputs/brio.cnndm.test.ref.cased", [10, 11, 12, 13, 14, 15, 16, 17])

TOKENIZERS = ["t5-small", "bart-large-cnn", "pegasus", "whisper-multilingual", "whisper-gpt2"]


def read_lines(path):
    with open(path, encoding="utf-8") as f:
        return f.read().split("\n")


def sentences(data):
    out = []
    for rel, nums in DATA_LINES:
        lines = read_lines(os.path.join(data, rel))
        for n in nums:
            out.append({"name": "%s:%d" % (rel, n), "source": {"file": rel, "line": n},
                        "text": lines[n - 1]})
    for name, text in EDGE_CASES:
        out.append({"name": name, "source": None, "text": text})
    rel, nums = LONG_FROM
    lines = read_lines(os.path.join(data, rel))
    long_text = " ".join(lines[n - 1].strip() for n in nums)
    out.append({"name": "very_long", "source": {"file": rel, "lines": nums, "joined_with": " ",
                                                 "each_stripped": True},
                "text": long_text})
    return out


def load(name, data, tmp):
    base = os.path.join(data, "tokenizers")
    if name.startswith("whisper-"):
        prefix = name.split("-", 1)[1]
        d = os.path.join(tmp, name)
        os.makedirs(d)
        src = os.path.join(base, "whisper")
        for fn in ("vocab.json", "merges.txt", "added_tokens.json", "special_tokens_map.json",
                   "tokenizer_config.json"):
            p = os.path.join(src, "%s.%s" % (prefix, fn))
            if os.path.exists(p):
                shutil.copy(p, os.path.join(d, fn))
        files = sorted("%s.%s" % (prefix, f) for f in ("vocab.json", "merges.txt", "added_tokens.json",
                                                        "special_tokens_map.json", "tokenizer_config.json")
                       if os.path.exists(os.path.join(src, "%s.%s" % (prefix, f))))
        return GPT2Tokenizer.from_pretrained(d), "whisper", files, None
    d = os.path.join(base, name)
    tj = os.path.join(d, "tokenizer.json")
    raw = Tokenizer.from_file(tj) if os.path.exists(tj) else None
    return AutoTokenizer.from_pretrained(d), name, sorted(os.listdir(d)), raw


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=DEFAULT_DATA)
    ap.add_argument("--out", default=OUT)
    args = ap.parse_args()
    sents = sentences(args.data)
    result = {
        "versions": {"transformers": transformers.__version__, "tokenizers": tokenizers.__version__,
                     "python": platform.python_version()},
        "call": "ids = tok(text, add_special_tokens=True).input_ids; "
                "decoded = tok.decode(ids, skip_special_tokens=True); "
                "decoded_with_special = tok.decode(ids, skip_special_tokens=False)",
        "sentences": [{k: s[k] for k in ("name", "source", "text")} for s in sents],
        "tokenizers": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        for name in TOKENIZERS:
            tok, dirname, files, raw = load(name, args.data, tmp)
            entries = []
            n_ids_diff = n_dec_diff = 0
            for s in sents:
                ids = tok(s["text"], add_special_tokens=True).input_ids
                e = {
                    "ids": ids,
                    "decoded": tok.decode(ids, skip_special_tokens=True),
                    "decoded_with_special": tok.decode(ids, skip_special_tokens=False),
                }
                if raw is not None:
                    # what the `tokenizers` library alone makes of tokenizer.json (the Rust
                    # side reads that file): recorded only where it differs from transformers
                    rids = raw.encode(s["text"], add_special_tokens=True).ids
                    if rids != ids:
                        e["ids_tokenizer_json"] = rids
                        n_ids_diff += 1
                    rdec = raw.decode(ids, skip_special_tokens=True)
                    if rdec != e["decoded"]:
                        e["decoded_tokenizer_json"] = rdec
                        n_dec_diff += 1
                entries.append(e)
            result["tokenizers"][name] = {
                "dir": "tokenizers/" + dirname,
                "files": files,
                "class": type(tok).__name__,
                "len": len(tok),
                "clean_up_tokenization_spaces": getattr(tok, "clean_up_tokenization_spaces", None),
                "special_ids": {"bos": tok.bos_token_id, "eos": tok.eos_token_id,
                                "pad": tok.pad_token_id, "unk": tok.unk_token_id},
                "tokenizer_json": raw is not None,
                "n_ids_differ_from_tokenizer_json": n_ids_diff if raw is not None else None,
                "n_decoded_differ_from_tokenizer_json": n_dec_diff if raw is not None else None,
                "results": entries,
            }
            print("%-22s %-22s len %6d  %d sentences, %d ids; vs tokenizer.json: ids differ %s, "
                  "decoded differ %s" % (name, type(tok).__name__, len(tok), len(entries),
                                         sum(len(e["ids"]) for e in entries),
                                         n_ids_diff if raw else "-", n_dec_diff if raw else "-"))
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    # one sentence / result per line: compact and diffable
    def comp(v):
        return json.dumps(v, ensure_ascii=False, separators=(",", ":"))
    lines = ["{"]
    lines.append(' "versions": %s,' % comp(result["versions"]))
    lines.append(' "call": %s,' % comp(result["call"]))
    lines.append(' "sentences": [\n  ' + ",\n  ".join(comp(s) for s in result["sentences"]) + "\n ],")
    lines.append(' "tokenizers": {')
    tparts = []
    for name, t in result["tokenizers"].items():
        head = {k: v for k, v in t.items() if k != "results"}
        body = ",\n    ".join(comp(e) for e in t["results"])
        tparts.append('  %s: {\n   "info": %s,\n   "results": [\n    %s\n   ]\n  }' % (
            json.dumps(name), comp(head), body))
    lines.append(",\n".join(tparts))
    lines.append(" }")
    lines.append("}")
    with open(args.out, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    json.load(open(args.out, encoding="utf-8"))  # must parse
    print("wrote %s (%.1f KB)" % (args.out, os.path.getsize(args.out) / 1024))


if __name__ == "__main__":
    main()
