"""Reading and validating training data sources (jsonl, json, csv, text, parquet) for real."""

from __future__ import annotations

import csv
import importlib
import io
import json
import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import unquote, urlparse

FORMATS = ("jsonl", "json", "csv", "text", "parquet")
_EXTENSIONS = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".csv": "csv",
    ".txt": "text",
    ".text": "text",
    ".md": "text",
    ".parquet": "parquet",
    ".pq": "parquet",
}
# json and parquet sources are parsed whole; larger ones are not validated (memory).
WHOLE_DOCUMENT_MAX_BYTES = 16 * 1024 * 1024


Record = dict[str, Any]


class DataFormatError(Exception):
    """A data source cannot be read or holds no usable training text."""


def resolve_path(path: str | Path) -> Path:
    """Turn a plain path or a `file://` URI into a local path."""
    text = str(path)
    if text.startswith("file:"):
        parsed = urlparse(text)
        if parsed.netloc not in ("", "localhost"):
            raise DataFormatError(f"{text}: file:// URIs must name a local file (no host)")
        return Path(unquote(parsed.path))
    if "://" in text:
        scheme = text.split("://", 1)[0]
        raise DataFormatError(f"{text}: {scheme}:// sources must be fetched before reading")
    return Path(text)


def normalise_format(fmt: str) -> str:
    """Map `JSONL`, `DATA_FORMAT_JSONL`, `unspecified` etc. onto a FORMATS value or ``""``."""
    name = fmt.strip().lower().removeprefix("data_format_")
    if name in ("", "unspecified"):
        return ""
    if name == "txt":
        return "text"
    if name not in FORMATS:
        raise DataFormatError(f"unknown data format {fmt!r}; known: {', '.join(FORMATS)}")
    return name


def infer_format(path: Path, fmt: str = "") -> str:
    """Return the declared format, or the one the file extension implies."""
    declared = normalise_format(fmt)
    if declared:
        return declared
    inferred = _EXTENSIONS.get(path.suffix.lower())
    if inferred is None:
        raise DataFormatError(
            f"{path}: cannot infer the data format from extension {path.suffix!r}; "
            f"set format to one of {', '.join(FORMATS)}"
        )
    return inferred


def normalise_training_type(training_type: str) -> str:
    """Map `TRAINING_TYPE_SFT`, `sft`, `` etc. onto a REQUIRED_FIELDS key or ``""``."""
    name = training_type.strip().upper().removeprefix("TRAINING_TYPE_")
    return "" if name == "UNSPECIFIED" else name


# -- row iteration -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Row:
    """One parsed row: a record, or the reason it could not be parsed; `blank` rows are skipped."""

    number: int
    record: Record | None = None
    error: str = ""
    blank: bool = False


class CappedReader(io.RawIOBase):
    """A binary file read up to `limit` bytes; `truncated` says whether more was there."""

    def __init__(self, handle: BinaryIO, limit: int | None) -> None:
        super().__init__()
        self._handle = handle
        self._left = limit
        self.truncated = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        if self._left is not None:
            if self._left <= 0:
                # One byte more tells a file of exactly `limit` bytes from a longer one.
                self.truncated = self.truncated or bool(self._handle.read(1))
                return 0
            view = view[: self._left]
        data = self._handle.read(len(view))
        view[: len(data)] = data
        if self._left is not None:
            self._left -= len(data)
        return len(data)


def iter_rows(handle: BinaryIO, fmt: str, label: str) -> Iterator[_Row]:
    """Yield the rows of a source; raises DataFormatError for file-level failures."""
    try:
        if fmt == "jsonl":
            yield from _jsonl_rows(handle)
        elif fmt == "json":
            yield from _json_rows(handle, label)
        elif fmt == "csv":
            yield from _csv_rows(handle)
        elif fmt == "text":
            yield from _text_rows(handle)
        else:
            yield from _parquet_rows(handle, label)
    except UnicodeDecodeError as exc:
        raise DataFormatError(f"{label}: not valid UTF-8 (byte offset {exc.start})") from exc
    except OSError as exc:
        raise DataFormatError(f"{label}: cannot read: {exc.strerror or exc}") from exc


