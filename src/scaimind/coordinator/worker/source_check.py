"""Validating a training data source (ValidateData): rows, columns, per-row errors and
warnings, read through the same readers the trainer uses (`datasets.py`)."""

from __future__ import annotations

import io
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO
from urllib.parse import urlparse

from scaimind.coordinator.worker.datasets import (
    WHOLE_DOCUMENT_MAX_BYTES,
    CappedReader,
    DataFormatError,
    Record,
    infer_format,
    iter_rows,
    normalise_training_type,
    open_source,
    record_text,
    resolve_path,
    type_name,
)

MAX_REPORTED_ERRORS = 20
DEFAULT_SAMPLE_SIZE = 100
LONG_ROW_CHARS = 100_000

# Alternatives of field sets that make a usable record, per training type.
_CHAT_FIELDS: tuple[tuple[str, ...], ...] = (("prompt", "completion"), ("messages",), ("text",))
_PREFERENCE_FIELDS: tuple[tuple[str, ...], ...] = (("prompt", "chosen", "rejected"),)
REQUIRED_FIELDS: dict[str, tuple[tuple[str, ...], ...]] = {
    "SFT": _CHAT_FIELDS,
    "LORA": _CHAT_FIELDS,
    "QLORA": _CHAT_FIELDS,
    "FULL_FINETUNE": _CHAT_FIELDS,
    "DPO": _PREFERENCE_FIELDS,
    "CONTINUED_PRETRAIN": (("text",),),
    "RLHF": (("prompt",),),
}
# Columns some training type reads; anything else is reported as unused.
_KNOWN_COLUMNS = frozenset(
    {
        "prompt",
        "completion",
        "messages",
        "text",
        "chosen",
        "rejected",
        "response",
        "instruction",
        "input",
        "output",
        "system",
        "id",
    }
)


