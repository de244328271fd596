"""The module manifest ScaiGrid reads to register ScaiMind: permissions and admin pages."""

from __future__ import annotations

from dataclasses import dataclass

from scaimind import __version__
from scaimind.contract.http import API_PREFIX
from scaimind.gateway.security.auth import CLUSTER_ADMIN, EVALUATE, MANAGE, VIEW


@dataclass(frozen=True, slots=True)
class Permission:
    """A permission key the host grants to roles."""

    key: str
    description: str


@dataclass(frozen=True, slots=True)
class AdminPage:
    """A page of the ScaiGrid admin UI and the permission it needs."""

    id: str
    title: str
    path: str
    permission: str


@dataclass(frozen=True, slots=True)
class ModuleManifest:
    """What a host needs to know to mount the module."""

    module_id: str
    display_name: str
    version: str
    api_prefix: str
    permissions: tuple[Permission, ...]
    admin_pages: tuple[AdminPage, ...]


MANIFEST = ModuleManifest(
    module_id="scaimind",
    display_name="ScaiMind Training",
    version=__version__,
    api_prefix=API_PREFIX,
    permissions=(
        Permission(VIEW, "Read jobs, metrics, logs, evaluations, queues, cluster and nodes"),
        Permission(MANAGE, "Submit, cancel, pause, resume and retry jobs; validate and cache data"),
        Permission(CLUSTER_ADMIN, "Drain and enable cluster nodes"),
        Permission(EVALUATE, "Submit evaluations and read their results"),
    ),
    admin_pages=(
        AdminPage("training-dashboard", "Training Dashboard", "/scaimind", VIEW),
        AdminPage("training-monitor", "Training Monitor", "/scaimind/monitor", VIEW),
        AdminPage("job-creator", "Job Creator", "/scaimind/jobs/new", MANAGE),
        AdminPage("hardware-monitor", "Hardware Monitor", "/scaimind/cluster", VIEW),
        AdminPage("evaluation-center", "Evaluation Center", "/scaimind/evaluations", EVALUATE),
    ),
)