def open_source(path: Path, label: str) -> BinaryIO:
    try:
        return path.open("rb")
    except FileNotFoundError as exc:
        raise DataFormatError(f"{label}: file not found") from exc
    except IsADirectoryError as exc:
        raise DataFormatError(f"{label}: not a regular file (a directory)") from exc
    except PermissionError as exc:
        raise DataFormatError(f"{label}: permission denied") from exc
    except OSError as exc:
        raise DataFormatError(f"{label}: cannot read: {exc.strerror or exc}") from exc


def _jsonl_rows(handle: BinaryIO) -> Iterator[_Row]:
    # Rows are numbered by line so that an error points straight at the line to fix.
    for number, raw in enumerate(handle, start=1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            yield _Row(number, error="line is not valid UTF-8")
            continue
        if not line.strip():
            yield _Row(number, blank=True)
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            yield _Row(number, error=f"invalid JSON: {exc.msg} (column {exc.colno})")
            continue
        yield _as_record(number, value)


def _json_rows(handle: BinaryIO, label: str) -> Iterator[_Row]:
    try:
        document = json.loads(handle.read().decode("utf-8"))
    except json.JSONDecodeError as exc:
        raise DataFormatError(
            f"{label}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from exc
    if isinstance(document, dict) and isinstance(document.get("data"), list):
        document = document["data"]
    if not isinstance(document, list):
        raise DataFormatError(
            f"{label}: a json source must be a list of records or an object with a 'data' list"
        )
    for number, value in enumerate(document, start=1):
        yield _as_record(number, value)


def _csv_rows(handle: BinaryIO) -> Iterator[_Row]:
    # The csv module's default 128 KiB field limit is too small for long documents.
    csv.field_size_limit(1 << 30)
    text = io.TextIOWrapper(handle, encoding="utf-8", newline="")
    try:
        reader = csv.DictReader(text)
        if not reader.fieldnames:
            return
        for number, row in enumerate(reader, start=1):
            if None in row:
                yield _Row(
                    number, error=f"has more fields than the {len(reader.fieldnames)} headers"
                )
                continue
            if all(value in (None, "") for value in row.values()):
                yield _Row(number, blank=True)
                continue
            record: Record = {}
            for key, value in row.items():
                if value is None:
                    continue
                record[key] = _decode_csv_json(value) if key == "messages" else value
            yield _Row(number, record=record)
    finally:
        text.detach()  # the caller closes the file it opened


def _decode_csv_json(value: str) -> Any:
    """A csv `messages` cell holds JSON; keep the raw text when it is not valid JSON."""
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        return value


def _text_rows(handle: BinaryIO) -> Iterator[_Row]:
    text = io.TextIOWrapper(handle, encoding="utf-8")
    try:
        for number, line in enumerate(text, start=1):
            stripped = line.rstrip("\r\n")
            if not stripped.strip():
                yield _Row(number, blank=True)
            else:
                yield _Row(number, record={"text": stripped})
    finally:
        text.detach()  # the caller closes the file it opened


def _parquet_rows(handle: BinaryIO, label: str) -> Iterator[_Row]:
    try:
        parquet: Any = importlib.import_module("pyarrow.parquet")
    except ImportError as exc:
        raise DataFormatError(
            f"{label}: reading parquet needs the pyarrow package, which is not installed"
        ) from exc
    try:
        # Parquet keeps its index at the end of the file: it is read whole (size-capped by
        # the caller), never streamed.
        rows = parquet.read_table(io.BytesIO(handle.read())).to_pylist()
    except Exception as exc:  # pyarrow raises its own hierarchy (ArrowInvalid, ...)
        raise DataFormatError(f"{label}: not a readable parquet file: {exc}") from exc
    for number, value in enumerate(rows, start=1):
        yield _as_record(number, value)


def _as_record(number: int, value: Any) -> _Row:
    if isinstance(value, dict):
        return _Row(number, record=value)
    return _Row(number, error=f"expected an object with named fields, got {type_name(value)}")


def type_name(value: Any) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}
    return names.get(type(value), type(value).__name__)


# -- record → training text --------------------------------------------------------------------


def _render(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(item, dict) for item in value):
        return "\n".join(
            f"{item.get('role', 'user')}: {_render(item.get('content', ''))}" for item in value
        )
    return json.dumps(value, ensure_ascii=False)


def _present(record: Mapping[str, Any], key: str) -> bool:
    return record.get(key) not in (None, "")


def record_text(record: Mapping[str, Any], columns: Sequence[str] = ()) -> str | None:
    """Return the text the reference trainer learns from a record, or None when it has none.

    `columns` restricts the record to those fields; when they form no known shape (prompt +
    answer, messages, text, instruction), the selected values are joined line by line.
    """
    if columns:
        selected = {key: record[key] for key in columns if _present(record, key)}
        known = record_text(selected) if selected else None
        if known is not None or not selected:
            return known
        return "\n".join(_render(value) for value in selected.values())
    if isinstance(record.get("messages"), list) and record["messages"]:
        return _render(record["messages"])
    if _present(record, "prompt"):
        # DPO trains towards the chosen answer; the stand-in model learns prompt + that answer.
        answer = next(
            (
                key
                for key in ("completion", "chosen", "response", "output")
                if _present(record, key)
            ),
            None,
        )
        prompt = _render(record["prompt"])
        return prompt if answer is None else f"{prompt}\n{_render(record[answer])}"
    if _present(record, "text"):
        return _render(record["text"])
    if _present(record, "instruction"):
        keys = ("instruction", "input", "output")
        return "\n".join(_render(record[key]) for key in keys if _present(record, key))
    return None


def load_texts(data_files: Sequence[Mapping[str, Any]]) -> list[str]:
    """Read every data file of a job spec into one training text per record."""
    if not data_files:
        raise DataFormatError("the job has no data files")
    texts: list[str] = []
    for entry in data_files:
        raw_path = str(entry.get("path") or "")
        if not raw_path:
            raise DataFormatError("a data file entry has no path")
        path = resolve_path(raw_path)
        label = str(entry.get("source") or path)
        fmt = infer_format(path, str(entry.get("format") or ""))
        columns = [str(column) for column in entry.get("columns") or ()]
        problems: list[str] = []
        with open_source(path, label) as handle:
            rows = list(iter_rows(handle, fmt, label))
        for row in rows:
            if row.blank:
                continue
            if row.record is None:
                problems.append(f"row {row.number}: {row.error}")
            else:
                text = record_text(row.record, columns)
                if text is None:
                    wanted = (
                        ", ".join(columns) if columns else "prompt/completion, messages or text"
                    )
                    found = ", ".join(row.record) or "none"
                    problems.append(
                        f"row {row.number}: no training text (needs {wanted}; has {found})"
                    )
                else:
                    texts.append(text)
            if len(problems) >= 3:
                break
        if problems:
            raise DataFormatError(f"{label} ({fmt}): " + "; ".join(problems))
    if not texts:
        raise DataFormatError("the data files contain no records")
    return texts


def split_texts(
    texts: Sequence[str], validation_split: float, seed: int
) -> tuple[list[str], list[str]]:
    """Split records into (train, validation) reproducibly from the seed."""
    if validation_split <= 0 or not texts:
        return list(texts), []
    if len(texts) == 1:
        # A single document is split by characters so validation still has something to score.
        text = texts[0]
        cut = max(1, min(len(text) - 1, round(len(text) * (1 - validation_split))))
        return [text[:cut]], [text[cut:]]
    order = list(range(len(texts)))
    random.Random(seed).shuffle(order)
    count = max(1, min(len(texts) - 1, round(len(texts) * validation_split)))
    validation = sorted(order[:count])
    train = sorted(order[count:])
    return [texts[i] for i in train], [texts[i] for i in validation]