@dataclass
class SourceReport:
    """Result of validating one data source; file-level errors use row 0."""

    path: str
    valid: bool
    format: str
    num_rows: int = 0
    size_bytes: int = 0
    columns: list[str] = field(default_factory=list)
    errors: list[tuple[int, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _field_problem(record: Record, training_type: str) -> str | None:
    """Explain why a record lacks the fields its training type needs, or return None."""
    alternatives = REQUIRED_FIELDS.get(training_type, _CHAT_FIELDS + _PREFERENCE_FIELDS)
    for fields in alternatives:
        if all(record.get(name) is not None for name in fields):
            return _type_problem(record, fields)
    label = training_type or "training"
    if len(alternatives) == 1:
        missing = [name for name in alternatives[0] if record.get(name) is None]
        names = ", ".join(repr(name) for name in missing)
        needed = ", ".join(alternatives[0])
        plural = "s" if len(missing) > 1 else ""
        return f"missing required field{plural} {names} ({label} needs {needed})"
    options = " or ".join("+".join(fields) for fields in alternatives)
    return f"missing required fields: {label} needs {options}"


def _type_problem(record: Record, fields: Sequence[str]) -> str | None:
    for name in fields:
        value = record[name]
        if name == "messages":
            if not isinstance(value, list) or not value:
                return "field 'messages' must be a non-empty array of {role, content} objects"
            for index, message in enumerate(value, start=1):
                if not isinstance(message, dict) or not isinstance(message.get("content"), str):
                    return f"messages[{index}] must be an object with a string 'content'"
                if not isinstance(message.get("role"), str):
                    return f"messages[{index}] must have a string 'role'"
        elif not isinstance(value, str):
            return f"field {name!r} must be a string, got {type_name(value)}"
    return None


def validate_source(
    path: Path | str,
    fmt: str,
    training_type: str,
    sample_size: int,
    *,
    handle: BinaryIO | None = None,
    label: str | None = None,
    max_bytes: int | None = None,
) -> SourceReport:
    """Read a source and report rows, columns, size, per-row errors and warnings.

    `handle` is the source already opened (by the path policy) and `label` how messages name
    it (the caller's URI, never a server path). At most `max_bytes` are read: line formats are
    streamed and stop there with a warning; json and parquet, which are parsed whole, are
    refused above `min(max_bytes, WHOLE_DOCUMENT_MAX_BYTES)`.
    """
    name = label or str(path)
    report = SourceReport(path=name, valid=False, format="")
    try:
        # The suffix of the name the caller gave (a URI is not a local path).
        report.format = infer_format(
            Path(urlparse(name).path) if label else resolve_path(path), fmt
        )
        opened = handle if handle is not None else open_source(resolve_path(path), name)
    except DataFormatError as exc:
        report.errors.append((0, str(exc)))
        return report
    try:
        return _validate_open(report, opened, training_type, sample_size, max_bytes)
    finally:
        if handle is None:
            opened.close()


def _validate_open(
    report: SourceReport,
    handle: BinaryIO,
    training_type: str,
    sample_size: int,
    max_bytes: int | None,
) -> SourceReport:
    name = report.path
    st = os.fstat(handle.fileno())
    if not stat.S_ISREG(st.st_mode):
        report.errors.append((0, f"{name}: not a regular file"))
        return report
    report.size_bytes = st.st_size
    cap = max_bytes
    if report.format in ("json", "parquet"):
        cap = min(cap or WHOLE_DOCUMENT_MAX_BYTES, WHOLE_DOCUMENT_MAX_BYTES)
        if st.st_size > cap:
            report.errors.append(
                (
                    0,
                    f"{name}: {report.format} sources are validated whole, up to {cap} bytes; "
                    f"this one has {st.st_size} (jsonl, csv and text are validated in part)",
                )
            )
            return report
    capped = CappedReader(handle, cap)

    kind = normalise_training_type(training_type)
    depth = sample_size if sample_size > 0 else DEFAULT_SAMPLE_SIZE
    columns: dict[str, None] = {}
    errors: list[tuple[int, str]] = []
    error_count = checked = last_row = 0
    blank = long = empty = 0
    first_blank = first_long = first_empty = 0

    def add_error(row: int, message: str) -> None:
        nonlocal error_count
        error_count += 1
        if len(errors) < MAX_REPORTED_ERRORS + 1:
            errors.append((row, message))

    buffered = io.BufferedReader(capped)
    try:
        for row in iter_rows(buffered, report.format, name):
            last_row = row.number
            if row.blank:
                blank += 1
                first_blank = first_blank or row.number
                continue
            report.num_rows += 1
            if row.record is None:
                add_error(row.number, row.error)
                continue
            columns.update(dict.fromkeys(row.record))
            if checked < depth:
                checked += 1
                problem = _field_problem(row.record, kind)
                if problem:
                    add_error(row.number, problem)
                if any(value == "" for value in row.record.values()):
                    empty += 1
                    first_empty = first_empty or row.number
            if len(record_text(row.record) or "") > LONG_ROW_CHARS:
                long += 1
                first_long = first_long or row.number
    except DataFormatError as exc:
        add_error(0, str(exc))
    finally:
        buffered.detach()

    if capped.truncated:
        # The row cut in half by the limit is not the file's fault.
        if errors and errors[-1][0] == last_row and last_row:
            errors.pop()
            error_count -= 1
        report.warnings.append(
            f"read the first {cap} of {st.st_size} bytes only (the validation limit); rows, "
            "columns and errors cover that part"
        )
    report.errors = errors[:MAX_REPORTED_ERRORS]
    report.columns = list(columns)
    if report.num_rows == 0 and error_count == 0:
        report.errors.append((0, f"{name}: contains no rows"))
        error_count = 1
    if error_count > MAX_REPORTED_ERRORS:
        report.warnings.append(
            f"{error_count} errors in total; only the first {MAX_REPORTED_ERRORS} are listed"
        )
    if blank:
        report.warnings.append(f"{blank} empty row(s) skipped (first: row {first_blank})")
    if empty:
        report.warnings.append(f"{empty} row(s) have empty field values (first: row {first_empty})")
    if long:
        report.warnings.append(
            f"{long} row(s) longer than {LONG_ROW_CHARS} characters (first: row {first_long})"
        )
    unknown = [column for column in report.columns if column not in _KNOWN_COLUMNS]
    if unknown:
        report.warnings.append(f"columns not used for training: {', '.join(unknown)}")
    if report.num_rows > checked > 0:
        report.warnings.append(
            f"required fields checked on the first {checked} of {report.num_rows} rows"
        )
    report.valid = error_count == 0
    return report
