"""File modes of the service's own files: data dirs 0700, databases and secrets 0600.

The data dirs hold every tenant's jobs and logs, the API and JWT secrets and data-access
tokens, so no other local user may read them. Modes are set when the files are made and fixed
again at every start (an operator's `cp -r` or a permissive umask may have widened them).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

# SQLite keeps a write-ahead log and a shared-memory index beside each database.
_SQLITE_SIDECARS = ("", "-wal", "-shm", "-journal")


def private_dir(path: Path, owner: tuple[int, int] | None = None) -> Path:
    """Create `path` (and parents) as a 0700 directory owned by `owner`; fix an existing one."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    if owner is not None:
        os.chown(path, *owner)
    return path


def private_file(path: Path) -> None:
    """Make an existing file 0600 (nothing when it does not exist)."""
    with contextlib.suppress(FileNotFoundError):
        os.chmod(path, 0o600)


def private_database(path: Path) -> None:
    """A SQLite database and its sidecar files 0600."""
    for suffix in _SQLITE_SIDECARS:
        private_file(path.with_name(path.name + suffix))


def secure_tree(directory: Path) -> None:
    """Every folder under `directory` 0700 and every file 0600 (links are not followed)."""
    for root, dirs, files in os.walk(directory, followlinks=False):
        for name in dirs:
            with contextlib.suppress(OSError):
                os.chmod(os.path.join(root, name), 0o700, follow_symlinks=False)
        for name in files:
            path = os.path.join(root, name)
            if not os.path.islink(path):
                with contextlib.suppress(OSError):
                    os.chmod(path, 0o600)


def secure_children(directory: Path) -> None:
    """Every directory directly inside `directory` 0700 (job directories)."""
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(directory):
            if entry.is_dir(follow_symlinks=False):
                os.chmod(entry.path, 0o700)
