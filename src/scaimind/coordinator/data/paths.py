"""The local-path policy: which files and directories a tenant may name, and opening them safely.

Every request field that names a local file or directory (data sources, benchmark datasets,
`custom_script_path`, `model_uri`, `resume_from_checkpoint`, `output_path`, ValidateData) goes
through `TenantFiles`. A local path (absolute, or a `file://` URI) is allowed only when, after
resolving symlinks and `..`, it lies

- under the tenant's own storage area (`<storage_root>/<tenant>/`, also named
  `scaidrive://<tenant>/…`), or
- under one of the operator's local data roots (`SCAIMIND_LOCAL_DATA_ROOTS`, `{tenant}` expands to
  the caller's tenant id) and outside every protected directory: the service's data dirs
  (secrets, databases, job dirs) and the storage root (other tenants' areas), even when a root
  contains them.

A refused path is refused before anything is read from it, with the same message whether it
exists or not, so the answer is no oracle for the host's files. What the coordinator then reads
it opens with `O_NOFOLLOW` and checks again through `/proc/self/fd` (`open_file`, `open_dir`):
a symlink swapped in between the check and the open cannot lead outside the policy.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlparse

from scaimind.coordinator.data.scaidrive import SCHEME, DriveAccess
from scaimind.coordinator.status import PathRefused, invalid

ROOTS_SETTING = "SCAIMIND_LOCAL_DATA_ROOTS"
_REMOTE_SCHEMES = ("scaiatlas", "hf", "http", "https", "s3", "gs")


def safe_component(name: str) -> bool:
    """True when `name` can be one directory name (a tenant id in a path)."""
    return bool(name) and name not in (".", "..") and "/" not in name and "\0" not in name


def _real(path: str | Path) -> Path:
    # realpath, not Path.resolve(strict=True): a missing path still resolves its existing
    # prefix, so a symlinked parent of a new output directory is seen too.
    return Path(os.path.realpath(path))


def _under(path: Path, base: Path) -> bool:
    return path == base or path.is_relative_to(base)


@dataclass(frozen=True)
class PathPolicy:
    """The operator's roots and the directories no root may expose."""

    roots: Sequence[str]
    storage_root: Path
    protected: Sequence[Path] = ()
    _protected_real: tuple[Path, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        protected = {_real(p) for p in self.protected} | {_real(self.storage_root)}
        object.__setattr__(self, "_protected_real", tuple(sorted(protected)))

    def tenant_area(self, tenant_id: str) -> Path | None:
        """`<storage_root>/<tenant>` resolved; None for a tenant id that is no path component."""
        if not safe_component(tenant_id):
            return None
        return _real(self.storage_root) / tenant_id

    def roots_for(self, tenant_id: str) -> list[Path]:
        """The tenant's local data roots, resolved; `{tenant}` entries only for safe ids."""
        out: list[Path] = []
        for template in self.roots:
            if "{tenant}" in template:
                if not safe_component(tenant_id):
                    continue
                template = template.replace("{tenant}", tenant_id)
            if template.strip() and os.path.isabs(template):
                out.append(_real(template))
        return out

    def permits(self, real: Path, tenant_id: str) -> bool:
        """Whether a resolved path is the tenant's to name (see the module docstring)."""
        area = self.tenant_area(tenant_id)
        if area is not None and _under(real, area):
            return True
        if any(_under(real, p) or _under(p, real) for p in self._protected_real):
            # A root that contains the data dir exposes the data dir's siblings, never the data
            # dir itself nor a directory above it (whose bind would contain it).
            return False
        return any(_under(real, root) for root in self.roots_for(tenant_id))

    def is_protected(self, real: Path) -> bool:
        """True for a path inside (or equal to) a protected directory."""
        return any(_under(real, p) for p in self._protected_real)


def refused(field_name: str, raw: str, tenant_id: str) -> PathRefused:
    """The one answer for a path outside the policy (identical for missing and existing)."""
    return PathRefused(
        f"{field_name}: {raw} is outside the local data roots of tenant {tenant_id}; use "
        f"scaidrive://{tenant_id}/<path> (the tenant's storage area) or ask the operator to "
        f"add its directory to {ROOTS_SETTING}",
    )


@dataclass(frozen=True)
class TenantFiles:
    """One tenant's view of local files: parses, checks and opens what its requests name."""

    policy: PathPolicy
    tenant_id: str
    drive: DriveAccess | None = None

    def resolve(self, raw: str, field_name: str) -> Path:
        """The resolved host path of a local path, `file://` or `scaidrive://` reference.

        INVALID_ARGUMENT (or PERMISSION_DENIED for a scaidrive:// access the token does not
        grant) naming `field_name`; nothing is read from a refused path.
        """
        text = raw.strip()
        if not text:
            raise invalid(f"{field_name}: is required")
        if "\0" in text:
            raise invalid(f"{field_name}: must not contain NUL characters")
        parsed = urlparse(text)
        scheme = parsed.scheme.lower()
        if scheme == SCHEME:
            if self.drive is None:
                raise invalid(f"{field_name}: scaidrive:// is not available here")
            path = self.drive.resolve(text, field_name)
            real = _real(path)
        else:
            if scheme == "file":
                if parsed.netloc not in ("", "localhost"):
                    raise invalid(f"{field_name}: file:// URIs must name a local path (no host)")
                local = unquote(parsed.path)
            elif scheme in _REMOTE_SCHEMES:
                raise invalid(
                    f"{field_name}: {scheme}:// is not supported by this coordinator; use "
                    f"scaidrive://{self.tenant_id}/<path> or a path under a local data root"
                )
            elif len(scheme) > 1:
                raise invalid(f"{field_name}: unknown scheme {scheme}://")
            else:
                local = text
            if not os.path.isabs(local):
                raise invalid(f"{field_name}: {raw} is not an absolute path")
            real = _real(local)
        if not self.policy.permits(real, self.tenant_id):
            raise refused(field_name, text, self.tenant_id)
        return real

    def display(self, host_path: str | Path) -> str:
        """A host path as the tenant may see it: scaidrive:// inside its area, else ''."""
        area = self.policy.tenant_area(self.tenant_id)
        real = _real(host_path)
        if area is not None and _under(real, area):
            rel = PurePosixPath(real.relative_to(area))
            return f"{SCHEME}://{self.tenant_id}/{rel}".rstrip("/").removesuffix("/.")
        return ""

    @contextlib.contextmanager
    def open_file(self, real: Path, field_name: str, raw: str) -> Iterator[int]:
        """A read-only fd of a regular file checked by `resolve`, re-checked after opening."""
        fd = self._open(real, os.O_RDONLY | os.O_NONBLOCK, field_name, raw)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise invalid(f"{field_name}: {raw} is not a regular file")
            # Reads block again once the file is known to be a regular file (no FIFO stalls).
            os.set_blocking(fd, True)
            yield fd
        finally:
            os.close(fd)

    def open_dir(self, real: Path, field_name: str, raw: str) -> int:
        """An O_PATH fd of a directory checked by `resolve`, re-checked after opening."""
        fd = self._open(real, os.O_PATH | os.O_DIRECTORY, field_name, raw)
        return fd

    def _open(self, real: Path, flags: int, field_name: str, raw: str) -> int:
        try:
            fd = os.open(real, flags | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            raise invalid(f"{field_name}: {raw} does not exist") from None
        except NotADirectoryError:
            raise invalid(f"{field_name}: {raw} is not a directory") from None
        except OSError as e:
            # ELOOP: the last component became a symlink after the check.
            raise invalid(f"{field_name}: {raw} cannot be opened ({e.strerror})") from None
        opened = _real(f"/proc/self/fd/{fd}")
        if opened != real or not self.policy.permits(opened, self.tenant_id):
            os.close(fd)
            raise refused(field_name, raw, self.tenant_id)
        return fd
