"""ValidateData: read every source for real and report rows, columns, size and row errors.

Every source path goes through the caller's local-path policy first (paths.py): a path outside
its roots and storage area fails the whole call with INVALID_ARGUMENT, before anything is read,
and a refused scaidrive:// access with PERMISSION_DENIED. Within the policy, a missing,
unreadable or malformed source is `valid: false` with precise errors, never an RPC error.
Sources are streamed and read up to a byte limit (SCAIMIND_VALIDATE_MAX_BYTES); messages name
the source as the caller wrote it, never a server path.
"""

from __future__ import annotations

import os
from pathlib import Path

import grpc

from scaimind.coordinator.data.paths import TenantFiles
from scaimind.coordinator.status import PathRefused, StatusError, invalid
from scaimind.coordinator.worker.source_check import SourceReport, validate_source
from scaimind.v1 import common_pb2, coordinator_pb2

_FORMATS = {
    "jsonl": common_pb2.DATA_FORMAT_JSONL,
    "json": common_pb2.DATA_FORMAT_JSON,
    "csv": common_pb2.DATA_FORMAT_CSV,
    "parquet": common_pb2.DATA_FORMAT_PARQUET,
    "text": common_pb2.DATA_FORMAT_TEXT,
}
MAX_SAMPLE_SIZE = 100_000


def validate_data(
    req: coordinator_pb2.ValidateDataRequest, files: TenantFiles, max_bytes: int
) -> coordinator_pb2.ValidateDataResponse:
    """Validate every source of the request (runs in a thread: it reads files)."""
    if not req.sources:
        raise invalid("sources: at least one source is required")
    if not 0 <= req.sample_size <= MAX_SAMPLE_SIZE:
        raise invalid(f"sample_size: must be between 0 and {MAX_SAMPLE_SIZE}")
    if req.training_type not in common_pb2.TrainingType.values():
        raise invalid(f"training_type: unknown value {req.training_type}")
    training_type = common_pb2.TrainingType.Name(req.training_type) if req.training_type else ""
    # Every path is checked before any is read: a refusal leaves no partial answer.
    resolved = [_resolve(files, s.path, f"sources[{i}].path") for i, s in enumerate(req.sources)]
    resp = coordinator_pb2.ValidateDataResponse(valid=True)
    for i, (source, real) in enumerate(zip(req.sources, resolved, strict=True)):
        raw = source.path.strip()
        fmt = common_pb2.DataFormat.Name(source.format) if source.format else ""
        report = (
            _report(
                files,
                real,
                raw,
                f"sources[{i}].path",
                fmt,
                training_type,
                req.sample_size,
                max_bytes,
            )
            if isinstance(real, Path)
            else SourceReport(path=raw, valid=False, format="", errors=[(0, real)])
        )
        result = resp.results.add(
            path=raw,
            valid=report.valid,
            format=_FORMATS.get(report.format, common_pb2.DATA_FORMAT_UNSPECIFIED),
            num_rows=report.num_rows,
            size_bytes=report.size_bytes,
            columns=report.columns,
            warnings=report.warnings,
        )
        for row, message in report.errors:
            result.errors.add(row=row, message=message)
        resp.valid = resp.valid and report.valid
    return resp


def _resolve(files: TenantFiles, raw: str, field: str) -> Path | str:
    """The source's resolved path, or why it cannot be read (an unsupported scheme, a relative
    path: the caller's own problem to see); policy refusals and denied scaidrive:// access
    fail the whole call."""
    try:
        return files.resolve(raw, field)
    except PathRefused:
        raise
    except StatusError as e:
        if e.code != grpc.StatusCode.INVALID_ARGUMENT or field + ": is required" in e.message:
            raise
        return e.message.removeprefix(f"{field}: ")


def _report(
    files: TenantFiles,
    real: Path,
    raw: str,
    field: str,
    fmt: str,
    training_type: str,
    sample_size: int,
    max_bytes: int,
) -> SourceReport:
    if not os.path.lexists(real):
        return SourceReport(
            path=raw, valid=False, format="", errors=[(0, f"{raw}: file not found")]
        )
    try:
        with files.open_file(real, field, raw) as fd, os.fdopen(os.dup(fd), "rb") as handle:
            return validate_source(
                raw, fmt, training_type, sample_size, handle=handle, label=raw, max_bytes=max_bytes
            )
    except PathRefused:
        raise
    except StatusError as e:
        # Not a regular file, unreadable: the caller's own problem to see and fix.
        return SourceReport(
            path=raw, valid=False, format="", errors=[(0, e.message.removeprefix(f"{field}: "))]
        )
