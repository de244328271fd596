"""Reading and validating data sources from real files."""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Sequence
from pathlib import Path

import pytest

from scaimind.coordinator.worker.datasets import (
    DataFormatError,
    load_texts,
    split_texts,
)
from scaimind.coordinator.worker.source_check import validate_source


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def _jsonl(path: Path, records: Sequence[object]) -> Path:
    return _write(path, "".join(json.dumps(r) + "\n" for r in records))


def test_good_jsonl(tmp_path: Path) -> None:
    path = _jsonl(
        tmp_path / "sft.jsonl",
        [{"prompt": "Hi", "completion": "Hello"}, {"messages": [{"role": "user", "content": "x"}]}],
    )

    report = validate_source(path, "", "SFT", 0)

    assert report.valid, report.errors
    assert report.format == "jsonl"
    assert report.num_rows == 2
    assert report.size_bytes == path.stat().st_size
    assert report.columns == ["prompt", "completion", "messages"]
    assert report.errors == []
    assert report.warnings == []


def test_json_list_and_data_object(tmp_path: Path) -> None:
    records = [{"prompt": "p", "chosen": "a", "rejected": "b"}] * 3
    plain = _write(tmp_path / "dpo.json", json.dumps(records))
    wrapped = _write(tmp_path / "wrapped.json", json.dumps({"data": records}))

    for path in (plain, wrapped):
        report = validate_source(path, "json", "TRAINING_TYPE_DPO", 100)
        assert report.valid, report.errors
        assert (report.num_rows, report.columns) == (3, ["prompt", "chosen", "rejected"])


def test_csv_with_unknown_column_and_empty_row(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "data.csv",
        'prompt,completion,source\n"Hi, there",Hello,web\n,,\nBye,"multi\nline",book\n',
    )

    report = validate_source(path, "", "LORA", 0)

    assert report.valid, report.errors
    assert report.format == "csv"
    assert report.num_rows == 2
    assert report.columns == ["prompt", "completion", "source"]
    assert "1 empty row(s) skipped (first: row 2)" in report.warnings
    assert "columns not used for training: source" in report.warnings
    assert load_texts([{"path": str(path)}]) == ["Hi, there\nHello", "Bye\nmulti\nline"]


def test_text_lines_for_continued_pretraining(tmp_path: Path) -> None:
    path = _write(tmp_path / "corpus.txt", "first line\n\nsecond line\n")

    report = validate_source(path.as_uri(), "", "CONTINUED_PRETRAIN", 0)

    assert report.valid, report.errors
    assert (report.format, report.num_rows, report.columns) == ("text", 2, ["text"])
    assert load_texts([{"path": path.as_uri(), "format": "text"}]) == ["first line", "second line"]


def test_malformed_jsonl_reports_row_numbers(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "bad.jsonl",
        '{"text": "ok"}\n\n{"text": oops}\n[1, 2]\n{"prompt": "no completion"}\n{"text": 5}\n',
    )

    report = validate_source(path, "jsonl", "SFT", 0)

    assert not report.valid
    assert report.num_rows == 5
    rows = [row for row, _ in report.errors]
    assert rows == [3, 4, 5, 6]
    messages = dict(report.errors)
    assert messages[3].startswith("invalid JSON")
    assert "expected an object" in messages[4]
    assert "needs prompt+completion or messages or text" in messages[5]
    assert "'text' must be a string" in messages[6]
    with pytest.raises(DataFormatError, match="row 3: invalid JSON"):
        load_texts([{"path": str(path)}])


def test_wrong_shape_for_dpo(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "sft.jsonl", [{"prompt": "p", "completion": "c"}] * 30)

    report = validate_source(path, "", "DPO", 0)

    assert not report.valid
    assert report.errors[0] == (
        1,
        "missing required fields 'chosen', 'rejected' (DPO needs prompt, chosen, rejected)",
    )
    assert len(report.errors) == 20
    assert "30 errors in total; only the first 20 are listed" in report.warnings


def test_sample_size_limits_the_field_checks(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "rl.jsonl", [{"prompt": "p"}] * 5 + [{"text": "no prompt"}])

    shallow = validate_source(path, "", "RLHF", 5)
    deep = validate_source(path, "", "RLHF", 6)

    assert shallow.valid
    assert "required fields checked on the first 5 of 6 rows" in shallow.warnings
    assert not deep.valid
    assert deep.errors == [(6, "missing required field 'prompt' (RLHF needs prompt)")]


