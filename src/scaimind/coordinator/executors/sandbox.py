"""The job sandbox: every job process runs under bubblewrap (`bwrap`) with per-job limits.

Inside a sandbox a job has new user, pid, ipc, uts and (unless allowed) network namespaces, a
read-only system and Python, a private `/tmp`, a fresh `/proc` that shows only its own processes,
no capabilities, and only these paths of the host (ro = read-only):

- `/job` (rw): its working directory (spec file, metrics file, scripts), `/job/checkpoints` (rw),
  `/output` (rw, the final model), `/inputs/<n>/<file>` (ro, each data file), `/resume` (ro),
  `/model` (ro, the model an evaluation scores).

The service's data dir, its environment (secrets, database URLs) and its processes are not
there. The job's environment is set with `--clearenv`/`--setenv`, and bwrap itself starts with
nothing but a PATH: its own pid 1 stays inside the sandbox, and its environment would be
readable in `/proc/1/environ`. bwrap reads its options from a memfd (`--args`), because a
process's argv (holding the job's variables) is world-readable in `/proc`.

When the coordinator runs as root, a job does not run as root: bwrap waits
(`--userns-block-fd`) until the coordinator has written a user-namespace map of `0` and the
sandbox uid (default 65534, "nobody"), and `setpriv` then drops to that uid with no
capabilities. That makes the process limit (RLIMIT_NPROC, which never applies to uid 0) hold and
adds file permissions as a second wall. As any other user, bwrap maps that user.

Limits (rlimits, inherited by everything the job starts): address space, CPU seconds, file size,
open files and processes, set with util-linux's `prlimit` (or, when it is missing, on the
sandbox's first process while bwrap still waits for its user map).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import resource
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import scaimind
from scaimind.coordinator.config import JobLimits, SandboxConfig

log = logging.getLogger(__name__)

# System files a job may need (dynamic linker, time zone, TLS roots, name resolution); never
# /etc as a whole (it holds /etc/shadow and the host's configuration).
_ETC_FILES = (
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/localtime",
    "/etc/alternatives",
    "/etc/ssl",
    "/etc/ca-certificates",
    "/etc/pki",
    "/etc/nsswitch.conf",
    "/etc/host.conf",
    "/etc/gai.conf",
)
_NETWORK_FILES = ("/etc/resolv.conf", "/etc/hosts")
_SYSTEM_DIRS = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/usr")
_HOST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_SETPRIV = "setpriv"
_PRLIMIT = "prlimit"
_HANDSHAKE_SECONDS = 10.0


@dataclass(frozen=True, slots=True)
class Mount:
    """A host path seen by the job at `inside` (the same path when there is no sandbox)."""

    host: Path
    inside: str
    writable: bool = False


def python_dirs() -> list[Path]:
    """The directories the job's Python needs: the interpreter's prefixes and this package."""
    dirs = {Path(sys.base_prefix), Path(sys.prefix), Path(scaimind.__file__).parent}
    # Resolved too: a venv's interpreter is a symlink into the base installation.
    dirs |= {Path(os.path.realpath(p)) for p in list(dirs)}
    dirs.add(Path(os.path.realpath(sys.executable)).parent)
    # A directory inside another one is bound with it.
    return sorted(d for d in dirs if not any(d != o and d.is_relative_to(o) for o in dirs))


def rlimits(limits: JobLimits) -> dict[int, int]:
    """The job's rlimits (resource constant -> soft and hard value); 0 in a setting = none."""
    mib = 1024 * 1024
    wanted = {
        resource.RLIMIT_AS: limits.memory_mb * mib,
        resource.RLIMIT_CPU: limits.cpu_seconds,
        resource.RLIMIT_FSIZE: limits.file_size_mb * mib,
        resource.RLIMIT_NOFILE: limits.open_files,
        resource.RLIMIT_NPROC: limits.processes,
    }
    return {res: value for res, value in wanted.items() if value > 0}


def prlimit_args(limits: JobLimits) -> list[str]:
    """`prlimit` options for the limits."""
    names = {
        resource.RLIMIT_AS: "--as",
        resource.RLIMIT_CPU: "--cpu",
        resource.RLIMIT_FSIZE: "--fsize",
        resource.RLIMIT_NOFILE: "--nofile",
        resource.RLIMIT_NPROC: "--nproc",
    }
    return [f"{names[res]}={value}" for res, value in rlimits(limits).items()]


def apply_rlimits(pid: int, limits: JobLimits) -> None:
    """Set the limits on a running process (what its future children inherit)."""
    for res, value in rlimits(limits).items():
        with contextlib.suppress(OSError, ValueError):
            resource.prlimit(pid, res, (value, value))


