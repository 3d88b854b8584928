"""Writes tests/fixtures/datasets/wmt14-de-en-test.parquet.

A stand-in for the Hugging Face hub file `wmt/wmt14` `de-en/test-00000-of-00001.parquet`
(newstest2014, 3,003 rows): the same single column, `translation`, a struct with one
string field per language code (`de`, `en`, in the sorted order `datasets`'
`Translation` feature writes them), and the registry's 3,003 rows, but short synthetic
text the tiny fixture checkpoints handle, so that it stays a few KB (dictionary
encoding, snappy). The rows are the ones tests/eval_cli.rs writes as
newstest2014.en-de.{en,de}: the English side cycles over the test sentences; the German
side is the English sentence on even rows and a German one on odd rows (so a reader that
swaps the fields is caught). tests/table_cli.rs and src/hub.rs lay it out in a
temporary Hugging Face cache, or serve it from a stand-in hub, to test `encdec eval`'s
hub lookup for WMT; eval/src/datasets.rs reads it in a unit test.

    pip install pyarrow && python tools/make_wmt_parquet_fixture.py
"""

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

# The same sentences tests/common/mod.rs cycles over.
SENTENCES = [
    "the small house",
    "the large house",
    "Every child should learn to read a good book.",
    "the dog ran home",
    "the people of the small town walk along the river.",
    "yes",
    "the water is warm and the light is good.",
]

# German for the odd rows (one with a non-ASCII letter).
GERMAN = [
    "das kleine Haus",
    "das große Haus",
    "der Hund lief nach Hause",
]

ROWS = 3003


def main() -> None:
    n = len(SENTENCES)
    en = [SENTENCES[i % n] for i in range(ROWS)]
    de = [SENTENCES[i % n] if i % 2 == 0 else GERMAN[(i // 2) % len(GERMAN)] for i in range(ROWS)]
    translation = pa.StructArray.from_arrays(
        [pa.array(de, pa.string()), pa.array(en, pa.string())], names=["de", "en"]
    )
    table = pa.table({"translation": translation})
    out = Path(__file__).resolve().parent.parent / "tests/fixtures/datasets"
    out.mkdir(parents=True, exist_ok=True)
    path = out / "wmt14-de-en-test.parquet"
    pq.write_table(table, path, compression="snappy", use_dictionary=True)
    print(f"wrote {path} ({path.stat().st_size} bytes, {ROWS} rows)")


if __name__ == "__main__":
    main()
