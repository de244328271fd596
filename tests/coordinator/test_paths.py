"""The local-path policy (paths.py) and the environment rules (jobenv.py), on real files."""

from __future__ import annotations

import os
from pathlib import Path

import grpc
import pytest

from scaimind.coordinator.data.paths import PathPolicy, PathRefused, TenantFiles
from scaimind.coordinator.jobenv import check_environment, masked, refused_reason
from scaimind.coordinator.status import StatusError


@pytest.fixture
def layout(tmp_path: Path) -> dict[str, Path]:
    """/datasets/{shared,acme,globex}, a data dir with storage areas, a secret outside."""
    paths = {
        "shared": tmp_path / "datasets" / "shared",
        "acme": tmp_path / "datasets" / "acme",
        "globex": tmp_path / "datasets" / "globex",
        "data": tmp_path / "datasets" / "service-data",  # a root would contain it
        "outside": tmp_path / "outside",
    }
    for path in paths.values():
        path.mkdir(parents=True)
    (paths["data"] / "storage" / "acme").mkdir(parents=True)
    (paths["data"] / "storage" / "globex").mkdir(parents=True)
    (paths["data"] / "jwt-secret").write_text("secret")
    (paths["data"] / "storage" / "acme" / "mine.jsonl").write_text("{}\n")
    (paths["data"] / "storage" / "globex" / "theirs.jsonl").write_text("{}\n")
    (paths["outside"] / "passwd").write_text("root:x:0:0\n")
    (paths["acme"] / "train.jsonl").write_text("{}\n")
    (paths["shared"] / "common.jsonl").write_text("{}\n")
    return paths


def files_of(layout: dict[str, Path], tenant: str, *roots: str) -> TenantFiles:
    base = layout["shared"].parent
    policy = PathPolicy(
        roots or (str(layout["shared"]), f"{base}/{{tenant}}", str(base)),
        storage_root=layout["data"] / "storage",
        protected=(layout["data"],),
    )
    return TenantFiles(policy, tenant)


def refused_message(files: TenantFiles, raw: str) -> str:
    with pytest.raises(PathRefused) as caught:
        files.resolve(raw, "data_config.sources[0].path")
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    return caught.value.message


def test_roots_tenant_expansion_and_storage_area(layout: dict[str, Path]) -> None:
    acme = files_of(layout, "acme", str(layout["shared"]), f"{layout['shared'].parent}/{{tenant}}")
    assert acme.resolve(str(layout["acme"] / "train.jsonl"), "f") == layout["acme"] / "train.jsonl"
    assert acme.resolve((layout["shared"] / "common.jsonl").as_uri(), "f").name == "common.jsonl"
    own = layout["data"] / "storage" / "acme" / "mine.jsonl"
    assert acme.resolve(str(own), "f") == own
    # Another tenant's root and area, and the host, are refused alike.
    refused_message(acme, str(layout["globex"] / "anything.jsonl"))
    refused_message(acme, str(layout["data"] / "storage" / "globex" / "theirs.jsonl"))
    refused_message(acme, str(layout["outside"] / "passwd"))


def test_the_data_dir_is_out_of_reach_even_inside_a_root(layout: dict[str, Path]) -> None:
    acme = files_of(layout, "acme")  # the datasets folder itself is a root: it holds the data dir
    assert acme.resolve(str(layout["acme"] / "train.jsonl"), "f").is_file()
    for raw in (
        layout["data"] / "jwt-secret",
        layout["data"],
        layout["data"] / "storage",
        layout["shared"].parent,  # a folder that contains the data dir
    ):
        refused_message(acme, str(raw))


def test_refusal_is_the_same_for_existing_and_missing_files(layout: dict[str, Path]) -> None:
    acme = files_of(layout, "acme")
    there = refused_message(acme, str(layout["outside"] / "passwd"))
    missing = refused_message(acme, str(layout["outside"] / "nope"))
    assert there.replace("passwd", "X") == missing.replace("nope", "X")
    assert "SCAIMIND_LOCAL_DATA_ROOTS" in there
    assert "data_config.sources[0].path" in there