@dataclass(slots=True)
class Launch:
    """How to start one job process: argv, environment, fds to pass, and the bwrap handshake."""

    argv: list[str]
    env: dict[str, str]
    pass_fds: tuple[int, ...] = ()
    # Read end of --info-fd (bwrap writes the sandbox's first pid there), write end of
    # --userns-block-fd (None when bwrap maps the user itself), fds to close after the spawn.
    info_fd: int | None = None
    block_fd: int | None = None
    close_after_spawn: list[int] = field(default_factory=list)
    limits_in_handshake: bool = False

    def close_spawn_fds(self) -> None:
        """Close the fds only the child needed."""
        for fd in self.close_after_spawn:
            with contextlib.suppress(OSError):
                os.close(fd)
        self.close_after_spawn.clear()


class Sandbox:
    """Builds sandboxed launches; knows whether bwrap works on this machine."""

    def __init__(self, config: SandboxConfig, protected: Sequence[Path] = ()) -> None:
        self.config = config
        self.protected = [Path(os.path.realpath(p)) for p in protected]
        self.bwrap = shutil.which(config.bwrap) if config.bwrap else None
        self.prlimit = shutil.which(_PRLIMIT)
        self.setpriv = shutil.which(_SETPRIV)
        self.as_root = os.geteuid() == 0
        self.problem: str | None = None if self.bwrap else self._missing()

    def _missing(self) -> str:
        return (
            f"bubblewrap ({self.config.bwrap!r}) is not installed; install the Debian/Ubuntu "
            "package `bubblewrap` (or set SCAIMIND_BWRAP to its path)"
        )

    @property
    def usable(self) -> bool:
        """True when jobs can run sandboxed (after `probe`)."""
        return self.problem is None

    async def probe(self) -> None:
        """Start one real sandbox (`true`); remember why it failed, if it did."""
        if self.bwrap is None:
            return
        if self.as_root and self.setpriv is None:
            self.problem = "setpriv (util-linux) is missing, so sandboxed jobs would run as root"
            return
        try:
            proc, _ = await self.start(["true"], {"PATH": "/usr/bin:/bin"}, [], "/", JobLimits())
            _, err = await asyncio.wait_for(proc.communicate(), timeout=_HANDSHAKE_SECONDS)
        except (OSError, TimeoutError, ValueError) as e:
            self.problem = f"bubblewrap cannot start a sandbox here ({e})"
            return
        if proc.returncode != 0:
            reason = err.decode("utf-8", "replace").strip().splitlines()
            self.problem = "bubblewrap cannot create a sandbox here" + (
                f" ({reason[-1]})" if reason else f" (exit code {proc.returncode})"
            )

    async def start(
        self,
        argv: Sequence[str],
        env: dict[str, str],
        mounts: Sequence[Mount],
        cwd: str,
        limits: JobLimits,
    ) -> tuple[asyncio.subprocess.Process, int]:
        """Start `argv` sandboxed; returns the process and the group to signal (the sandbox's).

        Raises OSError when bwrap cannot be started or never reports its sandbox.
        """
        launch = self.launch(argv, env, mounts, cwd, limits)
        proc = await spawn(launch)
        try:
            child = await self.handshake(launch, limits)
        except (OSError, TimeoutError, ValueError) as e:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            raise OSError(f"the sandbox did not start: {e}") from e
        if child is None:
            # bwrap failed before creating the sandbox; its exit code and stderr tell why.
            return proc, proc.pid
        return proc, child

    def launch(
        self,
        argv: Sequence[str],
        env: dict[str, str],
        mounts: Sequence[Mount],
        cwd: str,
        limits: JobLimits,
    ) -> Launch:
        """The bwrap invocation running `argv` with `mounts` (needs `bwrap`)."""
        assert self.bwrap is not None
        opts = [
            "--unshare-all",
            "--unshare-user",
            "--die-with-parent",
            "--new-session",
            "--hostname",
            "scaimind-job",
        ]
        if self.config.network:
            opts.append("--share-net")
        if not self.as_root:
            opts += ["--disable-userns", "--cap-drop", "ALL"]
        opts += self._system_mounts()
        opts += ["--proc", "/proc", "--dev", "/dev"]
        # Sticky and world-writable like any /tmp: the job's user is not its owner. Made before
        # the Python binds: an installation under /tmp (a checkout there) must stay visible.
        opts += ["--perms", "1777"]
        if self.config.tmp_mb > 0:
            opts += ["--size", str(self.config.tmp_mb * 1024 * 1024)]
        opts += ["--tmpfs", "/tmp"]
        opts += self._python_mounts()
        targets = {m.inside for m in mounts}
        for mount in sorted(mounts, key=lambda m: m.inside.count("/")):
            # bwrap would create missing parents 0700, which the job's user cannot enter.
            for parent in reversed(PurePosixPath(mount.inside).parents):
                if str(parent) != "/" and not any(
                    str(parent) == t or parent.is_relative_to(t) for t in targets
                ):
                    opts += ["--dir", str(parent)]
            kind = "--bind" if mount.writable else "--ro-bind"
            opts += [kind, str(mount.host), mount.inside]
        opts += self._masks(mounts)
        opts += ["--chdir", cwd, "--clearenv"]
        for name, value in env.items():
            opts += ["--setenv", name, value]

        keep: list[int] = []
        close: list[int] = []
        args_fd = os.memfd_create("scaimind-bwrap-args", os.MFD_CLOEXEC)
        info_r, info_w = os.pipe2(os.O_CLOEXEC)
        keep += [args_fd, info_w]
        close += [args_fd, info_w]
        opts += ["--info-fd", str(info_w)]
        block_w: int | None = None
        if self.as_root:
            block_r, block_w = os.pipe2(os.O_CLOEXEC)
            keep.append(block_r)
            close.append(block_r)
            opts += ["--userns-block-fd", str(block_r)]
        os.write(args_fd, b"\0".join(o.encode() for o in opts) + b"\0")
        os.lseek(args_fd, 0, os.SEEK_SET)

        command = list(argv)
        if self.as_root:
            assert self.setpriv is not None
            uid, gid = self.config.uid, self.config.gid
            command = [
                self.setpriv,
                f"--reuid={uid}",
                f"--regid={gid}",
                "--clear-groups",
                "--inh-caps=-all",
                "--bounding-set=-all",
                "--no-new-privs",
                "--",
                *command,
            ]
        full = [self.bwrap, "--args", str(args_fd), "--", *command]
        in_handshake = self.prlimit is None and self.as_root
        if self.prlimit is not None:
            full = [self.prlimit, *prlimit_args(limits), "--", *full]
        return Launch(
            argv=full,
            # bwrap's own processes (its pid 1 stays in the sandbox) get nothing but a PATH.
            env={"PATH": _HOST_PATH},
            pass_fds=tuple(keep),
            info_fd=info_r,
            block_fd=block_w,
            close_after_spawn=close,
            limits_in_handshake=in_handshake,
        )

    def _masks(self, mounts: Sequence[Mount]) -> list[str]:
        """Empty directories over every protected directory that a bind would show: a
        script's folder or a data root may contain the service's data dir."""
        opts: list[str] = []
        binds = [(Path(os.path.realpath(m.host)), m.inside) for m in mounts]
        binds += [(d, str(d)) for d in python_dirs()]
        for hidden in self.protected:
            for host, inside in binds:
                if hidden != host and hidden.is_relative_to(host):
                    opts += ["--tmpfs", f"{inside.rstrip('/')}/{hidden.relative_to(host)}"]
        return opts

    def _system_mounts(self) -> list[str]:
        opts: list[str] = []
        for path in _SYSTEM_DIRS:
            if os.path.islink(path):
                opts += ["--symlink", os.readlink(path), path]
            elif os.path.isdir(path):
                opts += ["--ro-bind", path, path]
        files = _ETC_FILES + (_NETWORK_FILES if self.config.network else ())
        for path in files:
            opts += ["--ro-bind-try", path, path]
        return opts

    def _python_mounts(self) -> list[str]:
        opts: list[str] = []
        for directory in python_dirs():
            if directory.is_relative_to("/usr"):
                continue
            # Parents are made traversable (bwrap would create them 0700 for the job's uid).
            for parent in reversed(directory.parents):
                if str(parent) != "/" and not str(parent).startswith("/usr"):
                    opts += ["--dir", str(parent)]
            opts += ["--ro-bind", str(directory), str(directory)]
        return opts

    async def handshake(self, launch: Launch, limits: JobLimits) -> int | None:
        """After the spawn: learn the sandbox's first pid, map its users, let it go on."""
        assert launch.info_fd is not None
        child = await _child_pid(launch.info_fd)
        if launch.block_fd is not None:
            try:
                if child is not None:
                    if launch.limits_in_handshake:
                        apply_rlimits(child, limits)
                    self._map_users(child)
                os.write(launch.block_fd, b"1")
            finally:
                os.close(launch.block_fd)
        return child

    def _map_users(self, child: int) -> None:
        uid, gid = self.config.uid, self.config.gid
        # 0 stays root so bwrap can set the sandbox up; the job runs as uid/gid (setpriv).
        with open(f"/proc/{child}/uid_map", "w") as f:
            f.write(f"0 0 1\n{uid} {uid} 1\n")
        with open(f"/proc/{child}/gid_map", "w") as f:
            f.write(f"0 0 1\n{gid} {gid} 1\n")


async def _child_pid(fd: int) -> int | None:
    """The `child-pid` of bwrap's --info-fd document (None when bwrap ended without one)."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    transport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(fd, "rb", buffering=0)
    )
    data = b""
    try:
        async with asyncio.timeout(_HANDSHAKE_SECONDS):
            while chunk := await reader.read(4096):
                data += chunk
                with contextlib.suppress(ValueError):
                    info = json.loads(data)
                    pid = info.get("child-pid") if isinstance(info, dict) else None
                    return pid if isinstance(pid, int) else None
    finally:
        transport.close()
    return None


async def spawn(launch: Launch, cwd: str | None = None) -> asyncio.subprocess.Process:
    """Start a launch in its own session (the process group the coordinator signals)."""
    try:
        return await asyncio.create_subprocess_exec(
            *launch.argv,
            cwd=cwd,
            env=launch.env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
            pass_fds=launch.pass_fds,
        )
    finally:
        launch.close_spawn_fds()
