"""Where a job's files live on the host, and the paths its process sees.

Host layout (all directories 0700; `<shared>` is the shared root, by default the data dir):

- `<shared>/jobs/<job_id>/`: the working directory (spec files, metrics files, a copy of a
  CUSTOM script). Private to the coordinator and the job.
- `<storage_root>/<tenant>/jobs/<job_id>/checkpoints/` and `…/model/` (the default output): the
  job's artefacts, in the tenant's storage area, so views name them
  `scaidrive://<tenant>/jobs/<job_id>/…` and never by their server path.
- `output_config.output_path`, when given: a new directory under the caller's local data roots
  (claimed at submit, created at PREPARING; jobs never write into a directory they did not create).

A sandboxed process sees each of them at a fixed path (`/job`, `/job/checkpoints`, `/output`,
`/inputs/<n>/<file>`, `/resume`, `/model`, `/code` (a CUSTOM script's folder), see
executors/sandbox.py); an unsandboxed one sees the host
paths. `MountPlan` hands out the right one and records the mapping, so a path the process
reports (a checkpoint) is mapped back to the host (`ProcessSpec.to_host`).
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from scaimind.contract.private_files import private_dir
from scaimind.coordinator.config import CoordinatorConfig
from scaimind.coordinator.data.paths import PathPolicy, TenantFiles, refused
from scaimind.coordinator.data.scaidrive import drive_access, storage_root
from scaimind.coordinator.executors.sandbox import Mount, Sandbox
from scaimind.coordinator.persistence.ops_store import OpsStore
from scaimind.coordinator.persistence.records import JobRecord
from scaimind.coordinator.persistence.store import Store
from scaimind.coordinator.status import invalid, precondition
from scaimind.v1 import coordinator_pb2

JOB = "/job"
CHECKPOINTS = "/job/checkpoints"
OUTPUT = "/output"
RESUME = "/resume"
MODEL = "/model"
CODE = "/code"
INPUTS = "/inputs"
JOBS_AREA = "jobs"  # the artefacts' folder inside a tenant's storage area


@dataclass(frozen=True)
class JobLayout:
    """The coordinator's directories for jobs."""

    jobs_dir: Path
    storage_root: Path

    def work_dir(self, job_id: str) -> Path:
        """The job's private working directory."""
        return self.jobs_dir / job_id

    def artifacts(self, tenant_id: str, job_id: str) -> Path:
        """The job's artefacts in the tenant's storage area."""
        return self.storage_root / tenant_id / JOBS_AREA / job_id

    def checkpoints(self, tenant_id: str, job_id: str) -> Path:
        """Where the job writes its checkpoints."""
        return self.artifacts(tenant_id, job_id) / "checkpoints"

    def default_output(self, tenant_id: str, job_id: str) -> Path:
        """The final model's directory when output_path is not set."""
        return self.artifacts(tenant_id, job_id) / "model"

    def jobs_area(self, tenant_id: str) -> Path:
        """The folder of every job's artefacts in the tenant's area (no output_path there)."""
        return self.storage_root / tenant_id / JOBS_AREA


@dataclass
class MountPlan:
    """The paths one process sees: sandbox paths when sandboxed, else the host paths."""

    sandboxed: bool
    mounts: list[Mount] = field(default_factory=list)

    def add(self, host: Path, inside: str, writable: bool = False) -> str:
        """Make `host` visible to the job; returns the path the job uses for it."""
        seen = inside if self.sandboxed else str(host)
        self.mounts.append(Mount(host, seen, writable))
        return seen

    def add_input(self, host: Path) -> str:
        """A read-only input file at /inputs/<n>/<name>."""
        count = sum(1 for m in self.mounts if m.inside.startswith(INPUTS + "/"))
        return self.add(host, f"{INPUTS}/{count}/{host.name or 'data'}")


OUTPUT_FIELD = "output_config.output_path"


