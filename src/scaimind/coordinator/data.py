"""Where a job's data sources live on this machine.

Plain absolute paths and `file://` URIs are read in place. PREPARING calls `prepare_sources`,
the hook where a dataset cache will copy sources before training.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

from scaimind.coordinator.errors import invalid
from scaimind.v1 import common_pb2

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

    def as_spec(self) -> dict[str, object]:
        """The `data_files` entry of the process spec."""
        return {"path": str(self.path), "format": self.format, "columns": list(self.columns)}


def format_name(fmt: int, path: Path) -> str:
    """The contract's format string: the declared format, else inferred from the suffix."""
    if fmt in _FORMAT_NAMES:
        return _FORMAT_NAMES[fmt]
    return _SUFFIX_FORMATS.get(path.suffix.lower(), "")


def resolve_source(source: common_pb2.DataSource, field: str) -> LocalSource:
    """Map a source to a local file; INVALID_ARGUMENT naming `field` when that is impossible."""
    raw = source.path.strip()
    if not raw:
        raise invalid(f"{field}.path: is required")
    parsed = urlparse(raw)
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
        path=path, format=format_name(source.format, path), columns=list(source.columns)
    )


def prepare_sources(sources: list[LocalSource]) -> list[LocalSource]:
    """PREPARING: make every source available to the process (today: read in place)."""
    for src in sources:
        if not src.path.is_file():
            raise FileNotFoundError(f"data source {src.path} no longer exists")
    return sources
