"""Where a job's data sources live on this machine.

Absolute paths and `file://` URIs name local files under the caller's local data roots;
`scaidrive://<tenant>/<path>` maps onto the tenant's storage area when the caller's drive access
allows it (`paths.py`, `scaidrive.py`). PREPARING copies the resolved files into the dataset cache
(`cache.py`) and the process reads the copies.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from scaimind.coordinator.status import invalid
from scaimind.v1 import common_pb2

if TYPE_CHECKING:
    from scaimind.coordinator.data.paths import TenantFiles

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


@dataclass(frozen=True, slots=True)
class LocalSource:
    """A data source resolved to a local file."""

    path: Path
    format: str
    columns: list[str]
    uri: str = ""  # the source as the user wrote it (the dataset cache's key)
    field: str = ""  # the request field that named it (for error messages)

    def as_spec(self) -> dict[str, object]:
        """The `data_files` entry of the process spec."""
        return {
            "path": str(self.path),
            "format": self.format,
            "columns": list(self.columns),
            # How messages name it: as the user wrote it (never the cache's server path).
            "source": self.uri,
        }


def format_name(fmt: int, path: Path) -> str:
    """The contract's format string: the declared format, else inferred from the suffix."""
    if fmt in _FORMAT_NAMES:
        return _FORMAT_NAMES[fmt]
    return _SUFFIX_FORMATS.get(path.suffix.lower(), "")


def resolve_source(source: common_pb2.DataSource, field: str, files: TenantFiles) -> LocalSource:
    """Map a source to a local file the caller may read; INVALID_ARGUMENT naming `field`.

    scaidrive:// denials are PERMISSION_DENIED; a path outside the caller's roots is refused
    before it is touched (paths.py).
    """
    raw = source.path.strip()
    path = files.resolve(raw, f"{field}.path")
    if not path.is_file():
        raise invalid(f"{field}.path: {raw} does not exist or is not a regular file")
    return LocalSource(
        path, format_name(source.format, path), list(source.columns), raw, f"{field}.path"
    )
