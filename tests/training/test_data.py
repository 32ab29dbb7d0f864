"""Loading labelled files, the errors that name file, row and problem, and stratified splits."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from training.data import (
    DataError,
    Dataset,
    deduplicate,
    label_names,
    load_dataset,
    rating_label,
    read_rated,
    stratified_split,
)

TEXTS = ["I love it", "hello, world", "007", "worst day ever"]
LABELS = ["pos", "neutral", "neutral", "neg"]


def write(path: Path, texts: list, labels: list, **columns: list) -> Path:
    """Write rows as CSV, TSV, JSONL or Parquet, chosen by the suffix."""
    frame = pd.DataFrame({"text": texts, "label": labels, **columns})
    if path.suffix == ".parquet":
        frame.to_parquet(path)
    elif path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in frame.to_dict("records")))
    else:
        frame.to_csv(path, sep="\t" if path.suffix == ".tsv" else ",", index=False)
    return path


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl", ".parquet"])
def test_each_format_with_string_labels(tmp_path: Path, suffix: str) -> None:
    data = load_dataset(write(tmp_path / f"data{suffix}", TEXTS, LABELS))
    assert data.texts == TEXTS  # "007" stays text, commas survive
    assert data.labels == LABELS
    assert data.source == str(tmp_path / f"data{suffix}")
    assert len(data) == 4


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_integer_labels_become_names(tmp_path: Path, suffix: str) -> None:
    data = load_dataset(write(tmp_path / f"data{suffix}", TEXTS, [1, 0, 0, 2]))
    assert data.labels == ["1", "0", "0", "2"]


def test_float_integer_labels_and_stripped_strings(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    path.write_text('{"text": "a", "label": 1.0}\n\n{"text": "b", "label": " pos "}\n')
    assert load_dataset(path).labels == ["1", "pos"]


def test_custom_columns_and_encoding(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    path.write_bytes("review,stars\ncafé crème,5\n".encode("latin-1"))
    data = load_dataset(path, text_column="review", label_column="stars", encoding="latin-1")
    assert data.texts == ["café crème"] and data.labels == ["5"]


def error(path: Path, **kwargs: str) -> str:
    with pytest.raises(DataError) as info:
        load_dataset(path, **kwargs)
    message = str(info.value)
    assert message.startswith(str(path)), message
    return message


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_missing_column(tmp_path: Path, suffix: str) -> None:
    path = write(tmp_path / f"data{suffix}", TEXTS, LABELS)
    message = error(path, label_column="sentiment")
    assert "no column 'sentiment'; columns are text, label" in message


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_empty_file(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"data{suffix}"
    path.write_text("")
    assert error(path).endswith("the file is empty")


@pytest.mark.parametrize(("suffix", "content"), [(".csv", "text,label\n"), (".jsonl", "\n\n")])
def test_header_only_file(tmp_path: Path, suffix: str, content: str) -> None:
    path = tmp_path / f"data{suffix}"
    path.write_text(content)
    assert error(path).endswith("no data rows")


def test_header_only_parquet(tmp_path: Path) -> None:
    path = write(tmp_path / "data.parquet", [], [])
    assert error(path).endswith("no data rows")


def test_one_class_only(tmp_path: Path) -> None:
    data = load_dataset(write(tmp_path / "data.csv", ["a", "b"], ["pos", "pos"]))
    with pytest.raises(
        DataError, match=r"data\.csv: only one class \('pos'\); a classifier needs at least two"
    ):
        label_names(data.labels, data.source)


def test_non_string_text_in_jsonl(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    path.write_text('{"text": "fine", "label": 1}\n{"text": 5, "label": 2}\n')
    assert error(path) == f"{path}, row 2: text must be a string, got int 5"


def test_non_string_text_in_parquet(tmp_path: Path) -> None:
    path = write(tmp_path / "data.parquet", [1, 2], ["a", "b"])
    assert error(path) == f"{path}, row 1: text must be a string, got int 1"


def test_null_text_in_parquet(tmp_path: Path) -> None:
    path = write(tmp_path / "data.parquet", ["a", None], ["x", "y"])
    assert error(path).startswith(f"{path}, row 2: text must be a string")


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_null_labels(tmp_path: Path, suffix: str) -> None:
    path = write(tmp_path / f"data{suffix}", ["a", "b", "c"], ["x", "y", None])
    assert f"{path}, row 3: label is missing" in error(path)


def test_empty_label_cell_in_csv(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    path.write_text("text,label\nfine,pos\nno label,\n")
    assert error(path).startswith(f"{path}, row 2: label must be a string or an integer")


def test_empty_text_cell_in_csv(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    path.write_text('text,label\n"  ",pos\n')
    assert error(path) == f"{path}, row 1: text is empty"


def test_boolean_labels_are_rejected(tmp_path: Path) -> None:
    path = write(tmp_path / "data.jsonl", ["a", "b"], [True, False])
    assert f"{path}, row 1: label is missing or not a string/integer: True" in error(path)


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_undecodable_bytes_name_the_line(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"data{suffix}"
    lines = (
        [b"text,label", b"fine,pos", b"caf\xe9,neg"]
        if suffix == ".csv"
        else [b'{"text": "fine", "label": "pos"}', b'{"text": "caf\xe9", "label": "neg"}']
    )
    path.write_bytes(b"\n".join(lines) + b"\n")
    message = error(path)
    assert message.startswith(f"{path}, line {len(lines)}: bytes not valid utf-8")
    assert "--encoding" in message


def test_invalid_json_line(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    path.write_text('{"text": "a", "label": 1}\n\n{oops\n')
    assert error(path).startswith(f"{path}, line 3: invalid JSON")


def test_json_line_that_is_not_an_object(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    path.write_text("[1, 2]\n")
    assert error(path) == f"{path}, line 1: expected a JSON object, got [1, 2]"


def test_json_strings_may_hold_unicode_line_separators(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    path.write_text(json.dumps({"text": "one\u2028two", "label": "a"}, ensure_ascii=False) + "\n")
    assert load_dataset(path).texts == ["one\u2028two"]


def test_unreadable_csv(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    path.write_text('text,label\n"never closed,1\n')
    assert "not a readable CSV file" in error(path)


def test_unreadable_parquet(tmp_path: Path) -> None:
    path = tmp_path / "data.parquet"
    path.write_text("not parquet at all")
    assert "not a readable Parquet file" in error(path)


def test_unknown_suffix(tmp_path: Path) -> None:
    path = tmp_path / "data.txt"
    path.write_text("text,label\na,b\n")
    assert error(path) == f"{path}: unknown file type '.txt'; use .csv, .tsv, .jsonl or .parquet"


def test_missing_file(tmp_path: Path) -> None:
    assert error(tmp_path / "absent.csv").endswith("file not found")


def test_label_names_sort_integers_numerically() -> None:
    assert label_names(["10", "2", "-1", "2"]) == ["-1", "2", "10"]
    assert label_names(["pos", "neg", "neutral"]) == ["neg", "neutral", "pos"]


def test_deduplicate_keeps_the_first_of_each_text() -> None:
    data = Dataset(["Hello  world", "other", "hello world", "OTHER"], ["a", "b", "c", "d"], "src")
    kept = deduplicate(data)
    assert kept.texts == ["Hello  world", "other"] and kept.labels == ["a", "b"]
    assert kept.source == "src"


def test_stratified_split_keeps_class_proportions() -> None:
    labels = ["a"] * 100 + ["b"] * 50 + ["c"] * 10
    parts = stratified_split(labels, [0.8, 0.1, 0.1], seed=0)
    counts = [Counter(labels[i] for i in part) for part in parts]
    assert counts == [{"a": 80, "b": 40, "c": 8}, {"a": 10, "b": 5, "c": 1}, {"a": 10, "b": 5, "c": 1}]
    everything = np.concatenate(parts)
    assert sorted(everything.tolist()) == list(range(len(labels)))  # disjoint and complete


def test_stratified_split_is_deterministic_per_seed() -> None:
    labels = ["a", "b"] * 30
    first, again = stratified_split(labels, [0.5, 0.5], 7), stratified_split(labels, [0.5, 0.5], 7)
    other = stratified_split(labels, [0.5, 0.5], 8)
    assert all(np.array_equal(x, y) for x, y in zip(first, again, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(first, other, strict=True))


def test_grouped_split_keeps_each_document_on_one_side() -> None:
    # 40 documents of 5 sentences each in one domain, 200 single tweets in another.
    groups = [f"d{k // 5}" for k in range(200)] + [f"t{k}" for k in range(200)]
    domains = ["reviews"] * 200 + ["tweets"] * 200
    labels = ["pos", "neg"] * 200
    parts = stratified_split(labels, [0.8, 0.1, 0.1], 3, groups, domains)
    sides = [{groups[i] for i in part} for part in parts]
    assert not (sides[0] & sides[1]) and not (sides[0] & sides[2]) and not (sides[1] & sides[2])
    assert sorted(np.concatenate(parts).tolist()) == list(range(400))
    for part, share in zip(parts, [0.8, 0.1, 0.1], strict=True):
        for domain in ("reviews", "tweets"):  # every domain is divided in the same proportions
            assert sum(domains[i] == domain for i in part) == round(200 * share)


def test_rated_sentences_get_labels_by_the_neutral_band_and_groups_by_document(tmp_path: Path) -> None:
    path = tmp_path / "rated.tsv"
    path.write_text("1_1\t2.5\tgreat phone.\r\n1_2\t-0.4\tit is black.\r\n2_1\t-1.2\tit broke\r\n\r\n")
    data = read_rated(path, "amazon")
    assert data.texts == ["great phone.", "it is black.", "it broke"]
    assert data.labels == ["positive", "neutral", "negative"]
    assert data.groups == ["1", "1", "2"]
    assert data.domains == ["amazon"] * 3
    assert [rating_label(r) for r in (0.5, 0.51, -0.5, -0.51)] == [
        "neutral",
        "positive",
        "neutral",
        "negative",
    ]


def test_a_malformed_rated_line_names_its_line(tmp_path: Path) -> None:
    path = tmp_path / "rated.tsv"
    path.write_text("1_1\t2.5\tfine\n1_2\tnot-a-number\toops\n")
    with pytest.raises(DataError, match=r"rated.tsv, line 2"):
        read_rated(path, "nyt")


def test_concat_and_domain_keep_groups_and_domains_aligned() -> None:
    a = Dataset(["x", "y"], ["pos", "neg"], "a", ["1", "1"], ["amazon", "amazon"])
    b = Dataset(["z"], ["pos"], "b", ["1"], ["nyt"])
    both = Dataset.concat([a, b], "both")
    assert both.texts == ["x", "y", "z"] and both.domains == ["amazon", "amazon", "nyt"]
    assert both.domain("nyt").texts == ["z"]
    assert both.subset([2, 0]).groups == ["1", "1"]


def test_a_group_column_gives_each_row_its_document(tmp_path: Path) -> None:
    path = write(tmp_path / "d.csv", TEXTS, LABELS, doc=[7, 7, 8, 9])
    assert load_dataset(path, group_column="doc").groups == ["7", "7", "8", "9"]
    with pytest.raises(DataError, match="no column 'review'"):
        load_dataset(path, group_column="review")