def test_dot_dot_and_symlinks_are_resolved_before_the_check(layout: dict[str, Path]) -> None:
    acme = files_of(layout, "acme")
    refused_message(acme, f"{layout['acme']}/../../outside/passwd")
    (layout["acme"] / "escape.jsonl").symlink_to(layout["outside"] / "passwd")
    (layout["acme"] / "secrets").symlink_to(layout["data"])
    refused_message(acme, str(layout["acme"] / "escape.jsonl"))
    refused_message(acme, str(layout["acme"] / "secrets" / "jwt-secret"))
    # A symlink that stays inside the roots is fine: it is the target that counts.
    (layout["acme"] / "alias.jsonl").symlink_to(layout["shared"] / "common.jsonl")
    assert acme.resolve(str(layout["acme"] / "alias.jsonl"), "f").name == "common.jsonl"


def test_a_symlink_swapped_in_after_the_check_is_caught_on_open(layout: dict[str, Path]) -> None:
    acme = files_of(layout, "acme")
    raw = str(layout["acme"] / "train.jsonl")
    real = acme.resolve(raw, "f")
    # The attacker replaces the checked file by a link to a secret before the open.
    os.unlink(real)
    real.symlink_to(layout["data"] / "jwt-secret")
    with pytest.raises(StatusError) as caught, acme.open_file(real, "f", raw):
        pass
    assert b"secret" not in caught.value.message.encode()
    # A parent folder swapped for a link is caught by the check of the opened file.
    moved = layout["acme"].with_name("acme-moved")
    layout["acme"].rename(moved)
    layout["acme"].symlink_to(layout["outside"])
    with pytest.raises(PathRefused), acme.open_file(layout["acme"] / "passwd", "f", raw):
        pass


def test_tenant_ids_that_are_not_path_components_get_no_area(layout: dict[str, Path]) -> None:
    for tenant in ("..", "a/b", "."):
        files = files_of(layout, tenant, f"{layout['shared'].parent}/{{tenant}}")
        assert files.policy.tenant_area(tenant) is None
        refused_message(files, str(layout["outside"] / "passwd"))
        refused_message(files, str(layout["data"] / "jwt-secret"))


def test_schemes_and_relative_paths(layout: dict[str, Path]) -> None:
    acme = files_of(layout, "acme")
    for raw, needle in (
        ("s3://bucket/x", "s3:// is not supported"),
        ("relative/path.jsonl", "not an absolute path"),
        ("file://otherhost/etc/passwd", "no host"),
        ("", "is required"),
    ):
        with pytest.raises(StatusError) as caught:
            acme.resolve(raw, "f")
        assert needle in caught.value.message


def test_display_names_the_storage_area_never_the_server_path(layout: dict[str, Path]) -> None:
    acme = files_of(layout, "acme")
    own = layout["data"] / "storage" / "acme" / "jobs" / "job_1" / "model"
    assert acme.display(own) == "scaidrive://acme/jobs/job_1/model"
    assert acme.display(layout["outside"] / "passwd") == ""


@pytest.mark.parametrize(
    "name",
    [
        "LD_PRELOAD",
        "LD_LIBRARY_PATH",
        "PYTHONPATH",
        "PYTHONWARNINGS",
        "PYTHONSTARTUP",
        "BASH_ENV",
        "ENV",
        "BROWSER",
        "PATH",
        "IFS",
        "PS4",
        "SHELLOPTS",
        "BASH_FUNC_x%%",
        "PERL5OPT",
        "RUBYOPT",
        "NODE_OPTIONS",
        "GCONV_PATH",
        "LOCPATH",
        "MALLOC_CHECK_",
        "GLIBC_TUNABLES",
        "JAVA_TOOL_OPTIONS",
        "SCAIMIND_SPEC_FILE",
        "ld_preload",
        "1BAD",
        "A=B",
        "",
    ],
)
def test_interpreter_and_loader_hooks_are_refused(name: str) -> None:
    assert refused_reason(name) is not None
    with pytest.raises(StatusError) as caught:
        check_environment({name: "x"})
    assert "training_config.environment" in caught.value.message
    assert repr(name) in caught.value.message


def test_ordinary_variables_pass_and_secrets_are_masked() -> None:
    env = {"HF_TOKEN": "hf_abc", "WANDB_API_KEY": "k", "db_password": "p", "EPOCHS": "3"}
    check_environment(env)
    assert masked(env) == {
        "HF_TOKEN": "***",
        "WANDB_API_KEY": "***",
        "db_password": "***",
        "EPOCHS": "3",
    }
    with pytest.raises(StatusError):
        check_environment({"OK": "a\0b"})
