"""Tables in chunks: every format, exact chunk sizes, one set of columns, errors that name the line."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from model.tabular import DataError, TableWriter, iter_table, read_table

FRAME = pd.DataFrame({"id": [f"{i:03d}" for i in range(10)], "text": [f"text {i}" for i in range(10)]})


def test_parquet_row_groups_are_regrouped_into_exact_chunks(tmp_path: Path) -> None:
    path = tmp_path / "in.parquet"
    pq.write_table(pa.Table.from_pandas(FRAME, preserve_index=False), path, row_group_size=3)
    assert [len(c) for c in iter_table(path, chunk_rows=4)] == [4, 4, 2]
    pd.testing.assert_frame_equal(pd.concat(iter_table(path, chunk_rows=4), ignore_index=True), FRAME)


def test_csv_chunks_keep_cells_as_text(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    FRAME.to_csv(path, index=False)
    chunks = list(iter_table(path, chunk_rows=4))
    assert [len(c) for c in chunks] == [4, 4, 2] and chunks[0]["id"].tolist()[:2] == ["000", "001"]
    pd.testing.assert_frame_equal(read_table(path), FRAME)


def test_jsonl_chunks_share_the_columns_of_the_whole_file(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    rows = [{"text": "a"}, {"text": "b"}, {"text": "c", "extra": 1}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + "\n")  # a blank last line is fine
    chunks = list(iter_table(path, chunk_rows=2))
    assert [list(c.columns) for c in chunks] == [["text", "extra"]] * 2
    assert [len(c) for c in chunks] == [2, 1]


def test_undecodable_bytes_name_their_line_while_streaming(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_bytes(b"text\nok\nfine\ncaf\xe9\n")
    with pytest.raises(DataError, match=r"line 4: bytes not valid utf-8"):
        list(iter_table(path, chunk_rows=1))
    assert read_table(path, encoding="latin-1")["text"].tolist() == ["ok", "fine", "café"]


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl", ".parquet"])
def test_the_writer_appends_chunks_into_one_file(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"out{suffix}"
    with TableWriter(path, suffix) as writer:
        for start in range(0, len(FRAME), 4):
            writer.write(FRAME.iloc[start : start + 4])
    assert writer.rows == len(FRAME)
    pd.testing.assert_frame_equal(read_table(path).astype(str), FRAME.astype(str))


def test_unknown_missing_and_empty_files(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"unknown file type '\.xlsx'"):
        read_table(tmp_path / "a.xlsx")
    with pytest.raises(DataError, match="file not found"):
        read_table(tmp_path / "a.csv")
    (tmp_path / "b.csv").write_text("")
    with pytest.raises(DataError, match="the file is empty"):
        read_table(tmp_path / "b.csv")
