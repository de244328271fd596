"""ValidateData: read every source for real and report rows, columns, size and row errors.

An unreadable, missing or malformed source is `valid: false` with precise errors, never an RPC
error; only a refused scaidrive:// access (PERMISSION_DENIED) and a malformed request
(INVALID_ARGUMENT) fail the call. Messages name the source as the caller wrote it, never the
server-side path of a scaidrive:// file.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

from scaimind.coordinator.datasets import SourceReport, validate_source
from scaimind.coordinator.errors import invalid
from scaimind.coordinator.storage import DriveAccess, is_scaidrive
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
    req: coordinator_pb2.ValidateDataRequest, drive: DriveAccess
) -> coordinator_pb2.ValidateDataResponse:
    """Validate every source of the request."""
    if not req.sources:
        raise invalid("sources: at least one source is required")
    if not 0 <= req.sample_size <= MAX_SAMPLE_SIZE:
        raise invalid(f"sample_size: must be between 0 and {MAX_SAMPLE_SIZE}")
    if req.training_type not in common_pb2.TrainingType.values():
        raise invalid(f"training_type: unknown value {req.training_type}")
    training_type = common_pb2.TrainingType.Name(req.training_type) if req.training_type else ""
    resp = coordinator_pb2.ValidateDataResponse(valid=True)
    for i, source in enumerate(req.sources):
        raw = source.path.strip()
        if not raw:
            raise invalid(f"sources[{i}].path: is required")
        fmt = common_pb2.DataFormat.Name(source.format) if source.format else ""
        report = _report(raw, fmt, training_type, req.sample_size, drive, f"sources[{i}]")
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


def _report(
    raw: str, fmt: str, training_type: str, sample_size: int, drive: DriveAccess, field: str
) -> SourceReport:
    if is_scaidrive(raw):
        local = drive.resolve(raw, f"{field}.path")
        report = validate_source(local, fmt, training_type, sample_size)
        # The caller knows the URI, not where the storage root is.
        report.path = raw
        report.errors = [(r, m.replace(str(local), raw)) for r, m in report.errors]
        report.warnings = [w.replace(str(local), raw) for w in report.warnings]
        return report
    scheme = urlparse(raw).scheme
    if scheme and scheme != "file" and len(scheme) > 1:
        return SourceReport(
            path=raw,
            valid=False,
            format="",
            errors=[
                (
                    0,
                    f"{raw}: {scheme}:// sources are not supported by this coordinator; use a "
                    "local path, file:// or scaidrive://",
                )
            ],
        )
    if scheme != "file" and not Path(raw).is_absolute():
        return SourceReport(
            path=raw, valid=False, format="", errors=[(0, f"{raw}: is not an absolute path")]
        )
    return validate_source(raw, fmt, training_type, sample_size)
