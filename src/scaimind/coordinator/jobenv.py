"""Rules for `training_config.environment`: which names a job may set, which values are secret.

A job's process starts from a clean environment plus the user's variables (executor.process_env).
Names that make an interpreter, a shell or the dynamic loader run code or load libraries of the
caller's choosing are refused at submit, because they act before any sandboxed code would
(`PYTHONWARNINGS` + `BROWSER` ran a shell command in the built-in trainer, `PYTHONPATH` a
`sitecustomize.py`, `BASH_ENV` a script, `LD_PRELOAD` a library). `SCAIMIND_*` is the process
contract's own prefix. Values of names that look secret reach the job but are shown as `***`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from scaimind.coordinator.status import invalid

FIELD = "training_config.environment"
MASK = "***"
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Exact names (case-sensitive, as the programs that read them are).
_REFUSED_NAMES = frozenset(
    {
        "BASH_ENV",
        "ENV",
        "BROWSER",
        "PATH",
        "IFS",
        "PS4",
        "PROMPT_COMMAND",
        "SHELLOPTS",
        "BASHOPTS",
        "CDPATH",
        "GLOBIGNORE",
        "PERLLIB",
        "PERLIO",
        "NODE_OPTIONS",
        "NODE_PATH",
        "GCONV_PATH",
        "LOCPATH",
        "NLSPATH",
        "GLIBC_TUNABLES",
        "HOSTALIASES",
        "RESOLV_HOST_CONF",
        "LOCALDOMAIN",
        "RES_OPTIONS",
        "JAVA_TOOL_OPTIONS",
        "_JAVA_OPTIONS",
        "JDK_JAVA_OPTIONS",
        "CLASSPATH",
        "TCLLIBPATH",
        "LUA_INIT",
        "LUA_PATH",
        "LUA_CPATH",
        "OPENSSL_CONF",
        "OPENSSL_ENGINES",
        "SSLKEYLOGFILE",
        "EDITOR",
        "VISUAL",
        "PAGER",
        "MANPAGER",
        "GIT_EXEC_PATH",
        "GIT_SSH",
        "GIT_SSH_COMMAND",
        "GIT_ASKPASS",
        "SSH_ASKPASS",
        "HOME",
        "TMPDIR",
        "SHELL",
    }
)
# Prefixes: loader, interpreters, allocators and our own contract.
_REFUSED_PREFIXES = (
    "LD_",
    "PYTHON",
    "BASH_FUNC_",
    "PERL5",
    "RUBY",
    "MALLOC_",
    "SCAIMIND_",
    "GIT_CONFIG",
    "DYLD_",
)
_SECRET = re.compile(r"TOKEN|SECRET|PASSWORD|PASSWD|KEY|CREDENTIAL", re.IGNORECASE)


def refused_reason(name: str) -> str | None:
    """Why a variable name may not be set by a job, or None when it may."""
    if not _NAME.match(name):
        return "is not a valid variable name (letters, digits and _; not starting with a digit)"
    upper = name.upper()
    if upper in _REFUSED_NAMES or upper.startswith(_REFUSED_PREFIXES):
        return (
            "can make a program run code of the caller's choosing (interpreter, shell or "
            "loader hook) or is set by ScaiMind itself"
        )
    return None


def check_environment(env: Mapping[str, str], field: str = FIELD) -> None:
    """INVALID_ARGUMENT naming the first refused variable."""
    for name, value in env.items():
        reason = refused_reason(name)
        if reason is not None:
            raise invalid(f"{field}: variable {name!r} {reason}; remove it")
        if "\0" in value:
            raise invalid(f"{field}: the value of {name!r} must not contain NUL characters")


def is_secret(name: str) -> bool:
    """True for names that look like they hold a credential."""
    return bool(_SECRET.search(name))


def masked(env: Mapping[str, str]) -> dict[str, str]:
    """The environment as views show it: secret-looking values replaced by `***`."""
    return {k: MASK if is_secret(k) else v for k, v in env.items()}