@pytest.mark.parametrize(
    ("name", "content", "fmt", "message"),
    [
        ("missing.jsonl", None, "", "file not found"),
        ("data.bin", "x", "", "cannot infer the data format"),
        ("data.jsonl", "x", "xml", "unknown data format"),
        ("broken.json", '{"data": [1,', "", "invalid JSON at line 1"),
        ("scalar.json", '"text"', "", "must be a list of records"),
        ("empty.jsonl", "", "", "contains no rows"),
        ("latin1.txt", None, "", "not valid UTF-8"),
    ],
)
def test_unreadable_sources_are_invalid_not_exceptions(
    tmp_path: Path, name: str, content: str | None, fmt: str, message: str
) -> None:
    path = tmp_path / name
    if name == "latin1.txt":
        path.write_bytes("caf\xe9\n".encode("latin-1"))
    elif content is not None:
        _write(path, content)

    report = validate_source(path, fmt, "SFT", 0)

    assert not report.valid
    assert report.errors[0][0] == 0
    assert message in report.errors[0][1]


def test_directory_is_invalid(tmp_path: Path) -> None:
    report = validate_source(tmp_path, "jsonl", "SFT", 0)

    assert not report.valid
    assert "not a regular file" in report.errors[0][1]


@pytest.mark.skipif(importlib.util.find_spec("pyarrow") is not None, reason="pyarrow installed")
def test_parquet_without_pyarrow_is_a_clear_error(tmp_path: Path) -> None:
    path = _write(tmp_path / "data.parquet", "PAR1")

    report = validate_source(path, "", "SFT", 0)

    assert not report.valid
    assert "needs the pyarrow package" in report.errors[0][1]
    with pytest.raises(DataFormatError, match="pyarrow"):
        load_texts([{"path": str(path)}])


def test_parquet_is_read_for_real_when_pyarrow_is_installed(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    path = tmp_path / "train.parquet"
    table = {"prompt": ["2+2=", "3+3=", None], "completion": ["4", "6", "7"]}
    pq.write_table(pa.table(table), path)

    report = validate_source(path, "", "SFT", 0)

    assert report.format == "parquet"
    assert report.num_rows == 3
    assert report.columns == ["prompt", "completion"]
    assert [row for row, _ in report.errors] == [3]
    assert not report.valid
    good = tmp_path / "good.parquet"
    pq.write_table(pa.table({"prompt": ["2+2="], "completion": ["4"]}), good)
    assert validate_source(good, "parquet", "SFT", 0).valid
    texts = load_texts([{"path": str(good), "format": "parquet"}])
    assert len(texts) == 1
    assert "2+2=" in texts[0]
    assert "4" in texts[0]


def test_load_texts_renders_every_record_shape(tmp_path: Path) -> None:
    path = _jsonl(
        tmp_path / "mixed.jsonl",
        [
            {"prompt": "Q", "completion": "A"},
            {
                "messages": [
                    {"role": "user", "content": "hi"},
                    {"role": "assistant", "content": "yo"},
                ]
            },
            {"text": "plain"},
            {"prompt": "P", "chosen": "good", "rejected": "bad"},
            {"instruction": "Do", "input": "", "output": "done"},
        ],
    )

    assert load_texts([{"path": str(path)}]) == [
        "Q\nA",
        "user: hi\nassistant: yo",
        "plain",
        "P\ngood",
        "Do\ndone",
    ]
    with pytest.raises(DataFormatError, match=r"row 1: no training text \(needs rejected; has"):
        load_texts([{"path": str(path), "columns": ["rejected"]}])
    selected = _jsonl(tmp_path / "dpo.jsonl", [{"prompt": "P", "chosen": "c", "rejected": "r"}])
    assert load_texts([{"path": str(selected), "columns": ["rejected", "chosen"]}]) == ["r\nc"]
    # Selected columns that form a known shape are rendered as that shape.
    assert load_texts([{"path": str(selected), "columns": ["id", "chosen", "prompt"]}]) == ["P\nc"]


def test_split_is_reproducible_and_disjoint() -> None:
    texts = [f"record {i}" for i in range(50)]

    train, validation = split_texts(texts, 0.2, seed=3)

    assert len(validation) == 10
    assert sorted(train + validation) == sorted(texts)
    assert split_texts(texts, 0.2, seed=3) == (train, validation)
    assert split_texts(texts, 0.2, seed=4)[1] != validation
    assert split_texts(["only one document"], 0.25, seed=0) == (["only one docu"], ["ment"])
