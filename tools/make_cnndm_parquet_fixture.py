"""Writes tests/fixtures/datasets/cnn_dailymail-3.0.0-test.parquet.

A stand-in for the Hugging Face hub file `abisee/cnn_dailymail`
`3.0.0/test-00000-of-00001.parquet`: the same columns (`article`, `highlights`, `id`)
and the registry's 11,490 rows, but short synthetic text the tiny fixture checkpoints
handle, so that it stays a few KB (dictionary encoding, snappy). tests/table_cli.rs
lays it out in a temporary Hugging Face cache to test `encdec eval`'s hub lookup.

    pip install pyarrow && python tools/make_cnndm_parquet_fixture.py
"""

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

# The same sentences tests/eval_cli.rs cycles over.
SENTENCES = [
    "the small house",
    "the large house",
    "Every child should learn to read a good book.",
    "the dog ran home",
    "the people of the small town walk along the river.",
    "yes",
    "the water is warm and the light is good.",
]

ROWS = 11490


def main() -> None:
    n = len(SENTENCES)
    articles = [f"{SENTENCES[i % n]} {SENTENCES[(i + 3) % n]}" for i in range(ROWS)]
    # Two highlight sentences, newline-separated, as the hub's highlights are.
    highlights = [f"{SENTENCES[i % n]}\n{SENTENCES[(i + 1) % n]}" for i in range(ROWS)]
    # Ids repeat every 7 rows (real ids are unique SHA-1s; unique ones would not compress).
    ids = [f"id{i % n}" for i in range(ROWS)]
    table = pa.table(
        {
            "article": pa.array(articles, pa.string()),
            "highlights": pa.array(highlights, pa.string()),
            "id": pa.array(ids, pa.string()),
        }
    )
    out = Path(__file__).resolve().parent.parent / "tests/fixtures/datasets"
    out.mkdir(parents=True, exist_ok=True)
    path = out / "cnn_dailymail-3.0.0-test.parquet"
    pq.write_table(table, path, compression="snappy", use_dictionary=True)
    print(f"wrote {path} ({path.stat().st_size} bytes, {ROWS} rows)")


if __name__ == "__main__":
    main()