class JobFiles:
    """The coordinator's file policy for jobs: who may name what, where jobs write, what they
    see, and how paths are shown."""

    def __init__(
        self,
        config: CoordinatorConfig,
        store: Store,
        ops: OpsStore,
        sandbox: Sandbox,
        request_of: Callable[[JobRecord], coordinator_pb2.SubmitJobRequest],
    ) -> None:
        self.config = config
        self.store = store
        self.ops = ops
        self.sandbox = sandbox
        self._request_of = request_of
        root = storage_root(config)
        self.layout = JobLayout(config.shared / "jobs", root)
        self.policy = PathPolicy(config.local_data_roots, root, protected=config.service_dirs)

    # ---- who may name what ---------------------------------------------------------------

    def for_tenant(self, tenant_id: str, scaidrive_token: str = "") -> TenantFiles:
        """A caller's view of local files (scaidrive:// with its token)."""
        return TenantFiles(
            self.policy, tenant_id, drive_access(self.config, tenant_id, scaidrive_token)
        )

    def for_job(self, row: JobRecord) -> TenantFiles:
        """A job's view at PREPARING: the newest scaidrive token of the job or its ancestors."""
        token = ""
        job_id = str(row.job_id)
        seen: set[str] = set()
        while job_id and job_id not in seen:
            seen.add(job_id)
            found = self.ops.token(job_id)
            if found:
                token = found
                break
            ancestor = self.store.get_job(job_id)
            job_id = ancestor.parent_job_id if ancestor is not None else ""
        return self.for_tenant(str(row.tenant_id), token)

    # ---- the sandbox -----------------------------------------------------------------------

    def sandboxed(self, custom: bool) -> bool:
        """Whether a job runs sandboxed; FAILED_PRECONDITION for a CUSTOM job that cannot."""
        if self.sandbox.usable:
            return True
        if custom and not self.config.sandbox.allow_unsandboxed:
            raise precondition(
                "CUSTOM jobs need the job sandbox, which is not available on this coordinator: "
                f"{self.sandbox.problem}. On a single-user machine the operator may set "
                "SCAIMIND_ALLOW_UNSANDBOXED_JOBS=true instead"
            )
        return False

    @property
    def owner(self) -> tuple[int, int] | None:
        """Who owns what a sandboxed job writes (its user, when the coordinator is root)."""
        if self.sandbox.usable and self.sandbox.as_root:
            return self.config.sandbox.uid, self.config.sandbox.gid
        return None

    # ---- outputs ---------------------------------------------------------------------------

    def check_output(self, files: TenantFiles, raw: str) -> Path:
        """At submit: `output_path` must be the caller's, new, and overlap no other job's.

        Returns the resolved directory, which the caller claims for the new job
        (`OpsStore.claim_output`) once the job exists.
        """
        real = files.resolve(raw, OUTPUT_FIELD)
        area = Path(os.path.realpath(self.layout.jobs_area(files.tenant_id)))
        if real == area or real.is_relative_to(area):
            raise invalid(
                f"{OUTPUT_FIELD}: {raw} is inside the jobs' own folder "
                f"(scaidrive://{files.tenant_id}/{JOBS_AREA}); choose another directory"
            )
        if os.path.lexists(real):
            raise invalid(
                f"{OUTPUT_FIELD}: {raw} already exists; a job only writes into a new directory "
                "it creates, so choose a path that does not exist yet"
            )
        for claim in self.ops.output_claims():
            other = Path(claim.path)
            if other == real or other.is_relative_to(real) or real.is_relative_to(other):
                raise invalid(
                    f"{OUTPUT_FIELD}: {raw} overlaps the output directory of another job; "
                    "choose another directory"
                )
        return real

    def output_dir(
        self, row: JobRecord, create: bool = False, owner: tuple[int, int] | None = None
    ) -> Path:
        """The host directory of the job's final model (created and checked at PREPARING)."""
        raw = self._request_of(row).output_config.output_path
        tenant, job_id = str(row.tenant_id), str(row.job_id)
        if not raw:
            path = self.layout.default_output(tenant, job_id)
            return private_dir(path, owner) if create else path
        real = self._claimed(job_id)
        if real is None:
            raise invalid(f"{OUTPUT_FIELD}: {raw} is not this job's output directory")
        if not create:
            return real
        if not self.policy.permits(real, tenant):  # the roots may have changed since submit
            raise refused(OUTPUT_FIELD, raw, tenant)
        real.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):  # made by an earlier attempt of the job
            real.mkdir(mode=0o700)
        # A directory of its own, not a symlink swapped in since the claim.
        os.close(TenantFiles(self.policy, tenant).open_dir(real, OUTPUT_FIELD, raw))
        return private_dir(real, owner)

    def _claimed(self, job_id: str) -> Path | None:
        """The output directory claimed by the job or the job it retries (its lineage)."""
        claims = {c.job_id: Path(c.path) for c in self.ops.output_claims()}
        seen: set[str] = set()
        while job_id and job_id not in seen:
            if job_id in claims:
                return claims[job_id]
            seen.add(job_id)
            row = self.store.get_job(job_id)
            job_id = str(row.parent_job_id) if row is not None else ""
        return None

    def output_display(self, row: JobRecord) -> str:
        """The final model's location as the tenant names it."""
        raw = self._request_of(row).output_config.output_path
        if raw:
            return raw
        return self.display(
            str(row.tenant_id), self.layout.default_output(row.tenant_id, row.job_id)
        )

    # ---- paths the process sees and reports --------------------------------------------------

    def resume_for(
        self,
        row: JobRecord,
        ckpt_dir: Path,
        ckpt_seen: str,
        plan: MountPlan,
        owner: tuple[int, int] | None = None,
    ) -> str:
        """SCAIMIND_RESUME_CHECKPOINT: the job's own checkpoint, or another mounted at /resume."""
        host = str(row.resume_checkpoint or "")
        if not host:
            return ""
        real = Path(os.path.realpath(host))
        own = Path(os.path.realpath(ckpt_dir))
        if real.is_relative_to(own) and real != own:
            return f"{ckpt_seen}/{real.relative_to(own)}"
        if not self.policy.permits(real, str(row.tenant_id)) or not real.is_dir():
            raise invalid(
                "training_config.resume_from_checkpoint: the checkpoint to resume from is no "
                "longer available to this tenant"
            )
        self.check_visible(real, "the checkpoint to resume from", owner)
        return self.mount_stable(real, RESUME, plan)

    def readable_dir(self, tenant_id: str, host: Path) -> bool:
        """True for a directory the tenant may still read (the roots may change)."""
        real = Path(os.path.realpath(host))
        return self.policy.permits(real, tenant_id) and real.is_dir()

    def check_visible(self, host: Path, what: str, owner: tuple[int, int] | None) -> None:
        """Something a job reads in place (a script and its folder, a model folder) must be
        readable by the sandbox's user, or the job fails with a bare "permission denied"."""
        if owner is None:
            return
        st = host.stat()
        need = 0o5 if stat.S_ISDIR(st.st_mode) else 0o4  # r-x for folders, r-- for files
        if st.st_uid == owner[0]:
            shift = 6
        elif st.st_gid == owner[1]:
            shift = 3
        else:
            shift = 0
        if (st.st_mode >> shift) & need != need:
            raise precondition(
                f"{what} is not readable by the job sandbox's user (uid {owner[0]}); the "
                "operator makes it readable for that user (for example chmod o+rX) or sets "
                "SCAIMIND_SANDBOX_UID"
            )

    def writable_area(self, real: Path) -> Path | None:
        """The root of the folder some job may rewrite that holds `real` (a job's checkpoints
        or model folder in a storage area, a claimed output directory), else None. The root
        itself cannot be replaced by a job: its parent is the coordinator's."""
        storage = Path(os.path.realpath(self.layout.storage_root))
        if real.is_relative_to(storage):
            parts = real.relative_to(storage).parts
            # <tenant>/jobs/<job_id>/{checkpoints,model}/...
            if len(parts) >= 4 and parts[1] == JOBS_AREA and parts[3] in ("checkpoints", "model"):
                return storage.joinpath(*parts[:4])
        for claim in self.ops.output_claims():
            area = Path(claim.path)
            if real == area or real.is_relative_to(area):
                return area
        return None

    def mount_stable(self, real: Path, inside: str, plan: MountPlan) -> str:
        """Show a folder a job reads in place, with no race between check and bind.

        bwrap binds by path. Inside a folder another job can rewrite, a checked folder could be
        swapped for a link before the bind; so the folder's root, which no job can replace, is
        bound instead and the rest of the path is walked inside the sandbox, where a link leads
        only to what the sandbox shows. `real` is the path as it was checked (resolved then):
        resolving it again here would follow exactly the link this guards against. Returns the
        path the job uses.
        """
        area = self.writable_area(real)
        if area is None or area == real:
            return plan.add(real, inside)
        return f"{plan.add(area, inside)}/{real.relative_to(area)}"

    def checkpoint_host(self, tenant_id: str, job_id: str, reported: Path | None) -> Path | None:
        """A checkpoint path the process reported, if it lies in the job's checkpoint folder."""
        if reported is None:
            return None
        own = Path(os.path.realpath(self.layout.checkpoints(tenant_id, job_id)))
        real = Path(os.path.realpath(reported))
        return real if real.is_relative_to(own) and real != own else None

    def display(self, tenant_id: str, host: str | Path) -> str:
        """A host path as views show it: scaidrive:// in the tenant's area, else its name."""
        shown = TenantFiles(self.policy, tenant_id).display(host)
        return shown or Path(host).name
