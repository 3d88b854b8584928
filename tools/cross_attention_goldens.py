#!/usr/bin/env python3
"""Cross-attention goldens for `Seq2SeqModel::cross_attention` (`--attention-map`).

For every fixture in tests/fixtures/<arch>/ and its "medium" case: the source ids,
the greedy sequence of golden.json (decoder start token first) teacher-forced as
`decoder_input_ids`, and the `cross_attentions` transformers returns with
`output_attentions=True` for decoder layer 0 and the last layer, head by head.

Writes tests/fixtures/<arch>/cross_attention.json:
  {"versions": {...}, "case": "medium", "input_ids": [...], "decoder_input_ids": [...],
   "layers": {"0": [[[...S]...T]...H], "<last>": ...}}

Run from the repository root (offline, CPU): python tools/cross_attention_goldens.py
"""

import json
import os
import sys
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"

import torch  # noqa: E402
import transformers  # noqa: E402
from transformers import AutoModelForSeq2SeqLM  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ["t5", "t5-v1_1", "mt5", "bart", "mbart", "pegasus", "marian", "m2m100"]


def main():
    for name in FIXTURES:
        d = ROOT / "tests" / "fixtures" / name
        golden = json.loads((d / "golden.json").read_text())
        case = next(c for c in golden["cases"] if c["name"] == "medium")
        model = AutoModelForSeq2SeqLM.from_pretrained(d, dtype=torch.float32, attn_implementation="eager").eval()
        src = case["input_ids"]
        tgt = case["greedy"]["sequences"]
        with torch.no_grad():
            out = model(
                input_ids=torch.tensor([src]),
                attention_mask=torch.ones(1, len(src), dtype=torch.long),
                decoder_input_ids=torch.tensor([tgt]),
                output_attentions=True,
            )
        n = len(out.cross_attentions)
        layers = {str(i): out.cross_attentions[i][0].tolist() for i in sorted({0, n - 1})}
        doc = {
            "versions": {"transformers": transformers.__version__, "torch": torch.__version__},
            "case": "medium",
            "input_ids": src,
            "decoder_input_ids": tgt,
            "num_layers": n,
            "layers": layers,
        }
        (d / "cross_attention.json").write_text(json.dumps(doc) + "\n")
        print(f"{name}: {n} decoder layers, target {len(tgt)} x source {len(src)}", file=sys.stderr)


if __name__ == "__main__":
    main()
