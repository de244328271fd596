"""Where a job's data sources live on this machine.

Plain absolute paths and `file://` URIs name local files; `scaidrive://<tenant>/<path>` maps onto
the storage root when the caller's drive access allows it (`storage.py`). PREPARING copies the
resolved files into the dataset cache (`dataset_cache.py`) and the process reads the copies.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlparse

from scaimind.coordinator.errors import invalid
from scaimind.v1 import common_pb2

if TYPE_CHECKING:
    from scaimind.coordinator.storage import DriveAccess

_FORMAT_NAMES: dict[int, str] = {
    common_pb2.DATA_FORMAT_JSONL: "jsonl",
    common_pb2.DATA_FORMAT_JSON: "json",
    common_pb2.DATA_FORMAT_CSV: "csv",
    common_pb2.DATA_FORMAT_PARQUET: "parquet",
    common_pb2.DATA_FORMAT_TEXT: "text",
}
_SUFFIX_FORMATS = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".csv": "csv",
    ".parquet": "parquet",
    ".txt": "text",
    ".text": "text",
    ".md": "text",
}
_REMOTE_SCHEMES = ("scaidrive", "scaiatlas", "hf", "http", "https", "s3", "gs")


@dataclass(frozen=True, slots=True)
class LocalSource:
    """A data source resolved to a local file."""

    path: Path
    format: str
    columns: list[str]
    uri: str = ""  # the source as the user wrote it (the dataset cache's key)

    def as_spec(self) -> dict[str, object]:
        """The `data_files` entry of the process spec."""
        return {"path": str(self.path), "format": self.format, "columns": list(self.columns)}


def format_name(fmt: int, path: Path) -> str:
    """The contract's format string: the declared format, else inferred from the suffix."""
    if fmt in _FORMAT_NAMES:
        return _FORMAT_NAMES[fmt]
    return _SUFFIX_FORMATS.get(path.suffix.lower(), "")


def resolve_source(
    source: common_pb2.DataSource, field: str, drive: DriveAccess | None = None
) -> LocalSource:
    """Map a source to a local file; INVALID_ARGUMENT naming `field` when that is impossible.

    scaidrive:// needs `drive` (the caller's access); its denials are PERMISSION_DENIED.
    """
    raw = source.path.strip()
    if not raw:
        raise invalid(f"{field}.path: is required")
    parsed = urlparse(raw)
    if parsed.scheme == "scaidrive" and drive is not None:
        path = drive.resolve(raw, f"{field}.path")
        if not path.is_file():
            raise invalid(f"{field}.path: {raw} does not exist")
        return LocalSource(path, format_name(source.format, path), list(source.columns), raw)
    if parsed.scheme == "file":
        path = Path(unquote(parsed.path))
    elif parsed.scheme in _REMOTE_SCHEMES:
        raise invalid(
            f"{field}.path: {parsed.scheme}:// sources are not supported by this coordinator; "
            "use a local path or file:// URI"
        )
    elif parsed.scheme and len(parsed.scheme) > 1:
        raise invalid(f"{field}.path: unknown scheme {parsed.scheme}://")
    else:
        path = Path(raw)
    if not path.is_absolute():
        raise invalid(f"{field}.path: {raw} is not an absolute path")
    if not path.exists():
        raise invalid(f"{field}.path: {raw} does not exist")
    if not path.is_file():
        raise invalid(f"{field}.path: {raw} is not a file")
    return LocalSource(
        path=path, format=format_name(source.format, path), columns=list(source.columns), uri=raw
    )
